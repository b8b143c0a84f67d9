use super::*;

fn host(leaf: u32, _sub: u32) -> cpuid::Regs {
    match leaf {
        0 => cpuid::Regs {
            eax: 0x16,
            ebx: 0x756e_6547,
            ecx: 0x6c65_746e,
            edx: 0x4965_6e69,
        },
        _ => cpuid::Regs {
            eax: !0,
            ebx: !0,
            ecx: !0,
            edx: !0,
        },
    }
}

fn run(trigger: Trigger, bytes: &[u8], regs: &Gprs, cpu: &mut VirtualCpu) -> Emulated {
    emulate(trigger, bytes, None, regs, cpu, host, 0x1234)
}

fn writes(list: &[(Gpr, u64)]) -> Vec<(Gpr, u64), 4> {
    Vec::from_slice(list).unwrap()
}

const GP: Trigger = Trigger::GeneralProtection;

#[test]
fn forced_cpuid_answers_with_the_policy() {
    let mut cpu = VirtualCpu::new(0, 0x5000);
    let mut regs = [0; 16];
    regs[0] = cpuid::HYPERVISOR_BASE as u64;
    let out = run(
        Trigger::InvalidOpcode,
        b"\x0f\x0bxen\x0f\xa2",
        &regs,
        &mut cpu,
    );
    assert_eq!(
        out,
        Emulated::Done {
            len: 7,
            writes: writes(&[
                (Gpr::Rax, 0x4000_0002),
                (Gpr::Rbx, 0x566e_6558),
                (Gpr::Rcx, 0x6558_4d4d),
                (Gpr::Rdx, 0x4d4d_566e),
            ]),
            effect: None
        }
    );
    assert_eq!(
        run(
            Trigger::InvalidOpcode,
            b"\x0f\x0bxen\x90\x90",
            &regs,
            &mut cpu
        ),
        Emulated::Fault(GuestFault::InvalidOpcode)
    );
    // The prefix behind a #GP is no request, and a plain ud2 stays a #UD.
    assert_eq!(
        run(GP, b"\x0f\x0bxen\x0f\xa2", &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection)
    );
    assert_eq!(
        run(Trigger::InvalidOpcode, b"\x0f\x0b\x90\x90", &regs, &mut cpu),
        Emulated::Fault(GuestFault::InvalidOpcode)
    );
}

#[test]
fn control_registers() {
    let mut cpu = VirtualCpu::new(0, 0x0012_3000);
    let regs = [0; 16];
    // mov %cr3, %rax; mov %cr0, %rbx; mov %cr4, %r9.
    let done = |g, v, len| Emulated::Done {
        len,
        writes: writes(&[(g, v)]),
        effect: None,
    };
    assert_eq!(
        run(GP, &[0x0f, 0x20, 0xd8], &regs, &mut cpu),
        done(Gpr::Rax, 0x12_3000, 3)
    );
    assert_eq!(
        run(GP, &[0x0f, 0x20, 0xc3], &regs, &mut cpu),
        done(Gpr::Rbx, GUEST_CR0, 3)
    );
    assert_eq!(
        run(GP, &[0x41, 0x0f, 0x20, 0xe1], &regs, &mut cpu),
        done(Gpr::R9, GUEST_CR4, 4)
    );
    // mov %rax, %cr0 with TS: only TS changes.
    let mut with_ts = regs;
    with_ts[0] = 0x8 | 0x4;
    assert!(matches!(
        run(GP, &[0x0f, 0x22, 0xc0], &with_ts, &mut cpu),
        Emulated::Done { .. }
    ));
    assert!(cpu.ts);
    assert_eq!(
        run(GP, &[0x0f, 0x20, 0xc3], &regs, &mut cpu),
        done(Gpr::Rbx, GUEST_CR0 | 8, 3)
    );
    // mov %rax, %cr3 is NEW_BASEPTR.
    let mut cr3 = regs;
    cr3[0] = 0x0045_6000;
    assert_eq!(
        run(GP, &[0x0f, 0x22, 0xd8], &cr3, &mut cpu),
        Emulated::Done {
            len: 3,
            writes: Vec::new(),
            effect: Some(SideEffect::NewBaseptr { mfn: 0x456 })
        }
    );
    // CR8 and writes to CR4 outside the guest mask.
    assert_eq!(
        run(GP, &[0x44, 0x0f, 0x20, 0xc0], &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection)
    );
    let mut cr4 = regs;
    cr4[0] = 0xffff;
    run(GP, &[0x0f, 0x22, 0xe0], &cr4, &mut cpu);
    assert_eq!(cpu.cr4, GUEST_CR4);
}

#[test]
fn msrs_and_the_non_canonical_base() {
    let mut cpu = VirtualCpu::new(0, 0);
    cpu.fs_base = 0x7fff_0000_1000;
    cpu.gs_base_kernel = 0xffff_8880_0000_0000;
    cpu.gs_base_user = 0x1000;
    let mut regs = [0; 16];
    let rdmsr = |msr: u32, cpu: &mut VirtualCpu| {
        let mut r = [0; 16];
        r[1] = u64::from(msr);
        run(GP, &[0x0f, 0x32], &r, cpu)
    };
    let pair = |v: u64| Emulated::Done {
        len: 2,
        writes: writes(&[(Gpr::Rax, v & 0xffff_ffff), (Gpr::Rdx, v >> 32)]),
        effect: None,
    };
    assert_eq!(rdmsr(msr::FS_BASE, &mut cpu), pair(0x7fff_0000_1000));
    assert_eq!(rdmsr(msr::GS_BASE, &mut cpu), pair(0xffff_8880_0000_0000));
    assert_eq!(rdmsr(msr::SHADOW_GS_BASE, &mut cpu), pair(0x1000));
    assert_eq!(rdmsr(msr::MISC_ENABLE, &mut cpu), pair(GUEST_MISC_ENABLE));
    assert_eq!(rdmsr(msr::EFER, &mut cpu), pair(GUEST_EFER));
    assert_eq!(
        rdmsr(0x3a, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection),
        "FEATURE_CONTROL is not emulated"
    );
    // wrmsr GS_BASE: a side effect; non-canonical: #GP(0).
    regs[1] = u64::from(msr::GS_BASE);
    regs[2] = 0x0000_7fff;
    regs[0] = 0x2000;
    assert_eq!(
        run(GP, &[0x0f, 0x30], &regs, &mut cpu),
        Emulated::Done {
            len: 2,
            writes: Vec::new(),
            effect: Some(SideEffect::SegmentBase {
                which: SegmentBaseWhich::GsKernel,
                base: 0x7fff_0000_2000
            })
        }
    );
    regs[1] = u64::from(msr::FS_BASE);
    regs[2] = 0x8000;
    assert_eq!(
        run(GP, &[0x0f, 0x30], &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection)
    );
    // MISC_ENABLE: only its own value.
    regs[1] = u64::from(msr::MISC_ENABLE);
    regs[2] = 0;
    regs[0] = GUEST_MISC_ENABLE;
    assert!(matches!(
        run(GP, &[0x0f, 0x30], &regs, &mut cpu),
        Emulated::Done { .. }
    ));
    regs[0] = GUEST_MISC_ENABLE | 1 << 18;
    assert_eq!(
        run(GP, &[0x0f, 0x30], &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection)
    );
}

#[test]
fn ports_follow_the_virtual_iopl() {
    let mut cpu = VirtualCpu::new(0, 0);
    let mut regs = [0; 16];
    regs[0] = 0x1234_5678_0000_0000;
    let in_al = [0xe4, 0x80];
    assert_eq!(
        run(GP, &in_al, &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection),
        "IOPL 0"
    );
    cpu.iopl = 1;
    assert_eq!(
        run(GP, &in_al, &regs, &mut cpu),
        Emulated::Done {
            len: 2,
            writes: writes(&[(Gpr::Rax, 0x1234_5678_0000_00ff)]),
            effect: None
        }
    );
    assert_eq!(
        run(GP, &[0xed], &regs, &mut cpu),
        Emulated::Done {
            len: 1,
            writes: writes(&[(Gpr::Rax, 0xffff_ffff)]),
            effect: None
        }
    );
    assert!(matches!(
        run(GP, &[0xee], &regs, &mut cpu),
        Emulated::Done { len: 1, .. }
    ));
    // User mode's virtual CPL is 3.
    cpu.kernel_mode = false;
    assert_eq!(
        run(GP, &[0xee], &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection)
    );
    cpu.iopl = 3;
    assert!(matches!(
        run(GP, &[0xfa], &regs, &mut cpu),
        Emulated::Done { len: 1, .. }
    ));
}

#[test]
fn everything_else_is_the_original_fault_and_a_short_read_a_page_fault() {
    let mut cpu = VirtualCpu::new(0, 0);
    let regs = [0; 16];
    assert_eq!(
        run(GP, &[0xf4], &regs, &mut cpu),
        Emulated::Fault(GuestFault::GeneralProtection),
        "hlt"
    );
    assert_eq!(
        emulate(GP, &[0x0f], Some(0x2000), &regs, &mut cpu, host, 0),
        Emulated::Fault(GuestFault::PageFault { address: 0x2000 })
    );
    assert_eq!(
        trigger(&ipc::EventKind::Exception {
            vector: 13,
            error_code: 0x10
        }),
        None,
        "only #GP(0)"
    );
}
