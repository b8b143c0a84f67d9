//! A domain's descriptor tables (issue 16 point 6): `set_gdt` and `SET_LDT` make each frame a
//! validated descriptor page (`bsp_x86_64::guest_descriptor`: never mapped writable while
//! it is one, every descriptor checked), all or nothing, and release the old table's frames;
//! `update_descriptor` changes one descriptor through the same check.
//!
//! The frames are mapped into the domain's descriptor-table window (`window`) before the old
//! ones are released, and the vCPU runs on that window from its next switch in (`track`).
use super::memory::{self, DirectTables};
use super::registry::domain;
use crate::mm::AddressSpace;
use bsp_x86_64::frame_owner::{DomainId, FrameInfo};
use bsp_x86_64::guest_pte::CpuLimits;
use bsp_x86_64::guest_tables::GuestTables;
use bsp_x86_64::guest_walk::{self, Access};
use heapless::Vec;
use ipc::domain::{MAX_GDT_FRAMES, MAX_LDT_FRAMES};
use xen_abi::layout::selector::FIRST_RESERVED_GDT_ENTRY;
use xen_abi::{Errno, Mfn};

/// Descriptors per frame.
const PER_FRAME: u64 = 512;
/// Most LDT descriptors.
const MAX_LDT_ENTRIES: u64 = 8192;

fn tables<'a>(
    table: &'a mut memory::Frames,
    mem: &'a mut DirectTables,
    number: u16,
) -> GuestTables<'a, &'static mut [FrameInfo], DirectTables> {
    GuestTables {
        frames: table,
        memory: mem,
        cpu: CpuLimits { phys_addr_bits: 52 },
        domain: DomainId(number),
    }
}

/// Takes a descriptor-page reference on each of `frames`, or on none of them.
fn take_all(number: u16, frames: &[Mfn]) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    let mut mem = DirectTables;
    let mut t = tables(table, &mut mem, number);
    for (taken, &mfn) in frames.iter().enumerate() {
        if t.get_descriptor_page(mfn).is_err() {
            for &back in &frames[..taken] {
                let _ = t.put_descriptor_page(back);
            }
            return Err(Errno::Einval);
        }
    }
    Ok(())
}

fn put_all(number: u16, frames: &[Mfn]) {
    let Some(table) = memory::table() else {
        return;
    };
    let mut mem = DirectTables;
    let mut t = tables(table, &mut mem, number);
    for &mfn in frames {
        let _ = t.put_descriptor_page(mfn);
    }
}

/// `set_gdt`: the `entries` descriptors in the frames listed (u64 MFNs) at pv-server's `list`.
pub fn set_gdt(space: &AddressSpace, number: u16, list: u64, entries: u64) -> Result<(), Errno> {
    if entries > u64::from(FIRST_RESERVED_GDT_ENTRY) {
        return Err(Errno::Einval);
    }
    let count = entries.div_ceil(PER_FRAME) as usize;
    let mut raw = [0u8; MAX_GDT_FRAMES * 8];
    space
        .read(list, &mut raw[..count * 8])
        .map_err(|_| Errno::Efault)?;
    let mut frames: Vec<Mfn, MAX_GDT_FRAMES> = Vec::new();
    for word in raw[..count * 8].chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let _ = frames.push(Mfn(u64::from_le_bytes(bytes)));
    }
    super::window::reserved(number)?;
    take_all(number, &frames)?;
    let _ = super::window::map_gdt(number, &frames);
    let old = core::mem::replace(&mut domain(number).gdt, frames);
    put_all(number, &old);
    Ok(())
}

/// `SET_LDT`: the `entries` descriptors at guest `va` (page-aligned), walked in the
/// domain's current tables; 0 entries: no LDT.
pub fn set_ldt(number: u16, va: u64, entries: u64) -> Result<(), Errno> {
    let canonical = ((va << 16) as i64 >> 16) as u64 == va;
    if !va.is_multiple_of(4096) || !canonical || entries > MAX_LDT_ENTRIES {
        return Err(Errno::Einval);
    }
    let count = entries.div_ceil(PER_FRAME);
    let mut frames: Vec<Mfn, MAX_LDT_FRAMES> = Vec::new();
    if count > 0 {
        let base = domain(number).base.ok_or(Errno::Einval)?;
        let table = memory::table().ok_or(Errno::Einval)?;
        for page in 0..count {
            let at = va.checked_add(page * 4096).ok_or(Errno::Einval)?;
            if xen_abi::layout::in_hypervisor_window(at) {
                return Err(Errno::Einval);
            }
            let found = guest_walk::walk(
                table,
                &DirectTables,
                DomainId(number),
                base,
                at,
                Access::Read,
            )
            .map_err(|_| Errno::Einval)?;
            let _ = frames.push(found.mfn);
        }
    }
    super::window::reserved(number)?;
    take_all(number, &frames)?;
    let _ = super::window::map_ldt(number, &frames, entries as u32);
    let old = core::mem::replace(&mut domain(number).ldt, frames);
    put_all(number, &old);
    Ok(())
}

/// Domain `number`'s vCPU runs on its descriptor tables as they are now.
pub fn track(t: &mut crate::thread::Threads, number: u16) {
    if let Some(id) = t.guest_id(number) {
        t.get_mut(id).tables = super::window::view(number);
    }
}

/// `update_descriptor`: the descriptor at machine address `maddr` becomes `desc`.
pub fn update_descriptor(number: u16, maddr: u64, desc: u64) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    let mut mem = DirectTables;
    tables(table, &mut mem, number)
        .update_descriptor(maddr, desc)
        .map_err(|e| e.errno())
}
