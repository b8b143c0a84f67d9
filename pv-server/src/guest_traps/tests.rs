//! The virtual IDT's policy with exact values: frames byte for byte, the software-interrupt
//! rules under both deliveries, `iret` and the set-up hypercalls.

use std::collections::BTreeMap;

use ipc::message::{Gpr, GprWrite, GuestMode, GuestResume};
use ipc::{Event, EventKind};
use xen_abi::Errno;

use super::decode::{Interrupted, Target, Trap, trap_for};
use super::*;
use crate::guest_hypercalls::{GuestMemory, Outcome};

/// Guest memory as pages by VA; `read_only` pages refuse writes.
#[derive(Default)]
struct Mem {
    pages: BTreeMap<u64, [u8; 4096]>,
    read_only: Vec<u64>,
}

impl Mem {
    fn with(pages: &[u64]) -> Self {
        let mut mem = Self::default();
        for &p in pages {
            mem.pages.insert(p, [0; 4096]);
        }
        mem
    }

    fn word(&self, va: u64) -> u64 {
        let mut b = [0u8; 8];
        self.clone_read(va, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn words(&self, va: u64, n: usize) -> Vec<u64> {
        (0..n).map(|i| self.word(va + 8 * i as u64)).collect()
    }

    fn clone_read(&self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = va + i as u64;
            let page = self.pages.get(&(a & !0xfff)).ok_or(GuestFault { va: a })?;
            *b = page[(a & 0xfff) as usize];
        }
        Ok(())
    }

    fn put(&mut self, va: u64, bytes: &[u8]) {
        self.write(va, bytes).unwrap();
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        self.clone_read(va, buf)
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault> {
        for i in 0..bytes.len() as u64 {
            let page = (va + i) & !0xfff;
            if !self.pages.contains_key(&page) || self.read_only.contains(&page) {
                return Err(GuestFault { va: va + i });
            }
        }
        for (i, &b) in bytes.iter().enumerate() {
            let a = va + i as u64;
            self.pages.get_mut(&(a & !0xfff)).unwrap()[(a & 0xfff) as usize] = b;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Info {
    mask: u8,
    cr2: u64,
}

impl VcpuInfoAccess for Info {
    fn upcall_mask(&mut self) -> Result<u8, GuestFault> {
        Ok(self.mask)
    }
    fn set_upcall_mask(&mut self, mask: u8) -> Result<(), GuestFault> {
        self.mask = mask;
        Ok(())
    }
    fn set_cr2(&mut self, cr2: u64) -> Result<(), GuestFault> {
        self.cr2 = cr2;
        Ok(())
    }
}

const CODE: u64 = 0x1000;
const STACK: u64 = 0x8000;
const KSTACK: u64 = 0xa000;
const HANDLER: u64 = 0x2000;

fn event(kind: EventKind, rip: u64) -> Event {
    Event {
        cpu: 0,
        kind,
        event_data: 0,
        rip,
        cs: 0xe033,
        rflags: 0x246,
        rsp: STACK + 0x108,
        ss: 0xe02b,
        from_ring: 3,
        insn_len: 0,
        owner: ipc::domain::guest_owner(1),
    }
}

fn with_handlers(dpl: u8) -> VcpuTraps {
    let mut traps = VcpuTraps::new();
    for v in 0..=255usize {
        traps.table[v] = TrapEntry {
            flags: dpl,
            address: HANDLER + 0x10 * v as u64,
        };
    }
    traps.table[0x21].flags = 0; // `int $0x21` is refused from any mode
    traps.table_set = true;
    traps
}

fn deliver(
    traps: &mut VcpuTraps,
    event: &Event,
    mem: &mut Mem,
    info: &mut Info,
) -> Result<GuestResume, Crash> {
    let (trap, at) = trap_for(traps, event, (0x1111, 0x2222), mem).unwrap();
    bounce::bounce(traps, &trap, &at, mem, info)
}

fn entry_gprs(handler: u64, rflags: u64) -> heapless::Vec<GprWrite, 15> {
    let mut v = heapless::Vec::new();
    v.push(GprWrite {
        gpr: Gpr::Rcx,
        value: handler,
    })
    .unwrap();
    v.push(GprWrite {
        gpr: Gpr::R11,
        value: rflags,
    })
    .unwrap();
    v
}

#[test]
fn a_kernel_fault_is_bounced_on_its_own_stack_with_xens_frame() {
    let mut traps = with_handlers(0);
    traps.table[6].flags = xen_abi::traps::TRAP_FLAG_MASK_EVENTS;
    let mut mem = Mem::with(&[STACK]);
    let mut info = Info::default(); // events unmasked
    let ud = event(
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
        CODE,
    );
    let resume = deliver(&mut traps, &ud, &mut mem, &mut info).unwrap();
    // rsp 0x8108 rounds down to 0x8100; 7 words below it.
    let base = STACK + 0x100 - 56;
    assert_eq!(
        mem.words(base, 7),
        vec![0x1111, 0x2222, CODE, 0xe030, 0x246, STACK + 0x108, 0xe02b]
    );
    assert_eq!(
        resume,
        GuestResume {
            rip: HANDLER + 0x60,
            rsp: base,
            rflags: 0x246,
            cs: 0xe033,
            ss: 0xe02b,
            mode: GuestMode::Kernel,
            gprs: entry_gprs(HANDLER + 0x60, 0x246),
        }
    );
    assert_eq!(info.mask, 1, "the entry asked for events masked");
}

#[test]
fn a_user_page_fault_enters_the_kernel_stack_with_u_set_and_cr2() {
    let mut traps = with_handlers(0);
    traps.mode = GuestMode::User;
    traps.kernel_sp = KSTACK;
    let mut mem = Mem::with(&[KSTACK - 0x1000]);
    let mut info = Info { mask: 1, cr2: 0 };
    let mut pf = event(
        EventKind::Exception {
            vector: 14,
            error_code: 0x6,
        },
        0x40_0000,
    );
    pf.event_data = 0xdead_b000;
    pf.rflags = 0x202 | 0x100 | 0x4_0000; // TF and AC cleared on entry
    let resume = deliver(&mut traps, &pf, &mut mem, &mut info).unwrap();
    let base = KSTACK - 64;
    assert_eq!(
        mem.words(base, 8),
        vec![
            0x1111,
            0x2222,
            0x6,
            0x40_0000,
            0xe033 | 1 << 32,
            0x4_0102,
            STACK + 0x108,
            0xe02b
        ]
    );
    assert_eq!(
        (resume.rip, resume.rsp, resume.rflags),
        (HANDLER + 0xe0, base, 0x202)
    );
    assert_eq!(resume.mode, GuestMode::Kernel);
    assert_eq!(traps.mode, GuestMode::Kernel);
    assert_eq!((info.cr2, traps.virtual_cr2), (0xdead_b000, 0xdead_b000));
    // The same fault from kernel mode: U clear, though the CPU said user.
    let mut traps = with_handlers(0);
    let mut mem = Mem::with(&[STACK]);
    deliver(&mut traps, &pf, &mut mem, &mut info).unwrap();
    assert_eq!(mem.word(STACK + 0x100 - 64 + 16), 0x2);
}

/// `int $n` at CODE as the IDT reports it (#GP at the instruction) and as FRED does.
fn int_events(n: u8) -> [Event; 3] {
    let qemu = event(
        EventKind::Exception {
            vector: 13,
            error_code: u64::from(n) << 4 | 2,
        },
        CODE,
    );
    let idt = event(
        EventKind::Exception {
            vector: 13,
            error_code: u64::from(n) << 3 | 2,
        },
        CODE,
    );
    let mut fred = event(EventKind::SoftwareInterrupt { vector: n }, CODE + 2);
    fred.insn_len = 2;
    [idt, qemu, fred]
}

#[test]
fn int_n_follows_the_dpl_rules_the_same_under_idt_and_fred() {
    for (mode, dpl, n, want_vector, want_rip, want_error) in [
        // Kernel mode needs DPL >= 1, user mode DPL 3.
        (GuestMode::Kernel, 1, 0x20, 0x20, CODE + 2, None),
        (GuestMode::Kernel, 0, 0x20, 13, CODE, Some(0x102)),
        (GuestMode::User, 1, 0x20, 13, CODE, Some(0x102)),
        (GuestMode::User, 3, 0x20, 0x20, CODE + 2, None),
        (GuestMode::Kernel, 3, 0x21, 13, CODE, Some(0x10a)),
        // int $3 / int $4: always #BP / #OF after the instruction.
        (GuestMode::User, 0, 3, 3, CODE + 2, None),
        (GuestMode::User, 0, 4, 4, CODE + 2, None),
    ] {
        let mut frames = Vec::new();
        for ev in int_events(n) {
            let mut traps = with_handlers(dpl);
            traps.mode = mode;
            traps.kernel_sp = KSTACK;
            let mut mem = Mem::with(&[STACK, KSTACK - 0x1000, CODE]);
            mem.put(CODE, &[0xcd, n]);
            let mut info = Info::default();
            let resume = deliver(&mut traps, &ev, &mut mem, &mut info).unwrap();
            assert_eq!(
                resume.rip,
                HANDLER + 0x10 * want_vector,
                "{mode:?} {dpl} {n:#x}"
            );
            let words = if want_error.is_some() { 8 } else { 7 };
            let frame = mem.words(resume.rsp, words);
            let rip_slot = if want_error.is_some() { 3 } else { 2 };
            assert_eq!(frame[rip_slot], want_rip);
            if let Some(e) = want_error {
                assert_eq!(frame[2], e);
            }
            frames.push(frame);
        }
        assert_eq!(frames[0], frames[2], "IDT and FRED differ for int {n:#x}");
        assert_eq!(
            frames[1], frames[2],
            "QEMU's IDT and FRED differ for int {n:#x}"
        );
    }
}

#[test]
fn a_gp_that_is_not_an_int_is_a_gp() {
    let mut traps = with_handlers(3);
    let mut mem = Mem::with(&[STACK, CODE]);
    mem.put(CODE, &[0x0f, 0x01]);
    let gp = event(
        EventKind::Exception {
            vector: 13,
            error_code: 0x102,
        },
        CODE,
    );
    let resume = deliver(&mut traps, &gp, &mut mem, &mut Info::default()).unwrap();
    assert_eq!(resume.rip, HANDLER + 0xd0);
    assert_eq!(mem.word(resume.rsp + 16), 0x102);
}

#[test]
fn user_syscall_goes_to_the_syscall_callback_or_is_ud() {
    let mut traps = with_handlers(0);
    traps.mode = GuestMode::User;
    traps.kernel_sp = KSTACK;
    let mut mem = Mem::with(&[KSTACK - 0x1000]);
    let mut sys = event(EventKind::Syscall, 0x40_0002);
    sys.rflags = 0x646; // DF set: cleared on entry
    sys.insn_len = 2;
    let mut info = Info::default();
    let resume = deliver(&mut traps.clone(), &sys, &mut mem, &mut info).unwrap();
    assert_eq!(resume.rip, HANDLER + 0x60, "no callback: #UD");
    assert_eq!(mem.word(resume.rsp + 16), 0x40_0000, "#UD at the syscall");
    traps.syscall = Callback {
        address: 0x3000,
        mask_events: true,
    };
    let resume = deliver(&mut traps, &sys, &mut mem, &mut info).unwrap();
    assert_eq!((resume.rip, resume.rflags), (0x3000, 0x246));
    assert_eq!(
        mem.words(resume.rsp, 7),
        vec![
            0x40_0002,
            0x646,
            0x40_0002,
            0xe033,
            0x646,
            STACK + 0x108,
            0xe02b
        ]
    );
    assert_eq!(info.mask, 1);
}

#[test]
fn no_handler_bad_handler_and_unwritable_stacks_crash() {
    let mut mem = Mem::with(&[STACK]);
    let ud = event(
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
        CODE,
    );
    let crash = deliver(&mut VcpuTraps::new(), &ud, &mut mem, &mut Info::default()).unwrap_err();
    assert_eq!(
        crash.to_string(),
        "#UD at 0x1000 (error 0x0) with no trap table"
    );
    let mut traps = with_handlers(0);
    traps.table[6].address = 0;
    let crash = deliver(&mut traps, &ud, &mut mem, &mut Info::default()).unwrap_err();
    assert_eq!(
        crash.to_string(),
        "#UD at 0x1000 (error 0x0) with no handler"
    );
    traps.table[6].address = 0xffff_8000_0010_0000;
    let crash = deliver(&mut traps, &ud, &mut mem, &mut Info::default()).unwrap_err();
    assert_eq!(
        crash.to_string(),
        "#UD handler 0xffff800000100000 is in the hypervisor's range"
    );
    traps.table[6].address = HANDLER;
    mem.read_only.push(STACK);
    let crash = deliver(&mut traps, &ud, &mut mem, &mut Info::default()).unwrap_err();
    assert_eq!(
        crash.to_string(),
        "#UD bounce frame below 0x8108 cannot be written"
    );
    // A kernel stack in the hypervisor's window never reaches the copy.
    traps.mode = GuestMode::User;
    traps.kernel_sp = 0xffff_8000_0000_1000;
    let crash = deliver(&mut traps, &ud, &mut Mem::default(), &mut Info::default()).unwrap_err();
    assert!(matches!(crash, Crash::BadBounceStack { .. }), "{crash:?}");
}

fn iret_frame(mem: &mut Mem, at: u64, ctx: [u64; 9]) {
    let bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.put(at, &bytes);
}

#[test]
fn iret_returns_to_kernel_or_user_and_restores_rax_rcx_r11_and_the_mask() {
    let mut mem = Mem::with(&[STACK]);
    // rax, r11, rcx, flags, rip, cs, rflags, rsp, ss
    iret_frame(
        &mut mem,
        STACK,
        [
            7,
            0x11,
            0x22,
            0,
            CODE,
            0xe030 | 1 << 32,
            0x3246,
            0x9000,
            0xe02b,
        ],
    );
    let mut traps = VcpuTraps::new();
    let mut info = Info { mask: 1, cr2: 0 };
    let resume = iret::iret(&mut traps, STACK, &mut mem, &mut info).unwrap();
    let mut gprs = heapless::Vec::<GprWrite, 15>::new();
    for (gpr, value) in [(Gpr::Rax, 7), (Gpr::Rcx, 0x22), (Gpr::R11, 0x11)] {
        gprs.push(GprWrite { gpr, value }).unwrap();
    }
    assert_eq!(
        resume,
        GuestResume {
            rip: CODE,
            rsp: 0x9000,
            rflags: 0x246,
            cs: 0xe033,
            ss: 0xe02b,
            mode: GuestMode::Kernel,
            gprs,
        }
    );
    assert_eq!(info.mask, 0, "IF set: events unmasked");
    // To user mode, as SYSRET would, with IF clear: masked.
    iret_frame(
        &mut mem,
        STACK,
        [
            9,
            0x11,
            0x22,
            1 << 8,
            0x40_0000,
            0xe033,
            0x2,
            0x7000,
            0xe02b,
        ],
    );
    assert_eq!(
        iret::iret(&mut traps, STACK, &mut mem, &mut info),
        Err(Crash::IretNoUserTables)
    );
    traps.user_tables = true;
    let resume = iret::iret(&mut traps, STACK, &mut mem, &mut info).unwrap();
    assert_eq!(resume.mode, GuestMode::User);
    assert_eq!(traps.mode, GuestMode::User);
    assert_eq!(resume.rflags, 0x202);
    assert!(resume.gprs.contains(&GprWrite {
        gpr: Gpr::Rcx,
        value: 0x40_0000
    }));
    assert!(resume.gprs.contains(&GprWrite {
        gpr: Gpr::R11,
        value: 0x202
    }));
    assert_eq!(info.mask, 1);
}

#[test]
fn iret_refuses_privileged_non_canonical_and_unreadable_frames() {
    let mut mem = Mem::with(&[STACK]);
    let mut traps = VcpuTraps::new();
    let mut info = Info::default();
    for (cs, ss) in [
        (0xe008, 0xe02b),
        (0x10, 0x18),
        (0xe033, 0xe010),
        (0x33, 0x2b),
    ] {
        iret_frame(&mut mem, STACK, [0, 0, 0, 0, CODE, cs, 0x202, 0x9000, ss]);
        assert_eq!(
            iret::iret(&mut traps, STACK, &mut mem, &mut info),
            Err(Crash::IretSelector { cs, ss })
        );
    }
    iret_frame(
        &mut mem,
        STACK,
        [
            0,
            0,
            0,
            0,
            0x0000_8000_0000_0000,
            0xe033,
            0x202,
            0x9000,
            0xe02b,
        ],
    );
    assert_eq!(
        iret::iret(&mut traps, STACK, &mut mem, &mut info),
        Err(Crash::IretNonCanonical {
            rip: 0x0000_8000_0000_0000
        })
    );
    for rsp in [0xffff_8000_0000_0000, 0x0000_8000_0000_0000, 0x5_0000] {
        assert_eq!(
            iret::iret(&mut traps, rsp, &mut mem, &mut info),
            Err(Crash::BadIretFrame { rsp })
        );
    }
}

fn call(traps: &mut VcpuTraps, number: xen_abi::Hypercall, args: [u64; 5], mem: &mut Mem) -> u64 {
    match hypercalls::answer(traps, u64::from(number.raw()), args, mem) {
        Outcome::Return(rax) => rax,
        other => panic!("{other:?}"),
    }
}

#[test]
fn set_trap_table_copies_until_zero_stops_at_non_canonical_and_null_clears() {
    use xen_abi::Hypercall::SetTrapTable;
    use xen_abi::traps::TrapInfo;
    let mut mem = Mem::with(&[STACK]);
    let entries = [
        (6, 0, 0x2060),
        (0x20, 3, 0x2200),
        (14, 4, 0x20e0),
        (13, 0, 0x0000_8000_0000_0000),
        (3, 3, 0x2030),
    ];
    for (i, (vector, flags, address)) in entries.into_iter().enumerate() {
        let info = TrapInfo {
            vector,
            flags,
            cs: 0xe030,
            _pad: 0,
            address,
        };
        mem.put(STACK + 16 * i as u64, &info.to_bytes());
    }
    let mut traps = VcpuTraps::new();
    assert_eq!(
        call(&mut traps, SetTrapTable, [STACK, 0, 0, 0, 0], &mut mem),
        Errno::Einval.rax()
    );
    assert_eq!(
        traps.table[6],
        TrapEntry {
            flags: 0,
            address: 0x2060
        }
    );
    assert_eq!(traps.table[0x20].dpl(), 3);
    assert!(traps.table[14].masks_events());
    assert_eq!(traps.table[13].address, 0, "the bad entry is not taken");
    assert_eq!(traps.table[3].address, 0, "nor anything after it");
    // A zero address ends the table.
    mem.put(STACK + 16 * 3, &[0; 16]);
    assert_eq!(
        call(&mut traps, SetTrapTable, [STACK, 0, 0, 0, 0], &mut mem),
        0
    );
    assert_eq!(
        call(
            &mut traps,
            SetTrapTable,
            [0xffff_8000_0000_0000, 0, 0, 0, 0],
            &mut mem
        ),
        Errno::Efault.rax()
    );
    assert_eq!(call(&mut traps, SetTrapTable, [0, 0, 0, 0, 0], &mut mem), 0);
    assert_eq!(traps, VcpuTraps::new());
}

#[test]
fn callbacks_stack_switch_and_fpu_taskswitch() {
    use xen_abi::Hypercall::{CallbackOp, FpuTaskswitch, SetCallbacks, StackSwitch};
    let mut mem = Mem::with(&[STACK]);
    let mut traps = VcpuTraps::new();
    let register = |mem: &mut Mem, kind: u16, flags: u16, address: u64| {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&kind.to_le_bytes());
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&address.to_le_bytes());
        mem.put(STACK, &b);
    };
    for (kind, flags, want) in [
        (0u16, 0u16, 0),
        (2, 1, 0),
        (7, 1, 0),
        (5, 1, 0),
        (1, 0, 0),
        (4, 0, 0),
        (3, 0, Errno::Enosys.rax()),
        (9, 0, Errno::Enosys.rax()),
    ] {
        register(&mut mem, kind, flags, 0x3000 + u64::from(kind));
        assert_eq!(
            call(&mut traps, CallbackOp, [0, STACK, 0, 0, 0], &mut mem),
            want,
            "type {kind}"
        );
    }
    assert_eq!(
        traps.event,
        Callback {
            address: 0x3000,
            mask_events: false
        }
    );
    assert_eq!(
        traps.syscall,
        Callback {
            address: 0x3002,
            mask_events: true
        }
    );
    assert_eq!(traps.syscall32.address, 0x3007);
    assert_eq!(traps.sysenter.address, 0x3005);
    assert_eq!(
        traps.table[2],
        TrapEntry {
            flags: 4,
            address: 0x3004
        }
    );
    register(&mut mem, 2, 0, 0x0000_8000_0000_0000);
    assert_eq!(
        call(&mut traps, CallbackOp, [0, STACK, 0, 0, 0], &mut mem),
        Errno::Einval.rax()
    );
    // Unregister: only the NMI callback may go.
    for (kind, want) in [
        (0u16, Errno::Einval.rax()),
        (7, Errno::Einval.rax()),
        (4, 0),
        (3, Errno::Enosys.rax()),
    ] {
        register(&mut mem, kind, 0, 0);
        assert_eq!(
            call(&mut traps, CallbackOp, [1, STACK, 0, 0, 0], &mut mem),
            want
        );
    }
    assert_eq!(traps.table[2].address, 0);
    assert_eq!(
        call(&mut traps, CallbackOp, [2, STACK, 0, 0, 0], &mut mem),
        Errno::Enosys.rax()
    );
    assert_eq!(
        call(
            &mut traps,
            CallbackOp,
            [0, 0xffff_8000_0000_0000, 0, 0, 0],
            &mut mem
        ),
        Errno::Efault.rax()
    );
    assert_eq!(
        call(
            &mut traps,
            SetCallbacks,
            [0x4000, 0x0000_8000_0000_0000, 0x4002, 0, 0],
            &mut mem
        ),
        0
    );
    assert_eq!(
        (traps.event.address, traps.syscall.address),
        (0x4000, 0x4002)
    );
    assert!(!traps.syscall.mask_events);
    assert_eq!(traps.failsafe.address, 0x3001, "a bad address is ignored");
    assert_eq!(
        call(&mut traps, StackSwitch, [0xe028, KSTACK, 0, 0, 0], &mut mem),
        0
    );
    assert_eq!((traps.kernel_ss, traps.kernel_sp), (0xe02b, KSTACK));
    assert_eq!(
        call(&mut traps, FpuTaskswitch, [1, 0, 0, 0, 0], &mut mem),
        0
    );
    assert!(traps.virtual_ts);
    let nm = event(
        EventKind::Exception {
            vector: 7,
            error_code: 0,
        },
        CODE,
    );
    let _ = trap_for(&mut traps, &nm, (0, 0), &mut mem);
    assert!(!traps.virtual_ts, "#NM clears the virtual TS");
}

#[test]
fn interrupted_context_is_what_the_event_says() {
    let mut traps = VcpuTraps::new();
    let ev = event(EventKind::SoftwareException { vector: 3 }, CODE + 1);
    let (trap, at) = trap_for(&mut traps, &ev, (5, 6), &mut Mem::default()).unwrap();
    assert_eq!(
        at,
        Interrupted {
            rip: CODE + 1,
            rsp: STACK + 0x108,
            rflags: 0x246,
            rcx: 5,
            r11: 6
        }
    );
    assert_eq!((trap.rip, trap.error_code), (CODE + 1, None));
}

#[test]
fn a_failsafe_callback_gets_the_data_selectors_between_r11_and_rip() {
    let mut traps = VcpuTraps::new();
    traps.failsafe = Callback {
        address: HANDLER,
        mask_events: true,
    };
    let mut mem = Mem::with(&[STACK]);
    let mut info = Info::default();
    let at = Interrupted {
        rip: CODE + 7,
        rsp: STACK + 0x108,
        rflags: 0x246,
        rcx: CODE + 7,
        r11: 0x246,
    };
    let trap = Trap {
        target: Target::Failsafe([0x0b, 0x0f, 0x13, 0]),
        error_code: None,
        cr2: None,
        rip: CODE + 7,
        reported_error: None,
    };
    let resume = bounce::bounce(&mut traps, &trap, &at, &mut mem, &mut info).unwrap();
    let base = STACK + 0x100 - 88;
    assert_eq!(
        mem.words(base, 11),
        vec![
            CODE + 7,
            0x246,
            0x0b,
            0x0f,
            0x13,
            0,
            CODE + 7,
            0xe030,
            0x246,
            STACK + 0x108,
            0xe02b
        ]
    );
    assert_eq!((resume.rip, resume.rsp, resume.cs), (HANDLER, base, 0xe033));
    assert_eq!(info.mask, 1, "VGCF_failsafe_disables_events");
    traps.failsafe.address = 0;
    assert!(matches!(
        bounce::bounce(&mut traps, &trap, &at, &mut mem, &mut info),
        Err(Crash::NoCallback {
            what: "failsafe",
            ..
        })
    ));
}
