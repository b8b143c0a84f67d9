//! The nucleus command line checked on the host, before anything is built, with the parser
//! the nucleus itself runs (`bsp_x86_64::cmdline`), so the two can never disagree.
//!
//! The nucleus only warns on its console and boots on with defaults; on the host a typo is
//! refused instead (one line, the nucleus' own wording), unless the user asks for the
//! nucleus' behaviour with `--allow-unknown-options`. Also renders the option list that
//! `run --help` shows.

use std::fmt::{self, Write as _};

use bsp_x86_64::cmdline::{self, OPTIONS, SelfTests, Warning};

/// Words that are Xen habits with nothing to set here, and why.
const XEN_HINTS: [(&str, &str); 3] = [
    ("console", "the nucleus always logs to COM1"),
    ("com1", "COM1 is always 115200 8n1"),
    (
        "com2",
        "COM2 carries the binary trace: trace=events and run --trace FILE",
    ),
];

/// The warnings the nucleus would print for a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Each warning as the nucleus words it (`cmdline: unknown option 'x' ignored`).
    pub warnings: Vec<String>,
    /// Notes for Xen words among the unknown options.
    pub hints: Vec<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the nucleus would not take this command line: {}",
            self.warnings.join("; ")
        )?;
        if !self.hints.is_empty() {
            write!(f, " ({})", self.hints.join("; "))?;
        }
        f.write_str(" (--allow-unknown-options boots it anyway)")
    }
}

impl std::error::Error for Refused {}

/// Parses `line` as the nucleus will and fails with every warning it would print.
pub fn check(line: &str) -> Result<(), Refused> {
    let mut warnings = Vec::new();
    let mut hints = Vec::new();
    cmdline::parse(line.as_bytes(), |warning| {
        if let Warning::UnknownOption { word } = warning {
            let word = word.to_string();
            let key = word.split('=').next().unwrap_or_default();
            if let Some((xen, why)) = XEN_HINTS.iter().find(|(xen, _)| *xen == key) {
                hints.push(format!("{xen}= is Xen's: {why}"));
            }
        }
        warnings.push(warning.to_string());
    });
    if warnings.is_empty() {
        Ok(())
    } else {
        Err(Refused { warnings, hints })
    }
}

/// `Nucleus options (--cmdline):` and one line per option, for `--help`.
pub fn help() -> String {
    let width = OPTIONS.iter().map(|o| o.syntax.len()).max().unwrap_or(0);
    let mut text = String::from("Nucleus options (--cmdline \"...\", checked before the build):\n");
    for option in OPTIONS {
        let _ = writeln!(text, "  {:<width$}  {}", option.syntax, option.help);
    }
    let names: Vec<&str> = SelfTests::NAMES.iter().map(|(name, _)| *name).collect();
    let _ = writeln!(text, "Self-test names: {}", names.join(", "));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_pass() {
        for line in [
            "",
            "fred=off loglvl=debug",
            "loglvl=all selftest=int3,ud2 exit=qemu",
        ] {
            check(line).unwrap();
        }
    }

    #[test]
    fn typos_are_refused_in_the_nucleus_wording() {
        let refused = check("fred=maybe loglvl=verbose selftest=bogus frd=off").unwrap_err();
        let known: Vec<&str> = SelfTests::NAMES.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            refused.warnings,
            [
                "cmdline: fred=maybe: expected on|off|auto, using auto".to_owned(),
                "cmdline: loglvl=verbose: expected error|warn|info|debug, using info".to_owned(),
                format!(
                    "cmdline: selftest: unknown test 'bogus' ignored (known: all, {})",
                    known.join(", ")
                ),
                "cmdline: unknown option 'frd=off' ignored".to_owned(),
            ]
        );
        let line = refused.to_string();
        assert!(
            !line.contains('\n') && line.ends_with("(--allow-unknown-options boots it anyway)")
        );
    }

    #[test]
    fn xen_console_words_get_a_hint() {
        let refused = check("console=com1 com1=115200,8n1").unwrap_err();
        assert_eq!(refused.warnings.len(), 2);
        assert_eq!(
            refused.hints,
            [
                "console= is Xen's: the nucleus always logs to COM1",
                "com1= is Xen's: COM1 is always 115200 8n1"
            ]
        );
    }

    #[test]
    fn help_has_one_line_per_option() {
        let help = help();
        assert_eq!(help.lines().count(), OPTIONS.len() + 2);
        assert!(help.contains("int3, ud2"), "{help}");
        for option in OPTIONS {
            assert!(help.contains(option.syntax), "{help}");
        }
    }
}
