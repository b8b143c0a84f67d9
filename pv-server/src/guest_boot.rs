//! Booting the guests shipped as boot modules (issue 15 points 1, 3, 5): each guest module's
//! text (`NAME mem=MIB cmdline=TEXT`, written by image-builder's `--guest`) is read, its
//! image parsed, a domain created, built and started; every failure is one
//! `guest NAME: rejected: <reason>` line, and the domain (if one was made) is destroyed, so
//! its frames go back.

use core::fmt::{self, Write};

use heapless::String;
use ipc::domain::{VcpuStart, valid_name};

use crate::domain_builder::{
    self, BuildError, DomainFrames, FrameWriteError, FrameWriter, GuestImage, Layout, Mfn,
};
use crate::hypervisor::{Hypervisor, MAX_GUEST_FRAMES};

/// Memory of a guest whose module says no `mem=`.
pub const DEFAULT_MIB: u64 = 16;
/// Longest module text pv-server reads.
pub const TEXT_MAX: usize = 512;
/// Largest `mem=` the text may ask for (whether it is free is the layout's question).
pub const MAX_MIB: u64 = 65536;
/// Largest guest image pv-server reads.
pub const IMAGE_MAX: usize = 2 << 20;

/// What a guest module's text asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec<'a> {
    pub name: &'a str,
    pub mib: u64,
    /// `cpu=N`: the CPU the vCPU is pinned to (the nucleus checks it is online).
    pub cpu: Option<u8>,
    pub cmdline: &'a [u8],
}

/// Why a module's text is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    BadName,
    BadMem,
    BadCpu,
    UnknownOption,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadName => "the guest name is not 1-24 characters of [A-Za-z0-9_.-]",
            Self::BadMem => "mem= is not a number of MiB between 1 and 65536",
            Self::BadCpu => "cpu= is not a CPU number 0-255",
            Self::UnknownOption => "unknown guest module option",
        })
    }
}

/// Parses `NAME [mem=MIB] [cpu=N] [cmdline=TEXT]` (`cmdline=` last: the rest of the text is
/// it).
pub fn parse_spec(text: &[u8]) -> Result<GuestSpec<'_>, SpecError> {
    let text = core::str::from_utf8(text).map_err(|_| SpecError::BadName)?;
    let (name, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    if !valid_name(name.as_bytes()) {
        return Err(SpecError::BadName);
    }
    let mut spec = GuestSpec {
        name,
        mib: DEFAULT_MIB,
        cpu: None,
        cmdline: b"",
    };
    while !rest.is_empty() {
        if let Some(cmdline) = rest.strip_prefix("cmdline=") {
            spec.cmdline = cmdline.as_bytes();
            break;
        }
        let (word, next) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = next;
        if let Some(mib) = word.strip_prefix("mem=") {
            spec.mib = mib.parse().map_err(|_| SpecError::BadMem)?;
            if spec.mib == 0 || spec.mib > MAX_MIB {
                return Err(SpecError::BadMem);
            }
        } else if let Some(cpu) = word.strip_prefix("cpu=") {
            spec.cpu = Some(cpu.parse().map_err(|_| SpecError::BadCpu)?);
        } else if !word.is_empty() {
            return Err(SpecError::UnknownOption);
        }
    }
    Ok(spec)
}

/// A guest that started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booted {
    pub domain: u16,
    pub name: String<24>,
    /// Its shared_info frame.
    pub shared_info: Mfn,
    /// vCPU 0's CR3 at start (the bootstrap L4).
    pub cr3: u64,
}

/// Why a guest did not start: the text after `rejected: `.
#[derive(Debug)]
pub enum Rejected {
    Spec(SpecError),
    TooLarge,
    Build(BuildError),
    NoDomain { pages: u64 },
    TooManyPages { pages: u64 },
    Tables(xen_abi::Errno),
    Start(xen_abi::Errno),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec(error) => error.fmt(f),
            Self::TooLarge => write!(f, "image larger than {} KiB", IMAGE_MAX / 1024),
            Self::Build(error) => error.fmt(f),
            Self::NoDomain { pages } => {
                write!(f, "the hypervisor cannot give a domain of {pages} pages")
            }
            Self::TooManyPages { pages } => write!(
                f,
                "{pages} pages are more than pv-server's {MAX_GUEST_FRAMES} per guest"
            ),
            Self::Tables(errno) => write!(f, "bootstrap page tables refused ({errno})"),
            Self::Start(errno) => write!(f, "start registers refused ({errno})"),
        }
    }
}

/// The builder's writer over the nucleus' frame copy.
struct Frames<'h, H> {
    hv: &'h mut H,
    domain: u16,
}

impl<H: Hypervisor> FrameWriter for Frames<'_, H> {
    fn write(&mut self, mfn: Mfn, offset: usize, bytes: &[u8]) -> Result<(), FrameWriteError> {
        self.hv.write_frame(self.domain, mfn, offset, bytes)
    }
}

/// Scratch memory a boot needs: the image and the frame list.
pub struct Scratch<'a> {
    pub image: &'a mut [u8],
    pub mfns: &'a mut [Mfn],
}

/// Boots guest module `index`; `None` when there is no such module. Lines go to `out`.
pub fn boot(
    hv: &mut impl Hypervisor,
    index: u64,
    scratch: &mut Scratch<'_>,
    out: &mut impl Write,
) -> Option<Result<Booted, Rejected>> {
    let mut text = [0u8; TEXT_MAX];
    let len = hv.module_text(index, &mut text)?;
    let text = &text[..len];
    let label = match parse_spec(text) {
        Ok(spec) => spec.name,
        Err(error) => {
            let _ = writeln!(out, "guest module {index}: rejected: {error}");
            return Some(Err(Rejected::Spec(error)));
        }
    };
    let result = boot_spec(hv, index, text, scratch, out);
    if let Err(reason) = &result {
        let _ = writeln!(out, "guest {label}: rejected: {reason}");
    }
    Some(result)
}

fn boot_spec(
    hv: &mut impl Hypervisor,
    index: u64,
    text: &[u8],
    scratch: &mut Scratch<'_>,
    out: &mut impl Write,
) -> Result<Booted, Rejected> {
    let spec = parse_spec(text).map_err(Rejected::Spec)?;
    let mut len = 0;
    loop {
        if len == scratch.image.len() {
            // Full buffer: anything more means the image does not fit.
            let mut probe = [0u8; 1];
            if hv.module_read(index, len as u64, &mut probe) != 0 {
                return Err(Rejected::TooLarge);
            }
            break;
        }
        let n = hv.module_read(index, len as u64, &mut scratch.image[len..]);
        if n == 0 {
            break;
        }
        len += n;
    }
    let image = GuestImage::parse(&scratch.image[..len]).map_err(Rejected::Build)?;
    let pages = spec.mib * 256;
    // The domain also needs its shared_info frame, and the nucleus keeps its reserve.
    let free = hv
        .free_frames()
        .saturating_sub(1 + ipc::domain::NUCLEUS_RESERVE_FRAMES);
    let layout = Layout::plan(&image, pages, free).map_err(Rejected::Build)?;
    if pages as usize > MAX_GUEST_FRAMES {
        return Err(Rejected::TooManyPages { pages });
    }
    let mfns = &mut scratch.mfns[..pages as usize + 1];
    let domain = hv
        .create(pages, spec.name.as_bytes(), mfns)
        .map_err(|()| Rejected::NoDomain { pages })?;
    let frames = DomainFrames {
        shared_info: mfns[0],
        p2m: &mfns[1..],
    };
    let built = domain_builder::build(
        &image,
        &layout,
        &frames,
        spec.cmdline,
        &mut Frames { hv, domain },
    );
    let started = built.map_err(Rejected::Build).and_then(|built| {
        let regs = &built.registers;
        hv.mmu(
            domain,
            ipc::domain::MmuOp::Pin {
                level: 4,
                mfn: regs.cr3 >> 12,
            },
        )
        .map_err(Rejected::Tables)?;
        let start = VcpuStart {
            rip: regs.rip,
            rsp: regs.rsp,
            rsi: regs.rsi,
            rflags: regs.rflags,
            cr3: regs.cr3,
            cs: regs.cs,
            ss: regs.ss,
            ds: regs.data,
            cpu: spec.cpu,
        };
        hv.start(domain, &start).map_err(Rejected::Start)?;
        Ok((built.started(domain), regs.cr3))
    });
    match started {
        Ok((line, cr3)) => {
            let _ = writeln!(out, "guest {}: {line}", spec.name);
            let mut name = String::new();
            let _ = name.push_str(spec.name);
            Ok(Booted {
                domain,
                name,
                shared_info: frames.shared_info,
                cr3,
            })
        }
        Err(reason) => {
            hv.destroy(domain);
            Err(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::FakeHypervisor;

    fn hello_elf() -> Vec<u8> {
        let path = ::tests::build_fixture_server("guest-hello").expect("build guest-hello");
        std::fs::read(path).unwrap()
    }

    #[test]
    fn module_text_gives_name_memory_and_command_line() {
        assert_eq!(
            parse_spec(b"hello"),
            Ok(GuestSpec {
                name: "hello",
                mib: 16,
                cpu: None,
                cmdline: b""
            })
        );
        assert_eq!(
            parse_spec(b"hello mem=8 cpu=3 cmdline=x").map(|s| (s.mib, s.cpu, s.cmdline)),
            Ok((8, Some(3), &b"x"[..]))
        );
        assert_eq!(parse_spec(b"a cpu=256"), Err(SpecError::BadCpu));
        assert_eq!(parse_spec(b"a cpu=x"), Err(SpecError::BadCpu));
        assert_eq!(
            parse_spec(b"pt mem=8 cmdline=console=hvc0 loglevel=3"),
            Ok(GuestSpec {
                name: "pt",
                mib: 8,
                cpu: None,
                cmdline: b"console=hvc0 loglevel=3"
            })
        );
        assert_eq!(parse_spec(b"a b"), Err(SpecError::UnknownOption));
        assert_eq!(parse_spec(b"a mem=0"), Err(SpecError::BadMem));
        assert_eq!(parse_spec(b"a mem=65537"), Err(SpecError::BadMem));
        assert_eq!(parse_spec(b"a mem=65536").map(|s| s.mib), Ok(65536));
        assert_eq!(parse_spec(b"a mem=x"), Err(SpecError::BadMem));
        assert_eq!(parse_spec(b"nucleus: mem=1"), Err(SpecError::BadName));
        assert_eq!(parse_spec(b""), Err(SpecError::BadName));
    }

    fn scratch_boot(
        hv: &mut FakeHypervisor,
        index: u64,
    ) -> (Option<Result<Booted, Rejected>>, std::string::String) {
        let mut image = vec![0u8; IMAGE_MAX];
        let mut mfns = vec![Mfn(0); MAX_GUEST_FRAMES + 1];
        let mut scratch = Scratch {
            image: &mut image,
            mfns: &mut mfns,
        };
        let mut out = std::string::String::new();
        let result = boot(hv, index, &mut scratch, &mut out);
        (result, out)
    }

    #[test]
    fn a_non_elf_module_is_rejected_with_one_line_and_nothing_is_created() {
        let mut hv = FakeHypervisor {
            free: 100_000,
            modules: vec![(b"junk mem=4".to_vec(), b"not an elf".to_vec())],
            ..Default::default()
        };
        let (result, out) = scratch_boot(&mut hv, 0);
        assert!(matches!(
            result,
            Some(Err(Rejected::Build(BuildError::NotElf)))
        ));
        assert_eq!(out.lines().count(), 1);
        assert!(out.starts_with("guest junk: rejected: "), "{out}");
        assert!(hv.domains.is_empty());
        assert!(scratch_boot(&mut hv, 1).0.is_none());
    }

    #[test]
    fn the_hello_guest_boots_pins_its_l4_and_starts() {
        let elf = hello_elf();
        let mut hv = FakeHypervisor {
            free: 100_000,
            modules: vec![(b"hello mem=4".to_vec(), elf)],
            ..Default::default()
        };
        let (result, out) = scratch_boot(&mut hv, 0);
        let booted = result.unwrap().unwrap();
        assert_eq!(booted.name.as_str(), "hello");
        assert!(
            out.starts_with("guest hello: started (domain 1, 4 MiB, entry 0x"),
            "{out}"
        );
        assert!(matches!(
            hv.mmu_ops.as_slice(),
            [ipc::domain::MmuOp::Pin { level: 4, .. }]
        ));
        let (_, regs) = hv.started[0];
        assert_eq!(regs.cs, 0xe033);
        assert_eq!(hv.free, 100_000 - 4 * 256 - 1);
    }

    #[test]
    fn more_memory_than_free_is_rejected_before_a_domain_exists() {
        let elf = hello_elf();
        let mut hv = FakeHypervisor {
            free: 1000,
            modules: vec![(b"big mem=512".to_vec(), elf)],
            ..Default::default()
        };
        let (result, out) = scratch_boot(&mut hv, 0);
        assert!(matches!(
            result,
            Some(Err(Rejected::Build(BuildError::NotEnoughMemory { .. })))
        ));
        assert!(out.starts_with("guest big: rejected: "), "{out}");
        assert!(hv.domains.is_empty());
    }
}
