//! [`PerCpu`]: everything that belongs to one CPU, reached through GS (issue 12, issue 20).
//!
//! In ring 0 IA32_GS_BASE points at the CPU's `cpu_info` block (the 64 bytes at the top of
//! its primary stack, `bsp_x86_64::cpu_info`) under both deliveries (`bsp_x86_64::fred`, "GS
//! convention"), and `cpu_info.percpu` points at the CPU's `PerCpu`, so [`current`] is one
//! `mov` from `gs:`. Nothing indexes a global array by a CPU number: a CPU claims its
//! `PerCpu` once, when it is brought up, and finds it through GS from then on.
//!
//! Before the stack block exists the boot CPU's GS base points at a boot-time `cpu_info`
//! ([`boot_cpu`], the first thing `startup` does), so `current` works from the first Rust
//! statement on; [`install`] moves GS to the block's `cpu_info` and programs the SYSCALL
//! MSRs that lead there (or, for SYSENTER and compat-mode SYSCALL, nowhere).
//!
//! One hole remains under IDT delivery: an NMI or `#MC` that interrupts `syscall_entry` before
//! its SWAPGS, or `idt_exit` after its SWAPGS, runs in ring 0 with the user's GS. Their
//! handlers therefore read nothing through GS: NMIs count, and the trace skips every event
//! [`gs_may_be_user`] names. FRED swaps GS atomically with the event, so it has no window.
use crate::racy::RacyCell;
use bsp_x86_64::cpu_info::{CPU_INFO_PERCPU, CpuInfo};
use bsp_x86_64::frame::Frame;
use bsp_x86_64::gdt;
use bsp_x86_64::stack_block::StackBlock;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Bytes of a CPU's trace buffer: several hundred records between two drains.
const TRACE_BUFFER_BYTES: usize = 16 * 1024;

/// A CPU's trace buffer: the `trace` module's `defmt` logger fills it, COM2 drains it.
pub type TraceBuffer = ipc::trace::TraceBuffer<TRACE_BUFFER_BYTES>;

/// How many CPUs the nucleus brings up at most (the size of the `PerCpu` pool).
pub const MAX_CPUS: usize = crate::layout::MAX_CPUS;

/// Words of a CPU's idle stack. A tick that interrupts `hlt` runs its whole handler here (an
/// IDT gate or FRED stays on the current stack in ring 0), a restart whose backoff is over
/// included: dispatch, lifecycle::tick, lifecycle::load, loader::load and the image checks
/// take over 5 KiB, and with 4 KiB the stack ran into the statics below it in .bss
/// (FRED_ON turned true: LKGS, #UD, FATAL — seen in hostile_server's always-crashing test).
pub const IDLE_STACK_WORDS: usize = 2048;

/// One CPU's own data. Only that CPU writes it once it is online (with interrupts off);
/// before, the CPU that brings it up does.
pub struct PerCpu {
    /// 0 for the boot CPU, then in bring-up order.
    index: AtomicU32,
    /// Local APIC id (the boot CPU's is read at AP bring-up).
    apic_id: AtomicU32,
    /// [`Bringup`] as a byte: who decided first, the AP (online) or the boot CPU (gave up).
    bringup: AtomicU8,
    /// Set by an AP once its online line is printed.
    announced: AtomicBool,
    /// `selftest=cpu-df`: the next `#DF` on this CPU is the probe's (`bringup`).
    double_fault_expected: AtomicBool,
    /// Where the NMI frame lies that a kexec shootdown parked this CPU on (set by the CPU
    /// itself, `handoff::shootdown`); 0 while it runs.
    parked_at: AtomicU64,
    /// Base of the CPU's stack block; 0 until it is mapped.
    block_base: AtomicU64,
    /// True once the CPU delivers events through FRED.
    fred_on: AtomicBool,
    /// The root CR3 holds (0 until the first switch).
    loaded_root: AtomicU64,
    /// GDT and TSS (`tables`).
    pub(super) tables: RacyCell<super::tables::CpuTables>,
    pub(super) first_entered: AtomicBool,
    /// Set by the one switch from the boot stack to the block's primary stack (`enter`).
    pub(super) switched: AtomicBool,
    /// The stack the idle loop runs on, its frame at the top (`enter::idle_exit`).
    pub(super) idle_stack: RacyCell<[u64; IDLE_STACK_WORDS]>,
    /// The CPU's trace buffer (`trace`).
    trace: TraceBuffer,
    /// What this CPU holds in FS/GS for ring 3 (`enter::load_user_segments`).
    pub(super) user_segments: RacyCell<super::user_segments::UserSegments>,
    /// The thread (slot number) whose DS/ES/FS selectors this CPU holds
    /// (`enter::selectors_owner`).
    pub(super) selectors_of: RacyCell<Option<usize>>,
    /// The CPU's local APIC once enabled (on this CPU; used by this CPU only). Uninitialised
    /// until [`claim`] writes `None` (`Option`'s `None` is not zero bits: the pool would
    /// leave `.bss`).
    apic: RacyCell<MaybeUninit<Option<super::apic::LocalApic>>>,
    /// Local APIC timer ticks and reschedule IPIs taken on this CPU.
    ticks: AtomicU64,
    reschedules: AtomicU64,
    /// Some thread is placed on this CPU (`startup`): its ticks and reschedules schedule.
    runs_threads: AtomicBool,
    /// TLB shootdown handshake: the last ticket another CPU asked for, the last one done.
    flush_requested: AtomicU64,
    flush_completed: AtomicU64,
}

impl PerCpu {
    /// Zero bits only (checked by a boot test of the nucleus ELF), so [`POOL`] lies in
    /// `.bss` and takes no room in the image's file; what is not zero at first is set by
    /// [`PerCpu::init`] when the `PerCpu` is claimed.
    const fn zeroed() -> Self {
        Self {
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            bringup: AtomicU8::new(Bringup::Starting as u8),
            announced: AtomicBool::new(false),
            double_fault_expected: AtomicBool::new(false),
            parked_at: AtomicU64::new(0),
            block_base: AtomicU64::new(0),
            fred_on: AtomicBool::new(false),
            loaded_root: AtomicU64::new(0),
            tables: RacyCell::new(super::tables::CpuTables::zeroed()),
            first_entered: AtomicBool::new(false),
            switched: AtomicBool::new(false),
            idle_stack: RacyCell::new([0; IDLE_STACK_WORDS]),
            trace: TraceBuffer::new(),
            user_segments: RacyCell::new(super::user_segments::UserSegments::ZERO),
            selectors_of: RacyCell::new(None),
            apic: RacyCell::new(MaybeUninit::uninit()),
            ticks: AtomicU64::new(0),
            reschedules: AtomicU64::new(0),
            runs_threads: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flush_completed: AtomicU64::new(0),
        }
    }

    /// What [`PerCpu::zeroed`] leaves out, written where it lies (the tables are 68 KiB).
    /// Once, by [`claim`], before anyone else can reach `self`.
    fn init(&self) {
        super::tables::init(&self.tables);
        // SAFETY: `claim` just handed `self` to its caller alone: no other reference to
        // these cells exists yet.
        unsafe {
            *self.user_segments.get() = super::user_segments::UserSegments::UNKNOWN;
            *self.selectors_of.get() = None;
            (*self.apic.get()).write(None);
        }
    }

    /// Keeps this CPU's enabled local APIC (on this CPU, interrupts off).
    pub fn set_apic(&self, apic: super::apic::LocalApic) {
        // SAFETY: called on the CPU that owns `self`, with interrupts off, before any
        // `with_apic` of it (module comment of `racy`); `claim` initialised the cell.
        unsafe { *(*self.apic.get()).assume_init_mut() = Some(apic) };
    }

    /// Runs `f` on this CPU's local APIC; `None` if it has none enabled. Only for the
    /// current CPU's `PerCpu` (`current()`), never from NMI context.
    pub fn with_apic<R>(&self, f: impl FnOnce(&mut super::apic::LocalApic) -> R) -> Option<R> {
        if !core::ptr::eq(self, current()) {
            return None;
        }
        // SAFETY: `self` is this CPU's own `PerCpu` (checked above) and the nucleus runs with
        // interrupts off, so no other reference to the cell is live: the interrupt handlers
        // that use it (`ipi::local_interrupt`) do not nest inside a caller. `current()` is a
        // claimed `PerCpu`, whose cell `claim` initialised.
        unsafe { (*self.apic.get()).assume_init_mut().as_mut().map(f) }
    }

    /// Some thread is placed on this CPU from now on.
    pub fn set_runs_threads(&self) {
        self.runs_threads.store(true, Ordering::Release);
    }

    pub fn runs_threads(&self) -> bool {
        self.runs_threads.load(Ordering::Acquire)
    }

    pub fn count_tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Local APIC timer ticks this CPU took.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    pub fn count_reschedule(&self) {
        self.reschedules.fetch_add(1, Ordering::Relaxed);
    }

    /// Reschedule IPIs this CPU took.
    pub fn reschedules(&self) -> u64 {
        self.reschedules.load(Ordering::Relaxed)
    }

    /// Another CPU asks this one to flush its TLB: the ticket to wait for.
    pub fn request_flush(&self) -> u64 {
        self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The newest flush asked for and not done yet.
    pub fn flush_asked(&self) -> Option<u64> {
        let asked = self.flush_requested.load(Ordering::Acquire);
        (asked > self.flush_completed.load(Ordering::Acquire)).then_some(asked)
    }

    pub fn flush_done(&self, ticket: u64) {
        self.flush_completed.fetch_max(ticket, Ordering::AcqRel);
    }

    /// Whether the flush of `ticket` (or a later one) is done.
    pub fn flushed(&self, ticket: u64) -> bool {
        self.flush_completed.load(Ordering::Acquire) >= ticket
    }

    /// This CPU's number: 0 is the boot CPU.
    pub fn index(&self) -> u32 {
        self.index.load(Ordering::Relaxed)
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Relaxed);
    }

    /// The AP's claim to be online; false if the boot CPU gave up on it first (it then
    /// only parks).
    pub fn claim_online(&self) -> bool {
        self.bringup_step(Bringup::Online)
    }

    /// The boot CPU gives up waiting; false if the AP claimed to be online first.
    pub fn abandon(&self) -> bool {
        self.bringup_step(Bringup::Abandoned)
    }

    fn bringup_step(&self, to: Bringup) -> bool {
        self.bringup
            .compare_exchange(
                Bringup::Starting as u8,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub fn is_online(&self) -> bool {
        self.bringup.load(Ordering::Acquire) == Bringup::Online as u8
    }

    pub fn expect_double_fault(&self) {
        self.double_fault_expected.store(true, Ordering::Release);
    }

    pub fn double_fault_expected(&self) -> bool {
        self.double_fault_expected.load(Ordering::Acquire)
    }

    pub fn set_announced(&self) {
        self.announced.store(true, Ordering::Release);
    }

    pub fn is_announced(&self) -> bool {
        self.announced.load(Ordering::Acquire)
    }

    /// The CPU's stack block, once mapped.
    pub fn block(&self) -> Option<StackBlock> {
        let base = self.block_base.load(Ordering::Relaxed);
        (base != 0).then(|| StackBlock::new(base).ok()).flatten()
    }

    pub fn set_block(&self, block: &StackBlock) {
        self.block_base.store(block.base(), Ordering::Relaxed);
    }

    pub fn fred_enabled(&self) -> bool {
        self.fred_on.load(Ordering::Relaxed)
    }

    pub(super) fn set_fred_enabled(&self) {
        self.fred_on.store(true, Ordering::Relaxed);
    }

    /// The kexec hand-off turned FRED off on this CPU.
    pub fn set_fred_disabled(&self) {
        self.fred_on.store(false, Ordering::Relaxed);
    }

    /// The CPU says it is parked for a kexec, on the NMI frame at `frame` (from its NMI
    /// handler).
    pub fn set_parked(&self, frame: u64) {
        self.parked_at.store(frame.max(1), Ordering::Release);
    }

    /// The NMI frame the CPU parked on, once it is parked.
    pub fn parked_at(&self) -> Option<u64> {
        Some(self.parked_at.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    /// The root CR3 holds (0 until the first switch).
    pub fn loaded_root(&self) -> u64 {
        self.loaded_root.load(Ordering::Relaxed)
    }

    pub fn set_loaded_root(&self, root: u64) {
        self.loaded_root.store(root, Ordering::Relaxed);
    }

    /// Loads this CPU's final GDT and TSS (on this CPU, once).
    pub fn install_gdt(&self) {
        super::tables::install_gdt(&self.tables);
    }

    /// Points this CPU's TSS.RSP0 and IST slots into its stack block.
    pub fn use_stack_block(&self, block: &StackBlock) {
        super::tables::use_stack_block(&self.tables, block);
    }

    pub fn trace(&self) -> &TraceBuffer {
        &self.trace
    }
}

/// Where an AP's bring-up stands.
#[repr(u8)]
enum Bringup {
    Starting,
    Online,
    Abandoned,
}

/// The pool the CPUs claim their `PerCpu` from, in bring-up order. In `.bss`
/// ([`PerCpu::zeroed`]): GRUB reads every byte of `.data` from the boot medium.
static POOL: [PerCpu; MAX_CPUS] = [const { PerCpu::zeroed() }; MAX_CPUS];
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// Hands out the next unused `PerCpu` (numbered in claim order), or `None` if all are taken.
pub fn claim() -> Option<&'static PerCpu> {
    let index = CLAIMED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CPUS).then_some(n + 1)
        })
        .ok()?;
    let cpu = &POOL[index];
    cpu.init();
    cpu.index.store(index as u32, Ordering::Relaxed);
    Some(cpu)
}

/// Every `PerCpu` handed out so far, in claim order (the boot CPU first).
pub fn claimed() -> impl Iterator<Item = &'static PerCpu> {
    POOL.iter().take(CLAIMED.load(Ordering::Acquire))
}

/// Every online CPU other than `me` (the boot CPU counts as online), in CPU order: for a
/// sender picking targets.
pub fn online_others(me: &PerCpu) -> impl Iterator<Item = &'static PerCpu> + '_ {
    claimed().filter(move |cpu| (cpu.index() == 0 || cpu.is_online()) && !core::ptr::eq(*cpu, me))
}

/// The boot CPU's `cpu_info` until its stack block exists.
static BOOT_CPU_INFO: RacyCell<CpuInfo> = RacyCell::new(CpuInfo {
    kernel_rsp: 0,
    scratch_rsp: 0,
    cpu: 0,
    percpu: 0,
    save_area: 0,
    reserved: [0; 3],
});

/// This CPU's `PerCpu`.
#[inline(always)]
pub fn current() -> &'static PerCpu {
    let percpu: *const PerCpu;
    // SAFETY: in ring 0 GS_BASE is this CPU's `cpu_info` (module comment: set before the
    // first Rust statement that can reach here, kept by both deliveries), whose `percpu`
    // word is written once, before GS points at it, and never changes. Reading it has no
    // side effects.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[{off}]",
            out(reg) percpu,
            off = const CPU_INFO_PERCPU,
            options(nostack, preserves_flags, readonly, pure),
        );
    }
    // SAFETY: the word holds the address of a `POOL` entry (a static) — see above.
    unsafe { &*percpu }
}

/// Whether this event's handler may run with the user's GS (module comment): an IDT-delivered
/// `#DB`, NMI or `#MC` that interrupted ring 0.
pub fn gs_may_be_user(frame: &Frame, delivery: ipc::dump::Delivery) -> bool {
    delivery == ipc::dump::Delivery::Idt
        && frame.ret.cs.selector().rpl() == 0
        && matches!(frame.ret.ss.vector(), 1 | 2 | 18)
}

/// The boot CPU's first step: claims its `PerCpu` and points GS at a boot-time `cpu_info`
/// leading to it, so [`current`] works from here on.
pub fn boot_cpu() {
    let Some(cpu) = claim() else {
        // Unreachable: the pool is not empty and the boot CPU claims first.
        super::halt::halt_forever();
    };
    // SAFETY: the boot CPU's first statement: nothing else reads the boot `cpu_info` yet.
    let info = unsafe { &mut *BOOT_CPU_INFO.get() };
    info.percpu = core::ptr::from_ref(cpu) as u64;
    let base = bsp_x86_64::msr::GsBase::new(core::ptr::from_ref(info) as u64)
        .unwrap_or_else(|_| super::halt::halt_forever());
    // SAFETY: CPL 0, interrupts off; the nucleus has not read GS yet, and the new base is a
    // static `cpu_info` with a valid `percpu` word.
    unsafe { bsp_x86_64::msr::write(base) };
}

unsafe extern "C" {
    /// The IDT path's SYSCALL entry (`bsp_x86_64::entry_stubs!`).
    static syscall_entry: u8;
    /// Its compat-mode twin, which turns the SYSCALL into the caller's #UD.
    static syscall_compat_entry: u8;
}

/// Fills the `cpu_info` block at the top of `cpu`'s primary stack, points GS_BASE at it and
/// programs SYSCALL (STAR, LSTAR, CSTAR, FMASK, EFER.SCE) and parks SYSENTER. Under FRED,
/// LSTAR, CSTAR, FMASK and the SYSENTER MSRs are unused but harmless, and EFER.SCE still
/// gates SYSCALL (fred-facts.md §1.3 point 7). Runs on the CPU `cpu` belongs to.
pub fn install(cpu: &'static PerCpu) {
    use bsp_x86_64::msr::{
        self, Cstar, Fmask, GsBase, KernelGsBase, Lstar, Star, SysenterCs, SysenterEip, SysenterEsp,
    };
    use bsp_x86_64::regs::Efer;
    let Some(block) = cpu.block() else {
        println!("cpu {}: no stack block; GS stays at boot", cpu.index());
        return;
    };
    let info = CpuInfo {
        kernel_rsp: block.primary_top(),
        scratch_rsp: 0,
        cpu: u64::from(cpu.index()),
        percpu: core::ptr::from_ref(cpu) as u64,
        save_area: 0,
        reserved: [0; 3],
    };
    // SAFETY: `cpu_info()` is the 64-byte block at the top of the mapped primary stack page,
    // reserved for it (the stack starts below it).
    unsafe { core::ptr::write(block.cpu_info() as *mut CpuInfo, info) };
    let entry = core::ptr::addr_of!(syscall_entry) as u64;
    let compat_entry = core::ptr::addr_of!(syscall_compat_entry) as u64;
    // SAFETY: each write runs at CPL 0 during boot with interrupts off. STAR names the GDT's
    // selectors; LSTAR and CSTAR are mapped syscall stubs (canonical, kernel half); FMASK
    // clears IF, TF, DF, AC and NT so the stubs run like an interrupt gate; SYSENTER_CS = 0
    // makes SYSENTER fault (#GP) in whoever executes it; GS_BASE moves to the block's
    // `cpu_info`, which leads to the same `PerCpu` as before; KERNEL_GS_BASE is the ring-3
    // half the stubs swap; EFER keeps LME/LMA/NXE and adds SCE.
    unsafe {
        msr::write(Star::new(gdt::KERNEL_CS, gdt::USER_CS32));
        msr::write(Lstar::new(entry).unwrap_or_else(|_| panic!("syscall stub not canonical")));
        msr::write(
            Cstar::new(compat_entry).unwrap_or_else(|_| panic!("syscall stub not canonical")),
        );
        msr::write(SysenterCs::DISABLED);
        msr::write(SysenterEsp::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(SysenterEip::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(Fmask::nucleus());
        msr::write(
            GsBase::new(block.cpu_info()).unwrap_or_else(|_| panic!("cpu_info not canonical")),
        );
        msr::write(KernelGsBase::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(msr::read::<Efer>() | Efer::SCE);
    }
}
