//! kexec coordination (architecture.md §7, issue 21): the policy side of the hand-off.
//!
//! fred-server decides *whether* and *into what* to hand the machine over and asks the
//! nucleus with `ServerMessage::Kexec`; the nucleus checks the request and does the
//! mechanism (NMI shootdown of the other CPUs, FRED off, the copy, the jump). The nucleus
//! tells fred-server the facts once the system is ready (`NucleusMessage::Ready`: this
//! generation, the `kexec-image` module, `kexec=reboot-into`); [`Kexec::on_ready`] is the
//! policy: with `kexec=reboot-into`, generation 1 hands over once, into the kexec image (or
//! the module the test option `kexec-module=N` names, for the hostile-request tests). A
//! refusal (`NucleusMessage::KexecRefused`) brings the state back to idle; a successful
//! hand-off never answers, the new generation starts its own servers.

use core::fmt;
use core::fmt::Write;

use ipc::message::{KexecRequest, ServerMessage, SystemReady};

use crate::diagnostics::PREFIX;

/// Where a kexec hand-off stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecState {
    /// No hand-off in progress.
    Idle,
    /// The request was sent; the nucleus now stops the other CPUs (NMI shootdown, parked on
    /// their SL0 stacks with events masked), turns FRED off and jumps. A successful hand-off
    /// never returns here: the new image starts its own servers.
    Requested(KexecRequest),
}

/// Why a kexec request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecError {
    /// A hand-off is already under way.
    Busy(KexecRequest),
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy(request) => write!(
                f,
                "a kexec into module {} (generation {}) is already under way",
                request.module, request.generation
            ),
        }
    }
}

/// The coordinator: one hand-off at a time.
#[derive(Debug)]
pub struct Kexec {
    state: KexecState,
    /// Test option `kexec-after-events=N`: the ready facts and module, held until N more
    /// events were answered (a hand-off with events in flight).
    deferred: Option<(SystemReady, Option<u16>, u32)>,
}

impl Default for Kexec {
    fn default() -> Self {
        Self::new()
    }
}

impl Kexec {
    pub const fn new() -> Self {
        Self {
            state: KexecState::Idle,
            deferred: None,
        }
    }

    #[cfg(test)]
    pub const fn state(&self) -> KexecState {
        self.state
    }

    /// Starts a hand-off into boot module `module`: returns the message to send.
    pub fn request(&mut self, module: u16, generation: u32) -> Result<ServerMessage, KexecError> {
        if let KexecState::Requested(request) = self.state {
            return Err(KexecError::Busy(request));
        }
        let request = KexecRequest { module, generation };
        self.state = KexecState::Requested(request);
        Ok(ServerMessage::Kexec(request))
    }

    /// The request could not be sent (or the nucleus refused it): back to idle.
    pub fn abandon(&mut self) {
        self.state = KexecState::Idle;
    }

    /// The policy, once the system is ready: with `kexec=reboot-into`, generation 1 asks
    /// for a hand-off into `module` (the test option) or the kexec image. Says what it
    /// decided in one line.
    pub fn on_ready(
        &mut self,
        ready: &SystemReady,
        module: Option<u16>,
        out: &mut impl Write,
    ) -> Option<ServerMessage> {
        if !ready.reboot_into {
            return None;
        }
        if ready.generation != 1 {
            let _ = writeln!(
                out,
                "{PREFIX}: kexec=reboot-into: generation {} already is the reboot; staying",
                ready.generation
            );
            return None;
        }
        let Some(module) = module.or(ready.kexec_image) else {
            let _ = writeln!(out, "{PREFIX}: kexec=reboot-into: no kexec image; staying");
            return None;
        };
        let generation = ready.generation + 1;
        match self.request(module, generation) {
            Ok(message) => {
                let _ = writeln!(
                    out,
                    "{PREFIX}: kexec: asking for a hand-off into module {module} (generation {generation})"
                );
                Some(message)
            }
            Err(e) => {
                let _ = writeln!(out, "{PREFIX}: kexec: {e}");
                None
            }
        }
    }

    /// [`Kexec::on_ready`], but only once `events` more events were answered
    /// ([`Kexec::on_event_answered`]); at once for 0.
    pub fn on_ready_after(
        &mut self,
        ready: &SystemReady,
        module: Option<u16>,
        events: u32,
        out: &mut impl Write,
    ) -> Option<ServerMessage> {
        if events == 0 || !ready.reboot_into {
            return self.on_ready(ready, module, out);
        }
        let _ = writeln!(
            out,
            "{PREFIX}: kexec=reboot-into: waiting for {events} more event(s) first"
        );
        self.deferred = Some((*ready, module, events));
        None
    }

    /// Whether a request waits for events to be answered ([`Kexec::on_event_answered`]).
    #[inline(always)]
    pub fn has_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// One event was answered: the deferred request, once its count is reached.
    pub fn on_event_answered(&mut self, out: &mut impl Write) -> Option<ServerMessage> {
        let (ready, module, left) = self.deferred.as_mut()?;
        *left -= 1;
        if *left > 0 {
            return None;
        }
        let (ready, module) = (*ready, *module);
        self.deferred = None;
        self.on_ready(&ready, module, out)
    }

    /// The nucleus refused `request` (it printed why): back to idle, and say so.
    pub fn on_refused(&mut self, request: &KexecRequest, out: &mut impl Write) {
        self.abandon();
        let _ = writeln!(
            out,
            "{PREFIX}: kexec into module {} refused by the nucleus; carrying on",
            request.module
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_at_a_time() {
        let mut kexec = Kexec::new();
        let message = kexec.request(2, 2).unwrap();
        assert_eq!(
            message,
            ServerMessage::Kexec(KexecRequest {
                module: 2,
                generation: 2
            })
        );
        let busy = kexec.request(3, 2).unwrap_err();
        assert_eq!(
            busy.to_string(),
            "a kexec into module 2 (generation 2) is already under way"
        );
        kexec.abandon();
        assert_eq!(kexec.state(), KexecState::Idle);
        assert!(kexec.request(3, 2).is_ok());
    }

    fn ready(generation: u32, kexec_image: Option<u16>, reboot_into: bool) -> SystemReady {
        SystemReady {
            generation,
            kexec_image,
            reboot_into,
        }
    }

    #[test]
    fn reboot_into_hands_over_once_from_generation_one() {
        let mut out = String::new();
        let mut kexec = Kexec::new();
        assert_eq!(
            kexec.on_ready(&ready(1, Some(5), false), None, &mut out),
            None
        );
        assert_eq!(out, "");
        assert_eq!(
            kexec.on_ready(&ready(1, Some(5), true), None, &mut out),
            Some(ServerMessage::Kexec(KexecRequest {
                module: 5,
                generation: 2
            }))
        );
        assert_eq!(
            out,
            "fred-server: kexec: asking for a hand-off into module 5 (generation 2)\n"
        );
        out.clear();
        let mut second = Kexec::new();
        assert_eq!(
            second.on_ready(&ready(2, Some(5), true), None, &mut out),
            None
        );
        assert_eq!(
            out,
            "fred-server: kexec=reboot-into: generation 2 already is the reboot; staying\n"
        );
    }

    #[test]
    fn a_deferred_request_waits_for_its_events() {
        let mut out = String::new();
        let mut kexec = Kexec::new();
        assert_eq!(
            kexec.on_ready_after(&ready(1, Some(5), true), None, 2, &mut out),
            None
        );
        assert_eq!(kexec.on_event_answered(&mut out), None);
        assert_eq!(
            kexec.on_event_answered(&mut out),
            Some(ServerMessage::Kexec(KexecRequest {
                module: 5,
                generation: 2
            }))
        );
        assert_eq!(kexec.on_event_answered(&mut out), None);
        assert_eq!(
            out,
            "fred-server: kexec=reboot-into: waiting for 2 more event(s) first\n\
             fred-server: kexec: asking for a hand-off into module 5 (generation 2)\n"
        );
    }

    #[test]
    fn the_test_module_wins_and_a_refusal_brings_it_back_to_idle() {
        let mut out = String::new();
        let mut kexec = Kexec::new();
        assert_eq!(kexec.on_ready(&ready(1, None, true), None, &mut out), None);
        assert_eq!(
            out,
            "fred-server: kexec=reboot-into: no kexec image; staying\n"
        );
        let request = KexecRequest {
            module: 9,
            generation: 2,
        };
        assert_eq!(
            kexec.on_ready(&ready(1, Some(5), true), Some(9), &mut out),
            Some(ServerMessage::Kexec(request))
        );
        out.clear();
        kexec.on_refused(&request, &mut out);
        assert_eq!(kexec.state(), KexecState::Idle);
        assert_eq!(
            out,
            "fred-server: kexec into module 9 refused by the nucleus; carrying on\n"
        );
    }
}
