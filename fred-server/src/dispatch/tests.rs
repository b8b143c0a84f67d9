use super::*;
use ipc::dump::{Delivery, StackName, Text};
use ipc::dump_parts::{DUMP_BYTES_MAX, split};
use ipc::message::ServerName;

fn event(kind: EventKind, owner: u32) -> Event {
    Event {
        cpu: 0,
        kind,
        event_data: 0,
        rip: 0x40_1234,
        cs: 0x33,
        rflags: 0x10202,
        rsp: 0x7fff_fef0_0000,
        ss: 0x2b,
        from_ring: 3,
        insn_len: 0,
        owner,
    }
}

fn started(fred: &mut Fred, owner: u32, name: &str, generation: u32) -> String {
    let mut out = String::new();
    let message = NucleusMessage::ServerStarted {
        owner,
        name: ServerName::new(name).unwrap(),
        generation,
    };
    assert_eq!(fred.handle(&message, &mut out), None);
    out
}

fn dump_for(token: Token, reason: DumpReason) -> std::vec::Vec<NucleusMessage> {
    let dump = RegisterDump {
        prefix: Text::truncated("nucleus"),
        delivery: Delivery::Idt,
        stack: StackName::User,
        event_type: 3,
        vector: 14,
        event: Some(EventKind::Exception {
            vector: 14,
            error_code: 6,
        }),
        rip: 0x40_1234,
        cs: 0x33,
        ..RegisterDump::default()
    };
    let mut buf = [0; DUMP_BYTES_MAX];
    split(&dump, token, reason, 0, &mut buf)
        .unwrap()
        .map(NucleusMessage::Dump)
        .collect()
}

fn reply(message: Option<ServerMessage>) -> Reply {
    match message {
        Some(ServerMessage::Reply(reply)) => reply,
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn a_crash_is_reported_with_its_dump_and_restarted_then_given_up() {
    let mut fred = Fred::new();
    started(&mut fred, 2, "pv-server", 0);
    let pf = EventKind::Exception {
        vector: 14,
        error_code: 6,
    };
    for crash in 1..=4u64 {
        let mut out = String::new();
        for part in dump_for(Token(crash), DumpReason::ServerCrash) {
            assert_eq!(fred.handle(&part, &mut out), None);
        }
        let got = reply(fred.handle(
            &NucleusMessage::Event {
                token: Token(crash),
                event: event(pf, 2),
            },
            &mut out,
        ));
        assert!(out.starts_with(
                "fred-server: pv-server (owner 2) faulted: #PF at 0x401234 (error 0x6, address 0x0)\n\
                 fred-server: ----[ register dump, cpu 0, ring 3 ]----\n"
            ), "{out}");
        assert!(!out.contains("nucleus:"), "{out}");
        if crash <= 3 {
            assert_eq!(
                got,
                Reply::Restart {
                    token: Token(crash)
                }
            );
            assert!(out.ends_with(&format!(
                "fred-server: restarting pv-server (crash {crash} of 3 allowed)\n"
            )));
        } else {
            assert_eq!(
                got,
                Reply::Kill {
                    token: Token(crash)
                }
            );
            assert!(out.ends_with("fred-server: pv-server crashed 4 times, giving up\n"));
        }
    }
    let out = started(&mut fred, 2, "pv-server", 1);
    assert_eq!(
        out,
        "fred-server: pv-server (owner 2) restarted, generation 1\n"
    );
}

#[test]
fn a_dump_for_another_token_is_not_shown() {
    let mut fred = Fred::new();
    let mut out = String::new();
    for part in dump_for(Token(7), DumpReason::ServerCrash) {
        fred.handle(&part, &mut out);
    }
    let ud = event(
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
        9,
    );
    let got = reply(fred.handle(
        &NucleusMessage::Event {
            token: Token(8),
            event: ud,
        },
        &mut out,
    ));
    assert_eq!(got, Reply::Restart { token: Token(8) });
    assert_eq!(
        out,
        "fred-server: owner 9 faulted: #UD at 0x401234 (error 0x0)\n\
             fred-server: restarting owner 9 (crash 1 of 3 allowed)\n"
    );
}

#[test]
fn int3_is_resumed_and_reports_are_limited() {
    let mut fred = Fred::new();
    started(&mut fred, 2, "pv-server", 0);
    let mut out = String::new();
    for token in 0..1000 {
        let int3 = event(EventKind::SoftwareException { vector: 3 }, 2);
        let got = reply(fred.handle(
            &NucleusMessage::Event {
                token: Token(token),
                event: int3,
            },
            &mut out,
        ));
        assert_eq!(
            got,
            Reply::Resume {
                token: Token(token)
            }
        );
    }
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.starts_with("fred-server: pv-server (owner 2) hit int3 at 0x401234, resuming\n"));
    assert!(out.ends_with("fred-server: further int3 reports from pv-server are only counted\n"));
}

#[test]
fn call_gates_are_refused_with_a_reason() {
    let mut fred = Fred::new();
    started(&mut fred, 3, "guest", 0);
    let mut out = String::new();
    let gp = event(
        EventKind::Exception {
            vector: 13,
            error_code: 12 << 3,
        },
        3,
    );
    let got = reply(fred.handle(
        &NucleusMessage::Event {
            token: Token(1),
            event: gp,
        },
        &mut out,
    ));
    assert_eq!(got, Reply::Kill { token: Token(1) });
    assert!(
        out.ends_with(
            "fred-server: guest (owner 3): #GP[GDT index 12] at 0x401234: a server has no call \
             gates, killing it\n"
        ),
        "{out}"
    );
}

#[test]
fn nucleus_dumps_records_and_pings() {
    let mut fred = Fred::new();
    let mut out = String::new();
    for part in dump_for(Token(1), DumpReason::DoubleFault) {
        fred.handle(&part, &mut out);
    }
    assert!(out.starts_with(
        "fred-server: nucleus #DF dump from cpu 0:\nfred-server: ----[ register dump"
    ));
    let mut out = String::new();
    let record = ipc::message::DumpRecord {
        cpu: 1,
        reason: DumpReason::DoubleFault,
        part: 0,
        parts: 1,
        words: heapless::Vec::from_slice(&[1, 2, 3, 4, 5]).unwrap(),
    };
    fred.handle(&NucleusMessage::DumpRecord(record), &mut out);
    assert_eq!(out.lines().count(), 3);
    let pong = fred.handle(&NucleusMessage::Ping { token: Token(4) }, &mut out);
    assert_eq!(
        pong,
        Some(ServerMessage::Reply(Reply::Resume { token: Token(4) }))
    );
}

#[test]
fn unexpected_events_are_killed() {
    let mut fred = Fred::new();
    let mut out = String::new();
    let sysenter = event(EventKind::Sysenter, 2);
    let got = reply(fred.handle(
        &NucleusMessage::Event {
            token: Token(1),
            event: sysenter,
        },
        &mut out,
    ));
    assert_eq!(got, Reply::Kill { token: Token(1) });
    assert!(
        out.ends_with("fred-server: killing owner 2: unexpected event Sysenter\n"),
        "{out}"
    );
}

fn int3_at(fred: &mut Fred, token: u64, out: &mut String) -> Reply {
    let int3 = event(EventKind::SoftwareException { vector: 3 }, 2);
    reply(fred.handle(
        &NucleusMessage::Event {
            token: Token(token),
            event: int3,
        },
        out,
    ))
}

#[test]
fn counted_int3s_still_reach_their_milestones() {
    let mut fred = Fred::new();
    started(&mut fred, 2, "pv-server", 0);
    let mut out = String::new();
    for token in 1..=2 * u64::from(diagnostics::INT3_MILESTONE) {
        assert_eq!(
            int3_at(&mut fred, token, &mut out),
            Reply::Resume {
                token: Token(token)
            }
        );
    }
    let lines: std::vec::Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(
        lines[4],
        "fred-server: 25000 int3 events from pv-server handled"
    );
    assert_eq!(
        lines[5],
        "fred-server: 50000 int3 events from pv-server handled"
    );
}

#[test]
fn a_counted_int3_prints_no_dump() {
    let mut fred = Fred::new();
    started(&mut fred, 2, "pv-server", 0);
    let mut out = String::new();
    for token in 1..=10 {
        int3_at(&mut fred, token, &mut out);
    }
    out.clear();
    for part in dump_for(Token(11), DumpReason::ServerCrash) {
        assert_eq!(fred.handle(&part, &mut out), None);
    }
    assert_eq!(
        int3_at(&mut fred, 11, &mut out),
        Reply::Resume { token: Token(11) }
    );
    assert_eq!(out, "", "a counted int3 prints nothing, not even its dump");
}

#[test]
fn a_deferred_kexec_request_counts_int3s_too() {
    let ready = ipc::message::SystemReady {
        generation: 1,
        kexec_image: Some(5),
        reboot_into: true,
    };
    let mut fred = Fred::new().with_kexec_after_events(2);
    started(&mut fred, 2, "pv-server", 0);
    let mut out = String::new();
    for token in 1..=10 {
        int3_at(&mut fred, token, &mut out);
    }
    assert_eq!(fred.handle(&NucleusMessage::Ready(ready), &mut out), None);
    assert_eq!(
        int3_at(&mut fred, 11, &mut out),
        Reply::Resume { token: Token(11) }
    );
    assert_eq!(fred.take_outgoing(), None, "one of two events answered");
    assert_eq!(
        int3_at(&mut fred, 12, &mut out),
        Reply::Resume { token: Token(12) }
    );
    assert!(
        matches!(fred.take_outgoing(), Some(ServerMessage::Kexec(request)) if request.module == 5),
        "{out}"
    );
}

/// `message` as the serve loop sees it: `Fred::quick` on its record read in place, else
/// `Fred::handle` on the decoded message.
fn serve_one(fred: &mut Fred, message: &NucleusMessage, out: &mut String) -> Option<ServerMessage> {
    let mut buf = [0; ipc::codec::MAX_MESSAGE];
    let record = ipc::codec::encode(message, &mut buf).unwrap();
    if let Some(hot) = HotRecord::new(record)
        && let Some(reply) = fred.quick(&hot)
    {
        return Some(ServerMessage::Reply(reply));
    }
    fred.handle(message, out)
}

#[test]
fn answers_in_place_are_the_answers_of_handle() {
    let pf = EventKind::Exception {
        vector: 14,
        error_code: 6,
    };
    let mut messages = std::vec::Vec::new();
    for token in 0..10 {
        let kind = match token {
            4 => pf,
            7 => EventKind::SoftwareException { vector: 4 },
            _ => EventKind::SoftwareException { vector: 3 },
        };
        messages.push(NucleusMessage::Event {
            token: Token(token),
            event: event(kind, 2),
        });
        messages.push(NucleusMessage::Ping {
            token: Token(100 + token),
        });
    }
    let mut kernel_int3 = event(EventKind::SoftwareException { vector: 3 }, 2);
    kernel_int3.from_ring = 0;
    messages.push(NucleusMessage::Event {
        token: Token(50),
        event: kernel_int3,
    });
    let (mut quick, mut plain) = (Fred::new(), Fred::new());
    started(&mut quick, 2, "pv-server", 0);
    started(&mut plain, 2, "pv-server", 0);
    let (mut quick_out, mut plain_out) = (String::new(), String::new());
    for message in &messages {
        assert_eq!(
            serve_one(&mut quick, message, &mut quick_out),
            plain.handle(message, &mut plain_out),
            "{message:?}"
        );
    }
    assert_eq!(quick_out, plain_out);
    assert!(quick_out.contains("further int3 reports"), "{quick_out}");
}
