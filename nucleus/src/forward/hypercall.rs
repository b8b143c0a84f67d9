//! A guest vCPU's `syscall`, forwarded to its guest manager as a hypercall: straight into
//! its ring when pv-server sleeps in `RingWait` on this CPU ([`fast`]), else as a message.
use crate::thread::sched::{self, ExitFrame, NextTask};
use crate::thread::{Pending, ThreadId, Threads};
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use ipc::message::GuestMode;
use ipc::{Event, EventKind, NucleusMessage};
use xen_abi::layout::selector::{FLAT_RING3_CS64, FLAT_RING3_SS64};

/// Why a hypercall was left to the general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No thread is current, or it is no guest vCPU (a server's `syscall` is one of ours).
    NotGuest,
    /// Guest-user mode's `syscall`: an event to bounce, not a hypercall.
    UserMode,
    /// `trace=` is on: its records follow the general path's steps.
    Traced,
    /// The vCPU has no running guest manager: the general path stops it.
    NoManager,
    /// pv-server is not asleep in `RingWait` on this CPU: it gets the call the general way.
    NotWaiting,
    /// pv-server's event ring is missing, full or corrupt: the general path retries.
    Ring,
}

/// The hypercall fast path (issue 15 point 8, after issue 17's `int3` path): a guest
/// kernel's `syscall` whose guest manager sleeps in `RingWait` on this CPU goes field by
/// field into the manager's ring (`ipc::codec::push_hypercall_record`, the `Hypercall`
/// record's own layout: no message built, no private copy), the vCPU waits for the answer
/// with its segment state kept as `switch` keeps it, and the CPU switches straight to
/// pv-server (`sched::switch_to_server`, no pick). `frame` is the current thread's save
/// area (`dispatch` asks only for a guest slot's, `thread::is_guest_area`). `Err` changes
/// nothing: the syscall table then runs [`hypercall`], which does what it always did.
#[inline(always)]
pub fn fast(t: &mut Threads, frame: &mut Frame) -> Result<ExitFrame, Fallback> {
    let cur = t.current().ok_or(Fallback::NotGuest)?;
    let thread = t.get(cur);
    let domain = thread.domain().ok_or(Fallback::NotGuest)?;
    if thread.vcpu.mode != GuestMode::Kernel {
        return Err(Fallback::UserMode);
    }
    if crate::trace::active() {
        return Err(Fallback::Traced);
    }
    let manager = t.live_fault_handler(cur).ok_or(Fallback::NoManager)?;
    if !t.waits_here(manager) {
        return Err(Fallback::NotWaiting);
    }
    let token = t.upcoming_token();
    let receiver = t.get_mut(manager);
    let ring = receiver.events.as_mut().ok_or(Fallback::Ring)?;
    let call = || hypercall_of(frame, token, domain);
    // Not counted as a drop: the general path tries again and counts it.
    ipc::codec::push_hypercall_record(ring, call).map_err(|_| Fallback::Ring)?;
    receiver.wake();
    t.next_token();
    // As the table would: the vCPU made a syscall (the watchdog), and it resumes on Xen's
    // flat selectors (`hypercall`).
    frame.ret.cs = CsQword::from_raw(u64::from(FLAT_RING3_CS64));
    frame.ret.ss = SsQword::from_raw(u64::from(FLAT_RING3_SS64));
    let thread = t.get_mut(cur);
    thread.made_syscall();
    thread.block_on_reply(token);
    t.keep_live(cur, frame);
    sched::leave_guest(t, cur);
    let exit = sched::switch_to_server(t, manager);
    t.wake_remote();
    Ok(exit)
}

/// The hypercall vCPU 0 of `domain` makes in `frame` (pv64-abi.md §3: the number in RAX,
/// the arguments in RDI, RSI, RDX, R10, R8, R9), asked under `token`.
#[inline(always)]
fn hypercall_of(frame: &Frame, token: ipc::Token, domain: u16) -> ipc::message::Hypercall {
    let g = &frame.gprs;
    ipc::message::Hypercall {
        token,
        domain,
        vcpu: 0,
        number: g.rax,
        args: [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9],
        rip: frame.ret.rip,
        rsp: frame.ret.rsp,
        rflags: frame.ret.rflags,
    }
}

/// A guest vCPU's `syscall`: a hypercall (pv64-abi.md §3). It goes to the guest manager
/// with the arguments and where the guest stands, and the vCPU waits for the answer (a
/// `Return` sets its RAX; a `ResumeWith` is checked as any reply). Without a live manager
/// the domain cannot be served: the vCPU stops.
pub fn hypercall(t: &mut Threads, frame: &mut Frame, cur: ThreadId) -> NextTask {
    let Some(domain) = t.get(cur).domain() else {
        return NextTask::Same;
    };
    // The IDT's SYSCALL stub writes the servers' selectors into the frame (SYSCALL saves
    // none); a part-1 guest runs on Xen's flat selectors only, so it resumes on those.
    frame.ret.cs = CsQword::from_raw(u64::from(FLAT_RING3_CS64));
    frame.ret.ss = SsQword::from_raw(u64::from(FLAT_RING3_SS64));
    t.keep_live(cur, frame);
    let Some(handler) = t.live_fault_handler(cur) else {
        println!("nucleus: guest domain {domain} made a hypercall with no pv-server; stopping it");
        t.get_mut(cur).stop();
        return NextTask::Other;
    };
    let token = t.next_token();
    let call = hypercall_of(frame, token, domain);
    if t.get(cur).vcpu.mode == ipc::message::GuestMode::User {
        let event = Event {
            cpu: 0,
            kind: EventKind::Syscall,
            event_data: 0,
            rip: frame.ret.rip,
            cs: FLAT_RING3_CS64,
            rflags: frame.ret.rflags,
            rsp: frame.ret.rsp,
            ss: FLAT_RING3_SS64,
            from_ring: 3,
            insn_len: 2,
            owner: ipc::domain::guest_owner(domain),
        };
        t.get_mut(cur).pending = Some(Pending { token, event });
        return user_syscall(t, frame, cur, handler);
    }
    // A hypercall keeps no `pending` copy to re-send: its only handler is the guest manager,
    // and the manager's end ends its guests (`lifecycle`), so nobody else could answer it.
    match t.send(handler, &NucleusMessage::Hypercall(call)) {
        Ok(()) => {
            t.get_mut(cur).block_on_reply(token);
            NextTask::Other
        }
        Err(e) => {
            // A full ring: the guest retries the same `syscall` once pv-server caught up.
            frame.ret.rip = frame.ret.rip.wrapping_sub(2);
            t.keep_live(cur, frame);
            let _ = e;
            NextTask::NextInTurn
        }
    }
}

/// Guest-user mode's `syscall` is never a hypercall (pv64-abi.md §3): an event for pv-server
/// to bounce to the guest kernel's syscall callback, with the registers (the bounce frame
/// saves RCX and R11); the dump only if pv-server asks for it. Out of line: the hypercall
/// path stays as it was.
#[inline(never)]
fn user_syscall(t: &mut Threads, frame: &mut Frame, cur: ThreadId, handler: ThreadId) -> NextTask {
    let thread = t.get_mut(cur);
    let Some(Pending { token, event }) = thread.pending else {
        return NextTask::Same;
    };
    let mut dump = ipc::dump::RegisterDump::default();
    frame.fill_dump(&mut dump);
    thread.pending_dump = Some(dump);
    let regs = super::event::guest_registers(frame);
    match t.send(handler, &NucleusMessage::GuestEvent { token, event, regs }) {
        Ok(()) => {
            t.get_mut(cur).block_on_reply(token);
            NextTask::Other
        }
        Err(_) => {
            let thread = t.get_mut(cur);
            thread.pending = None;
            thread.pending_dump = None;
            frame.ret.rip = frame.ret.rip.wrapping_sub(2);
            t.keep_live(cur, frame);
            NextTask::NextInTurn
        }
    }
}
