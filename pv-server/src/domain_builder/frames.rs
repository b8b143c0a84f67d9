//! How the builder reaches guest memory: a [`FrameWriter`] that writes bytes into machine
//! frames, and the domain's frames it may name.
//!
//! The builder never holds a pointer into a guest: pv-server implements the writer with the
//! nucleus' guest-memory call (which checks that the frame belongs to a domain pv-server
//! manages), the tests with a map of byte arrays. Frames handed to a new domain are zero
//! (the nucleus clears them), so the builder writes only what is not zero.

pub use xen_abi::{Mfn, Pfn};

use super::error::BuildError;

/// Why a frame write failed; the builder reports it as [`BuildError::Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWriteError(pub &'static str);

/// Writes bytes into one machine frame of the domain being built.
pub trait FrameWriter {
    /// Writes `bytes` at `offset` in frame `mfn`; `offset + bytes.len()` never exceeds
    /// 4096 (the builder splits at page boundaries).
    fn write(&mut self, mfn: Mfn, offset: usize, bytes: &[u8]) -> Result<(), FrameWriteError>;
}

/// The frames of the domain being built.
#[derive(Clone, Copy, Debug)]
pub struct DomainFrames<'a> {
    /// `p2m[pfn]` is the machine frame behind guest pfn `pfn`, for every page the domain has.
    pub p2m: &'a [Mfn],
    /// The domain's shared_info frame (not one of its pfns).
    pub shared_info: Mfn,
}

impl DomainFrames<'_> {
    /// The frame behind `pfn` (the builder checked the list covers the layout).
    pub fn mfn(&self, pfn: Pfn) -> Mfn {
        self.p2m[pfn.0 as usize]
    }
}

/// Writes `bytes` at pseudo-physical address `pa`, page by page.
pub fn write_pseudo_phys(
    frames: &DomainFrames<'_>,
    writer: &mut impl FrameWriter,
    pa: u64,
    bytes: &[u8],
) -> Result<(), BuildError> {
    let mut pa = pa;
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = (pa % 4096) as usize;
        let take = rest.len().min(4096 - offset);
        write_frame(writer, frames.mfn(Pfn(pa / 4096)), offset, &rest[..take])?;
        rest = &rest[take..];
        pa += take as u64;
    }
    Ok(())
}

/// One write, with the error mapped to the builder's.
pub fn write_frame(
    writer: &mut impl FrameWriter,
    mfn: Mfn,
    offset: usize,
    bytes: &[u8],
) -> Result<(), BuildError> {
    writer
        .write(mfn, offset, bytes)
        .map_err(|FrameWriteError(reason)| BuildError::Write { mfn: mfn.0, reason })
}
