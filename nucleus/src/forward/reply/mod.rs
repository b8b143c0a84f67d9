//! A thread's reply ring: every message is an allegation, checked and counted; a fault
//! handler's `Reply` settles the event of the thread that waits for it.
use super::changes::{apply_changes, apply_guest_resume};
use crate::lifecycle;
use crate::thread::{Kind, ThreadId, Threads};
use ipc::message::{Reply, ServerMessage};
use ipc::syscall::RegisterReply;

pub use crate::thread::COMPLAINTS_PER_TICK;

/// One record taken from a reply ring.
enum Record<'a> {
    /// A plain `Resume`, the reply to almost every event, read by hand as just its token (a
    /// `ServerMessage` is hundreds of bytes, not worth building and moving for a token).
    Resume(ipc::Token),
    /// A guest's hypercall answer, read by hand as its token and RAX.
    Return(ipc::Token, u64),
    /// Anything else, decoded (or not) into the caller's slot: the record stays small, so
    /// the hot `Resume` never moves a message-sized value.
    Other(&'a Result<ServerMessage, ipc::DecodeError>),
}

/// Drains thread `from`'s reply ring.
#[inline]
pub fn drain_replies(t: &mut Threads, from: ThreadId) {
    loop {
        let thread = t.get_mut(from);
        let Some(ring) = thread.replies.as_mut() else {
            return;
        };
        let mut slot = None;
        let slot_ref = &mut slot;
        let popped = ring.pop_with(move |record| {
            if let Some(token) = ipc::codec::resume_token(record) {
                return Record::Resume(token);
            }
            if let Some((token, rax)) = ipc::codec::return_reply(record) {
                return Record::Return(token, rax);
            }
            Record::Other(Option::insert(
                slot_ref,
                ipc::codec::decode::<ServerMessage>(record),
            ))
        });
        let message = match popped {
            Ok(None) => return,
            Ok(Some(Record::Resume(token))) => {
                on_reply(t, from, token, &Reply::Resume { token });
                continue;
            }
            Ok(Some(Record::Return(token, rax))) => {
                on_reply(t, from, token, &Reply::Return { token, rax });
                continue;
            }
            Ok(Some(Record::Other(Ok(message)))) => message,
            Ok(Some(Record::Other(Err(e)))) => {
                // The record was consumed: report it and go on with the next.
                if thread.may_complain(COMPLAINTS_PER_TICK) {
                    println!("nucleus: {}: dropped a message: {e}", thread.name());
                }
                continue;
            }
            Err(e) => {
                // Nothing can be consumed from a ring whose indices are garbage; the server
                // only hurt itself. Say so and stop draining (no loop on a broken ring).
                println!(
                    "nucleus: {}: reply ring corrupt ({e}); ignoring it until the server restarts",
                    thread.name()
                );
                thread.replies = None;
                return;
            }
        };
        match message {
            ServerMessage::Hello(hello) => {
                thread.greet();
                println!(
                    "nucleus: {} says hello (protocol {}, generation {})",
                    thread.name(),
                    hello.protocol,
                    thread.generation()
                );
                lifecycle::check_ready(t);
            }
            ServerMessage::Log(line) => {
                let name = thread.name();
                match ipc::console::log_line(name, line.text.as_bytes(), &mut thread.console) {
                    Some(line) => crate::text::print_server_line(name, line),
                    None => thread.drop_log(),
                }
            }
            ServerMessage::Reply(reply) => on_reply(t, from, reply.token(), reply),
            ServerMessage::Kexec(request) => crate::kexec::on_request(t, from, *request),
        }
    }
}

/// Thread `from`'s answer in registers (`Syscall::ReplyWait`), taken after its reply ring's
/// records as one more of them.
#[inline]
pub fn take_register_reply(t: &mut Threads, from: ThreadId, reply: RegisterReply) {
    on_reply(t, from, reply.token(), &reply.reply());
}

/// Whether thread `from` may answer for `waiter` (what [`Threads::waiting_for`] found for
/// its token): a fault handler decides about events, and the guest manager answers for its
/// guests' vCPUs (it handles no server's faults).
#[inline(always)]
pub fn may_answer(t: &Threads, from: ThreadId, waiter: Option<ThreadId>) -> bool {
    t.is_fault_handler(from)
        || (from == crate::thread::GUEST_MANAGER
            && waiter.is_some_and(|id| matches!(t.get(id).kind(), Kind::GuestVcpu { .. })))
}

/// A reply from thread `from` about `token` (`reply.token()`, which the caller has at hand):
/// only a fault handler decides about events.
#[inline(always)]
fn on_reply(t: &mut Threads, from: ThreadId, token: ipc::Token, reply: &Reply) {
    let handler = t.is_fault_handler(from);
    if handler && crate::bench::owns(token) {
        return crate::bench::on_reply(t);
    }
    // Looked up once: who waits decides whether `from` may answer, and is what it settles.
    let waiter = t.waiting_for(from, token);
    if !may_answer(t, from, waiter) {
        if t.get_mut(from).may_complain(COMPLAINTS_PER_TICK) {
            println!(
                "nucleus: {}: unexpected message Reply({reply:?})",
                t.get(from).name()
            );
        }
    } else {
        settle(t, from, token, reply, waiter)
    }
}

/// Carries out fault handler `from`'s decision about the event its token names (`waiter`,
/// the thread [`Threads::waiting_for`] found).
fn settle(
    t: &mut Threads,
    from: ThreadId,
    token: ipc::Token,
    reply: &Reply,
    waiter: Option<ThreadId>,
) {
    let Some(id) = waiter else {
        println!(
            "nucleus: {}: reply for unknown event {token}, ignored",
            t.get(from).name()
        );
        return;
    };
    if let Reply::SendDump { .. } = reply {
        // Not settled: the thread waits on for the answer to the event sent again.
        return crate::forward::event::resend_with_dump(t, id);
    }
    t.get_mut(id).settle();
    match reply {
        Reply::Resume { .. } => resume(t, id),
        Reply::ResumeWith { changes, .. } => {
            let (thread, frame) = t.thread_and_frame(id);
            if let Err(e) = apply_changes(frame, changes) {
                let name = thread.name();
                println!(
                    "nucleus: {}: refused changes for {name}: {e}; killing it",
                    t.get(from).name()
                );
                return lifecycle::kill(t, id);
            }
            thread.resume();
        }
        Reply::Return { rax, .. } => {
            t.frame_mut(id).gprs.rax = *rax;
            resume(t, id);
        }
        Reply::GuestResume { resume, .. } => {
            let handler = t.get(from).name();
            let (thread, frame) = t.thread_and_frame(id);
            let Some(domain) = thread.domain() else {
                println!(
                    "nucleus: {handler}: refused a guest context for {}; killing it",
                    thread.name()
                );
                return lifecycle::kill(t, id);
            };
            if let Err(e) = apply_guest_resume(frame, &mut thread.vcpu, resume) {
                println!(
                    "nucleus: {handler}: refused resume of guest domain {domain}: {e}; stopping it"
                );
                return lifecycle::kill(t, id);
            }
            thread.resume();
        }
        Reply::SendDump { .. } => {}
        Reply::Kill { .. } => lifecycle::kill(t, id),
        Reply::Restart { .. } => lifecycle::restart(t, id),
    }
}

/// Makes thread `id` runnable again, unless it is a guest vCPU whose RIP is not canonical:
/// a guest makes one with a `syscall` in the last two bytes below the hole (RCX =
/// 0x0000_8000_0000_0000), and IRETQ there raises #GP in the nucleus (ring 0, on the
/// guest's GS) — a fatal fault. Such a vCPU gets that #GP instead, as an event to its guest
/// manager (where a return to that RIP would have raised it), which decides: a guest without a
/// trap table crashes with its line and dump, one with a handler gets it bounced.
fn resume(t: &mut Threads, id: ThreadId) {
    let thread = t.get(id);
    if let Some(domain) = thread.domain()
        && !resumable_rip(t.frame(id).ret.rip)
    {
        let rip = t.frame(id).ret.rip;
        println!("nucleus: guest domain {domain}: rip {rip:#x} is not canonical; #GP to pv-server");
        return general_protection(t, id, domain);
    }
    t.get_mut(id).resume();
}

/// Whether IRETQ, SYSRETQ or ERETU may load `rip`: canonical (48-bit).
#[inline(always)]
pub fn resumable_rip(rip: u64) -> bool {
    ((rip << 16) as i64 >> 16) as u64 == rip
}

/// Forwards a #GP(0) at guest vCPU `id`'s saved RIP to its guest manager, with the dump; if
/// the manager cannot take it, the vCPU stops (nobody could answer it).
#[cold]
fn general_protection(t: &mut Threads, id: ThreadId, domain: u16) {
    let token = t.next_token();
    let frame = *t.frame(id);
    let thread = t.get_mut(id);
    let event = ipc::Event {
        cpu: 0,
        kind: ipc::EventKind::Exception {
            vector: 13,
            error_code: 0,
        },
        event_data: 0,
        rip: frame.ret.rip,
        cs: frame.ret.cs.raw() as u16,
        rflags: frame.ret.rflags,
        rsp: frame.ret.rsp,
        ss: frame.ret.ss.raw() as u16,
        from_ring: 3,
        insn_len: 0,
        owner: ipc::domain::guest_owner(domain),
    };
    thread.pending = Some(crate::thread::Pending { token, event });
    let mut dump = ipc::dump::RegisterDump::default();
    frame.fill_dump(&mut dump);
    thread.pending_dump = Some(dump);
    if super::event::send_pending(t, id).is_ok() {
        t.get_mut(id).block_on_reply(token);
    } else {
        println!("nucleus: guest domain {domain}: cannot report the #GP; stopping it");
        lifecycle::kill(t, id);
    }
}

#[cfg(test)]
mod tests;
