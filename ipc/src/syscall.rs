//! Syscall numbers and error codes of the Ring3 server ABI.
//!
//! A server enters the nucleus with `syscall`: the number ([`Syscall`]) in `rax`, arguments in
//! `rdi, rsi, rdx, r10, r8, r9` (`rcx` and `r11` are clobbered by the instruction). The result
//! comes back in `rax`: a value `>= 0` is success, a negative value is a [`SyscallError`].
//! The numbers are the ABI: they never change meaning, new calls get new numbers.
//! Arguments are allegations: the nucleus checks every pointer and index a server passes.

use core::fmt;

/// What a server asks of the nucleus.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `console_write(ptr, len) -> len`: print bytes on COM1 as given (the nucleus escapes
    /// non-printable bytes). The server runtime (`ipc::rt`) sends whole lines that already
    /// start with `<name>: `, so the nucleus adds no prefix of its own.
    ConsoleWrite = 0,
    /// `ring_wait(ring) -> 0`: sleep until the peer of ring `ring` notifies or has published
    /// records since the last wait. Waiting on the event ring first lets the nucleus take
    /// everything queued on the reply ring, as `RingNotify` would: a server answers and
    /// sleeps in one syscall.
    RingWait = 1,
    /// `ring_notify(ring) -> 0`: wake the peer waiting on ring `ring` (records were pushed or
    /// space was freed).
    RingNotify = 2,
    /// `yield() -> 0`: give up the rest of the time slice.
    Yield = 3,
    /// `exit(code) -> !`: end the server; the nucleus reports the code (and may restart it).
    Exit = 4,
    /// `nop() -> 0`: enter and leave the nucleus, nothing else (the null syscall of the
    /// round-trip benchmark).
    Nop = 5,
    // The guest-manager calls (issue 15): only the thread that manages guests (pv-server)
    // may make them, and only about domains it created. Xen-ABI results (mmu, start) come
    // back as `0` or a positive Xen errno number, so a refusal is an answer, not a fault.
    /// `guest_module(index, buf, len) -> string length`: copies the command-line text of
    /// guest boot module `index` (after the leading `guest `) into `buf` (at most `len`
    /// bytes, not NUL-terminated). `BadArgument` when there is no such module.
    GuestModule = 6,
    /// `guest_module_read(index, offset, buf, len) -> bytes`: copies bytes of guest module
    /// `index`'s image from `offset` (fewer at its end, 0 past it).
    GuestModuleRead = 7,
    /// `domain_create(frames, name_ptr, name_len, mfns_ptr) -> domain`: a new domain named
    /// `name` (1-24 bytes of `[A-Za-z0-9_.-]`) owning `frames` zeroed RAM frames plus a
    /// zeroed shared_info frame shared with it; writes `frames + 1` little-endian u64 MFNs to
    /// `mfns_ptr`: the shared_info frame first, then the domain's frames in pfn order.
    /// `BadArgument` when there is not that much free memory.
    DomainCreate = 8,
    /// `domain_write(domain, mfn, offset, ptr, len) -> 0`: copies bytes into a frame the
    /// domain owns (or shares) that is not a validated page table.
    DomainWrite = 9,
    /// `guest_copy(domain, va, ptr, len | direction) -> 0 or Xen errno`: copies between the
    /// caller and guest virtual memory as vCPU 0's kernel sees it (walked in its current
    /// tables with the guest's U/RW rights). Bit 63 of the last argument set: to the guest.
    GuestCopy = 10,
    /// `domain_mmu(domain, op, a, b) -> 0 or Xen errno`: one page-table operation
    /// ([`crate::domain::MmuOp`]), checked entry by entry by the nucleus.
    DomainMmu = 11,
    /// `vcpu_start(domain, regs_ptr) -> 0 or Xen errno`: starts vCPU 0 with the
    /// [`crate::domain::VcpuStart`] block at `regs_ptr` (cr3 must be a pinned L4).
    VcpuStart = 12,
    /// `domain_destroy(domain) -> frames freed`: stops the domain's vCPU and gives every
    /// frame it owned back to the allocator.
    DomainDestroy = 13,
    /// `guest_console_write(domain, ptr, len) -> len`: prints bytes as the domain's console:
    /// each line as `guest NAME: <text>`, escaped like any console text.
    GuestConsoleWrite = 14,
    /// `free_frames() -> count`: free RAM frames (the lifecycle's free-memory figure).
    FreeFrames = 15,
    /// `trace_write(ptr, len) -> taken`: one `defmt` frame of the caller's for the binary
    /// trace (`ipc::rt::trace`, at most [`crate::trace::MAX_PAYLOAD`] bytes); the nucleus
    /// files it under the caller's slot. 1 if taken, 0 if the trace does not take server
    /// records (`trace=` below `all`: the caller may stop sending).
    TraceWrite = 16,
    /// `domain_read(domain, mfn, offset, ptr, len) -> 0`: copies bytes out of a frame the
    /// domain owns (or shares) into the caller (its shared_info: the vCPU's event mask).
    DomainRead = 17,
    /// `vcpu_segment_base(domain, which, base) -> 0 or Xen errno`: Xen's `set_segment_base`
    /// for vCPU 0 (FS, user GS, kernel GS, user GS selector), checked by the nucleus
    /// (`-EINVAL` for a non-canonical base or an unknown `which`) and loaded when it runs.
    VcpuSegmentBase = 18,
    /// `domain_share(domain) -> mfn`: a zeroed hypervisor frame shared with the domain (its
    /// grant-table frames), at most [`crate::domain::MAX_SHARED_FRAMES`]; it goes back to the
    /// allocator with the domain. `BadArgument` when no frame or share is left.
    DomainShare = 19,
    /// `clock(which) -> value`: the time base pv-server gives guests ([`crate::domain::Clock`]):
    /// the TSC rate the nucleus measured at boot against the PIT, and the RTC's wall clock
    /// with the TSC value it was read at.
    Clock = 20,
    /// `vcpu_selectors(domain, out_ptr) -> mask`: checks the DS, ES and FS selectors vCPU 0
    /// holds while it waits against its descriptor tables as they are now; each that would
    /// no longer load is made null (bit 0 DS, 1 ES, 2 FS of the mask). Writes the selectors
    /// as they were (DS, ES, FS, GS: four u16) to `out_ptr`: Xen's failsafe-callback frame.
    VcpuSelectors = 21,
    /// `reply_wait(token, verdict, rax) -> 0`: [`Syscall::RingWait`] on the event ring with
    /// one more answer than the reply ring holds, in registers ([`RegisterReply`]): the
    /// nucleus takes the ring's records first, then this answer, then the caller sleeps
    /// until events arrive. The event path's answers (`Reply::Resume`, `Reply::Return`)
    /// need no ring record this way, and the nucleus may switch straight to the thread
    /// the answer lets go on. A verdict it does not know is `BadArgument` (nothing taken,
    /// no sleep); the answer itself is checked as a ring record would be.
    ReplyWait = 22,
}

/// Highest syscall number.
pub const SYSCALL_MAX: u64 = Syscall::ReplyWait as u64;

/// The answer [`Syscall::ReplyWait`] carries in RDI (the token), RSI (the verdict) and RDX
/// (the verdict's value): the two replies of the event path, which fit in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterReply {
    /// `Reply::Resume`: verdict 0, RDX ignored.
    Resume(crate::Token),
    /// `Reply::Return`: verdict 1, RDX is the RAX the waiter gets.
    Return(crate::Token, u64),
}

impl RegisterReply {
    /// The verdict number of a `Resume` in RSI.
    pub const RESUME: u64 = 0;
    /// The verdict number of a `Return` in RSI.
    pub const RETURN: u64 = 1;

    /// RDI, RSI and RDX for the call.
    #[inline(always)]
    pub const fn to_registers(self) -> [u64; 3] {
        match self {
            Self::Resume(token) => [token.0, Self::RESUME, 0],
            Self::Return(token, rax) => [token.0, Self::RETURN, rax],
        }
    }

    /// What a caller's RDI, RSI and RDX say (an allegation: `None` for a verdict that is
    /// not one of the two).
    #[inline(always)]
    pub const fn from_registers(token: u64, verdict: u64, value: u64) -> Option<Self> {
        match verdict {
            Self::RESUME => Some(Self::Resume(crate::Token(token))),
            Self::RETURN => Some(Self::Return(crate::Token(token), value)),
            _ => None,
        }
    }

    /// The token the answer is about.
    #[inline(always)]
    pub const fn token(self) -> crate::Token {
        match self {
            Self::Resume(token) | Self::Return(token, _) => token,
        }
    }

    /// The answer as the reply message it stands for.
    pub const fn reply(self) -> crate::message::Reply {
        match self {
            Self::Resume(token) => crate::message::Reply::Resume { token },
            Self::Return(token, rax) => crate::message::Reply::Return { token, rax },
        }
    }
}

/// A number that is not a [`Syscall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSyscall(pub u64);

impl fmt::Display for UnknownSyscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown syscall {}", self.0)
    }
}

impl TryFrom<u64> for Syscall {
    type Error = UnknownSyscall;

    fn try_from(number: u64) -> Result<Self, UnknownSyscall> {
        Ok(match number {
            0 => Self::ConsoleWrite,
            1 => Self::RingWait,
            2 => Self::RingNotify,
            3 => Self::Yield,
            4 => Self::Exit,
            5 => Self::Nop,
            6 => Self::GuestModule,
            7 => Self::GuestModuleRead,
            8 => Self::DomainCreate,
            9 => Self::DomainWrite,
            10 => Self::GuestCopy,
            11 => Self::DomainMmu,
            12 => Self::VcpuStart,
            13 => Self::DomainDestroy,
            14 => Self::GuestConsoleWrite,
            15 => Self::FreeFrames,
            16 => Self::TraceWrite,
            17 => Self::DomainRead,
            18 => Self::VcpuSegmentBase,
            19 => Self::DomainShare,
            20 => Self::Clock,
            21 => Self::VcpuSelectors,
            22 => Self::ReplyWait,
            _ => return Err(UnknownSyscall(number)),
        })
    }
}

/// Why a syscall failed; returned in `rax` as the negative number.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyscallError {
    /// `rax` held a number that is not a [`Syscall`].
    NoSuchSyscall = -1,
    /// A pointer argument is not mapped readable/writable for the server, or not canonical.
    BadPointer = -2,
    /// A non-pointer argument is out of range (a length too long, a reserved value).
    BadArgument = -3,
    /// The ring index is not one of the server's rings.
    NoSuchRing = -4,
    /// The caller may not make this call (a guest-manager call from another server), or the
    /// domain it names is not one it manages.
    NotPermitted = -5,
    /// What the call names is in use on another CPU right now (a domain whose vCPU runs
    /// there): the nucleus has asked that CPU to let go; try again.
    Busy = -6,
}

impl SyscallError {
    /// The value the nucleus puts in `rax`.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The error a negative `rax` stands for, if it is one of ours.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => Self::NoSuchSyscall,
            -2 => Self::BadPointer,
            -3 => Self::BadArgument,
            -4 => Self::NoSuchRing,
            -5 => Self::NotPermitted,
            -6 => Self::Busy,
            _ => return None,
        })
    }
}

impl fmt::Display for SyscallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSuchSyscall => "no such syscall",
            Self::BadPointer => "bad pointer argument",
            Self::BadArgument => "bad argument",
            Self::NoSuchRing => "no such ring",
            Self::NotPermitted => "not permitted",
            Self::Busy => "busy on another cpu; try again",
        })
    }
}

/// Encodes a syscall's outcome into `rax`. Success values must be below 2⁶³ (they are lengths
/// and small numbers); a larger one is reported as `BadArgument` rather than read back as an
/// error code.
pub const fn to_rax(result: Result<u64, SyscallError>) -> u64 {
    match result {
        Ok(value) if value <= i64::MAX as u64 => value,
        Ok(_) => SyscallError::BadArgument.code() as u64,
        Err(error) => error.code() as u64,
    }
}

/// Decodes `rax` after a syscall returned (the server side of [`to_rax`]). A negative value
/// that is not a known code is returned as `Err(None)`.
pub const fn from_rax(rax: u64) -> Result<u64, Option<SyscallError>> {
    let signed = rax as i64;
    if signed >= 0 {
        Ok(rax)
    } else {
        Err(SyscallError::from_code(signed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        assert_eq!(Syscall::ConsoleWrite as u64, 0);
        assert_eq!(Syscall::Exit as u64, 4);
        assert_eq!(Syscall::Nop as u64, 5);
        assert_eq!(Syscall::GuestModule as u64, 6);
        assert_eq!(Syscall::FreeFrames as u64, 15);
        assert_eq!(Syscall::TraceWrite as u64, 16);
        assert_eq!(Syscall::ReplyWait as u64, 22);
        for number in 0..=SYSCALL_MAX {
            assert_eq!(Syscall::try_from(number).map(|s| s as u64), Ok(number));
        }
        assert_eq!(
            Syscall::try_from(SYSCALL_MAX + 1),
            Err(UnknownSyscall(SYSCALL_MAX + 1))
        );
        assert_eq!(Syscall::try_from(u64::MAX), Err(UnknownSyscall(u64::MAX)));
    }

    #[test]
    fn error_codes_round_trip_through_rax() {
        for error in [
            SyscallError::NoSuchSyscall,
            SyscallError::BadPointer,
            SyscallError::BadArgument,
            SyscallError::NoSuchRing,
            SyscallError::NotPermitted,
        ] {
            assert!(error.code() < 0);
            assert_eq!(from_rax(to_rax(Err(error))), Err(Some(error)));
        }
        assert_eq!(from_rax(to_rax(Ok(42))), Ok(42));
        assert_eq!(
            from_rax(to_rax(Ok(u64::MAX))),
            Err(Some(SyscallError::BadArgument))
        );
        assert_eq!(from_rax(-99i64 as u64), Err(None));
        assert_eq!(SyscallError::NoSuchRing.to_string(), "no such ring");
    }

    #[test]
    fn register_replies_round_trip_and_unknown_verdicts_are_refused() {
        use crate::Token;
        for reply in [
            RegisterReply::Resume(Token(7)),
            RegisterReply::Return(Token(u64::MAX), (-38i64) as u64),
            RegisterReply::Return(Token(0), 0),
        ] {
            let [token, verdict, value] = reply.to_registers();
            assert_eq!(
                RegisterReply::from_registers(token, verdict, value),
                Some(reply)
            );
            assert_eq!(reply.reply().token(), reply.token());
        }
        // RDX is ignored for a Resume, whatever the caller left there.
        assert_eq!(
            RegisterReply::from_registers(5, RegisterReply::RESUME, 0xdead),
            Some(RegisterReply::Resume(Token(5)))
        );
        for verdict in [2, 3, u64::MAX] {
            assert_eq!(RegisterReply::from_registers(1, verdict, 0), None);
        }
    }
}
