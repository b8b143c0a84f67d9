use super::*;
use crate::stop::complete_lines;

fn strings(args: Vec<OsString>) -> Vec<String> {
    args.into_iter().map(|a| a.into_string().unwrap()).collect()
}

#[test]
fn machine_has_tcg_debug_exit_and_no_reboot() {
    let args = strings(machine_args(Accel::Tcg)).join(" ");
    assert!(args.contains("-accel tcg") && !args.contains("-cpu"));
    let kvm = strings(machine_args(Accel::Kvm)).join(" ");
    assert!(kvm.starts_with("-accel kvm -cpu host -m 256M"), "{kvm}");
    assert!(
        args.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"),
        "{args}"
    );
    assert!(
        args.contains("-no-reboot")
            && args.contains("-display none")
            && args.contains("-nic none")
            && args.contains("-m 256M")
    );
}

#[test]
fn only_the_bios_machine_goes_without_a_graphics_card() {
    assert_eq!(strings(bios_display_args()), ["-vga", "none"]);
    let machine = strings(machine_args(Accel::Tcg)).join(" ");
    assert!(!machine.contains("-vga"), "{machine}");
}

#[test]
fn drive_paths_escape_commas() {
    let value = drive_option("media=cdrom", Path::new("/tmp/a,b.iso")).unwrap();
    assert_eq!(value, "media=cdrom,format=raw,file=/tmp/a,,b.iso");
}

#[test]
fn ovmf_vars_are_copied_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let (code, vars) = (dir.path().join("CODE.fd"), dir.path().join("VARS.fd"));
    fs::write(&vars, "template").unwrap();
    let run = tempfile::tempdir().unwrap();
    let args = strings(
        firmware_args(
            &Ovmf {
                code: code.clone(),
                vars: Some(vars),
            },
            run.path(),
        )
        .unwrap(),
    );
    assert_eq!(
        args[1],
        format!(
            "if=pflash,unit=0,readonly=on,format=raw,file={}",
            code.display()
        )
    );
    assert!(args[3].ends_with(&format!("file={}/OVMF_VARS.fd", run.path().display())));
    assert_eq!(
        fs::read_to_string(run.path().join("OVMF_VARS.fd")).unwrap(),
        "template"
    );
    let bios = strings(
        firmware_args(
            &Ovmf {
                code: code.clone(),
                vars: None,
            },
            run.path(),
        )
        .unwrap(),
    );
    assert_eq!(bios, ["-bios".to_owned(), code.display().to_string()]);
}

#[test]
fn until_serial_sees_only_complete_lines() {
    assert_eq!(complete_lines("a\r\nb: 12"), "a\r\n");
    assert_eq!(complete_lines("partial"), "");
    let qemu = Qemu::from_path(Path::new("x.iso")).until_serial(|log| log.contains("b: 12\r\n"));
    assert!(!qemu.stop.reached("a\r\nb: 12"));
    assert!(qemu.stop.reached("a\r\nb: 12\r\nc"));
    let lines = Qemu::from_path(Path::new("x.iso")).until_lines(&["b: 1", "a"]);
    assert!(!lines.stop.reached("a\r\nb: 12\r\n"));
    assert!(
        !lines.stop.reached("a\r\nb: 1"),
        "a line still being written"
    );
    assert!(lines.stop.reached("b: 1\r\n\x1b[0ma\r\n"));
    let plain = Qemu::from_path(Path::new("x.iso"));
    assert!(!plain.stop.reached("anything\n"));
    let ready = plain.until("ready");
    assert!(
        !ready.stop.reached("nucleus: ready"),
        "the marker's line is still being written"
    );
    assert!(ready.stop.reached("nucleus: ready\r\n"));
}

#[test]
fn kvm_is_refused_in_one_line_without_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", check_kvm(&dir.path().join("kvm")).unwrap_err());
    assert!(
        err.contains("does not exist") && err.ends_with("use --accel tcg"),
        "{err}"
    );
    let file = dir.path().join("ro");
    fs::write(&file, "").unwrap();
    let mut perms = fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o400);
    fs::set_permissions(&file, perms).unwrap();
    // Root opens anything; then only the missing device can be shown here.
    if let Err(err) = check_kvm(&file) {
        let err = format!("{err:#}");
        assert!(
            err.starts_with("--accel kvm: cannot open") && !err.contains('\n'),
            "{err}"
        );
    }
    Accel::Tcg.check().unwrap();
}

#[test]
fn terminal_serial_is_a_chardev_that_can_log() {
    assert_eq!(
        strings(stdio_serial_args(None).unwrap()),
        [
            "-chardev",
            "stdio,id=com1,signal=on",
            "-serial",
            "chardev:com1"
        ]
    );
    assert_eq!(
        strings(stdio_serial_args(Some(Path::new("/t/a,b.log"))).unwrap())[1],
        "stdio,id=com1,signal=on,logfile=/t/a,,b.log"
    );
}

#[test]
fn serial_goes_to_file_or_terminal() {
    assert_eq!(strings(serial_args(None).unwrap()), ["-serial", "stdio"]);
    assert_eq!(
        strings(serial_args(Some(Path::new("/t/s.log"))).unwrap()),
        ["-serial", "file:/t/s.log"]
    );
}
