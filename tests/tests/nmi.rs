//! An NMI is counted by the nucleus' NMI path (which prints nothing: it may have interrupted
//! the console's holder) and reported from the next timer tick (issue 4, point 6).
//!
//! The NMI comes from QEMU's monitor (`nmi`), sent over a Unix socket once the nucleus is
//! ready; the boot stops at the report line.
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::{Image, Qemu, QemuExit, boot_timeout, markers};

#[test]
fn an_nmi_is_counted_and_reported_from_the_next_tick() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("monitor.sock");
    let serial = dir.path().join("serial.log");
    let iso = Image::new().cmdline("loglvl=info").build_shared()?;
    let sender = {
        let (socket, serial) = (socket.clone(), serial.clone());
        std::thread::spawn(move || -> Result<()> {
            let deadline = Instant::now() + boot_timeout();
            // Wait for the nucleus to be ready (serial log), then for the monitor socket.
            while !std::fs::read_to_string(&serial)
                .unwrap_or_default()
                .contains(markers::READY)
            {
                anyhow::ensure!(Instant::now() < deadline, "nucleus never became ready");
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut monitor = loop {
                match UnixStream::connect(&socket) {
                    Ok(stream) => break stream,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(e).context("QEMU monitor socket"),
                }
            };
            monitor.write_all(b"nmi\n")?;
            // Keep the monitor connection open until QEMU answered (its prompt follows the
            // command's output); closing at once may drop the command.
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            monitor.set_read_timeout(Some(Duration::from_secs(10)))?;
            while seen.windows(6).filter(|w| *w == b"(qemu)").count() < 2 {
                use std::io::Read;
                let n = monitor.read(&mut buf).context("reading the QEMU monitor")?;
                anyhow::ensure!(n > 0, "QEMU monitor closed before answering");
                seen.extend_from_slice(&buf[..n]);
            }
            Ok(())
        })
    };
    let boot = Qemu::new(&iso)
        .serial_file(&serial)
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .timeout(boot_timeout())
        .until("NMI(s) received")
        .run()?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("NMI sender thread panicked"))??;
    boot.expect_in_order(&[markers::READY, "nucleus: 1 NMI(s) received (1 since boot)"])?;
    boot.expect_absent("PANIC")?;
    boot.expect_exit(QemuExit::Stopped)
}
