//! The trap-and-emulate harness' assertions (issue 8 point 6): the enable sequence, one
//! delivery per event through the FRED entries and through the IDT stubs, and the proof that
//! the harness fails on a broken stub. Run with `--nocapture` to see every emulated
//! instruction and MSR write.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use bsp_x86_64::frame::{self, EventType, FredState, Gprs, SsQword};
use bsp_x86_64::fred::{self, FredMsrPlan};
use bsp_x86_64::gdt;
use bsp_x86_64::insn;
use bsp_x86_64::msr::KernelGsBase;
use bsp_x86_64::stack_block::StackBlock;
use fred_harness::delivery::{self, HwEvent, Outcome, TestStack, Via};
use fred_harness::machine::{
    self, ARITHMETIC_FLAGS, CR4_FRED, CR4_INITIAL, Eret, Fault, Insn, Log, Machine, Popped, Record,
    addr,
};
use fred_harness::stubs::{self, Entry, Seen};
use fred_harness::trap::Session;
use ipc::{Event, EventKind};

/// A stack block at a nucleus-like address: only its arithmetic is used.
const BLOCK_BASE: u64 = 0xffff_8000_0010_0000;
/// GS bases of the nucleus and of the interrupted user thread.
const NUCLEUS_GS: u64 = 0xffff_8880_0000_1000;
const USER_GS: u64 = 0x0000_7f00_1234_0000;

/// A thread's register save area, 64-byte aligned as the nucleus' are.
#[repr(C, align(64))]
struct SaveArea(frame::Frame);

/// The nucleus' `cpu_info` for a delivery from ring 3 (real memory, the GS window): the save
/// area the ring-3 stubs write, and the stack top and scratch slot of the IDT `syscall` stub.
struct CpuBlock {
    info: Box<bsp_x86_64::cpu_info::CpuInfo>,
    area: Box<SaveArea>,
}

impl CpuBlock {
    fn new(stack: &TestStack) -> Self {
        // Poisoned, so a slot a stub forgets shows (as on the test stack).
        let mut area = Box::new(SaveArea(frame::Frame::default()));
        let words = (&raw mut area.0).cast::<u64>();
        for index in 0..frame::FRAME_SIZE / 8 {
            // SAFETY: inside the box, 8-byte aligned.
            unsafe { words.add(index).write(delivery::POISON) };
        }
        let info = Box::new(bsp_x86_64::cpu_info::CpuInfo {
            kernel_rsp: stack.kernel_top(),
            save_area: &raw mut area.0 as u64,
            ..Default::default()
        });
        let block = Self { info, area };
        Machine::set_gs_window(
            block.addr(),
            core::mem::size_of::<bsp_x86_64::cpu_info::CpuInfo>() as u64,
        );
        block
    }

    /// GS_BASE in the nucleus.
    fn addr(&self) -> u64 {
        &raw const *self.info as u64
    }

    /// Where the ring-3 stubs save the frame.
    fn area(&self) -> u64 {
        &raw const self.area.0 as u64
    }

    fn field(&self, offset: usize) -> u64 {
        self.addr() + offset as u64
    }
}

fn print_records(title: &str, records: &[Record]) {
    println!("--- {title}: {} emulated instruction(s)", records.len());
    for record in records {
        println!("    {record}");
    }
}

fn kinds(records: &[Record]) -> Vec<Insn> {
    records.iter().map(|record| record.insn).collect()
}

/// Each emulated instruction with the fault it raised, if any.
fn insns_and_faults(records: &[Record]) -> Vec<(Insn, Option<Fault>)> {
    records.iter().map(|r| (r.insn, r.fault)).collect()
}

/// Delivers `event` through `via` on `stack` with GPRs distinct by `seed` (see
/// [`delivery::deliver`]) and prints the instructions emulated under `title`.
fn delivered(
    session: &Session,
    stack: &TestStack,
    via: Via,
    event: &HwEvent,
    seed: u64,
    handler_rax: Option<u64>,
    title: &str,
) -> Outcome {
    let input = delivery::distinct_gprs(seed);
    let outcome = delivery::deliver(session, stack, via, event, input, handler_rax);
    print_records(title, &outcome.records);
    outcome
}

/// What the handler saw of `event` (it must have run).
fn handler_saw(event: &HwEvent, outcome: &Outcome) -> Seen {
    outcome
        .seen
        .unwrap_or_else(|| panic!("{}: handler did not run", event.name))
}

/// The handler decoded `event` as [`expected_event`] and every GPR but the ones it wrote
/// came back unchanged; the expected event.
fn assert_decoded(
    event: &HwEvent,
    kind: EventKind,
    outcome: &Outcome,
    insn_len: u8,
    handler_rax: Option<u64>,
) -> Event {
    let expected = expected_event(event, kind, outcome, insn_len);
    let seen = handler_saw(event, outcome);
    assert_eq!(seen.event, Ok(expected), "{}: decoded event", event.name);
    assert_eq!(
        delivery::preservation_mismatches(outcome, handler_rax),
        Vec::<String>::new(),
        "{}",
        event.name
    );
    expected
}

fn plan(shadow_stacks: bool) -> FredMsrPlan {
    let block = StackBlock::new(BLOCK_BASE).expect("aligned canonical block");
    FredMsrPlan::new(&block, stubs::symbols().fred_entry_ring3, shadow_stacks)
        .expect("valid plan for the harness' entry page")
}

/// Runs the real `fred::enable`; returns the (msr, value) pairs its log callback saw.
fn enable(plan: &FredMsrPlan) -> Vec<(u32, u64)> {
    let mut logged = Vec::new();
    // SAFETY: inside a session: every privileged instruction of `enable` traps and is
    // emulated against the machine model; nothing on the host changes.
    unsafe { fred::enable(plan, |msr, value| logged.push((msr, value))) };
    logged
}

#[test]
fn entry_page_layout() {
    let symbols = stubs::symbols();
    assert_eq!(
        symbols.fred_entry_ring3 % 4096,
        0,
        "IA32_FRED_CONFIG needs a 4 KiB page"
    );
    assert_eq!(symbols.fred_entry_ring0 - symbols.fred_entry_ring3, 256);
    assert!(symbols.fred_exit > symbols.fred_entry_ring0);
    assert!(symbols.fred_entry_page_end - symbols.fred_entry_ring3 <= 4096);
    assert_eq!(symbols.idt_vector_stubs % 16, 0);
    assert_eq!(symbols.idt_common, symbols.idt_vector_stubs + 256 * 16);
}

#[test]
fn enable_sequence_writes_the_plan_in_order() {
    let _session = Session::begin();
    let plan = plan(false);
    let entry_page = stubs::symbols().fred_entry_ring3;
    let logged = enable(&plan);
    let records = Log::all();
    print_records("fred::enable (no shadow stacks)", &records);
    assert_eq!(Log::dropped(), 0);

    // The numbers of fred-facts.md, spelled out independently of the plan.
    let expected_writes: [(u32, u64); 7] = [
        (addr::STAR, 0xe023_e008_0000_0000),
        (addr::FRED_CONFIG, entry_page), // REDZONE 0, INT_STKLVL 0, CSL 0: low 12 bits 0
        (addr::FRED_RSP0, BLOCK_BASE + 0x8000 - 64), // below cpu_info
        (addr::FRED_RSP1, BLOCK_BASE + 0x6000), // top of page 5
        (addr::FRED_RSP2, BLOCK_BASE + 0x1000), // top of page 0
        (addr::FRED_RSP3, BLOCK_BASE + 0x5000), // top of page 4 (#DF)
        (addr::FRED_STKLVLS, 3 << 16),   // #DF (vector 8) on SL3
    ];
    let planned: Vec<(u32, u64)> = plan
        .writes()
        .iter()
        .map(|w| (w.addr(), w.value()))
        .collect();
    assert_eq!(planned, expected_writes, "the pure plan");
    assert_eq!(logged, expected_writes, "enable's log callback");

    let mut expected = vec![(Insn::MovSs, [0xe010, 0, 0, 0, 0, 0])];
    for (msr, value) in expected_writes {
        expected.push((Insn::Wrmsr, [msr as u64, value, 0, 0, 0, 0]));
    }
    expected.push((Insn::ReadCr4, [CR4_INITIAL, 0, 0, 0, 0, 0]));
    expected.push((
        Insn::WriteCr4,
        [CR4_INITIAL | CR4_FRED, CR4_INITIAL, 0, 0, 0, 0],
    ));
    let seen: Vec<(Insn, [u64; 6])> = records.iter().map(|r| (r.insn, r.operands)).collect();
    assert_eq!(
        seen, expected,
        "SS first, then the plan's WRMSRs in order, then CR4.FRED"
    );
    assert!(
        records.iter().all(|r| r.fault.is_none()),
        "a write the CPU would #GP"
    );

    // SS = KERNEL_DS strictly before CR4.FRED; every WRMSR before CR4.FRED.
    let position = |insn| {
        records
            .iter()
            .position(|r| r.insn == insn)
            .expect("present")
    };
    assert!(position(Insn::MovSs) < position(Insn::WriteCr4));
    assert!(
        records.iter().rposition(|r| r.insn == Insn::Wrmsr).unwrap() < position(Insn::WriteCr4)
    );
    assert_eq!(Machine::ss(), gdt::KERNEL_DS.raw() as u64);
    assert!(Machine::fred_on());
    for (msr, value) in expected_writes {
        assert_eq!(Machine::msr(msr), Some(value), "{}", machine::msr_name(msr));
    }
    let config = Machine::msr(addr::FRED_CONFIG).unwrap();
    assert_eq!(
        config & 0xfff,
        0,
        "CSL, REDZONE, INT_STKLVL and reserved bits all 0"
    );
    assert_eq!((config & !0xfff) + 256, stubs::symbols().fred_entry_ring0);

    println!("MSR writes seen:");
    for (msr, value) in &logged {
        println!(
            "    {:<18} {msr:#010x} <- {value:#018x}",
            machine::msr_name(*msr)
        );
    }
}

#[test]
fn enable_with_shadow_stacks_passes_the_wrmsr_checks() {
    let _session = Session::begin();
    let plan = plan(true);
    enable(&plan);
    let records = Log::all();
    print_records("fred::enable (shadow stacks)", &records);
    let writes: Vec<(u64, u64)> = records
        .iter()
        .filter(|r| r.insn == Insn::Wrmsr)
        .map(|r| (r.operands[0], r.operands[1]))
        .collect();
    assert_eq!(writes.len(), 11);
    assert_eq!(
        writes[7..],
        [
            (addr::FRED_SSP1 as u64, BLOCK_BASE),
            (addr::FRED_SSP2 as u64, BLOCK_BASE),
            (addr::FRED_SSP3 as u64, BLOCK_BASE + 0x1000),
            (addr::PL0_SSP as u64, BLOCK_BASE + 0x6000),
        ]
    );
    assert!(records.iter().all(|r| r.fault.is_none()));
    assert_eq!(kinds(&records).last(), Some(&Insn::WriteCr4));
}

#[test]
fn wrmsr_rejects_what_the_cpu_rejects() {
    // Pure checks (fred-facts.md §2.3).
    let cases: [(u32, u64, Result<(), Fault>); 14] = [
        (addr::FRED_RSP0, 0xffff_8000_0010_7fc0, Ok(())),
        (
            addr::FRED_RSP1,
            0xffff_8000_0010_7fc8,
            Err(Fault::Misaligned),
        ),
        (
            addr::FRED_RSP3,
            0x0000_8000_0000_0000,
            Err(Fault::NotCanonical),
        ),
        (addr::FRED_SSP2, 0xffff_8000_0010_0008, Ok(())),
        (
            addr::FRED_SSP2,
            0xffff_8000_0010_0004,
            Err(Fault::Misaligned),
        ),
        (addr::PL0_SSP, 0xffff_8000_0010_0004, Ok(())),
        (addr::PL0_SSP, 0xffff_8000_0010_0002, Err(Fault::Misaligned)),
        (addr::FRED_CONFIG, 0xffff_ffff_8020_0040, Ok(())),
        (
            addr::FRED_CONFIG,
            0xffff_ffff_8020_0004,
            Err(Fault::ReservedBits),
        ),
        (
            addr::FRED_CONFIG,
            0xffff_ffff_8020_0800,
            Err(Fault::ReservedBits),
        ),
        (
            addr::FRED_CONFIG,
            0x1234_0000_0000_0000,
            Err(Fault::NotCanonical),
        ),
        (addr::FRED_STKLVLS, u64::MAX, Ok(())),
        (
            addr::KERNEL_GS_BASE,
            0x0000_8000_0000_0000,
            Err(Fault::NotCanonical),
        ),
        (0x1D5, 0, Err(Fault::UnknownMsr)),
    ];
    for (msr, value, expected) in cases {
        assert_eq!(
            machine::wrmsr_check(msr, value),
            expected,
            "{msr:#x} <- {value:#x}"
        );
    }

    // The same through the real `insn::wrmsr` and the trap handler: a plan-like write of a
    // misaligned RSP1 is refused (#GP recorded) and not applied.
    let _session = Session::begin();
    let good = BLOCK_BASE + 0x6000;
    // SAFETY: inside a session, WRMSR traps and is emulated.
    unsafe { insn::wrmsr(addr::FRED_RSP1, good) };
    // SAFETY: as above.
    unsafe { insn::wrmsr(addr::FRED_RSP1, good + 8) };
    // SAFETY: as above.
    unsafe { insn::wrmsr(addr::FRED_CONFIG, stubs::symbols().fred_entry_ring3 | 0x10) };
    // SAFETY: as above.
    let read_back = unsafe { insn::rdmsr(addr::FRED_RSP1) };
    let records = Log::all();
    print_records("negative WRMSRs", &records);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.insn, r.operands[0], r.fault))
            .collect::<Vec<_>>(),
        [
            (Insn::Wrmsr, addr::FRED_RSP1 as u64, None),
            (Insn::Wrmsr, addr::FRED_RSP1 as u64, Some(Fault::Misaligned)),
            (
                Insn::Wrmsr,
                addr::FRED_CONFIG as u64,
                Some(Fault::ReservedBits)
            ),
            (Insn::Rdmsr, addr::FRED_RSP1 as u64, None),
        ]
    );
    assert_eq!(read_back, good, "the refused write left the MSR alone");
    assert_eq!(Machine::msr(addr::FRED_CONFIG), Some(0));
}

#[test]
fn load_user_gs_uses_lkgs_and_never_swapgs() {
    let _session = Session::begin();
    enable(&plan(false));
    Machine::store_msr(addr::GS_BASE, NUCLEUS_GS);
    let first = Log::len();
    let base = KernelGsBase::new(USER_GS).expect("canonical");
    // SAFETY: inside a session: LKGS (#UD at CPL 3) and WRMSR trap and are emulated.
    unsafe { fred::load_user_gs(true, gdt::USER_DS, base) };
    let records = Log::since(first);
    print_records("fred::load_user_gs (FRED on)", &records);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.insn, r.operands[0], r.operands[1], r.fault))
            .collect::<Vec<_>>(),
        [
            (Insn::Lkgs, 0xe02b, 0, None),
            (Insn::Wrmsr, addr::KERNEL_GS_BASE as u64, USER_GS, None),
        ]
    );
    assert_eq!(Machine::gs_selector(), 0xe02b);
    assert_eq!(Machine::msr(addr::KERNEL_GS_BASE), Some(USER_GS));
    assert_eq!(
        Machine::msr(addr::GS_BASE),
        Some(NUCLEUS_GS),
        "live (nucleus) base untouched"
    );
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

const INT3_RING0: HwEvent = HwEvent {
    name: "int3 from ring 0",
    from_ring3: false,
    event_type: EventType::SoftwareException,
    vector: 3,
    error_code: 0,
    event_data: 0,
    insn_len: 1,
    rflags: 0x246,
};
const PAGE_FAULT: HwEvent = HwEvent {
    name: "#PF (write, not present) from ring 0",
    from_ring3: false,
    event_type: EventType::HardwareException,
    vector: 14,
    error_code: 0x2,
    event_data: 0xffff_c900_0012_3458,
    insn_len: 0,
    rflags: 0x1_0286, // RF (fault), SF, IF
};
const GP_SELECTOR: HwEvent = HwEvent {
    name: "#GP(0x28) from ring 0",
    from_ring3: false,
    event_type: EventType::HardwareException,
    vector: 13,
    error_code: 0x28,
    event_data: 0,
    insn_len: 0,
    rflags: 0x1_0083, // RF, SF, CF
};
const INVALID_OPCODE: HwEvent = HwEvent {
    name: "#UD from ring 0",
    from_ring3: false,
    event_type: EventType::HardwareException,
    vector: 6,
    error_code: 0,
    event_data: 0,
    insn_len: 0,
    rflags: 0x1_0202,
};
const DEBUG: HwEvent = HwEvent {
    name: "#DB (single step) from ring 0",
    from_ring3: false,
    event_type: EventType::HardwareException,
    vector: 1,
    error_code: 0,
    event_data: 0x4001, // BS | B0, positive polarity
    insn_len: 0,
    rflags: 0x302,
};
const INTERRUPT: HwEvent = HwEvent {
    name: "external interrupt 0x30 from ring 0",
    from_ring3: false,
    event_type: EventType::ExternalInterrupt,
    vector: 0x30,
    error_code: 0,
    event_data: 0,
    insn_len: 0,
    rflags: 0x2c3, // IF, SF, ZF, CF
};
const SYSCALL_RING3: HwEvent = HwEvent {
    name: "syscall from ring 3",
    from_ring3: true,
    event_type: EventType::Other,
    vector: 1,
    error_code: 0,
    event_data: 0,
    insn_len: 2,
    rflags: 0x246,
};
const INT3_RING3: HwEvent = HwEvent {
    name: "int3 from ring 3",
    from_ring3: true,
    event_type: EventType::SoftwareException,
    vector: 3,
    error_code: 0,
    event_data: 0,
    insn_len: 1,
    rflags: 0x203,
};

/// The `Event` the dispatcher must get, built from the event's description by hand.
fn expected_event(event: &HwEvent, kind: EventKind, outcome: &Outcome, insn_len: u8) -> Event {
    let (cs, ss) = event.selectors();
    Event {
        cpu: 0,
        kind,
        event_data: event.event_data,
        rip: outcome.return_rip,
        cs: cs.raw(),
        rflags: event.rflags,
        rsp: outcome.return_rsp,
        ss: ss.raw(),
        from_ring: if event.from_ring3 { 3 } else { 0 },
        insn_len,
        owner: 0,
    }
}

/// GS as the nucleus has it when the event arrives (fred.rs "GS convention").
fn set_gs_for(event: &HwEvent, cpu: &CpuBlock) {
    if event.from_ring3 {
        Machine::store_msr(addr::GS_BASE, USER_GS);
        Machine::store_msr(addr::KERNEL_GS_BASE, cpu.addr());
    } else {
        Machine::store_msr(addr::GS_BASE, NUCLEUS_GS);
        Machine::store_msr(addr::KERNEL_GS_BASE, USER_GS);
    }
}

fn assert_gs_restored(event: &HwEvent, cpu: &CpuBlock) {
    let gs = Machine::msr(addr::GS_BASE);
    assert_eq!(
        gs,
        Some(if event.from_ring3 {
            USER_GS
        } else {
            NUCLEUS_GS
        }),
        "{}: GS base after return",
        event.name
    );
    if event.from_ring3 {
        assert_eq!(
            Machine::msr(addr::KERNEL_GS_BASE),
            Some(cpu.addr()),
            "{}: the nucleus' cpu_info back in KERNEL_GS_BASE",
            event.name
        );
    }
}

fn assert_landing_flags(event: &HwEvent, outcome: &Outcome) {
    assert_eq!(
        outcome.landing_rflags & ARITHMETIC_FLAGS,
        event.rflags & ARITHMETIC_FLAGS,
        "{}: arithmetic flags at the landing pad",
        event.name
    );
}

/// Delivers through the FRED entry (after the real enable sequence) and checks everything
/// but the comparison with the IDT path. Returns the decoded event.
fn through_fred(event: &HwEvent, kind: EventKind, handler_rax: Option<u64>) -> Event {
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    set_gs_for(event, &cpu);
    let title = format!("FRED: {}", event.name);
    let outcome = delivered(&session, &stack, Via::Fred, event, 1, handler_rax, &title);
    let seen = handler_saw(event, &outcome);
    // A 64-bit SYSCALL the fast path declined (the stand-in declines unless told) goes to
    // the syscall table's own way in; every other ring-3 event to the general one.
    let entry = match (event.from_ring3, kind) {
        (true, EventKind::Syscall) => Entry::SyscallFred,
        (true, _) => Entry::FredRing3,
        (false, _) => Entry::FredRing0,
    };
    assert_eq!((seen.entry, seen.calls), (entry, 1), "{}", event.name);
    if event.from_ring3 {
        assert_eq!(
            seen.frame_addr,
            cpu.area(),
            "frame in the thread's save area"
        );
    } else {
        assert_eq!(
            seen.frame_addr,
            outcome.entry_rsp - frame::FRAME_RET as u64,
            "frame right below the CPU's state"
        );
    }
    assert_eq!(outcome.entry_rsp % 64, 0);
    assert_eq!(
        seen.frame.ret,
        event.fred_state(outcome.return_rip, outcome.return_rsp),
        "return state untouched"
    );
    assert_eq!(seen.frame.gprs.reserved, 0);
    assert_eq!(
        seen.rflags & delivery::DF,
        0,
        "{}: handler called with DF = 1",
        event.name
    );
    let expected = assert_decoded(event, kind, &outcome, event.insn_len, handler_rax);
    assert_landing_flags(event, &outcome);

    // The right ERET, from the frame the CPU wrote (ring 0) or from a copy of the save
    // area's return state on the stack (ring 3: the save area's address came through GS).
    let expected_kinds: &[Insn] = if event.from_ring3 {
        &[Insn::GsLoad, Insn::Eretu]
    } else {
        &[Insn::Erets]
    };
    assert_eq!(
        kinds(&outcome.records),
        expected_kinds,
        "{}: no SWAPGS/IRETQ/SYSRET on the FRED path",
        event.name
    );
    if event.from_ring3 {
        let load = outcome.records[0];
        assert_eq!(
            load.operands[..2],
            [
                cpu.field(bsp_x86_64::cpu_info::CPU_INFO_SAVE_AREA),
                cpu.area()
            ],
            "{}: the save area from cpu_info",
            event.name
        );
    }
    let record = *outcome.records.last().expect("an ERET");
    assert_eq!(record.fault, None, "{}: {record}", event.name);
    let state = seen.frame.ret;
    // ERETU pops from a stack copy below the CPU's frame; ERETS from the frame itself.
    let popped_at = if event.from_ring3 {
        assert!(
            record.operands[0] < outcome.entry_rsp && record.operands[0].is_multiple_of(64),
            "{}: ERETU from a copy on the kernel stack",
            event.name
        );
        record.operands[0]
    } else {
        outcome.entry_rsp
    };
    assert_eq!(
        record.operands,
        [
            popped_at,
            state.rip,
            state.cs.raw(),
            state.rflags,
            state.rsp,
            state.ss.raw()
        ],
        "{}: ERET popped the CPU's state",
        event.name
    );
    assert_gs_restored(event, &cpu);
    expected
}

/// Delivers through `idt_vector_stubs + 16 * vector` (FRED off) and checks it.
fn through_idt(event: &HwEvent, kind: EventKind) -> Event {
    let session = Session::begin();
    Machine::set_ss(gdt::KERNEL_DS.raw() as u64);
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    set_gs_for(event, &cpu);
    let title = format!("IDT: {}", event.name);
    let outcome = delivered(&session, &stack, Via::Idt, event, 2, None, &title);
    let seen = handler_saw(event, &outcome);
    assert_eq!((seen.entry, seen.calls), (Entry::Idt, 1), "{}", event.name);
    assert_eq!(seen.frame_addr % 64, 0);
    if event.from_ring3 {
        assert_eq!(
            seen.frame_addr,
            cpu.area(),
            "frame in the thread's save area"
        );
    }
    assert_eq!(
        seen.rflags & delivery::DF,
        0,
        "{}: handler called with DF = 1",
        event.name
    );
    // What the IDT stub fills in: everything FRED would write, except what an IDT frame
    // cannot know: the instruction length and SWEVENT/STI/NMI/NESTED bits of the SS qword,
    // and the CS qword's stack level (0 here anyway).
    let (_, ss) = event.selectors();
    let mut expected_ret = event.fred_state(outcome.return_rip, outcome.return_rsp);
    expected_ret.ss =
        SsQword::new(ss, frame::idt_event_type(event.vector), event.vector).with_64bit(true);
    assert_eq!(
        seen.frame.ret, expected_ret,
        "{}: IDT stub's FRED layout",
        event.name
    );
    let expected = assert_decoded(event, kind, &outcome, 0, None);
    assert_landing_flags(event, &outcome);

    let mut expected_kinds = Vec::new();
    if event.from_ring3 {
        expected_kinds.push(Insn::Swapgs);
        expected_kinds.push(Insn::GsLoad);
    }
    match event.vector {
        14 => expected_kinds.push(Insn::ReadCr2),
        1 => expected_kinds.push(Insn::ReadDr6),
        _ => {}
    }
    if event.from_ring3 {
        expected_kinds.push(Insn::Swapgs);
    }
    expected_kinds.push(Insn::Iretq);
    assert_eq!(kinds(&outcome.records), expected_kinds, "{}", event.name);
    assert!(
        outcome.records.iter().all(|r| r.fault.is_none()),
        "{}",
        event.name
    );
    let iretq = outcome.records.last().expect("iretq");
    assert_eq!(
        iretq.operands[0],
        seen.frame_addr + frame::FRAME_RIP as u64,
        "IRETQ from the frame copy"
    );
    assert_gs_restored(event, &cpu);
    expected
}

fn fred_matches_idt(event: &HwEvent, kind: EventKind) {
    let fred = through_fred(event, kind, None);
    let idt = through_idt(event, kind);
    // RIP/RSP/RFLAGS/CS/SS are the same by construction (one HwEvent, one test-stack layout);
    // everything the dispatcher sees must then be identical, but for the instruction length
    // only FRED reports.
    assert_eq!(
        fred.insn_len, event.insn_len,
        "{}: FRED's length",
        event.name
    );
    assert_eq!(
        Event {
            insn_len: 0,
            ..fred
        },
        idt,
        "{}: FRED and IDT deliveries decode differently",
        event.name
    );
}

#[test]
fn int3_from_ring0() {
    fred_matches_idt(&INT3_RING0, EventKind::SoftwareException { vector: 3 });
}

#[test]
fn page_fault_with_cr2_in_event_data() {
    fred_matches_idt(
        &PAGE_FAULT,
        EventKind::Exception {
            vector: 14,
            error_code: 0x2,
        },
    );
}

#[test]
fn general_protection_with_selector_error_code() {
    fred_matches_idt(
        &GP_SELECTOR,
        EventKind::Exception {
            vector: 13,
            error_code: 0x28,
        },
    );
}

#[test]
fn invalid_opcode() {
    fred_matches_idt(
        &INVALID_OPCODE,
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
    );
}

#[test]
fn debug_with_dr6_in_event_data() {
    fred_matches_idt(
        &DEBUG,
        EventKind::Exception {
            vector: 1,
            error_code: 0,
        },
    );
}

#[test]
fn external_interrupt() {
    fred_matches_idt(&INTERRUPT, EventKind::Interrupt { vector: 0x30 });
}

#[test]
fn int3_from_ring3() {
    fred_matches_idt(&INT3_RING3, EventKind::SoftwareException { vector: 3 });
}

#[test]
fn int3_from_ring3_with_df_set() {
    // User code may leave DF = 1; the dispatcher is Rust (SysV ABI: DF = 0 at a call).
    // FRED clears it by delivering with RFLAGS = 0x2; the IDT gate does not, so the IDT
    // stub must.
    let event = HwEvent {
        name: "int3 from ring 3 with DF = 1",
        rflags: 0x646,
        ..INT3_RING3
    };
    fred_matches_idt(&event, EventKind::SoftwareException { vector: 3 });
}

/// SYSCALL under IDT delivery: LSTAR's `syscall_entry` must build the frame FRED writes for
/// a SYSCALL (type 7, vector 1) on the stack named by `cpu_info`, reached through GS after
/// SWAPGS, and return through `idt_exit` (SWAPGS, IRETQ).
fn through_idt_syscall(event: &HwEvent, kind: EventKind, handler_rax: Option<u64>) -> Event {
    let session = Session::begin();
    Machine::set_ss(gdt::KERNEL_DS.raw() as u64);
    let stack = TestStack::new();
    // The nucleus' cpu_info block: the save area, the stub's stack top and scratch slot.
    let cpu = CpuBlock::new(&stack);
    let cpu_info_addr = cpu.addr();
    Machine::store_msr(addr::GS_BASE, USER_GS);
    Machine::store_msr(addr::KERNEL_GS_BASE, cpu_info_addr);
    let input = delivery::distinct_gprs(4);
    let outcome = delivery::deliver(&session, &stack, Via::IdtSyscall, event, input, handler_rax);
    print_records(
        &format!("IDT syscall_entry: {}", event.name),
        &outcome.records,
    );

    let seen = handler_saw(event, &outcome);
    assert_eq!((seen.entry, seen.calls), (Entry::Idt, 1), "{}", event.name);
    assert_eq!(
        seen.frame_addr,
        cpu.area(),
        "frame in the save area cpu_info names"
    );
    assert_eq!(seen.rflags & delivery::DF, 0, "handler called with DF = 1");
    assert_eq!(seen.frame.ret.rip, outcome.return_rip, "RIP from RCX");
    assert_eq!(seen.frame.ret.rsp, outcome.return_rsp, "user RSP");
    assert_eq!(
        seen.frame.gprs.rdi, input.rdi,
        "user RDI via the scratch slot"
    );
    assert_eq!(seen.frame.ret.rflags, event.rflags, "RFLAGS from R11");
    assert_eq!(seen.frame.ret.ss.raw(), bsp_x86_64::entry::SYSCALL_SS_QWORD);
    let expected = assert_decoded(event, kind, &outcome, 2, handler_rax);
    let scratch = cpu_info_addr + bsp_x86_64::cpu_info::CPU_INFO_SCRATCH_RSP as u64;
    let kernel_rsp = cpu_info_addr + bsp_x86_64::cpu_info::CPU_INFO_KERNEL_RSP as u64;
    let save_area = cpu.field(bsp_x86_64::cpu_info::CPU_INFO_SAVE_AREA);
    let trace: Vec<(Insn, u64)> = outcome
        .records
        .iter()
        .map(|r| (r.insn, r.operands[0]))
        .collect();
    assert_eq!(
        trace,
        [
            (Insn::Swapgs, cpu_info_addr),
            (Insn::GsStore, scratch),
            (Insn::GsLoad, save_area),
            (Insn::GsLoad, kernel_rsp),
            (Insn::GsLoad, scratch),
            (Insn::Swapgs, USER_GS),
            (Insn::Iretq, seen.frame_addr + frame::FRAME_RIP as u64),
        ],
        "syscall_entry's privileged instructions"
    );
    assert!(outcome.records.iter().all(|r| r.fault.is_none()));
    assert_eq!(
        Machine::msr(addr::GS_BASE),
        Some(USER_GS),
        "user GS back after the return"
    );
    drop(cpu);
    expected
}

#[test]
fn syscall_idt_stub_matches_fred() {
    // The same SYSCALL through FRED (type 7 vector 1 at the ring-3 entry) and through LSTAR's
    // `syscall_entry`: the dispatcher must see the same event, and the handler's RAX must
    // reach the caller on both paths.
    let fred = through_fred(
        &SYSCALL_RING3,
        EventKind::Syscall,
        Some(0x5157_ca11_0000_002a),
    );
    let idt = through_idt_syscall(
        &SYSCALL_RING3,
        EventKind::Syscall,
        Some(0x5157_ca11_0000_002a),
    );
    assert_eq!(
        fred, idt,
        "FRED and IDT syscall deliveries decode differently"
    );
}

/// What the syscall fast path stand-in writes into RAX when it completes a call.
const FAST_RAX: u64 = 0xfa57_0000_0000_0005;

/// The interrupted registers as a caller of a completed fast-path syscall must find them:
/// all its own (under IDT with SYSCALL's RCX = RIP and R11 = RFLAGS, which `deliver` put in
/// `outcome.input`), but RAX.
fn assert_fast_return(name: &str, outcome: &Outcome) {
    let expected = Gprs {
        rax: FAST_RAX,
        ..outcome.input
    };
    assert_eq!(
        outcome.landed, expected,
        "{name}: registers after the return"
    );
    assert_eq!(outcome.landing_rsp, outcome.return_rsp, "{name}: user RSP");
}

#[test]
fn syscall_fast_path_under_idt_returns_with_sysretq() {
    // A call the fast path completes: only what a Rust call clobbers was saved, and SYSRETQ
    // (after SWAPGS) returns with the rest never having left the registers.
    let session = Session::begin();
    Machine::set_ss(gdt::KERNEL_DS.raw() as u64);
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    Machine::store_msr(addr::GS_BASE, USER_GS);
    Machine::store_msr(addr::KERNEL_GS_BASE, cpu.addr());
    stubs::set_fast(Some(FAST_RAX));
    let title = "IDT syscall_entry, fast path";
    let outcome = delivered(
        &session,
        &stack,
        Via::IdtSyscall,
        &SYSCALL_RING3,
        5,
        None,
        title,
    );
    let seen = handler_saw(&SYSCALL_RING3, &outcome);
    assert_eq!((seen.entry, seen.calls), (Entry::FastIdt, 1));
    assert_eq!(seen.frame_addr, cpu.area(), "the save area cpu_info names");
    assert_eq!(
        seen.rflags & delivery::DF,
        0,
        "fast path called with DF = 1"
    );
    assert_eq!(seen.frame.gprs.rax, outcome.input.rax, "the syscall number");
    assert_eq!(
        seen.frame.gprs.rdi, outcome.input.rdi,
        "RDI via the scratch slot"
    );
    assert_eq!(seen.frame.gprs.rsi, outcome.input.rsi);
    assert_eq!(seen.frame.ret.rip, outcome.return_rip, "RIP from RCX");
    assert_eq!(
        seen.frame.ret.rflags, SYSCALL_RING3.rflags,
        "RFLAGS from R11"
    );
    assert_eq!(seen.frame.ret.rsp, outcome.return_rsp, "user RSP");
    assert_eq!(
        kinds(&outcome.records),
        [
            Insn::Swapgs,
            Insn::GsStore,
            Insn::GsLoad,
            Insn::GsLoad,
            Insn::GsLoad,
            Insn::Swapgs,
            Insn::Sysret
        ],
        "SWAPGS back, then SYSRETQ (no IRETQ)"
    );
    assert_fast_return(title, &outcome);
    assert_eq!(Machine::msr(addr::GS_BASE), Some(USER_GS), "user GS back");
}

#[test]
fn syscall_fast_path_under_fred_returns_with_eretu_from_the_cpus_own_state() {
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    set_gs_for(&SYSCALL_RING3, &cpu);
    stubs::set_fast(Some(FAST_RAX));
    let title = "FRED syscall, fast path";
    let outcome = delivered(&session, &stack, Via::Fred, &SYSCALL_RING3, 6, None, title);
    let seen = handler_saw(&SYSCALL_RING3, &outcome);
    assert_eq!((seen.entry, seen.calls), (Entry::FastFred, 1));
    assert_eq!(seen.frame_addr, cpu.area(), "the save area cpu_info names");
    assert_eq!(seen.frame.gprs.rax, outcome.input.rax, "the syscall number");
    assert_eq!(seen.frame.gprs.rdi, outcome.input.rdi);
    assert_eq!(kinds(&outcome.records), [Insn::GsLoad, Insn::Eretu]);
    let eretu = outcome.records[1];
    assert_eq!(eretu.fault, None, "{eretu}");
    assert_eq!(
        eretu.operands[0], outcome.entry_rsp,
        "ERETU from the return state the CPU wrote, not a copy"
    );
    // FRED's SYSCALL leaves RCX and R11 alone: they come back as they were.
    assert_fast_return(title, &outcome);
    assert_gs_restored(&SYSCALL_RING3, &cpu);
}

#[test]
fn a_declined_syscall_and_other_events_take_the_whole_frame() {
    // The fast path runs for a SYSCALL only, and a call it declines reaches the general
    // handler with the frame complete (every register checked, as for any event).
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    for (event, kind, offered, entry) in [
        (&SYSCALL_RING3, EventKind::Syscall, 1, Entry::SyscallFred),
        (
            &INT3_RING3,
            EventKind::SoftwareException { vector: 3 },
            0,
            Entry::FredRing3,
        ),
    ] {
        set_gs_for(event, &cpu);
        let title = format!("FRED, fast path declined: {}", event.name);
        let outcome = delivered(&session, &stack, Via::Fred, event, 7, Some(0x2a), &title);
        assert_eq!(
            outcome.fast_calls, offered,
            "{}: offered to the fast path",
            event.name
        );
        let seen = handler_saw(event, &outcome);
        assert_eq!((seen.entry, seen.calls), (entry, 1), "{}", event.name);
        assert_decoded(event, kind, &outcome, event.insn_len, Some(0x2a));
        assert_gs_restored(event, &cpu);
    }
}

#[test]
fn syscall_from_ring3() {
    // The handler writes a return value into the frame's RAX, which ERETU must deliver.
    through_fred(
        &SYSCALL_RING3,
        EventKind::Syscall,
        Some(0x5157_ca11_0000_002a),
    );
}

// ---------------------------------------------------------------------------------------
// Proof that the harness can fail
// ---------------------------------------------------------------------------------------

#[test]
fn broken_stub_is_caught() {
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let input = delivery::distinct_gprs(3);
    let outcome = delivery::deliver(
        &session,
        &stack,
        Via::BrokenFredRing0,
        &INT3_RING0,
        input,
        None,
    );
    print_records("FRED, broken ring-0 stub (no RBX store)", &outcome.records);
    let mismatches = delivery::preservation_mismatches(&outcome, None);
    println!("mismatches reported for the broken stub:");
    for line in &mismatches {
        println!("    {line}");
    }
    // The slot the stub did not write still holds the test stack's poison, and the exit
    // path restores RBX from it.
    assert_eq!(
        mismatches,
        [
            format!(
                "frame.rbx: {:#x}, interrupted {:#x}",
                delivery::POISON,
                input.rbx
            ),
            format!(
                "landing rbx: {:#x}, expected {:#x}",
                delivery::POISON,
                input.rbx
            ),
        ]
    );
    // The same check passes for the real stub on the same event (through_fred asserts it).
    drop(session);
    through_fred(
        &INT3_RING0,
        EventKind::SoftwareException { vector: 3 },
        None,
    );
}

#[test]
fn idt_path_under_fred_is_flagged() {
    // The IDT stubs' SWAPGS and IRETQ while CR4.FRED = 1: what the FRED path must never do.
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    set_gs_for(&INT3_RING3, &cpu);
    // The refused SWAPGS swaps nothing: let the stub's cpu_info read land on the block
    // through the GS it still has, so the run goes on to the IRETQ.
    Machine::store_msr(addr::GS_BASE, cpu.addr());
    let outcome = delivered(
        &session,
        &stack,
        Via::Idt,
        &INT3_RING3,
        4,
        None,
        "IDT stub while FRED is on",
    );
    assert_eq!(
        insns_and_faults(&outcome.records),
        [
            (Insn::Swapgs, Some(Fault::ForbiddenUnderFred)),
            (Insn::GsLoad, None),
            (Insn::Swapgs, Some(Fault::ForbiddenUnderFred)),
            (Insn::Iretq, Some(Fault::ForbiddenUnderFred)),
        ]
    );
}

#[test]
fn eretu_refuses_a_bad_ring3_frame() {
    // IOPL 3 in the frame: ERETU would #GP(0) (fred-facts.md §4.3). The stub returns it
    // unchanged, so the harness must flag it.
    let bad = HwEvent {
        name: "syscall from ring 3 with IOPL 3",
        rflags: 0x3246,
        ..SYSCALL_RING3
    };
    let session = Session::begin();
    enable(&plan(false));
    let stack = TestStack::new();
    let cpu = CpuBlock::new(&stack);
    set_gs_for(&bad, &cpu);
    let outcome = delivered(
        &session,
        &stack,
        Via::Fred,
        &bad,
        5,
        None,
        "FRED, ring-3 frame with IOPL 3",
    );
    assert_eq!(
        insns_and_faults(&outcome.records),
        [(Insn::GsLoad, None), (Insn::Eretu, Some(Fault::BadRflags))]
    );
}

#[test]
fn eret_checks() {
    let user = Popped {
        rip: 0x0000_7f00_0000_1000,
        cs: 0x2b,
        rflags: 0x246,
        rsp: 0x0000_7fff_ffff_e000,
        ss: 0x0007_0001_0002_0023,
    };
    let kernel = Popped {
        rip: 0xffff_ffff_8000_1000,
        cs: 0x08,
        rflags: 0x1_0246,
        rsp: 0xffff_8000_0010_7f00,
        ss: 0x0006_0003_0000_0010,
    };
    let check = |which, popped: &Popped| machine::eret_check(which, true, popped, 0x08, 0x10, 0);
    assert_eq!(check(Eret::Eretu, &user), Ok(()));
    assert_eq!(check(Eret::Erets, &kernel), Ok(()));
    assert_eq!(
        check(
            Eret::Erets,
            &Popped {
                cs: 0x3_0008,
                ..kernel
            }
        ),
        Ok(()),
        "SL bits are ignored"
    );
    assert_eq!(
        machine::eret_check(Eret::Erets, false, &kernel, 0x08, 0x10, 0),
        Err(Fault::EretWithoutFred)
    );
    assert_eq!(
        machine::eret_check(Eret::Eretu, true, &user, 0x08, 0x10, 1),
        Err(Fault::EretuAtNonZeroCsl)
    );
    assert_eq!(
        check(Eret::Eretu, &Popped { cs: 0x28, ..user }),
        Err(Fault::BadCs)
    );
    assert_eq!(
        check(
            Eret::Eretu,
            &Popped {
                cs: 0x1_002b,
                ..user
            }
        ),
        Err(Fault::BadCs),
        "SL must be 0"
    );
    assert_eq!(
        check(
            Eret::Eretu,
            &Popped {
                rflags: 0x1246,
                ..user
            }
        ),
        Err(Fault::BadRflags),
        "IOPL 1"
    );
    assert_eq!(
        check(Eret::Eretu, &Popped { ss: 0x20, ..user }),
        Err(Fault::BadSs)
    );
    assert_eq!(
        check(
            Eret::Eretu,
            &Popped {
                rip: 0x0000_8000_0000_0000,
                ..user
            }
        ),
        Err(Fault::RipNotCanonical)
    );
    assert_eq!(
        check(Eret::Erets, &Popped { cs: 0x10, ..kernel }),
        Err(Fault::BadCs)
    );
    assert_eq!(
        check(
            Eret::Erets,
            &Popped {
                rflags: 0x246 | (1 << 17),
                ..kernel
            }
        ),
        Err(Fault::BadRflags),
        "VM"
    );
    assert_eq!(
        check(
            Eret::Erets,
            &Popped {
                rflags: 0x240,
                ..kernel
            }
        ),
        Err(Fault::BadRflags),
        "bit 1 clear"
    );
    assert_eq!(
        check(Eret::Erets, &Popped { ss: 0x18, ..kernel }),
        Err(Fault::BadSs)
    );
    assert_eq!(
        check(
            Eret::Erets,
            &Popped {
                rip: 0x1234_0000_0000_0000,
                ..kernel
            }
        ),
        Err(Fault::RipNotCanonical)
    );
}

#[test]
fn return_state_round_trip_of_a_frame() {
    // The harness builds FRED states with bsp-x86_64's own encoders: pin the raw qwords of
    // one against fred-facts.md §3.4–§3.5 so that a shared encoder bug cannot hide.
    let state: FredState = SYSCALL_RING3.fred_state(0x4000, 0x7000);
    assert_eq!(state.cs.raw(), 0xe033);
    // 0xe02b | SWEVENT | vector 1 | type 7 | 64-bit | insn len 2
    assert_eq!(state.ss.raw(), 0x2207_0001_0002_e02b);
    let int3 = INT3_RING0.fred_state(0, 0);
    assert_eq!(int3.ss.raw(), 0x1206_0003_0000_e010);
    let pf = PAGE_FAULT.fred_state(0, 0);
    assert_eq!(
        (pf.ss.raw(), pf.error_code, pf.event_data),
        (0x0203_000e_0000_e010, 2, 0xffff_c900_0012_3458)
    );
    let _: Gprs = delivery::distinct_gprs(0);
}
