//! Reading Xen's ELF notes out of a note area (pv64-abi.md §1.1, §1.2).
//!
//! The walk is written here rather than taken from the `elf` crate's note iterator because
//! Xen pads names and descriptors to 4 bytes whatever the segment's `p_align` says, and
//! reads integers of 1, 2, 4 or 8 bytes; the `elf` crate follows `p_align` and has no
//! notion of Xen's types. Every offset is checked: a note that runs past the area is an
//! error, never a panic.

use xen_abi::elfnote::{NOTE_ALIGN, NOTE_HEADER_BYTES, NOTE_NAME, XenNote};

use super::error::{BuildError, NoteProblem};

/// The Xen notes an image carries: the ones the loader acts on, borrowed from the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    /// How many `"Xen"` notes were seen (of any type, known or not).
    pub count: usize,
    pub entry: Option<u64>,
    pub hypercall_page: Option<u64>,
    pub virt_base: Option<u64>,
    pub paddr_offset: Option<u64>,
    pub init_p2m: Option<u64>,
    pub mod_start_pfn: Option<u64>,
    pub supported_features: Option<u64>,
    /// String notes, without their NUL.
    pub xen_version: Option<&'a [u8]>,
    pub guest_os: Option<&'a [u8]>,
    pub guest_version: Option<&'a [u8]>,
    pub loader: Option<&'a [u8]>,
    pub features: Option<&'a [u8]>,
}

fn read_u32(area: &[u8], at: usize) -> Option<u32> {
    let bytes = area.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

const fn pad(len: usize) -> Option<usize> {
    match len.checked_add(NOTE_ALIGN - 1) {
        Some(sum) => Some(sum & !(NOTE_ALIGN - 1)),
        None => None,
    }
}

fn integer(note: u32, desc: &[u8]) -> Result<u64, BuildError> {
    let value = match *desc {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, g, h, i] => u64::from_le_bytes([a, b, c, d, e, g, h, i]),
        _ => {
            return Err(BuildError::BadNote(NoteProblem::IntegerSize {
                note,
                size: desc.len(),
            }));
        }
    };
    Ok(value)
}

fn string(note: u32, desc: &[u8]) -> Result<&[u8], BuildError> {
    desc.iter()
        .position(|&b| b == 0)
        .map(|nul| &desc[..nul])
        .ok_or(BuildError::BadNote(NoteProblem::Unterminated { note }))
}

impl<'a> XenNotes<'a> {
    /// Adds every `"Xen"` note of `area` (the bytes of one PT_NOTE segment or SHT_NOTE
    /// section); notes with another name are skipped, unknown Xen types ignored, and a later
    /// note of a type overrides an earlier one.
    pub fn add_area(&mut self, area: &'a [u8]) -> Result<(), BuildError> {
        let mut at = 0;
        // Trailing bytes too short for a header are padding, as Xen's walk treats them.
        while area.len().saturating_sub(at) >= NOTE_HEADER_BYTES {
            let truncated = BuildError::BadNote(NoteProblem::Truncated { offset: at });
            let (Some(namesz), Some(descsz), Some(kind)) = (
                read_u32(area, at),
                read_u32(area, at + 4),
                read_u32(area, at + 8),
            ) else {
                return Err(truncated);
            };
            let name_at = at + NOTE_HEADER_BYTES;
            let desc_at = pad(namesz as usize)
                .and_then(|n| name_at.checked_add(n))
                .ok_or(truncated.clone())?;
            let next = pad(descsz as usize)
                .and_then(|d| desc_at.checked_add(d))
                .ok_or(truncated.clone())?;
            let name = area
                .get(name_at..name_at + namesz as usize)
                .ok_or(truncated.clone())?;
            let desc = area
                .get(desc_at..desc_at + descsz as usize)
                .ok_or(truncated.clone())?;
            if name == NOTE_NAME {
                self.count += 1;
                self.take(kind, desc)?;
            }
            // The last note's padding may be missing at the very end.
            at = next.min(area.len());
        }
        Ok(())
    }

    fn take(&mut self, kind: u32, desc: &'a [u8]) -> Result<(), BuildError> {
        let Some(note) = XenNote::from_raw(u64::from(kind)) else {
            return Ok(());
        };
        let int = || integer(kind, desc).map(Some);
        let text = || string(kind, desc).map(Some);
        match note {
            XenNote::Entry => self.entry = int()?,
            XenNote::HypercallPage => self.hypercall_page = int()?,
            XenNote::VirtBase => self.virt_base = int()?,
            XenNote::PaddrOffset => self.paddr_offset = int()?,
            XenNote::InitP2m => self.init_p2m = int()?,
            XenNote::ModStartPfn => self.mod_start_pfn = int()?,
            XenNote::SupportedFeatures => self.supported_features = int()?,
            XenNote::XenVersion => self.xen_version = text()?,
            XenNote::GuestOs => self.guest_os = text()?,
            XenNote::GuestVersion => self.guest_version = text()?,
            XenNote::Loader => self.loader = text()?,
            XenNote::Features => self.features = text()?,
            // Informational, 32-bit only, or not acted on by a PV64 loader (§1.2).
            XenNote::Info
            | XenNote::PaeMode
            | XenNote::BswMode
            | XenNote::HvStartLow
            | XenNote::L1MfnValid
            | XenNote::SuspendCancel
            | XenNote::Phys32Entry => {}
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One note as Xen lays it out: header, name, pad to 4, desc, pad to 4.
    pub(crate) fn note(name: &[u8], kind: u32, desc: &[u8]) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(desc);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    pub(crate) fn xen(kind: XenNote, desc: &[u8]) -> std::vec::Vec<u8> {
        note(b"Xen\0", kind.raw(), desc)
    }

    #[test]
    fn reads_every_kind_and_skips_foreign_notes() {
        let mut area = std::vec::Vec::new();
        area.extend(note(b"GNU\0", 3, &[1, 2, 3, 4, 5]));
        area.extend(xen(XenNote::GuestOs, b"fredvisor-test\0"));
        area.extend(xen(XenNote::XenVersion, b"xen-3.0\0"));
        area.extend(xen(XenNote::Loader, b"generic\0"));
        area.extend(xen(XenNote::VirtBase, &0u64.to_le_bytes()));
        area.extend(xen(XenNote::HypercallPage, &0x2000u32.to_le_bytes()));
        area.extend(xen(XenNote::Entry, &0x1000u16.to_le_bytes()));
        area.extend(xen(XenNote::PaddrOffset, &[0]));
        area.extend(xen(
            XenNote::Features,
            b"!writable_page_tables|pae_pgdir_above_4gb\0",
        ));
        area.extend(xen(XenNote::L1MfnValid, &[0; 16]));
        area.extend(note(b"Xen\0", 99, b"unknown types are ignored"));
        let mut notes = XenNotes::default();
        notes.add_area(&area).unwrap();
        assert_eq!(
            notes,
            XenNotes {
                count: 10,
                entry: Some(0x1000),
                hypercall_page: Some(0x2000),
                virt_base: Some(0),
                paddr_offset: Some(0),
                xen_version: Some(b"xen-3.0"),
                guest_os: Some(b"fredvisor-test"),
                loader: Some(b"generic"),
                features: Some(b"!writable_page_tables|pae_pgdir_above_4gb"),
                ..XenNotes::default()
            }
        );
    }

    #[test]
    fn a_name_must_be_exactly_xen_with_its_nul() {
        let mut area = note(b"Xen", XenNote::Entry.raw(), &[1]);
        area.extend(note(b"XEN\0", XenNote::Entry.raw(), &[1]));
        area.extend(note(b"Xen\0\0", XenNote::Entry.raw(), &[1]));
        let mut notes = XenNotes::default();
        notes.add_area(&area).unwrap();
        assert_eq!(notes.count, 0);
    }

    #[test]
    fn malformed_notes_are_errors() {
        let mut notes = XenNotes::default();
        // descsz claims more than the area holds.
        let mut area = xen(XenNote::Entry, &[0; 8]);
        area[4] = 64;
        assert_eq!(
            notes.add_area(&area),
            Err(BuildError::BadNote(NoteProblem::Truncated { offset: 0 }))
        );
        // namesz near u32::MAX must not overflow.
        let mut area = xen(XenNote::Entry, &[0; 8]);
        area[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            notes.add_area(&area),
            Err(BuildError::BadNote(NoteProblem::Truncated { .. }))
        ));
        assert_eq!(
            XenNotes::default().add_area(&xen(XenNote::Entry, &[0; 3])),
            Err(BuildError::BadNote(NoteProblem::IntegerSize {
                note: 1,
                size: 3
            }))
        );
        assert_eq!(
            XenNotes::default().add_area(&xen(XenNote::XenVersion, b"xen-3.0")),
            Err(BuildError::BadNote(NoteProblem::Unterminated { note: 5 }))
        );
        // A few stray bytes after the last note are not a note.
        let mut area = xen(XenNote::Entry, &[7]);
        area.extend_from_slice(&[0; 11]);
        let mut notes = XenNotes::default();
        notes.add_area(&area).unwrap();
        assert_eq!(notes.entry, Some(7));
    }
}
