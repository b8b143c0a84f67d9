//! fred-server: Ring3 diagnostics and fault policy for fredvisor (architecture.md §6).
//!
//! Receives the events the nucleus forwards (every fault of a Ring3 server), reports them
//! with the shared `show_registers` renderer and answers resume / restart / kill. One module
//! per duty: [`diagnostics`] (fault lines, dumps, `#DF` records), [`policy`] (restart up to
//! three times, then give up), [`callgate`] (a server's `#GP[sel]`: refused, servers have no
//! gates; guests' are pv-server's), [`kexec`] (the hand-off request state machine); [`dispatch`] routes
//! messages between them. Options (StartInfo `args`): the runtime's `selfcheck` and
//! `fault=` (`ipc::rt::testopts`), `kexec-module=N` (a kexec asks for module N) and `kexec-after-events=N` (asks only after N
//! more events were answered).
//!
//! No `unsafe` here: the syscalls, `_start` and the ring pages are `ipc::rt`'s. On the host
//! this is a stub `main`, so `cargo test --workspace` runs the modules' tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![forbid(unsafe_code)]

mod callgate;
mod diagnostics;
mod dispatch;
mod kexec;
mod policy;

#[cfg(target_os = "none")]
mod server {
    use ipc::codec::HotRecord;
    use ipc::message::{NucleusMessage, ServerMessage};
    use ipc::println;
    use ipc::rt::console::Console;
    use ipc::rt::{Handler, Server, exit_code, sys, testopts};

    use crate::dispatch::Fred;

    fn main(mut server: Server) -> ! {
        if let Err(error) = server.hello() {
            println!("cannot say Hello: {error}");
            sys::exit(exit_code::NO_HELLO);
        }
        println!("started (generation {})", server.generation());
        testopts::run(&server);
        // Test options `kexec-module=N` (hostile kexec requests) and `kexec-after-events=N`
        // (a hand-off with events in flight).
        let number = |key: &[u8]| {
            server
                .info()
                .arg_value(key)
                .and_then(|v| core::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let kexec_module = number(b"kexec-module").and_then(|n| u16::try_from(n).ok());
        let kexec_after_events = number(b"kexec-after-events").unwrap_or(0);
        let fred = Fred::new()
            .with_kexec_module(kexec_module)
            .with_kexec_after_events(kexec_after_events);
        // Test option: crash on the first event, before answering it, in generation 0 (the
        // nucleus must hand the unanswered event to the restarted fred-server).
        let crash_on_event = server.info().has_arg(b"fault-on-event") && server.generation() == 0;
        let crash = move |message: &ipc::NucleusMessage| {
            if crash_on_event && matches!(message, ipc::NucleusMessage::Event { .. }) {
                println!("test option: fault-on-event: ud2 before answering");
                ipc::rt::cpu::invalid_opcode();
            }
        };
        if kexec_after_events == 0 {
            return server.serve_with(Serving {
                fred,
                crash,
                quick: !crash_on_event,
            });
        }
        // A deferred kexec request goes out besides an answer: the loop's tick sends it.
        let fred = core::cell::RefCell::new(fred);
        server.serve_ticking(
            |message, console| {
                crash(message);
                fred.borrow_mut().handle(message, console)
            },
            |send| {
                if let Some(message) = fred.borrow_mut().take_outgoing() {
                    send(message);
                }
                false
            },
        )
    }

    /// fred-server as the runtime's [`Handler`]: a counted `int3` and a ping answered from
    /// their records in place ([`Fred::quick`]), everything else by [`Fred::handle`].
    struct Serving<C> {
        fred: Fred,
        /// The `fault-on-event` test option's check, before any event is answered.
        crash: C,
        /// Whether events may be answered in place (not with `fault-on-event`).
        quick: bool,
    }

    impl<C: FnMut(&NucleusMessage)> Handler for Serving<C> {
        type Answer = Option<ServerMessage>;

        #[inline(always)]
        fn quick(&mut self, record: &HotRecord<'_>) -> Option<Self::Answer> {
            if !self.quick {
                return None;
            }
            self.fred
                .quick(record)
                .map(|reply| Some(ServerMessage::Reply(reply)))
        }

        #[inline(always)]
        fn handle(&mut self, message: &NucleusMessage, console: &mut Console) -> Self::Answer {
            (self.crash)(message);
            self.fred.handle(message, console)
        }
    }

    ipc::declare_server!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
