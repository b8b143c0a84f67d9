//! A domain's birth and end: `domain_create` hands it zeroed frames and a shared_info frame
//! and records them in the frame table; `domain_destroy` (and the guest manager's end) stops
//! its vCPU and gives every frame back to the allocator.
use super::memory::{self, Frames};
use super::registry::{Domain, domain, domains};
use crate::thread::Threads;
use bsp_x86_64::frame_owner::DomainId;
use bsp_x86_64::paging::PhysAddr;
use heapless::String;
use ipc::domain::{NUCLEUS_RESERVE_FRAMES, valid_name};
use ipc::syscall::SyscallError;
use xen_abi::Mfn;

/// Most frames one domain may have (64 MiB).
pub const MAX_DOMAIN_FRAMES: u64 = 64 * 256;

/// The guest manager died while a guest vCPU was live on another CPU: its domains end once
/// no CPU holds one (`lifecycle::end_guests`, retried every tick). Written inside the thread
/// table's borrow only.
pub static GUESTS_ENDING: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// `domain_create`: a domain of `frames` frames named by pv-server's `name_ptr`/`name_len`;
/// the shared_info MFN and then each frame's MFN are written to `mfns_ptr`.
pub fn create(
    t: &mut Threads,
    frames: u64,
    name_ptr: u64,
    name_len: u64,
    mfns_ptr: u64,
) -> Result<u64, SyscallError> {
    if frames == 0 || frames > MAX_DOMAIN_FRAMES || name_len > 24 {
        return Err(SyscallError::BadArgument);
    }
    if GUESTS_ENDING.load(core::sync::atomic::Ordering::Relaxed) {
        return Err(SyscallError::Busy); // the last manager's domains are still ending
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
    // Every frame the domain gets (its own and shared_info) comes out of what is free above
    // the nucleus' reserve, checked before the first is taken: a refusal takes nothing.
    if available_frames() < frames + 1 {
        return Err(SyscallError::BadArgument);
    }
    let Some(shared_info) = take_frame(table, id, true) else {
        return Err(SyscallError::BadArgument);
    };
    // The MFN list goes out in small chunks: the nucleus stack is 8 KiB.
    let mut chunk = [0u8; 64 * 8];
    let mut filled = 8;
    chunk[..8].copy_from_slice(&shared_info.0.to_le_bytes());
    let mut written = 0u64;
    for pfn in 0..frames {
        let Some(mfn) = take_frame(table, id, false) else {
            undo(table, number, shared_info, &[]);
            return Err(SyscallError::BadArgument);
        };
        // Frame `pfn` of the MFN list is the guest's pfn `pfn` (its p2m starts so).
        crate::mm::m2p::set(mfn, pfn);
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
        user_base: None,
        gdt: heapless::Vec::new(),
        ldt: heapless::Vec::new(),
        reserved: None,
        shared: heapless::Vec::new(),
    });
    Ok(u64::from(number))
}

/// Free frames a domain may still be given: what is free above [`NUCLEUS_RESERVE_FRAMES`].
fn available_frames() -> u64 {
    crate::mm::memory::free_count().saturating_sub(NUCLEUS_RESERVE_FRAMES)
}

/// A fresh zeroed frame from the allocator, assigned to (or shared with) `id`.
pub fn take_frame(table: &mut Frames, id: DomainId, share: bool) -> Option<Mfn> {
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

/// Gives every frame of domain `number` back (its own, its shared_info and `shared`).
fn undo(table: &mut Frames, number: u16, shared_info: Mfn, shared: &[Mfn]) -> u64 {
    let freed = table.release_domain(DomainId(number), |mfn| {
        crate::mm::m2p::clear(mfn);
        crate::mm::memory::free_frame(PhysAddr::new(mfn.0 << 12));
    });
    for mfn in core::iter::once(&shared_info).chain(shared) {
        crate::mm::memory::free_frame(PhysAddr::new(mfn.0 << 12));
    }
    freed
}

/// `domain_share`: a zeroed frame shared with domain `number` (a grant frame); its MFN.
pub fn share(number: u16) -> Result<u64, SyscallError> {
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    if domain(number).shared.is_full() || available_frames() == 0 {
        return Err(SyscallError::BadArgument);
    }
    let mfn = take_frame(table, DomainId(number), true).ok_or(SyscallError::BadArgument)?;
    let _ = domain(number).shared.push(mfn);
    Ok(mfn.0)
}

/// `domain_destroy`: the vCPU stops, the domain's number is free, its frames go back.
pub fn destroy(t: &mut Threads, number: u16) -> Result<u64, SyscallError> {
    if let Some(id) = t.guest_id(number) {
        // Live on another CPU: that CPU lets go of it first (its frames and tables must not
        // go back while it runs on them); the caller asks again.
        if t.live_elsewhere(id) {
            t.unplace(id);
            return Err(SyscallError::Busy);
        }
        let thread = t.get_mut(id);
        thread.stop();
        thread.guest_root = None;
    }
    let Some(gone) = domains()[usize::from(number - 1)].take() else {
        return Err(SyscallError::NotPermitted);
    };
    super::window::release(number, gone.reserved);
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    Ok(undo(table, number, gone.shared_info, &gone.shared))
}

/// Every domain's frames back to the allocator (their vCPUs were stopped by the caller).
pub fn destroy_all() {
    let Some(table) = memory::table() else {
        return;
    };
    for (slot, entry) in domains().iter_mut().enumerate() {
        if let Some(domain) = entry.take() {
            super::window::release(slot as u16 + 1, domain.reserved);
            undo(table, slot as u16 + 1, domain.shared_info, &domain.shared);
        }
    }
}
