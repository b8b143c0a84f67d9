//! What pv-server answers to each message from the nucleus.
//!
//! Hypercalls are checked against the guest table. With no guests (issue 7), every one is
//! answered `Reply::Return` with `-ESRCH` in `rax`: resume the caller with an error, as Xen
//! does for a request about a domain that does not exist. Pings are answered `Resume`
//! (the ring benchmark); anything else is not ours and is reported, and an event that
//! waits for an answer is answered `Kill` so that nothing waits forever.

use core::fmt::Write;

use ipc::message::{Hypercall, NucleusMessage, Reply};
use xen_abi::Errno;

use crate::guests::GuestTable;

/// Answers one hypercall.
pub fn answer(table: &GuestTable, call: &Hypercall) -> Reply {
    let error = if table.is_empty() {
        Errno::Esrch
    } else {
        Errno::Enosys
    };
    Reply::Return {
        token: call.token,
        rax: error.rax(),
    }
}

/// Handles one message; returns the reply to send, if any. Lines for the console go to `out`
/// (already prefixed by the caller's sink, or written with `name: ` here).
pub fn handle(
    table: &GuestTable,
    name: &str,
    message: NucleusMessage,
    out: &mut impl Write,
) -> Option<Reply> {
    match message {
        NucleusMessage::Hypercall(call) => {
            let reply = answer(table, &call);
            if let Reply::Return { rax, .. } = reply {
                let _ = writeln!(
                    out,
                    "{name}: hypercall {} from vcpu {} -> {:#x} (no such guest)",
                    call.number, call.vcpu, rax
                );
            }
            Some(reply)
        }
        NucleusMessage::Ping { token } => Some(Reply::Resume { token }),
        NucleusMessage::Event { token, event } => {
            let _ = writeln!(
                out,
                "{name}: event {:?} for owner {} is not ours, killing it",
                event.kind, event.owner
            );
            Some(Reply::Kill { token })
        }
        NucleusMessage::DumpRecord(_)
        | NucleusMessage::Dump(_)
        | NucleusMessage::ServerStarted { .. } => {
            let _ = writeln!(
                out,
                "{name}: ignored a diagnostics message meant for fred-server"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::message::Token;

    #[test]
    fn hypercalls_without_guests_return_esrch() {
        let call = Hypercall {
            token: Token(5),
            vcpu: 0,
            number: 17,
            args: [0; 6],
        };
        let mut out = String::new();
        let reply = handle(
            &GuestTable::new(),
            "pv-server",
            NucleusMessage::Hypercall(call),
            &mut out,
        );
        assert_eq!(
            reply,
            Some(Reply::Return {
                token: Token(5),
                rax: (-3i64) as u64
            })
        );
        assert_eq!(
            out,
            "pv-server: hypercall 17 from vcpu 0 -> 0xfffffffffffffffd (no such guest)\n"
        );
        assert_eq!(Errno::Enosys.rax(), (-38i64) as u64);
    }

    #[test]
    fn pings_are_resumed_and_stray_events_killed() {
        let mut out = String::new();
        let table = GuestTable::new();
        let ping = handle(
            &table,
            "pv-server",
            NucleusMessage::Ping { token: Token(9) },
            &mut out,
        );
        assert_eq!(ping, Some(Reply::Resume { token: Token(9) }));
        let event = ipc::Event {
            cpu: 0,
            kind: ipc::EventKind::Exception {
                vector: 13,
                error_code: 0,
            },
            event_data: 0,
            rip: 0,
            cs: 0x33,
            rflags: 0,
            rsp: 0,
            ss: 0x2b,
            from_ring: 3,
            owner: 4,
        };
        let kill = handle(
            &table,
            "pv-server",
            NucleusMessage::Event {
                token: Token(1),
                event,
            },
            &mut out,
        );
        assert_eq!(kill, Some(Reply::Kill { token: Token(1) }));
    }
}
