//! Instruction emulation for PV64 guests (issue 16 point 5, pv64-abi.md §7): a guest kernel
//! runs at CPL 3, so its privileged instructions fault; pv-server emulates the few Xen
//! emulates and answers everything else with the original fault.
//!
//! * `#UD` at the forced-emulation prefix `ud2; .ascii "xen"` + `cpuid`: CPUID through the
//!   guest's [`cpuid::policy`]; the prefix followed by anything else stays a `#UD`.
//! * `#GP(0)`: `mov` from CR0/CR2/CR3/CR4 and the writes Xen allows (CR0.TS, CR2, CR3 as
//!   NEW_BASEPTR, CR4's guest-controllable bits), `rdmsr`/`wrmsr` of FS_BASE, GS_BASE,
//!   SHADOW_GS_BASE (a non-canonical base is a `#GP(0)` for the guest) and the few MSRs a
//!   PV kernel reads, `in`/`out` and `cli`/`sti` under the virtual IOPL (§7.3).
//!
//! Pure logic: [`emulate`] takes the decoded bytes, the registers and the vCPU's virtual
//! state, and says what to change; the caller applies it.

pub mod cpuid;
pub mod decode;

use heapless::Vec;
use ipc::message::Gpr;
use xen_abi::segment::SegmentBaseWhich;

use decode::{Decoded, Insn, PortOperand};

/// The MSRs emulated (SDM vol. 4).
pub mod msr {
    pub const TSC: u32 = 0x10;
    pub const APIC_BASE: u32 = 0x1b;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const PAT: u32 = 0x277;
    pub const PERF_CAPABILITIES: u32 = 0x345;
    pub const EFER: u32 = 0xc000_0080;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const SHADOW_GS_BASE: u32 = 0xc000_0102;
}

/// CR0 as a guest reads it (PG, WP, NE, ET, MP, PE; TS is the virtual one).
pub const GUEST_CR0: u64 = 0x8005_0033;
const CR0_TS: u64 = 1 << 3;
/// CR4 as a guest first reads it: PAE, PGE, OSFXSR, OSXMMEXCPT.
pub const GUEST_CR4: u64 = 0x6a0;
/// CR4 bits a guest write may change (virtual only: the nucleus owns the real CR4).
const CR4_GUEST_MASK: u64 = 1 << 7;
/// EFER as a guest reads it: SCE, LME, LMA, NXE. A write must not change it.
pub const GUEST_EFER: u64 = 0xd01;
/// MISC_ENABLE as a guest reads it: fast strings, BTS and PEBS unavailable, xTPR
/// disabled (Xen's filtered view). A write must not change it.
pub const GUEST_MISC_ENABLE: u64 = 1 | 1 << 11 | 1 << 12 | 1 << 23;
/// Xen's PAT (`XEN_MSR_PAT`).
pub const GUEST_PAT: u64 = 0x0005_0100_0704_0406;
/// APIC_BASE of vCPU 0: the default base, enabled, BSP.
pub const GUEST_APIC_BASE: u64 = 0xfee0_0000 | 1 << 11 | 1 << 8;

/// A vCPU's virtual state that emulation reads and changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualCpu {
    pub vcpu: u32,
    pub kernel_mode: bool,
    /// Virtual CR0.TS (`fpu_taskswitch`, `mov %cr0`).
    pub ts: bool,
    pub cr2: u64,
    /// The kernel tables' L4 as CR3 (MFN << 12).
    pub cr3: u64,
    pub cr4: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
    /// `physdev_op(set_iopl)`.
    pub iopl: u8,
    /// `VMASST_TYPE_architectural_iopl`: guest kernel at virtual CPL 0 instead of 1.
    pub architectural_iopl: bool,
}

impl VirtualCpu {
    /// vCPU `vcpu` at start of day, kernel tables at `cr3`.
    pub const fn new(vcpu: u32, cr3: u64) -> Self {
        Self {
            vcpu,
            kernel_mode: true,
            ts: false,
            cr2: 0,
            cr3,
            cr4: GUEST_CR4,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            iopl: 0,
            architectural_iopl: false,
        }
    }

    /// §7.3 `iopl_ok`: the virtual CPL is 3 in user mode, 1 (0 with architectural IOPL)
    /// in kernel mode.
    pub const fn iopl_ok(&self) -> bool {
        let cpl = if !self.kernel_mode {
            3
        } else if self.architectural_iopl {
            0
        } else {
            1
        };
        cpl <= self.iopl
    }
}

/// The fault that started emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    InvalidOpcode,
    /// `#GP` with error code 0 (Xen emulates no other).
    GeneralProtection,
}

/// A fault to deliver to the guest instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestFault {
    /// `#UD` at the instruction.
    InvalidOpcode,
    /// `#GP(0)` at the instruction.
    GeneralProtection,
    /// `#PF` reading the instruction at `address` (not present, kernel read).
    PageFault { address: u64 },
}

/// Something outside the registers the caller must do for the emulation to complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideEffect {
    /// Load a segment base into the vCPU (as `set_segment_base`).
    SegmentBase { which: SegmentBaseWhich, base: u64 },
    /// `mov %reg, %cr3`: the kernel tables become the L4 at `mfn` (as NEW_BASEPTR).
    NewBaseptr { mfn: u64 },
}

/// What emulation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// Done: write these registers, resume at `rip + len`, after `effect` succeeded (a
    /// refused effect is a `#GP(0)` for the guest, as in Xen).
    Done {
        len: u8,
        writes: Vec<(Gpr, u64), 4>,
        effect: Option<SideEffect>,
    },
    /// Deliver this fault to the guest.
    Fault(GuestFault),
}

/// General-purpose registers as the fault left them (x86 numbering, 0 = RAX … 15 = R15).
pub type Gprs = [u64; 16];

/// The registers a guest event carries, in x86 order, with `rsp` from its return state.
pub fn gprs(regs: &ipc::message::GuestRegisters, rsp: u64) -> Gprs {
    let g = |gpr| regs.get(gpr);
    [
        g(Gpr::Rax),
        g(Gpr::Rcx),
        g(Gpr::Rdx),
        g(Gpr::Rbx),
        rsp,
        g(Gpr::Rbp),
        g(Gpr::Rsi),
        g(Gpr::Rdi),
        g(Gpr::R8),
        g(Gpr::R9),
        g(Gpr::R10),
        g(Gpr::R11),
        g(Gpr::R12),
        g(Gpr::R13),
        g(Gpr::R14),
        g(Gpr::R15),
    ]
}

/// The `Gpr` of x86 register number `n` (`None` for RSP, which a reply cannot write here).
pub const fn gpr(n: u8) -> Option<Gpr> {
    Some(match n {
        0 => Gpr::Rax,
        1 => Gpr::Rcx,
        2 => Gpr::Rdx,
        3 => Gpr::Rbx,
        5 => Gpr::Rbp,
        6 => Gpr::Rsi,
        7 => Gpr::Rdi,
        8 => Gpr::R8,
        9 => Gpr::R9,
        10 => Gpr::R10,
        11 => Gpr::R11,
        12 => Gpr::R12,
        13 => Gpr::R13,
        14 => Gpr::R14,
        15 => Gpr::R15,
        _ => return None,
    })
}

const fn canonical(value: u64) -> bool {
    ((value << 16) as i64 >> 16) as u64 == value
}

/// Emulates the instruction in `bytes` (read at RIP; `fetch_fault` is the address where
/// reading stopped short, if it did) for `trigger`. `host_cpuid` answers the host's CPUID,
/// `tsc` the time stamp counter.
pub fn emulate(
    trigger: Trigger,
    bytes: &[u8],
    fetch_fault: Option<u64>,
    regs: &Gprs,
    cpu: &mut VirtualCpu,
    host_cpuid: impl Fn(u32, u32) -> cpuid::Regs,
    tsc: u64,
) -> Emulated {
    let original = match trigger {
        Trigger::InvalidOpcode => GuestFault::InvalidOpcode,
        Trigger::GeneralProtection => GuestFault::GeneralProtection,
    };
    let (insn, len) = match decode::decode(bytes) {
        Decoded::Insn { insn, len } => (insn, len),
        Decoded::Truncated => {
            return Emulated::Fault(match fetch_fault {
                Some(address) => GuestFault::PageFault { address },
                None => original,
            });
        }
    };
    let mut writes = Vec::new();
    let mut set =
        |n: u8, value: u64| -> bool { gpr(n).is_some_and(|g| writes.push((g, value)).is_ok()) };
    let done = |writes, effect| Emulated::Done {
        len,
        writes,
        effect,
    };
    match (trigger, insn) {
        (Trigger::InvalidOpcode, Insn::ForcedCpuid) => {
            let r = cpuid::policy(host_cpuid, regs[0] as u32, regs[1] as u32, cpu.vcpu);
            for (n, value) in [(0, r.eax), (3, r.ebx), (1, r.ecx), (2, r.edx)] {
                set(n, u64::from(value));
            }
            done(writes, None)
        }
        (Trigger::GeneralProtection, Insn::MovFromCr { cr, gpr: n }) => {
            let value = match cr {
                0 => GUEST_CR0 | if cpu.ts { CR0_TS } else { 0 },
                2 => cpu.cr2,
                3 => cpu.cr3,
                4 => cpu.cr4,
                _ => return Emulated::Fault(original),
            };
            if !set(n, value) {
                return Emulated::Fault(original);
            }
            done(writes, None)
        }
        (Trigger::GeneralProtection, Insn::MovToCr { cr, gpr: n }) => {
            let value = regs[usize::from(n)];
            match cr {
                // Only TS may change; other changes are ignored, as on Xen.
                0 => cpu.ts = value & CR0_TS != 0,
                2 => cpu.cr2 = value,
                3 => {
                    return done(
                        writes,
                        Some(SideEffect::NewBaseptr {
                            mfn: (value & 0x000f_ffff_ffff_f000) >> 12,
                        }),
                    );
                }
                4 => cpu.cr4 = (cpu.cr4 & !CR4_GUEST_MASK) | (value & CR4_GUEST_MASK),
                _ => return Emulated::Fault(original),
            }
            done(writes, None)
        }
        (Trigger::GeneralProtection, Insn::Rdmsr) => {
            let value = match regs[1] as u32 {
                msr::FS_BASE => cpu.fs_base,
                msr::GS_BASE if cpu.kernel_mode => cpu.gs_base_kernel,
                msr::GS_BASE => cpu.gs_base_user,
                msr::SHADOW_GS_BASE if cpu.kernel_mode => cpu.gs_base_user,
                msr::SHADOW_GS_BASE => cpu.gs_base_kernel,
                msr::EFER => GUEST_EFER,
                msr::MISC_ENABLE => GUEST_MISC_ENABLE,
                msr::PAT => GUEST_PAT,
                msr::APIC_BASE if cpu.vcpu == 0 => GUEST_APIC_BASE,
                msr::APIC_BASE => GUEST_APIC_BASE & !(1 << 8),
                msr::PERF_CAPABILITIES => 0,
                msr::TSC => tsc,
                _ => return Emulated::Fault(original),
            };
            set(0, value & 0xffff_ffff);
            set(2, value >> 32);
            done(writes, None)
        }
        (Trigger::GeneralProtection, Insn::Wrmsr) => {
            let value = (regs[2] << 32) | (regs[0] & 0xffff_ffff);
            let base = |which| {
                if canonical(value) {
                    done(
                        Vec::new(),
                        Some(SideEffect::SegmentBase { which, base: value }),
                    )
                } else {
                    Emulated::Fault(GuestFault::GeneralProtection)
                }
            };
            match regs[1] as u32 {
                msr::FS_BASE => base(SegmentBaseWhich::Fs),
                msr::GS_BASE if cpu.kernel_mode => base(SegmentBaseWhich::GsKernel),
                msr::GS_BASE => base(SegmentBaseWhich::GsUser),
                msr::SHADOW_GS_BASE if cpu.kernel_mode => base(SegmentBaseWhich::GsUser),
                msr::SHADOW_GS_BASE => base(SegmentBaseWhich::GsKernel),
                msr::EFER if value == GUEST_EFER => done(writes, None),
                msr::MISC_ENABLE if value == GUEST_MISC_ENABLE => done(writes, None),
                _ => Emulated::Fault(original),
            }
        }
        (Trigger::GeneralProtection, Insn::In { size, port }) if cpu.iopl_ok() => {
            let _ = port_number(port, regs);
            // No port belongs to a domU: reads are all ones.
            let value = match size {
                1 => (regs[0] & !0xff) | 0xff,
                2 => (regs[0] & !0xffff) | 0xffff,
                _ => 0xffff_ffff,
            };
            set(0, value);
            done(writes, None)
        }
        // Writes to ports the domain may not touch are dropped.
        (Trigger::GeneralProtection, Insn::Out { .. } | Insn::Cli | Insn::Sti) if cpu.iopl_ok() => {
            done(writes, None)
        }
        _ => Emulated::Fault(original),
    }
}

/// The port an `in`/`out` names.
pub fn port_number(port: PortOperand, regs: &Gprs) -> u16 {
    match port {
        PortOperand::Immediate(p) => u16::from(p),
        PortOperand::Dx => regs[2] as u16,
    }
}

/// Whether an event is one emulation may answer, and as what trigger.
pub const fn trigger(kind: &ipc::EventKind) -> Option<Trigger> {
    match *kind {
        ipc::EventKind::Exception { vector: 6, .. } => Some(Trigger::InvalidOpcode),
        ipc::EventKind::Exception {
            vector: 13,
            error_code: 0,
        } => Some(Trigger::GeneralProtection),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
