//! What the armed self-test expects, what the dispatcher saw, and the verdicts: the shared
//! bottom of the self-tests (every test module reports here; nothing here calls a test).
use crate::exit::Status;
use bsp_x86_64::frame::Frame;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use ipc::{Event, EventKind};

/// What the armed test expects next, and what the dispatcher saw.
struct Expectation {
    armed: AtomicBool,
    vector: AtomicU32,
    resume: AtomicU64,
    hit: AtomicBool,
    rip: AtomicU64,
    error_code: AtomicU64,
    event_data: AtomicU64,
    frame: AtomicU64,
    cs: AtomicU64,
    rsp: AtomicU64,
    cr2: AtomicU64,
    dr6: AtomicU64,
}

static EXPECT: Expectation = Expectation {
    armed: AtomicBool::new(false),
    vector: AtomicU32::new(0),
    resume: AtomicU64::new(0),
    hit: AtomicBool::new(false),
    rip: AtomicU64::new(0),
    error_code: AtomicU64::new(0),
    event_data: AtomicU64::new(0),
    frame: AtomicU64::new(0),
    cs: AtomicU64::new(0),
    rsp: AtomicU64::new(0),
    cr2: AtomicU64::new(0),
    dr6: AtomicU64::new(0),
};

/// The `#DF` a terminal self-test provokes, and how its dump proves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExpectedDoubleFault {
    None = 0,
    /// `df-recursion`: a stack overflow.
    Recursion = 1,
    /// `fred-sl1-df` / `fred-sl2-df`: a `#PF` configured for SL1 / SL2 in STKLVLS, whose
    /// delivery faults in the guard page RSP1 / RSP2 point at.
    StackLevel1 = 2,
    StackLevel2 = 3,
}

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// An address nothing maps in the nucleus' address space (the low half is empty).
pub const UNMAPPED_ADDRESS: u64 = 0x0000_0000_dead_b000;

pub(crate) fn arm(vector: u8, resume: u64) {
    EXPECT.hit.store(false, Ordering::Relaxed);
    EXPECT.vector.store(u32::from(vector), Ordering::Relaxed);
    EXPECT.resume.store(resume, Ordering::Relaxed);
    EXPECT.armed.store(true, Ordering::Release);
}

/// Called by the dispatcher for a nucleus exception: if a self-test expects exactly this
/// vector, records it and resumes at the test's recovery address.
pub fn recover(frame: &mut Frame, event: &Event) -> bool {
    let EventKind::Exception { vector, error_code } = event.kind else {
        return false;
    };
    if !EXPECT.armed.load(Ordering::Acquire)
        || EXPECT.vector.load(Ordering::Relaxed) != u32::from(vector)
    {
        return false;
    }
    EXPECT.armed.store(false, Ordering::Relaxed);
    EXPECT.rip.store(event.rip, Ordering::Relaxed);
    EXPECT.error_code.store(error_code, Ordering::Relaxed);
    EXPECT.event_data.store(event.event_data, Ordering::Relaxed);
    EXPECT
        .frame
        .store(core::ptr::from_ref(frame) as u64, Ordering::Relaxed);
    EXPECT.cs.store(frame.ret.cs.raw(), Ordering::Relaxed);
    EXPECT.rsp.store(frame.ret.rsp, Ordering::Relaxed);
    // SAFETY: CPL 0 (the dispatcher); reading CR2 and DR6 has no side effects.
    let (cr2, dr6) = unsafe { (bsp_x86_64::insn::read_cr2(), bsp_x86_64::insn::read_dr6()) };
    EXPECT.cr2.store(cr2, Ordering::Relaxed);
    EXPECT.dr6.store(dr6, Ordering::Relaxed);
    EXPECT.hit.store(true, Ordering::Release);
    frame.ret.rip = EXPECT.resume.load(Ordering::Relaxed);
    // A single-step test leaves TF set in the interrupted RFLAGS: resume without it.
    frame.ret.rflags &= !RFLAGS_TF;
    true
}

const RFLAGS_TF: u64 = 1 << 8;

/// What the dispatcher recorded for the armed event.
pub(crate) struct Seen {
    pub rip: u64,
    pub error_code: u64,
    pub event_data: u64,
    /// Address of the frame (`&Frame`, the GPRs below the CPU-written return state).
    pub frame: u64,
    pub cs: bsp_x86_64::frame::CsQword,
    /// The interrupted RSP.
    pub rsp: u64,
    /// CR2 and DR6 as the handler read them.
    pub cr2: u64,
    pub dr6: u64,
}

pub(crate) fn seen() -> Option<Seen> {
    EXPECT.armed.store(false, Ordering::Relaxed);
    EXPECT.hit.load(Ordering::Acquire).then(|| Seen {
        rip: EXPECT.rip.load(Ordering::Relaxed),
        error_code: EXPECT.error_code.load(Ordering::Relaxed),
        event_data: EXPECT.event_data.load(Ordering::Relaxed),
        frame: EXPECT.frame.load(Ordering::Relaxed),
        cs: bsp_x86_64::frame::CsQword::from_raw(EXPECT.cs.load(Ordering::Relaxed)),
        rsp: EXPECT.rsp.load(Ordering::Relaxed),
        cr2: EXPECT.cr2.load(Ordering::Relaxed),
        dr6: EXPECT.dr6.load(Ordering::Relaxed),
    })
}

pub(crate) fn verdict(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if ok {
        PASSED.fetch_add(1, Ordering::Relaxed);
        println!("selftest: {name}: passed ({detail})");
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        println!("selftest: {name}: FAILED ({detail})");
    }
}

/// The summary status of a run whose last test decided after boot (`fred-ring3`):
/// 0 none yet, 1 success, 2 failure.
static DEFERRED: AtomicU8 = AtomicU8::new(0);

/// Prints the summary once the deferred test has its verdict.
pub fn deferred_summary() {
    let code = match summary() {
        Status::Success => 1,
        Status::Failure => 2,
    };
    DEFERRED.store(code, Ordering::Release);
}

/// The deferred summary's status, once it was printed.
pub fn deferred() -> Option<Status> {
    match DEFERRED.load(Ordering::Acquire) {
        1 => Some(Status::Success),
        2 => Some(Status::Failure),
        _ => None,
    }
}

pub(crate) fn summary() -> Status {
    let (passed, failed) = (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    );
    println!("selftest: {passed} passed, {failed} failed");
    if failed == 0 {
        Status::Success
    } else {
        Status::Failure
    }
}
