//! The hypercalls pv-server answers itself (issue 15 point 4; pv64-abi.md §4): `console_io`,
//! `sched_op`, `xen_version`, `vm_assist`, `vcpu_op(is_up)`, `set_segment_base` and
//! `memory_op(machphys_mapping)`.
//! Page-table hypercalls go to the nucleus' checks (`bsp_x86_64::guest_tables`) and are not
//! here; anything else is `-ENOSYS` and counted.
//!
//! Pure policy over a [`GuestMemory`]: every argument the guest points at is copied through
//! it (the nucleus' copy call on the target, a fake in the tests), and a copy that faults is
//! `-EFAULT` with nothing changed. The answer is an [`Outcome`] for the caller to apply.

mod console_lines;

use core::fmt::Write;

pub use console_lines::ConsoleLines;
use xen_abi::console::ConsoleIoCmd;
use xen_abi::layout::in_hypervisor_window;
use xen_abi::sched::{SchedOpCmd, SchedShutdown, ShutdownReason};
use xen_abi::segment::SegmentBaseWhich;
use xen_abi::vcpu::VcpuOpCmd;
use xen_abi::version::{CAPABILITIES_LEN, EXTRAVERSION_LEN, FeatureInfo, XenVersionCmd, feature};
use xen_abi::vm_assist::{PV64_VALID_MASK, VmAssistCmd};
use xen_abi::{Errno, Hypercall, PAGE_SIZE};

/// The Xen version pv-server reports (`xen_version(0)`).
pub const VERSION_MAJOR: u64 = 4;
pub const VERSION_MINOR: u64 = 21;
/// `XENVER_extraversion`.
pub const EXTRAVERSION: &[u8] = b".0-fredvisor";
/// `XENVER_capabilities`.
pub const CAPABILITIES: &[u8] = b"xen-3.0-x86_64 ";
/// Submap 0 of `XENVER_get_features` for a PV domU (pv64-abi.md §4.10).
pub const FEATURES_SUBMAP0: u32 = (1 << feature::MMU_PT_UPDATE_PRESERVE_AD)
    | (1 << feature::GNTTAB_MAP_AVAIL_BITS)
    | (1 << feature::DIRECT_MAPPED);
/// Bytes of guest console text copied per step (the guest may pass any count).
const CONSOLE_CHUNK: usize = 256;
/// Bytes one `console_io` write handles before it continues (§3: `rip -= 2`), so a huge
/// count cannot hold pv-server for long.
pub const CONSOLE_BUDGET: usize = 16 * CONSOLE_CHUNK;

/// A guest address the copy could not reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub va: u64,
}

/// Guest memory as the current vCPU's kernel mode sees it.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes from guest VA `va`.
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault>;
    /// Copies `bytes` to guest VA `va`.
    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault>;
}

/// Refuses what can never be a guest buffer before asking the nucleus: non-canonical, the
/// hypervisor's window, or wrapping past the top. The nucleus checks again (allegations).
pub(crate) fn guest_range(va: u64, len: usize) -> Result<(), Errno> {
    let canonical = |a: u64| ((a << 16) as i64 >> 16) as u64 == a;
    let Some(last) = va.checked_add(len.saturating_sub(1) as u64) else {
        return Err(Errno::Efault);
    };
    let crosses_window = va < xen_abi::layout::HYPERVISOR_VIRT_START
        && last >= xen_abi::layout::HYPERVISOR_VIRT_START;
    if !canonical(va)
        || !canonical(last)
        || in_hypervisor_window(va)
        || in_hypervisor_window(last)
        || crosses_window
    {
        return Err(Errno::Efault);
    }
    Ok(())
}

pub(crate) fn read(memory: &mut impl GuestMemory, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
    guest_range(va, buf.len())?;
    memory.read(va, buf).map_err(|_| Errno::Efault)
}

pub(crate) fn write(memory: &mut impl GuestMemory, va: u64, bytes: &[u8]) -> Result<(), Errno> {
    guest_range(va, bytes.len())?;
    memory.write(va, bytes).map_err(|_| Errno::Efault)
}

/// What the caller does with the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the vCPU with this `rax`.
    Return(u64),
    /// Resume with `rax = 0` after letting others run.
    Yield,
    /// The domain asked to stop.
    Shutdown(ShutdownReason),
    /// Load a segment base into the vCPU (checked again and applied by the nucleus, whose
    /// verdict is the answer).
    SetSegmentBase { which: SegmentBaseWhich, base: u64 },
    /// Not finished: resume at the `syscall` again (`rip -= 2`) with these arguments in
    /// `rdi, rsi, rdx, r10, r8` (Xen's hypercall continuation, pv64-abi.md §3).
    Continue([u64; 5]),
}

impl From<Errno> for Outcome {
    fn from(errno: Errno) -> Self {
        Self::Return(errno.rax())
    }
}

/// The per-domain state these hypercalls read and change.
#[derive(Debug, Default)]
pub struct DomainCalls {
    pub console: ConsoleLines,
    /// VMASST bits enabled.
    pub vm_assist: u64,
    /// The reason latched by `SCHEDOP_shutdown_code`.
    pub shutdown_code: Option<ShutdownReason>,
    /// vCPUs the domain has, and which are up (bit n = vCPU n).
    pub vcpus: u32,
    pub vcpus_up: u32,
    /// Hypercalls answered `-ENOSYS`.
    pub unimplemented: u32,
}

impl DomainCalls {
    /// A domain with `vcpus` vCPUs, vCPU 0 up (pv64-abi.md §2.3).
    pub fn new(vcpus: u32) -> Self {
        Self {
            vcpus,
            vcpus_up: 1,
            ..Self::default()
        }
    }

    /// Answers hypercall `number` with `args` (`rdi, rsi, rdx, r10, r8`). Console lines go
    /// to `out` as `guest NAME: …`.
    #[inline]
    pub fn answer(
        &mut self,
        name: &str,
        number: u64,
        args: [u64; 5],
        memory: &mut impl GuestMemory,
        out: &mut impl Write,
    ) -> Outcome {
        let result = match Hypercall::from_raw(number) {
            Some(Hypercall::ConsoleIo) => self.console_io(name, args, memory, out),
            Some(Hypercall::SchedOp) => self.sched_op(args, memory),
            Some(Hypercall::XenVersion) => xen_version(args, memory),
            Some(Hypercall::VmAssist) => self.vm_assist(args),
            Some(Hypercall::VcpuOp) => self.vcpu_op(args),
            Some(Hypercall::SetSegmentBase) => set_segment_base(args),
            Some(Hypercall::MemoryOp) => memory_op(args, memory),
            _ => Err(Errno::Enosys),
        };
        match result {
            Ok(outcome) => outcome,
            Err(Errno::Enosys) => {
                self.unimplemented = self.unimplemented.saturating_add(1);
                Errno::Enosys.into()
            }
            Err(errno) => errno.into(),
        }
    }

    fn console_io(
        &mut self,
        name: &str,
        [cmd, count, buf, ..]: [u64; 5],
        memory: &mut impl GuestMemory,
        out: &mut impl Write,
    ) -> Result<Outcome, Errno> {
        match ConsoleIoCmd::from_raw(cmd) {
            Some(ConsoleIoCmd::Write) => {
                let count = usize::try_from(count).map_err(|_| Errno::Efault)?;
                guest_range(buf, count)?;
                let mut chunk = [0u8; CONSOLE_CHUNK];
                let now = count.min(CONSOLE_BUDGET);
                let mut done = 0;
                while done < now {
                    let take = (now - done).min(CONSOLE_CHUNK);
                    // What was copied before a fault has been printed, as on Xen.
                    read(memory, buf + done as u64, &mut chunk[..take])?;
                    self.console.feed(name, &chunk[..take], out);
                    done += take;
                }
                if now < count {
                    let rest = (count - now) as u64;
                    return Ok(Outcome::Continue([cmd, rest, buf + now as u64, 0, 0]));
                }
                Ok(Outcome::Return(0))
            }
            // No console input exists yet: nothing pending.
            Some(ConsoleIoCmd::Read) if count > i32::MAX as u64 => Err(Errno::E2big),
            Some(ConsoleIoCmd::Read) => Ok(Outcome::Return(0)),
            None => Err(Errno::Enosys),
        }
    }

    fn sched_op(
        &mut self,
        [cmd, arg, ..]: [u64; 5],
        memory: &mut impl GuestMemory,
    ) -> Result<Outcome, Errno> {
        let reason = |memory: &mut _| -> Result<ShutdownReason, Errno> {
            let mut bytes = [0; SchedShutdown::SIZE];
            read(memory, arg, &mut bytes)?;
            let raw = SchedShutdown::from_bytes(&bytes).reason;
            ShutdownReason::from_raw(u64::from(raw)).ok_or(Errno::Einval)
        };
        match SchedOpCmd::from_raw(cmd) {
            Some(SchedOpCmd::Yield) => Ok(Outcome::Yield),
            Some(SchedOpCmd::Shutdown) => Ok(Outcome::Shutdown(reason(memory)?)),
            Some(SchedOpCmd::ShutdownCode) => {
                self.shutdown_code = Some(reason(memory)?);
                Ok(Outcome::Return(0))
            }
            // block and poll need event channels (issue 16).
            Some(SchedOpCmd::Block | SchedOpCmd::Poll) | None => Err(Errno::Enosys),
        }
    }

    fn vm_assist(&mut self, [cmd, kind, ..]: [u64; 5]) -> Result<Outcome, Errno> {
        if kind >= 64 || PV64_VALID_MASK & (1 << kind) == 0 {
            return Err(Errno::Einval);
        }
        match VmAssistCmd::from_raw(cmd) {
            Some(VmAssistCmd::Enable) => self.vm_assist |= 1 << kind,
            Some(VmAssistCmd::Disable) => self.vm_assist &= !(1 << kind),
            None => return Err(Errno::Enosys),
        }
        Ok(Outcome::Return(0))
    }

    fn vcpu_op(&mut self, [cmd, vcpu, ..]: [u64; 5]) -> Result<Outcome, Errno> {
        if vcpu >= u64::from(self.vcpus) {
            return Err(Errno::Enoent);
        }
        match VcpuOpCmd::from_raw(cmd) {
            Some(VcpuOpCmd::IsUp) => Ok(Outcome::Return(u64::from(self.vcpus_up >> vcpu & 1))),
            _ => Err(Errno::Enosys),
        }
    }
}

/// The answer of a hypercall that reads no guest memory and no state, a constant of the ABI
/// (`xen_version(XENVER_version)`, `xen_version(XENVER_pagesize, NULL)`); `None` for any
/// other call. Asked before anything else (`Guests::hypercall`): the hot `xen_version(0)`
/// needs no guest view, no console and no dispatch through [`DomainCalls::answer`].
#[inline(always)]
pub fn constant_answer(number: u64, cmd: u64, arg: u64) -> Option<u64> {
    const XEN_VERSION: u64 = Hypercall::XenVersion.raw() as u64;
    const VERSION: u64 = XenVersionCmd::Version.raw() as u64;
    const PAGESIZE: u64 = XenVersionCmd::Pagesize.raw() as u64;
    match (number, cmd, arg) {
        (XEN_VERSION, VERSION, _) => Some((VERSION_MAJOR << 16) | VERSION_MINOR),
        (XEN_VERSION, PAGESIZE, 0) => Some(PAGE_SIZE),
        _ => None,
    }
}

fn xen_version([cmd, arg, ..]: [u64; 5], memory: &mut impl GuestMemory) -> Result<Outcome, Errno> {
    if let Some(rax) = constant_answer(Hypercall::XenVersion.raw().into(), cmd, arg) {
        return Ok(Outcome::Return(rax));
    }
    let fixed = |text: &[u8], len: usize, memory: &mut _| -> Result<Outcome, Errno> {
        let mut bytes = [0u8; CAPABILITIES_LEN];
        bytes[..text.len()].copy_from_slice(text);
        write(memory, arg, &bytes[..len])?;
        Ok(Outcome::Return(0))
    };
    match XenVersionCmd::from_raw(cmd) {
        Some(XenVersionCmd::Extraversion) => fixed(EXTRAVERSION, EXTRAVERSION_LEN, memory),
        Some(XenVersionCmd::Capabilities) => fixed(CAPABILITIES, CAPABILITIES_LEN, memory),
        Some(XenVersionCmd::PlatformParameters) => {
            write(
                memory,
                arg,
                &xen_abi::layout::HYPERVISOR_VIRT_START.to_le_bytes(),
            )?;
            Ok(Outcome::Return(0))
        }
        Some(XenVersionCmd::GetFeatures) => {
            let mut bytes = [0; FeatureInfo::SIZE];
            read(memory, arg, &mut bytes)?;
            let mut info = FeatureInfo::from_bytes(&bytes);
            if info.submap_idx != 0 {
                return Err(Errno::Einval);
            }
            info.submap = FEATURES_SUBMAP0;
            write(memory, arg, &info.to_bytes())?;
            Ok(Outcome::Return(0))
        }
        Some(XenVersionCmd::Pagesize) => Err(Errno::Einval),
        _ => Err(Errno::Enosys),
    }
}

/// `memory_op`: where the read-only M2P is (`machphys_mapping`, §4.19: Xen's addresses, the
/// nucleus maps it there, L4 slot 256); the other commands belong to part 2.
fn memory_op([cmd, arg, ..]: [u64; 5], memory: &mut impl GuestMemory) -> Result<Outcome, Errno> {
    use xen_abi::layout::{MACH2PHYS_NR_ENTRIES, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};
    use xen_abi::memory::MemoryOpCmd;
    match MemoryOpCmd::from_raw(cmd) {
        Some(MemoryOpCmd::MachphysMapping) => {
            let mut bytes = [0u8; 24];
            for (at, word) in [
                MACH2PHYS_VIRT_START,
                MACH2PHYS_VIRT_END,
                MACH2PHYS_NR_ENTRIES - 1,
            ]
            .into_iter()
            .enumerate()
            {
                bytes[at * 8..at * 8 + 8].copy_from_slice(&word.to_le_bytes());
            }
            write(memory, arg, &bytes)?;
            Ok(Outcome::Return(0))
        }
        _ => Err(Errno::Enosys),
    }
}

fn set_segment_base([which, base, ..]: [u64; 5]) -> Result<Outcome, Errno> {
    // Xen's `which` is an `unsigned int`.
    let which = SegmentBaseWhich::from_raw(u64::from(which as u32)).ok_or(Errno::Einval)?;
    // GS_USER_SEL's `base` is a selector (its low 16 bits), not an address.
    if which != SegmentBaseWhich::GsUserSel && ((base << 16) as i64 >> 16) as u64 != base {
        return Err(Errno::Einval);
    }
    Ok(Outcome::SetSegmentBase { which, base })
}

#[cfg(test)]
pub(crate) mod tests;
