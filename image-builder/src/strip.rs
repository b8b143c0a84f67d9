//! Stripped copies of the ELFs the ISO ships (issue 17: boot under a second).
//!
//! The nucleus and the servers are built with debug information (a server ELF is ~1.3 MiB, its
//! loadable segments ~200 KiB), and GRUB reads every byte of every module through the BIOS
//! before the nucleus runs. What the nucleus and GRUB read is the ELF header, the program
//! headers and the segments' bytes, so the shipped copy is the file cut after the last of
//! those, with no section headers. The unstripped ELFs stay under `target/` for debuggers,
//! the trace decoder (`.defmt`) and `nucleus.sym`.
use anyhow::{Context, Result, bail};
use elf::ElfBytes;
use elf::endian::AnyEndian;
use elf::file::Class;

/// ELF64 header fields cleared in the copy: `e_shoff` (8 bytes at 0x28) and `e_shentsize`,
/// `e_shnum`, `e_shstrndx` (2 bytes each from 0x3a).
const E_SHOFF: std::ops::Range<usize> = 0x28..0x30;
const E_SHFIELDS: std::ops::Range<usize> = 0x3a..0x40;

/// `bytes` without what no loader reads: everything after the last program header or
/// segment byte, and the section headers' fields.
pub fn stripped(bytes: &[u8]) -> Result<Vec<u8>> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).context("not an ELF file")?;
    if file.ehdr.class != Class::ELF64 {
        bail!("not an ELF64 file");
    }
    let ehdr = &file.ehdr;
    let mut end = ehdr
        .e_phoff
        .checked_add(u64::from(ehdr.e_phnum) * u64::from(ehdr.e_phentsize))
        .context("program headers past the end of the address space")?
        .max(u64::from(ehdr.e_ehsize));
    for phdr in file.segments().context("no program headers")?.iter() {
        let segment_end = phdr
            .p_offset
            .checked_add(phdr.p_filesz)
            .context("a segment past the end of the address space")?;
        end = end.max(segment_end);
    }
    let end = usize::try_from(end).context("segment end")?;
    let Some(kept) = bytes.get(..end) else {
        bail!(
            "a segment runs past the end of the file ({end} > {} bytes)",
            bytes.len()
        );
    };
    let mut out = kept.to_vec();
    out[E_SHOFF].fill(0);
    out[E_SHFIELDS].fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: header, one PT_LOAD of 16 bytes at 0x80, then 32 bytes of "debug"
    /// data and a section header table the copy must not keep.
    fn tiny() -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1; // EV_CURRENT
        f[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        f[0x28..0x30].copy_from_slice(&0x100u64.to_le_bytes()); // e_shoff
        f[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        f[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes()); // e_shnum
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes()); // e_shstrndx
        let ph = 0x40;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R X
        f[ph + 8..ph + 16].copy_from_slice(&0x80u64.to_le_bytes()); // p_offset
        f[ph + 16..ph + 24].copy_from_slice(&0x40_0000u64.to_le_bytes()); // p_vaddr
        f[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz
        f[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes()); // p_memsz
        f[0x80..0x90].copy_from_slice(&[0xc3; 16]);
        f
    }

    #[test]
    fn the_copy_ends_after_the_last_segment_and_has_no_section_headers() {
        let copy = stripped(&tiny()).unwrap();
        assert_eq!(copy.len(), 0x90);
        assert_eq!(&copy[0x80..0x90], &[0xc3; 16]);
        assert!(copy[E_SHOFF].iter().all(|&b| b == 0));
        assert!(copy[E_SHFIELDS].iter().all(|&b| b == 0));
        assert_eq!(
            &copy[..0x28],
            &tiny()[..0x28],
            "the header up to e_shoff is unchanged"
        );
        let file = ElfBytes::<AnyEndian>::minimal_parse(&copy).unwrap();
        let loads: Vec<_> = file.segments().unwrap().iter().collect();
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].p_vaddr, 0x40_0000);
    }

    #[test]
    fn a_segment_past_the_file_or_a_non_elf_is_refused() {
        let mut long = tiny();
        let filesz = 0x40 + 32;
        long[filesz..filesz + 8].copy_from_slice(&0x300u64.to_le_bytes());
        let error = format!("{:#}", stripped(&long).unwrap_err());
        assert!(error.contains("runs past the end of the file"), "{error}");
        assert!(stripped(b"#!/bin/sh\n").is_err());
    }
}
