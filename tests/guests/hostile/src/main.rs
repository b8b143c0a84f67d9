//! guest-hostile (issue 15 point 6): misbehaves on purpose, one case per command line:
//!
//! * `foreign-frame`: maps a frame it does not own (the local APIC, then the nucleus image
//!   at 1 MiB) → `-EPERM`, `-EINVAL`;
//! * `writable-table`: maps one of its own page tables writable → `-EBUSY`, writes the
//!   hypervisor's L4 slots (256, 257, 271) → `-EINVAL`, its own slot 511 → 0;
//! * `write-table`: writes to its read-only mapping of its L4 → `#PF`, crashed (no trap
//!   table);
//! * `bad-pointers`: kernel, non-canonical and unmapped pointers to every hypercall that
//!   takes one → `-EFAULT` each, bad values to the others → `-EINVAL`/`-ENOENT`;
//! * `segment-bases`: `set_segment_base` for FS, kernel GS, user GS and the user GS
//!   selector, each read back through `%fs:`/`%gs:` loads and the GS selector across
//!   hypercalls and yields (the nucleus loads them when the vCPU runs), then non-canonical
//!   bases and unknown `which` → `-EINVAL` with the bases unchanged; prints
//!   `hostile: segment-bases: fs:[0] 0x… gs:[0] 0x…`;
//! * `descriptors` (issue 16): a GDT/LDT frame mapped writable, one holding a TSS or an
//!   interrupt gate, too many entries, foreign, shared and page-table frames → `-EINVAL`;
//!   an accepted GDT's frame cannot be mapped writable (`-EBUSY`), its DPL 0 code segment
//!   reads back as DPL 3 and its call gate as DPL 0 with the DPL in the target's RPL;
//! * `new-pointers` (issue 16): kernel, non-canonical and unmapped pointers to every
//!   hypercall of issue 16 points 5-7 that takes one → `-EFAULT` (a grant frame list:
//!   status `GNTST_bad_virt_addr`);
//! * `spin`: loops without a hypercall → the watchdog ends it;
//! * `fault`: `ud2` with no trap table → crashed.
//!
//! The cases that get an answer print `hostile: CASE: N checks passed` (or the first wrong
//! answer) and power off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::tables::{
        PAGE_RO, PAGE_RW, l1_entry_of, mmu_update, mmuext_op, p2m, region_end, update_va_mapping,
    };
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_guest_notes};
    use xen_abi::layout::DOMID_SELF;
    use xen_abi::mm::{MmuUpdate, MmuextOp};
    use xen_abi::sched::ShutdownReason;
    use xen_abi::{Errno, Hypercall};

    xen_guest_notes!("fredvisor-hostile");

    struct Checks {
        case: &'static str,
        passed: u32,
    }

    impl Checks {
        fn expect(&mut self, what: &str, got: u64, want: Errno) {
            if got != want.rax() {
                println!(
                    "hostile: {}: WRONG {what}: got {:#x}, want -{}",
                    self.case,
                    got,
                    want.name()
                );
                shutdown(ShutdownReason::Crash);
            }
            self.passed += 1;
        }

        /// Each of `calls` (what, hypercall, arguments) must fail with -EFAULT.
        fn expect_efaults(&mut self, calls: &[(&str, Hypercall, [u64; 5])]) {
            for &(what, number, args) in calls {
                self.expect(what, call(number, args), Errno::Efault);
            }
        }

        fn expect_ok(&mut self, what: &str, got: u64) {
            self.expect_value(what, got, 0);
        }

        fn expect_value(&mut self, what: &str, got: u64, want: u64) {
            if got != want {
                println!(
                    "hostile: {}: WRONG {what}: got {:#x}, want {:#x}",
                    self.case, got, want
                );
                shutdown(ShutdownReason::Crash);
            }
            self.passed += 1;
        }

        fn value(&mut self, what: &str, got: u64, want: u64) {
            if got != want {
                println!(
                    "hostile: {}: WRONG {what}: got {got:#x}, want {want:#x}",
                    self.case
                );
                shutdown(ShutdownReason::Crash);
            }
            self.passed += 1;
        }

        fn done(self) -> ! {
            println!("hostile: {}: {} checks passed", self.case, self.passed);
            shutdown(ShutdownReason::Poweroff)
        }
    }

    fn call(number: Hypercall, args: [u64; 5]) -> u64 {
        // SAFETY: the pointers passed are bad on purpose: the hypervisor must refuse them
        // without touching our memory (or its own).
        unsafe { hypercall(number, args) }
    }

    /// What `%fs:0` and `%gs:0` must read once the bases point at them.
    static FS_WORD: u64 = 0xf5f5_0000_1234_5678;
    static GS_WORD: u64 = 0x6565_0000_8765_4321;

    fn fs_word() -> u64 {
        let value: u64;
        // SAFETY: reads 8 bytes at FS base + 0, which the test pointed at `FS_WORD`.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) value, options(nostack, readonly))
        };
        value
    }

    fn gs_word() -> u64 {
        let value: u64;
        // SAFETY: reads 8 bytes at GS base + 0, which the test pointed at `GS_WORD`.
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) value, options(nostack, readonly))
        };
        value
    }

    fn gs_selector() -> u64 {
        let sel: u64;
        // SAFETY: reads the GS selector; no memory access.
        unsafe { core::arch::asm!("mov {:r}, gs", out(reg) sel, options(nomem, nostack)) };
        sel & 0xffff
    }

    fn set_base(which: u64, base: u64) -> u64 {
        call(Hypercall::SetSegmentBase, [which, base, 0, 0, 0])
    }

    const KERNEL: u64 = 0xffff_8000_0010_0000;
    const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let case = match info.cmdline() {
            b"foreign-frame" => "foreign-frame",
            b"writable-table" => "writable-table",
            b"write-table" => "write-table",
            b"bad-pointers" => "bad-pointers",
            b"segment-bases" => "segment-bases",
            b"descriptors" => "descriptors",
            b"new-pointers" => "new-pointers",
            b"spin" => "spin",
            b"fault" => "fault",
            _ => {
                println!(
                    "hostile: unknown case; use cmdline=foreign-frame|writable-table|write-table|bad-pointers|segment-bases|descriptors|new-pointers|spin|fault"
                );
                shutdown(ShutdownReason::Crash)
            }
        };
        println!("hostile: {case}");
        let mut c = Checks { case, passed: 0 };
        let va = region_end(info) - 4096;
        let unmapped = region_end(info) + (64 << 20);
        match case {
            "foreign-frame" => {
                // The local APIC: not RAM at all.
                c.expect(
                    "map MMIO",
                    update_va_mapping(va, 0xfee0_0000 | PAGE_RW),
                    Errno::Eperm,
                );
                // RAM at 1 MiB: where GRUB loaded the nucleus image, never a guest's.
                let theirs = 0x100;
                c.expect(
                    "map RAM not ours",
                    update_va_mapping(va, theirs << 12 | PAGE_RW),
                    Errno::Einval,
                );
                c.expect(
                    "map RAM not ours read-only",
                    update_va_mapping(va, theirs << 12 | 0x25),
                    Errno::Einval,
                );
                c.done()
            }
            "writable-table" => {
                let Some((l1, _)) = l1_entry_of(info, va) else {
                    shutdown(ShutdownReason::Crash)
                };
                let l4 = p2m(info)[(info.pt_base >> 12) as usize];
                c.expect(
                    "map own L1 writable",
                    update_va_mapping(va, l1 << 12 | PAGE_RW),
                    Errno::Ebusy,
                );
                c.expect(
                    "map own L4 writable",
                    update_va_mapping(va, l4 << 12 | PAGE_RW),
                    Errno::Ebusy,
                );
                // The hypervisor's L4 slots, Xen's window 256-271 (the M2P, the nucleus'
                // image, its last slot), are not ours; slot 511, where the nucleus lived
                // before it moved into the window (and where Linux links), is.
                let spare = p2m(info)[info.nr_pages as usize - 1];
                let l4_entry = |slot: u64, val: u64| {
                    mmu_update(&[MmuUpdate {
                        ptr: (l4 << 12) + slot * 8,
                        val,
                    }])
                    .0
                };
                for (what, slot) in [
                    ("write L4 slot 256", 256u64),
                    ("write L4 slot 257", 257),
                    ("write L4 slot 271", 271),
                ] {
                    c.expect(what, l4_entry(slot, spare << 12 | 0x27), Errno::Einval);
                }
                // The spare frame may be the last page of the region (a 4 MiB guest): not
                // writable anywhere, so it can become an L3.
                c.expect_ok("unmap the last page", update_va_mapping(va, 0));
                c.expect_ok("write L4 slot 511", l4_entry(511, spare << 12 | 0x27));
                c.expect_ok("clear L4 slot 511", l4_entry(511, 0));
                c.expect(
                    "map PCD",
                    update_va_mapping(
                        va,
                        p2m(info)[info.nr_pages as usize - 1] << 12 | PAGE_RW | 0x10,
                    ),
                    Errno::Einval,
                );
                c.done()
            }
            "write-table" => {
                println!("hostile: writing to the L4 at {:#x}", info.pt_base);
                // SAFETY: none: the page is mapped read-only and the write must fault.
                unsafe { (info.pt_base as *mut u64).write_volatile(0) };
                println!("hostile: WRONG the write to a page table went through");
                shutdown(ShutdownReason::Crash)
            }
            "bad-pointers" => {
                for (label, ptr) in [
                    ("kernel", KERNEL),
                    ("non-canonical", NON_CANONICAL),
                    ("unmapped", unmapped),
                ] {
                    let _ = label;
                    let dom_self = u64::from(DOMID_SELF);
                    use Hypercall::*;
                    c.expect_efaults(&[
                        ("console_io", ConsoleIo, [0, 16, ptr, 0, 0]),
                        ("sched_op shutdown", SchedOp, [2, ptr, 0, 0, 0]),
                        ("xen_version extraversion", XenVersion, [1, ptr, 0, 0, 0]),
                        ("xen_version capabilities", XenVersion, [3, ptr, 0, 0, 0]),
                        ("xen_version get_features", XenVersion, [6, ptr, 0, 0, 0]),
                        ("mmu_update", MmuUpdate, [ptr, 1, 0, dom_self, 0]),
                        ("mmuext_op", MmuextOp, [ptr, 1, 0, dom_self, 0]),
                        ("memory_op machphys_mapping", MemoryOp, [12, ptr, 0, 0, 0]),
                    ]);
                    c.expect(
                        "update_va_mapping at it",
                        call(Hypercall::UpdateVaMapping, [ptr, 0, 2, 0, 0]),
                        Errno::Einval,
                    );
                }
                c.expect(
                    "vm_assist bad type",
                    call(Hypercall::VmAssist, [0, 63, 0, 0, 0]),
                    Errno::Einval,
                );
                c.expect(
                    "vcpu_op is_up vcpu 7",
                    call(Hypercall::VcpuOp, [9, 7, 0, 0, 0]),
                    Errno::Enoent,
                );
                c.expect(
                    "set_segment_base bad which",
                    call(Hypercall::SetSegmentBase, [9, 0, 0, 0, 0]),
                    Errno::Einval,
                );
                c.expect(
                    "set_segment_base non-canonical",
                    call(Hypercall::SetSegmentBase, [0, NON_CANONICAL, 0, 0, 0]),
                    Errno::Einval,
                );
                c.expect(
                    "unknown hypercall",
                    call(Hypercall::PhysdevOp, [0, 0, 0, 0, 0]),
                    Errno::Enosys,
                );
                c.done()
            }
            "segment-bases" => {
                let fs = &FS_WORD as *const u64 as u64;
                let gs = &GS_WORD as *const u64 as u64;
                c.value("set FS", set_base(0, fs), 0);
                c.value("set kernel GS", set_base(2, gs), 0);
                c.value("fs:[0]", fs_word(), FS_WORD);
                c.value("gs:[0]", gs_word(), GS_WORD);
                // The user GS base is not the live one in kernel mode.
                c.value("set user GS", set_base(1, fs), 0);
                c.value("gs:[0] after user GS", gs_word(), GS_WORD);
                // The flat data selector as user GS selector: loaded, kernel base still live.
                c.value("set user GS selector", set_base(3, 0xe028), 0);
                c.value("gs selector", gs_selector(), 0xe02b);
                c.value("gs:[0] after selector", gs_word(), GS_WORD);
                // Other threads run in between: each comes back with our bases.
                for _ in 0..3 {
                    c.value("yield", call(Hypercall::SchedOp, [0, 0, 0, 0, 0]), 0);
                }
                c.value("fs:[0] after yields", fs_word(), FS_WORD);
                c.value("gs:[0] after yields", gs_word(), GS_WORD);
                c.value("gs selector after yields", gs_selector(), 0xe02b);
                // Hostile values: refused, nothing changed.
                for which in [0, 1, 2] {
                    c.expect(
                        "non-canonical base",
                        set_base(which, NON_CANONICAL),
                        Errno::Einval,
                    );
                    c.expect(
                        "hole",
                        set_base(which, 0xffff_7fff_ffff_f000),
                        Errno::Einval,
                    );
                }
                c.expect("which 4", set_base(4, fs), Errno::Einval);
                c.expect("which 0xffffffff", set_base(0xffff_ffff, fs), Errno::Einval);
                c.value("fs:[0] after refusals", fs_word(), FS_WORD);
                c.value("gs:[0] after refusals", gs_word(), GS_WORD);
                // A selector that is not the guest's loads null rather than failing.
                c.value("bad user GS selector", set_base(3, 0x10), 0);
                c.value("gs selector null", gs_selector(), 0);
                c.value("gs:[0] with a null selector", gs_word(), GS_WORD);
                println!(
                    "hostile: segment-bases: fs:[0] {:#x} gs:[0] {:#x}",
                    fs_word(),
                    gs_word()
                );
                c.done()
            }
            "descriptors" => descriptors(info, &mut c),
            "new-pointers" => {
                for ptr in [KERNEL, NON_CANONICAL, unmapped] {
                    new_pointers(&mut c, ptr);
                }
                c.done()
            }
            "spin" => loop {
                core::hint::spin_loop();
            },
            _ => {
                // SAFETY: none: the instruction must fault and, with no trap table, end us.
                unsafe { core::arch::asm!("ud2") };
                shutdown(ShutdownReason::Crash)
            }
        }
    }

    /// Flat 64-bit code DPL 0 and as stored (DPL 3); flat data DPL 3; a present TSS; an
    /// interrupt gate; a call gate (DPL 3, to guest selector 0x08) and as stored.
    const CODE_DPL0: u64 = 0x00af_9a00_0000_ffff;
    const CODE_DPL3: u64 = 0x00af_fa00_0000_ffff;
    const DATA_DPL0: u64 = 0x00cf_9200_0000_ffff;
    const DATA_DPL3: u64 = 0x00cf_f200_0000_ffff;
    const TSS: u64 = 0x0000_8900_0000_0067;
    const INTERRUPT_GATE: u64 = 0x0000_ee00_0008_0000;
    const CALL_GATE: u64 = 0x0000_ec00_0008_1234;
    const CALL_GATE_STORED: u64 = 0x0000_8c00_000b_1234;

    fn set_gdt(frames: &[u64], entries: u64) -> u64 {
        call(
            Hypercall::SetGdt,
            [frames.as_ptr() as u64, entries, 0, 0, 0],
        )
    }

    fn update_descriptor(maddr: u64, desc: u64) -> u64 {
        call(Hypercall::UpdateDescriptor, [maddr, desc, 0, 0, 0])
    }

    fn set_ldt(va: u64, entries: u64) -> u64 {
        mmuext_op(&[MmuextOp {
            cmd: 13,
            arg1: va,
            arg2: entries,
            ..Default::default()
        }])
    }

    fn descriptors(info: &xen_abi::StartInfo, c: &mut Checks) -> ! {
        let gdt_va = region_end(info) - 3 * 4096;
        let bad_va = region_end(info) - 4 * 4096;
        let p2m = p2m(info);
        let gdt = p2m[(gdt_va >> 12) as usize];
        let bad = p2m[(bad_va >> 12) as usize];
        let l4 = p2m[(info.pt_base >> 12) as usize];
        let page = gdt_va as *mut u64;
        // SAFETY: both pages are ours, in the bootstrap region's padding, mapped read-write.
        unsafe {
            page.add(1).write_volatile(CODE_DPL0);
            page.add(2).write_volatile(DATA_DPL3);
            page.add(4).write_volatile(CALL_GATE);
            (bad_va as *mut u64).add(3).write_volatile(TSS);
        }
        c.expect(
            "set_gdt of a writable frame",
            set_gdt(&[gdt], 512),
            Errno::Einval,
        );
        c.expect_ok(
            "make it read-only",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RO),
        );
        c.expect_ok("set_gdt", set_gdt(&[gdt], 512));
        // SAFETY: read-only mapped, still readable.
        let (code, gate) = unsafe { (page.add(1).read_volatile(), page.add(4).read_volatile()) };
        c.expect_value("DPL 0 code stored as DPL 3", code, CODE_DPL3);
        c.expect_value("call gate stored with DPL 0", gate, CALL_GATE_STORED);
        c.expect(
            "map the GDT frame writable",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RW),
            Errno::Ebusy,
        );
        c.expect(
            "update_descriptor: TSS",
            update_descriptor(gdt << 12 | 6 * 8, TSS),
            Errno::Einval,
        );
        c.expect(
            "update_descriptor: interrupt gate",
            update_descriptor(gdt << 12 | 6 * 8, INTERRUPT_GATE),
            Errno::Einval,
        );
        c.expect(
            "update_descriptor: misaligned",
            update_descriptor(gdt << 12 | 6 * 8 + 4, DATA_DPL3),
            Errno::Einval,
        );
        c.expect_ok(
            "update_descriptor: DPL 0 data",
            update_descriptor(gdt << 12 | 6 * 8, DATA_DPL0),
        );
        // SAFETY: as above.
        c.expect_value(
            "stored as DPL 3",
            unsafe { page.add(6).read_volatile() },
            DATA_DPL3,
        );
        c.expect(
            "update_descriptor: own L4",
            update_descriptor(l4 << 12, DATA_DPL3),
            Errno::Einval,
        );
        c.expect(
            "update_descriptor: foreign frame",
            update_descriptor(0x100 << 12, DATA_DPL3),
            Errno::Einval,
        );
        c.expect(
            "update_descriptor: shared_info",
            update_descriptor(info.shared_info, DATA_DPL3),
            Errno::Einval,
        );
        c.expect_ok(
            "make the TSS page read-only",
            update_va_mapping(bad_va, bad << 12 | PAGE_RO),
        );
        c.expect("set_gdt with a TSS", set_gdt(&[bad], 512), Errno::Einval);
        c.expect(
            "set_gdt with a TSS second",
            set_gdt(&[gdt, bad], 1024),
            Errno::Einval,
        );
        c.expect(
            "old GDT still in force",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RW),
            Errno::Ebusy,
        );
        c.expect(
            "set_gdt into Xen's entries",
            set_gdt(&[gdt], 7169),
            Errno::Einval,
        );
        c.expect(
            "set_gdt of a foreign frame",
            set_gdt(&[0x100], 8),
            Errno::Einval,
        );
        c.expect(
            "set_gdt of shared_info",
            set_gdt(&[info.shared_info >> 12], 8),
            Errno::Einval,
        );
        c.expect("set_gdt of a page table", set_gdt(&[l4], 8), Errno::Einval);
        c.expect_ok("set_gdt of none", set_gdt(&[], 0));
        c.expect_ok(
            "the frame is free again",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RW),
        );
        c.expect(
            "SET_LDT of a writable page",
            set_ldt(gdt_va, 512),
            Errno::Einval,
        );
        c.expect_ok(
            "read-only again",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RO),
        );
        c.expect_ok("SET_LDT", set_ldt(gdt_va, 512));
        c.expect("SET_LDT misaligned", set_ldt(gdt_va + 8, 1), Errno::Einval);
        c.expect("SET_LDT of a TSS page", set_ldt(bad_va, 8), Errno::Einval);
        c.expect(
            "SET_LDT in the hypervisor",
            set_ldt(KERNEL & !0xfff, 1),
            Errno::Einval,
        );
        c.expect(
            "SET_LDT non-canonical",
            set_ldt(NON_CANONICAL, 1),
            Errno::Einval,
        );
        c.expect(
            "SET_LDT unmapped",
            set_ldt(region_end(info) + (64 << 20), 1),
            Errno::Einval,
        );
        c.expect(
            "LDT frame not writable",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RW),
            Errno::Ebusy,
        );
        c.expect_ok("SET_LDT none", set_ldt(0, 0));
        c.expect_ok(
            "writable after the LDT",
            update_va_mapping(gdt_va, gdt << 12 | PAGE_RW),
        );
        println!("hostile: descriptors: every forbidden descriptor refused");
        let done = Checks {
            case: c.case,
            passed: c.passed,
        };
        done.done()
    }

    /// Every issue 16 point 5-7 hypercall that takes a pointer, pointed at `ptr`.
    fn new_pointers(c: &mut Checks, ptr: u64) {
        use Hypercall::*;
        c.expect_efaults(&[
            ("grant setup_table", GrantTableOp, [2, ptr, 1, 0, 0]),
            ("grant query_size", GrantTableOp, [6, ptr, 1, 0, 0]),
            ("grant set_version", GrantTableOp, [8, ptr, 1, 0, 0]),
            ("evtchn alloc_unbound", EventChannelOp, [6, ptr, 0, 0, 0]),
            ("evtchn bind_virq", EventChannelOp, [1, ptr, 0, 0, 0]),
            ("evtchn send", EventChannelOp, [4, ptr, 0, 0, 0]),
            ("evtchn close", EventChannelOp, [3, ptr, 0, 0, 0]),
            ("evtchn status", EventChannelOp, [5, ptr, 0, 0, 0]),
            ("evtchn unmask", EventChannelOp, [9, ptr, 0, 0, 0]),
            ("sched_op poll", SchedOp, [3, ptr, 0, 0, 0]),
            ("physdev set_iopl", PhysdevOp, [6, ptr, 0, 0, 0]),
            ("set_gdt frame list", SetGdt, [ptr, 8, 0, 0, 0]),
        ]);
        // Pointers inside a good argument block.
        let ports = xen_abi::sched::SchedPoll {
            ports: ptr,
            nr_ports: 1,
            _pad: 0,
            timeout: 0,
        };
        c.expect(
            "sched_op poll ports",
            call(Hypercall::SchedOp, [3, &ports as *const _ as u64, 0, 0, 0]),
            Errno::Efault,
        );
        let mut setup = xen_abi::grant::GnttabSetupTable {
            dom: DOMID_SELF,
            nr_frames: 1,
            frame_list: ptr,
            ..Default::default()
        };
        c.expect_ok(
            "grant setup_table answered",
            call(
                Hypercall::GrantTableOp,
                [2, &mut setup as *mut _ as u64, 1, 0, 0],
            ),
        );
        c.expect_value(
            "grant frame list: bad_virt_addr",
            setup.status as i64 as u64,
            xen_abi::grant::status::BAD_VIRT_ADDR as i64 as u64,
        );
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
