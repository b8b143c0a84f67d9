//! pv-server's way into a domain's memory (architecture-notes, "Guest memory access"):
//! `domain_write` into a frame the domain owns that is no table in use, `domain_read` out of
//! one it owns or shares, and `guest_copy`
//! to or from a guest virtual address walked in the domain's current tables.
use super::memory::{self, DirectTables};
use super::registry::{domain, domain_number};
use crate::mm::AddressSpace;
use bsp_x86_64::frame_owner::{DomainId, PageType};
use bsp_x86_64::guest_walk::{self, Access};
use heapless::Vec;
use ipc::domain::{COPY_MAX, COPY_TO_GUEST};
use ipc::syscall::SyscallError;
use xen_abi::{Errno, Mfn};

/// `domain_write`: `len` bytes of pv-server's `ptr` into frame `mfn` of the domain at `offset`.
pub fn domain_write(
    space: &AddressSpace,
    raw_domain: u64,
    mfn: u64,
    offset: u64,
    ptr: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let (mfn, range) = owned_range(raw_domain, mfn, offset, len)?;
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    let info = table.info(mfn).ok_or(SyscallError::NotPermitted)?;
    // A table or descriptor frame in use changes only through the checked updates.
    if info.type_count() != 0 && info.page_type() != PageType::Writable {
        return Err(SyscallError::NotPermitted);
    }
    // SAFETY: the frame is the domain's (checked above) and no table.
    let frame = unsafe { memory::frame_bytes(mfn) };
    // Straight from pv-server into the frame (no 4 KiB bounce buffer on the 8 KiB stack):
    // `read` checks the whole range before it copies a byte, so a bad pointer changes nothing.
    space
        .read(ptr, &mut frame[range])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(0)
}

/// `domain_read`: `len` bytes of frame `mfn` of the domain (owned or shared) at `offset`
/// into pv-server's `ptr` (its shared_info: the vCPU's event mask). Reading changes nothing.
pub fn domain_read(
    space: &AddressSpace,
    raw_domain: u64,
    mfn: u64,
    offset: u64,
    ptr: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let (mfn, range) = owned_range(raw_domain, mfn, offset, len)?;
    // SAFETY: the frame is the domain's (checked above); only read.
    let frame = unsafe { memory::frame_bytes(mfn) };
    space
        .write(ptr, &frame[range])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(0)
}

/// Frame `mfn` of the domain and the bytes `[offset, offset + len)` in it, once the range
/// fits in the page and the domain owns (or shares) the frame.
fn owned_range(
    raw_domain: u64,
    mfn: u64,
    offset: u64,
    len: u64,
) -> Result<(Mfn, core::ops::Range<usize>), SyscallError> {
    let number = domain_number(raw_domain)?;
    if offset.checked_add(len).is_none_or(|end| end > 4096) {
        return Err(SyscallError::BadArgument);
    }
    let table = memory::table().ok_or(SyscallError::BadArgument)?;
    let mfn = Mfn(mfn);
    table
        .check_owner(mfn, DomainId(number))
        .map_err(|_| SyscallError::NotPermitted)?;
    Ok((mfn, offset as usize..(offset + len) as usize))
}

/// `guest_copy`: guest VA memory of a domain, walked in its current tables.
pub fn guest_copy(
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
    // pv-server's side whole first; with interrupts off on one CPU it stays so, and the
    // copies below go frame to frame without a bounce buffer on the nucleus stack.
    space
        .check(ptr, len, !to_guest)
        .map_err(|_| SyscallError::BadPointer)?;
    let access = if to_guest {
        Access::Write
    } else {
        Access::Read
    };
    // Walk every page first: a copy that would fault changes nothing.
    let mut done = 0u64;
    let mut pages: Vec<(Mfn, usize, usize), 3> = Vec::new();
    while done < len {
        let Some(at) = va.checked_add(done) else {
            return Ok(u64::from(Errno::Efault.raw()));
        };
        let page = match guest_walk::walk(table, &DirectTables, DomainId(number), base, at, access)
        {
            Ok(page) => page,
            Err(fault) => return Ok(u64::from(fault.errno().raw())),
        };
        let offset = usize::from(page.offset);
        let n = (4096 - offset).min((len - done) as usize);
        let _ = pages.push((page.mfn, offset, n));
        done += n as u64;
    }
    let mut at = ptr;
    for (mfn, offset, n) in pages {
        // SAFETY: `walk` found the frame mapped for the guest with the needed rights and
        // owned by (or shared with) the domain.
        let frame = &mut unsafe { memory::frame_bytes(mfn) }[offset..offset + n];
        let copied = if to_guest {
            space.read(at, frame)
        } else {
            space.write(at, frame)
        };
        copied.map_err(|_| SyscallError::BadPointer)?;
        at += n as u64;
    }
    Ok(0)
}
