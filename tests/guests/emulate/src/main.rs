//! guest-emulate (issue 16 points 5 and 8): a guest kernel's privileged instructions at
//! CPL 3, emulated by pv-server, with exact expected values: CPUID through the
//! forced-emulation prefix (Xen's leaves, FRED/LKGS/VMX/x2APIC hidden, the hypervisor bit),
//! CR0/CR2/CR3/CR4 reads and the writes Xen allows, the MSRs a PV kernel reads, and
//! `in`/`out`/`cli`/`sti` once `physdev_op(set_iopl)` allows them.
//!
//! Then, with a trap table, what is not emulated arrives as the fault it is: `wrmsr` of a
//! non-canonical FS_BASE and an unknown MSR, `in` without the IOPL, `mov %cr8` as `#GP(0)`;
//! the forced-emulation prefix before anything but `cpuid` as `#UD` at the `ud2`.
//!
//! Prints the CPUID signature line and `emulate: N checks passed`, then powers off; the
//! first wrong value prints `emulate: WRONG …` and crashes.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::shared::Checks;
    use guest_rt::tables::p2m;
    use guest_rt::traps::{self, TrapFrame};
    use guest_rt::{Boot, guest_main, hypercall, println, xen_guest_notes};
    use xen_abi::{Errno, Hypercall};

    xen_guest_notes!("fredvisor-emulate");

    /// CPUID through Xen's forced-emulation prefix: `[eax, ebx, ecx, edx]`.
    fn xen_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
        let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
        // SAFETY: `ud2; "xen"; cpuid` traps to the hypervisor, which emulates the CPUID and
        // resumes after it; rbx (reserved by the compiler) is saved around it.
        unsafe {
            asm!(
                "mov {b}, rbx",
                "ud2",
                ".ascii \"xen\"",
                "cpuid",
                "xchg {b}, rbx",
                b = out(reg) ebx,
                inout("eax") leaf => eax,
                inout("ecx") subleaf => ecx,
                out("edx") edx,
            )
        };
        [eax, ebx as u32, ecx, edx]
    }

    macro_rules! read_cr {
        ($cr:literal) => {{
            let value: u64;
            // SAFETY: a `mov` from a control register #GPs at CPL 3; pv-server emulates it.
            unsafe { asm!(concat!("mov {}, ", $cr), out(reg) value) };
            value
        }};
    }

    macro_rules! write_cr {
        ($cr:literal, $value:expr) => {{
            let value: u64 = $value;
            // SAFETY: as for `read_cr`; the writes used here are ones Xen allows.
            unsafe { asm!(concat!("mov ", $cr, ", {}"), in(reg) value) };
        }};
    }

    fn rdmsr(msr: u32) -> u64 {
        let (low, high): (u32, u32);
        // SAFETY: #GP at CPL 3, emulated by pv-server for the MSRs used here.
        unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high) };
        u64::from(high) << 32 | u64::from(low)
    }

    fn wrmsr(msr: u32, value: u64) {
        // SAFETY: as for `rdmsr`; only writes Xen accepts.
        unsafe {
            asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32)
        };
    }

    /// The last trap: vector, error code, RIP; and how far the handler skips.
    static VECTOR: AtomicU64 = AtomicU64::new(0);
    static ERROR: AtomicU64 = AtomicU64::new(0);
    static RIP: AtomicU64 = AtomicU64::new(0);
    static SKIP: AtomicU64 = AtomicU64::new(0);

    fn handler(frame: &mut TrapFrame) {
        VECTOR.store(frame.vector, Ordering::SeqCst);
        ERROR.store(frame.error_code, Ordering::SeqCst);
        RIP.store(frame.rip, Ordering::SeqCst);
        frame.rip += SKIP.load(Ordering::SeqCst);
    }

    /// Runs `probe` (an instruction at the label `2:`, `skip` bytes long) and returns the
    /// trap it raised: (vector, error code, whether the saved RIP was the instruction's).
    macro_rules! trap_of {
        ($skip:expr, $($asm:tt)*) => {{
            VECTOR.store(u64::MAX, Ordering::SeqCst);
            SKIP.store($skip, Ordering::SeqCst);
            let at: u64;
            // SAFETY: the probe faults on purpose; the handler skips it and returns.
            unsafe { asm!("lea {at}, [rip + 2f]", $($asm)*, at = out(reg) at) };
            (
                VECTOR.load(Ordering::SeqCst),
                ERROR.load(Ordering::SeqCst),
                RIP.load(Ordering::SeqCst) == at,
            )
        }};
    }

    fn set_iopl(iopl: u32) -> u64 {
        // SAFETY: `iopl` lives on our stack for the call.
        unsafe {
            hypercall(
                Hypercall::PhysdevOp,
                [6, &iopl as *const u32 as u64, 0, 0, 0],
            )
        }
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let mut c = Checks::new("emulate");
        // CPUID: Xen's leaves.
        let base = xen_cpuid(0x4000_0000, 0);
        let mut name = [0u8; 12];
        for (i, word) in base[1..].iter().enumerate() {
            name[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        println!(
            "emulate: cpuid 0x40000000: eax {:#x} {}",
            base[0],
            core::str::from_utf8(&name).unwrap_or("?")
        );
        c.eq("cpuid 0x40000000 eax", base[0].into(), 0x4000_0002);
        c.yes("cpuid 0x40000000 signature", &name == b"XenVMMXenVMM");
        c.eq(
            "cpuid 0x40000001 eax",
            xen_cpuid(0x4000_0001, 0)[0].into(),
            4 << 16 | 21,
        );
        c.eq(
            "cpuid 0x40000002 eax",
            xen_cpuid(0x4000_0002, 0)[0].into(),
            1,
        );
        let leaf1 = xen_cpuid(1, 0);
        c.eq("cpuid 1 hypervisor bit", (leaf1[2] >> 31).into(), 1);
        c.eq("cpuid 1 VMX", (leaf1[2] >> 5 & 1).into(), 0);
        c.eq("cpuid 1 x2APIC", (leaf1[2] >> 21 & 1).into(), 0);
        c.eq("cpuid 1 XSAVE", (leaf1[2] >> 26 & 1).into(), 0);
        c.eq("cpuid 1 APIC ID", (leaf1[1] >> 24).into(), 0);
        c.eq(
            "cpuid 7.1 FRED, LKGS",
            (xen_cpuid(7, 1)[0] >> 17 & 3).into(),
            0,
        );
        c.yes("cpuid 0 max leaf", xen_cpuid(0, 0)[0] <= 0xd);
        c.yes("cpuid answers are stable", xen_cpuid(1, 0) == leaf1);
        // Control registers.
        c.eq("cr0", read_cr!("cr0"), 0x8005_0033);
        write_cr!("cr0", 0x8005_0033 | 8);
        c.eq("cr0 with TS", read_cr!("cr0"), 0x8005_003b);
        write_cr!("cr0", 0x8005_0033);
        c.eq("cr0 TS cleared", read_cr!("cr0"), 0x8005_0033);
        c.eq("cr4", read_cr!("cr4"), 0x6a0);
        let l4 = p2m(info)[(info.pt_base >> 12) as usize];
        c.eq("cr3", read_cr!("cr3"), l4 << 12);
        write_cr!("cr2", 0x1234_5000);
        c.eq("cr2", read_cr!("cr2"), 0x1234_5000);
        // MSRs.
        c.eq("EFER", rdmsr(0xc000_0080), 0xd01);
        c.eq("MISC_ENABLE", rdmsr(0x1a0), 0x0080_1801);
        wrmsr(0x1a0, 0x0080_1801);
        c.eq("PAT", rdmsr(0x277), 0x0005_0100_0704_0406);
        c.eq("APIC_BASE", rdmsr(0x1b), 0xfee0_0900);
        c.eq("FS_BASE", rdmsr(0xc000_0100), 0);
        c.eq("GS_BASE", rdmsr(0xc000_0101), 0);
        c.eq("SHADOW_GS_BASE", rdmsr(0xc000_0102), 0);
        // Ports, once the virtual IOPL allows them: nothing is there, reads are all ones.
        c.eq("set_iopl 4", set_iopl(4), Errno::Einval.rax());
        c.eq("set_iopl 1", set_iopl(1), 0);
        let (al, eax): (u64, u64);
        // SAFETY: `in`/`out`/`cli`/`sti` #GP at CPL 3; pv-server emulates them under IOPL 1.
        unsafe {
            asm!("in al, 0x80", inout("rax") 0x1200u64 => al);
            asm!("in eax, dx", in("dx") 0x71u16, inout("rax") 0u64 => eax);
            asm!("out 0x80, al", in("al") 0u8);
            asm!("cli", "sti");
        }
        c.eq("in al, 0x80", al, 0x12ff);
        c.eq("in eax, dx", eax, 0xffff_ffff);

        // What is not emulated is the guest's fault.
        traps::set_handler(handler);
        c.eq(
            "set_trap_table",
            traps::set_trap_table(&[(6, 0), (13, 0), (14, 0)]),
            0,
        );
        let gp0 = (13, 0, true);
        let got =
            trap_of!(2, "2: wrmsr", in("ecx") 0xc000_0100u32, in("eax") 0u32, in("edx") 0x8000u32);
        c.yes("wrmsr non-canonical FS_BASE: #GP(0)", got == gp0);
        let got = trap_of!(2, "2: rdmsr", in("ecx") 0x3au32, out("eax") _, out("edx") _);
        c.yes("rdmsr FEATURE_CONTROL: #GP(0)", got == gp0);
        let got = trap_of!(4, "2: mov rax, cr8", out("rax") _);
        c.yes("mov cr8: #GP(0)", got == gp0);
        c.eq("set_iopl 0", set_iopl(0), 0);
        let got = trap_of!(2, "2: in al, 0x80", out("al") _);
        c.yes("in without IOPL: #GP(0)", got == gp0);
        let got = trap_of!(7, "2: ud2", ".ascii \"xen\"", "nop", "nop");
        c.yes(
            "prefix without cpuid: #UD at the ud2",
            got == (6, traps::NO_ERROR_CODE, true),
        );
        c.done()
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
