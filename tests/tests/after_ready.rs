//! Lines that servers print may come after `nucleus: ready`, and `exit=qemu` ends the run at
//! `nucleus: ready`: a test that expects such a line boots without `exit=qemu` and waits for
//! the line itself (`Qemu::until_lines`), so it never depends on who printed first.
use anyhow::Result;
use tests::{Image, Qemu, QemuExit, boot_timeout, expect_line_count, markers};

#[test]
fn fred_server_reports_its_start_whatever_the_order_with_ready() -> Result<()> {
    let started = "fred-server: started (generation 0)";
    let iso = Image::new().build_shared()?;
    let boot = Qemu::new(&iso)
        .timeout(boot_timeout())
        .until_lines(&[started, markers::READY])
        .run()?;
    expect_line_count(&boot, started, 1)?;
    expect_line_count(&boot, markers::READY, 1)?;
    boot.expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Stopped)
}
