//! The panic handler: message and location on the console, then the failure exit.
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::console::force_unlock();
    match info.location() {
        Some(loc) => println!(
            "{}: {} at {}:{}:{}",
            ipc::markers::PANIC,
            info.message(),
            loc.file(),
            loc.line(),
            loc.column()
        ),
        None => println!("{}: {}", ipc::markers::PANIC, info.message()),
    }
    // `crashkernel`: hand the machine to the kexec image instead (returns if it cannot).
    crate::handoff::crash(bsp_x86_64::cmdline::KexecReason::Panic);
    crate::exit::exit(crate::exit::Status::Failure)
}
