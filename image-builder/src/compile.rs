//! Building the target binaries (nucleus, Ring3 servers) with cargo.
//!
//! Owns the exact cargo invocation of each kind of binary (target, target directory,
//! RUSTFLAGS), the list of servers, and the once-per-process / once-at-a-time guarantees:
//! a process builds the nucleus at most once, and an exclusive file lock in the target
//! directory serialises concurrent test binaries. Does not touch the ISO.

use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};

use crate::progress::Step;
use crate::shutdown::OwnedChild;
use crate::tools::{KERNEL_TARGET, Tool, Toolbox};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Environment variable that carries the source revision into target builds.
pub const REVISION_VAR: &str = "FREDVISOR_REVISION";

/// One kind of target binary: which crates, where they are built, with which flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetBuild {
    /// Directory under `<workspace>/target`.
    pub target_dir: &'static str,
    /// Replaces any user `RUSTFLAGS` for this build.
    pub rustflags: &'static str,
}

/// defmt's compile-time filter for the target builds: every level the trace uses.
pub const DEFMT_LOG: &str = "debug";

/// The Ring0 nucleus: linked in L4 slot 257 (inside Xen's window, outside the top 2 GiB the
/// kernel code model needs), so its code is position-independent (RIP-relative) and the
/// link (`--no-pie`) resolves every absolute address.
pub const NUCLEUS_BUILD: TargetBuild = TargetBuild {
    target_dir: "kernel",
    rustflags: "-C relocation-model=pie -C code-model=small",
};

/// Ring3 servers: static ELFs at a fixed low address.
pub const SERVER_BUILD: TargetBuild = TargetBuild {
    target_dir: "servers",
    rustflags: "-C relocation-model=static -C code-model=small",
};

/// A Ring3 server shipped as a GRUB module `module2 /boot/<name> <name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    /// Cargo package, binary and module name (they are the same).
    pub name: &'static str,
}

/// The servers of architecture.md §6. Each is built only once its crate exists in the
/// workspace, so adding a server is one line here.
pub const SERVERS: &[ServerSpec] = &[
    ServerSpec {
        name: "fred-server",
    },
    ServerSpec { name: "pv-server" },
];

impl ServerSpec {
    /// True once `<workspace>/<name>/Cargo.toml` exists.
    pub fn present_in(&self, workspace: &Path) -> bool {
        workspace.join(self.name).join("Cargo.toml").is_file()
    }

    /// Looks a server up by name.
    pub fn by_name(name: &str) -> Option<Self> {
        SERVERS.iter().copied().find(|s| s.name == name)
    }
}

/// Builds `packages` for `x86_64-unknown-none` in release and returns each binary's path.
///
/// Holds an exclusive lock on `<target_dir>/.image-builder.lock` while cargo runs, so that
/// parallel test binaries wait for one another instead of racing on the same outputs.
pub fn build_target(
    tools: &Toolbox,
    workspace: &Path,
    kind: TargetBuild,
    packages: &[&str],
    verbose: bool,
) -> Result<Vec<PathBuf>> {
    let cargo = tools.find(Tool::Cargo)?;
    tools.rust_target()?;
    let target_dir = workspace.join("target").join(kind.target_dir);
    fs::create_dir_all(&target_dir)
        .with_context(|| format!("cannot create {}", target_dir.display()))?;
    let lock_path = target_dir.join(".image-builder.lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;

    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            KERNEL_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("PATH", tools.search_path())
        .env("RUSTFLAGS", kind.rustflags)
        // The nucleus prints it in its banner (`option_env!`, so cargo rebuilds on a change).
        .env(
            REVISION_VAR,
            &crate::reproducible::source(workspace).revision,
        )
        // Every trace record is compiled in; `trace=` chooses at boot (defmt's default keeps
        // only errors).
        .env("DEFMT_LOG", DEFMT_LOG)
        // Both would take precedence over RUSTFLAGS, or leak the host's into the target build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    for package in packages {
        command.args(["-p", package]);
    }
    // Verbose: cargo's `Compiling` lines and, on a terminal, its progress bar. Otherwise
    // (tests, CI logs) captured and shown only on failure.
    let shown = verbose;
    if shown {
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
    } else {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let child = OwnedChild::spawn(&mut command)
        .with_context(|| format!("cannot run {}", cargo.display()))?;
    let pipe = child.take_stderr();
    let mut stderr = Vec::new();
    if let Some(mut pipe) = pipe {
        // Until cargo closes it, i.e. ends; a read error only loses the error text.
        let _ = pipe.read_to_end(&mut stderr);
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {}", cargo.display()))?;
    drop(lock);
    if !status.success() {
        let output = match shown {
            true => "its output is above".to_owned(),
            false => String::from_utf8_lossy(&stderr).trim_end().to_owned(),
        };
        bail!(
            "cargo build of {} for {KERNEL_TARGET} failed (RUSTFLAGS=\"{}\"):\n{output}",
            packages.join(", "),
            kind.rustflags,
        );
    }
    let out_dir = target_dir.join(KERNEL_TARGET).join("release");
    packages
        .iter()
        .map(|package| {
            let elf = out_dir.join(package);
            check_elf(&elf).map(|()| elf)
        })
        .collect()
}

/// Starts the progress line of a build step: on a line of its own when cargo's output
/// (`verbose`) follows.
pub fn build_step(name: &'static str, verbose: bool) -> Step {
    if verbose {
        Step::start_own_line(name, "cargo's output follows")
    } else {
        Step::start(name)
    }
}

/// Fails with one line unless `path` is a readable file starting with the ELF magic.
pub fn check_elf(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if magic != *b"\x7fELF" {
        bail!(
            "{} is not an ELF file (it does not start with \\x7fELF)",
            path.display()
        );
    }
    Ok(())
}

/// The nucleus ELF, built at most once per process (the first caller's result is kept;
/// a failure is kept too, so parallel tests report it instead of rebuilding).
pub fn nucleus_once(tools: &Toolbox, verbose: bool) -> Result<PathBuf> {
    static NUCLEUS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    if let Some(built) = NUCLEUS.get() {
        Step::cached("build nucleus");
        return built.clone().map_err(anyhow::Error::msg);
    }
    // One thread builds; the others wait here and then find the result.
    let _building = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(built) = NUCLEUS.get() {
        Step::cached("build nucleus");
        return built.clone().map_err(anyhow::Error::msg);
    }
    let workspace = workspace_root();
    let previous = workspace
        .join("target")
        .join(NUCLEUS_BUILD.target_dir)
        .join(KERNEL_TARGET)
        .join("release/nucleus");
    if !previous.is_file() {
        eprintln!(
            "note: the first build compiles the nucleus, the servers and their dependencies \
             for {KERNEL_TARGET}: a few minutes; later builds take seconds"
        );
    }
    let step = build_step("build nucleus", verbose);
    let result = build_target(tools, &workspace, NUCLEUS_BUILD, &["nucleus"], verbose)
        .and_then(|mut elves| elves.pop().context("cargo produced no nucleus"));
    match result {
        Ok(elf) => {
            step.done("");
            // Tool errors (a test hiding grub-mkrescue …) are not cached: only build results.
            let _ = NUCLEUS.set(Ok(elf.clone()));
            Ok(elf)
        }
        Err(err) => {
            step.failed();
            if err.downcast_ref::<crate::tools::MissingTool>().is_none() {
                let _ = NUCLEUS.set(Err(format!("{err:#}")));
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn servers_only_when_their_crate_exists() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ServerSpec {
            name: "fred-server",
        };
        assert!(!spec.present_in(dir.path()));
        fs::create_dir_all(dir.path().join("fred-server")).unwrap();
        fs::write(dir.path().join("fred-server/Cargo.toml"), "").unwrap();
        assert!(spec.present_in(dir.path()));
        assert_eq!(
            ServerSpec::by_name("pv-server"),
            Some(ServerSpec { name: "pv-server" })
        );
        assert_eq!(ServerSpec::by_name("nucleus"), None);
    }

    #[test]
    fn check_elf_rejects_non_elf_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, b"#!/bin/sh\n").unwrap();
        let err = format!("{:#}", check_elf(&path).unwrap_err());
        assert!(
            err.contains("is not an ELF file") && !err.contains('\n'),
            "{err}"
        );
        fs::write(&path, b"\x7fELF\x02\x01\x01").unwrap();
        check_elf(&path).unwrap();
        let err = format!("{:#}", check_elf(&dir.path().join("missing")).unwrap_err());
        assert!(
            err.starts_with("cannot read") && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn build_flags_match_the_contract() {
        assert_eq!(
            NUCLEUS_BUILD.rustflags,
            "-C relocation-model=pie -C code-model=small"
        );
        assert_eq!(
            SERVER_BUILD.rustflags,
            "-C relocation-model=static -C code-model=small"
        );
        assert_eq!(
            (NUCLEUS_BUILD.target_dir, SERVER_BUILD.target_dir),
            ("kernel", "servers")
        );
    }
}
