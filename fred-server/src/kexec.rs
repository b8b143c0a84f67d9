//! kexec coordination (architecture.md §7): the request side of the hand-off protocol.
//!
//! fred-server decides *when* to hand the machine to a new image and asks the nucleus with
//! `ServerMessage::Kexec`; the nucleus does the mechanism (NMI shootdown of the other CPUs,
//! FRED off, jump). The coordination states are below. In issue 7 the nucleus sends no kexec
//! progress messages yet, so only `Idle -> Requested` (and back, if sending fails) is
//! reachable; nothing starts a kexec yet, so fred-server answers nothing here.

use core::fmt;

use ipc::message::{KexecRequest, ServerMessage};

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
        }
    }

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
}
