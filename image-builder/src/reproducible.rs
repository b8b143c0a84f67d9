//! Reproducible ISOs: two builds of one source tree are byte-identical, and the ISO says
//! which tree it was built from.
//!
//! Owns the source revision (`git describe --always --dirty`), the one timestamp every date
//! in the ISO gets (`SOURCE_DATE_EPOCH` if set, else the time of the last commit), the
//! options that make `grub-mkrescue`'s xorriso use it, and the one thing xorriso cannot
//! fix: the FAT volume serial of the EFI boot image, which `mformat` draws at random. That
//! serial is rewritten in the finished ISO, derived from the revision, by [`fix_efi_serial`]
//! (no checksum covers it: El Torito and GPT point at the image, they do not hash it).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};

/// What the ISO records about its sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `git describe --always --dirty --abbrev=12`, or `unknown` outside a git checkout.
    pub revision: String,
    /// Seconds since 1970 that every date in the ISO is set to.
    pub epoch: u64,
}

/// The source of `workspace`, looked up once per process.
pub fn source(workspace: &Path) -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let revision = git(
            workspace,
            &["describe", "--always", "--dirty", "--abbrev=12"],
        )
        .unwrap_or_else(|| "unknown".to_owned());
        let epoch = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .or_else(|| git(workspace, &["log", "-1", "--format=%ct"]))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Source { revision, epoch }
    })
}

fn git(workspace: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// `YYYYMMDDhhmmss00` (UTC), the timestring xorriso's mkisofs mode takes.
pub fn xorriso_time(epoch: u64) -> String {
    let (days, seconds) = (epoch / 86_400, epoch % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}00",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Year, month, day of `days` after 1970-01-01 (proleptic Gregorian calendar), counted in
/// 400-year eras of 146 097 days that start on March 1st.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Extra `grub-mkrescue` (xorriso) options: every file date and the volume dates (and so
/// the volume UUID and the GPT GUIDs derived from it) at `epoch`.
pub fn xorriso_args(epoch: u64) -> Vec<String> {
    let time = xorriso_time(epoch);
    vec![
        "--set_all_file_dates".into(),
        time.clone(),
        format!("--modification-date={time}"),
    ]
}

/// The EFI image's FAT serial for `revision`: 32 bits of FNV-1a over it.
pub fn fat_serial(revision: &str) -> u32 {
    revision.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

const SECTOR: u64 = 2048;
/// Platform id of an EFI El Torito entry.
const PLATFORM_EFI: u8 = 0xef;

/// Rewrites the volume serial of the ISO's EFI boot image (a FAT file system that El Torito
/// points at) to `serial`.
pub fn fix_efi_serial(iso: &Path, serial: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)
        .with_context(|| format!("cannot open {}", iso.display()))?;
    let mut read_sector = |lba: u64| -> Result<[u8; SECTOR as usize]> {
        let mut sector = [0u8; SECTOR as usize];
        file.seek(SeekFrom::Start(lba * SECTOR))?;
        file.read_exact(&mut sector)?;
        Ok(sector)
    };
    // Volume descriptor 17: the El Torito boot record, with the catalog's sector.
    let record = read_sector(17).context("cannot read the boot record")?;
    ensure!(
        record[0] == 0 && &record[1..6] == b"CD001" && record[7..30] == *b"EL TORITO SPECIFICATION",
        "{} has no El Torito boot record",
        iso.display()
    );
    let catalog = read_sector(u64::from(u32::from_le_bytes(
        record[0x47..0x4b].try_into()?,
    )))?;
    let lba = efi_image_lba(&catalog).context("no EFI boot image in the El Torito catalog")?;
    let boot = read_sector(u64::from(lba))?;
    let at = fat_serial_offset(&boot).context("the EFI boot image is not a FAT file system")?;
    file.seek(SeekFrom::Start(u64::from(lba) * SECTOR + at as u64))?;
    file.write_all(&serial.to_le_bytes())?;
    Ok(())
}

/// The load sector of the first EFI entry of an El Torito catalog: a validation entry, the
/// default (BIOS) entry, then section headers (0x90, 0x91 for the last) with their entries.
fn efi_image_lba(catalog: &[u8]) -> Option<u32> {
    let mut entries = catalog.chunks_exact(32);
    let validation = entries.next()?;
    if validation[0] != 1 || validation[30..32] != [0x55, 0xaa] {
        return None;
    }
    let _default = entries.next()?;
    while let Some(header) = entries.next() {
        if !matches!(header[0], 0x90 | 0x91) {
            return None;
        }
        let count = u16::from_le_bytes([header[2], header[3]]);
        for _ in 0..count {
            let entry = entries.next()?;
            if header[1] == PLATFORM_EFI && entry[0] == 0x88 {
                return Some(u32::from_le_bytes(entry[8..12].try_into().ok()?));
            }
        }
        if header[0] == 0x91 {
            return None;
        }
    }
    None
}

/// Where a FAT boot sector keeps its volume serial: after the extended boot signature
/// 0x29, at 0x27 (FAT12/16) or 0x43 (FAT32).
fn fat_serial_offset(boot: &[u8]) -> Option<usize> {
    if boot.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    if boot[0x26] == 0x29 && boot[0x36..0x39] == *b"FAT" {
        Some(0x27)
    } else if boot[0x42] == 0x29 && boot[0x52..0x57] == *b"FAT32" {
        Some(0x43)
    } else {
        None
    }
}

/// Fails unless `a` and `b` have the same bytes, naming the first difference.
pub fn expect_identical(a: &Path, b: &Path) -> Result<()> {
    let (x, y) = (fs::read(a)?, fs::read(b)?);
    if let Some(at) = x.iter().zip(&y).position(|(p, q)| p != q) {
        let differing = x.iter().zip(&y).filter(|(p, q)| p != q).count();
        bail!(
            "{} and {} differ in {differing} bytes, the first at offset {at:#x} (sector {})",
            a.display(),
            b.display(),
            at as u64 / SECTOR
        );
    }
    ensure!(
        x.len() == y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(xorriso_time(0), "1970010100000000");
        assert_eq!(xorriso_time(1_700_000_000), "2023111422132000");
        assert_eq!(xorriso_time(951_782_400), "2000022900000000");
        assert_eq!(xorriso_time(4_107_542_399), "2100022823595900");
    }

    #[test]
    fn fat_serials_follow_the_revision() {
        assert_eq!(fat_serial("abc"), fat_serial("abc"));
        assert_ne!(fat_serial("abc"), fat_serial("abc-dirty"));
    }

    fn catalog_with_efi_at(lba: u32) -> Vec<u8> {
        let mut catalog = vec![0u8; 2048];
        catalog[0] = 1;
        catalog[30] = 0x55;
        catalog[31] = 0xaa;
        catalog[32] = 0x88; // default (BIOS) entry
        catalog[64..68].copy_from_slice(&[0x91, PLATFORM_EFI, 1, 0]);
        catalog[96] = 0x88;
        catalog[104..108].copy_from_slice(&lba.to_le_bytes());
        catalog
    }

    #[test]
    fn the_efi_entry_is_found_in_the_catalog() {
        assert_eq!(efi_image_lba(&catalog_with_efi_at(35)), Some(35));
        let mut bios_only = catalog_with_efi_at(35);
        bios_only[65] = 0; // platform 0: x86 BIOS
        assert_eq!(efi_image_lba(&bios_only), None);
        assert_eq!(efi_image_lba(&[0u8; 2048]), None);
    }

    #[test]
    fn fat_serial_offsets() {
        let mut boot = vec![0u8; 512];
        boot[510..].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(fat_serial_offset(&boot), None);
        boot[0x26] = 0x29;
        boot[0x36..0x3e].copy_from_slice(b"FAT12   ");
        assert_eq!(fat_serial_offset(&boot), Some(0x27));
    }
}
