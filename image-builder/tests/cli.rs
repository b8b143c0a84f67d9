//! The CLI binary: one clear line and a non-zero status when a tool is missing or a
//! `--server` file is unusable.

use std::process::Command;

/// A directory with links to every tool the pipeline uses that is installed, except `hidden`.
fn path_without(hidden: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "grub-mkrescue",
        "xorriso",
        "mformat",
        "qemu-system-x86_64",
        "cargo",
        "rustc",
    ] {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        if let Some(found) = found.filter(|_| tool != hidden) {
            std::os::unix::fs::symlink(found, dir.path().join(tool)).unwrap();
        }
    }
    dir
}

#[test]
fn build_without_grub_mkrescue_prints_one_line_and_fails() {
    let path = path_without("grub-mkrescue");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .arg("build")
        .env("PATH", path.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: grub-mkrescue not found on PATH: install it with \
         'apt-get install grub-pc-bin grub-efi-amd64-bin'\n"
    );
}

#[test]
fn run_checks_qemu_before_building() {
    let path = path_without("qemu-system-x86_64");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--timeout", "1"])
        .env("PATH", path.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: qemu-system-x86_64 not found on PATH: install it with 'apt-get install qemu-system-x86'\n"
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["build", "--help"],
        &["run", "--help"],
        &["bench", "--help"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage: image-builder"),
            "{args:?}"
        );
    }
}

/// Runs `image-builder [<subcommand>] --server <arg> --output <dir>/x.iso`; returns the
/// status and stderr.
fn build_with_server(
    subcommand: &[&str],
    server: &str,
    dir: &std::path::Path,
) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(subcommand)
        .args(["--server", server, "--output"])
        .arg(dir.join("x.iso"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn server_swap_with_a_missing_file_is_one_line_and_fails_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = build_with_server(&[], "fred-server=/nonexistent", dir.path());
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: server fred-server: cannot read /nonexistent: \
         No such file or directory (os error 2)\n"
    );
    assert!(!dir.path().join("x.iso").exists());
}

#[test]
fn server_swap_with_a_non_elf_file_is_one_line_and_fails_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.sh");
    std::fs::write(&script, "#!/bin/sh\necho not a server\n").unwrap();
    let (status, stderr) = build_with_server(
        &["run", "--timeout", "5"],
        &format!("pv-server={}", script.display()),
        dir.path(),
    );
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: server pv-server: {} is not an ELF file (it does not start with \\x7fELF)\n",
            script.display()
        )
    );
    assert!(!dir.path().join("x.iso").exists());
}

#[test]
fn server_swap_with_an_unknown_name_lists_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = build_with_server(&["build"], "nosuch-server=/bin/true", dir.path());
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: unknown server \"nosuch-server\": the servers are fred-server, pv-server\n"
    );
}

#[test]
fn bench_rejects_a_zero_timeout_before_building() {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["bench", "--timeout", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr, "error: --timeout must be a number of seconds > 0\n");
}

/// Runs the CLI with `args` and a PATH without grub-mkrescue, so that nothing past the
/// input checks can run; returns the status and stderr.
fn run_checks_only(args: &[&str]) -> (Option<i32>, String) {
    let path = path_without("grub-mkrescue");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(args)
        .env("PATH", path.path())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const NO_GRUB: &str = "error: grub-mkrescue not found on PATH: install it with \
                       'apt-get install grub-pc-bin grub-efi-amd64-bin'\n";

#[test]
fn nucleus_option_typos_are_refused_before_building_in_the_nucleus_wording() {
    for subcommand in ["build", "run", "bench"] {
        let (status, stderr) = run_checks_only(&[
            subcommand,
            "--cmdline",
            "fred=maybe loglvl=verbose selftest=bogus frd=off",
        ]);
        assert_eq!(status, Some(2), "{subcommand}: {stderr}");
        let known: Vec<&str> = bsp_x86_64::cmdline::SelfTests::NAMES
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(
            stderr,
            format!(
                "error: the nucleus would not take this command line: \
                 cmdline: fred=maybe: expected on|off|auto, using auto; \
                 cmdline: loglvl=verbose: expected error|warn|info|debug, using info; \
                 cmdline: selftest: unknown test 'bogus' ignored (known: all, {}); \
                 cmdline: unknown option 'frd=off' ignored \
                 (--allow-unknown-options boots it anyway)\n",
                known.join(", ")
            ),
            "{subcommand}"
        );
    }
    let (status, stderr) = run_checks_only(&["build", "--cmdline", "console=com1"]);
    assert_eq!(status, Some(2));
    assert!(
        stderr.contains("(console= is Xen's: the nucleus always logs to COM1)"),
        "{stderr}"
    );
}

#[test]
fn allowed_unknown_options_and_xen_log_levels_pass_the_check() {
    for args in [
        &["build", "--cmdline", "frd=off", "--allow-unknown-options"][..],
        &["build", "--cmdline", "loglvl=all"],
        &["build", "--cmdline", "loglvl=warning fred=off selftest=all"],
    ] {
        assert_eq!(
            run_checks_only(args),
            (Some(2), NO_GRUB.to_owned()),
            "{args:?}"
        );
    }
}

#[test]
fn build_options_are_accepted_before_the_subcommand() {
    let (status, stderr) = run_checks_only(&["--cmdline", "frd", "run", "--timeout", "1"]);
    assert_eq!(status, Some(2));
    assert!(
        stderr.starts_with(
            "error: the nucleus would not take this command line: cmdline: unknown option 'frd'"
        ),
        "{stderr}"
    );
    let (status, stderr) = run_checks_only(&["-v", "--server", "nosuch=/bin/true", "build"]);
    assert_eq!(status, Some(2));
    assert_eq!(
        stderr,
        "error: unknown server \"nosuch\": the servers are fred-server, pv-server\n"
    );
}

#[test]
fn a_negative_timeout_is_a_value_not_a_flag() {
    for subcommand in ["run", "bench"] {
        let (status, stderr) = run_checks_only(&[subcommand, "--timeout", "-1"]);
        assert_eq!(status, Some(2), "{stderr}");
        assert!(
            stderr.starts_with("error: --timeout must be a number of seconds >"),
            "{subcommand}: {stderr}"
        );
    }
}

#[test]
fn a_module_with_a_server_name_says_so_not_given_twice() {
    let (status, stderr) = run_checks_only(&["build", "--module", "fred-server=/bin/true"]);
    assert_eq!(status, Some(2));
    assert_eq!(
        stderr,
        "error: module name \"fred-server\" is a server's: \
         ship a server with --server fred-server=PATH\n"
    );
}

#[test]
fn run_help_lists_every_nucleus_option_on_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for option in bsp_x86_64::cmdline::OPTIONS {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(option.syntax))
            .unwrap_or_else(|| panic!("{} is not listed:\n{help}", option.syntax));
        assert!(line.ends_with(option.help), "{line:?}");
    }
    for flag in ["--gdb", "--accel", "--serial-log", "[QEMU ARGS]"] {
        assert!(help.contains(flag), "{flag} is not in run --help:\n{help}");
    }
}

#[test]
fn bochs_refuses_qemu_only_options() {
    for flag in [
        &["--gdb"][..],
        &["--accel", "kvm"],
        &["--serial-log", "x"],
        &["--", "-smp", "2"],
    ] {
        let mut args = vec!["run", "--bochs"];
        args.extend(flag);
        let (status, stderr) = run_checks_only(&args);
        assert_eq!(status, Some(2), "{args:?}");
        assert!(stderr.contains("cannot be used with"), "{args:?}: {stderr}");
    }
}

#[test]
fn run_help_documents_guests() {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--guest <NAME=PATH[,mem=MIB][,cpu=N][,cmdline=TEXT]>"),
        "{help}"
    );
    assert!(
        help.contains("every guest shut down with reason poweroff"),
        "{help}"
    );
}

#[test]
fn bad_guest_arguments_are_refused_in_one_line_before_building() {
    for (arg, says) in [
        (
            "hello",
            "expected NAME=PATH[,mem=MIB][,cpu=N][,cmdline=TEXT]",
        ),
        ("hello=x,mem=0", "mem=0 is not between 1 and 65536 MiB"),
        ("hello=x,cpus=2", "unknown option \"cpus=2\""),
        ("hello=x,cpu=256", "cpu=256 is not a CPU number 0-255"),
        ("a b=x", "is not 1-24 of A-Z a-z 0-9 . _ -"),
        ("hello=x,cmdline=$HOME", "which GRUB would interpret"),
    ] {
        let (status, stderr) = run_checks_only(&["build", "--guest", arg]);
        assert_eq!(status, Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(says), "{arg}: {stderr}");
        assert!(
            !stderr.contains("grub-mkrescue"),
            "{arg}: checked before building"
        );
    }
}

/// `run --guest` boots QEMU and ends at pv-server's summary: 0 when every guest powered
/// off, 1 when one did not start (issue 15 point 1).
#[test]
fn run_with_guests_ends_with_the_last_guest_and_says_how_they_ended() {
    let workspace = image_builder::compile::workspace_root();
    let hello = image_builder::compile::build_target(
        &image_builder::Toolbox::from_env(),
        &workspace,
        image_builder::compile::SERVER_BUILD,
        &["guest-hello"],
        false,
    )
    .unwrap()
    .remove(0);
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not an ELF").unwrap();
    let run = |guests: &[String]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_image-builder"));
        command.args(["run", "--timeout", "120", "--output"]);
        command.arg(dir.path().join("run.iso"));
        for guest in guests {
            command.args(["--guest", guest]);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let hello_arg = format!("hello={},mem=4", hello.display());
    let (status, out) = run(std::slice::from_ref(&hello_arg));
    assert_eq!(status, Some(0), "{out}");
    assert!(
        out.contains("pv-server: guest hello: shut down (poweroff)"),
        "{out}"
    );
    assert!(
        out.contains("pv-server: guests: all ended (1 of 1 powered off;"),
        "{out}"
    );
    let (status, out) = run(&[hello_arg, format!("junk={}", junk.display())]);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("pv-server: guest junk: rejected: "), "{out}");
    assert!(
        out.contains("pv-server: guests: all ended (1 of 2 powered off;"),
        "{out}"
    );
}
