use std::collections::BTreeMap;

use super::operand::{Decoded, SegmentBases, decode};
use super::*;
use crate::emulate::Gprs;
use crate::guest_hypercalls::GuestFault;

/// Guest memory of whole pages; `read_only` pages refuse writes.
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

    fn word(&mut self, va: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(va, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = va + i as u64;
            let page = self
                .pages
                .get(&(at & !0xfff))
                .ok_or(GuestFault { va: at })?;
            *b = page[(at & 0xfff) as usize];
        }
        Ok(())
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault> {
        for i in 0..bytes.len() as u64 {
            let page = (va + i) & !0xfff;
            if !self.pages.contains_key(&page) || self.read_only.contains(&page) {
                return Err(GuestFault { va: va + i });
            }
        }
        for (i, &b) in bytes.iter().enumerate() {
            let at = va + i as u64;
            self.pages.get_mut(&(at & !0xfff)).unwrap()[(at & 0xfff) as usize] = b;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tables {
    gdt: BTreeMap<u16, u64>,
    ldt: BTreeMap<u16, u64>,
}

impl DescriptorSource for Tables {
    fn read(&mut self, table: Table, index: u16) -> Option<u64> {
        let t = match table {
            Table::Gdt => &self.gdt,
            Table::Ldt => &self.ldt,
        };
        Some(t.get(&index).copied().unwrap_or(0))
    }
}

/// A 64-bit call gate as the nucleus stores a present one: DPL 0, the DPL in the target's RPL.
fn stored_gate(target: u16, dpl: u16, offset: u64) -> (u64, u64) {
    let low = (offset & 0xffff)
        | u64::from((target & !3) | dpl) << 16
        | 0x8c << 40
        | (offset >> 16 & 0xffff) << 48;
    (low, offset >> 32)
}

const KERNEL_TARGET: u64 = 0xffff_ffff_8000_1000;
const DATA_DPL3: u64 = 0x00cf_f200_0000_ffff;
const CODE64_DPL3: u64 = 0x00af_fa00_0000_ffff;
const CODE32_DPL3: u64 = 0x00cf_fa00_0000_ffff;

/// GDT: 16/17 DPL 0 gate to 0xe033, 18/19 DPL 3 gate to 0xe033, 20/21 DPL 3 gate to the
/// data segment 24, 22/23 not present (DPL 3), 24 data, 25 64-bit code, 26 32-bit code,
/// 28/29 DPL 3 gate to 25, 30/31 DPL 3 gate to 26, 32 an interrupt gate (never stored, but
/// a type the emulator must refuse), 34 a DPL 3 gate to a null selector. LDT: 2/3 DPL 0
/// gate to 0xe033.
fn tables() -> (Tables, DescriptorRecord) {
    let mut t = Tables::default();
    let mut gate = |table: Table, index: u16, (low, high): (u64, u64)| {
        let m = match table {
            Table::Gdt => &mut t.gdt,
            Table::Ldt => &mut t.ldt,
        };
        m.insert(index, low);
        m.insert(index + 1, high);
    };
    gate(Table::Gdt, 16, stored_gate(0xe033, 0, KERNEL_TARGET));
    gate(Table::Gdt, 18, stored_gate(0xe033, 3, KERNEL_TARGET));
    gate(Table::Gdt, 20, stored_gate(24 << 3, 3, KERNEL_TARGET));
    let (low, high) = stored_gate(0xe033, 0, KERNEL_TARGET);
    gate(Table::Gdt, 22, ((low & !(1 << 47)) | 3 << 45, high));
    gate(Table::Gdt, 28, stored_gate(25 << 3, 3, 0x40_1000));
    gate(Table::Gdt, 30, stored_gate(26 << 3, 3, 0x40_1000));
    gate(Table::Gdt, 32, (0x0000_ee00_0008_0000, 0));
    gate(Table::Gdt, 34, stored_gate(0, 3, KERNEL_TARGET));
    gate(Table::Ldt, 2, stored_gate(0xe033, 0, KERNEL_TARGET));
    t.gdt.insert(24, DATA_DPL3);
    t.gdt.insert(25, CODE64_DPL3);
    t.gdt.insert(26, CODE32_DPL3);
    let mut record = DescriptorRecord::default();
    record.set_gdt(&[0x1234], 512);
    record.set_ldt(0x8000, 8);
    (t, record)
}

const CALL_AT: u64 = 0x40_0000;
const OPERAND: u64 = 0x50_0000;
const STACK: u64 = 0x60_0800;
const KSTACK: u64 = 0x70_1000;

fn kernel() -> Caller {
    Caller {
        rip: CALL_AT,
        rsp: STACK,
        cs: 0xe033,
        ss: 0xe02b,
        mode: GuestMode::Kernel,
        kernel_sp: KSTACK,
    }
}

fn user() -> Caller {
    Caller {
        mode: GuestMode::User,
        ..kernel()
    }
}

/// `lcall *(%rdi)` (m16:32) or `ljmp *(%rdi)` at CALL_AT through `selector`.
fn run(insn: &[u8], selector: u16, caller: &Caller) -> (Outcome, Mem) {
    let (mut t, record) = tables();
    let mut mem = Mem::with(&[OPERAND, STACK & !0xfff, KSTACK - 0x1000]);
    mem.write(OPERAND + 4, &selector.to_le_bytes()).unwrap();
    let mut regs: Gprs = [0; 16];
    regs[7] = OPERAND;
    let Decoded::Far(far) = decode(insn, CALL_AT, &regs, SegmentBases::default()) else {
        panic!("{insn:x?} is no far transfer");
    };
    let outcome = emulate(
        &far,
        SelectorIndex::of(selector),
        caller,
        &record,
        &mut t,
        &mut mem,
    );
    (outcome, mem)
}

const LCALL: [u8; 2] = [0xff, 0x1f];
const LJMP: [u8; 2] = [0xff, 0x2f];

fn gp(error_code: u64) -> Outcome {
    Outcome::Fault {
        vector: 13,
        error_code,
    }
}

#[test]
fn kernel_to_kernel_call_pushes_rip_and_cs_on_its_stack() {
    let (outcome, mut mem) = run(&LCALL, 0x80, &kernel());
    assert_eq!(
        outcome,
        Outcome::Transfer(Landing {
            rip: KERNEL_TARGET,
            cs: 0xe033,
            rsp: STACK - 16,
            ss: 0xe02b,
            mode: GuestMode::Kernel,
        })
    );
    assert_eq!(mem.word(STACK - 16), CALL_AT + 2);
    assert_eq!(mem.word(STACK - 8), 0xe033);
    // The LDT gate does the same.
    let (outcome, _) = run(&LCALL, 0x14, &kernel());
    assert!(matches!(outcome, Outcome::Transfer(l) if l.rip == KERNEL_TARGET));
}

#[test]
fn user_to_kernel_call_switches_mode_and_stack_and_pushes_ss_rsp_cs_rip() {
    let caller = Caller {
        cs: 0xe033,
        ss: 0xe02b,
        ..user()
    };
    let (outcome, mut mem) = run(&LCALL, 0x93, &caller);
    assert_eq!(
        outcome,
        Outcome::Transfer(Landing {
            rip: KERNEL_TARGET,
            cs: 0xe033,
            rsp: KSTACK - 32,
            ss: 0xe02b,
            mode: GuestMode::Kernel,
        })
    );
    let frame: Vec<u64> = (0..4).map(|i| mem.word(KSTACK - 32 + 8 * i)).collect();
    assert_eq!(frame, [CALL_AT + 2, 0xe033, STACK, 0xe02b]);
}

#[test]
fn privilege_checks_give_the_gate_or_the_target_selector() {
    // Gate DPL 0 from user mode; RPL 3 through a DPL 0 gate from kernel mode.
    assert_eq!(run(&LCALL, 0x83, &user()).0, gp(0x80));
    assert_eq!(run(&LCALL, 0x83, &kernel()).0, gp(0x80));
    // Target not a code segment; not 64-bit; DPL 3 code from kernel mode (call and jmp).
    assert_eq!(run(&LCALL, 0xa3, &user()).0, gp(24 << 3));
    assert_eq!(run(&LCALL, 0xf3, &user()).0, gp(26 << 3));
    assert_eq!(run(&LCALL, 0xe3, &kernel()).0, gp(25 << 3));
    assert_eq!(run(&LJMP, 0xe3, &kernel()).0, gp(25 << 3));
    // jmp from user mode into the kernel: no privilege change through a jmp.
    assert_eq!(run(&LJMP, 0x93, &user()).0, gp(0xe030));
    // Not present: #NP(gate).
    assert_eq!(
        run(&LCALL, 0xb3, &user()).0,
        Outcome::Fault {
            vector: 11,
            error_code: 0xb0
        }
    );
    // Another system type, a null target.
    assert_eq!(run(&LCALL, 0x100, &kernel()).0, gp(0x100));
    assert_eq!(run(&LCALL, 0x110, &kernel()).0, gp(0));
}

#[test]
fn jumps_and_same_privilege_calls_through_gates() {
    let (outcome, _) = run(&LJMP, 0x80, &kernel());
    assert_eq!(
        outcome,
        Outcome::Transfer(Landing {
            rip: KERNEL_TARGET,
            cs: 0xe033,
            rsp: STACK,
            ss: 0xe02b,
            mode: GuestMode::Kernel,
        })
    );
    // user → user: the guest's own 64-bit code segment, RPL 3.
    let (outcome, mut mem) = run(&LCALL, 0xe3, &user());
    assert_eq!(
        outcome,
        Outcome::Transfer(Landing {
            rip: 0x40_1000,
            cs: 25 << 3 | 3,
            rsp: STACK - 16,
            ss: 0xe02b,
            mode: GuestMode::User,
        })
    );
    assert_eq!(mem.word(STACK - 16), CALL_AT + 2);
    let (outcome, _) = run(&LJMP, 0xe3, &user());
    assert!(matches!(outcome, Outcome::Transfer(l) if l.rsp == STACK));
}

#[test]
fn what_is_not_a_guest_gate_stays_the_original_fault() {
    // A data segment, beyond the GDT, the hypervisor's entries, beyond the LDT.
    assert_eq!(run(&LCALL, 24 << 3, &kernel()).0, Outcome::NotAGate);
    assert_eq!(run(&LCALL, 600 << 3, &kernel()).0, Outcome::NotAGate);
    assert_eq!(run(&LCALL, 0xe008, &kernel()).0, Outcome::NotAGate);
    assert_eq!(run(&LCALL, 9 << 3 | 4, &kernel()).0, Outcome::NotAGate);
    // The operand names another selector than the fault.
    let (mut t, record) = tables();
    let mut mem = Mem::with(&[OPERAND]);
    mem.write(OPERAND + 4, &0x90u16.to_le_bytes()).unwrap();
    let mut regs: Gprs = [0; 16];
    regs[7] = OPERAND;
    let Decoded::Far(far) = decode(&LCALL, CALL_AT, &regs, SegmentBases::default()) else {
        panic!()
    };
    let outcome = emulate(
        &far,
        SelectorIndex(0x80),
        &kernel(),
        &record,
        &mut t,
        &mut mem,
    );
    assert_eq!(outcome, Outcome::NotAGate);
}

#[test]
fn unreadable_operand_and_unwritable_stacks_are_page_faults() {
    let (mut t, record) = tables();
    let mut mem = Mem::with(&[KSTACK - 0x1000]);
    let mut regs: Gprs = [0; 16];
    regs[7] = OPERAND;
    let Decoded::Far(far) = decode(&LCALL, CALL_AT, &regs, SegmentBases::default()) else {
        panic!()
    };
    let outcome = emulate(
        &far,
        SelectorIndex(0x90),
        &user(),
        &record,
        &mut t,
        &mut mem,
    );
    assert_eq!(
        outcome,
        Outcome::PageFault {
            address: OPERAND,
            error_code: 4
        }
    );
    // The kernel stack read-only: the first push (SS, at the top) faults.
    let (mut t, record) = tables();
    let mut mem = Mem::with(&[OPERAND, KSTACK - 0x1000]);
    mem.write(OPERAND + 4, &0x93u16.to_le_bytes()).unwrap();
    mem.read_only.push(KSTACK - 0x1000);
    let outcome = emulate(
        &far,
        SelectorIndex(0x90),
        &user(),
        &record,
        &mut t,
        &mut mem,
    );
    assert_eq!(
        outcome,
        Outcome::PageFault {
            address: KSTACK - 8,
            error_code: 2
        }
    );
    // A non-canonical stack_switch stack: #SS(0).
    let caller = Caller {
        kernel_sp: 0x8000_0000_0000_0000,
        ..user()
    };
    let mut mem = Mem::with(&[OPERAND]);
    mem.write(OPERAND + 4, &0x93u16.to_le_bytes()).unwrap();
    let outcome = emulate(
        &far,
        SelectorIndex(0x90),
        &caller,
        &record,
        &mut t,
        &mut mem,
    );
    assert_eq!(
        outcome,
        Outcome::Fault {
            vector: 12,
            error_code: 0
        }
    );
}

#[test]
fn the_operand_forms_put_the_selector_where_the_cpu_reads_it() {
    let mut regs: Gprs = [0; 16];
    regs[0] = 0x1000; // rax
    regs[3] = 0x10; // rbx
    regs[4] = 0x7000; // rsp
    regs[13] = 0x2000; // r13
    let bases = SegmentBases {
        fs: 0x10_0000,
        gs: 0x20_0000,
    };
    let far = |bytes: &[u8]| match decode(bytes, 0x40_0000, &regs, bases) {
        Decoded::Far(f) => (f.transfer, f.len, f.selector_at()),
        other => panic!("{bytes:x?}: {other:?}"),
    };
    // lcall *(%rax); rex.w ljmp *8(%rsp); lcall *(%rax,%rbx,4); lcall *0x10(%rip).
    assert_eq!(far(&[0xff, 0x18]), (Transfer::Call, 2, 0x1004));
    assert_eq!(
        far(&[0x48, 0xff, 0x6c, 0x24, 0x08]),
        (Transfer::Jump, 5, 0x7010)
    );
    assert_eq!(far(&[0xff, 0x1c, 0x98]), (Transfer::Call, 3, 0x1044));
    assert_eq!(
        far(&[0xff, 0x1d, 0x10, 0, 0, 0]),
        (Transfer::Call, 6, 0x40_0000 + 6 + 0x10 + 4)
    );
    // 0x66: m16:16; gs override; REX.B with r13 and disp32; SIB without base.
    assert_eq!(far(&[0x66, 0xff, 0x18]), (Transfer::Call, 3, 0x1002));
    assert_eq!(far(&[0x65, 0xff, 0x18]), (Transfer::Call, 3, 0x20_1004));
    assert_eq!(
        far(&[0x41, 0xff, 0x9d, 0x00, 0x01, 0, 0]),
        (Transfer::Call, 7, 0x2104)
    );
    assert_eq!(
        far(&[0xff, 0x1c, 0x25, 0x00, 0x30, 0, 0]),
        (Transfer::Call, 7, 0x3004)
    );
    // A register operand, another opcode, a near call; cut short.
    assert_eq!(decode(&[0xff, 0xd8], 0, &regs, bases), Decoded::Other);
    assert_eq!(decode(&[0xff, 0x10], 0, &regs, bases), Decoded::Other);
    assert_eq!(decode(&[0x0f, 0x0b], 0, &regs, bases), Decoded::Other);
    assert_eq!(
        decode(&[0xff, 0x1d, 0x10], 0, &regs, bases),
        Decoded::Truncated
    );
    assert_eq!(decode(&[0x66; 20], 0, &regs, bases), Decoded::Truncated);
}

proptest::proptest! {
    #[test]
    fn any_bytes_decode_within_fifteen(bytes in proptest::collection::vec(0u8.., 0..20)) {
        if let Decoded::Far(far) = decode(&bytes, 0, &[0; 16], SegmentBases::default()) {
            proptest::prop_assert!(usize::from(far.len) <= 15);
            proptest::prop_assert!(usize::from(far.len) <= bytes.len());
        }
    }
}

#[test]
fn gate_errors_are_gdt_and_ldt_selectors_only() {
    let event = |error_code| Event {
        cpu: 0,
        kind: EventKind::Exception {
            vector: 13,
            error_code,
        },
        event_data: 0,
        rip: 0,
        cs: 0xe033,
        rflags: 0x202,
        rsp: 0,
        ss: 0xe02b,
        from_ring: 3,
        insn_len: 0,
        owner: 0,
    };
    assert_eq!(gate_error(&event(0x80)), Some(SelectorIndex(0x80)));
    assert_eq!(gate_error(&event(0x14)), Some(SelectorIndex(0x14)));
    assert_eq!(gate_error(&event(0)), None);
    assert_eq!(gate_error(&event(0x81 << 3 | 2)), None, "an IDT vector");
    assert_eq!(gate_error(&event(0x81)), None, "external");
    assert_eq!(gate_error(&event(1 << 16)), None);
}
