//! Host tools the image pipeline needs, found up front with one clear line when missing.
//!
//! Owns the PATH search (with an injectable search path, so tests can hide a tool), the
//! install hint for each tool, the GRUB platform directories, the `x86_64-unknown-none`
//! rustup target check and the OVMF firmware search. Does not run any tool: `image` and
//! `qemu` do that, with the paths found here.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target every nucleus and server binary is built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// A prerequisite that is not installed, with the command that installs it.
///
/// Its `Display` is the single line the CLI prints after `error: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingTool {
    /// What is missing, as a user would search for it (`grub-mkrescue`, `OVMF firmware`).
    pub tool: String,
    /// Where we looked (`on PATH`, `in /usr/lib/grub`).
    pub looked: String,
    /// How to install it (`apt-get install grub-pc-bin grub-efi-amd64-bin`).
    pub install: &'static str,
}

impl fmt::Display for MissingTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} not found {}: install it with '{}'",
            self.tool, self.looked, self.install
        )
    }
}

impl std::error::Error for MissingTool {}

/// An executable looked up on the search path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    GrubMkrescue,
    Xorriso,
    Mformat,
    QemuSystem,
    Cargo,
    Rustc,
}

impl Tool {
    /// File name of the executable.
    pub const fn program(self) -> &'static str {
        match self {
            Self::GrubMkrescue => "grub-mkrescue",
            Self::Xorriso => "xorriso",
            Self::Mformat => "mformat",
            Self::QemuSystem => "qemu-system-x86_64",
            Self::Cargo => "cargo",
            Self::Rustc => "rustc",
        }
    }

    /// Command that installs it on Debian/Ubuntu (or with rustup).
    pub const fn install(self) -> &'static str {
        match self {
            Self::GrubMkrescue => "apt-get install grub-pc-bin grub-efi-amd64-bin",
            Self::Xorriso => "apt-get install xorriso",
            Self::Mformat => "apt-get install mtools",
            Self::QemuSystem => "apt-get install qemu-system-x86",
            Self::Cargo | Self::Rustc => "curl https://sh.rustup.rs -sSf | sh",
        }
    }

    /// Environment variable that overrides the lookup (cargo sets `CARGO` for its children).
    const fn override_var(self) -> Option<&'static str> {
        match self {
            Self::Cargo => Some("CARGO"),
            Self::Rustc => Some("RUSTC"),
            _ => None,
        }
    }
}

/// Where tools are looked up: a `PATH`-style search path, by default the process's `PATH`.
#[derive(Clone, Debug)]
pub struct Toolbox {
    search_path: OsString,
    /// Honour `CARGO`/`RUSTC`; off when a test injects its own search path.
    use_overrides: bool,
}

impl Default for Toolbox {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Toolbox {
    /// The process's `PATH`, plus the `CARGO` and `RUSTC` overrides.
    pub fn from_env() -> Self {
        Self {
            search_path: env::var_os("PATH").unwrap_or_default(),
            use_overrides: true,
        }
    }

    /// Only `search_path` (a `PATH`-style list); environment overrides are ignored.
    pub fn with_search_path(search_path: impl Into<OsString>) -> Self {
        Self {
            search_path: search_path.into(),
            use_overrides: false,
        }
    }

    /// The search path, to hand to child processes as their `PATH`.
    pub fn search_path(&self) -> &OsStr {
        &self.search_path
    }

    /// Full path of `tool`, or the one-line [`MissingTool`] error.
    pub fn find(&self, tool: Tool) -> Result<PathBuf, MissingTool> {
        if self.use_overrides
            && let Some(var) = tool.override_var()
            && let Some(path) = env::var_os(var).filter(|p| !p.is_empty())
        {
            let path = PathBuf::from(path);
            // A bare name (`RUSTC=rustc`) is searched on the path like any other tool.
            if path.components().count() > 1 {
                return if is_executable(&path) {
                    Ok(path)
                } else {
                    Err(MissingTool {
                        tool: tool.program().into(),
                        looked: format!("at {} (from ${var})", path.display()),
                        install: tool.install(),
                    })
                };
            }
        }
        search(&self.search_path, tool.program()).ok_or_else(|| MissingTool {
            tool: tool.program().into(),
            looked: "on PATH".into(),
            install: tool.install(),
        })
    }

    /// Checks the tools `grub-mkrescue` needs for a hybrid BIOS + UEFI image and returns
    /// `(grub-mkrescue, xorriso)`.
    pub fn iso_tools(&self) -> Result<(PathBuf, PathBuf), MissingTool> {
        let mkrescue = self.find(Tool::GrubMkrescue)?;
        grub_platforms(&mkrescue)?;
        let xorriso = self.find(Tool::Xorriso)?;
        self.find(Tool::Mformat)?;
        Ok((mkrescue, xorriso))
    }

    /// Checks that `rustc` has the `x86_64-unknown-none` standard library installed.
    pub fn rust_target(&self) -> Result<(), MissingTool> {
        let rustc = self.find(Tool::Rustc)?;
        let missing = || MissingTool {
            tool: format!("the Rust target {KERNEL_TARGET}"),
            looked: "in the sysroot of rustc".into(),
            install: "rustup target add x86_64-unknown-none",
        };
        let output = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .env("PATH", &self.search_path)
            .output()
            .map_err(|_| missing())?;
        let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || sysroot.is_empty() {
            return Err(missing());
        }
        let lib = Path::new(&sysroot)
            .join("lib/rustlib")
            .join(KERNEL_TARGET)
            .join("lib");
        if lib.is_dir() { Ok(()) } else { Err(missing()) }
    }
}

/// GRUB platforms a hybrid image needs, with the Debian package that ships each.
const GRUB_PLATFORMS: [(&str, &str); 2] = [
    ("i386-pc", "apt-get install grub-pc-bin"),
    ("x86_64-efi", "apt-get install grub-efi-amd64-bin"),
];

/// Checks that GRUB's BIOS and UEFI modules sit beside `grub-mkrescue` (`<prefix>/lib/grub`).
/// Without them `grub-mkrescue` silently makes an image that boots one way only.
pub fn grub_platforms(mkrescue: &Path) -> Result<(), MissingTool> {
    // Through symlinks: the modules sit beside the real program, not beside a link to it.
    let mkrescue = std::fs::canonicalize(mkrescue).unwrap_or_else(|_| mkrescue.to_path_buf());
    let prefix = mkrescue
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/usr"));
    let lib = prefix.join("lib/grub");
    for (platform, install) in GRUB_PLATFORMS {
        if !lib.join(platform).join("modinfo.sh").is_file() {
            return Err(MissingTool {
                tool: format!("GRUB {platform} modules"),
                looked: format!("in {}", lib.display()),
                install,
            });
        }
    }
    Ok(())
}

/// Searches a `PATH`-style list for an executable `program`.
pub fn search(search_path: &OsStr, program: &str) -> Option<PathBuf> {
    env::split_paths(search_path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// UEFI firmware for QEMU: a code image with (optionally) a template of its variable store;
/// every boot gets both as one ROM of its own, so runs never share or modify them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    /// The variable store template, which goes in front of `code` in the ROM QEMU gets
    /// (`qemu::firmware_args`); `None`: `code` is a combined image.
    pub vars: Option<PathBuf>,
}

/// Where distributions install OVMF (code and variable store template), best first: Debian 12
/// / Ubuntu's 2 MiB build (`ovmf`), their 4 MiB one (the only one from Debian 13 on), Arch
/// (`edk2-ovmf`), Fedora (`edk2-ovmf`), then the combined images. Debian's 2 MiB build runs
/// its PEI phase in 64-bit mode, the 4 MiB one in 32-bit mode; under TCG the 2 MiB one
/// reaches GRUB with ~0.3 s less CPU (min of 4 interleaved boots: 2.1 vs 2.5 s).
const OVMF_PFLASH: [(&str, &str); 4] = [
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
];
const OVMF_COMBINED: [&str; 2] = ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];

/// Environment variable naming a combined OVMF image to use instead of the search.
pub const OVMF_ENV: &str = "FREDVISOR_OVMF";

impl Ovmf {
    /// `$FREDVISOR_OVMF` if set, else the first installed candidate.
    pub fn find() -> Result<Self, MissingTool> {
        let missing = |looked: String| MissingTool {
            tool: "OVMF firmware (UEFI for QEMU)".into(),
            looked,
            install: "apt-get install ovmf",
        };
        if let Some(path) = env::var_os(OVMF_ENV).filter(|p| !p.is_empty()) {
            let code = PathBuf::from(path);
            return if code.is_file() {
                Ok(Self { code, vars: None })
            } else {
                Err(missing(format!("at {} (from ${OVMF_ENV})", code.display())))
            };
        }
        Self::find_in(&OVMF_PFLASH, &OVMF_COMBINED)
            .ok_or_else(|| missing("in /usr/share/OVMF, /usr/share/ovmf, /usr/share/edk2".into()))
    }

    fn find_in(pflash: &[(&str, &str)], combined: &[&str]) -> Option<Self> {
        let pair = pflash
            .iter()
            .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file());
        if let Some((code, vars)) = pair {
            return Some(Self {
                code: code.into(),
                vars: Some(vars.into()),
            });
        }
        combined
            .iter()
            .find(|c| Path::new(c).is_file())
            .map(|c| Self {
                code: c.into(),
                vars: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_one_line_naming_tool_and_package() {
        let err = Toolbox::with_search_path("")
            .find(Tool::GrubMkrescue)
            .unwrap_err();
        let line = err.to_string();
        assert_eq!(
            line,
            "grub-mkrescue not found on PATH: install it with \
             'apt-get install grub-pc-bin grub-efi-amd64-bin'"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn every_tool_names_its_installer() {
        for tool in [
            Tool::GrubMkrescue,
            Tool::Xorriso,
            Tool::Mformat,
            Tool::QemuSystem,
            Tool::Cargo,
            Tool::Rustc,
        ] {
            let err = Toolbox::with_search_path("/nonexistent")
                .find(tool)
                .unwrap_err();
            assert!(err.to_string().starts_with(tool.program()), "{err}");
            assert!(err.to_string().contains(tool.install()), "{err}");
        }
    }

    #[test]
    fn search_finds_only_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("xorriso");
        std::fs::write(&plain, "").unwrap();
        assert_eq!(search(dir.path().as_os_str(), "xorriso"), None);
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(search(dir.path().as_os_str(), "xorriso"), Some(plain));
    }

    #[test]
    fn grub_platforms_named_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin/grub-mkrescue");
        let err = grub_platforms(&bin).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("GRUB i386-pc modules not found"),
            "{err}"
        );
        assert!(err.to_string().contains("grub-pc-bin"), "{err}");
        std::fs::create_dir_all(dir.path().join("lib/grub/i386-pc")).unwrap();
        std::fs::write(dir.path().join("lib/grub/i386-pc/modinfo.sh"), "").unwrap();
        let err = grub_platforms(&bin).unwrap_err();
        assert!(err.to_string().contains("grub-efi-amd64-bin"), "{err}");
    }

    #[test]
    fn ovmf_prefers_pflash_pair_then_combined() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let (code, vars, combined) = (p("CODE.fd"), p("VARS.fd"), p("OVMF.fd"));
        assert_eq!(Ovmf::find_in(&[(&code, &vars)], &[&combined]), None);
        std::fs::write(&combined, "").unwrap();
        assert_eq!(
            Ovmf::find_in(&[(&code, &vars)], &[&combined]).unwrap().vars,
            None
        );
        std::fs::write(&code, "").unwrap();
        std::fs::write(&vars, "").unwrap();
        let found = Ovmf::find_in(&[(&code, &vars)], &[&combined]).unwrap();
        assert_eq!((found.code, found.vars), (code.into(), Some(vars.into())));
    }
}
