//! kexec requests (issue 21): the nucleus' side of fred-server's policy.
//!
//! Once the system is ready the nucleus tells fred-server the facts its policy needs
//! ([`tell_ready`]); fred-server may then ask for a hand-off (`ServerMessage::Kexec`), which
//! is an allegation like any other message: only fred-server may ask, the generation must
//! be this one's successor, and the module must be a multiboot2 ELF that can be copied
//! without overwriting what must survive (`handoff::prepare`). A refused request is one line
//! and a `KexecRefused` back; an accepted one never returns (`handoff::execute`).
use crate::thread::{ThreadId, Threads};
use bsp_x86_64::cmdline::{KexecReason, KexecWhen};
use ipc::message::{KexecRequest, NucleusMessage, SystemReady};

pub mod refusal;
pub use refusal::Refusal;

/// Tells fred-server, once `nucleus: ready` is printed, this generation, the kexec image and
/// whether `kexec=reboot-into` asks for a hand-off.
pub fn tell_ready(t: &mut Threads) {
    let Some(fred) = t.first_fault_handler() else {
        return;
    };
    let options = t.options.unwrap_or_default();
    let ready = SystemReady {
        generation: options.generation.0,
        kexec_image: crate::handoff::kexec_image(),
        reboot_into: options.kexec == KexecWhen::RebootInto,
    };
    if let Err(e) = t.send(fred, &NucleusMessage::Ready(ready)) {
        println!(
            "nucleus: cannot tell {} the system is ready: {e}",
            t.get(fred).name()
        );
    }
}

/// Thread `from` asks for a hand-off into `request.module`.
pub fn on_request(t: &mut Threads, from: ThreadId, request: KexecRequest) {
    if t.first_fault_handler() != Some(from) {
        if t.get_mut(from)
            .may_complain(crate::thread::COMPLAINTS_PER_TICK)
        {
            println!(
                "nucleus: {}: kexec request refused: only fred-server decides about kexec",
                t.get(from).name()
            );
        }
        return;
    }
    let current = t.options.unwrap_or_default().generation.0;
    let refusal = if Some(request.generation) != current.checked_add(1) {
        Some(Refusal::Generation {
            asked: request.generation,
            current,
        })
    } else {
        match crate::handoff::prepare(request.module, request.generation, KexecReason::Request) {
            Ok(prepared) => crate::handoff::execute(prepared),
            Err(why) => Some(why),
        }
    };
    if let Some(why) = refusal {
        println!(
            "nucleus: kexec into module {} refused: {why}",
            request.module
        );
        if let Err(e) = t.send(from, &NucleusMessage::KexecRefused(request)) {
            println!(
                "nucleus: cannot tell {} the kexec was refused: {e}",
                t.get(from).name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::kit::{self, fred, pv};

    fn request(module: u16, generation: u32) -> KexecRequest {
        KexecRequest { module, generation }
    }

    #[test]
    fn only_fred_server_may_ask_and_only_for_the_next_generation() {
        let mut t = kit::booted();
        let mut fred_ends = kit::server_ends("fred-server");
        kit::recv_all(&mut fred_ends);
        on_request(&mut t, pv(), request(3, 2));
        assert_eq!(
            kit::output(),
            "nucleus: pv-server: kexec request refused: only fred-server decides about kexec\n"
        );
        on_request(&mut t, fred(), request(3, 7));
        assert_eq!(
            kit::output(),
            "nucleus: kexec into module 3 refused: generation 7 asked for, this is generation 1\n"
        );
        assert_eq!(
            kit::recv_all(&mut fred_ends),
            [NucleusMessage::KexecRefused(request(3, 7))]
        );
    }

    #[test]
    fn a_module_the_hand_off_refuses_is_one_line_and_a_refusal() {
        let mut t = kit::booted();
        let mut fred_ends = kit::server_ends("fred-server");
        kit::recv_all(&mut fred_ends);
        on_request(&mut t, fred(), request(9, 2));
        assert_eq!(
            kit::output(),
            "nucleus: kexec into module 9 refused: boot module 9 does not exist (3 modules)\n"
        );
        assert_eq!(
            kit::recv_all(&mut fred_ends),
            [NucleusMessage::KexecRefused(request(9, 2))]
        );
    }

    #[test]
    fn fred_server_learns_the_facts_at_ready() {
        let mut t = kit::booted();
        let mut fred_ends = kit::server_ends("fred-server");
        kit::recv_all(&mut fred_ends);
        tell_ready(&mut t);
        assert_eq!(
            kit::recv_all(&mut fred_ends),
            [NucleusMessage::Ready(SystemReady {
                generation: 1,
                kexec_image: Some(2),
                reboot_into: false
            })]
        );
    }
}
