//! This CPU's local APIC, in x2APIC mode (MSRs) where CPUID has it and xAPIC mode (MMIO at
//! IA32_APIC_BASE, mapped uncached by `mm::memory::map_mmio`) otherwise. The `x86` crate
//! drives both (`ApicControl`: INIT, STARTUP, IPIs); only what it leaves out is written here:
//! the spurious vector, LINT0 as the PIC's virtual wire after the switch to x2APIC mode, the
//! APIC id from CPUID and the timer's four registers (the crate has only TSC-deadline mode).
use bsp_x86_64::insn;
use x86::apic::x2apic::X2APIC;
use x86::apic::xapic::XAPIC;
use x86::apic::{
    ApicControl, ApicId, DeliveryMode, DeliveryStatus, DestinationMode, DestinationShorthand, Icr,
    Level, TriggerMode,
};

/// The APIC's spurious-interrupt vector (no EOI owed; the dispatcher reports it).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// SVR: APIC software-enabled, spurious vector.
const SVR_ENABLE: u32 = 1 << 8;
/// LINT0 as the firmware's virtual wire: ExtINT delivery, unmasked (the PIC's IRQs).
const LINT0_EXTINT: u32 = 0b111 << 8;
const XAPIC_SVR: usize = 0xf0;
const XAPIC_LVT_LINT0: usize = 0x350;
const X2APIC_SIVR: u32 = 0x80f;
const X2APIC_LVT_LINT0: u32 = 0x835;
const APIC_BASE_MSR: u32 = 0x1b;
/// The timer's registers: (xAPIC offset, x2APIC MSR).
const LVT_TIMER: (usize, u32) = (0x320, 0x832);
const TIMER_INITIAL: (usize, u32) = (0x380, 0x838);
const TIMER_CURRENT: (usize, u32) = (0x390, 0x839);
const TIMER_DIVIDE: (usize, u32) = (0x3e0, 0x83e);
/// Divide configuration 0b0011: the timer counts at the APIC clock / 16.
const DIVIDE_BY_16: u32 = 0b0011;
/// LVT bits: masked, periodic.
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

/// Where an IPI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The CPU with this APIC id.
    Cpu(u32),
    /// Every CPU but the sender (the ICR's shorthand: no list of ids to get wrong).
    AllButSelf,
}

/// What an IPI delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// A fixed interrupt on this vector.
    Vector(u8),
    /// A non-maskable interrupt (the vector is ignored; delivered even with IF = 0).
    Nmi,
}

/// Which register interface a local APIC is driven through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    XApic,
    X2Apic,
}

impl Mode {
    /// x2APIC when CPUID.1:ECX[21] says the CPU has it.
    pub fn probe() -> Self {
        if insn::cpuid(1, 0).ecx & (1 << 21) != 0 {
            Self::X2Apic
        } else {
            Self::XApic
        }
    }

    /// The mode this CPU's APIC is in now (IA32_APIC_BASE.EXTD), whatever CPUID offers: an
    /// AP's APIC stays in xAPIC mode unless something switched it.
    pub fn current() -> Self {
        // SAFETY: reading IA32_APIC_BASE has no side effects.
        if unsafe { insn::rdmsr(APIC_BASE_MSR) } & (1 << 10) != 0 {
            Self::X2Apic
        } else {
            Self::XApic
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::XApic => "xAPIC",
            Self::X2Apic => "x2APIC",
        }
    }

    fn id(self, raw: u32) -> ApicId {
        match self {
            Self::XApic => ApicId::XApic(raw as u8),
            Self::X2Apic => ApicId::X2Apic(raw),
        }
    }
}

/// This CPU's APIC id: CPUID leaf 0xB's x2APIC id where the leaf exists, else the initial
/// xAPIC id of leaf 1 (EBX[31:24]).
pub fn this_cpu_id() -> u32 {
    if insn::cpuid(0, 0).eax >= 0xb && insn::cpuid(0xb, 0).ebx != 0 {
        insn::cpuid(0xb, 0).edx
    } else {
        insn::cpuid(1, 0).ebx >> 24
    }
}

/// The LVT entries every local APIC has (timer, LINT0, LINT1, error) as xAPIC offsets; the
/// x2APIC MSR of offset `o` is `0x800 + o / 16`. The thermal and performance entries are
/// optional (Bochs' x2APIC has no thermal MSR: writing it is a `#GP`) and left alone.
const LVT_OFFSETS: [usize; 4] = [0x320, 0x350, 0x360, 0x370];

/// The physical page IA32_APIC_BASE places this CPU's xAPIC registers at.
pub fn base_address() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects; every CPU with an APIC
    // (CPUID.1:EDX[9], which x86-64 implies) has the MSR.
    unsafe { insn::rdmsr(APIC_BASE_MSR) & 0x000f_ffff_ffff_f000 }
}

/// Masks this CPU's local interrupt sources (the parking CPU of a kexec shootdown). Takes no
/// lock and maps nothing: the xAPIC page is where bring-up mapped it (`map_mmio` maps each
/// device page at one fixed address), which it did before any AP could be online.
pub fn mask_local_interrupts() {
    // Read, set the mask bit, write back: the rest of each entry stays as it was (Bochs'
    // x2APIC refuses an LVT write whose vector is below 16, masked or not).
    match Mode::current() {
        Mode::X2Apic => {
            for offset in LVT_OFFSETS {
                let msr = 0x800 + (offset as u32 >> 4);
                // SAFETY: this CPU's APIC is in x2APIC mode (EXTD); these LVT MSRs exist on
                // every x2APIC; setting the mask bit only stops that local interrupt source.
                unsafe { insn::wrmsr(msr, insn::rdmsr(msr) | u64::from(LVT_MASKED)) };
            }
        }
        Mode::XApic => {
            // SAFETY: as in `enable`: reading IA32_APIC_BASE has no side effects.
            let base = unsafe { insn::rdmsr(APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
            let page = crate::layout::MMIO_BASE + base;
            for offset in LVT_OFFSETS {
                let register = (page + offset as u64) as *mut u32;
                // SAFETY: the APIC page mapped uncached at `MMIO_BASE + base` (by bring-up in
                // xAPIC mode, and by `map_xapic_page` before any shootdown NMI; every CPU's
                // APIC answers at that physical page); the offset is an LVT register.
                unsafe { register.write_volatile(register.read_volatile() | LVT_MASKED) };
            }
        }
    }
}

/// Maps the xAPIC register page (at this CPU's IA32_APIC_BASE, the same physical page on
/// every CPU) so that [`mask_local_interrupts`] finds it on a CPU in xAPIC mode even when
/// the boot CPU drives its own APIC in x2APIC mode.
pub fn map_xapic_page() -> bool {
    // SAFETY: as in `enable`: reading IA32_APIC_BASE has no side effects.
    let base = unsafe { insn::rdmsr(APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
    crate::mm::memory::map_mmio(base).is_some()
}

/// The kexecing CPU before it hands over: its local interrupt sources masked and every
/// vector it may be serving acknowledged (no INIT resets this CPU's APIC before the next
/// generation enables it, and an in-service timer vector would block that generation's
/// ticks).
pub fn quiesce_for_handoff() {
    // SAFETY: as in `enable`: reading IA32_APIC_BASE has no side effects.
    let base_msr = unsafe { insn::rdmsr(APIC_BASE_MSR) };
    // A globally disabled APIC (bit 11) has nothing to quiesce; in xAPIC mode its page must
    // be mapped for the writes below (not from NMI context here, so map it).
    if base_msr & (1 << 11) == 0 || (Mode::current() == Mode::XApic && !map_xapic_page()) {
        return;
    }
    mask_local_interrupts();
    for _ in 0..16 {
        match Mode::current() {
            // SAFETY: x2APIC mode (EXTD); an EOI with nothing in service has no effect.
            Mode::X2Apic => unsafe { insn::wrmsr(0x80b, 0) },
            Mode::XApic => {
                // SAFETY: as in `enable`: reading IA32_APIC_BASE has no side effects.
                let base = unsafe { insn::rdmsr(APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
                let eoi = crate::layout::MMIO_BASE + base + 0xb0;
                // SAFETY: the EOI register of the APIC page mapped above.
                unsafe { core::ptr::write_volatile(eoi as *mut u32, 0) };
            }
        }
    }
}

enum Driver {
    X(XAPIC),
    X2(X2APIC),
}

/// The local APIC of the CPU that made it.
pub struct LocalApic {
    mode: Mode,
    driver: Driver,
    /// The xAPIC page's virtual address (0 in x2APIC mode).
    mmio: u64,
}

impl LocalApic {
    /// Enables this CPU's APIC in `mode` with the spurious vector [`SPURIOUS_VECTOR`] and,
    /// on the boot CPU (`virtual_wire`), LINT0 as the PIC's virtual wire. `None` if the xAPIC
    /// page cannot be mapped.
    pub fn enable(mode: Mode, virtual_wire: bool) -> Option<Self> {
        let apic = match mode {
            Mode::XApic => {
                // SAFETY: reading IA32_APIC_BASE has no side effects; every CPU with an APIC
                // (CPUID.1:EDX[9], which x86-64 implies) has the MSR.
                let base = unsafe { insn::rdmsr(APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
                let mmio = crate::mm::memory::map_mmio(base)?;
                // SAFETY: `mmio` maps the APIC's 4 KiB register page, uncached, for good.
                // Every CPU's own APIC answers at this physical address, so each CPU's
                // region refers to its own device.
                let region = unsafe { core::slice::from_raw_parts_mut(mmio as *mut u32, 1024) };
                let mut x = XAPIC::new(region);
                x.attach();
                Self {
                    mode,
                    driver: Driver::X(x),
                    mmio,
                }
            }
            Mode::X2Apic => {
                let mut x2 = X2APIC::new();
                x2.attach();
                Self {
                    mode,
                    driver: Driver::X2(x2),
                    mmio: 0,
                }
            }
        };
        apic.write(
            XAPIC_SVR,
            X2APIC_SIVR,
            SVR_ENABLE | u32::from(SPURIOUS_VECTOR),
        );
        if virtual_wire {
            apic.write(XAPIC_LVT_LINT0, X2APIC_LVT_LINT0, LINT0_EXTINT);
        }
        Some(apic)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// This CPU's APIC as bring-up left it enabled (in the mode [`Mode::probe`] picks),
    /// without reprogramming anything (the kexec shootdown, long after bring-up).
    pub fn this_cpu() -> Option<Self> {
        let mode = Mode::current();
        match mode {
            Mode::XApic => {
                // SAFETY: as in `enable`: reading IA32_APIC_BASE has no side effects.
                let base = unsafe { insn::rdmsr(APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
                let mmio = crate::mm::memory::map_mmio(base)?;
                // SAFETY: as in `enable`: `mmio` maps this CPU's APIC register page for good.
                let region = unsafe { core::slice::from_raw_parts_mut(mmio as *mut u32, 1024) };
                Some(Self {
                    mode,
                    driver: Driver::X(XAPIC::new(region)),
                    mmio,
                })
            }
            Mode::X2Apic => Some(Self {
                mode,
                driver: Driver::X2(X2APIC::new()),
                mmio: 0,
            }),
        }
    }

    /// Sends an NMI to the CPU with APIC id `id` (the kexec shootdown).
    pub fn send_nmi(&mut self, id: u32) {
        self.send(Target::Cpu(id), Ipi::Nmi);
    }

    /// Writes a register the `x86` crate has no call for.
    fn write(&self, xapic_offset: usize, x2apic_msr: u32, value: u32) {
        match self.driver {
            // SAFETY: `mmio` maps the APIC page (see `enable`); the offset is a register.
            Driver::X(_) => unsafe {
                core::ptr::write_volatile((self.mmio + xapic_offset as u64) as *mut u32, value)
            },
            // SAFETY: x2APIC mode is on (`attach`); the MSR is that register.
            Driver::X2(_) => unsafe { insn::wrmsr(x2apic_msr, u64::from(value)) },
        }
    }

    /// Reads a register the `x86` crate has no call for.
    fn read(&self, xapic_offset: usize, x2apic_msr: u32) -> u32 {
        match self.driver {
            // SAFETY: `mmio` maps the APIC page (see `enable`); the offset is a register
            // whose read has no side effect (the timer's).
            Driver::X(_) => unsafe {
                core::ptr::read_volatile((self.mmio + xapic_offset as u64) as *const u32)
            },
            // SAFETY: x2APIC mode is on; the MSR is a readable register.
            Driver::X2(_) => unsafe { insn::rdmsr(x2apic_msr) as u32 },
        }
    }

    /// Signals the end of the interrupt being handled (the APIC's in-service bit).
    pub fn eoi(&mut self) {
        self.control().eoi();
    }

    /// Sends `ipi` to `target` and waits until the APIC has sent it.
    pub fn send(&mut self, target: Target, ipi: Ipi) {
        let (vector, delivery) = match ipi {
            Ipi::Vector(v) => (v, DeliveryMode::Fixed),
            Ipi::Nmi => (0, DeliveryMode::NMI),
        };
        let (id, shorthand) = match target {
            Target::Cpu(id) => (self.mode.id(id), DestinationShorthand::NoShorthand),
            Target::AllButSelf => (self.mode.id(0), DestinationShorthand::AllExcludingSelf),
        };
        let build = match self.mode {
            Mode::XApic => Icr::for_xapic,
            Mode::X2Apic => Icr::for_x2apic,
        };
        let icr = build(
            vector,
            id,
            shorthand,
            delivery,
            DestinationMode::Physical,
            DeliveryStatus::Idle,
            Level::Assert,
            TriggerMode::Edge,
        );
        // SAFETY: a fixed interrupt on a vector the nucleus handles, or an NMI (counted by
        // every CPU's handler); neither resets nor redirects the target.
        unsafe { self.control().send_ipi(icr) };
    }

    /// Counts the timer down once from `u32::MAX`, masked, at the APIC clock / 16.
    pub fn timer_count_down(&mut self) {
        self.write(TIMER_DIVIDE.0, TIMER_DIVIDE.1, DIVIDE_BY_16);
        self.write(LVT_TIMER.0, LVT_TIMER.1, LVT_MASKED);
        self.write(TIMER_INITIAL.0, TIMER_INITIAL.1, u32::MAX);
    }

    /// How far the count-down of [`timer_count_down`](Self::timer_count_down) has gone; stops it.
    pub fn timer_counted(&mut self) -> u32 {
        let left = self.read(TIMER_CURRENT.0, TIMER_CURRENT.1);
        self.write(TIMER_INITIAL.0, TIMER_INITIAL.1, 0);
        u32::MAX - left
    }

    /// Starts the timer periodic: an interrupt on `vector` every `count` APIC clocks / 16.
    pub fn timer_periodic(&mut self, vector: u8, count: u32) {
        self.write(TIMER_DIVIDE.0, TIMER_DIVIDE.1, DIVIDE_BY_16);
        self.write(LVT_TIMER.0, LVT_TIMER.1, LVT_PERIODIC | u32::from(vector));
        self.write(TIMER_INITIAL.0, TIMER_INITIAL.1, count);
    }

    fn control(&mut self) -> &mut dyn ApicControl {
        match &mut self.driver {
            Driver::X(x) => x,
            Driver::X2(x2) => x2,
        }
    }

    /// Sends INIT (assert) to the CPU with APIC id `id`.
    pub fn send_init(&mut self, id: u32) {
        let id = self.mode.id(id);
        // SAFETY: INIT resets the target CPU only, which runs nothing of the nucleus yet
        // (it is the AP about to be started).
        unsafe { self.control().ipi_init(id) };
    }

    /// Sends a STARTUP IPI: the CPU with APIC id `id` starts in real mode at `vector << 12`.
    pub fn send_startup(&mut self, id: u32, vector: u8) {
        let id = self.mode.id(id);
        // SAFETY: the target is a CPU in wait-for-SIPI state; the page holds the trampoline.
        unsafe { self.control().ipi_startup(id, vector) };
    }
}
