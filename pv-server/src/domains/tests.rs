use heapless::String;
use ipc::dump::RegisterDump;
use ipc::message::{Gpr, GprWrite, GuestRegisters, Hypercall, Reply};
use ipc::{Event, EventKind, NucleusMessage, Token};
use xen_abi::Errno;

use super::Guests;
use super::running::Running;
use crate::domain_builder::Mfn;
use crate::hypervisor::tests::FakeHypervisor;

/// The fake's frames include the shared_info frame `guests_with` names.
fn with_shared_info(mut hv: FakeHypervisor) -> FakeHypervisor {
    hv.frames.insert(0x99, vec![0; 4096]);
    hv
}

fn guests_with(domain: u16, name: &str) -> Guests {
    let mut guests = Guests::new();
    let mut label = String::new();
    label.push_str(name).unwrap();
    guests.total = 1;
    guests
        .running
        .push(Running::new(domain, label, Mfn(0x99), 0x1000))
        .ok()
        .unwrap();
    guests
}

fn hypercall(domain: u16, number: u64, args: [u64; 6]) -> NucleusMessage {
    NucleusMessage::Hypercall(Hypercall {
        token: Token(7),
        domain,
        vcpu: 0,
        number,
        args,
        rip: 0x1002,
        rsp: 0x8000,
        rflags: 0x202,
    })
}

/// The plain return of `rax` to [`hypercall`]'s call.
fn returned(rax: u64) -> Option<Reply> {
    Some(Reply::Return {
        token: Token(7),
        rax,
    })
}

/// `call` made with the guest's stack at `rsp`.
fn with_rsp(mut call: NucleusMessage, rsp: u64) -> NucleusMessage {
    if let NucleusMessage::Hypercall(c) = &mut call {
        c.rsp = rsp;
    }
    call
}

/// Exception `vector` of guest `domain`'s kernel at `rip`.
fn fault(domain: u16, vector: u8, error_code: u64, rip: u64) -> Event {
    Event {
        cpu: 0,
        kind: EventKind::Exception { vector, error_code },
        event_data: 0,
        rip,
        cs: 0xe033,
        rflags: 0x202,
        rsp: 0x8000,
        ss: 0xe02b,
        from_ring: 3,
        insn_len: 0,
        owner: ipc::domain::guest_owner(domain),
    }
}

/// `event` as the nucleus sends it with the guest's registers (no dump).
fn with_registers(token: Token, event: Event) -> NucleusMessage {
    NucleusMessage::GuestEvent {
        token,
        event,
        regs: GuestRegisters::default(),
    }
}

/// `event` as the nucleus sends it after its dump, or when it sends none.
fn after_dump(token: Token, event: Event) -> NucleusMessage {
    NucleusMessage::Event { token, event }
}

#[test]
fn a_gp_on_mov_from_cr3_is_emulated_with_the_guests_l4() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    let mut page = vec![0x90; 0x1000];
    page[..3].copy_from_slice(&[0x0f, 0x20, 0xd8]);
    hv.memory.insert(0x4000, page);
    let mut guests = guests_with(3, "emu");
    let mut out = std::string::String::new();
    let event = fault(3, 13, 0, 0x4000);
    let reply = guests.handle(&mut hv, &with_registers(Token(9), event), &mut out);
    let Some(Reply::GuestResume { token, resume }) = reply else {
        panic!("not emulated: {reply:?} {out}");
    };
    assert_eq!(token, Token(9));
    assert_eq!(
        (resume.rip, resume.rsp, resume.cs),
        (0x4003, 0x8000, 0xe033)
    );
    assert_eq!(
        resume.gprs.as_slice(),
        [GprWrite {
            gpr: Gpr::Rax,
            value: 0x1000
        }]
    );
    assert_eq!(out, "");
}

#[test]
fn a_pending_unmasked_upcall_is_delivered_as_a_hypercall_returns() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    hv.memory.insert(0x7000, vec![0; 0x1000]);
    // vCPU 0: upcall pending, events unmasked.
    hv.frames.get_mut(&0x99).unwrap()[0] = 1;
    let mut guests = guests_with(3, "ev");
    guests.running[0].traps.event.address = 0x5000;
    guests.running[0].pv.events.upcall_raised = true;
    let mut out = std::string::String::new();
    let call = with_rsp(hypercall(3, 17, [0; 6]), 0x7800);
    let reply = guests.handle(&mut hv, &call, &mut out);
    let Some(Reply::GuestResume { resume, .. }) = reply else {
        panic!("no upcall: {reply:?} {out}");
    };
    assert_eq!(resume.rip, 0x5000, "the event callback");
    assert!(resume.gprs.contains(&GprWrite {
        gpr: Gpr::Rax,
        value: 4 << 16 | 21
    }));
    assert_eq!(hv.frames[&0x99][1], 1, "entered with events masked");
    // Masked: a plain return.
    let reply = guests.handle(&mut hv, &call, &mut out);
    assert!(matches!(reply, Some(Reply::Return { .. })), "{reply:?}");
}

#[test]
fn console_lines_go_to_the_nucleus_under_the_domains_name() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    hv.memory.insert(0x4000, b"hi\nthere\n".to_vec());
    let mut guests = guests_with(3, "hello");
    let mut out = std::string::String::new();
    let reply = guests.handle(
        &mut hv,
        &hypercall(3, 18, [0, 9, 0x4000, 0, 0, 0]),
        &mut out,
    );
    assert_eq!(reply, returned(0));
    assert_eq!(hv.lines, vec![(3, "hi".into()), (3, "there".into())]);
    assert_eq!(out, "");
}

#[test]
fn xen_version_and_unknown_domains() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    let mut guests = guests_with(3, "hello");
    let mut out = std::string::String::new();
    let reply = guests.handle(&mut hv, &hypercall(3, 17, [0; 6]), &mut out);
    assert_eq!(reply, returned(4 << 16 | 21));
    let reply = guests.handle(&mut hv, &hypercall(9, 17, [0; 6]), &mut out);
    assert_eq!(reply, returned(Errno::Esrch.rax()));
}

#[test]
fn constant_answers_need_no_guest_memory_and_others_still_go_the_long_way() {
    // No guest memory at all: a constant answer must not copy anything.
    let mut hv = with_shared_info(FakeHypervisor::default());
    let mut guests = guests_with(3, "hello");
    let mut out = std::string::String::new();
    let mut answer = |args: [u64; 6]| guests.handle(&mut hv, &hypercall(3, 17, args), &mut out);
    assert_eq!(answer([0, 0x5000, 0, 0, 0, 0]), returned(4 << 16 | 21));
    assert_eq!(answer([7, 0, 0, 0, 0, 0]), returned(4096));
    assert_eq!(
        answer([7, 0x5000, 0, 0, 0, 0]),
        returned(Errno::Einval.rax())
    );
    // Not a constant: the capabilities string is copied, and fails without memory.
    assert_eq!(
        answer([3, 0x5000, 0, 0, 0, 0]),
        returned(Errno::Efault.rax())
    );
    // High bits make another command (as `XenVersionCmd::from_raw` reads it).
    assert_eq!(
        answer([1 << 32, 0, 0, 0, 0, 0]),
        returned(Errno::Enosys.rax())
    );
}

#[test]
fn the_quick_path_answers_constants_of_running_guests_without_an_upcall_only() {
    let mut guests = guests_with(3, "hello");
    assert_eq!(guests.quick_return(3, 17, 0, 0), Some(4 << 16 | 21));
    assert_eq!(guests.quick_return(3, 17, 7, 0), Some(4096));
    // Not a constant, not a running domain, an upcall to deliver: the long way.
    assert_eq!(guests.quick_return(3, 17, 3, 0x5000), None);
    assert_eq!(guests.quick_return(9, 17, 0, 0), None);
    guests.running[0].pv.events.upcall_raised = true;
    assert_eq!(guests.quick_return(3, 17, 0, 0), None);
}

#[test]
fn set_segment_base_goes_to_the_nucleus_whose_verdict_is_the_answer() {
    let mut hv = FakeHypervisor::default();
    let mut guests = guests_with(3, "seg");
    let mut out = std::string::String::new();
    let reply = guests.handle(
        &mut hv,
        &hypercall(3, 25, [2, 0xffff_8880_0000_1000, 0, 0, 0, 0]),
        &mut out,
    );
    assert_eq!(reply, returned(0));
    assert_eq!(hv.segment_bases, vec![(3, 2, 0xffff_8880_0000_1000)]);
    // Refused by pv-server already: the nucleus is not asked.
    let reply = guests.handle(
        &mut hv,
        &hypercall(3, 25, [0, 0x8000_0000_0000, 0, 0, 0, 0]),
        &mut out,
    );
    assert_eq!(reply, returned(Errno::Einval.rax()));
    assert_eq!(hv.segment_bases.len(), 1);
}

#[test]
fn poweroff_ends_the_guest_destroys_it_and_sums_up() {
    let mut hv = FakeHypervisor {
        free: 500,
        ..Default::default()
    };
    hv.memory.insert(0x4000, vec![0; 4]);
    let mut guests = guests_with(3, "hello");
    guests.free_before = 500;
    let mut out = std::string::String::new();
    let reply = guests.handle(
        &mut hv,
        &hypercall(3, 29, [2, 0x4000, 0, 0, 0, 0]),
        &mut out,
    );
    assert_eq!(reply, None);
    assert_eq!(hv.destroyed, vec![3]);
    assert_eq!(
        out,
        "guest hello: shut down (poweroff)\n\
         guests: all ended (1 of 1 powered off; free memory 2000 KiB, 2000 KiB before the first)\n"
    );
    assert!(guests.running.is_empty());
}

#[test]
fn a_fault_is_a_crash_with_its_dump_and_a_tick_is_the_watchdog() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    let mut guests = guests_with(2, "bad");
    let mut out = std::string::String::new();
    let event = Event {
        event_data: 0xdead_0000,
        ..fault(2, 14, 2, 0x1234)
    };
    let reply = guests.handle(&mut hv, &after_dump(Token(1), event), &mut out);
    assert_eq!(reply, None);
    assert!(
        out.starts_with(
            "guest bad: crashed: #PF at 0x1234 (address 0xdead0000, error 0x2) with no trap table\n"
        ),
        "{out}"
    );
    let mut guests = guests_with(4, "spin");
    let mut out = std::string::String::new();
    let tick = Event {
        kind: EventKind::Interrupt { vector: 32 },
        owner: ipc::domain::guest_owner(4),
        ..event
    };
    guests.handle(&mut hv, &after_dump(Token(2), tick), &mut out);
    assert!(
        out.starts_with("guest spin: shut down (watchdog)\n"),
        "{out}"
    );
    assert_eq!(hv.destroyed, vec![2, 4]);
}

#[test]
fn a_long_console_write_continues_at_the_syscall() {
    let mut hv = with_shared_info(FakeHypervisor::default());
    hv.memory.insert(0x4000, vec![b'x'; 5000]);
    let mut guests = guests_with(3, "hello");
    let mut out = std::string::String::new();
    let reply = guests.handle(
        &mut hv,
        &hypercall(3, 18, [0, 5000, 0x4000, 0, 0, 0]),
        &mut out,
    );
    let Some(Reply::ResumeWith { changes, .. }) = reply else {
        panic!("expected a continuation, got {reply:?}");
    };
    assert_eq!(changes.rip, 0x1000);
    assert!(changes.gprs.contains(&GprWrite {
        gpr: Gpr::Rsi,
        value: 5000 - 4096
    }));
    assert!(changes.gprs.contains(&GprWrite {
        gpr: Gpr::Rax,
        value: 18
    }));
}

#[test]
fn a_fault_is_bounced_with_the_dumps_registers_and_iret_comes_back() {
    use ipc::dump_parts::{DUMP_BYTES_MAX, split};
    use ipc::message::{DumpReason, GuestMode};
    let mut hv = FakeHypervisor::default();
    // shared_info (vcpu 0's mask 1, as at start of day), a trap table, a stack.
    let mut shared = vec![0u8; 4096];
    shared[1] = 1;
    hv.frames.insert(0x99, shared);
    let mut table = vec![0u8; 32];
    table[0] = 6;
    table[8..16].copy_from_slice(&0x2000u64.to_le_bytes());
    hv.memory.insert(0x5000, table);
    hv.memory.insert(0x7000, vec![0; 0x1000]);
    let mut guests = guests_with(2, "t");
    let mut out = std::string::String::new();
    let reply = guests.handle(&mut hv, &hypercall(2, 0, [0x5000, 0, 0, 0, 0, 0]), &mut out);
    assert_eq!(reply, returned(0));
    // The nucleus sends the registers first (as a dump), then the #UD.
    let mut dump = RegisterDump::default();
    dump.gprs.rcx = 0xc0;
    dump.gprs.r11 = 0x11;
    let mut buf = [0u8; DUMP_BYTES_MAX];
    for part in split(&dump, Token(3), DumpReason::ServerCrash, 0, &mut buf).unwrap() {
        assert_eq!(
            guests.handle(&mut hv, &NucleusMessage::Dump(part), &mut out),
            None
        );
    }
    let event = Event {
        rflags: 0x246,
        rsp: 0x7f00,
        ..fault(2, 6, 0, 0x1234)
    };
    let reply = guests.handle(&mut hv, &after_dump(Token(3), event), &mut out);
    let Some(Reply::GuestResume { token, resume }) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(
        (token, resume.rip, resume.rsp),
        (Token(3), 0x2000, 0x7f00 - 56)
    );
    let frame: std::vec::Vec<u64> = hv.memory[&0x7000][0xf00 - 56..0xf00]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        frame,
        [0xc0, 0x11, 0x1234, 0xe030 | 1 << 32, 0x46, 0x7f00, 0xe02b]
    );
    // The handler returns through iret with that frame (flags 0 and rax/r11/rcx pushed).
    let mut ctx = vec![];
    for w in [
        9u64,
        0x11,
        0xc0,
        0,
        0x1236,
        0xe030 | 1 << 32,
        0x246,
        0x7f00,
        0xe02b,
    ] {
        ctx.extend_from_slice(&w.to_le_bytes());
    }
    hv.memory.get_mut(&0x7000).unwrap()[0x800..0x800 + 72].copy_from_slice(&ctx);
    let call = with_rsp(hypercall(2, 23, [0; 6]), 0x7800);
    let Some(Reply::GuestResume { resume, .. }) = guests.handle(&mut hv, &call, &mut out) else {
        panic!("iret gave no context");
    };
    assert_eq!(
        (resume.rip, resume.rsp, resume.cs, resume.mode),
        (0x1236, 0x7f00, 0xe033, GuestMode::Kernel)
    );
    assert_eq!(hv.frames[&0x99][1], 0, "IF set: events unmasked");
    assert_eq!(out, "");
}

#[test]
fn a_guest_event_that_cannot_be_bounced_asks_for_the_dump_first() {
    let mut hv = FakeHypervisor::default();
    let mut guests = guests_with(2, "bad");
    let mut out = std::string::String::new();
    let event = fault(2, 6, 0, 0x1234);
    let reply = guests.handle(&mut hv, &with_registers(Token(5), event), &mut out);
    assert_eq!(reply, Some(Reply::SendDump { token: Token(5) }));
    assert_eq!(
        (out.as_str(), hv.destroyed.len()),
        ("", 0),
        "nothing ended yet"
    );
    // The event again, after its dump: the crash line.
    let reply = guests.handle(&mut hv, &after_dump(Token(5), event), &mut out);
    assert_eq!(reply, None);
    assert!(
        out.starts_with("guest bad: crashed: #UD at 0x1234 (error 0x0) with no trap table\n"),
        "{out}"
    );
    assert_eq!(hv.destroyed, vec![2]);
}
