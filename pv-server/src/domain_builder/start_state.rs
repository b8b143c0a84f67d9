//! What vCPU 0 finds at its first instruction: start_info (pv64-abi.md §2.2) and the
//! register set (§2.3).

use xen_abi::StartInfo;
use xen_abi::layout::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS};

use super::error::BuildError;
use super::frames::DomainFrames;
use super::layout::{Layout, Pfn};
use crate::guests::{DataSelectors, GuestFrame, GuestMode, PvVcpu};

/// RFLAGS at entry: interrupts "on" (the guest's events are masked in vcpu_info instead).
pub const START_RFLAGS: u64 = 0x200;

/// start_info for a domU laid out as `layout` (§2.2): no initrd, no xenstore or console
/// event channel yet (their rings exist), no INIT_P2M.
pub fn start_info(
    layout: &Layout,
    frames: &DomainFrames<'_>,
    cmdline: &[u8],
) -> Result<StartInfo, BuildError> {
    let mut info = StartInfo::new();
    info.nr_pages = layout.nr_pages;
    info.shared_info = frames.shared_info.addr();
    info.flags = 0;
    info.store_mfn = frames.mfn(layout.store).0;
    info.console.mfn = frames.mfn(layout.console).0;
    info.pt_base = layout.va(layout.page_tables.start);
    info.nr_pt_frames = layout.tables.total();
    info.mfn_list = layout.va(layout.p2m.start);
    info.set_cmdline(cmdline)
        .map_err(|error| BuildError::CmdlineTooLong { len: error.len })?;
    Ok(info)
}

/// The start-of-day registers of vCPU 0 (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartRegisters {
    pub rip: u64,
    pub rsp: u64,
    /// VA of start_info.
    pub rsi: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    /// ds, es, fs, gs.
    pub data: u16,
    /// Machine address of the bootstrap L4.
    pub cr3: u64,
    /// `stack_switch` state: the initial ss and rsp.
    pub kernel_ss: u16,
    pub kernel_sp: u64,
}

impl StartRegisters {
    pub fn new(layout: &Layout, frames: &DomainFrames<'_>, entry: u64) -> Self {
        let rsp = layout.va(layout.boot_stack.0 + 1);
        Self {
            rip: entry,
            rsp,
            rsi: layout.va(layout.start_info.0),
            rflags: START_RFLAGS,
            cs: FLAT_KERNEL_CS,
            ss: FLAT_KERNEL_SS,
            data: FLAT_KERNEL_DS,
            cr3: frames.mfn(Pfn(layout.page_tables.start)).addr(),
            kernel_ss: FLAT_KERNEL_SS,
            kernel_sp: rsp,
        }
    }

    /// pv-server's state for the vCPU: kernel mode, events masked, all other GPRs zero.
    pub fn vcpu(&self) -> PvVcpu {
        let mut gprs = [0; 15];
        gprs[ipc::message::Gpr::Rsi as usize] = self.rsi;
        PvVcpu {
            frame: GuestFrame {
                gprs,
                rip: self.rip,
                cs: self.cs,
                rflags: self.rflags,
                rsp: self.rsp,
                ss: self.ss,
                error_code: 0,
                vector: 0,
            },
            selectors: DataSelectors {
                ds: self.data,
                es: self.data,
                fs: self.data,
                gs: self.data,
            },
            gs_base_user: 0,
            gs_base_kernel: 0,
            mode: GuestMode::Kernel,
            upcall_mask: 1,
        }
    }
}
