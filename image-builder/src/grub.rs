//! `grub.cfg` for the fredvisor ISO: menu entries, command lines and boot modules.
//!
//! Owns the text of the configuration and the checks that keep user input from changing
//! its meaning (GRUB's script syntax treats quotes, `$`, `;` and braces specially). Does not
//! know where files come from: `image` lays them out under `/boot` and passes their names.

use std::fmt::{self, Write as _};

/// Seconds GRUB shows its menu before booting the default entry ([`Menu::Shown`]).
pub const MENU_TIMEOUT_SECONDS: u32 = 1;

/// Whether GRUB waits with its menu on the screen before booting the default entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Menu {
    /// [`MENU_TIMEOUT_SECONDS`] to choose an entry: the bare-metal ISO (`build`).
    Shown,
    /// The default entry at once: `run`, `bench` and the tests (a second of every boot).
    #[default]
    Skipped,
}

impl Menu {
    /// The value of GRUB's `timeout` variable.
    pub const fn timeout_seconds(self) -> u32 {
        match self {
            Self::Shown => MENU_TIMEOUT_SECONDS,
            Self::Skipped => 0,
        }
    }

    /// The video drivers GRUB loads under UEFI for its framebuffer console: every one it has
    /// (`all_video`) on bare metal; under QEMU only the one OVMF's display needs, the UEFI
    /// Graphics Output Protocol (`efi_gop`). Loading the others (UGA, the Bochs and Cirrus
    /// VGA drivers) from the CD and probing them took ~0.3 s of a TCG UEFI boot's CPU
    /// (GRUB 0.82 -> 0.52 s, median of 4).
    pub const fn video_module(self) -> &'static str {
        match self {
            Self::Shown => "all_video",
            Self::Skipped => "efi_gop",
        }
    }
}

/// The one font the ISO ships (`grub-mkrescue --fonts`) and the EFI menu draws with.
pub const FONT: &str = "ascii";

/// Menu entries: title suffix and the options that entry puts before the user's.
/// Titles avoid the lowercase banner `fredvisor ` so they can never pass for nucleus output.
pub const MENU_ENTRIES: [(&str, &str); 3] = [
    ("Fredvisor", ""),
    ("Fredvisor, fred=off", "fred=off"),
    ("Fredvisor, fred=on", "fred=on"),
];

/// GRUB modules the generated `grub.cfg` needs; `grub-mkrescue` installs only these (and
/// what they depend on: `all_video` brings `efi_gop`, [`Menu::video_module`]). Adding a
/// command to the config may mean adding its module here.
/// The `part_*` modules are there because GRUB's EFI image loads every partition map it
/// knows of at start-up and prints an error for each missing one.
pub const MODULES: [&str; 23] = [
    "normal",
    "configfile",
    "boot",
    "multiboot2",
    "iso9660",
    "test",
    "echo",
    "terminal",
    "font",
    "gfxterm",
    "all_video",
    "sleep",
    "part_acorn",
    "part_amiga",
    "part_apple",
    "part_bsd",
    "part_dfly",
    "part_dvh",
    "part_gpt",
    "part_msdos",
    "part_plan",
    "part_sun",
    "part_sunpc",
];

/// A multiboot2 module: `module2 <path> <name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleEntry {
    /// Absolute path inside the ISO (`/boot/fred-server`, `/boot/modules/hello`).
    pub path: String,
    /// The module's command line, which the nucleus reads as its name.
    pub name: String,
}

/// Input that would not survive GRUB's script parser unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A command-line character GRUB would interpret (quote, `$`, `;`, …).
    CommandLineCharacter(char),
    /// A module name that is empty or has characters other than `[A-Za-z0-9._-]`.
    ModuleName(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CommandLineCharacter(c) => write!(
                f,
                "command line contains {c:?}, which GRUB would interpret: \
                 use letters, digits, spaces and =,.:/_+-"
            ),
            Self::ModuleName(name) => write!(
                f,
                "module name {name:?} is not a plain name: use 1-64 of A-Z a-z 0-9 . _ -"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a nucleus command line: printable ASCII without GRUB's special characters.
pub fn check_cmdline(cmdline: &str) -> Result<(), ConfigError> {
    const ALLOWED_PUNCTUATION: &str = "=,.:/_+-@%";
    match cmdline
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == ' ' || ALLOWED_PUNCTUATION.contains(c)))
    {
        Some(c) => Err(ConfigError::CommandLineCharacter(c)),
        None => Ok(()),
    }
}

/// Checks a module name, which is also its file name under `/boot`.
pub fn check_module_name(name: &str) -> Result<(), ConfigError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(plain) {
        return Err(ConfigError::ModuleName(name.to_owned()));
    }
    Ok(())
}

/// Joins option lists, dropping empty parts and extra spaces.
pub fn join_cmdline<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The whole `grub.cfg`: one entry per [`MENU_ENTRIES`], each loading the nucleus from
/// `kernel_path` with `extra_cmdline` appended, and every module; the first line names the
/// source `revision`.
pub fn config(
    kernel_path: &str,
    extra_cmdline: &str,
    modules: &[ModuleEntry],
    revision: &str,
    menu: Menu,
) -> Result<String, ConfigError> {
    check_cmdline(extra_cmdline)?;
    for module in modules {
        // A module's text is its name, then (guests) options checked like a command line.
        let (name, args) = module.name.split_once(' ').unwrap_or((&module.name, ""));
        check_module_name(name)?;
        check_cmdline(args)?;
    }
    let mut cfg = String::new();
    // `writeln!` into a String cannot fail; the results are ignored through `let _`.
    let _ = writeln!(
        cfg,
        "# Generated by image-builder from source revision {}; edits are overwritten.",
        revision.replace(['\n', '\r'], " ")
    );
    let _ = writeln!(cfg, "set timeout={}", menu.timeout_seconds());
    let _ = writeln!(cfg, "set default=0");
    // The menu stays on the screen so that COM1 carries only nucleus output. Under UEFI the
    // firmware console is mirrored to serial by OVMF, so draw on the framebuffer instead,
    // with GRUB's ASCII font ([`FONT`]: the titles are ASCII; the Unicode one is 2.3 MiB,
    // a third of the ISO, and reading it took ~0.3 s of a TCG UEFI boot).
    let _ = writeln!(cfg, "if [ \"${{grub_platform}}\" = \"efi\" ]; then");
    let _ = writeln!(cfg, "    insmod {}", menu.video_module());
    let _ = writeln!(cfg, "    insmod gfxterm");
    let _ = writeln!(
        cfg,
        "    if loadfont {FONT}; then terminal_output gfxterm; fi"
    );
    let _ = writeln!(cfg, "else");
    let _ = writeln!(cfg, "    terminal_output console");
    let _ = writeln!(cfg, "fi");
    let _ = writeln!(cfg, "terminal_input console");
    for (title, options) in MENU_ENTRIES {
        let kernel_line = join_cmdline([kernel_path, options, extra_cmdline]);
        let _ = writeln!(cfg, "\nmenuentry \"{title}\" {{");
        let _ = writeln!(cfg, "    multiboot2 {kernel_line}");
        for module in modules {
            let _ = writeln!(cfg, "    module2 {} {}", module.path, module.name);
        }
        let _ = writeln!(cfg, "    boot");
        let _ = writeln!(cfg, "}}");
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str) -> ModuleEntry {
        ModuleEntry {
            path: format!("/boot/modules/{name}"),
            name: name.into(),
        }
    }

    #[test]
    fn three_entries_default_first_with_user_options_last() {
        let cfg = config(
            "/boot/nucleus",
            "exit=qemu loglvl=3",
            &[],
            "abc123",
            Menu::Shown,
        )
        .unwrap();
        assert!(cfg.starts_with("# Generated by image-builder from source revision abc123;"));
        let lines: Vec<&str> = cfg
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("multiboot2"))
            .collect();
        assert_eq!(
            lines,
            [
                "multiboot2 /boot/nucleus exit=qemu loglvl=3",
                "multiboot2 /boot/nucleus fred=off exit=qemu loglvl=3",
                "multiboot2 /boot/nucleus fred=on exit=qemu loglvl=3",
            ]
        );
        assert!(cfg.contains("set default=0\n"));
        assert!(cfg.contains(&format!("set timeout={MENU_TIMEOUT_SECONDS}\n")));
        let at_once = config("/boot/nucleus", "", &[], "abc123", Menu::Skipped).unwrap();
        assert!(at_once.contains("set timeout=0\n"), "{at_once}");
        assert_eq!(
            Menu::default(),
            Menu::Skipped,
            "only `build` shows the menu"
        );
        assert!(
            !cfg.contains("serial"),
            "GRUB must not write to the serial port:\n{cfg}"
        );
    }

    #[test]
    fn the_menu_is_drawn_with_the_ascii_font_only() {
        let cfg = config("/boot/nucleus", "", &[], "r", Menu::Shown).unwrap();
        assert!(
            cfg.contains("if loadfont ascii; then terminal_output gfxterm; fi"),
            "{cfg}"
        );
        assert!(!cfg.contains("unicode"), "{cfg}");
        assert!(cfg.contains("    insmod all_video\n"), "{cfg}");
        let at_once = config("/boot/nucleus", "", &[], "r", Menu::Skipped).unwrap();
        assert!(
            at_once.contains("    insmod efi_gop\n") && !at_once.contains("all_video"),
            "{at_once}"
        );
        assert!(at_once.contains("if loadfont ascii; then terminal_output gfxterm; fi"));
        for (title, _) in MENU_ENTRIES {
            assert!(title.is_ascii(), "{title:?} needs a font beyond {FONT}");
        }
    }

    #[test]
    fn every_entry_loads_every_module() {
        let cfg = config(
            "/boot/nucleus",
            "",
            &[module("hello-module"), module("x.bin")],
            "r",
            Menu::Skipped,
        )
        .unwrap();
        assert_eq!(
            cfg.matches("module2 /boot/modules/hello-module hello-module\n")
                .count(),
            3
        );
        assert_eq!(
            cfg.matches("module2 /boot/modules/x.bin x.bin\n").count(),
            3
        );
        assert_eq!(cfg.matches("menuentry ").count(), 3);
    }

    #[test]
    fn empty_cmdline_leaves_no_trailing_space() {
        let cfg = config("/boot/nucleus", "  ", &[], "r", Menu::Skipped).unwrap();
        assert!(cfg.contains("multiboot2 /boot/nucleus\n"), "{cfg}");
    }

    #[test]
    fn grub_syntax_in_cmdline_is_rejected() {
        for bad in [
            "a;b", "x=$y", "\"q\"", "'q'", "a\nb", "{", "}", "a#b", "a\\b", "é",
        ] {
            assert!(
                matches!(
                    check_cmdline(bad),
                    Err(ConfigError::CommandLineCharacter(_))
                ),
                "{bad:?}"
            );
            assert!(
                config("/boot/nucleus", bad, &[], "r", Menu::Skipped).is_err(),
                "{bad:?}"
            );
        }
        check_cmdline("fred=on loglvl=debug selftest=panic exit=qemu console=com1,115200 p=/a/b")
            .unwrap();
    }

    #[test]
    fn module_names_are_plain() {
        for bad in ["", ".hidden", "a b", "a/b", "a;b", &"x".repeat(65)] {
            assert_eq!(
                check_module_name(bad),
                Err(ConfigError::ModuleName(bad.to_owned()))
            );
        }
        for good in ["fred-server", "pv_server", "hello-module", "guest.elf"] {
            check_module_name(good).unwrap();
        }
    }

    #[test]
    fn errors_are_one_line() {
        assert!(
            !ConfigError::CommandLineCharacter('\n')
                .to_string()
                .contains('\n')
        );
        assert!(
            !ConfigError::ModuleName("a\nb".into())
                .to_string()
                .contains('\n')
        );
    }
}
