//! The target half of the runtime: entry, stack, hypercall page, console, shutdown, panic.

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};

use xen_abi::console::ConsoleIoCmd;
use xen_abi::sched::{SchedOpCmd, SchedShutdown, ShutdownReason};
use xen_abi::{Hypercall, StartInfo};

// The entry point, the boot stack and the hypercall page. `_start` gets rsi = start_info
// and rsp = the builder's boot stack; it passes both on and switches to its own stack so
// that a guest does not depend on the size of the builder's one page.
global_asm!(
    ".pushsection .text.entry, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    "    cld",
    "    mov rdi, rsi",
    "    mov rsi, rsp",
    "    lea rsp, [rip + guest_rt_stack_top]",
    "    call guest_rt_start",
    "    ud2",
    ".popsection",
    ".pushsection .bss.guest_rt_stack, \"aw\", @nobits",
    ".balign 16",
    "    .skip 16384",
    "guest_rt_stack_top:",
    ".popsection",
    ".pushsection .hypercall_page, \"ax\", @progbits",
    ".balign 4096",
    ".globl hypercall_page",
    "hypercall_page:",
    "    .fill 4096, 1, 0xcc",
    ".popsection",
);

unsafe extern "C" {
    /// Filled with the stubs by the domain builder (the guest's HYPERCALL_PAGE note).
    static hypercall_page: [u8; 4096];
}

/// What `_start` found.
#[derive(Clone, Copy)]
pub struct Boot {
    pub start_info: &'static StartInfo,
    /// VA of start_info (the `rsi` at entry).
    pub start_info_va: u64,
    /// The `rsp` at entry: the top of the builder's boot stack.
    pub boot_rsp: u64,
}

unsafe extern "Rust" {
    /// The guest's `main`, declared with [`crate::guest_main!`].
    fn guest_rt_main(boot: Boot) -> !;
}

/// Called by `_start` with the entry `rsi` and `rsp`.
#[unsafe(no_mangle)]
extern "C" fn guest_rt_start(start_info: *const StartInfo, boot_rsp: u64) -> ! {
    // SAFETY: the domain builder passes the VA of the start_info page in rsi, mapped
    // read-write for the guest and never unmapped before this point (pv64-abi.md §2.3).
    let start_info = unsafe { &*start_info };
    let boot = Boot {
        start_info,
        start_info_va: start_info as *const StartInfo as u64,
        boot_rsp,
    };
    // SAFETY: `guest_main!` defines the symbol with exactly this signature.
    unsafe { guest_rt_main(boot) }
}

/// Declares the guest's entry: `guest_main!(main)` with `fn main(boot: Boot) -> !`.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn guest_rt_main(boot: $crate::Boot) -> ! {
            $main(boot)
        }
    };
}

/// Makes hypercall `call` with up to five arguments through the hypercall page (§3);
/// returns `rax`.
///
/// # Safety
/// Pointer arguments must be valid for what the hypercall does with them: the hypervisor
/// reads and writes guest memory on the guest's behalf.
pub unsafe fn hypercall(call: Hypercall, args: [u64; 5]) -> u64 {
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    let stub = page + call.stub_offset();
    let rax: u64;
    // SAFETY: the stub keeps rcx and r11 and returns with `ret`; the hypervisor may
    // clobber the argument registers (debug Xen does), so they are all outputs here. The
    // stack is ours (no red zone on this target) and memory is clobbered by default.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            lateout("rax") rax,
        );
    }
    rax
}

/// Writes `bytes` to the hypervisor console; returns `rax` (0 or `-errno`).
pub fn console_write(bytes: &[u8]) -> u64 {
    // SAFETY: `bytes` is valid for reading for its length during the call.
    unsafe {
        hypercall(
            Hypercall::ConsoleIo,
            [
                u64::from(ConsoleIoCmd::Write.raw()),
                bytes.len() as u64,
                bytes.as_ptr() as u64,
                0,
                0,
            ],
        )
    }
}

/// Stops the domain with `reason`. Does not return; if the hypervisor refuses, spins.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let arg = SchedShutdown {
        reason: reason.raw(),
    };
    // SAFETY: `arg` lives on our stack for the whole call.
    unsafe {
        hypercall(
            Hypercall::SchedOp,
            [
                u64::from(SchedOpCmd::Shutdown.raw()),
                &arg as *const SchedShutdown as u64,
                0,
                0,
                0,
            ],
        );
    }
    loop {
        core::hint::spin_loop();
    }
}

/// A console that sends whole lines (up to 200 bytes) in one `console_io` each.
pub struct Console {
    line: [u8; 200],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Self {
            line: [0; 200],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            console_write(&self.line[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.len == self.line.len() {
                self.flush();
            }
            self.line[self.len] = byte;
            self.len += 1;
            if byte == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `println!` for guests: one line through [`Console`].
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut console = $crate::Console::new();
        let _ = core::fmt::Write::write_fmt(&mut console, format_args!($($arg)*));
        let _ = core::fmt::Write::write_str(&mut console, "\n");
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = Console::new();
    let _ = writeln!(console, "panic: {info}");
    drop(console);
    shutdown(ShutdownReason::Crash)
}
