//! A thread's reply ring: every message is an allegation, checked and counted; a fault
//! handler's `Reply` settles the event of the thread that waits for it.
use super::changes::apply_changes;
use crate::lifecycle;
use crate::thread::{ThreadId, Threads};
use ipc::message::{Reply, ServerMessage};

/// Complaints about one thread's messages printed per tick; the rest are counted.
pub const COMPLAINTS_PER_TICK: u32 = 4;

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
            other => {
                if thread.may_complain(COMPLAINTS_PER_TICK) {
                    println!("nucleus: {}: unexpected message {other:?}", thread.name());
                }
            }
        }
    }
}

/// A reply from thread `from` about `token` (`reply.token()`, which the caller has at hand):
/// only a fault handler decides about events.
#[inline(always)]
fn on_reply(t: &mut Threads, from: ThreadId, token: ipc::Token, reply: &Reply) {
    // The guest manager answers for its guests' vCPUs only (it handles no server's faults).
    let for_guest = from == crate::thread::GUEST_MANAGER
        && t.waiting_for(from, token)
            .is_some_and(|id| t.get(id).domain().is_some());
    if !t.is_fault_handler(from) && !for_guest {
        if t.get_mut(from).may_complain(COMPLAINTS_PER_TICK) {
            println!(
                "nucleus: {}: unexpected message Reply({reply:?})",
                t.get(from).name()
            );
        }
    } else if crate::bench::owns(token) {
        crate::bench::on_reply(t)
    } else {
        settle(t, from, token, reply)
    }
}

/// Carries out fault handler `from`'s decision about the event its token names.
fn settle(t: &mut Threads, from: ThreadId, token: ipc::Token, reply: &Reply) {
    let Some(id) = t.waiting_for(from, token) else {
        println!(
            "nucleus: {}: reply for unknown event {token}, ignored",
            t.get(from).name()
        );
        return;
    };
    t.get_mut(id).settle();
    match reply {
        Reply::Resume { .. } => resume(t, id),
        Reply::ResumeWith { changes, .. } => {
            let thread = t.get_mut(id);
            if let Err(e) = apply_changes(&mut thread.frame, changes) {
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
            let thread = t.get_mut(id);
            thread.frame.gprs.rax = *rax;
            resume(t, id);
        }
        Reply::Kill { .. } => lifecycle::kill(t, id),
        Reply::Restart { .. } => lifecycle::restart(t, id),
    }
}

/// Makes thread `id` runnable again, unless it is a guest vCPU whose RIP is not canonical:
/// a guest makes one with a `syscall` in the last two bytes below the hole (RCX =
/// 0x0000_8000_0000_0000), and IRETQ there raises #GP in the nucleus (ring 0, on the
/// guest's GS) — a fatal fault. Such a vCPU is stopped instead.
fn resume(t: &mut Threads, id: ThreadId) {
    let thread = t.get_mut(id);
    let rip = thread.frame.ret.rip;
    if let Some(domain) = thread.domain()
        && ((rip << 16) as i64 >> 16) as u64 != rip
    {
        println!("nucleus: guest domain {domain}: rip {rip:#x} is not canonical; stopping it");
        return lifecycle::kill(t, id);
    }
    thread.resume();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::kit::{self, fred, pv};
    use crate::thread::State;
    use bsp_x86_64::frame::Frame;
    use ipc::Token;
    use ipc::message::ResumeChanges;

    /// pv-server waits for fred-server's reply about token 42.
    fn waiting() -> (Threads, kit::ServerEnds, kit::ServerEnds) {
        let mut t = kit::booted();
        let fred_ends = kit::server_ends("fred-server");
        let pv_ends = kit::server_ends("pv-server");
        t.get_mut(pv()).block_on_reply(Token(42));
        (t, fred_ends, pv_ends)
    }

    #[test]
    fn return_sets_rax_and_resumes() {
        let (mut t, mut fred_ends, _) = waiting();
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::Return {
                token: Token(42),
                rax: 7,
            }),
        );
        drain_replies(&mut t, fred());
        assert!(t.get(pv()).runnable());
        assert_eq!(t.get(pv()).frame.gprs.rax, 7);
    }

    /// Domain 1's vCPU waits for pv-server's answer to hypercall `token`, saved at `rip`.
    fn guest_waiting(t: &mut Threads, token: Token, rip: u64) -> crate::thread::ThreadId {
        let id = t.guest_id(1).unwrap();
        let mut frame = Frame::ZERO;
        frame.ret.rip = rip;
        t.get_mut(id)
            .start_guest(bsp_x86_64::paging::PhysAddr::new(0x20_0000), frame);
        t.get_mut(id).block_on_reply(token);
        id
    }

    #[test]
    fn a_guest_never_resumes_at_a_non_canonical_rip() {
        // A `syscall` in the last two bytes below the hole saves RCX = 0x0000_8000_0000_0000:
        // IRETQ there would #GP in the nucleus (ring 0, on the guest's GS), a fatal fault.
        let (mut t, _fred_ends, mut pv_ends) = waiting();
        let bad = guest_waiting(&mut t, Token(50), 0x0000_8000_0000_0000);
        kit::send(
            &mut pv_ends,
            &ServerMessage::Reply(Reply::Return {
                token: Token(50),
                rax: 0,
            }),
        );
        drain_replies(&mut t, pv());
        assert!(t.get(bad).is_absent(), "{:?}", t.get(bad).state());
        assert!(
            kit::output().contains(
                "nucleus: guest domain 1: rip 0x800000000000 is not canonical; stopping it"
            )
        );
        // A plain Resume (a hostile pv-server answering a fault) is held to the same rule.
        let bad = guest_waiting(&mut t, Token(51), 0xffff_0000_0000_0000);
        kit::send(
            &mut pv_ends,
            &ServerMessage::Reply(Reply::Resume { token: Token(51) }),
        );
        drain_replies(&mut t, pv());
        assert!(t.get(bad).is_absent());
        // A canonical one resumes.
        let good = guest_waiting(&mut t, Token(52), 0x0000_7fff_ffff_fffe);
        kit::send(
            &mut pv_ends,
            &ServerMessage::Reply(Reply::Return {
                token: Token(52),
                rax: 3,
            }),
        );
        drain_replies(&mut t, pv());
        assert!(t.get(good).runnable());
        assert_eq!(t.get(good).frame.gprs.rax, 3);
    }

    #[test]
    fn refused_changes_kill_the_thread() {
        let (mut t, mut fred_ends, _) = waiting();
        let changes = ResumeChanges {
            rip: u64::MAX,
            rsp: 0,
            rflags: 0,
            gprs: heapless::Vec::new(),
        };
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::ResumeWith {
                token: Token(42),
                changes,
            }),
        );
        drain_replies(&mut t, fred());
        assert!(t.get(pv()).is_absent());
        assert!(kit::output().contains(
            "nucleus: fred-server: refused changes for pv-server: rip 0xffffffffffffffff outside user space; killing it"
        ));
    }

    #[test]
    fn restart_and_kill_replies() {
        let (mut t, mut fred_ends, _) = waiting();
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::Restart { token: Token(42) }),
        );
        drain_replies(&mut t, fred());
        assert_eq!(t.get(pv()).generation(), 1);
        assert!(t.get(pv()).runnable());
        t.get_mut(pv()).block_on_reply(Token(43));
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::Kill { token: Token(43) }),
        );
        drain_replies(&mut t, fred());
        assert!(t.get(pv()).is_absent());
    }

    #[test]
    fn only_a_fault_handler_may_reply_and_only_to_a_known_token() {
        let (mut t, mut fred_ends, mut pv_ends) = waiting();
        kit::send(
            &mut pv_ends,
            &ServerMessage::Reply(Reply::Kill { token: Token(42) }),
        );
        drain_replies(&mut t, pv());
        assert!(
            kit::output().contains(
                "nucleus: pv-server: unexpected message Reply(Kill { token: Token(42) })"
            )
        );
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::Kill { token: Token(9) }),
        );
        drain_replies(&mut t, fred());
        assert_eq!(
            kit::output(),
            "nucleus: fred-server: reply for unknown event #9, ignored\n"
        );
        assert_eq!(t.get(pv()).state(), State::WaitingForReply(Token(42)));
    }

    #[test]
    fn an_undecodable_record_is_reported_and_draining_goes_on() {
        let (mut t, mut fred_ends, _) = waiting();
        fred_ends.replies.try_push(&[0xff; 20]).unwrap();
        kit::send(
            &mut fred_ends,
            &ServerMessage::Reply(Reply::Resume { token: Token(42) }),
        );
        drain_replies(&mut t, fred());
        assert!(kit::output().starts_with("nucleus: fred-server: dropped a message: "));
        assert!(t.get(pv()).runnable());
    }

    #[test]
    fn hello_is_printed_with_the_generation() {
        let (mut t, mut fred_ends, _) = waiting();
        let hello = ipc::Hello {
            name: ipc::message::ServerName::new("fred-server").unwrap(),
            protocol: ipc::PROTOCOL_VERSION,
        };
        kit::send(&mut fred_ends, &ServerMessage::Hello(hello));
        drain_replies(&mut t, fred());
        assert_eq!(
            kit::output(),
            format!(
                "nucleus: fred-server says hello (protocol {}, generation 0)\n",
                ipc::PROTOCOL_VERSION
            )
        );
        assert!(t.get(fred()).said_hello());
    }

    fn log(text: &str) -> ServerMessage {
        ServerMessage::Log(ipc::message::LogLine {
            level: ipc::message::LogLevel::Info,
            text: text.try_into().unwrap(),
        })
    }

    #[test]
    fn a_log_line_is_prefixed_and_escaped_and_dropped_over_budget() {
        let (mut t, _fred_ends, mut pv_ends) = waiting();
        kit::send(&mut pv_ends, &log("x\nnucleus: FATAL: forged\r"));
        let long = "y".repeat(100);
        kit::send(&mut pv_ends, &log(&long));
        kit::send(&mut pv_ends, &log(&long));
        drain_replies(&mut t, pv());
        assert_eq!(
            kit::output(),
            format!("pv-server: x\\x0anucleus: FATAL: forged\\x0d\npv-server: {long}\n")
        );
        // The tick reports what the spent budget dropped.
        crate::lifecycle::tick(&mut t);
        while !t.get(pv()).console.available() {
            crate::lifecycle::tick(&mut t);
        }
        crate::lifecycle::tick(&mut t);
        assert!(
            kit::output().contains("nucleus: pv-server: 1 log line(s) dropped (console budget)\n")
        );
    }

    #[test]
    fn complaints_about_one_threads_messages_are_limited_per_tick() {
        let (mut t, _fred_ends, mut pv_ends) = waiting();
        for _ in 0..COMPLAINTS_PER_TICK + 2 {
            pv_ends.replies.try_push(&[0xff; 8]).unwrap();
        }
        drain_replies(&mut t, pv());
        let out = kit::output();
        assert_eq!(
            out.matches("nucleus: pv-server: dropped a message: ")
                .count(),
            COMPLAINTS_PER_TICK as usize
        );
        crate::lifecycle::tick(&mut t);
        assert_eq!(
            kit::output(),
            "nucleus: pv-server: 2 more complaint(s) about its messages not shown\n"
        );
    }
}
