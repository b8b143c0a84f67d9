//! A thread's reply ring: every message is an allegation, checked and counted; a fault
//! handler's `Reply` settles the event of the thread that waits for it.
use super::changes::apply_changes;
use crate::lifecycle;
use crate::thread::{ThreadId, Threads};
use ipc::message::{Reply, ServerMessage};

/// One record taken from a reply ring.
enum Record {
    /// A plain `Resume`, the reply to almost every event, read by hand as just its token (a
    /// `ServerMessage` is hundreds of bytes, not worth building and moving for a token).
    Resume(ipc::Token),
    /// Anything else, decoded (or not).
    Other(Result<ServerMessage, ipc::DecodeError>),
}

/// Drains thread `from`'s reply ring.
pub fn drain_replies(t: &mut Threads, from: ThreadId) {
    loop {
        let thread = t.get_mut(from);
        let Some(ring) = thread.replies.as_mut() else {
            return;
        };
        let popped = ring.pop_with(|record| match ipc::codec::resume_token(record) {
            Some(token) => Record::Resume(token),
            None => Record::Other(ipc::codec::decode::<ServerMessage>(record)),
        });
        let message = match popped {
            Ok(None) => return,
            Ok(Some(Record::Resume(token))) => {
                on_reply(t, from, &Reply::Resume { token });
                continue;
            }
            Ok(Some(Record::Other(Ok(message)))) => message,
            Ok(Some(Record::Other(Err(e)))) => {
                // The record was consumed: report it and go on with the next.
                println!("nucleus: {}: dropped a message: {e}", thread.name());
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
            ServerMessage::Log(line) => println!("{}: {}", thread.name(), line.text),
            ServerMessage::Reply(reply) => on_reply(t, from, &reply),
            other => println!("nucleus: {}: unexpected message {other:?}", thread.name()),
        }
    }
}

/// A reply from thread `from`: only a fault handler decides about events.
fn on_reply(t: &mut Threads, from: ThreadId, reply: &Reply) {
    if !t.is_fault_handler(from) {
        println!(
            "nucleus: {}: unexpected message Reply({reply:?})",
            t.get(from).name()
        );
    } else if crate::bench::owns(reply.token()) {
        crate::bench::on_reply(t)
    } else {
        settle(t, from, reply)
    }
}

/// Carries out fault handler `from`'s decision about the event its token names.
fn settle(t: &mut Threads, from: ThreadId, reply: &Reply) {
    let token = reply.token();
    let Some(id) = t.waiting_for(from, token) else {
        println!(
            "nucleus: {}: reply for unknown event {token}, ignored",
            t.get(from).name()
        );
        return;
    };
    t.get_mut(id).settle();
    match reply {
        Reply::Resume { .. } => t.get_mut(id).resume(),
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
            thread.resume();
        }
        Reply::Kill { .. } => lifecycle::kill(t, id),
        Reply::Restart { .. } => lifecycle::restart(t, id),
    }
}
