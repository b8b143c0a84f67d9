//! The reply ring's checks and the replies' effects, over the host stand-ins.
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
    assert_eq!(t.frame(pv()).gprs.rax, 7);
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
fn a_guest_never_resumes_at_a_non_canonical_rip_and_pv_server_hears_of_it() {
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
    assert!(kit::output().contains(
        "nucleus: guest domain 1: rip 0x800000000000 is not canonical; #GP to pv-server"
    ));
    // Not resumed: waiting for pv-server's verdict on a #GP at that RIP, with the dump.
    let State::WaitingForReply(token) = t.get(bad).state() else {
        panic!("{:?}", t.get(bad).state());
    };
    let messages = kit::recv_all(&mut pv_ends);
    let event = messages
        .iter()
        .find_map(|m| match m {
            ipc::NucleusMessage::Event { token: got, event } if *got == token => Some(*event),
            _ => None,
        })
        .expect("the #GP event");
    assert_eq!(
        event.kind,
        ipc::EventKind::Exception {
            vector: 13,
            error_code: 0
        }
    );
    assert_eq!(event.rip, 0x0000_8000_0000_0000);
    assert_eq!(event.owner, ipc::domain::guest_owner(1));
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, ipc::NucleusMessage::Dump(_))),
        "{messages:?}"
    );
    // pv-server ends it (no trap table): the vCPU goes.
    kit::send(&mut pv_ends, &ServerMessage::Reply(Reply::Kill { token }));
    drain_replies(&mut t, pv());
    assert!(t.get(bad).is_absent(), "{:?}", t.get(bad).state());
    // A plain Resume (a hostile pv-server answering a fault) is held to the same rule.
    let bad = guest_waiting(&mut t, Token(51), 0xffff_0000_0000_0000);
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(Reply::Resume { token: Token(51) }),
    );
    drain_replies(&mut t, pv());
    assert!(matches!(t.get(bad).state(), State::WaitingForReply(_)));
    assert!(!t.get(bad).runnable());
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
    assert_eq!(t.frame(good).gprs.rax, 3);
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
        kit::output()
            .contains("nucleus: pv-server: unexpected message Reply(Kill { token: Token(42) })")
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
    assert!(kit::output().contains("nucleus: pv-server: 1 log line(s) dropped (console budget)\n"));
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

fn guest_resume(rip: u64, cs: u16, mode: ipc::message::GuestMode) -> Reply {
    let mut gprs = heapless::Vec::new();
    gprs.push(ipc::message::GprWrite {
        gpr: ipc::message::Gpr::Rcx,
        value: rip,
    })
    .unwrap();
    Reply::GuestResume {
        token: Token(60),
        resume: ipc::message::GuestResume {
            rip,
            rsp: 0x9000,
            rflags: 0x3246, // IOPL 3 asked for: never granted
            cs,
            ss: 0xe02b,
            mode,
            gprs,
        },
    }
}

#[test]
fn a_guest_resume_installs_the_checked_context_and_toggles_the_tables() {
    use bsp_x86_64::paging::PhysAddr;
    use ipc::message::GuestMode;
    let (mut t, _fred_ends, mut pv_ends) = waiting();
    let guest = guest_waiting(&mut t, Token(60), 0x1000);
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(guest_resume(
            0xffff_ffff_8000_1000,
            0xe033,
            GuestMode::Kernel,
        )),
    );
    drain_replies(&mut t, pv());
    let thread = t.get(guest);
    assert!(thread.runnable());
    let saved = t.frame(guest);
    assert_eq!(saved.ret.rip, 0xffff_ffff_8000_1000);
    assert_eq!(saved.ret.rsp, 0x9000);
    assert_eq!(saved.ret.rflags, 0x246);
    assert_eq!(saved.ret.cs.selector().raw(), 0xe033);
    assert_eq!(saved.gprs.rcx, 0xffff_ffff_8000_1000);
    assert_eq!(thread.root(), Some(PhysAddr::new(0x20_0000)));
    // User mode without user tables: the vCPU stops, nothing is applied.
    t.get_mut(guest).block_on_reply(Token(60));
    kit::output();
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(guest_resume(0x40_0000, 0xe033, GuestMode::User)),
    );
    drain_replies(&mut t, pv());
    assert!(t.get(guest).is_absent());
    assert!(kit::output().contains(
        "nucleus: pv-server: refused resume of guest domain 1: user mode without user page tables; stopping it"
    ));
    // With user tables the vCPU runs on them in user mode, and back on the kernel's.
    let guest = guest_waiting(&mut t, Token(60), 0x1000);
    t.get_mut(guest).vcpu.user_root = Some(PhysAddr::new(0x30_0000));
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(guest_resume(0x40_0000, 0xe033, GuestMode::User)),
    );
    drain_replies(&mut t, pv());
    assert_eq!(t.get(guest).root(), Some(PhysAddr::new(0x30_0000)));
    t.get_mut(guest).block_on_reply(Token(60));
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(guest_resume(0x1000, 0xe033, GuestMode::Kernel)),
    );
    drain_replies(&mut t, pv());
    assert_eq!(t.get(guest).root(), Some(PhysAddr::new(0x20_0000)));
}

#[test]
fn a_guest_resume_with_a_privileged_or_non_canonical_context_stops_the_guest() {
    use ipc::message::GuestMode;
    for (rip, cs, why) in [
        (0x1000, 0xe008, "code selector 0xe008 is not the guest's"),
        (0x1000, 0xe030, "code selector 0xe030 is not the guest's"),
        (
            0x0000_8000_0000_0000,
            0xe033,
            "rip 0x800000000000 is not canonical",
        ),
    ] {
        let (mut t, _fred_ends, mut pv_ends) = waiting();
        let guest = guest_waiting(&mut t, Token(60), 0x1000);
        kit::output();
        kit::send(
            &mut pv_ends,
            &ServerMessage::Reply(guest_resume(rip, cs, GuestMode::Kernel)),
        );
        drain_replies(&mut t, pv());
        assert!(t.get(guest).is_absent());
        assert!(
            kit::output().contains(&format!(
                "nucleus: pv-server: refused resume of guest domain 1: {why}; stopping it"
            )),
            "{why}"
        );
    }
    // And never for a server: fred-server answering pv-server's event with a guest context.
    let (mut t, mut fred_ends, _) = waiting();
    let Reply::GuestResume { resume, .. } = guest_resume(0x1000, 0xe033, GuestMode::Kernel) else {
        unreachable!()
    };
    kit::send(
        &mut fred_ends,
        &ServerMessage::Reply(Reply::GuestResume {
            token: Token(42),
            resume,
        }),
    );
    drain_replies(&mut t, fred());
    assert!(t.get(pv()).is_absent());
    assert!(kit::output().contains("refused a guest context for pv-server"));
}
