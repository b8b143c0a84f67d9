//! The bootable image: nucleus + servers + extra modules + `grub.cfg` → hybrid BIOS/UEFI ISO.
//!
//! Owns the `/boot` layout inside the ISO and the `grub-mkrescue` call. Every input is
//! checked before anything is built (tools, command line, module names and files), so a
//! mistake costs one line and no build time. Building the binaries is `compile`'s job.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use crate::reproducible;
use crate::shutdown::{OwnedChild, OwnedDir, OwnedFile};
use anyhow::{Context, Result, bail};

use crate::compile::{self, SERVER_BUILD, SERVERS, ServerSpec};
use crate::grub::{self, ModuleEntry};
use crate::guest::GuestFile;
use crate::progress::{Step, format_size};
use crate::tools::Toolbox;

/// Default output of the CLI's `build`: `<workspace>/target/fredvisor.iso`.
pub fn default_iso_path() -> PathBuf {
    compile::workspace_root().join("target/fredvisor.iso")
}

/// The boot module string of the kexec image ([`Image::kexec_image`]).
pub const KEXEC_MODULE: &str = "kexec-image";

/// `NAME=PATH`, as given to `--module` and `--server`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedFile {
    pub name: String,
    pub path: PathBuf,
}

impl std::str::FromStr for NamedFile {
    type Err = String;

    fn from_str(arg: &str) -> Result<Self, String> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=PATH, got {arg:?}"))?;
        grub::check_module_name(name).map_err(|e| e.to_string())?;
        if path.is_empty() {
            return Err(format!("expected NAME=PATH, got {arg:?} (empty path)"));
        }
        Ok(Self {
            name: name.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

/// What goes into an ISO. Build it with [`Image::build`]; the same code serves the CLI and
/// the tests.
#[derive(Clone, Debug, Default)]
pub struct Image {
    cmdline: String,
    modules: Vec<NamedFile>,
    servers: Vec<NamedFile>,
    /// Names of `servers` shipped without the ELF check ([`Image::server_unchecked`]).
    unchecked: Vec<String>,
    guests: Vec<GuestFile>,
    nucleus: Option<PathBuf>,
    kexec_image: Option<PathBuf>,
    output: Option<PathBuf>,
    tools: Toolbox,
    verbose: bool,
    menu: grub::Menu,
}

impl Image {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends options to the nucleus command line of every menu entry.
    pub fn cmdline(mut self, options: &str) -> Self {
        self.cmdline = grub::join_cmdline([self.cmdline.as_str(), options]);
        self
    }

    /// Adds `path` as boot module `module2 /boot/modules/<name> <name>`.
    pub fn module(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.modules.push(NamedFile {
            name: name.into(),
            path: path.into(),
        });
        self
    }

    /// Ships a PV64 guest as boot module `guest NAME mem=MIB cmdline=TEXT` in
    /// `/boot/guests/NAME`. The file is not checked: pv-server rejects what it cannot boot
    /// (the boot tests ship broken images on purpose).
    pub fn guest(mut self, guest: GuestFile) -> Self {
        self.guests.push(guest);
        self
    }

    /// Ships the ELF at `path` as server `name` instead of building that server.
    pub fn server(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.servers.push(NamedFile {
            name: name.into(),
            path: path.into(),
        });
        self
    }

    /// Ships the file at `path` as server `name` without checking that it is an ELF file:
    /// for tests of the nucleus' own module validation (random bytes, a non-ELF file). The
    /// CLI has no way to ask for this.
    pub fn server_unchecked(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.unchecked.push(name.into());
        self.server(name, path)
    }

    /// Ships the ELF at `path` as the nucleus instead of building it (another build, a
    /// bisection, a stand-in kernel).
    pub fn nucleus(mut self, path: impl Into<PathBuf>) -> Self {
        self.nucleus = Some(path.into());
        self
    }

    /// Ships the multiboot2 ELF at `path` as boot module [`KEXEC_MODULE`], the image a kexec
    /// hands the machine to (default: the nucleus ELF itself, so any ISO can kexec into
    /// itself). Only that it is an ELF file is checked here; the nucleus checks the rest
    /// when a kexec asks for it.
    pub fn kexec_image(mut self, path: impl Into<PathBuf>) -> Self {
        self.kexec_image = Some(path.into());
        self
    }

    /// Writes the ISO to `path` (default: a fresh temporary directory owned by the [`Iso`]).
    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    /// Looks tools up with this toolbox (tests inject a `PATH` without some tool).
    pub fn tools(mut self, tools: Toolbox) -> Self {
        self.tools = tools;
        self
    }

    /// Whether GRUB shows its menu first (default: it boots the default entry at once).
    pub fn menu(mut self, menu: grub::Menu) -> Self {
        self.menu = menu;
        self
    }

    /// Shows cargo's own output while building.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// The nucleus command line of the default menu entry.
    pub fn get_cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Checks everything, builds what is missing and makes the ISO.
    pub fn build(&self) -> Result<Iso> {
        // 1. Cheap checks first: user input, then the tools (before anything runs).
        grub::check_cmdline(&self.cmdline)?;
        let workspace = compile::workspace_root();
        let modules = self.checked_modules()?;
        let overrides = self.checked_servers()?;
        if let Some(nucleus) = &self.nucleus {
            compile::check_elf(nucleus).context("nucleus")?;
        }
        if let Some(kexec) = &self.kexec_image {
            compile::check_elf(kexec).context("kexec image")?;
        }
        let (mkrescue, xorriso) = self.tools.iso_tools()?;

        // 2. Binaries.
        let nucleus = match &self.nucleus {
            Some(path) => path.clone(),
            None => compile::nucleus_once(&self.tools, self.verbose)?,
        };
        let mut servers: Vec<NamedFile> = overrides;
        let to_build: Vec<&str> = SERVERS
            .iter()
            .filter(|s| s.present_in(&workspace) && !servers.iter().any(|o| o.name == s.name))
            .map(|s| s.name)
            .collect();
        if !to_build.is_empty() {
            let step = compile::build_step("build servers", self.verbose);
            let built = compile::build_target(
                &self.tools,
                &workspace,
                SERVER_BUILD,
                &to_build,
                self.verbose,
            );
            let built = match built {
                Ok(built) => built,
                Err(err) => {
                    step.failed();
                    return Err(err);
                }
            };
            step.done(&format!(" ({})", to_build.join(", ")));
            servers.extend(to_build.iter().zip(built).map(|(name, path)| NamedFile {
                name: (*name).into(),
                path,
            }));
        }
        // Servers first, in the order of SERVERS, so the nucleus sees a stable module list.
        servers.sort_by_key(|s| SERVERS.iter().position(|spec| spec.name == s.name));

        // 3. Staging tree and grub.cfg.
        let step = Step::start("grub.cfg");
        let staging =
            OwnedDir::new("fredvisor-iso-").context("cannot create a staging directory")?;
        let boot = staging.path().join("boot");
        fs::create_dir_all(boot.join("grub"))
            .and_then(|()| fs::create_dir_all(boot.join("modules")))
            .with_context(|| format!("cannot create {}", boot.display()))?;
        ship_stripped(&nucleus, &boot.join("nucleus"))?;
        // The nucleus' own module first, then the servers, then the extra modules: the
        // nucleus keeps only its first modules (it says how many it ignored), and the symbol
        // map must not be the one that goes.
        let nucleus_bytes =
            fs::read(&nucleus).with_context(|| format!("cannot read {}", nucleus.display()))?;
        let map = crate::symbols::symbol_map(&nucleus_bytes)?;
        let map_path = boot.join(crate::symbols::MODULE_NAME);
        fs::write(&map_path, map)
            .with_context(|| format!("cannot write {}", map_path.display()))?;
        let mut entries = vec![ModuleEntry {
            path: format!("/boot/{}", crate::symbols::MODULE_NAME),
            name: crate::symbols::MODULE_NAME.into(),
        }];
        for server in &servers {
            if self.unchecked.contains(&server.name) {
                copy(&server.path, &boot.join(&server.name))?;
            } else {
                ship_stripped(&server.path, &boot.join(&server.name))?;
            }
            entries.push(ModuleEntry {
                path: format!("/boot/{}", server.name),
                name: server.name.clone(),
            });
        }
        // The kexec image after the servers, before the extra modules (which the nucleus may
        // have to leave out). By default it is the nucleus itself, added to the ISO as a
        // second name of `/boot/nucleus`'s data ([`SecondName`]), so GRUB's second read of it comes
        // from its disk cache instead of through the BIOS.
        let mut clones = Vec::new();
        match &self.kexec_image {
            Some(other) => ship_stripped(other, &boot.join(KEXEC_MODULE))?,
            None => clones.push(SecondName {
                of: "/boot/nucleus".into(),
                at: format!("/boot/{KEXEC_MODULE}"),
            }),
        }
        entries.push(ModuleEntry {
            path: format!("/boot/{KEXEC_MODULE}"),
            name: KEXEC_MODULE.into(),
        });
        for module in &modules {
            copy(&module.path, &boot.join("modules").join(&module.name))?;
            entries.push(ModuleEntry {
                path: format!("/boot/modules/{}", module.name),
                name: module.name.clone(),
            });
        }
        if !self.guests.is_empty() {
            fs::create_dir_all(boot.join("guests"))
                .with_context(|| format!("cannot create {}", boot.display()))?;
        }
        for (i, guest) in self.guests.iter().enumerate() {
            guest.check().map_err(anyhow::Error::msg)?;
            if self.guests[..i].iter().any(|g| g.name == guest.name) {
                bail!("two guests are named {}", guest.name);
            }
            copy(&guest.path, &boot.join("guests").join(&guest.name))?;
            entries.push(ModuleEntry {
                path: format!("/boot/guests/{}", guest.name),
                name: guest.module_text(),
            });
        }
        let source = reproducible::source(&workspace);
        let cfg = grub::config(
            "/boot/nucleus",
            &self.cmdline,
            &entries,
            &source.revision,
            self.menu,
        )?;
        let cfg_path = boot.join("grub/grub.cfg");
        fs::write(&cfg_path, &cfg)
            .with_context(|| format!("cannot write {}", cfg_path.display()))?;
        step.done("");

        // 4. The ISO.
        let step = Step::start("iso");
        let (dir, path) = match &self.output {
            Some(path) => (None, path.clone()),
            None => {
                let dir =
                    OwnedDir::new("fredvisor-").context("cannot create a directory for the ISO")?;
                let path = dir.path().join("fredvisor.iso");
                (Some(dir), path)
            }
        };
        if let Err(err) = mkrescue_iso(
            &self.tools,
            &mkrescue,
            &xorriso,
            staging.path(),
            &path,
            source,
            &clones,
        ) {
            step.failed();
            return Err(err);
        }
        let size = fs::metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        step.done(&format!(" ({})", format_size(size)));
        Ok(Iso {
            path,
            size,
            nucleus,
            servers,
            cmdline: self.cmdline.clone(),
            modules: entries.into_iter().map(|e| e.name).collect(),
            grub_cfg: cfg,
            _dir: dir,
        })
    }

    /// Like [`Image::build`], but shares the ISO with any other live `Arc<Iso>` built from
    /// the same inputs in this process. The ISO (and its temporary directory) goes away with
    /// its last user, so nothing is left behind when the process ends.
    pub fn build_shared(&self) -> Result<Arc<Iso>> {
        type Key = (
            String,
            Vec<NamedFile>,
            Vec<NamedFile>,
            Vec<String>,
            Vec<GuestFile>,
            Option<PathBuf>,
            Option<PathBuf>,
            Option<PathBuf>,
        );
        static SHARED: Mutex<Option<HashMap<Key, Weak<Iso>>>> = Mutex::new(None);
        let key: Key = (
            self.cmdline.clone(),
            self.modules.clone(),
            self.servers.clone(),
            self.unchecked.clone(),
            self.guests.clone(),
            self.nucleus.clone(),
            self.kexec_image.clone(),
            self.output.clone(),
        );
        let lookup = || {
            let guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .and_then(|map| map.get(&key))
                .and_then(Weak::upgrade)
        };
        if let Some(iso) = lookup() {
            Step::cached("iso");
            return Ok(iso);
        }
        // Built outside the lock so different command lines build in parallel; a rare
        // duplicate build of the same inputs is harmless.
        let iso = Arc::new(self.build()?);
        let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        map.retain(|_, weak| weak.strong_count() > 0);
        map.insert(key, Arc::downgrade(&iso));
        Ok(iso)
    }

    fn checked_modules(&self) -> Result<Vec<NamedFile>> {
        let mut seen = Vec::new();
        for module in &self.modules {
            grub::check_module_name(&module.name)?;
            if seen.contains(&module.name.as_str()) {
                bail!("module name {:?} is given twice", module.name);
            }
            if ServerSpec::by_name(&module.name).is_some() {
                bail!(
                    "module name {:?} is a server's: ship a server with --server {}=PATH",
                    module.name,
                    module.name
                );
            }
            seen.push(&module.name);
            let meta = fs::metadata(&module.path).with_context(|| {
                format!(
                    "module {}: cannot read {}",
                    module.name,
                    module.path.display()
                )
            })?;
            if !meta.is_file() {
                bail!(
                    "module {}: {} is not a file",
                    module.name,
                    module.path.display()
                );
            }
        }
        Ok(self.modules.clone())
    }

    fn checked_servers(&self) -> Result<Vec<NamedFile>> {
        let mut seen = Vec::new();
        for server in &self.servers {
            if ServerSpec::by_name(&server.name).is_none() {
                let known: Vec<&str> = SERVERS.iter().map(|s| s.name).collect();
                bail!(
                    "unknown server {:?}: the servers are {}",
                    server.name,
                    known.join(", ")
                );
            }
            if seen.contains(&server.name.as_str()) {
                bail!("server {:?} is given twice", server.name);
            }
            seen.push(&server.name);
            if self.unchecked.contains(&server.name) {
                let meta = fs::metadata(&server.path).with_context(|| {
                    format!(
                        "server {}: cannot read {}",
                        server.name,
                        server.path.display()
                    )
                })?;
                if !meta.is_file() {
                    bail!(
                        "server {}: {} is not a file",
                        server.name,
                        server.path.display()
                    );
                }
                continue;
            }
            compile::check_elf(&server.path).with_context(|| format!("server {}", server.name))?;
        }
        Ok(self.servers.clone())
    }
}

/// Copies the ELF `from` to `to` without what no loader reads ([`crate::strip`]); a file
/// that does not parse as ELF64 goes unchanged (the nucleus judges it: tests ship broken
/// servers on purpose).
fn ship_stripped(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    match crate::strip::stripped(&bytes) {
        Ok(copy) => fs::write(to, copy).with_context(|| format!("cannot write {}", to.display())),
        Err(_) => copy(from, to),
    }
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A file of the ISO that is another's data under a second name (xorriso's `-clone`): one
/// extent, read once. Unlike a hard link (`--hardlinks`) it carries no inode number of the
/// staging tree, so the ISO stays reproducible.
struct SecondName {
    /// The file in the ISO whose data it is (`/boot/nucleus`).
    of: String,
    /// Its own path in the ISO.
    at: String,
}

/// Runs `grub-mkrescue` on `staging` plus `clones`, writing `output` atomically (a partial
/// ISO never appears under the final name) and reproducibly (every date at the source's
/// epoch, the EFI image's serial from its revision, see [`reproducible`]).
fn mkrescue_iso(
    tools: &Toolbox,
    mkrescue: &Path,
    xorriso: &Path,
    staging: &Path,
    output: &Path,
    source: &reproducible::Source,
    clones: &[SecondName],
) -> Result<()> {
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let partial =
        OwnedFile::new(output.with_extension(format!("iso.partial-{}", std::process::id())));
    // grub-mkrescue's own scratch folders go in here, so a signal leaves none behind.
    let scratch =
        OwnedDir::new("fredvisor-mkrescue-").context("cannot create a scratch directory")?;
    let mut command = Command::new(mkrescue);
    command
        .arg("--xorriso")
        .arg(xorriso)
        // Only what grub.cfg uses (plus their dependencies): a third of the default size.
        .arg(format!("--install-modules={}", grub::MODULES.join(" ")))
        .arg(format!("--fonts={}", grub::FONT))
        .args(["--locales=", "--themes="])
        .args(reproducible::xorriso_args(source.epoch))
        .arg("-o")
        .arg(partial.path())
        .arg(staging)
        .env("PATH", tools.search_path())
        .env("SOURCE_DATE_EPOCH", source.epoch.to_string())
        .env("TMPDIR", scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !clones.is_empty() {
        // After `--`, xorriso's own commands, run before the image is written.
        command.arg("--");
        for clone in clones {
            command.args(["-clone", &clone.of, &clone.at]);
        }
    }
    let child = OwnedChild::spawn(&mut command)
        .with_context(|| format!("cannot run {}", mkrescue.display()))?;
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.take_stderr() {
        let _ = std::io::Read::read_to_end(&mut pipe, &mut stderr);
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {}", mkrescue.display()))?;
    if !status.success() {
        bail!(
            "grub-mkrescue failed ({status}):\n{}",
            String::from_utf8_lossy(&stderr).trim_end()
        );
    }
    reproducible::fix_efi_serial(partial.path(), reproducible::fat_serial(&source.revision))?;
    partial.rename(output)
}

/// A built ISO. When built without [`Image::output`], it lives in a temporary directory
/// that is removed when the `Iso` is dropped.
#[derive(Debug)]
pub struct Iso {
    path: PathBuf,
    size: u64,
    /// The nucleus ELF that went in, with its symbols and debug information.
    nucleus: PathBuf,
    /// The server ELFs that went in (unstripped), by module name.
    servers: Vec<NamedFile>,
    cmdline: String,
    modules: Vec<String>,
    grub_cfg: String,
    _dir: Option<OwnedDir>,
}

impl Iso {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The nucleus ELF inside (unstripped: what a debugger loads).
    pub fn nucleus_elf(&self) -> &Path {
        &self.nucleus
    }

    /// The server ELFs inside (unstripped), by module name.
    pub fn server_elfs(&self) -> &[NamedFile] {
        &self.servers
    }

    /// The user part of the command line (every menu entry has it).
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Module names in the order GRUB loads them (servers first).
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    pub fn grub_cfg(&self) -> &str {
        &self.grub_cfg
    }
}

#[cfg(test)]
mod tests;
