//! nucleus: the Ring0 mechanism of fredvisor (architecture.md §1–4).
//!
//! Owns boot, the early IDT, the per-CPU stack block, the FRED entry page and the IDT
//! fallback, physical memory and address spaces, and the one dispatcher both deliveries feed.
//! Policy (diagnostics rendering, PV guests, call gates, kexec ordering) lives in Ring3
//! servers. `unsafe` is denied crate-wide and allowed only in the modules named below,
//! each of which says in its header why it needs it.
//!
//! On the host this crate is only a stub `main`: the nucleus runs on bare metal and is
//! built by `cargo run -p image-builder`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
#[macro_use]
#[allow(unsafe_code)] // the UART's ports, breaking the console lock on fatal paths
mod console;

#[cfg(target_os = "none")]
#[allow(unsafe_code)] // page tables of server address spaces, reading user memory
mod addrspace;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // multiboot2 header, 32→64-bit trampoline, the stack switch
mod boot;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // reads GRUB's structure through a raw pointer
mod bootinfo;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // lgdt/lidt/ltr and the descriptor tables they point at
mod cpu;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the entry stubs (global_asm) and the #DF scratch area
mod dispatch;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // port writes that end an emulator run
mod exit;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // FRED MSRs and CR4.FRED
mod fred;
#[cfg(target_os = "none")]
mod interrupts;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // page tables through the direct map, CR3
mod memory;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the `RacyCell` wrapper itself
mod racy;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // control registers, and reading the nucleus' own stack for the dump
mod report;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the fault probes the self-tests execute
mod selftest;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the FRED MSRs and probes the FRED-only self-tests use
mod selftest_fred;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // module memory, ring pages, CR3, the idle context
mod servers;
#[cfg(target_os = "none")]
mod stacks;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // reads the symbol-map module through the direct map
mod symbols;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // PIT and PIC ports
mod timer;

#[cfg(target_os = "none")]
pub use kernel::{kernel_entry, ready};

#[cfg(target_os = "none")]
mod kernel {
    use crate::bootinfo::{self, BootSummary, Escaped};
    use crate::exit::{self, Status};
    use crate::racy::RacyCell;
    use bsp_x86_64::cmdline::{self, Options, SelfTests, TestExit};
    use core::sync::atomic::Ordering;

    /// Boot state handed from the boot stack to the stack block.
    struct Handoff {
        boot: BootSummary,
        options: Options,
    }

    static HANDOFF: RacyCell<Option<Handoff>> = RacyCell::new(None);

    /// Rust entry from `boot.rs`: EDI = multiboot2 magic, ESI = boot information (physical).
    pub extern "C" fn kernel_entry(magic: u32, info: u32) -> ! {
        // First of all: exceptions are reported from here on (design note, "Initialisation").
        crate::cpu::install_early_idt();
        crate::console::init();
        println!("{}{}", ipc::markers::BANNER, env!("CARGO_PKG_VERSION"));

        // SAFETY: called once on the boot page tables, which identity-map the first 4 GiB
        // where GRUB placed its structure.
        #[allow(unsafe_code)]
        let boot = match unsafe { bootinfo::read(magic, info) } {
            Ok(boot) => boot,
            Err(e) => {
                println!("{e}");
                println!("nucleus: cannot continue without boot information; halting");
                exit::halt_forever();
            }
        };
        early_arm_exit(&boot.cmdline);
        if words(&boot.cmdline).any(|w| w == b"selftest=early-fault") {
            crate::selftest::early_fault();
        }

        println!("cmdline: {}", Escaped(&boot.cmdline));
        if boot.cmdline_truncated {
            println!("cmdline: longer than {} bytes, cut", bootinfo::CMDLINE_MAX);
        }
        let options = cmdline::parse(&boot.cmdline, |warning| println!("{warning}"));
        crate::dispatch::BOOT_PARSED.store(true, Ordering::Relaxed);
        match options.exit {
            Some(TestExit::Qemu) => exit::arm_qemu(),
            Some(TestExit::Bochs) => exit::arm_bochs(),
            None => {}
        }

        println!(
            "memory: {} MiB usable in {} regions",
            boot.usable_bytes() >> 20,
            boot.regions.len()
        );
        if boot.regions_dropped > 0 {
            println!("memory: {} more regions ignored", boot.regions_dropped);
        }
        for module in &boot.modules {
            println!(
                "module: {} ({} bytes at {:#x})",
                Escaped(&module.name),
                module.size(),
                module.range.start
            );
        }
        if boot.modules.is_empty() {
            println!("module: none");
        }
        if boot.modules_dropped > 0 {
            println!("module: {} more ignored", boot.modules_dropped);
        }

        crate::cpu::install_gdt();
        let layout = match crate::memory::init(&boot) {
            Ok(layout) => layout,
            Err(e) => {
                println!("{e}");
                exit::exit(Status::Failure);
            }
        };
        println!(
            "memory: nucleus text {} KiB, rodata {} KiB, data+bss {} KiB; {} MiB free",
            layout.text_bytes >> 10,
            layout.rodata_bytes >> 10,
            layout.data_bytes >> 10,
            layout.free_mib
        );
        crate::symbols::init(&boot);
        crate::stacks::set_block(&layout.stack_block);
        crate::cpu::use_stack_block(&layout.stack_block);
        // SAFETY: boot, single CPU: written once before the switch, read once after it.
        #[allow(unsafe_code)]
        unsafe {
            *HANDOFF.get() = Some(Handoff { boot, options })
        };
        // SAFETY: the primary stack of the block was just mapped and nothing uses it yet;
        // its top (below cpu_info) is 64-byte aligned.
        #[allow(unsafe_code)]
        unsafe {
            crate::boot::continue_on_stack(layout.stack_block.primary_top(), on_stack_block)
        }
    }

    /// Boot continues on CPU 0's primary stack (SL0 / TSS.RSP0).
    extern "C" fn on_stack_block() -> ! {
        // SAFETY: written once before the stack switch and never written again; borrowed in
        // place because the boot summary is far too large for the 8 KiB primary stack.
        #[allow(unsafe_code)]
        let Some(Handoff { boot, options }) = (unsafe { (*HANDOFF.get()).as_ref() }) else {
            panic!("boot handoff missing");
        };
        if let Some(block) = crate::stacks::block() {
            crate::cpu::init_syscall(&block);
        }
        crate::cpu::protect();
        crate::fred::init(options);

        if options.selftests.contains(SelfTests::PANIC) {
            panic!("selftest: forced panic");
        }
        if let Some(status) = crate::selftest::run(options.selftests) {
            // SAFETY: boot, single CPU: written before interrupts are enabled.
            #[allow(unsafe_code)]
            unsafe {
                *SELFTEST_STATUS.get() = Some(status)
            };
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            *EXIT_WANTED.get() = options.exit.is_some()
        };
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            *BENCH_WANTED.get() = options.bench
        };
        let started = crate::servers::start_all(boot, options);
        println!("nucleus: {started} server(s) started");
        crate::timer::init();
        crate::servers::boot_done();
        // Straight into the first server: boot does not wait for a timer tick (a machine
        // without a working PIT still boots; it only loses preemption).
        crate::servers::run_first();
        idle()
    }

    static SELFTEST_STATUS: RacyCell<Option<Status>> = RacyCell::new(None);
    static EXIT_WANTED: RacyCell<bool> = RacyCell::new(false);
    static BENCH_WANTED: RacyCell<bool> = RacyCell::new(false);

    /// Every started server said hello: boot is complete. Returns true when the caller
    /// should start the benchmarks (which end the run themselves).
    pub fn ready() -> bool {
        println!("{}", ipc::markers::READY);
        // SAFETY: written during boot, read here with interrupts off on the single CPU.
        #[allow(unsafe_code)]
        let (selftest, exit_wanted, bench) = unsafe {
            (
                *SELFTEST_STATUS.get(),
                *EXIT_WANTED.get(),
                *BENCH_WANTED.get(),
            )
        };
        if bench {
            // image-builder stops the run at the benchmarks' last line.
            return true;
        }
        match selftest.or_else(crate::selftest::deferred_status) {
            Some(status) => exit::exit(status),
            None if exit_wanted => exit::exit(Status::Success),
            None => false,
        }
    }

    fn idle() -> ! {
        crate::boot::idle_forever()
    }

    fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
        cmdline
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
    }

    /// Arms the test exit before anything else can fail, so even a fault reported by the
    /// early IDT ends an emulator run (the full parse re-arms it from the same option).
    fn early_arm_exit(cmdline: &[u8]) {
        for word in words(cmdline) {
            match word {
                b"exit=qemu" => exit::arm_qemu(),
                b"exit=bochs" => exit::arm_bochs(),
                _ => {}
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "nucleus runs on bare metal: build and boot it with `cargo run -p image-builder -- run`"
    );
}
