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
fn ovmf_is_one_rom_per_run_reaching_down_to_the_tpm_window() {
    let dir = tempfile::tempdir().unwrap();
    let (code, vars) = (dir.path().join("CODE.fd"), dir.path().join("VARS.fd"));
    fs::write(&code, "code").unwrap();
    fs::write(&vars, "vars").unwrap();
    let run = tempfile::tempdir().unwrap();
    let rom_path = run.path().join("OVMF.rom");
    let pair = Ovmf {
        code: code.clone(),
        vars: Some(vars),
    };
    let args = strings(firmware_args(&pair, run.path()).unwrap());
    assert_eq!(args, ["-bios".to_owned(), rom_path.display().to_string()]);
    let rom = fs::read(&rom_path).unwrap();
    assert_eq!(rom.len() as u64, FIRMWARE_ROM_SIZE);
    assert_eq!(FIRMWARE_ROM_BASE + FIRMWARE_ROM_SIZE, 1 << 32);
    assert!(
        rom.ends_with(b"varscode"),
        "the store template below the code, at the top"
    );
    assert!(rom[..rom.len() - 8].iter().all(|&b| b == 0xFF));
    // The TPM's MMIO window (TIS registers from 0xFED40000) reads 0xFF, the HPET's page
    // (0xFED00000) is left to the HPET.
    assert_eq!(FIRMWARE_ROM_BASE, 0xFED4_0000);
    assert_eq!(
        rom.len() % 65536,
        0,
        "QEMU takes -bios images in 64 KiB units"
    );

    let combined = Ovmf { code, vars: None };
    firmware_args(&combined, run.path()).unwrap();
    let rom = fs::read(&rom_path).unwrap();
    assert!(rom.ends_with(b"\xFFcode") && rom.len() as u64 == FIRMWARE_ROM_SIZE);

    let huge = vec![0u8; FIRMWARE_ROM_SIZE as usize + 1];
    assert_eq!(
        firmware_rom(huge.clone()),
        huge,
        "a larger firmware stays as it is"
    );
}

#[test]
fn uefi_boots_the_cd_from_ahci_with_1g_pages_under_tcg() {
    let args = strings(uefi_boot_args(Path::new("/x/a.iso")).unwrap()).join(" ");
    assert_eq!(
        args,
        "-device ahci,id=ahci -drive if=none,id=cd,media=cdrom,readonly=on,format=raw,\
         file=/x/a.iso -device ide-cd,bus=ahci.0,drive=cd,bootindex=0"
    );
    assert_eq!(
        strings(uefi_cpu_args(Accel::Tcg)),
        ["-cpu", "qemu64,+pdpe1gb"]
    );
    assert!(uefi_cpu_args(Accel::Kvm).is_empty());
    let bios = strings(boot_args(Path::new("/x/a.iso")).unwrap()).join(" ");
    assert!(
        bios.contains("media=cdrom") && bios.contains("-boot order=d"),
        "{bios}"
    );
}

#[test]
fn cpu_time_of_this_process_is_readable() {
    let spent = cpu_time(std::process::id()).expect("/proc/PID/task/*/schedstat");
    assert!(spent > Duration::ZERO);
    assert_eq!(cpu_time(u32::MAX), None);
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
