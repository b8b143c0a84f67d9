//! The boot sequence (architecture.md §2): from the trampoline's first Rust call to the
//! first thread, and the `nucleus: ready` decision once every thread said hello.
use crate::bootinfo::{self, LoaderHandoff};
use crate::exit::{self, Status};
use crate::text::Escaped;
use crate::thread::{self, AfterReady, BOOT_THREADS};
use bsp_x86_64::cmdline::{self, KexecReason, KexecWhen, Options, SelfTests, TestExit};
use core::sync::atomic::Ordering;
use spin::Once;

/// What the command line asked for once boot is complete.
#[derive(Clone, Copy)]
struct WhenReady {
    selftest: Option<Status>,
    exit_wanted: bool,
    bench: bool,
    /// `kexec=reboot-into` in generation 1: fred-server is about to ask for a hand-off, so
    /// `exit=` waits for the next generation's ready.
    kexec_expected: bool,
}

static WHEN_READY: Once<WhenReady> = Once::new();

/// From the trampoline's Rust entry (`boot.rs`), on the boot stack.
pub fn start_nucleus(loader: LoaderHandoff) -> ! {
    // First of all: this CPU's `PerCpu` through GS, and exceptions reported from here on
    // (design note, "Initialisation").
    crate::cpu::percpu::boot_cpu();
    crate::cpu::tables::install_early_idt();
    // Before anything of this generation touches CR4: a kexec hands over with FRED off.
    let fred_at_entry = crate::cpu::control::cr4_fred();
    crate::console::init();
    // The source revision comes from image-builder's build (unknown for other builds).
    let revision = option_env!("FREDVISOR_REVISION").unwrap_or("unknown revision");
    let boot = match loader.read() {
        Ok(boot) => boot,
        Err(e) => {
            print_banner(revision, 1, None, fred_at_entry);
            println!("{e}");
            println!("nucleus: cannot continue without boot information; halting");
            exit::halt_forever();
        }
    };
    let (generation, reason) = kexec_words(&boot.cmdline);
    print_banner(revision, generation, reason, fred_at_entry);
    early_arm_exit(&boot.cmdline);
    if cmdline_words(&boot.cmdline).any(|w| w == b"selftest=early-fault") {
        crate::selftest::early_fault();
    }

    println!("cmdline: {}", Escaped(&boot.cmdline));
    if boot.cmdline_truncated {
        println!("cmdline: longer than {} bytes, cut", bootinfo::CMDLINE_MAX);
    }
    let options = cmdline::parse(&boot.cmdline, |warning| println!("{warning}"));
    crate::trace::start(
        options.trace,
        options.selftests.contains(SelfTests::FRED_RING3),
    );
    crate::fatal::BOOT_PARSED.store(true, Ordering::Relaxed);
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

    let cpu = crate::cpu::percpu::current();
    cpu.install_gdt();
    let layout = match crate::mm::init(&boot) {
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
    {
        use crate::layout::{DIRECT_MAP_BASE, END_SLOT, FIRST_SLOT, M2P_BASE, STACKS_BASE};
        println!(
            "memory: nucleus in L4 slots {FIRST_SLOT}-{}: m2p {M2P_BASE:#x} ({} frames), image \
             {:#x}, stacks {STACKS_BASE:#x}, direct map {DIRECT_MAP_BASE:#x}",
            END_SLOT - 1,
            crate::mm::m2p::entries(),
            layout.text_start
        );
    }
    crate::symbols::init(&boot);
    crate::domains::init(&boot);
    cpu.set_block(&layout.stack_block);
    cpu.use_stack_block(&layout.stack_block);
    crate::cpu::tables::use_ist_gates();
    crate::boot_state::KEPT.call_once(|| crate::boot_state::Kept { boot, options });
    crate::cpu::enter::continue_on_primary(&layout.stack_block, on_stack_block)
}

/// Boot continues on CPU 0's primary stack (SL0 / TSS.RSP0).
extern "C" fn on_stack_block() -> ! {
    let Some((boot, options)) = crate::boot_state::boot_state() else {
        panic!("boot handoff missing");
    };
    crate::cpu::percpu::install(crate::cpu::percpu::current());
    crate::cpu::protect::protect();
    crate::cpu::fred::init(options);
    crate::cpu::apic_timer::init_boot_cpu();
    let cpus = crate::cpu::bringup::start_aps(boot.rsdp, options);
    println!("nucleus: {cpus} cpu(s) online");

    if options.selftests.contains(SelfTests::PANIC) {
        panic!("selftest: forced panic");
    }
    let selftest = crate::selftest::run(options.selftests);
    WHEN_READY.call_once(|| WhenReady {
        selftest,
        exit_wanted: options.exit.is_some(),
        bench: options.bench,
        kexec_expected: options.kexec == KexecWhen::RebootInto && options.generation.0 == 1,
    });
    let started = thread::with(|t| {
        t.options = Some(*options);
        t.set_on_ready(servers_ready);
        let mut started = 0;
        for id in t.server_ids() {
            let name = BOOT_THREADS[id.index()].name;
            place(t, id, name, options);
            let module = boot
                .modules
                .iter()
                .find(|m| m.name.as_slice() == name.as_bytes())
                .map(|m| m.range.clone());
            if crate::lifecycle::start(t, id, module) {
                started += 1;
            }
        }
        started
    });
    println!("nucleus: {started} server(s) started");
    crate::cpu::apic_timer::start_preemption();
    // The servers placed on other CPUs: those CPUs pick them up now.
    thread::with(|t| t.wake_remote());
    // Prints ready at once if no thread was started.
    thread::with(crate::lifecycle::check_ready);
    // Straight into the first thread: boot does not wait for a timer tick (a machine
    // without a working PIT still boots; it only loses preemption).
    crate::cpu::enter::enter_first(|| thread::with(thread::sched::start));
    crate::cpu::enter::idle_forever()
}

/// The placement policy: every server runs on the boot CPU unless `server-cpu=NAME:N` names
/// an online CPU N for it (a CPU that is not online: one line, and the boot CPU).
fn place(t: &mut thread::Threads, id: thread::ThreadId, name: &str, options: &Options) {
    let Some(n) = options.server_cpu(name.as_bytes()) else {
        return;
    };
    let cpu = crate::cpu::percpu::claimed()
        .nth(usize::from(n))
        .filter(|cpu| cpu.index() == 0 || cpu.is_online());
    match cpu {
        Some(cpu) => {
            cpu.set_runs_threads();
            t.place(id, n);
            println!("nucleus: {name} runs on cpu {n} (server-cpu=)");
        }
        None => println!(
            "nucleus: server-cpu={name}:{n}: cpu {n} is not online; {name} runs on the boot cpu"
        ),
    }
}

/// Every started thread said hello: boot is complete. Prints the marker, ends the run if
/// the command line asked for that, or says whether to start the benchmarks (which end the
/// run themselves).
fn servers_ready() -> AfterReady {
    println!("{}", ipc::markers::READY);
    let when = WHEN_READY.get().copied().unwrap_or(WhenReady {
        selftest: None,
        exit_wanted: false,
        bench: false,
        kexec_expected: false,
    });
    if when.bench {
        // image-builder stops the run at the benchmarks' last line.
        return AfterReady::Bench;
    }
    match when.selftest.or_else(crate::selftest::deferred_status) {
        Some(status) => exit::exit(status),
        None if when.exit_wanted && !when.kexec_expected => exit::exit(Status::Success),
        None => AfterReady::Run,
    }
}

/// The banner: `fredvisor <version> (<revision>)`, or after a kexec `fredvisor <version>
/// (kexec generation N)` and why, with what CR4.FRED was at entry.
fn print_banner(revision: &str, generation: u32, reason: Option<KexecReason>, fred_at_entry: bool) {
    let version = env!("CARGO_PKG_VERSION");
    if generation > 1 {
        println!(
            "{}{version} (kexec generation {generation})",
            ipc::markers::BANNER
        );
        println!(
            "kexec: generation {generation} ({revision}): {}; CR4.FRED {} at entry",
            reason.map_or("no reason given", KexecReason::describe),
            if fred_at_entry { "SET" } else { "clear" }
        );
    } else {
        println!("{}{version} ({revision})", ipc::markers::BANNER);
    }
}

/// `kexec-generation=` and `kexec-reason=` read before the full parse (for the banner).
fn kexec_words(cmdline: &[u8]) -> (u32, Option<KexecReason>) {
    let options = cmdline::parse(cmdline, |_| {});
    (options.generation.0, options.kexec_reason)
}

fn cmdline_words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// Arms the test exit before anything else can fail, so even a fault reported by the
/// early IDT ends an emulator run (the full parse re-arms it from the same option).
fn early_arm_exit(cmdline: &[u8]) {
    for word in cmdline_words(cmdline) {
        match word {
            b"exit=qemu" => exit::arm_qemu(),
            b"exit=bochs" => exit::arm_bochs(),
            _ => {}
        }
    }
}
