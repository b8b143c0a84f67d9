//! guest-segments (issue 16): the guest's own descriptor tables reach the CPU. By command
//! line:
//!
//! * `own`: loads data selectors from its GDT (`set_gdt`) into DS, ES and FS and from its
//!   LDT (`mmuext_op(SET_LDT)`) into FS and ES; FS's base comes from the descriptor, so
//!   `%fs:0` reads the word it names; the CPU's accessed bit shows in the guest's own frame;
//!   each selector loads again after a yield (pv-server ran on its own GDT in between);
//!   prints `segments: own: …` with what it read;
//! * `hostile`: selectors the guest may not load fault in the guest as `#GP(sel)`: the
//!   hypervisor's reserved entries (its ring-0 code and data, Xen's null 0xe018, the TSS, the
//!   LDT descriptor), a descriptor in a frame never given to `set_gdt`, a GDT entry before
//!   any `set_gdt`, an LDT selector before `SET_LDT` and one past its limit;
//! * `failsafe`: with DS and ES loaded from its GDT and FS from another entry, makes DS's and
//!   ES's descriptor not present (`update_descriptor`); on the way back the nucleus cannot
//!   reload them, loads null, and the guest enters its failsafe callback with Xen's frame
//!   (rcx, r11, ds, es, fs, gs, rip, cs, rflags, rsp, ss), which it prints and checks
//!   (pv64-abi.md §6.8).
//!
//! Each ends with `segments: CASE: N checks passed` (or the first WRONG line).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::shared::Checks;
    use guest_rt::tables::{PAGE_RO, PAGE_RW, mmuext_op, p2m, region_end, update_va_mapping};
    use guest_rt::traps::{self, TrapFrame};
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_guest_notes};
    use xen_abi::mm::MmuextOp;
    use xen_abi::sched::ShutdownReason;
    use xen_abi::{Hypercall, StartInfo};

    xen_guest_notes!("fredvisor-segments");

    /// The failsafe callback's frame, as the entry found it, and how often it ran.
    static mut FAILSAFE_FRAME: [u64; 11] = [0; 11];
    static FAILSAFES: AtomicU64 = AtomicU64::new(0);

    // The failsafe callback: keeps the 11-word frame, drops the selectors (as Linux's
    // `xen_failsafe_callback` does) and returns through `iret` (flags 0) to what was
    // interrupted, rax untouched.
    core::arch::global_asm!(
        ".globl segments_failsafe_entry",
        "segments_failsafe_entry:",
        "    push rsi",
        "    push rdi",
        "    push rcx",
        "    lea rsi, [rsp + 24]",
        "    lea rdi, [rip + {frame}]",
        "    mov ecx, 11",
        "    rep movsq",
        "    lock inc qword ptr [rip + {count}]",
        "    pop rcx",
        "    pop rdi",
        "    pop rsi",
        "    pop rcx",
        "    pop r11",
        "    add rsp, 32",
        "    push 0",
        "    jmp hypercall_page + {iret}",
        frame = sym FAILSAFE_FRAME,
        count = sym FAILSAFES,
        iret = const Hypercall::Iret.stub_offset(),
    );

    unsafe extern "C" {
        fn segments_failsafe_entry();
        static hypercall_page: [u8; 4096];
    }

    /// Where the handler resumes after a probe, and what the last trap was.
    static RESUME: AtomicU64 = AtomicU64::new(0);
    static VECTOR: AtomicU64 = AtomicU64::new(0);
    static ERROR: AtomicU64 = AtomicU64::new(0);
    static TRAPS: AtomicU64 = AtomicU64::new(0);

    /// What `%fs:0` reads through the GDT's and the LDT's descriptor.
    static GDT_WORD: u64 = 0x6d7d_0000_0000_1234;
    static LDT_WORD: u64 = 0x1d7d_0000_0000_5678;

    /// Flat data, DPL 3, not accessed; a DPL 0 readable code segment (stored as DPL 3).
    const DATA: u64 = 0x00cf_f200_0000_ffff;
    const CODE_DPL0: u64 = 0x00af_9a00_0000_ffff;

    /// A DPL-3 data descriptor with `base` (32 bits: a data segment's base in 64-bit mode
    /// is what FS gets on a selector load).
    const fn data_at(base: u64) -> u64 {
        DATA | (base & 0xff_ffff) << 16 | ((base >> 24) & 0xff) << 56
    }

    fn handler(frame: &mut TrapFrame) {
        VECTOR.store(frame.vector, Ordering::SeqCst);
        ERROR.store(frame.error_code, Ordering::SeqCst);
        TRAPS.fetch_add(1, Ordering::SeqCst);
        frame.rip = RESUME.load(Ordering::SeqCst);
    }

    /// Loads `selector` into the segment register `$reg`; the error code of the `#GP` it
    /// raised, or `None` if it loaded.
    macro_rules! load {
        ($reg:literal, $selector:expr) => {{
            let before = TRAPS.load(Ordering::SeqCst);
            // SAFETY: a data-segment load; if it faults, `handler` resumes after it. Only
            // the register named changes, and no Rust code relies on DS/ES/FS selectors.
            unsafe {
                asm!(
                    "lea rax, [rip + 2f]",
                    "mov [rip + {resume}], rax",
                    concat!("mov ", $reg, ", {sel:e}"),
                    "2:",
                    resume = sym RESUME,
                    sel = in(reg) u32::from($selector),
                    out("rax") _,
                    out("rcx") _,
                    out("r11") _,
                )
            };
            if TRAPS.load(Ordering::SeqCst) == before {
                None
            } else if VECTOR.load(Ordering::SeqCst) == 13 {
                Some(ERROR.load(Ordering::SeqCst))
            } else {
                Some(u64::MAX)
            }
        }};
    }

    fn ds() -> u64 {
        let sel: u64;
        // SAFETY: reads a selector; no memory access.
        unsafe { asm!("mov {:r}, ds", out(reg) sel, options(nomem, nostack)) };
        sel & 0xffff
    }

    fn es() -> u64 {
        let sel: u64;
        // SAFETY: reads a selector; no memory access.
        unsafe { asm!("mov {:r}, es", out(reg) sel, options(nomem, nostack)) };
        sel & 0xffff
    }

    fn fs_word() -> u64 {
        let value: u64;
        // SAFETY: FS's base is a descriptor's, which names one of the words above.
        unsafe { asm!("mov {}, qword ptr fs:[0]", out(reg) value, options(nostack, readonly)) };
        value
    }

    /// The access rights `lar` reports for `selector` (`None`: not visible at CPL 3), bits
    /// 19:16 (undefined: Bochs leaves the limit there, QEMU zeros) masked.
    fn lar(selector: u16) -> Option<u64> {
        let rights: u64;
        let ok: u8;
        // SAFETY: LAR reads a descriptor's rights; it faults on nothing.
        unsafe {
            asm!(
                "lar {r}, {s:r}",
                "setz {ok}",
                r = out(reg) rights,
                s = in(reg) u64::from(selector),
                ok = out(reg_byte) ok,
                options(nomem, nostack),
            )
        };
        (ok == 1).then_some(rights & 0x00f0_ff00)
    }

    fn yield_cpu() {
        // SAFETY: no pointers.
        unsafe { hypercall(Hypercall::SchedOp, [0, 0, 0, 0, 0]) };
    }

    fn set_gdt(frames: &[u64], entries: u64) -> u64 {
        // SAFETY: the hypervisor only reads the frame list.
        unsafe {
            hypercall(
                Hypercall::SetGdt,
                [frames.as_ptr() as u64, entries, 0, 0, 0],
            )
        }
    }

    fn set_ldt(va: u64, entries: u64) -> u64 {
        mmuext_op(&[MmuextOp {
            cmd: 13,
            arg1: va,
            arg2: entries,
            ..Default::default()
        }])
    }

    /// Three pages of the bootstrap region's slack: the GDT, a frame never given to
    /// `set_gdt`, the LDT.
    struct Pages {
        gdt_va: u64,
        gdt: u64,
        other_va: u64,
        ldt_va: u64,
        ldt: u64,
    }

    fn pages(info: &StartInfo) -> Pages {
        let end = region_end(info);
        let p2m = p2m(info);
        let mfn = |va: u64| p2m[(va >> 12) as usize];
        Pages {
            gdt_va: end - 2 * 4096,
            gdt: mfn(end - 2 * 4096),
            other_va: end - 3 * 4096,
            ldt_va: end - 4 * 4096,
            ldt: mfn(end - 4 * 4096),
        }
    }

    fn write(va: u64, index: usize, descriptor: u64) {
        // SAFETY: one of `pages`' pages, mapped read-write until it becomes a table.
        unsafe { (va as *mut u64).add(index).write_volatile(descriptor) };
    }

    fn read(va: u64, index: usize) -> u64 {
        // SAFETY: as in `write`; readable either way.
        unsafe { (va as *const u64).add(index).read_volatile() }
    }

    fn install(c: &mut Checks, p: &Pages) {
        write(p.gdt_va, 1, DATA);
        write(p.gdt_va, 2, data_at(core::ptr::addr_of!(GDT_WORD) as u64));
        write(p.gdt_va, 3, CODE_DPL0);
        write(p.ldt_va, 0, data_at(core::ptr::addr_of!(LDT_WORD) as u64));
        write(p.ldt_va, 1, DATA);
        c.eq(
            "GDT page read-only",
            update_va_mapping(p.gdt_va, p.gdt << 12 | PAGE_RO),
            0,
        );
        c.eq("set_gdt", set_gdt(&[p.gdt], 512), 0);
    }

    fn own(c: &mut Checks, p: &Pages) {
        install(c, p);
        c.eq(
            "lar of the DPL 0 code segment: stored as DPL 3",
            lar(0x1b).unwrap_or(0),
            0x00a0_fa00,
        );
        c.eq(
            "load DS from the GDT",
            load!("ds", 0x0bu16).is_some() as u64,
            0,
        );
        c.eq(
            "load ES with a code segment",
            load!("es", 0x1bu16).is_some() as u64,
            0,
        );
        c.eq("DS", ds(), 0x0b);
        c.eq("ES", es(), 0x1b);
        c.eq(
            "the CPU's accessed bit, in our own frame",
            read(p.gdt_va, 1),
            DATA | 1 << 40,
        );
        c.eq(
            "load FS from the GDT",
            load!("fs", 0x13u16).is_some() as u64,
            0,
        );
        let via_gdt = fs_word();
        c.eq("fs:[0] through the GDT's base", via_gdt, GDT_WORD);
        yield_cpu();
        c.eq("DS after a yield", ds(), 0x0b);
        c.eq("fs:[0] after a yield", fs_word(), GDT_WORD);
        c.eq(
            "DS loads again after a yield",
            load!("ds", 0x0bu16).is_some() as u64,
            0,
        );
        c.eq(
            "FS loads again after a yield",
            load!("fs", 0x13u16).is_some() as u64,
            0,
        );
        c.eq("fs:[0] again", fs_word(), GDT_WORD);

        c.eq(
            "LDT page read-only",
            update_va_mapping(p.ldt_va, p.ldt << 12 | PAGE_RO),
            0,
        );
        c.eq("SET_LDT", set_ldt(p.ldt_va, 2), 0);
        c.eq(
            "load FS from the LDT",
            load!("fs", 0x07u16).is_some() as u64,
            0,
        );
        let via_ldt = fs_word();
        c.eq("fs:[0] through the LDT's base", via_ldt, LDT_WORD);
        c.eq(
            "load ES from the LDT",
            load!("es", 0x0fu16).is_some() as u64,
            0,
        );
        c.eq("ES", es(), 0x0f);
        yield_cpu();
        c.eq(
            "FS loads from the LDT after a yield",
            load!("fs", 0x07u16).is_some() as u64,
            0,
        );
        c.eq("fs:[0] after the yield", fs_word(), LDT_WORD);
        c.eq(
            "ES loads from the LDT after a yield",
            load!("es", 0x0fu16).is_some() as u64,
            0,
        );
        c.eq(
            "the GDT is still there",
            load!("ds", 0x0bu16).is_some() as u64,
            0,
        );
        println!(
            "segments: own: ds {:#x} es {:#x}, fs:[0] {via_gdt:#x} through the GDT and {via_ldt:#x} through the LDT",
            ds(),
            es()
        );
        // Back to the flat selectors before the end.
        let _ = load!("ds", 0u16);
        let _ = load!("es", 0u16);
        let _ = load!("fs", 0u16);
    }

    fn hostile(c: &mut Checks, p: &Pages) {
        c.eq(
            "GDT entry before set_gdt",
            load!("ds", 0x0bu16).unwrap_or(0),
            0x08,
        );
        c.eq(
            "LDT selector before SET_LDT",
            load!("ds", 0x07u16).unwrap_or(0),
            0x04,
        );
        install(c, p);
        // A valid descriptor in a frame the guest never handed over (GDT page 1).
        write(p.other_va, 0, DATA);
        for (what, selector, error) in [
            ("the hypervisor's code", 0xe00bu16, 0xe008u64),
            ("the hypervisor's data", 0xe013, 0xe010),
            ("Xen's reserved null", 0xe01b, 0xe018),
            ("the TSS", 0xe043, 0xe040),
            ("the LDT descriptor", 0xe053, 0xe050),
            ("an entry of a frame not given to set_gdt", 0x1003, 0x1000),
            ("the last entry below 0xe000", 0xdffb, 0xdff8),
        ] {
            c.eq(what, load!("ds", selector).unwrap_or(0), error);
            c.eq(what, load!("fs", selector).unwrap_or(0), error);
        }
        c.eq(
            "Xen's flat data still loads",
            load!("ds", 0xe02bu16).is_some() as u64,
            0,
        );
        c.eq(
            "LDT page read-only",
            update_va_mapping(p.ldt_va, p.ldt << 12 | PAGE_RO),
            0,
        );
        c.eq("SET_LDT", set_ldt(p.ldt_va, 2), 0);
        c.eq(
            "the LDT's own entry loads",
            load!("es", 0x0fu16).is_some() as u64,
            0,
        );
        c.eq(
            "an LDT selector past its limit",
            load!("es", 0x17u16).unwrap_or(0),
            0x14,
        );
        c.eq(
            "the LDT descriptor, with an LDT",
            load!("es", 0xe053u16).unwrap_or(0),
            0xe050,
        );
        // ES still holds the LDT's selector: dropping the LDT under it would be the failsafe
        // case (`failsafe`), which this guest has no callback for.
        let _ = load!("es", 0u16);
        c.eq("SET_LDT of none", set_ldt(0, 0), 0);
        c.eq("no LDT again", load!("es", 0x0fu16).unwrap_or(0), 0x0c);
        c.eq("set_gdt of none", set_gdt(&[], 0), 0);
        c.eq("no GDT again", load!("es", 0x0bu16).unwrap_or(0), 0x08);
        c.eq(
            "still ours to write",
            update_va_mapping(p.gdt_va, p.gdt << 12 | PAGE_RW),
            0,
        );
        let _ = load!("ds", 0u16);
        let _ = load!("es", 0u16);
        let _ = load!("fs", 0u16);
    }

    fn update_descriptor(maddr: u64, desc: u64) -> u64 {
        // SAFETY: no pointers into our memory.
        unsafe { hypercall(Hypercall::UpdateDescriptor, [maddr, desc, 0, 0, 0]) }
    }

    fn failsafe(c: &mut Checks, p: &Pages) {
        // CALLBACKTYPE_failsafe, CALLBACKF_mask_events.
        let entry = segments_failsafe_entry as usize as u64;
        c.eq(
            "register the failsafe callback",
            traps::register_callback(1, 1, entry),
            0,
        );
        install(c, p);
        c.eq("DS from the GDT", load!("ds", 0x0bu16).is_some() as u64, 0);
        c.eq("ES from the GDT", load!("es", 0x0bu16).is_some() as u64, 0);
        c.eq("FS from the GDT", load!("fs", 0x13u16).is_some() as u64, 0);
        let rax = update_descriptor(p.gdt << 12 | 8, 0);
        c.eq(
            "update_descriptor's answer, kept through the callback",
            rax,
            0,
        );
        c.eq(
            "the failsafe callback ran once",
            FAILSAFES.load(Ordering::SeqCst),
            1,
        );
        // SAFETY: written once by the callback, which ran before the hypercall returned.
        let f = unsafe { core::ptr::addr_of!(FAILSAFE_FRAME).read_volatile() };
        let page = core::ptr::addr_of!(hypercall_page) as u64;
        // The stub: push rcx, push r11, mov eax, syscall (10 bytes), then the return.
        let stub_return = page + Hypercall::UpdateDescriptor.stub_offset() + 10;
        c.eq("frame rcx: the return RIP", f[0], stub_return);
        // r11 is the RFLAGS `syscall` saved (the CPU's IF on); the frame's IF is the mask's.
        c.eq("frame r11: the RFLAGS", f[1] & !0x200, f[8] & !0x200);
        c.eq("frame ds", f[2], 0x0b);
        c.eq("frame es", f[3], 0x0b);
        c.eq("frame fs", f[4], 0x13);
        c.eq("frame gs", f[5], 0);
        c.eq(
            "frame rip: after the hypercall's syscall",
            f[6],
            stub_return,
        );
        c.eq(
            "frame cs: the kernel interrupted itself",
            f[7] & 0xffff,
            0xe030,
        );
        c.eq(
            "frame rflags: IF is the saved mask's opposite",
            (f[8] >> 9) & 1,
            (f[7] >> 32) & 1 ^ 1,
        );
        c.eq("frame ss", f[10], 0xe02b);
        c.eq("DS is null now", ds(), 0);
        c.eq("ES is null now", es(), 0);
        c.eq("FS kept its selector", fs_selector(), 0x13);
        c.eq("and its base", fs_word(), GDT_WORD);
        println!(
            "segments: failsafe: frame ds {:#x} es {:#x} fs {:#x} gs {:#x}, rip hypercall_page+{:#x}, cs {:#x} mask {}, ss {:#x}; ds {:#x} es {:#x} now",
            f[2],
            f[3],
            f[4],
            f[5],
            f[6] - page,
            f[7] & 0xffff,
            (f[7] >> 32) & 0xff,
            f[10],
            ds(),
            es()
        );
        let _ = load!("fs", 0u16);
    }

    fn fs_selector() -> u64 {
        let sel: u64;
        // SAFETY: reads a selector; no memory access.
        unsafe { asm!("mov {:r}, fs", out(reg) sel, options(nomem, nostack)) };
        sel & 0xffff
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let case = match info.cmdline() {
            b"own" => "own",
            b"hostile" => "hostile",
            b"failsafe" => "failsafe",
            _ => {
                println!("segments: unknown case; use cmdline=own|hostile|failsafe");
                shutdown(ShutdownReason::Crash)
            }
        };
        traps::set_handler(handler);
        let mut c = Checks::new("segments");
        c.eq("set_trap_table", traps::set_trap_table(&[(13, 0)]), 0);
        let p = pages(info);
        match case {
            "own" => own(&mut c, &p),
            "failsafe" => failsafe(&mut c, &p),
            _ => hostile(&mut c, &p),
        }
        c.name = match case {
            "own" => "segments: own",
            "failsafe" => "segments: failsafe",
            _ => "segments: hostile",
        };
        c.done()
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
