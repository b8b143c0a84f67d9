//! Issue 18 point 3: the call-gate test guest (`tests/guests/callgates`) with its exact
//! lines — kernel → kernel `call far` through a GDT and an LDT gate and back by `lretq`,
//! `jmp far` through a gate, user → kernel onto the `stack_switch` stack and back through
//! `iret`, and every refused case with its vector, error code and RIP. Shared by
//! `tests/callgates.rs` (QEMU, IDT) and `tests/fred_cpu.rs` (Bochs, FRED): the same lines.

use anyhow::{Result, ensure};
use image_builder::guest::GuestFile;

use super::guests::{boot_guests, guest_elf};
use crate::expect_exact_line;
use crate::machine::Machine;

/// Every line the guest prints, in the semantics table's terms.
pub const LINES: [&str; 14] = [
    "update_descriptor of a gate to 0xe008: -EINVAL, of an interrupt gate: -EINVAL",
    "kernel lcall through GDT gate 0x80: landed cs 0xe033, rsp right yes, pushed rip right yes, pushed cs 0xe033, lretq back yes",
    "kernel lcall through LDT gate 0x14: landed cs 0xe033, rsp right yes, pushed rip right yes, pushed cs 0xe033, lretq back yes",
    "kernel ljmp through GDT gate 0xe0: landed cs 0xe033, stack unchanged yes",
    "kernel lcall with RPL 3 through DPL 0 gate 0x83: one fault, vector 0xd error 0x80, rip right yes",
    "kernel lcall through gate 0xa0 to a data segment: one fault, vector 0xd error 0xc0, rip right yes",
    "kernel lcall through non-present gate 0xb3: one fault, vector 0xb error 0xb0, rip right yes",
    "kernel lcall through entry 0xd0 whose gates were refused: one fault, vector 0xd error 0xd0, rip right yes",
    "kernel lcall with its operand on an unmapped page: one fault, vector 0xe error 0x0, cr2 right yes, rip right yes",
    "user lcall through GDT gate 0x93: on the stack_switch stack yes, frame rip right yes, cs 0xe033, rsp right yes, ss 0xe02b",
    "user lcall through GDT gate 0x93: kernel-mode hypercall answered yes, work on the kernel stack 42, back in user mode yes",
    "user lcall through DPL 0 gate 0x83: vector 0xd error 0x80, from user mode yes, rip right yes",
    "user ljmp through gate 0x93 into the kernel: vector 0xd error 0xe030, from user mode yes, rip right yes",
    "all cases done, powering off",
];

pub fn call_gates_are_emulated_with_the_sdm_rules(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-callgates")?;
    let boot = boot_guests(machine, vec![GuestFile::new("cg", &path).mem(4)], 1)?;
    ensure!(
        !boot.lines().any(|l| l.contains("WRONG")),
        "a guest check failed: {:?}",
        boot.lines().find(|l| l.contains("WRONG"))
    );
    for line in LINES {
        expect_exact_line(&boot, &format!("guest cg: callgates: {line}"))?;
    }
    expect_exact_line(&boot, "pv-server: guest cg: shut down (poweroff)")
}
