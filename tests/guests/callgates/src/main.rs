//! guest-callgates (issue 18 point 3): installs 64-bit call gates in its GDT and LDT and uses
//! them as the semantics of `docs/architecture-notes.md` ("Call gates for PV64 guests") say:
//! `call far` kernel → kernel through a GDT and an LDT gate and back by `lretq`, `jmp far`
//! through a gate, `call far` user → kernel onto the `stack_switch` stack, work there and
//! back to user mode through `iret`; then each refused case with its exact fault: a gate
//! DPL below the CPL, an RPL above the gate's DPL, `jmp far` into the kernel from user mode,
//! a gate to a data segment, a non-present gate, an entry holding a gate the guest could not
//! install, an operand on an unmapped page. One line per case, the same under IDT and FRED.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::{asm, global_asm};
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::tables::{PAGE_RO, mmuext_op, p2m, region_end, update_va_mapping};
    use guest_rt::traps::{self, TrapFrame};
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_guest_notes};
    use xen_abi::mm::MmuextOp;
    use xen_abi::sched::ShutdownReason;
    use xen_abi::{Errno, Hypercall};

    xen_guest_notes!("fredvisor-callgates");

    const KSTACK_BYTES: u64 = 16384;
    const USTACK_BYTES: u64 = 8192;

    /// GDT entries (16-byte gates take two): a DPL 0 gate to the kernel, a DPL 3 gate to
    /// the kernel, a DPL 3 gate to the data segment at 24, a non-present DPL 3 gate, the
    /// data segment, the entry a refused gate was meant for, a DPL 0 gate for `jmp far`.
    const KERNEL_GATE: u16 = 16 << 3;
    const USER_GATE: u16 = 18 << 3;
    const DATA_GATE: u16 = 20 << 3;
    const ABSENT_GATE: u16 = 22 << 3;
    const DATA_SEGMENT: u16 = 24 << 3;
    const REFUSED_GATE: u16 = 26 << 3;
    const JUMP_GATE: u16 = 28 << 3;
    /// LDT entry 2: a DPL 0 gate to the kernel.
    const LDT_GATE: u16 = 2 << 3 | 4;
    const DATA_DPL3: u64 = 0x00cf_f200_0000_ffff;
    const FLAT_KERNEL_CS: u16 = xen_abi::layout::selector::FLAT_KERNEL_CS;
    const HYPERVISOR_CS: u16 = 0xe008;
    const INTERRUPT_GATE: u64 = 0x0000_ee00_0008_0000;

    // The far transfers (rdi = the m16:32 operand), the callees, and the user-mode code.
    global_asm!(
        ".pushsection .text.callgates, \"ax\", @progbits",
        ".globl callgates_far_call",
        "callgates_far_call:",
        "    mov [rip + {pre_rsp}], rsp",
        "    .byte 0xff, 0x1f", // lcall *(%rdi)
        "    ret",
        ".globl callgates_far_jmp",
        "callgates_far_jmp:",
        "    mov [rip + {pre_rsp}], rsp",
        "    .byte 0xff, 0x2f", // ljmp *(%rdi)
        "    ret",
        // Reached by lcall: note the stack and CS, return by lretq.
        ".globl callgates_call_target",
        "callgates_call_target:",
        "    mov [rip + {k_rsp}], rsp",
        "    mov rax, [rsp]",
        "    mov [rip + {k_rip}], rax",
        "    mov rax, [rsp + 8]",
        "    mov [rip + {k_cs}], rax",
        "    mov ax, cs",
        "    movzx eax, ax",
        "    mov [rip + {k_live_cs}], rax",
        "    .byte 0x48, 0xcb", // lretq
        // Reached by ljmp: note the stack and CS, return to the Rust caller.
        ".globl callgates_jmp_target",
        "callgates_jmp_target:",
        "    mov [rip + {k_rsp}], rsp",
        "    mov ax, cs",
        "    movzx eax, ax",
        "    mov [rip + {k_live_cs}], rax",
        "    ret",
        // Reached from user mode: the 64-bit inner frame (rip, cs, rsp, ss) on the
        // stack_switch stack; a hypercall (kernel mode only), work on this stack, then back
        // to user mode through iret.
        ".globl callgates_user_target",
        "callgates_user_target:",
        "    mov [rip + {u_rsp}], rsp",
        "    mov rax, [rsp]",
        "    mov [rip + {u_rip}], rax",
        "    mov rax, [rsp + 8]",
        "    mov [rip + {u_cs}], rax",
        "    mov rax, [rsp + 16]",
        "    mov [rip + {u_user_rsp}], rax",
        "    mov rax, [rsp + 24]",
        "    mov [rip + {u_ss}], rax",
        "    xor edi, edi",
        "    call hypercall_page + {xen_version}",
        "    mov [rip + {u_version}], rax",
        "    push 6",
        "    push 7",
        "    pop rax",
        "    pop rcx",
        "    imul rax, rcx",
        "    mov [rip + {u_work}], rax",
        "    pop rax",
        "    pop rcx",
        "    pop rdx",
        "    pop rsi",
        "    push rsi",
        "    push rdx",
        "    push 0x202",
        "    push rcx",
        "    push rax",
        "    push 0",
        "    jmp hypercall_page + {iret}",
        // User mode: the gate call, then the refused ones, then ud2 back to the kernel.
        ".globl callgates_user_entry",
        "callgates_user_entry:",
        "    lea rdi, [rip + {user_op}]",
        ".globl callgates_user_lcall",
        "callgates_user_lcall:",
        "    .byte 0xff, 0x1f",
        ".globl callgates_user_after_lcall",
        "callgates_user_after_lcall:",
        "    mov [rip + {back_rsp}], rsp",
        "    lea rdi, [rip + {kernel_op}]",
        ".globl callgates_user_refused",
        "callgates_user_refused:",
        "    .byte 0xff, 0x1f",
        "    lea rdi, [rip + {user_op}]",
        ".globl callgates_user_ljmp",
        "callgates_user_ljmp:",
        "    .byte 0xff, 0x2f",
        "    ud2",
        ".popsection",
        ".pushsection .bss.callgates_stacks, \"aw\", @nobits",
        ".balign 16",
        ".globl callgates_kstack",
        "callgates_kstack:",
        "    .skip {kstack}",
        ".globl callgates_ustack",
        "callgates_ustack:",
        "    .skip {ustack}",
        ".popsection",
        pre_rsp = sym PRE_RSP,
        k_rsp = sym K_RSP,
        k_rip = sym K_RIP,
        k_cs = sym K_CS,
        k_live_cs = sym K_LIVE_CS,
        u_rsp = sym U_RSP,
        u_rip = sym U_RIP,
        u_cs = sym U_CS,
        u_user_rsp = sym U_USER_RSP,
        u_ss = sym U_SS,
        u_version = sym U_VERSION,
        u_work = sym U_WORK,
        back_rsp = sym BACK_IN_USER_RSP,
        user_op = sym USER_OPERAND,
        kernel_op = sym KERNEL_RPL3_OPERAND,
        xen_version = const Hypercall::XenVersion.stub_offset(),
        iret = const Hypercall::Iret.stub_offset(),
        kstack = const KSTACK_BYTES,
        ustack = const USTACK_BYTES,
    );

    unsafe extern "C" {
        static callgates_far_call: u8;
        static callgates_far_jmp: u8;
        static callgates_call_target: u8;
        static callgates_jmp_target: u8;
        static callgates_user_target: u8;
        static callgates_user_entry: u8;
        static callgates_user_lcall: u8;
        static callgates_user_after_lcall: u8;
        static callgates_user_refused: u8;
        static callgates_user_ljmp: u8;
        static callgates_kstack: u8;
        static callgates_ustack: u8;
    }

    macro_rules! addr {
        ($symbol:ident) => {
            // SAFETY: only the symbol's address is taken.
            unsafe { &$symbol as *const u8 as u64 }
        };
    }

    static PRE_RSP: AtomicU64 = AtomicU64::new(0);
    static K_RSP: AtomicU64 = AtomicU64::new(0);
    static K_RIP: AtomicU64 = AtomicU64::new(0);
    static K_CS: AtomicU64 = AtomicU64::new(0);
    static K_LIVE_CS: AtomicU64 = AtomicU64::new(0);
    static U_RSP: AtomicU64 = AtomicU64::new(0);
    static U_RIP: AtomicU64 = AtomicU64::new(0);
    static U_CS: AtomicU64 = AtomicU64::new(0);
    static U_USER_RSP: AtomicU64 = AtomicU64::new(0);
    static U_SS: AtomicU64 = AtomicU64::new(0);
    static U_VERSION: AtomicU64 = AtomicU64::new(u64::MAX);
    static U_WORK: AtomicU64 = AtomicU64::new(0);
    static BACK_IN_USER_RSP: AtomicU64 = AtomicU64::new(0);
    /// m16:32 operands the user code uses (offset 0, then the selector).
    static USER_OPERAND: AtomicU64 = AtomicU64::new(0);
    static KERNEL_RPL3_OPERAND: AtomicU64 = AtomicU64::new(0);
    static SHARED: AtomicU64 = AtomicU64::new(0);

    /// One fault, as the handler saw it.
    #[derive(Clone, Copy, Default)]
    struct Fault {
        vector: u64,
        error: u64,
        rip: u64,
        cs: u64,
        cr2: u64,
    }

    static mut FAULTS: [Fault; 4] = [Fault {
        vector: 0,
        error: 0,
        rip: 0,
        cs: 0,
        cr2: 0,
    }; 4];
    static FAULT_COUNT: AtomicU64 = AtomicU64::new(0);

    fn vcpu_cr2() -> u64 {
        // SAFETY: shared_info is mapped at SHARED before any fault (main); arch.cr2 is at
        // offset 16 of vcpu_info 0.
        unsafe { ((SHARED.load(Ordering::SeqCst) + 16) as *const u64).read_volatile() }
    }

    fn handler(frame: &mut TrapFrame) {
        let fault = Fault {
            vector: frame.vector,
            error: frame.error_code,
            rip: frame.rip,
            cs: frame.cs & 0xffff,
            cr2: if frame.vector == 14 { vcpu_cr2() } else { 0 },
        };
        let n = FAULT_COUNT.fetch_add(1, Ordering::SeqCst) as usize;
        if n < 4 {
            // SAFETY: one vCPU, handlers do not nest here; read by main afterwards.
            unsafe { (*(&raw mut FAULTS))[n] = fault };
        }
        let sites = [
            addr!(callgates_far_call) + 7,
            addr!(callgates_far_jmp) + 7,
            addr!(callgates_user_refused),
            addr!(callgates_user_ljmp),
        ];
        if frame.vector == 6 {
            // The user code's ud2: back to the kernel where it left.
            guest_rt::user::back_to_kernel(frame);
        } else if sites.contains(&frame.rip) {
            // Step over the 2-byte far transfer.
            frame.rip += 2;
        } else {
            println!(
                "callgates: WRONG fault {:#x} error {:#x} at {:#x}",
                frame.vector, frame.error_code, frame.rip
            );
            shutdown(ShutdownReason::Crash);
        }
    }

    fn take_faults() -> ([Fault; 4], u64) {
        let n = FAULT_COUNT.swap(0, Ordering::SeqCst);
        // SAFETY: no handler runs now; one vCPU.
        (unsafe { *(&raw const FAULTS) }, n)
    }

    fn yes(b: bool) -> &'static str {
        if b { "yes" } else { "NO" }
    }

    fn expect(what: &str, got: u64, want: u64) {
        if got != want {
            println!("callgates: WRONG {what}: got {got:#x}, want {want:#x}");
            shutdown(ShutdownReason::Crash);
        }
    }

    /// A 16-byte 64-bit call gate as the guest writes it.
    fn gate(target: u16, dpl: u64, present: bool, offset: u64) -> [u64; 2] {
        let access = if present { 0x80 } else { 0 } | dpl << 5 | 0x0c;
        [
            (offset & 0xffff)
                | u64::from(target) << 16
                | access << 40
                | ((offset >> 16) & 0xffff) << 48,
            offset >> 32,
        ]
    }

    /// An m16:32 far pointer naming `selector`.
    const fn far_pointer(selector: u16) -> u64 {
        (selector as u64) << 32
    }

    fn far_call(operand: u64) {
        // SAFETY: the far call either lands in a callee that returns with lretq to the
        // instruction after it, or faults and the handler steps over it; either way the
        // asm function returns with the callee-saved registers intact.
        unsafe { asm!("call callgates_far_call", in("rdi") operand, clobber_abi("C")) }
    }

    fn far_jmp(operand: u64) {
        // SAFETY: as `far_call`: the jmp target returns to our call with `ret`.
        unsafe { asm!("call callgates_far_jmp", in("rdi") operand, clobber_abi("C")) }
    }

    fn hyper(call: Hypercall, args: [u64; 5]) -> u64 {
        // SAFETY: every argument the callers pass is theirs or a plain value.
        unsafe { hypercall(call, args) }
    }

    fn errno_name(rax: u64) -> &'static str {
        if rax == Errno::Einval.rax() {
            "-EINVAL"
        } else if rax == 0 {
            "0"
        } else {
            "another error"
        }
    }

    /// One refused far call from kernel mode through `selector`: its fault line.
    fn refused(what: &str, operand_at: u64) {
        far_call(operand_at);
        let (faults, n) = take_faults();
        let f = faults[0];
        let cr2 = if f.vector == 14 {
            cr2_check(f.cr2, operand_at)
        } else {
            ""
        };
        println!(
            "callgates: {what}: {} vector {:#x} error {:#x}{cr2}, rip right {}",
            if n == 1 {
                "one fault,"
            } else {
                "WRONG fault count,"
            },
            f.vector,
            f.error,
            yes(f.rip == addr!(callgates_far_call) + 7),
        );
    }

    fn cr2_check(cr2: u64, want: u64) -> &'static str {
        if cr2 == want {
            ", cr2 right yes"
        } else {
            ", cr2 right NO"
        }
    }

    fn kernel_calls() {
        for (name, selector) in [("GDT", KERNEL_GATE), ("LDT", LDT_GATE)] {
            let operand = far_pointer(selector);
            far_call(&operand as *const u64 as u64);
            let pre = PRE_RSP.load(Ordering::SeqCst);
            println!(
                "callgates: kernel lcall through {name} gate {selector:#x}: landed cs {:#x}, rsp right {}, pushed rip right {}, pushed cs {:#x}, lretq back yes",
                K_LIVE_CS.swap(0, Ordering::SeqCst),
                yes(K_RSP.swap(0, Ordering::SeqCst) == pre - 16),
                yes(K_RIP.swap(0, Ordering::SeqCst) == addr!(callgates_far_call) + 9),
                K_CS.swap(0, Ordering::SeqCst),
            );
        }
        let operand = far_pointer(JUMP_GATE);
        far_jmp(&operand as *const u64 as u64);
        println!(
            "callgates: kernel ljmp through GDT gate {JUMP_GATE:#x}: landed cs {:#x}, stack unchanged {}",
            K_LIVE_CS.swap(0, Ordering::SeqCst),
            yes(K_RSP.swap(0, Ordering::SeqCst) == PRE_RSP.load(Ordering::SeqCst)),
        );
        expect("faults so far", take_faults().1, 0);
    }

    fn kernel_refusals(info: &xen_abi::StartInfo) {
        let op = |selector| far_pointer(selector);
        let rpl3 = op(KERNEL_GATE | 3);
        refused(
            "kernel lcall with RPL 3 through DPL 0 gate 0x83",
            &rpl3 as *const u64 as u64,
        );
        let data = op(DATA_GATE);
        refused(
            "kernel lcall through gate 0xa0 to a data segment",
            &data as *const u64 as u64,
        );
        let absent = op(ABSENT_GATE | 3);
        refused(
            "kernel lcall through non-present gate 0xb3",
            &absent as *const u64 as u64,
        );
        let uninstalled = op(REFUSED_GATE);
        refused(
            "kernel lcall through entry 0xd0 whose gates were refused",
            &uninstalled as *const u64 as u64,
        );
        refused(
            "kernel lcall with its operand on an unmapped page",
            region_end(info) + (64 << 20),
        );
    }

    fn user_mode(info: &xen_abi::StartInfo) {
        let ktop = addr!(callgates_kstack) + KSTACK_BYTES;
        expect("stack_switch", traps::stack_switch(ktop), 0);
        let l4 = p2m(info)[(info.pt_base >> 12) as usize];
        expect("NEW_USER_BASEPTR", traps::new_user_baseptr(l4), 0);
        let utop = addr!(callgates_ustack) + USTACK_BYTES;
        USER_OPERAND.store(far_pointer(USER_GATE | 3), Ordering::SeqCst);
        KERNEL_RPL3_OPERAND.store(far_pointer(KERNEL_GATE | 3), Ordering::SeqCst);
        // SAFETY: the user stack and code are mapped for user mode, the kernel stack and the
        // user tables are set above, and the user code ends by coming back to the kernel.
        unsafe { guest_rt::user::run_user(utop, addr!(callgates_user_entry)) };
        println!(
            "callgates: user lcall through GDT gate {:#x}: on the stack_switch stack {}, frame rip right {}, cs {:#x}, rsp right {}, ss {:#x}",
            USER_GATE | 3,
            yes(U_RSP.load(Ordering::SeqCst) == ktop - 32),
            yes(U_RIP.load(Ordering::SeqCst) == addr!(callgates_user_after_lcall)),
            U_CS.load(Ordering::SeqCst),
            yes(U_USER_RSP.load(Ordering::SeqCst) == utop),
            U_SS.load(Ordering::SeqCst),
        );
        // One console line holds 160 bytes: the callee's side on a second line.
        println!(
            "callgates: user lcall through GDT gate {:#x}: kernel-mode hypercall answered {}, work on the kernel stack {}, back in user mode {}",
            USER_GATE | 3,
            yes(U_VERSION.load(Ordering::SeqCst) >> 16 == 4),
            U_WORK.load(Ordering::SeqCst),
            yes(BACK_IN_USER_RSP.load(Ordering::SeqCst) == utop),
        );
        let (faults, n) = take_faults();
        expect("faults in user mode (two refusals and the ud2)", n, 3);
        let sites = [
            (
                "user lcall through DPL 0 gate 0x83",
                addr!(callgates_user_refused),
            ),
            (
                "user ljmp through gate 0x93 into the kernel",
                addr!(callgates_user_ljmp),
            ),
        ];
        for ((what, at), f) in sites.iter().zip(faults) {
            println!(
                "callgates: {what}: vector {:#x} error {:#x}, from user mode {}, rip right {}",
                f.vector,
                f.error,
                yes(f.cs == 0xe033),
                yes(f.rip == *at),
            );
        }
        expect("the ud2 came from user mode", faults[2].cs, 0xe033);
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        SHARED.store(
            guest_rt::shared::map_shared_info(info) as u64,
            Ordering::SeqCst,
        );
        traps::set_handler(handler);
        expect(
            "set_trap_table",
            traps::set_trap_table(&[(6, 0), (11, 0), (12, 0), (13, 0), (14, 0)]),
            0,
        );
        let gdt_va = region_end(info) - 3 * 4096;
        let ldt_va = region_end(info) - 4 * 4096;
        let gdt = p2m(info)[(gdt_va >> 12) as usize];
        let ldt = p2m(info)[(ldt_va >> 12) as usize];
        let call_target = addr!(callgates_call_target);
        let gdt_entries = [
            (KERNEL_GATE, gate(FLAT_KERNEL_CS, 0, true, call_target)),
            (
                USER_GATE,
                gate(FLAT_KERNEL_CS, 3, true, addr!(callgates_user_target)),
            ),
            (DATA_GATE, gate(DATA_SEGMENT, 3, true, call_target)),
            (ABSENT_GATE, gate(FLAT_KERNEL_CS, 3, false, call_target)),
            (
                JUMP_GATE,
                gate(FLAT_KERNEL_CS, 0, true, addr!(callgates_jmp_target)),
            ),
        ];
        let page = gdt_va as *mut u64;
        for (selector, [low, high]) in gdt_entries {
            let index = usize::from(selector >> 3);
            // SAFETY: the page is ours, in the bootstrap region's padding, mapped
            // read-write until it becomes the GDT below; index + 1 < 512.
            unsafe {
                page.add(index).write_volatile(low);
                page.add(index + 1).write_volatile(high);
            }
        }
        // SAFETY: as above.
        unsafe {
            page.add(usize::from(DATA_SEGMENT >> 3))
                .write_volatile(DATA_DPL3)
        };
        let [low, high] = gate(FLAT_KERNEL_CS, 0, true, call_target);
        // SAFETY: the LDT page is ours too, in the same padding.
        unsafe {
            (ldt_va as *mut u64).add(2).write_volatile(low);
            (ldt_va as *mut u64).add(3).write_volatile(high);
        }
        expect(
            "GDT read-only",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RO),
            0,
        );
        expect(
            "LDT read-only",
            update_va_mapping(ldt_va, ldt << 12 | PAGE_RO),
            0,
        );
        let frames = [gdt];
        expect(
            "set_gdt",
            hyper(Hypercall::SetGdt, [frames.as_ptr() as u64, 512, 0, 0, 0]),
            0,
        );
        expect(
            "SET_LDT",
            mmuext_op(&[MmuextOp {
                cmd: 13,
                arg1: ldt_va,
                arg2: 512,
                ..Default::default()
            }]),
            0,
        );
        let entry = gdt << 12 | u64::from(REFUSED_GATE);
        let [to_hypervisor, _] = gate(HYPERVISOR_CS, 3, true, call_target);
        println!(
            "callgates: update_descriptor of a gate to {HYPERVISOR_CS:#x}: {}, of an interrupt gate: {}",
            errno_name(hyper(
                Hypercall::UpdateDescriptor,
                [entry, to_hypervisor, 0, 0, 0]
            )),
            errno_name(hyper(
                Hypercall::UpdateDescriptor,
                [entry, INTERRUPT_GATE, 0, 0, 0]
            )),
        );
        kernel_calls();
        kernel_refusals(info);
        user_mode(info);
        println!("callgates: all cases done, powering off");
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
