//! The delivery decision and the switch from the IDT to FRED (issue 8 points 2 and 5).
//!
//! Early boot always runs on the IDT. Once the stack block exists, `init` asks the pure
//! policy in `bsp_x86_64::fred`, prints its one-line decision, and — if FRED is on — has
//! `bsp_x86_64::fred::enable` program STAR, the FRED MSRs and CR4.FRED from a plan computed
//! from the stack block. The IDT stays loaded (unused under FRED), as a fallback for kexec.
use bsp_x86_64::cmdline::{LogLevel, Options};
use bsp_x86_64::fred::{self as policy, CpuFeatures, FredMsrPlan};

unsafe extern "C" {
    /// The FRED entry page (`bsp_x86_64::entry_stubs!`): ring-3 entry at +0, ring-0 at +256.
    static fred_entry_ring3: u8;
}

/// True once this CPU delivers events through FRED.
#[inline]
pub fn enabled() -> bool {
    super::percpu::current().fred_enabled()
}

/// The boot CPU: decides, prints the decision, and enables FRED if it says so.
pub fn init(options: &Options) {
    let decision = decide(options);
    if let Some(warning) = decision.warning {
        println!("{warning}");
    }
    println!("{decision}");
    if decision.enabled
        && let Err(why) = enable(options)
    {
        println!("fred: {why}; staying on IDT delivery");
    }
}

/// An AP: the same decision on this CPU's features, FRED enabled if it says so; nothing
/// printed (the AP's online line says what this returns).
pub fn init_quiet(options: &Options) -> policy::Decision {
    let mut decision = decide(options);
    if decision.enabled && enable(options).is_err() {
        decision.enabled = false;
    }
    decision
}

fn decide(options: &Options) -> policy::Decision {
    policy::decide(options.fred, options.pv_shim, CpuFeatures::probe())
}

/// Programs this CPU's FRED MSRs from its stack block and sets CR4.FRED.
fn enable(options: &Options) -> Result<(), &'static str> {
    let cpu = super::percpu::current();
    let block = cpu.block().ok_or("no stack block")?;
    // SAFETY: linker symbol; only its address is used.
    let entry_page = core::ptr::from_ref(unsafe { &fred_entry_ring3 }) as u64;
    let plan =
        FredMsrPlan::new(&block, entry_page, false).map_err(|_| "cannot build the MSR plan")?;
    let debug = options.loglvl >= LogLevel::Debug;
    // SAFETY: CPL 0 with interrupts off, on the CPU whose stack block this is; the plan's
    // values come from the mapped stack block and the 4 KiB-aligned entry page, so every
    // later event is delivered to mapped stubs on mapped stacks. GDT (KERNEL_DS for SS) is
    // loaded.
    unsafe {
        policy::enable(&plan, |msr, value| {
            if debug {
                println!("fred: wrmsr {msr:#x} <- {value:#018x}");
            }
        })
    };
    cpu.set_fred_enabled();
    Ok(())
}
