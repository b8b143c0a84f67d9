//! Routes each message from the nucleus to the duty that owns it and builds the reply.
//!
//! A crash arrives as the dump parts of the faulting frame (`NucleusMessage::Dump`, reason
//! `ServerCrash`, carrying the event's token) followed by the `Event` itself; the event is
//! answered whether or not a dump came with it. Console output goes to a `fmt::Write` sink,
//! so the whole flow is host-tested below with a `String`.

use core::fmt::Write;

use ipc::codec::{EventRecord, HotRecord};
use ipc::dump::RegisterDump;
use ipc::dump_parts::DumpAssembler;
use ipc::message::{DumpReason, NucleusMessage, Reply, ServerMessage, Token};
use ipc::{Event, EventKind};

use crate::callgate;
use crate::diagnostics::{self, Int3Reports, Int3Verdict, OwnerNames, PREFIX};
use crate::kexec::Kexec;
use crate::policy::{Decision, MAX_RESTARTS, Policy};

/// fred-server's state across messages.
pub struct Fred {
    names: OwnerNames,
    policy: Policy,
    int3: Int3Reports,
    assembler: DumpAssembler,
    /// The last complete crash dump, waiting for its `Event`.
    pending: Option<(Token, RegisterDump)>,
    kexec: Kexec,
    /// Test option `kexec-module=N`: the module a kexec asks for instead of the kexec image.
    kexec_module: Option<u16>,
    /// Test option `kexec-after-events=N`: answer N events after ready before asking.
    kexec_after_events: u32,
    /// A message to send besides an answer (a deferred kexec request), for the serve loop.
    outgoing: Option<ServerMessage>,
}

impl Default for Fred {
    fn default() -> Self {
        Self::new()
    }
}

impl Fred {
    pub const fn new() -> Self {
        Self {
            names: OwnerNames::new(),
            policy: Policy::new(),
            int3: Int3Reports::new(),
            assembler: DumpAssembler::new(),
            pending: None,
            kexec: Kexec::new(),
            kexec_module: None,
            kexec_after_events: 0,
            outgoing: None,
        }
    }

    /// Test option `kexec-module=N`: ask for module N instead of the kexec image.
    pub fn with_kexec_module(mut self, module: Option<u16>) -> Self {
        self.kexec_module = module;
        self
    }

    /// Test option `kexec-after-events=N`: with `kexec=reboot-into`, answer N more events
    /// after ready before asking for the hand-off.
    pub fn with_kexec_after_events(mut self, events: u32) -> Self {
        self.kexec_after_events = events;
        self
    }

    /// What to send besides the answers (the serve loop's tick takes it).
    pub fn take_outgoing(&mut self) -> Option<ServerMessage> {
        self.outgoing.take()
    }

    /// Handles one message; returns what to send back, if anything. Console write errors
    /// are ignored: a report that cannot be printed must not change the decision.
    ///
    /// The message of nearly every round trip, an `int3` that is only counted, is decided
    /// inline here ([`Fred::quiet_int3`]), so the serve loop sees a constant `Resume`;
    /// everything else goes to [`Fred::handle_general`].
    #[inline(always)]
    pub fn handle(
        &mut self,
        message: &NucleusMessage,
        out: &mut impl Write,
    ) -> Option<ServerMessage> {
        if let NucleusMessage::Event { token, event } = message
            && self.quiet_int3(
                event.kind == (EventKind::SoftwareException { vector: 3 }),
                event.from_ring,
                event.owner,
            )
        {
            return Some(ServerMessage::Reply(Reply::Resume { token: *token }));
        }
        // The ring probe (the ring round trip's bench) is answered inline too.
        if let NucleusMessage::Ping { token } = message {
            return Some(ServerMessage::Reply(Reply::Resume { token: *token }));
        }
        self.handle_general(message, out)
    }

    /// [`Fred::handle`]'s inline cases for a message read in place from its ring record
    /// (`ipc::rt::Handler::quick`): the answer to a counted `int3` (after counting it) or a
    /// ping; `None` (nothing changed) for anything else, which [`Fred::handle`] then decides.
    #[inline(always)]
    pub fn quick(&mut self, record: &HotRecord<'_>) -> Option<Reply> {
        match record {
            HotRecord::Event(EventRecord { token, event }) => self
                .quiet_int3(
                    event.is_software_exception(3),
                    event.from_ring(),
                    event.owner(),
                )
                .then_some(Reply::Resume { token: *token }),
            HotRecord::Ping { token } => Some(Reply::Resume { token: *token }),
            HotRecord::Hypercall(_) => None,
        }
    }

    /// Counts an event if it is a ring-3 `int3` (`int3`, `from_ring`) of `owner` that needs
    /// no line, no dump and no deferred kexec request: then the answer is `Resume` and
    /// nothing else happens. False (and nothing counted) for anything else, which
    /// [`Fred::on_event`] decides.
    #[inline(always)]
    fn quiet_int3(&mut self, int3: bool, from_ring: u8, owner: u32) -> bool {
        if self.pending.is_some() || self.kexec.has_deferred() || !int3 || from_ring != 3 {
            return false;
        }
        self.int3.note_if_quiet(owner)
    }

    /// [`Fred::handle`] of everything but a quiet `int3`.
    #[inline(never)]
    fn handle_general(
        &mut self,
        message: &NucleusMessage,
        out: &mut impl Write,
    ) -> Option<ServerMessage> {
        match message {
            NucleusMessage::Event { token, event } => {
                let reply = self.on_event(*token, event, out);
                if let Some(request) = self.kexec.on_event_answered(out) {
                    self.outgoing = Some(request);
                }
                Some(ServerMessage::Reply(reply))
            }
            NucleusMessage::Dump(part) => {
                match self.assembler.push(part) {
                    Ok(None) => {}
                    Ok(Some(done)) if done.reason == DumpReason::ServerCrash => {
                        self.pending = Some((done.token, done.dump));
                    }
                    Ok(Some(mut done)) => {
                        let _ = diagnostics::render_nucleus_dump(
                            out,
                            done.reason,
                            done.cpu,
                            &mut done.dump,
                        );
                    }
                    Err(error) => {
                        let _ = writeln!(out, "{PREFIX}: dropped a dump: {error}");
                    }
                }
                None
            }
            NucleusMessage::DumpRecord(record) => {
                let _ = diagnostics::render_record(out, record);
                None
            }
            NucleusMessage::ServerStarted {
                owner,
                name,
                generation,
            } => {
                let (owner, generation) = (*owner, *generation);
                if generation > 0 {
                    let _ = writeln!(
                        out,
                        "{PREFIX}: {name} (owner {owner}) restarted, generation {generation}"
                    );
                }
                if !self.names.set(owner, name.clone()) {
                    let _ = writeln!(
                        out,
                        "{PREFIX}: owner table full, owner {owner} stays unnamed"
                    );
                }
                None
            }
            NucleusMessage::Ping { token } => {
                Some(ServerMessage::Reply(Reply::Resume { token: *token }))
            }
            NucleusMessage::Hypercall(call) => {
                let _ = writeln!(
                    out,
                    "{PREFIX}: hypercall {} is pv-server's, killing the caller",
                    call.number
                );
                Some(ServerMessage::Reply(Reply::Kill { token: call.token }))
            }
            NucleusMessage::GuestEvent { token, event, .. } => {
                let _ = writeln!(
                    out,
                    "{PREFIX}: guest event {:?} is pv-server's, killing the guest",
                    event.kind
                );
                Some(ServerMessage::Reply(Reply::Kill { token: *token }))
            }
            NucleusMessage::Ready(ready) => {
                self.kexec
                    .on_ready_after(ready, self.kexec_module, self.kexec_after_events, out)
            }
            NucleusMessage::KexecRefused(request) => {
                self.kexec.on_refused(request, out);
                None
            }
        }
    }

    /// The dump that belongs to `token`, if it arrived (an older one is dropped).
    fn take_dump(&mut self, token: Token) -> Option<RegisterDump> {
        match self.pending.take() {
            Some((dump_token, dump)) if dump_token == token => Some(dump),
            _ => None,
        }
    }

    fn on_event(&mut self, token: Token, event: &Event, out: &mut impl Write) -> Reply {
        let dump = self.take_dump(token);
        let label = self.names.label(event.owner);
        if event.kind == (EventKind::SoftwareException { vector: 3 }) && event.from_ring == 3 {
            let verdict = self.int3.note(event.owner);
            if let Int3Verdict::Milestone(count) = verdict {
                let _ = writeln!(
                    out,
                    "{PREFIX}: {count} int3 events from {} handled",
                    label.short()
                );
            } else if verdict != Int3Verdict::Quiet {
                let _ = writeln!(
                    out,
                    "{PREFIX}: {label} hit {}, resuming",
                    diagnostics::EventSummary(event)
                );
                if let Some(mut dump) = dump {
                    let _ = diagnostics::render_dump(out, &mut dump);
                }
            }
            if verdict == Int3Verdict::PrintLast {
                let _ = writeln!(
                    out,
                    "{PREFIX}: further int3 reports from {} are only counted",
                    label.short()
                );
            }
            return Reply::Resume { token };
        }
        let _ = diagnostics::fault_line(out, label, event);
        if let Some(mut dump) = dump {
            let _ = diagnostics::render_dump(out, &mut dump);
        }
        if let Some(request) = callgate::decode(event) {
            let error = match callgate::emulate(&request) {
                Ok(changes) => return Reply::ResumeWith { token, changes },
                Err(error) => error,
            };
            let _ = writeln!(
                out,
                "{PREFIX}: {label}: {} at {:#x}: {error}, killing it",
                request.selector, request.rip
            );
            return Reply::Kill { token };
        }
        match self.policy.decide(event) {
            Decision::Resume => Reply::Resume { token },
            Decision::Restart { crash } => {
                let _ = writeln!(
                    out,
                    "{PREFIX}: restarting {} (crash {crash} of {MAX_RESTARTS} allowed)",
                    label.short()
                );
                Reply::Restart { token }
            }
            Decision::GiveUp { crashes } => {
                let _ = writeln!(
                    out,
                    "{PREFIX}: {} crashed {crashes} times, giving up",
                    label.short()
                );
                Reply::Kill { token }
            }
            Decision::Kill(reason) => {
                let _ = writeln!(out, "{PREFIX}: killing {label}: {reason}");
                Reply::Kill { token }
            }
        }
    }
}

#[cfg(test)]
mod tests;
