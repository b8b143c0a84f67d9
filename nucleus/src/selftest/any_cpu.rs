//! The self-tests that run on any CPU: a fault provoked by an asm probe in nucleus code,
//! recovered and checked, and the two nesting cases of issue 14.
use super::expect::{UNMAPPED_ADDRESS, arm, seen, verdict};
use bsp_x86_64::cmdline::SelfTests;
use bsp_x86_64::gdt::{Selector, TableIndicator};

// Probes: each faulting instruction has a label, and each probe a resume label right after
// it, so a test knows the exact RIP to expect and where execution goes on.
core::arch::global_asm!(
    ".pushsection .text.selftest, \"ax\"",
    ".global selftest_ud2, selftest_ud2_resume",
    "selftest_ud2: ud2",
    "selftest_ud2_resume: ret",
    // In: RDI = address to read.
    ".global selftest_read, selftest_read_resume",
    "selftest_read: mov rax, [rdi]",
    "selftest_read_resume: ret",
    // In: RDI = address to call (a no-execute page): the fetch faults with RIP = RDI and the
    // return address pushed; resuming at `selftest_ret` returns to the caller.
    ".global selftest_call, selftest_ret",
    "selftest_call: call rdi",
    "selftest_ret: ret",
    // In: DI = selector to load into DS.
    ".global selftest_load_ds, selftest_load_ds_resume",
    "selftest_load_ds: mov ds, di",
    "selftest_load_ds_resume: ret",
    // Lets one interrupt in, in nucleus code that is not the idle loop.
    ".global selftest_interrupt_window",
    "selftest_interrupt_window: sti",
    "hlt",
    "cli",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn selftest_ud2();
    static selftest_ud2_resume: u8;
    fn selftest_read(addr: u64) -> u64;
    static selftest_read_resume: u8;
    fn selftest_call(target: u64);
    static selftest_ret: u8;
    fn selftest_load_ds(selector: u16);
    static selftest_load_ds_resume: u8;
    fn selftest_interrupt_window();
}

/// A selector past the end of the GDT (index 9 of 8): loading it raises `#GP(0x48)`.
const BAD_SELECTOR: Selector = Selector::new(9, TableIndicator::Gdt, 0);

fn addr_of_symbol(s: &u8) -> u64 {
    core::ptr::from_ref(s) as u64
}

/// The resumable tests on any CPU, in the order `selftest::run` runs them (before the FRED
/// ones).
pub const RESUMABLE: [(SelfTests, fn()); 7] = [
    (SelfTests::INT3, int3),
    (SelfTests::UD2, ud2),
    (SelfTests::PF_UNMAPPED, pf_unmapped),
    (SelfTests::PF_NX, pf_nx),
    (SelfTests::GP_SELECTOR, gp_selector),
    (SelfTests::NESTED_TICK, nested_tick),
    (SelfTests::CONSOLE_NESTED, console_nested),
];

fn int3() {
    println!("selftest: int3: executing int3");
    bsp_x86_64::insn::int3();
    println!("selftest: int3: resumed after int3");
    verdict("int3", true, format_args!("reported and resumed"));
}

fn ud2() {
    let probe = selftest_ud2 as *const () as u64;
    // SAFETY: linker symbol; only its address is used.
    arm(
        bsp_x86_64::idt::Vector::UD.raw(),
        addr_of_symbol(unsafe { &selftest_ud2_resume }),
    );
    println!("selftest: ud2: executing ud2 at {probe:#x}");
    // SAFETY: the probe executes `ud2`; the armed expectation resumes at its `ret`.
    unsafe { selftest_ud2() };
    match seen() {
        Some(s) => verdict(
            "ud2",
            s.rip == probe,
            format_args!("#UD at {:#x}, expected {probe:#x}", s.rip),
        ),
        None => verdict("ud2", false, format_args!("no #UD seen")),
    }
}

fn pf_unmapped() {
    // SAFETY: linker symbol; only its address is used.
    arm(
        bsp_x86_64::idt::Vector::PF.raw(),
        addr_of_symbol(unsafe { &selftest_read_resume }),
    );
    println!("selftest: pf-unmapped: reading {UNMAPPED_ADDRESS:#x}");
    // SAFETY: the read faults (the address is unmapped); the expectation resumes at `ret`.
    unsafe { selftest_read(UNMAPPED_ADDRESS) };
    match seen() {
        // Not present, read, supervisor.
        Some(s) => verdict(
            "pf-unmapped",
            s.event_data == UNMAPPED_ADDRESS && s.error_code == 0,
            format_args!("CR2 {:#x}, error {:#x}", s.event_data, s.error_code),
        ),
        None => verdict("pf-unmapped", false, format_args!("no #PF seen")),
    }
}

/// A data page that must never execute. It is filled with `ret`: if NX were broken the call
/// would simply return, and the test would see no fault and fail.
static NX_DATA: crate::racy::RacyCell<[u8; 4096]> = crate::racy::RacyCell::new([0xc3; 4096]);

fn pf_nx() {
    let target = NX_DATA.get() as u64;
    // SAFETY: linker symbol; only its address is used.
    arm(
        bsp_x86_64::idt::Vector::PF.raw(),
        addr_of_symbol(unsafe { &selftest_ret }),
    );
    println!("selftest: pf-nx: calling data at {target:#x}");
    // SAFETY: the call faults on fetch (data is mapped NX); the expectation resumes at a
    // `ret` that pops the return address `call` pushed.
    unsafe { selftest_call(target) };
    const FETCH: u64 = 1 << 4;
    const PRESENT: u64 = 1 << 0;
    match seen() {
        Some(s) => verdict(
            "pf-nx",
            s.event_data == target
                && s.rip == target
                && s.error_code & (FETCH | PRESENT) == FETCH | PRESENT,
            format_args!("CR2 {:#x}, error {:#x}", s.event_data, s.error_code),
        ),
        None => verdict("pf-nx", false, format_args!("no #PF seen: data executed")),
    }
}

fn gp_selector() {
    // SAFETY: linker symbol; only its address is used.
    arm(
        bsp_x86_64::idt::Vector::GP.raw(),
        addr_of_symbol(unsafe { &selftest_load_ds_resume }),
    );
    println!(
        "selftest: gp-selector: loading DS with {:#x}",
        BAD_SELECTOR.raw()
    );
    // SAFETY: the load faults (beyond the GDT limit) before DS changes; resumes at `ret`.
    unsafe { selftest_load_ds(BAD_SELECTOR.raw()) };
    match seen() {
        Some(s) => verdict(
            "gp-selector",
            s.error_code == u64::from(BAD_SELECTOR.raw()),
            format_args!("error {:#x}", s.error_code),
        ),
        None => verdict("gp-selector", false, format_args!("no #GP seen")),
    }
}

/// How many interrupt windows `nested-tick` opens before it gives up on the PIT.
const TICK_WINDOWS: u32 = 100;

/// `nested-tick`: a timer tick that interrupts nucleus code (here: a window with interrupts
/// on, standing in for a CPU model that does not mask them, issue 14) must come back to it.
/// Before the fix the tick found no current server, took the nucleus for idle, and switched
/// to the idle loop: this test never printed its verdict and boot stopped.
fn nested_tick() {
    crate::cpu::apic_timer::start_preemption();
    let before = crate::timer::ticks();
    println!("selftest: nested-tick: taking a timer tick in nucleus code");
    let mut windows = 0;
    while crate::timer::ticks() == before && windows < TICK_WINDOWS {
        // SAFETY: CPL 0 with the dispatcher installed; the only interrupt is the tick (the
        // local APIC timer's, or the PIT's), whose handler acknowledges it and returns here
        // (dispatch.rs).
        unsafe { selftest_interrupt_window() };
        windows += 1;
    }
    let taken = crate::timer::ticks() - before;
    verdict(
        "nested-tick",
        taken > 0,
        format_args!("{taken} tick(s) in {windows} window(s), resumed in the nucleus"),
    );
}

/// Formats as `[`, a breakpoint, `]`: an event in the middle of a console write.
struct BreakpointInside;

impl core::fmt::Display for BreakpointInside {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[")?;
        bsp_x86_64::insn::int3();
        f.write_str("]")
    }
}

/// `console-nested`: the `#BP` report prints while this line holds the console. Before the
/// fix the nested `println!` spun on the console lock forever.
fn console_nested() {
    println!("selftest: console-nested: a breakpoint inside {BreakpointInside} this line");
    verdict(
        "console-nested",
        true,
        format_args!("the nested report printed and the line went on"),
    );
}

/// `early-fault`: faults before the command line is parsed, on the early IDT.
pub fn early_fault() -> ! {
    println!("selftest: early-fault: executing ud2 before the command line is parsed");
    // SAFETY: the probe executes `ud2`; no expectation is armed, so the early IDT reports it
    // as fatal, which is the point.
    unsafe { selftest_ud2() };
    panic!("selftest: early-fault: ud2 returned")
}
