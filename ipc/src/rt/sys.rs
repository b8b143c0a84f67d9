//! The `syscall` instruction and one safe wrapper per [`Syscall`] (ipc::syscall's ABI).
//!
//! Only [`raw`] executes the instruction. The wrappers are safe because none of our syscalls
//! writes to the caller's memory: `console_write` only *reads* `[ptr, ptr + len)`, and the
//! nucleus checks that range (a bad one is [`SyscallError::BadPointer`], never a fault in the
//! server). That is also why [`console_write_raw`] may take any address: the selfcheck passes
//! kernel and unmapped pointers on purpose.

use core::arch::asm;
use core::fmt;

use crate::layout::{EVENT_RING_ID, REPLY_RING_ID};
use crate::syscall::{RegisterReply, Syscall, SyscallError, from_rax};

/// Why a syscall failed, as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysError {
    /// One of the documented [`SyscallError`]s.
    Known(SyscallError),
    /// A negative `rax` that is not a documented code (a nucleus/runtime mismatch).
    Unknown(u64),
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(error) => error.fmt(f),
            Self::Unknown(rax) => write!(f, "unknown syscall error {:#x}", rax),
        }
    }
}

/// Which of the server's two rings a wait or notify is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingId {
    /// Nucleus → server ([`crate::layout::EVENT_RING`]).
    Event,
    /// Server → nucleus ([`crate::layout::REPLY_RING`]).
    Reply,
}

impl RingId {
    const fn number(self) -> u64 {
        match self {
            Self::Event => EVENT_RING_ID,
            Self::Reply => REPLY_RING_ID,
        }
    }
}

/// Executes `syscall` with `number` in `rax` and `args` in `rdi, rsi, rdx, r10, r8, r9`.
/// Returns `rax`. The nucleus preserves every other register but `rcx` and `r11`.
///
/// # Safety
///
/// The call's effects on this address space must be the ones `ipc::syscall` documents for
/// `number`, and they must be acceptable to the caller: every pointer argument must be one
/// the caller may let the nucleus access in the documented way.
#[inline(always)]
pub unsafe fn raw(number: u64, args: [u64; 6]) -> u64 {
    let rax: u64;
    // SAFETY: `syscall` saves RIP/RFLAGS in rcx/r11 (declared clobbered) and enters the
    // nucleus, which returns with every other register intact (the ABI in ipc::syscall). It
    // does not use our stack. The memory effects are the caller's contract (see above); the
    // asm is not `nomem`, so the compiler assumes memory may have been read or written.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => rax,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rax
}

/// [`raw`] of a call that takes at most one argument: only `rax` and `rdi` are set (the
/// nucleus reads no other argument register for these calls), so the wrapper of the serve
/// loop's `ring_wait` is the `syscall` and the two moves, not six register clears more.
///
/// # Safety
///
/// As for [`raw`].
#[inline(always)]
pub unsafe fn raw1(number: u64, arg0: u64) -> u64 {
    let rax: u64;
    // SAFETY: as in `raw`: the nucleus preserves every register but rcx, r11 and rax; the
    // memory effects are the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => rax,
            in("rdi") arg0,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rax
}

/// [`call`] of a call with at most one argument and no pointer ([`raw1`]).
#[inline(always)]
fn call1(number: Syscall, arg0: u64) -> Result<u64, SysError> {
    // SAFETY: the calls passed here (ring wait/notify, yield, nop, exit) take no pointer and
    // touch nothing in our address space.
    let rax = unsafe { raw1(number as u64, arg0) };
    if (rax as i64) >= 0 {
        Ok(rax)
    } else {
        Err(sys_error(rax))
    }
}

/// The error a negative `rax` stands for (out of line: the hot calls do not fail).
#[cold]
#[inline(never)]
fn sys_error(rax: u64) -> SysError {
    match from_rax(rax) {
        Err(Some(error)) => SysError::Known(error),
        _ => SysError::Unknown(rax),
    }
}

/// A syscall whose only memory effect on us is reading what its pointer arguments describe.
fn call(number: Syscall, args: [u64; 6]) -> Result<u64, SysError> {
    // SAFETY: every `Syscall` so far writes nothing in our address space; the nucleus only
    // reads through pointer arguments, and checks them first (ipc::syscall).
    let rax = unsafe { raw(number as u64, args) };
    from_rax(rax).map_err(|known| match known {
        Some(error) => SysError::Known(error),
        None => SysError::Unknown(rax),
    })
}

/// Prints `bytes` on the console; returns how many were written.
pub fn console_write(bytes: &[u8]) -> Result<u64, SysError> {
    console_write_raw(bytes.as_ptr() as u64, bytes.len() as u64)
}

/// `console_write` with an arbitrary (possibly bad) address: the nucleus must refuse a
/// pointer that is not ours with [`SyscallError::BadPointer`].
pub fn console_write_raw(address: u64, len: u64) -> Result<u64, SysError> {
    call(Syscall::ConsoleWrite, [address, len, 0, 0, 0, 0])
}

/// Sleeps until the peer published to `ring` (or notified) since our last wait.
#[inline(always)]
pub fn ring_wait(ring: RingId) -> Result<(), SysError> {
    call1(Syscall::RingWait, ring.number()).map(drop)
}

/// [`ring_wait`] on the event ring handing the nucleus `reply` in registers as well
/// (`Syscall::ReplyWait`: after what the reply ring holds).
#[inline(always)]
pub fn reply_wait(reply: RegisterReply) -> Result<(), SysError> {
    let [token, verdict, value] = reply.to_registers();
    let rax: u64;
    // SAFETY: as in `raw`: the nucleus preserves every register but rcx, r11 and rax, and
    // this call takes no pointer (it reads the three registers as values, and our rings
    // are the only memory it looks at, which it owns the other side of).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") Syscall::ReplyWait as u64 => rax,
            in("rdi") token,
            in("rsi") verdict,
            in("rdx") value,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (rax as i64) >= 0 {
        Ok(())
    } else {
        Err(sys_error(rax))
    }
}

/// `reply_wait` with arbitrary registers (tests of the nucleus' checks of them).
pub fn reply_wait_raw(token: u64, verdict: u64, value: u64) -> Result<(), SysError> {
    call(Syscall::ReplyWait, [token, verdict, value, 0, 0, 0]).map(drop)
}

/// Wakes the peer of `ring` (we pushed records, or freed space).
#[inline]
pub fn ring_notify(ring: RingId) -> Result<(), SysError> {
    call1(Syscall::RingNotify, ring.number()).map(drop)
}

/// `ring_wait` with an unchecked ring number (tests of the nucleus' argument checks).
pub fn ring_wait_raw(ring: u64) -> Result<(), SysError> {
    call(Syscall::RingWait, [ring, 0, 0, 0, 0, 0]).map(drop)
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    // Cannot fail (no arguments); a failure would only mean we did not yield.
    let _ = call1(Syscall::Yield, 0);
}

/// Enters and leaves the nucleus, nothing else (the benchmark's null syscall).
#[inline]
pub fn nop() -> Result<(), SysError> {
    call1(Syscall::Nop, 0).map(drop)
}

/// Hands one trace frame to the nucleus; false once it says it takes none (or refuses).
pub fn trace_write(frame: &[u8]) -> bool {
    call(
        Syscall::TraceWrite,
        [frame.as_ptr() as u64, frame.len() as u64, 0, 0, 0, 0],
    ) == Ok(1)
}

/// Ends this server with `code`; the nucleus reports it (and may restart the server).
pub fn exit(code: u64) -> ! {
    let _ = call(Syscall::Exit, [code, 0, 0, 0, 0, 0]);
    // The nucleus never returns from `exit`; if it did, stop here rather than run on.
    loop {
        yield_now();
    }
}

/// A syscall that writes into `out` (and reads nothing else of ours but its other pointer
/// arguments): the nucleus checks `out` is mapped writable for us and writes at most
/// `out.len()` bytes there.
fn call_into(
    number: Syscall,
    mut args: [u64; 6],
    out: &mut [u8],
    at: usize,
) -> Result<u64, SysError> {
    args[at] = out.as_mut_ptr() as u64;
    // SAFETY: the nucleus writes only inside `out` (an exclusive borrow for the duration of
    // the call; its pointer and length are the arguments it checks), as ipc::syscall
    // documents for every call that has an output buffer.
    let rax = unsafe { raw(number as u64, args) };
    from_rax(rax).map_err(|known| match known {
        Some(error) => SysError::Known(error),
        None => SysError::Unknown(rax),
    })
}

/// The text of guest boot module `index` (after `guest `); its length.
pub fn guest_module(index: u64, out: &mut [u8]) -> Result<usize, SysError> {
    let len = out.len() as u64;
    call_into(Syscall::GuestModule, [index, 0, len, 0, 0, 0], out, 1).map(|n| n as usize)
}

/// Bytes of guest module `index`'s image from `offset`; how many were copied.
pub fn guest_module_read(index: u64, offset: u64, out: &mut [u8]) -> Result<usize, SysError> {
    let len = out.len() as u64;
    call_into(
        Syscall::GuestModuleRead,
        [index, offset, 0, len, 0, 0],
        out,
        2,
    )
    .map(|n| n as usize)
}

/// A new domain of `frames` frames named `name`; `mfns` gets `frames + 1` little-endian u64
/// MFNs (shared_info first). Returns the domain number.
pub fn domain_create(frames: u64, name: &[u8], mfns: &mut [u8]) -> Result<u16, SysError> {
    if (mfns.len() as u64) < (frames + 1) * 8 {
        return Err(SysError::Known(SyscallError::BadArgument));
    }
    call_into(
        Syscall::DomainCreate,
        [frames, name.as_ptr() as u64, name.len() as u64, 0, 0, 0],
        mfns,
        3,
    )
    .map(|n| n as u16)
}

/// Writes `bytes` at `offset` in frame `mfn` of `domain`.
pub fn domain_write(domain: u16, mfn: u64, offset: u64, bytes: &[u8]) -> Result<(), SysError> {
    call(
        Syscall::DomainWrite,
        [
            u64::from(domain),
            mfn,
            offset,
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            0,
        ],
    )
    .map(drop)
}

/// Copies bytes at `offset` of frame `mfn` (the domain's or shared with it) into `out`.
pub fn domain_read(domain: u16, mfn: u64, offset: u64, out: &mut [u8]) -> Result<(), SysError> {
    let len = out.len() as u64;
    call_into(
        Syscall::DomainRead,
        [u64::from(domain), mfn, offset, 0, len, 0],
        out,
        3,
    )
    .map(drop)
}

/// Copies guest VA `va` of `domain` into `out`; `Ok(errno)` is Xen's answer (0: done).
pub fn guest_read(domain: u16, va: u64, out: &mut [u8]) -> Result<u64, SysError> {
    let len = out.len() as u64;
    call_into(
        Syscall::GuestCopy,
        [u64::from(domain), va, 0, len, 0, 0],
        out,
        2,
    )
}

/// Copies `bytes` to guest VA `va` of `domain`; `Ok(errno)` is Xen's answer (0: done).
pub fn guest_write(domain: u16, va: u64, bytes: &[u8]) -> Result<u64, SysError> {
    call(
        Syscall::GuestCopy,
        [
            u64::from(domain),
            va,
            bytes.as_ptr() as u64,
            bytes.len() as u64 | crate::domain::COPY_TO_GUEST,
            0,
            0,
        ],
    )
}

/// One page-table operation; `Ok(errno)` is Xen's answer (0: done).
pub fn domain_mmu(domain: u16, op: crate::domain::MmuOp) -> Result<u64, SysError> {
    let (op, a, b) = op.encode();
    call(Syscall::DomainMmu, [u64::from(domain), op, a, b, 0, 0])
}

/// Starts vCPU 0 of `domain`; `Ok(errno)` is the nucleus' verdict (0: running).
pub fn vcpu_start(domain: u16, regs: &crate::domain::VcpuStart) -> Result<u64, SysError> {
    let bytes = regs.to_bytes();
    call(
        Syscall::VcpuStart,
        [u64::from(domain), bytes.as_ptr() as u64, 0, 0, 0, 0],
    )
}

/// Xen's `set_segment_base(which, base)` for vCPU 0 of `domain`; `Ok(errno)` is the
/// nucleus' verdict (0: loaded when the vCPU next runs).
pub fn vcpu_segment_base(domain: u16, which: u64, base: u64) -> Result<u64, SysError> {
    call(
        Syscall::VcpuSegmentBase,
        [u64::from(domain), which, base, 0, 0, 0],
    )
}

/// `vcpu_selectors` for vCPU 0 of `domain`: the mask of selectors made null, the selectors
/// as they were (DS, ES, FS, GS) in `out`.
pub fn vcpu_selectors(domain: u16, out: &mut [u16; 4]) -> Result<u64, SysError> {
    let mut bytes = [0u8; 8];
    let mask = call(
        Syscall::VcpuSelectors,
        [u64::from(domain), bytes.as_mut_ptr() as u64, 0, 0, 0, 0],
    )?;
    for (word, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *word = u16::from_le_bytes([pair[0], pair[1]]);
    }
    Ok(mask)
}

/// Ends `domain`; returns how many frames went back to the allocator.
pub fn domain_destroy(domain: u16) -> Result<u64, SysError> {
    call(Syscall::DomainDestroy, [u64::from(domain), 0, 0, 0, 0, 0])
}

/// Prints `bytes` as `domain`'s console (`guest NAME: …` lines).
pub fn guest_console_write(domain: u16, bytes: &[u8]) -> Result<u64, SysError> {
    call(
        Syscall::GuestConsoleWrite,
        [
            u64::from(domain),
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            0,
            0,
            0,
        ],
    )
}

/// A zeroed frame shared with `domain` (a grant frame); its MFN.
pub fn domain_share(domain: u16) -> Result<u64, SysError> {
    call(Syscall::DomainShare, [u64::from(domain), 0, 0, 0, 0, 0])
}

/// One value of the nucleus' time base.
pub fn clock(which: crate::domain::Clock) -> Result<u64, SysError> {
    call(Syscall::Clock, [which as u64, 0, 0, 0, 0, 0])
}

/// Free RAM frames.
pub fn free_frames() -> Result<u64, SysError> {
    call(Syscall::FreeFrames, [0; 6])
}
