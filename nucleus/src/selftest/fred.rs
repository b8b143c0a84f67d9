//! The FRED-only self-tests (issue 14 point 3): what only a FRED CPU can show.
//!
//! `fred-nested` (a ring-0 event comes in at the entry +256, its frame right below the
//! interrupted RSP), `fred-event-data` (`#PF` event data is CR2, `#DB`'s is DR6 with FRED's
//! positive polarity), `fred-erets` (an event moved to SL3 through STKLVLS returns with ERETS
//! to stack level 0), `fred-ring3` (a server's first event comes in at the base entry on SL0,
//! with the user GS that LKGS loaded kept apart from the nucleus' GS), and the terminal
//! `fred-sl1-df` / `fred-sl2-df` (a `#PF` moved to SL1 / SL2 faults on the guard page RSP1 /
//! RSP2 point at and escalates to `#DF` on SL3: the design note's guard-page pointing,
//! proven). Under the IDT each says it needs FRED and is skipped (neither passed nor failed).
use super::expect::{ExpectedDoubleFault, UNMAPPED_ADDRESS, arm, seen, verdict};
use bsp_x86_64::cmdline::SelfTests;
use bsp_x86_64::entry::DR6_POLARITY_FLIP;
use bsp_x86_64::frame::{CsQword, Frame};
use bsp_x86_64::fred::{FredStackLevels, NUCLEUS_REDZONE_LINES, StackLevel};
use bsp_x86_64::idt::Vector;
use bsp_x86_64::stack_block::StackPage;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use ipc::dump::{Delivery, RegisterDump};

/// Events that came in through the ring-0 FRED entry (+256), counted by `dispatch` for the
/// FRED self-tests.
pub static FRED_RING0_ENTRIES: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    ".pushsection .text.selftest, \"ax\"",
    // Sets TF: the instruction after POPFQ (the NOP) traps; the #DB RIP is the resume label.
    ".global selftest_single_step, selftest_single_step_resume",
    "selftest_single_step: pushfq",
    "or qword ptr [rsp], 0x100",
    "popfq",
    "nop",
    "selftest_single_step_resume: ret",
    ".popsection",
);

unsafe extern "C" {
    fn selftest_single_step();
    static selftest_single_step_resume: u8;
    fn selftest_ud2();
    static selftest_ud2_resume: u8;
    fn selftest_read(addr: u64) -> u64;
    static selftest_read_resume: u8;
}

/// The resumable FRED tests, in the order `selftest::run` runs them (after the others).
pub const RESUMABLE: [(SelfTests, fn()); 4] = [
    (SelfTests::FRED_NESTED, nested),
    (SelfTests::FRED_EVENT_DATA, event_data),
    (SelfTests::FRED_ERETS, erets),
    (SelfTests::FRED_RING3, ring3_arm),
];

/// DR6.BS: the single-step bit, set in the event data of a single-step `#DB`.
const DR6_BS: u64 = 1 << 14;

fn address_of(symbol: &u8) -> u64 {
    core::ptr::from_ref(symbol) as u64
}

/// False (after saying so) when events do not come through FRED.
fn needs_fred(name: &str) -> bool {
    let on = crate::cpu::fred::enabled();
    if !on {
        println!("selftest: {name}: skipped (needs FRED delivery; this boot uses the IDT)");
    }
    on
}

/// Writes IA32_FRED_STKLVLS.
fn set_stack_levels(levels: FredStackLevels) {
    // SAFETY: CPL 0, interrupts off, FRED on (callers check). Only the stack level of the
    // vector under test changes, for the duration of one probe; every level names a stack the
    // plan set up (SL3 mapped; SL1/SL2 guard pages, which is the point of those tests).
    unsafe { bsp_x86_64::msr::write(levels) };
}

fn with_level(vector: Vector, level: StackLevel) -> FredStackLevels {
    FredStackLevels::nucleus()
        .with(vector.raw(), level)
        .unwrap_or_else(|_| FredStackLevels::nucleus())
}

fn page_of(address: u64) -> Option<StackPage> {
    crate::cpu::stacks::classify(address)
}

/// The return state FRED wrote for `frame` starts 64 bytes below this address.
fn return_state_top(frame: u64) -> u64 {
    frame + core::mem::offset_of!(Frame, ret) as u64 + 64
}

/// `fred-nested`: `ud2` in the nucleus is delivered through the ring-0 entry, on the current
/// stack: its return state ends where the interrupted RSP, less the red zone, aligned down to
/// 64 bytes, is, and the interrupted stack level is 0.
fn nested() {
    const NAME: &str = "fred-nested";
    if !needs_fred(NAME) {
        return;
    }
    let before = FRED_RING0_ENTRIES.load(Ordering::Relaxed);
    // SAFETY: linker symbol; only its address is used.
    arm(
        Vector::UD.raw(),
        address_of(unsafe { &selftest_ud2_resume }),
    );
    println!("selftest: {NAME}: ud2 in ring 0");
    // SAFETY: the probe executes `ud2`; the armed expectation resumes at its `ret`.
    unsafe { selftest_ud2() };
    let entries = FRED_RING0_ENTRIES.load(Ordering::Relaxed) - before;
    let Some(s) = seen() else {
        return verdict(NAME, false, format_args!("no #UD seen"));
    };
    let redzone = u64::from(NUCLEUS_REDZONE_LINES) * 64;
    let expected_top = (s.rsp - redzone) & !63;
    let top = return_state_top(s.frame);
    verdict(
        NAME,
        entries == 1
            && top == expected_top
            && s.cs.stack_level() == StackLevel::SL0
            && page_of(s.frame) == page_of(s.rsp),
        format_args!(
            "{entries} event(s) at the ring-0 entry (+256); return state ends at {top:#x}, \
             interrupted RSP {:#x} aligned down is {expected_top:#x}; interrupted {}",
            s.rsp,
            s.cs.stack_level()
        ),
    );
}

/// `fred-event-data`: a `#PF` carries CR2 as its event data; a single-step `#DB` carries DR6
/// with BS set and none of the bits that read as 1 in DR6 (FRED's positive polarity).
fn event_data() {
    const NAME: &str = "fred-event-data";
    if !needs_fred(NAME) {
        return;
    }
    // SAFETY: linker symbol; only its address is used.
    arm(
        Vector::PF.raw(),
        address_of(unsafe { &selftest_read_resume }),
    );
    // SAFETY: the read faults (unmapped); the expectation resumes at its `ret`.
    unsafe { selftest_read(UNMAPPED_ADDRESS) };
    let pf = seen();
    // SAFETY: linker symbol; only its address is used.
    arm(
        Vector::DB.raw(),
        address_of(unsafe { &selftest_single_step_resume }),
    );
    // SAFETY: the probe single-steps one `nop`; the expectation resumes after it with TF off.
    unsafe { selftest_single_step() };
    let db = seen();
    match (pf, db) {
        (Some(pf), Some(db)) => verdict(
            NAME,
            pf.event_data == pf.cr2
                && pf.event_data == UNMAPPED_ADDRESS
                && db.event_data & DR6_BS != 0
                && db.event_data & DR6_POLARITY_FLIP == 0,
            format_args!(
                "#PF data {:#x}, CR2 {:#x}; #DB data {:#x} (DR6 reads {:#x})",
                pf.event_data, pf.cr2, db.event_data, db.dr6
            ),
        ),
        (pf, db) => verdict(
            NAME,
            false,
            format_args!("#PF seen: {}, #DB seen: {}", pf.is_some(), db.is_some()),
        ),
    }
}

/// The `#BP` the `fred-erets` test moves to SL3: where its frame was, what it interrupted.
static BREAKPOINT_ARMED: AtomicBool = AtomicBool::new(false);
static BREAKPOINT_FRAME: AtomicU64 = AtomicU64::new(0);
static BREAKPOINT_CS: AtomicU64 = AtomicU64::new(0);

/// Called by the dispatcher for every `#BP` in the nucleus.
pub fn breakpoint(frame: &Frame) {
    if BREAKPOINT_ARMED.swap(false, Ordering::Relaxed) {
        BREAKPOINT_FRAME.store(core::ptr::from_ref(frame) as u64, Ordering::Relaxed);
        BREAKPOINT_CS.store(frame.ret.cs.raw(), Ordering::Relaxed);
    }
}

/// `fred-erets`: with `#BP` on SL3, `int3` runs its handler on the `#DF` page (SL3); the
/// handler's ERETS must bring the CPU back to SL0, which the next event's frame shows (its
/// interrupted stack level is 0, not 3).
fn erets() {
    const NAME: &str = "fred-erets";
    if !needs_fred(NAME) {
        return;
    }
    BREAKPOINT_FRAME.store(0, Ordering::Relaxed);
    BREAKPOINT_ARMED.store(true, Ordering::Relaxed);
    set_stack_levels(with_level(Vector::BP, StackLevel::SL3));
    println!("selftest: {NAME}: int3 with #BP on SL3");
    bsp_x86_64::insn::int3();
    set_stack_levels(FredStackLevels::nucleus());
    let bp_frame = BREAKPOINT_FRAME.load(Ordering::Relaxed);
    let bp_cs = CsQword::from_raw(BREAKPOINT_CS.load(Ordering::Relaxed));
    // SAFETY: linker symbol; only its address is used.
    arm(
        Vector::UD.raw(),
        address_of(unsafe { &selftest_ud2_resume }),
    );
    // SAFETY: the probe executes `ud2`; the armed expectation resumes at its `ret`.
    unsafe { selftest_ud2() };
    let Some(after) = seen() else {
        return verdict(NAME, false, format_args!("no #UD after the SL3 #BP"));
    };
    verdict(
        NAME,
        bp_frame != 0
            && page_of(bp_frame) == Some(StackPage::Df)
            && bp_cs.stack_level() == StackLevel::SL0
            && after.cs.stack_level() == StackLevel::SL0
            && page_of(after.frame) == Some(StackPage::Primary),
        format_args!(
            "#BP frame at {bp_frame:#x} ({}), it interrupted {}; the next event interrupted {}",
            page_of(bp_frame).map_or("not on the block", page_name),
            bp_cs.stack_level(),
            after.cs.stack_level()
        ),
    );
}

fn page_name(page: StackPage) -> &'static str {
    match page {
        StackPage::Df => "#DF page, SL3",
        StackPage::Primary => "primary stack, SL0",
        _ => "another stack page",
    }
}

/// `fred-ring3`: armed here, decided by the first event from a server ([`ring3_event`]).
pub static RING3_ARMED: AtomicBool = AtomicBool::new(false);
static RING3_DONE: AtomicBool = AtomicBool::new(false);

fn ring3_arm() {
    const NAME: &str = "fred-ring3";
    if !needs_fred(NAME) {
        return;
    }
    println!("selftest: {NAME}: waiting for the first event from a server");
    RING3_ARMED.store(true, Ordering::Release);
}

/// Whether `fred-ring3` still waits (the summary then waits for it).
pub fn ring3_pending() -> bool {
    RING3_ARMED.load(Ordering::Acquire) && !RING3_DONE.load(Ordering::Acquire)
}

/// `fred-ring3` fails: `nucleus: ready` came before any event from a server.
pub fn ring3_gave_up() {
    if RING3_ARMED.swap(false, Ordering::AcqRel) {
        verdict(
            "fred-ring3",
            false,
            format_args!("no event from a server before ready"),
        );
        RING3_DONE.store(true, Ordering::Release);
        super::expect::deferred_summary();
    }
}

/// GS's selector.
fn gs_selector() -> u16 {
    let gs: u16;
    // SAFETY: reads a segment register into a general register; no memory, no flags.
    unsafe {
        core::arch::asm!("mov {0:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags))
    };
    gs
}

/// Called by the ring-3 FRED entry while `fred-ring3` is armed: the first server event came
/// in at the base entry (this hook runs only there), its return state ends at RSP0 (the
/// primary stack's top: SL0) and the stub copied it into the thread's save area, and GS is the nucleus' (GS_BASE = `cpu_info`) while the user's
/// GS that LKGS loaded waits in IA32_KERNEL_GS_BASE (base 0, null selector: servers have no
/// TLS) for ERETU to swap back.
pub fn ring3_event(frame: &Frame) {
    if !RING3_ARMED.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some(block) = crate::cpu::stacks::block() else {
        return;
    };
    // The ring-3 stub copied the return state into the thread's save area and left the CPU's
    // own, which must end at RSP0, in place (it called the dispatcher right below it).
    let top = block.primary_top();
    // SAFETY: the 64 bytes below the primary stack's top are mapped (this CPU's stack) and
    // hold what the CPU wrote for this event; the dispatcher's stack starts below them.
    let written = unsafe { ((top - 64) as *const bsp_x86_64::frame::FredState).read() };
    let at_rsp0 = written == frame.ret;
    // SAFETY: CPL 0 (the dispatcher); reading the GS base MSRs has no side effects.
    let (gs_base, kernel_gs_base) = unsafe {
        (
            bsp_x86_64::insn::read_gs_base(),
            bsp_x86_64::insn::read_kernel_gs_base(),
        )
    };
    let selector = gs_selector();
    verdict(
        "fred-ring3",
        at_rsp0
            && frame.ret.cs.selector().rpl() == 3
            && frame.ret.cs.stack_level() == StackLevel::SL0
            && gs_base == block.cpu_info()
            && kernel_gs_base == 0
            && selector == 0,
        format_args!(
            "event from ring 3 at the base entry, return state ends at {:#x} (RSP0 {top:#x}), \
             {} the save area; GS base {gs_base:#x} (cpu_info {:#x}), user GS \
             {selector:#x}:{kernel_gs_base:#x}",
            if at_rsp0 { top } else { 0 },
            if at_rsp0 {
                "copied into"
            } else {
                "not copied into"
            },
            block.cpu_info()
        ),
    );
    RING3_DONE.store(true, Ordering::Release);
    super::expect::deferred_summary();
}

/// `fred-sl1-df` / `fred-sl2-df`: moves `#PF` to SL1 or SL2 and reads an unmapped address.
/// Returns only without FRED (skipped); otherwise the `#DF` handler ends the boot through
/// [`stack_level_double_fault_seen`].
pub fn stack_level_double_fault(which: ExpectedDoubleFault) {
    let (name, level) = match which {
        ExpectedDoubleFault::StackLevel1 => ("fred-sl1-df", StackLevel::SL1),
        _ => ("fred-sl2-df", StackLevel::SL2),
    };
    if !needs_fred(name) {
        return;
    }
    println!(
        "selftest: {name}: #PF on {level}, whose RSP{} points at a guard page",
        level.get()
    );
    set_stack_levels(with_level(Vector::PF, level));
    // SAFETY: the read faults; its delivery on the guard-page stack faults again, which is
    // a #DF (on SL3): the boot ends there, as the test means it to.
    unsafe { selftest_read(UNMAPPED_ADDRESS) };
    set_stack_levels(FredStackLevels::nucleus());
    verdict(name, false, format_args!("the read returned: no #DF"));
}

/// The `#DF` of `fred-sl<level>-df`: on SL3 (the `#DF` page), through FRED, and the fault
/// that escalated was a write in the guard page under RSP1 (page 5) or RSP2 (page 0).
pub fn stack_level_double_fault_seen(level: u8, dump: &RegisterDump) {
    let name = if level == 1 {
        "fred-sl1-df"
    } else {
        "fred-sl2-df"
    };
    let guard = if level == 1 {
        StackPage::PrimaryShadow
    } else {
        StackPage::IstShadowStacks
    };
    let fault_page = page_of(dump.cr2);
    verdict(
        name,
        dump.delivery == Delivery::Fred
            && dump.stack_level == 3
            && fault_page == Some(guard)
            && dump.cs & 3 == 0,
        format_args!(
            "#DF on stack level {} after a fault at CR2 {:#x} in the {} page",
            dump.stack_level,
            dump.cr2,
            PageName(fault_page)
        ),
    );
}

/// A stack page's name, or `no stack`.
struct PageName(Option<StackPage>);

impl core::fmt::Display for PageName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(page) => write!(f, "{page}"),
            None => f.write_str("no stack"),
        }
    }
}
