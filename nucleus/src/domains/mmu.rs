//! `domain_mmu`: pin/unpin, new baseptr, normal updates and update_va_mapping, each through
//! `bsp_x86_64::guest_tables` so that every entry is validated before hardware can use it.
//! An L4 gets the nucleus' slots when first validated and loses them at its last reference.
use super::memory::{self, DirectTables};
use super::registry::domain;
use crate::thread::Threads;
use bsp_x86_64::frame_owner::{DomainId, FrameInfo, Owner, PageType, TableLevel};
use bsp_x86_64::guest_pte::CpuLimits;
use bsp_x86_64::guest_tables::{GuestTables, TableMemory};
use bsp_x86_64::paging::PhysAddr;
use ipc::domain::MmuOp;
use xen_abi::{Errno, Mfn};

fn cpu_limits() -> CpuLimits {
    let bits = bsp_x86_64::insn::cpuid(0x8000_0008, 0).eax & 0xff;
    CpuLimits {
        phys_addr_bits: if bits == 0 { 36 } else { bits as u8 },
    }
}

fn tables<'a>(
    table: &'a mut memory::Frames,
    mem: &'a mut DirectTables,
    number: u16,
) -> GuestTables<'a, &'static mut [FrameInfo], DirectTables> {
    GuestTables {
        frames: table,
        memory: mem,
        cpu: cpu_limits(),
        domain: DomainId(number),
    }
}

/// Takes a type reference of L4 on `mfn`; a first validation copies the nucleus' slots in
/// (`guest_tables`).
pub fn get_l4(number: u16, mfn: Mfn) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    tables(table, &mut DirectTables, number)
        .get_table(mfn, TableLevel::L4)
        .map_err(|e| e.errno())
}

/// Drops an L4 type reference; the last one takes the nucleus' slots out.
pub fn put_l4(number: u16, mfn: Mfn) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    tables(table, &mut DirectTables, number)
        .put_table(mfn)
        .map_err(|e| e.errno())
}

fn level(raw: u8) -> TableLevel {
    match raw {
        1 => TableLevel::L1,
        2 => TableLevel::L2,
        3 => TableLevel::L3,
        _ => TableLevel::L4,
    }
}

/// One `domain_mmu` operation on domain `number`'s tables; once it changed an entry, every
/// other CPU whose CR3 holds one of the domain's roots flushes its TLB (`cpu::ipi`), so no
/// CPU running the domain keeps a translation the guest took away.
pub fn mmu(t: &mut Threads, number: u16, op: MmuOp) -> Result<(), Errno> {
    let changes_entries = matches!(
        op,
        MmuOp::Update { .. } | MmuOp::UpdateVa { .. } | MmuOp::Unpin { .. }
    );
    let result = apply(t, number, op);
    if result.is_ok() && changes_entries {
        let d = domain(number);
        let roots = [d.base, d.user_base].map(|m| m.map_or(u64::MAX, |m| m.0 << 12));
        crate::cpu::ipi::shootdown_tlb(&roots);
    }
    result
}

fn apply(t: &mut Threads, number: u16, op: MmuOp) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    let mut mem = DirectTables;
    match op {
        MmuOp::Pin { level: 4, mfn } => {
            get_l4(number, Mfn(mfn))?;
            if table.pin(Mfn(mfn)).is_err() {
                let _ = put_l4(number, Mfn(mfn));
                return Err(Errno::Einval);
            }
            Ok(())
        }
        MmuOp::Pin { level: l, mfn } => {
            let mut tables = tables(table, &mut mem, number);
            tables
                .get_table(Mfn(mfn), level(l))
                .map_err(|e| e.errno())?;
            if tables.frames.pin(Mfn(mfn)).is_err() {
                let _ = tables.put_table(Mfn(mfn));
                return Err(Errno::Einval);
            }
            Ok(())
        }
        MmuOp::Unpin { mfn } => {
            let mfn = Mfn(mfn);
            table
                .check_owner(mfn, DomainId(number))
                .map_err(|_| Errno::Einval)?;
            table.unpin(mfn).map_err(|_| Errno::Einval)?;
            if table.info(mfn).map(|i| i.current_type())
                == Some(PageType::PageTable(TableLevel::L4))
            {
                put_l4(number, mfn)
            } else {
                tables(table, &mut mem, number)
                    .put_table(mfn)
                    .map_err(|e| e.errno())
            }
        }
        MmuOp::NewBaseptr { mfn } => {
            let mfn = Mfn(mfn);
            get_l4(number, mfn)?;
            if let Some(old) = domain(number).base.replace(mfn) {
                let _ = put_l4(number, old);
            }
            if let Some(id) = t.guest_id(number) {
                t.get_mut(id).guest_root = Some(PhysAddr::new(mfn.0 << 12));
            }
            Ok(())
        }
        MmuOp::NewUserBaseptr { mfn } => {
            let new = (mfn != 0).then_some(Mfn(mfn));
            if new == domain(number).user_base {
                return Ok(());
            }
            if let Some(new) = new {
                get_l4(number, new)?;
            }
            if let Some(old) = core::mem::replace(&mut domain(number).user_base, new) {
                let _ = put_l4(number, old);
            }
            if let Some(id) = t.guest_id(number) {
                t.get_mut(id).vcpu.user_root = new.map(|m| PhysAddr::new(m.0 << 12));
            }
            Ok(())
        }
        MmuOp::Update { ptr, val } => {
            let table_mfn = Mfn(ptr >> 12);
            let index = ((ptr & 0xfff) >> 3) as usize;
            let Some(PageType::PageTable(l)) = table.info(table_mfn).map(|i| i.current_type())
            else {
                return Err(Errno::Einval);
            };
            tables(table, &mut mem, number)
                .update_entry(table_mfn, l, index, val)
                .map(drop)
                .map_err(|e| e.errno())
        }
        MmuOp::UpdateVa { va, val } => {
            let (l1, index) = l1_of(number, va).ok_or(Errno::Einval)?;
            tables(table, &mut mem, number)
                .update_entry(l1, TableLevel::L1, index, val)
                .map(drop)
                .map_err(|e| e.errno())
        }
        MmuOp::MachphysUpdate { mfn, pfn } => {
            // Only the domain's own frames (not its shared_info, not anyone else's).
            let owner = table.check_owner(Mfn(mfn), DomainId(number));
            if !matches!(owner, Ok(Owner::Domain(_))) {
                return Err(Errno::Eperm);
            }
            crate::mm::m2p::set(Mfn(mfn), pfn);
            Ok(())
        }
        // Routed to `descriptors` by the caller.
        MmuOp::SetGdt { .. } | MmuOp::SetLdt { .. } | MmuOp::UpdateDescriptor { .. } => {
            Err(Errno::Einval)
        }
    }
}

/// The L1 table (and index) behind guest `va` in the domain's current tables.
fn l1_of(number: u16, va: u64) -> Option<(Mfn, usize)> {
    if ((va << 16) as i64 >> 16) as u64 != va || xen_abi::layout::in_hypervisor_window(va) {
        return None;
    }
    let mut table = domain(number).base?;
    let mem = DirectTables;
    for shift in [39u32, 30, 21] {
        let entry = mem.read(table, ((va >> shift) & 511) as usize);
        if entry & 1 == 0 || entry & (1 << 7) != 0 {
            return None;
        }
        table = Mfn((entry & 0x000f_ffff_ffff_f000) >> 12);
    }
    Some((table, ((va >> 12) & 511) as usize))
}
