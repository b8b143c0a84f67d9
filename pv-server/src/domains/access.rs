//! A domain's memory, shared_info frame, vcpu_info, descriptor tables and console as the
//! traits of the per-guest modules want them, each through the nucleus' calls. They share
//! one hypervisor borrow (a `RefCell`) because one hypercall may need several at once.

use core::cell::RefCell;
use core::fmt::{self, Write};

use heapless::String;
use ipc::domain::MmuOp;
use xen_abi::Errno;

use crate::domain_builder::Mfn;
use crate::grants::FrameSource;
use crate::guest_hypercalls::{GuestFault, GuestMemory};
use crate::guest_state::DescriptorTables;
use crate::guest_traps::VcpuInfoAccess;
use crate::hypervisor::Hypervisor;
use crate::shared_page::SharedPage;

/// The hypervisor, borrowed once for all the views of one call.
pub type Shared<'c, 'h, H> = &'c RefCell<&'h mut H>;

/// A domain's shared_info frame through the nucleus' frame calls.
pub struct SharedFrame<'c, 'h, H> {
    pub hv: Shared<'c, 'h, H>,
    pub domain: u16,
    pub mfn: Mfn,
}

impl<H: Hypervisor> SharedPage for SharedFrame<'_, '_, H> {
    fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .read_frame(self.domain, self.mfn, offset, out)
            .map_err(|_| Errno::Efault)
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .write_frame(self.domain, self.mfn, offset, bytes)
            .map_err(|_| Errno::Efault)
    }
}

/// Grant frames and descriptor tables: the nucleus' calls.
pub struct NucleusTables<'c, 'h, H> {
    pub hv: Shared<'c, 'h, H>,
    pub domain: u16,
}

impl<H: Hypervisor> FrameSource for NucleusTables<'_, '_, H> {
    fn share_frame(&mut self) -> Result<Mfn, Errno> {
        self.hv.borrow_mut().share_frame(self.domain)
    }
}

impl<H: Hypervisor> DescriptorTables for NucleusTables<'_, '_, H> {
    fn set_gdt(&mut self, frames: &[u64], entries: u64) -> Result<(), Errno> {
        self.hv.borrow_mut().set_gdt(self.domain, frames, entries)
    }

    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        self.hv
            .borrow_mut()
            .mmu(self.domain, MmuOp::UpdateDescriptor { maddr, desc })
    }
}

/// vCPU 0's vcpu_info at the start of the domain's shared_info frame.
pub struct SharedVcpuInfo<'c, 'h, H> {
    pub hv: Shared<'c, 'h, H>,
    pub domain: u16,
    pub shared_info: Mfn,
}

/// Offsets in vcpu_info (pv64-abi.md §2.4).
const UPCALL_MASK_AT: usize = 1;
const CR2_AT: usize = 16;

impl<H: Hypervisor> SharedVcpuInfo<'_, '_, H> {
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .write_frame(self.domain, self.shared_info, offset, bytes)
            .map_err(|_| GuestFault { va: 0 })
    }
}

impl<H: Hypervisor> VcpuInfoAccess for SharedVcpuInfo<'_, '_, H> {
    fn upcall_mask(&mut self) -> Result<u8, GuestFault> {
        let mut mask = [0u8];
        self.hv
            .borrow_mut()
            .read_frame(self.domain, self.shared_info, UPCALL_MASK_AT, &mut mask)
            .map_err(|_| GuestFault { va: 0 })?;
        Ok(mask[0])
    }

    fn set_upcall_mask(&mut self, mask: u8) -> Result<(), GuestFault> {
        self.write(UPCALL_MASK_AT, &[mask])
    }

    fn set_cr2(&mut self, cr2: u64) -> Result<(), GuestFault> {
        self.write(CR2_AT, &cr2.to_le_bytes())
    }
}

/// Guest memory through the nucleus' copy call.
pub struct Memory<'c, 'h, H> {
    pub hv: Shared<'c, 'h, H>,
    pub domain: u16,
}

impl<H: Hypervisor> GuestMemory for Memory<'_, '_, H> {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .guest_read(self.domain, va, buf)
            .map_err(|_| GuestFault { va })
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault> {
        self.hv
            .borrow_mut()
            .guest_write(self.domain, va, bytes)
            .map_err(|_| GuestFault { va })
    }
}

/// Takes `guest NAME: <text>\n` lines and hands `<text>` to the nucleus, which prints it
/// under the domain's name (pv-server cannot print a line as another server or the nucleus).
pub struct Console<'c, 'h, H> {
    hv: Shared<'c, 'h, H>,
    domain: u16,
    prefix_len: usize,
    line: String<256>,
}

impl<'c, 'h, H> Console<'c, 'h, H> {
    /// The console of `domain`, whose lines start `guest NAME: `.
    pub fn new(hv: Shared<'c, 'h, H>, domain: u16, name: &str) -> Self {
        Self {
            hv,
            domain,
            prefix_len: "guest ".len() + name.len() + 2,
            line: String::new(),
        }
    }
}

impl<H: Hypervisor> Write for Console<'_, '_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                let text = self.line.as_bytes().get(self.prefix_len..).unwrap_or(b"");
                self.hv.borrow_mut().console_line(self.domain, text);
                self.line.clear();
            } else {
                let _ = self.line.push(c);
            }
        }
        Ok(())
    }
}
