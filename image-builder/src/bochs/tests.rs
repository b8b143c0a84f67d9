use super::*;

fn rc() -> String {
    bochsrc(
        Path::new("/t/fredvisor.iso"),
        Path::new("/t/run/serial.log"),
        Path::new("/t/run/bochs.log"),
        256,
        1,
    )
    .unwrap()
}

#[test]
fn bochsrc_has_the_fred_model_cdrom_serial_file_and_no_display() {
    let rc = rc();
    let lines: Vec<&str> = rc.lines().collect();
    for expected in [
        "cpu: model=wildcat_lake, count=1, reset_on_triple_fault=0, ignore_bad_msrs=0",
        "memory: guest=256, host=256",
        "ata0-master: type=cdrom, path=\"/t/fredvisor.iso\", status=inserted",
        "boot: cdrom",
        "com1: enabled=1, mode=file, dev=\"/t/run/serial.log\"",
        "display_library: nogui",
        "log: \"/t/run/bochs.log\"",
        "panic: action=fatal",
        "magic_break: enabled=0",
        "clock: sync=none, time0=local",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{rc}");
    }
    // BIOS images stay Bochs' defaults ($BXSHARE); `megs:` would fight `memory:`.
    for absent in ["romimage", "vgaromimage", "megs:"] {
        assert!(!rc.contains(absent), "{absent} in\n{rc}");
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with("boot:")).count(), 1);
}

#[test]
fn bochsrc_is_a_function_of_its_inputs() {
    assert_eq!(rc(), rc());
    let other = bochsrc(
        Path::new("/a b/x,y.iso"),
        Path::new("/s.log"),
        Path::new("/b.log"),
        512,
        2,
    )
    .unwrap();
    assert!(other.contains("path=\"/a b/x,y.iso\","), "{other}");
    assert!(other.contains("memory: guest=512, host=512\n"), "{other}");
    assert!(
        other.contains("cpu: model=wildcat_lake, count=2,"),
        "{other}"
    );
}

#[test]
fn bochsrc_refuses_paths_it_cannot_quote() {
    for (bad, character) in [
        ("/t/a\"b.iso", '"'),
        ("/t/$HOME.iso", '$'),
        ("/t/a\nb", '\n'),
    ] {
        let error = bochsrc(Path::new(bad), Path::new("/s"), Path::new("/l"), 256, 1).unwrap_err();
        assert_eq!(
            error,
            BochsrcError::Character {
                path: bad.into(),
                character
            }
        );
        assert!(!error.to_string().contains('\n'));
    }
    let long = format!("/{}", "x".repeat(BOCHS_PATH_MAX));
    assert!(matches!(
        bochsrc(Path::new(&long), Path::new("/s"), Path::new("/l"), 256, 1),
        Err(BochsrcError::TooLong(_))
    ));
}

#[test]
fn outcome_comes_from_the_serial_log() {
    let ok =
        "fred: enabled (cpu has FRED+LKGS)\r\nselftest: 5 passed, 0 failed\r\nnucleus: ready\r\n";
    // Bochs' status after the shutdown request is its panic status: ignored.
    assert_eq!(outcome(ok, Some(1)), QemuExit::Success);
    assert_eq!(
        outcome("selftest: 4 passed, 1 failed\nnucleus: ready\n", Some(1)),
        QemuExit::Failure
    );
    assert_eq!(outcome("nucleus: ready\n", Some(1)), QemuExit::Success);
    assert_eq!(
        outcome("nucleus: PANIC at x: boom\nnucleus: ready\n", Some(1)),
        QemuExit::Failure
    );
    assert_eq!(
        outcome(
            "nucleus: FATAL: unrecoverable #UD (6)\nnucleus: halted\n",
            Some(1)
        ),
        QemuExit::Failure
    );
    // The #DF self-test passes with its summary although the nucleus halts after it.
    let df = "nucleus: #DF (double fault) on the #DF stack\nselftest: 1 passed, 0 failed\nnucleus: halted after #DF\n";
    assert_eq!(outcome(df, Some(1)), QemuExit::Success);
    assert_eq!(
        outcome(
            "nucleus: #DF (double fault)\nnucleus: halted after #DF\n",
            Some(1)
        ),
        QemuExit::Failure
    );
    assert_eq!(outcome("fredvisor 0.1.0\n", Some(1)), QemuExit::Other(1));
    // A server's lines decide nothing, whatever they say.
    let forged = "pv-server: selftest: 9 passed, 0 failed\nfred-server: nucleus: ready\n";
    assert_eq!(outcome(forged, Some(1)), QemuExit::Other(1));
    let forged = "nucleus: ready\npv-server: nucleus: FATAL: x\npv-server: nucleus: halted\n";
    assert_eq!(outcome(forged, Some(1)), QemuExit::Success);
    assert_eq!(outcome("", None), QemuExit::Other(-1));
}

#[test]
fn missing_bochs_is_one_line_naming_the_fred_build() {
    let empty = tempfile::tempdir().unwrap();
    let error = find_bochs(empty.path().as_os_str(), None).unwrap_err();
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.starts_with("bochs (Bochs 3.1 dev with FRED) not found on PATH and $FREDVISOR_BOCHS is unset: install it with 'git clone https://github.com/bochs-emu/Bochs"), "{text}");
    assert!(text.contains("--enable-fred"), "{text}");
    let missing = empty.path().join("bochs-fred");
    let error = find_bochs(OsStr::new(""), Some(missing.as_os_str())).unwrap_err();
    assert_eq!(
        error.looked,
        format!("at {} (from $FREDVISOR_BOCHS)", missing.display())
    );
}

#[test]
fn override_wins_over_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("my-bochs");
    fs::write(&fake, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let on_path = dir.path().join("bochs");
    fs::write(&on_path, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&on_path, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().as_os_str();
    assert_eq!(find_bochs(path, Some(fake.as_os_str())).unwrap(), fake);
    assert_eq!(
        find_bochs(path, Some(OsStr::new("my-bochs"))).unwrap(),
        fake
    );
    assert_eq!(find_bochs(path, None).unwrap(), on_path);
}
