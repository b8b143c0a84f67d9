//! The domain builder: from a guest kernel ELF to a domain ready to run (pv64-abi.md §1-§3,
//! issue 15 point 3).
//!
//! Three steps, each a pure function of its inputs so the host tests can check exact values:
//!
//! 1. [`GuestImage::parse`] reads the ELF and its Xen notes and refuses what Xen's loader
//!    refuses ([`BuildError`], one line each).
//! 2. [`Layout::plan`] places the start-of-day region for a domain of `nr_pages`.
//! 3. [`build`] writes the region into the domain's frames through a [`FrameWriter`]: the
//!    segments, the hypercall page, the p2m list, start_info, the bootstrap page tables and
//!    the start-of-day shared_info, and returns vCPU 0's registers.
//!
//! Policy only: every frame is the nucleus' to hand out and check, and every table written
//! here is validated by the nucleus before it can be used.

mod error;
mod frames;
mod hypercall_page;
mod image;
mod layout;
mod notes;
mod page_tables;
mod start_state;

pub use error::BuildError;
pub use frames::{DomainFrames, FrameWriteError, FrameWriter, Mfn};
pub use image::GuestImage;
pub use layout::{Layout, Pfn, TableCounts};
pub use start_state::StartRegisters;

use xen_abi::{PAGE_SIZE, SharedInfo, StartInfo};

/// What a built domain starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltDomain {
    pub layout: Layout,
    pub start_info: StartInfo,
    pub registers: StartRegisters,
}

impl BuiltDomain {
    /// The lifecycle line's text after `guest NAME: ` (issue 15 point 5).
    pub fn started(&self, domain: u16) -> Started {
        Started {
            domain,
            mib: self.layout.nr_pages / 256,
            entry: self.registers.rip,
            start_info: self.registers.rsi,
        }
    }
}

/// `started (domain D, M MiB, entry 0x…, start_info 0x…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub domain: u16,
    pub mib: u64,
    pub entry: u64,
    pub start_info: u64,
}

impl core::fmt::Display for Started {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "started (domain {}, {} MiB, entry {:#x}, start_info {:#x})",
            self.domain, self.mib, self.entry, self.start_info
        )
    }
}

/// Writes the start-of-day state of `image` into `frames` as `layout` places it.
///
/// `frames.p2m` must hold one frame per page of the domain; the frames are zero (see
/// [`frames`]). On error part of the region may be written; the caller destroys the domain.
pub fn build(
    image: &GuestImage<'_>,
    layout: &Layout,
    frames: &DomainFrames<'_>,
    cmdline: &[u8],
    writer: &mut impl FrameWriter,
) -> Result<BuiltDomain, BuildError> {
    if (frames.p2m.len() as u64) < layout.nr_pages {
        return Err(BuildError::FrameListTooShort {
            pfns: frames.p2m.len() as u64,
            needed: layout.nr_pages,
        });
    }
    // Before any write, so that a refused command line leaves the frames untouched.
    let start_info = start_state::start_info(layout, frames, cmdline)?;

    for segment in &image.segments {
        frames::write_pseudo_phys(frames, writer, segment.pseudo_phys, segment.data)?;
    }
    if let Some(va) = image.notes.hypercall_page {
        let pfn = (va - image.virt_base) / PAGE_SIZE;
        let page = hypercall_page::contents();
        frames::write_frame(writer, frames.mfn(Pfn(pfn)), 0, &page)?;
    }
    write_p2m(layout, frames, writer)?;
    frames::write_frame(
        writer,
        frames.mfn(layout.start_info),
        0,
        &start_info.to_bytes(),
    )?;
    page_tables::write(layout, frames, writer)?;
    frames::write_frame(
        writer,
        frames.shared_info,
        0,
        &SharedInfo::start_of_day_bytes(),
    )?;

    Ok(BuiltDomain {
        layout: layout.clone(),
        start_info,
        registers: StartRegisters::new(layout, frames, image.entry),
    })
}

/// The p2m list: `mfn_list[pfn]` for every page of the domain, 512 per page.
fn write_p2m(
    layout: &Layout,
    frames: &DomainFrames<'_>,
    writer: &mut impl FrameWriter,
) -> Result<(), BuildError> {
    let entries = &frames.p2m[..layout.nr_pages as usize];
    for (page, chunk) in layout.p2m.clone().zip(entries.chunks(512)) {
        let mut bytes = [0u8; 4096];
        for (slot, mfn) in bytes.chunks_exact_mut(8).zip(chunk) {
            slot.copy_from_slice(&mfn.0.to_le_bytes());
        }
        frames::write_frame(writer, frames.mfn(Pfn(page)), 0, &bytes[..chunk.len() * 8])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
