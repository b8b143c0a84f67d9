//! guest-traps (issue 16 points 1, 2, 3 and 8): installs a trap table and takes `#UD`, `#PF`
//! (a read of NULL: error code 0), `#GP`, `#DE`, `#BP`, `#OF` and `INT 0x20`/`0x21` under the
//! DPL rules, returning through the `iret` hypercall each time, and prints one line per trap
//! with what the bounce frame held (vector, error code, saved RIP relative to the
//! instruction, saved CS and event mask, IF) — the same lines under IDT and FRED.
//!
//! Hostile cases by command line, each ending the guest with pv-server's crash line (or a
//! WRONG line if a hypercall answers what it should not):
//! * `bad-table`: trap tables and `callback_op` blocks at hypervisor, non-canonical and
//!   unmapped addresses (`-EFAULT`), a non-canonical handler or callback (`-EINVAL`), then a
//!   `#UD` handler in the hypervisor's range and a `ud2`;
//! * `no-table`: a table installed and cleared again (NULL), then `ud2`;
//! * `ro-stack` / `hv-stack`: a `ud2` with RSP on a read-only page (its own L4) or in the
//!   hypervisor's window: the bounce frame cannot be written;
//! * `iret-hv`, `iret-cs`, `iret-rip`, `iret-user`: `iret` with its frame in the hypervisor's
//!   window, to Xen's ring-0 CS, to a non-canonical RIP, to user mode without user tables.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::tables::{PAGE_RW, region_end, update_va_mapping};
    use guest_rt::traps::{self, IretTarget, NO_ERROR_CODE, TrapFrame};
    use guest_rt::{Boot, guest_main, println, shutdown, xen_guest_notes};
    use xen_abi::sched::ShutdownReason;
    use xen_abi::traps::TRAP_FLAG_MASK_EVENTS;
    use xen_abi::{Errno, StartInfo};

    xen_guest_notes!("fredvisor-traps");

    /// Where the probing instruction is and where the handler resumes.
    static FAULT_AT: AtomicU64 = AtomicU64::new(0);
    static RESUME: AtomicU64 = AtomicU64::new(0);
    /// The last trap's frame, as the handler saw it.
    static VECTOR: AtomicU64 = AtomicU64::new(0);
    static ERROR: AtomicU64 = AtomicU64::new(0);
    static RIP: AtomicU64 = AtomicU64::new(0);
    static CS: AtomicU64 = AtomicU64::new(0);
    static RFLAGS: AtomicU64 = AtomicU64::new(0);
    /// The event mask while the handler ran.
    static MASK_IN_HANDLER: AtomicU64 = AtomicU64::new(0);
    static TRAPS: AtomicU64 = AtomicU64::new(0);
    /// VA of shared_info (vcpu_info 0 at its start).
    static SHARED: AtomicU64 = AtomicU64::new(0);

    fn vcpu_mask() -> u8 {
        // SAFETY: shared_info is mapped at SHARED before any trap (main).
        unsafe { ((SHARED.load(Ordering::SeqCst) + 1) as *const u8).read_volatile() }
    }

    fn set_vcpu_mask(mask: u8) {
        // SAFETY: as in `vcpu_mask`; the byte is the guest's to write.
        unsafe { ((SHARED.load(Ordering::SeqCst) + 1) as *mut u8).write_volatile(mask) }
    }

    fn set_vcpu_cr2(value: u64) {
        // SAFETY: as in `vcpu_mask`; the guest may write its own vcpu_info.
        unsafe { ((SHARED.load(Ordering::SeqCst) + 16) as *mut u64).write_volatile(value) }
    }

    fn vcpu_cr2() -> u64 {
        // SAFETY: as in `vcpu_mask`; arch.cr2 is at offset 16 of vcpu_info.
        unsafe { ((SHARED.load(Ordering::SeqCst) + 16) as *const u64).read_volatile() }
    }

    fn handler(frame: &mut TrapFrame) {
        VECTOR.store(frame.vector, Ordering::SeqCst);
        ERROR.store(frame.error_code, Ordering::SeqCst);
        RIP.store(frame.rip, Ordering::SeqCst);
        CS.store(frame.cs, Ordering::SeqCst);
        RFLAGS.store(frame.rflags, Ordering::SeqCst);
        MASK_IN_HANDLER.store(u64::from(vcpu_mask()), Ordering::SeqCst);
        TRAPS.fetch_add(1, Ordering::SeqCst);
        frame.rip = RESUME.load(Ordering::SeqCst);
    }

    /// Runs `$insn` after `$setup`, with FAULT_AT at `$insn` and RESUME after it.
    macro_rules! probe {
        ($setup:literal, $insn:literal) => {
            // SAFETY: the instruction traps (or not) into `handler`, which resumes after it;
            // every register it may touch is declared clobbered.
            unsafe {
                asm!(
                    "lea rax, [rip + 2f]",
                    "mov [rip + {fault}], rax",
                    "lea rax, [rip + 3f]",
                    "mov [rip + {resume}], rax",
                    $setup,
                    "2:",
                    $insn,
                    "3:",
                    fault = sym FAULT_AT,
                    resume = sym RESUME,
                    out("rax") _,
                    out("rcx") _,
                    out("rdx") _,
                )
            }
        };
    }

    /// The line for the trap the last probe took.
    fn report(name: &str) {
        let error = ERROR.load(Ordering::SeqCst);
        let cs = CS.load(Ordering::SeqCst);
        let offset = RIP
            .load(Ordering::SeqCst)
            .wrapping_sub(FAULT_AT.load(Ordering::SeqCst));
        let mut text = heapless_line::Line::new();
        let _ = core::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "traps: {name}: vector {:#x}, ",
                VECTOR.load(Ordering::SeqCst)
            ),
        );
        if error == NO_ERROR_CODE {
            let _ = core::fmt::Write::write_str(&mut text, "no error code, ");
        } else {
            let _ = core::fmt::Write::write_fmt(&mut text, format_args!("error {error:#x}, "));
        }
        println!(
            "{}rip +{offset}, cs {:#x} mask {}, IF {}",
            text.as_str(),
            cs & 0xffff,
            (cs >> 32) & 0xff,
            (RFLAGS.load(Ordering::SeqCst) >> 9) & 1
        );
    }

    /// A fixed-size line buffer (no allocator).
    mod heapless_line {
        pub struct Line {
            buf: [u8; 160],
            len: usize,
        }
        impl Line {
            pub const fn new() -> Self {
                Self {
                    buf: [0; 160],
                    len: 0,
                }
            }
            pub fn as_str(&self) -> &str {
                core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
            }
        }
        impl core::fmt::Write for Line {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                let n = s.len().min(self.buf.len() - self.len);
                self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
                self.len += n;
                Ok(())
            }
        }
    }

    fn expect(what: &str, got: u64, want: u64) {
        if got != want {
            println!("traps: WRONG {what}: got {got:#x}, want {want:#x}");
            shutdown(ShutdownReason::Crash);
        }
    }

    /// Maps shared_info at the last page of the bootstrap region.
    fn map_shared_info(info: &StartInfo) {
        let va = region_end(info) - 4096;
        expect(
            "map shared_info",
            update_va_mapping(va, info.shared_info | PAGE_RW),
            0,
        );
        SHARED.store(va, Ordering::SeqCst);
    }

    const TABLE: [(u8, u8); 11] = [
        (0, 0),
        (3, 3),
        (4, 3),
        (6, TRAP_FLAG_MASK_EVENTS),
        (7, 0),
        (13, 0),
        (14, 0),
        // INT 0x20 may be used from the guest kernel (DPL 1), 0x21 from nowhere (DPL 0).
        (0x20, 1),
        (0x21, 0),
        (0x80, 3),
        (1, 0),
    ];

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        map_shared_info(info);
        traps::set_handler(handler);
        match info.cmdline() {
            b"" => all_traps(info),
            b"bad-table" => bad_table(),
            b"no-table" => {
                expect("set_trap_table", traps::set_trap_table(&TABLE), 0);
                expect("clear", traps::raw_trap_table(0), 0);
                println!("traps: no-table: ud2 with the table cleared");
                probe!("", "ud2");
                println!("traps: WRONG no-table: survived");
                shutdown(ShutdownReason::Crash)
            }
            b"ro-stack" => {
                expect("set_trap_table", traps::set_trap_table(&TABLE), 0);
                println!("traps: ro-stack: ud2 on a read-only stack");
                // The L4's own page: mapped read-only for the guest.
                let rsp = info.pt_base + 0x800;
                // SAFETY: never returns (the bounce crashes the guest).
                unsafe { asm!("mov rsp, {0}", "ud2", in(reg) rsp, options(noreturn)) }
            }
            b"hv-stack" => {
                expect("set_trap_table", traps::set_trap_table(&TABLE), 0);
                println!("traps: hv-stack: ud2 on a stack in the hypervisor's window");
                let rsp = 0xffff_8000_0000_2000u64;
                // SAFETY: never returns (the bounce crashes the guest).
                unsafe { asm!("mov rsp, {0}", "ud2", in(reg) rsp, options(noreturn)) }
            }
            b"iret-hv" => {
                println!("traps: iret-hv: iret with its frame in the hypervisor's window");
                // SAFETY: never returns (the iret crashes the guest).
                unsafe {
                    asm!(
                        "mov rsp, {0}",
                        "mov eax, {iret}",
                        "syscall",
                        in(reg) 0xffff_8000_0000_2000u64,
                        iret = const xen_abi::Hypercall::Iret as u32,
                        options(noreturn)
                    )
                }
            }
            b"iret-cs" => bad_iret("iret-cs", 0x1000, 0xe008),
            b"iret-rip" => bad_iret("iret-rip", 0x0000_8000_0000_0000, 0xe033),
            b"iret-user" => bad_iret("iret-user", 0x1000, 0xe033),
            _ => {
                println!("traps: unknown case");
                shutdown(ShutdownReason::Crash)
            }
        }
    }

    fn bad_iret(case: &str, rip: u64, cs: u64) -> ! {
        println!("traps: {case}: iret to rip {rip:#x} cs {cs:#x}");
        let here: u64;
        // SAFETY: reads RSP only.
        unsafe { asm!("mov {0}, rsp", out(reg) here) };
        let to = IretTarget {
            rip,
            cs,
            rflags: 0x202,
            rsp: here,
            ss: 0xe02b,
            flags: 0,
        };
        // SAFETY: the hypervisor must refuse this context; nothing runs after it.
        unsafe { traps::iret_to(&to, 0, 0, 0) }
    }

    fn bad_table() -> ! {
        for (what, ptr) in [
            ("hypervisor", 0xffff_8000_0000_1000u64),
            ("non-canonical", 0x0000_8000_0000_0000),
            ("unmapped", 0x7000_0000_0000),
        ] {
            expect(what, traps::raw_trap_table(ptr), Errno::Efault.rax());
        }
        // callback_op's argument block at the same three places, then a callback address
        // that is not canonical.
        for (what, ptr) in [
            ("callback_op hypervisor", 0xffff_8000_0000_1000u64),
            ("callback_op non-canonical", 0x0000_8000_0000_0000),
            ("callback_op unmapped", 0x7000_0000_0000),
        ] {
            // SAFETY: the hypervisor must refuse the pointer without touching memory.
            let got =
                unsafe { guest_rt::hypercall(xen_abi::Hypercall::CallbackOp, [0, ptr, 0, 0, 0]) };
            expect(what, got, Errno::Efault.rax());
        }
        expect(
            "non-canonical syscall callback",
            traps::register_callback(2, 0, 0x0000_8000_0000_1000),
            Errno::Einval.rax(),
        );
        let mut table = [[0u8; 16]; 2];
        table[0][0] = 6;
        table[0][8..16].copy_from_slice(&0x0000_8000_0000_1000u64.to_le_bytes());
        expect(
            "non-canonical handler",
            traps::raw_trap_table(table.as_ptr() as u64),
            Errno::Einval.rax(),
        );
        table[0][8..16].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
        expect(
            "handler in the hypervisor's range",
            traps::raw_trap_table(table.as_ptr() as u64),
            0,
        );
        println!("traps: bad-table: 9 answers right; ud2 into a handler in the hypervisor's range");
        probe!("", "ud2");
        println!("traps: WRONG bad-table: survived");
        shutdown(ShutdownReason::Crash)
    }

    fn all_traps(info: &StartInfo) -> ! {
        let _ = info;
        expect("set_trap_table", traps::set_trap_table(&TABLE), 0);
        // Page 0 unmapped, so the NULL read faults (0: not present, a read, kernel mode).
        let _ = update_va_mapping(0, 0);

        // #UD with events unmasked: the entry masks them (its flag), iret unmasks again.
        set_vcpu_mask(0);
        probe!("", "ud2");
        report("ud2");
        println!(
            "traps: ud2: handler ran with mask {}, mask after iret {}",
            MASK_IN_HANDLER.load(Ordering::SeqCst),
            vcpu_mask()
        );
        set_vcpu_mask(1);

        set_vcpu_cr2(0xdead);
        probe!("xor ecx, ecx", "mov rax, [rcx]");
        report("read of NULL");
        println!("traps: read of NULL: vcpu_info cr2 {:#x}", vcpu_cr2());

        probe!("mov rcx, 0x700000000000", "mov rax, [rcx]");
        report("unmapped read");
        println!("traps: unmapped read: vcpu_info cr2 {:#x}", vcpu_cr2());

        probe!("mov rcx, 0x0000800000000000", "mov rax, [rcx]");
        report("non-canonical read");

        probe!("xor edx, edx\nxor ecx, ecx\nmov eax, 1", "div ecx");
        report("div by 0");

        probe!("", "int3");
        report("int3");

        probe!("", "int 4");
        report("int 4");

        probe!("", "int 0x20");
        report("int 0x20 (DPL 1)");

        probe!("", "int 0x21");
        report("int 0x21 (DPL 0)");

        println!(
            "traps: {} traps, each back through iret",
            TRAPS.load(Ordering::SeqCst)
        );
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
