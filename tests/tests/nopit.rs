//! Boot does not depend on the timer: the nucleus enters the first server directly, so a
//! machine whose PIT is missing or off still boots its servers to `nucleus: ready` (only
//! preemption is lost).
use anyhow::Result;
use tests::{Image, Qemu, QemuExit, boot_timeout, markers};

#[test]
fn servers_start_and_say_hello_without_a_pit() -> Result<()> {
    let iso = Image::new().cmdline("exit=qemu").build_shared()?;
    let boot = Qemu::new(&iso)
        .arg("-machine")
        .arg("pc,pit=off")
        .timeout(boot_timeout())
        .run()?;
    let hello = |name: &str| {
        format!(
            "nucleus: {name} says hello (protocol {}, generation 0)",
            ipc::PROTOCOL_VERSION
        )
    };
    boot.expect_in_order(&[
        "nucleus: 2 server(s) started",
        &hello("fred-server"),
        &hello("pv-server"),
        markers::READY,
    ])?;
    boot.expect_exit(QemuExit::Success)
}
