//! tests: boot fredvisor in QEMU and assert on the serial console and the exit status.
//!
//! Helpers for `tests/*.rs`, on top of `image-builder`'s library (the code the CLI runs).
//! A boot test is three lines:
//!
//! ```no_run
//! # use tests::{QemuExit, markers};
//! # fn t() -> anyhow::Result<()> {
//! let boot = tests::boot_bios("selftest=int3 exit=qemu")?;
//! boot.expect_in_order(&["int3", markers::READY])?.expect_exit(QemuExit::Success)
//! # }
//! ```
//!
//! The nucleus is built once per process (and once at a time across processes: a file lock
//! in `target/kernel`); each command line gets its own ISO in its own temporary directory,
//! shared while tests with the same command line run; every boot writes COM1 to
//! `serial.log` in its own temporary directory and has a deadline, and QEMU is killed when
//! the boot ends, times out or is dropped. A failed expectation carries the whole log.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use image_builder::compile::{self, SERVER_BUILD, SERVERS};
pub use image_builder::{Boot, Firmware, Image, Iso, MissingTool, Qemu, QemuExit, Toolbox};
pub use ipc::markers;

pub mod machine;
pub mod scenarios;

/// Where the nucleus' image is linked (`nucleus/src/layout.rs`: L4 slot 257, inside Xen's
/// window): every RIP of nucleus code lies in `[NUCLEUS_IMAGE, NUCLEUS_IMAGE_END)`.
pub const NUCLEUS_IMAGE: u64 = 0xffff_8080_0000_0000;
pub const NUCLEUS_IMAGE_END: u64 = 0xffff_8100_0000_0000;
/// How a nucleus RIP below 4 GiB of image starts when printed (`{:#x}`).
pub const NUCLEUS_RIP_PREFIX: &str = "0xffff808000";

/// Deadline of one boot under TCG, generous for a slow two-core CI machine.
/// `FREDVISOR_BOOT_TIMEOUT=<seconds>` overrides it.
pub fn boot_timeout() -> Duration {
    timeout_or(60)
}

/// Deadline of one boot under Bochs: it interprets every instruction, and a boot with
/// crash dumps and restarts takes 30-80 s on a loaded two-core machine.
/// `FREDVISOR_BOOT_TIMEOUT=<seconds>` overrides it too.
pub fn bochs_boot_timeout() -> Duration {
    timeout_or(240)
}

fn timeout_or(default_seconds: u64) -> Duration {
    std::env::var("FREDVISOR_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(default_seconds), Duration::from_secs)
}

/// Builds (or reuses) the ISO for `image` and boots it with `firmware` and the deadline.
pub fn boot_image(image: &Image, firmware: Firmware) -> Result<Boot> {
    let iso = image.build_shared()?;
    Qemu::new(&iso)
        .uefi(firmware == Firmware::Uefi)
        .timeout(boot_timeout())
        .run()
}

/// Boots the nucleus with `cmdline` under BIOS (SeaBIOS).
pub fn boot_bios(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Bios)
}

/// Boots the nucleus with `cmdline` under UEFI (OVMF).
pub fn boot_uefi(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Uefi)
}

/// The banner line the nucleus prints: `fredvisor <version> (<source revision>)` (one
/// version for the workspace; the revision image-builder passes to the nucleus build).
pub fn banner() -> String {
    let workspace = compile::workspace_root();
    format!(
        "{}{} ({})",
        markers::BANNER,
        env!("CARGO_PKG_VERSION"),
        image_builder::reproducible::source(&workspace).revision
    )
}

/// The first `0x…` number in `text`, parsed as hexadecimal.
pub fn first_hex(text: &str) -> Option<u64> {
    let start = text.find("0x")? + 2;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The hexadecimal number (with or without `0x`) that follows `label` in `line`, e.g.
/// `hex_after("nucleus: #UD (6) at 0xffff…", " at ")` or `hex_after("cr2: fffffe…", "cr2: ")`.
pub fn hex_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    let rest = rest.strip_prefix("0x").unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The lines of `boot` for which `matches` holds.
pub fn lines_matching(boot: &Boot, matches: impl Fn(&str) -> bool) -> Vec<String> {
    boot.lines().filter(|l| matches(l)).collect()
}

/// The one line for which `matches` holds; fails (with the log) on none or several.
pub fn expect_one_line(boot: &Boot, what: &str, matches: impl Fn(&str) -> bool) -> Result<String> {
    let mut found = lines_matching(boot, matches);
    match found.len() {
        1 => Ok(found.remove(0)),
        n => anyhow::bail!(
            "{}",
            boot.report(&format!(
                "expected exactly one line with {what}, found {n}: {found:?}"
            ))
        ),
    }
}

/// Fails unless `boot` has a line equal to `expected` (after `\r` and escapes are removed).
pub fn expect_exact_line(boot: &Boot, expected: &str) -> Result<()> {
    boot.expect_line(&format!("exactly {expected:?}"), |l| l == expected)
        .map(drop)
}

/// Fails unless every one of `expected` is a whole serial line, each after the previous
/// one (other lines may come between).
pub fn expect_lines_in_order(boot: &Boot, expected: &[&str]) -> Result<()> {
    let lines: Vec<String> = boot.lines().collect();
    let mut from = 0;
    for (i, wanted) in expected.iter().enumerate() {
        match lines[from..].iter().position(|l| l == wanted) {
            Some(at) => from += at + 1,
            None => {
                let after = match i {
                    0 => String::new(),
                    _ => format!(" after the line {:?}", expected[i - 1]),
                };
                bail!(
                    "{}",
                    boot.report(&format!("expected the line {wanted:?}{after}"))
                );
            }
        }
    }
    Ok(())
}

/// How many serial lines equal `line`.
pub fn count_lines(boot: &Boot, line: &str) -> usize {
    boot.lines().filter(|l| l == line).count()
}

/// Fails unless exactly `times` serial lines equal `line`.
pub fn expect_line_count(boot: &Boot, line: &str, times: usize) -> Result<()> {
    let found = count_lines(boot, line);
    if found != times {
        bail!(
            "{}",
            boot.report(&format!("expected {times} line(s) {line:?}, found {found}"))
        );
    }
    Ok(())
}

/// Builds the Ring3 servers exactly as image-builder does (same cargo invocation, same
/// target directory and lock) and returns the bytes of server `name`'s ELF, read at once so
/// that a later rebuild cannot change them under the test.
pub fn built_server_elf(name: &str) -> Result<Vec<u8>> {
    let workspace = compile::workspace_root();
    let names: Vec<&str> = SERVERS
        .iter()
        .filter(|s| s.present_in(&workspace))
        .map(|s| s.name)
        .collect();
    let paths = compile::build_target(
        &Toolbox::from_env(),
        &workspace,
        SERVER_BUILD,
        &names,
        false,
    )?;
    let path = names
        .iter()
        .zip(&paths)
        .find(|(n, _)| **n == name)
        .map(|(_, p)| p)
        .with_context(|| format!("{name} is not one of the servers {names:?}"))?;
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Builds a server-like fixture crate of the workspace (e.g. `alt-server`) with the servers'
/// cargo invocation and returns its ELF.
pub fn build_fixture_server(package: &str) -> Result<PathBuf> {
    let workspace = compile::workspace_root();
    let mut paths = compile::build_target(
        &Toolbox::from_env(),
        &workspace,
        SERVER_BUILD,
        &[package],
        false,
    )?;
    paths
        .pop()
        .with_context(|| format!("cargo built no {package}"))
}

/// The bytes of the file at `path_in_iso` (e.g. `/boot/pv-server`) inside the ISO: what
/// GRUB really loads.
pub fn file_in_iso(iso: &Path, path_in_iso: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().context("cannot create a directory")?;
    let out = dir.path().join("extracted");
    let result = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", path_in_iso])
        .arg(&out)
        .output()
        .context("cannot run xorriso")?;
    if !result.status.success() {
        bail!(
            "xorriso cannot extract {path_in_iso} from {}: {}",
            iso.display(),
            String::from_utf8_lossy(&result.stderr).trim_end()
        );
    }
    std::fs::read(&out).with_context(|| format!("cannot read {path_in_iso} extracted from the ISO"))
}

/// Just enough ELF64 reading and patching for the server tests: program headers, the entry
/// point, the bytes behind a virtual address. Independent of the nucleus' validator, so a
/// test does not grade the validator with its own arithmetic.
pub mod elf {
    use anyhow::{Context, Result, bail, ensure};

    pub const PT_LOAD: u32 = 1;
    pub const PF_X: u32 = 1;
    const HEADER_SIZE: usize = 64;
    const PROGRAM_HEADER_SIZE: usize = 56;

    /// One program header, with where it sits in the file.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ProgramHeader {
        /// Index in the program header table (as `readelf -l` counts).
        pub index: u16,
        /// File offset of the header itself.
        pub at: usize,
        pub kind: u32,
        pub flags: u32,
        pub offset: u64,
        pub vaddr: u64,
        pub paddr: u64,
        pub filesz: u64,
        pub memsz: u64,
    }

    fn u16_at(elf: &[u8], at: usize) -> Result<u16> {
        let bytes = elf.get(at..at + 2).context("ELF too short")?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32_at(elf: &[u8], at: usize) -> Result<u32> {
        let bytes = elf.get(at..at + 4).context("ELF too short")?;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    }

    fn u64_at(elf: &[u8], at: usize) -> Result<u64> {
        let bytes = elf.get(at..at + 8).context("ELF too short")?;
        Ok(u64::from_le_bytes(bytes.try_into()?))
    }

    fn check_header(elf: &[u8]) -> Result<()> {
        ensure!(
            elf.len() >= HEADER_SIZE && elf[..4] == *b"\x7fELF",
            "not an ELF file"
        );
        ensure!(elf[4] == 2 && elf[5] == 1, "not a little-endian ELF64 file");
        Ok(())
    }

    /// `e_entry`.
    pub fn entry(elf: &[u8]) -> Result<u64> {
        check_header(elf)?;
        u64_at(elf, 24)
    }

    /// Every program header.
    pub fn program_headers(elf: &[u8]) -> Result<Vec<ProgramHeader>> {
        check_header(elf)?;
        let phoff = usize::try_from(u64_at(elf, 32)?)?;
        let entsize = usize::from(u16_at(elf, 54)?);
        let count = u16_at(elf, 56)?;
        if count > 0 && entsize != PROGRAM_HEADER_SIZE {
            bail!("program header size {entsize}");
        }
        (0..count)
            .map(|index| {
                let at = phoff + usize::from(index) * PROGRAM_HEADER_SIZE;
                Ok(ProgramHeader {
                    index,
                    at,
                    kind: u32_at(elf, at)?,
                    flags: u32_at(elf, at + 4)?,
                    offset: u64_at(elf, at + 8)?,
                    vaddr: u64_at(elf, at + 16)?,
                    paddr: u64_at(elf, at + 24)?,
                    filesz: u64_at(elf, at + 32)?,
                    memsz: u64_at(elf, at + 40)?,
                })
            })
            .collect()
    }

    /// The `PT_LOAD` headers.
    pub fn loads(elf: &[u8]) -> Result<Vec<ProgramHeader>> {
        Ok(program_headers(elf)?
            .into_iter()
            .filter(|h| h.kind == PT_LOAD)
            .collect())
    }

    /// Moves segment `header` to `address` (`p_vaddr` and `p_paddr`), leaving its bytes.
    pub fn set_load_address(elf: &mut [u8], header: &ProgramHeader, address: u64) -> Result<()> {
        for field in [header.at + 16, header.at + 24] {
            elf.get_mut(field..field + 8)
                .context("ELF too short")?
                .copy_from_slice(&address.to_le_bytes());
        }
        Ok(())
    }

    /// `len` bytes of file content at virtual address `address` of an executable `PT_LOAD`.
    pub fn code_at(elf: &[u8], address: u64, len: usize) -> Result<&[u8]> {
        let segment = loads(elf)?
            .into_iter()
            .find(|h| h.flags & PF_X != 0 && address >= h.vaddr && address - h.vaddr < h.filesz)
            .with_context(|| format!("{address:#x} is in no executable segment"))?;
        let start = usize::try_from(segment.offset + (address - segment.vaddr))?;
        elf.get(start..start + len)
            .with_context(|| format!("{len} bytes at {address:#x} run past the file"))
    }
}

/// The self-test summary the nucleus prints: `selftest: <passed> passed, <failed> failed`.
pub fn selftest_summary(passed: u32, failed: u32) -> String {
    format!("selftest: {passed} passed, {failed} failed")
}

/// The resumable event self-tests `selftest=all` runs, in the order the nucleus runs them.
pub const EVENT_SELFTESTS: [&str; 5] = ["int3", "ud2", "pf-unmapped", "pf-nx", "gp-selector"];

/// Fails unless each of [`EVENT_SELFTESTS`] printed its `passed` verdict, in order, followed
/// by the summary `selftest: 5 passed, 0 failed`, and no test printed `FAILED`.
pub fn expect_event_selftests_passed(boot: &Boot) -> Result<()> {
    let verdicts: Vec<String> = EVENT_SELFTESTS
        .iter()
        .map(|name| format!("selftest: {name}: passed ("))
        .collect();
    let mut in_order: Vec<&str> = verdicts.iter().map(String::as_str).collect();
    let summary = selftest_summary(EVENT_SELFTESTS.len() as u32, 0);
    in_order.push(&summary);
    boot.expect_in_order(&in_order)?.expect_absent(": FAILED")?;
    expect_exact_line(boot, &summary)
}

/// A small deterministic generator (SplitMix64) for reproducible test input.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_numbers_are_found_after_labels() {
        let line = "nucleus: #PF (14) at 0xffffffff8020e45f: address (CR2) 0xdeadb000, error 0x0";
        assert_eq!(first_hex(line), Some(0xffff_ffff_8020_e45f));
        assert_eq!(hex_after(line, "(CR2) "), Some(0xdead_b000));
        assert_eq!(hex_after(line, "error "), Some(0));
        assert_eq!(
            hex_after("nucleus: cr2: fffffe000000df28   cr3: 0", "cr2: "),
            Some(0xffff_fe00_0000_df28)
        );
        assert_eq!(hex_after("no number here", "here"), None);
        assert_eq!(first_hex("none"), None);
    }

    /// An ELF64 header with program headers at 64, then `file_len` zero bytes in all.
    fn tiny_elf(entry: u64, loads: &[(u32, u64, u64, u64)], file_len: usize) -> Vec<u8> {
        let mut out = vec![0u8; file_len.max(64 + loads.len() * 56)];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(loads.len() as u16).to_le_bytes());
        for (i, &(flags, offset, vaddr, size)) in loads.iter().enumerate() {
            let at = 64 + i * 56;
            out[at..at + 4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            out[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
            out[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        }
        out
    }

    #[test]
    fn elf_headers_are_read_and_patched() {
        let mut image = tiny_elf(
            0x40_0000,
            &[(5, 0x1000, 0x40_0000, 0x10), (6, 0x2000, 0x40_1000, 8)],
            0x2008,
        );
        image[0x1004..0x1006].copy_from_slice(&[0x0f, 0x0b]);
        assert_eq!(elf::entry(&image).unwrap(), 0x40_0000);
        let loads = elf::loads(&image).unwrap();
        assert_eq!(loads.len(), 2);
        assert_eq!(
            (
                loads[1].index,
                loads[1].at,
                loads[1].offset,
                loads[1].vaddr,
                loads[1].flags
            ),
            (1, 120, 0x2000, 0x40_1000, 6)
        );
        assert_eq!(elf::code_at(&image, 0x40_0004, 2).unwrap(), [0x0f, 0x0b]);
        // Not executable, past the file bytes, or outside every segment.
        assert!(elf::code_at(&image, 0x40_1000, 1).is_err());
        assert!(elf::code_at(&image, 0x40_0010, 1).is_err());
        assert!(elf::code_at(&image, 0x50_0000, 1).is_err());
        elf::set_load_address(&mut image, &loads[0], 0xffff_8000_0000_0000).unwrap();
        let moved = elf::loads(&image).unwrap()[0];
        assert_eq!(
            (moved.vaddr, moved.paddr, moved.offset, moved.filesz),
            (0xffff_8000_0000_0000, 0xffff_8000_0000_0000, 0x1000, 0x10)
        );
        assert!(elf::program_headers(b"#!/bin/sh").is_err());
        assert!(elf::program_headers(&image[..100]).is_err());
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert!((0..100).all(|_| a.below(7) < 7));
    }
}
