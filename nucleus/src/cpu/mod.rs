//! Every CPU: the MADT's list ([`discover`]), the local APIC ([`apic`]), its timer
//! ([`apic_timer`]), interrupts between CPUs ([`ipi`]), starting the APs
//! ([`bringup`], [`trampoline`]), and this CPU's own data ([`percpu`]): its descriptor tables ([`tables`]), the FRED switch ([`fred`]), its stack
//! block ([`stacks`]), its `cpu_info` block and SYSCALL MSRs ([`percpu`]), the protections against Ring3 code
//! ([`protect`]), entering a frame
//! from Rust ([`enter`]) the control registers a dump shows ([`control`]) and stopping the CPU ([`halt`]).
pub mod apic;
pub mod apic_timer;
pub mod bringup;
pub mod control;
pub mod discover;
pub mod enter;
pub mod fred;
pub mod halt;
pub mod ipi;
pub mod percpu;
pub mod protect;
pub mod stacks;
pub mod tables;
pub mod trampoline;
mod user_segments;

pub use enter::{
    data_selectors_left, idle_exit, load_data_selectors, load_server_segments, load_user_segments,
    selectors_owner, set_save_area, set_selectors_owner, user_segments_left,
};

/// This CPU's bring-up number (0: the boot CPU).
#[inline(always)]
pub fn this_cpu_number() -> u32 {
    percpu::current().index()
}

/// Makes `view` this CPU's GDT and LDT for the thread coming in (`tables`).
#[inline(always)]
pub fn load_descriptor_tables(view: bsp_x86_64::gdt::DescriptorView) {
    tables::load_descriptor_tables(&percpu::current().tables, view);
}

/// Bit N set: CPU N (bring-up number) is online; the boot CPU always is.
pub fn online_mask() -> u32 {
    percpu::claimed()
        .filter(|cpu| cpu.index() == 0 || cpu.is_online())
        .fold(1, |mask, cpu| {
            mask | 1u32.checked_shl(cpu.index()).unwrap_or(0)
        })
}

/// CPU `n` has threads placed on it from now on: its ticks and reschedule IPIs schedule.
pub fn run_threads_on(n: usize) {
    if let Some(cpu) = percpu::claimed().nth(n) {
        cpu.set_runs_threads();
    }
}
