//! Domains: PV64 guests' memory and vCPUs, the mechanism under pv-server's policy (issue 15
//! point 2). Every guest-manager syscall lands here after `syscall` checked the caller is
//! the guest manager; every value it passes is an allegation checked against the frame
//! table (`bsp_x86_64::frame_owner`), the page-table rules (`guest_pte`, `guest_tables`,
//! `guest_walk`) and the return rules (`guest_return`).
//!
//! Until the nucleus moves into L4 slots 256-271 its image and stacks live in slots
//! 272-511 too ([`LEGACY_SLOTS`]): a guest L4 gets those entries copied in after
//! validation, and no guest entry is accepted there.
mod memory;

use crate::mm::AddressSpace;
use crate::racy::RacyCell;
use crate::thread::{ThreadId, Threads};
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::frame_owner::{DomainId, PageType, TableLevel};
use bsp_x86_64::guest_pte::CpuLimits;
use bsp_x86_64::guest_return::{self, GuestDescriptors, GuestReturn};
use bsp_x86_64::guest_tables::{GuestTables, TableMemory};
use bsp_x86_64::guest_walk::{self, Access};
use bsp_x86_64::paging::PhysAddr;
use core::ops::Range;
use heapless::{String, Vec};
use ipc::domain::{COPY_MAX, COPY_TO_GUEST, MAX_DOMAINS, MmuOp, VcpuStart, valid_name};
use ipc::syscall::{Syscall, SyscallError};
use memory::DirectTables;
use xen_abi::{Errno, Mfn};

/// L4 slots the nucleus still uses outside Xen's window (image, stacks).
pub const LEGACY_SLOTS: Range<usize> = 272..512;
/// Most frames one domain may have (64 MiB).
pub const MAX_DOMAIN_FRAMES: u64 = 64 * 256;
/// Longest guest console line.
const CONSOLE_MAX: usize = 512;

struct Domain {
    name: String<24>,
    shared_info: Mfn,
    /// The L4 the vCPU runs on (holds one type reference).
    base: Option<Mfn>,
}

static DOMAINS: RacyCell<[Option<Domain>; MAX_DOMAINS]> =
    RacyCell::new([const { None }; MAX_DOMAINS]);

/// A guest boot module: its text after `guest `, and its bytes.
struct GuestModule {
    text: Vec<u8, 256>,
    range: Range<u64>,
}

static MODULES: RacyCell<Vec<GuestModule, 8>> = RacyCell::new(Vec::new());

fn domains() -> &'static mut [Option<Domain>; MAX_DOMAINS] {
    // SAFETY: reached only from the syscall path, once per call, interrupts off, one CPU.
    unsafe { &mut *DOMAINS.get() }
}

fn modules() -> &'static mut Vec<GuestModule, 8> {
    // SAFETY: written once at boot (`init`), read by syscalls afterwards; one CPU.
    unsafe { &mut *MODULES.get() }
}

/// Boot: the frame table over RAM and the guest modules. One line if guests cannot run.
pub fn init(boot: &crate::bootinfo::BootSummary) {
    if !memory::init() {
        println!("nucleus: no memory for the frame table; no guests");
        return;
    }
    for module in &boot.modules {
        if let Some(text) = module.name.strip_prefix(b"guest ")
            && let Ok(text) = Vec::from_slice(text)
        {
            let _ = modules().push(GuestModule {
                text,
                range: module.range.clone(),
            });
        }
    }
}

fn cpu_limits() -> CpuLimits {
    let bits = bsp_x86_64::insn::cpuid(0x8000_0008, 0).eax & 0xff;
    CpuLimits {
        phys_addr_bits: if bits == 0 { 36 } else { bits as u8 },
    }
}

/// The guest-manager syscall `call` of thread `cur` (arguments in `frame`'s registers).
/// `Ok` is the value for RAX; Xen-ABI verdicts are `Ok(errno)`.
pub fn syscall(
    t: &mut Threads,
    cur: ThreadId,
    call: Syscall,
    frame: &Frame,
) -> Result<u64, SyscallError> {
    let g = &frame.gprs;
    let (a0, a1, a2, a3, a4) = (g.rdi, g.rsi, g.rdx, g.r10, g.r8);
    let space = t.get(cur).space.as_ref().ok_or(SyscallError::BadPointer)?;
    match call {
        Syscall::GuestModule => guest_module(space, a0, a1, a2),
        Syscall::GuestModuleRead => guest_module_read(space, a0, a1, a2, a3),
        Syscall::DomainCreate => create(t, cur, a0, a1, a2, a3),
        Syscall::DomainWrite => domain_write(space, a0, a1, a2, a3, a4),
        Syscall::GuestCopy => guest_copy(space, a0, a1, a2, a3),
        Syscall::DomainMmu => {
            let domain = domain_number(a0)?;
            let op = MmuOp::decode(a1, a2, a3).ok_or(SyscallError::BadArgument)?;
            Ok(verdict(mmu(t, domain, op)))
        }
        Syscall::VcpuStart => {
            let domain = domain_number(a0)?;
            let mut block = [0u8; VcpuStart::SIZE];
            space
                .read(a1, &mut block)
                .map_err(|_| SyscallError::BadPointer)?;
            Ok(verdict(start(t, domain, &VcpuStart::from_bytes(&block))))
        }
        Syscall::DomainDestroy => destroy(t, domain_number(a0)?),
        Syscall::GuestConsoleWrite => console(t, cur, a0, a1, a2),
        Syscall::FreeFrames => Ok(crate::mm::memory::free_count()),
        _ => Err(SyscallError::NoSuchSyscall),
    }
}

fn verdict(result: Result<(), Errno>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(errno) => u64::from(errno.raw()),
    }
}

/// A domain number that names a live domain.
fn domain_number(raw: u64) -> Result<u16, SyscallError> {
    let number = u16::try_from(raw).map_err(|_| SyscallError::NotPermitted)?;
    match number
        .checked_sub(1)
        .and_then(|i| domains().get(usize::from(i)))
    {
        Some(Some(_)) => Ok(number),
        _ => Err(SyscallError::NotPermitted),
    }
}

fn domain(number: u16) -> &'static mut Domain {
    match domains()[usize::from(number - 1)].as_mut() {
        Some(domain) => domain,
        None => unreachable!("domain_number checked it"),
    }
}

fn guest_module(space: &AddressSpace, index: u64, buf: u64, len: u64) -> Result<u64, SyscallError> {
    let module = modules()
        .get(index as usize)
        .ok_or(SyscallError::BadArgument)?;
    let n = module.text.len().min(len as usize);
    space
        .write(buf, &module.text[..n])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(n as u64)
}

fn guest_module_read(
    space: &AddressSpace,
    index: u64,
    offset: u64,
    buf: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let module = modules()
        .get(index as usize)
        .ok_or(SyscallError::BadArgument)?;
    let bytes = crate::mm::module_bytes(&module.range);
    let start = (offset.min(bytes.len() as u64)) as usize;
    let n = (bytes.len() - start).min(len.min(1 << 20) as usize);
    space
        .write(buf, &bytes[start..start + n])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(n as u64)
}

fn create(
    t: &mut Threads,
    _cur: ThreadId,
    frames: u64,
    name_ptr: u64,
    name_len: u64,
    mfns_ptr: u64,
) -> Result<u64, SyscallError> {
    if frames == 0 || frames > MAX_DOMAIN_FRAMES || name_len > 24 {
        return Err(SyscallError::BadArgument);
    }
    let space = t
        .get(crate::thread::GUEST_MANAGER)
        .space
        .as_ref()
        .ok_or(SyscallError::BadPointer)?;
    let mut name = [0u8; 24];
    let name = &mut name[..name_len as usize];
    space
        .read(name_ptr, name)
        .map_err(|_| SyscallError::BadPointer)?;
    if !valid_name(name) {
        return Err(SyscallError::BadArgument);
    }
    space
        .check(mfns_ptr, (frames + 1) * 8, true)
        .map_err(|_| SyscallError::BadPointer)?;
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    let slot = domains()
        .iter()
        .position(Option::is_none)
        .ok_or(SyscallError::BadArgument)?;
    let number = slot as u16 + 1;
    let id = DomainId(number);
    if crate::mm::memory::free_count() < frames + 1 {
        return Err(SyscallError::BadArgument);
    }
    let Some(shared_info) = take_frame(table, id, true) else {
        return Err(SyscallError::BadArgument);
    };
    let mut chunk = [0u8; 512 * 8];
    let mut filled = 8;
    chunk[..8].copy_from_slice(&shared_info.0.to_le_bytes());
    let mut written = 0u64;
    for _ in 0..frames {
        let Some(mfn) = take_frame(table, id, false) else {
            undo(table, number, shared_info);
            return Err(SyscallError::BadArgument);
        };
        chunk[filled..filled + 8].copy_from_slice(&mfn.0.to_le_bytes());
        filled += 8;
        if filled == chunk.len() {
            let _ = space.write(mfns_ptr + written, &chunk);
            written += filled as u64;
            filled = 0;
        }
    }
    if filled > 0 {
        let _ = space.write(mfns_ptr + written, &chunk[..filled]);
    }
    let mut label = String::new();
    let _ = label.push_str(core::str::from_utf8(name).unwrap_or("guest"));
    domains()[slot] = Some(Domain {
        name: label,
        shared_info,
        base: None,
    });
    Ok(u64::from(number))
}

/// A fresh zeroed frame from the allocator, assigned to (or shared with) `id`.
fn take_frame(table: &mut memory::Frames, id: DomainId, share: bool) -> Option<Mfn> {
    let frame = crate::mm::memory::alloc_frame()?;
    let mfn = Mfn(frame.as_u64() >> 12);
    let taken = if share {
        table.share(mfn, id)
    } else {
        table.assign(mfn, id)
    };
    if taken.is_err() {
        crate::mm::memory::free_frame(frame);
        return None;
    }
    Some(mfn)
}

/// Gives every frame of domain `number` back (its own and its shared_info).
fn undo(table: &mut memory::Frames, number: u16, shared_info: Mfn) -> u64 {
    let freed = table.release_domain(DomainId(number), |mfn| {
        crate::mm::memory::free_frame(PhysAddr::new(mfn.0 << 12));
    });
    crate::mm::memory::free_frame(PhysAddr::new(shared_info.0 << 12));
    freed
}

fn destroy(t: &mut Threads, number: u16) -> Result<u64, SyscallError> {
    if let Some(id) = t.guest_id(number) {
        let thread = t.get_mut(id);
        thread.stop();
        thread.guest_root = None;
    }
    let shared_info = domain(number).shared_info;
    domains()[usize::from(number - 1)] = None;
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    Ok(undo(table, number, shared_info))
}

/// Every domain's frames back to the allocator (their vCPUs were stopped by the caller).
pub fn destroy_all() {
    let Some(table) = memory::table() else {
        return;
    };
    for (slot, entry) in domains().iter_mut().enumerate() {
        if let Some(domain) = entry.take() {
            undo(table, slot as u16 + 1, domain.shared_info);
        }
    }
}

fn domain_write(
    space: &AddressSpace,
    raw_domain: u64,
    mfn: u64,
    offset: u64,
    ptr: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let number = domain_number(raw_domain)?;
    if offset.checked_add(len).is_none_or(|end| end > 4096) {
        return Err(SyscallError::BadArgument);
    }
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    let mfn = Mfn(mfn);
    table
        .check_owner(mfn, DomainId(number))
        .map_err(|_| SyscallError::NotPermitted)?;
    let info = table.info(mfn).ok_or(SyscallError::NotPermitted)?;
    // A table or descriptor frame in use changes only through the checked updates.
    if info.type_count() != 0 && info.page_type() != PageType::Writable {
        return Err(SyscallError::NotPermitted);
    }
    let mut buf = [0u8; 4096];
    let buf = &mut buf[..len as usize];
    space.read(ptr, buf).map_err(|_| SyscallError::BadPointer)?;
    // SAFETY: the frame is the domain's (checked above) and no table.
    let frame = unsafe { memory::frame_bytes(mfn) };
    frame[offset as usize..(offset + len) as usize].copy_from_slice(buf);
    Ok(0)
}

/// `guest_copy`: guest VA memory of a domain, walked in its current tables.
fn guest_copy(
    space: &AddressSpace,
    raw_domain: u64,
    va: u64,
    ptr: u64,
    len_dir: u64,
) -> Result<u64, SyscallError> {
    let number = domain_number(raw_domain)?;
    let to_guest = len_dir & COPY_TO_GUEST != 0;
    let len = len_dir & !COPY_TO_GUEST;
    if len > COPY_MAX {
        return Err(SyscallError::BadArgument);
    }
    let Some(base) = domain(number).base else {
        return Ok(u64::from(Errno::Efault.raw()));
    };
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    let mut buf = [0u8; COPY_MAX as usize];
    let buf = &mut buf[..len as usize];
    if to_guest {
        space.read(ptr, buf).map_err(|_| SyscallError::BadPointer)?;
    } else {
        space
            .check(ptr, len, true)
            .map_err(|_| SyscallError::BadPointer)?;
    }
    let access = if to_guest {
        Access::Write
    } else {
        Access::Read
    };
    // Walk every page first: a copy that would fault changes nothing.
    let mut done = 0usize;
    let mut pages: Vec<(Mfn, usize, usize), 3> = Vec::new();
    while done < buf.len() {
        let Some(at) = va.checked_add(done as u64) else {
            return Ok(u64::from(Errno::Efault.raw()));
        };
        if LEGACY_SLOTS.contains(&(((at >> 39) & 511) as usize)) {
            return Ok(u64::from(Errno::Efault.raw()));
        }
        let page = match guest_walk::walk(table, &DirectTables, DomainId(number), base, at, access)
        {
            Ok(page) => page,
            Err(fault) => return Ok(u64::from(fault.errno().raw())),
        };
        let offset = usize::from(page.offset);
        let n = (4096 - offset).min(buf.len() - done);
        let _ = pages.push((page.mfn, offset, n));
        done += n;
    }
    let mut done = 0usize;
    for (mfn, offset, n) in pages {
        // SAFETY: `walk` found the frame mapped for the guest with the needed rights and
        // owned by (or shared with) the domain.
        let frame = unsafe { memory::frame_bytes(mfn) };
        if to_guest {
            frame[offset..offset + n].copy_from_slice(&buf[done..done + n]);
        } else {
            buf[done..done + n].copy_from_slice(&frame[offset..offset + n]);
        }
        done += n;
    }
    if !to_guest {
        space
            .write(ptr, buf)
            .map_err(|_| SyscallError::BadPointer)?;
    }
    Ok(0)
}

/// `guest_console_write`: the domain's text as lines `guest NAME: <escaped text>`, charged
/// to the guest manager's console budget (a guest that floods the console slows only its
/// own manager). Returns the bytes taken; the caller writes the rest later.
fn console(
    t: &mut Threads,
    cur: ThreadId,
    raw_domain: u64,
    ptr: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let number = domain_number(raw_domain)?;
    if len > CONSOLE_MAX as u64 {
        return Err(SyscallError::BadArgument);
    }
    let mut buf = [0u8; CONSOLE_MAX];
    let buf = &mut buf[..len as usize];
    let thread = t.get_mut(cur);
    let space = thread.space.as_ref().ok_or(SyscallError::BadPointer)?;
    space.read(ptr, buf).map_err(|_| SyscallError::BadPointer)?;
    let mut label: String<32> = String::new();
    let _ = label.push_str("guest ");
    let _ = label.push_str(&domain(number).name);
    // Each line under the domain's name, escaped: a guest never prints as the nucleus or a
    // server (a newline in its text ends its line, the next one gets the prefix again).
    let taken = ipc::console::write(&label, buf, &mut thread.console, |line| {
        crate::text::print_server_line(&label, line)
    });
    Ok(taken as u64)
}

fn tables<'a>(
    table: &'a mut memory::Frames,
    mem: &'a mut DirectTables,
    number: u16,
) -> GuestTables<'a, &'static mut [bsp_x86_64::frame_owner::FrameInfo], DirectTables> {
    GuestTables {
        frames: table,
        memory: mem,
        cpu: cpu_limits(),
        domain: DomainId(number),
    }
}

/// Takes a type reference of L4 on `mfn`; a first validation copies the nucleus' slots in.
fn get_l4(number: u16, mfn: Mfn) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    let fresh = table.info(mfn).is_some_and(|i| i.type_count() == 0);
    let mut mem = DirectTables;
    if fresh {
        if table.check_owner(mfn, DomainId(number)).is_err() {
            return Err(Errno::Einval);
        }
        if LEGACY_SLOTS
            .into_iter()
            .any(|slot| mem.read(mfn, slot) != 0)
        {
            return Err(Errno::Einval);
        }
    }
    tables(table, &mut mem, number)
        .get_table(mfn, TableLevel::L4)
        .map_err(|e| e.errno())?;
    if fresh {
        for slot in LEGACY_SLOTS {
            mem.write(mfn, slot, memory::nucleus_l4_entry(slot));
        }
    }
    Ok(())
}

/// Drops an L4 type reference; the last one takes the nucleus' slots out first.
fn put_l4(number: u16, mfn: Mfn) -> Result<(), Errno> {
    let table = memory::table().ok_or(Errno::Einval)?;
    let mut mem = DirectTables;
    if table.info(mfn).is_some_and(|i| i.type_count() == 1) {
        for slot in LEGACY_SLOTS {
            mem.write(mfn, slot, 0);
        }
    }
    tables(table, &mut mem, number)
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

fn mmu(t: &mut Threads, number: u16, op: MmuOp) -> Result<(), Errno> {
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
        MmuOp::Update { ptr, val } => {
            let table_mfn = Mfn(ptr >> 12);
            let index = ((ptr & 0xfff) >> 3) as usize;
            let Some(PageType::PageTable(l)) = table.info(table_mfn).map(|i| i.current_type())
            else {
                return Err(Errno::Einval);
            };
            if l == TableLevel::L4 && LEGACY_SLOTS.contains(&index) {
                return Err(Errno::Einval);
            }
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
    }
}

/// The L1 table (and index) behind guest `va` in the domain's current tables.
fn l1_of(number: u16, va: u64) -> Option<(Mfn, usize)> {
    if ((va << 16) as i64 >> 16) as u64 != va || xen_abi::layout::in_hypervisor_window(va) {
        return None;
    }
    if LEGACY_SLOTS.contains(&(((va >> 39) & 511) as usize)) {
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

fn start(t: &mut Threads, number: u16, regs: &VcpuStart) -> Result<(), Errno> {
    let id = t.guest_id(number).ok_or(Errno::Einval)?;
    if !t.get(id).is_absent() {
        return Err(Errno::Eexist);
    }
    let checked = guest_return::check(
        GuestReturn {
            rip: regs.rip,
            cs: regs.cs,
            rflags: regs.rflags,
            rsp: regs.rsp,
            ss: regs.ss,
        },
        GuestDescriptors::default(),
    )
    .map_err(|_| Errno::Einval)?;
    if regs.cr3 & 0xfff != 0 {
        return Err(Errno::Einval);
    }
    let l4 = Mfn(regs.cr3 >> 12);
    get_l4(number, l4)?;
    if let Some(old) = domain(number).base.replace(l4) {
        let _ = put_l4(number, old);
    }
    let mut frame = Frame::ZERO;
    frame.ret.rip = checked.rip;
    frame.ret.rsp = checked.rsp;
    frame.ret.rflags = checked.rflags;
    frame.ret.cs = CsQword::from_raw(u64::from(checked.cs));
    frame.ret.ss = SsQword::from_raw(u64::from(checked.ss));
    frame.gprs.rsi = regs.rsi;
    t.get_mut(id).start_guest(PhysAddr::new(regs.cr3), frame);
    Ok(())
}
