use super::*;
use crate::gdt;

fn state(event_type: u8, vector: u8, error_code: u64, event_data: u64) -> FredState {
    FredState {
        error_code,
        rip: 0xffff_8000_0012_3456,
        cs: CsQword::new(gdt::KERNEL_CS, StackLevel::SL0, false),
        rflags: 0x202,
        rsp: 0xffff_8000_0010_7f00,
        ss: SsQword::from_raw(
            gdt::KERNEL_DS.raw() as u64 | (vector as u64) << 32 | (event_type as u64) << 48,
        ),
        event_data,
        reserved: 0,
    }
}

#[test]
fn offsets_match_fred_facts() {
    assert_eq!(FRAME_RET, 128);
    assert_eq!(FRAME_ERROR_CODE, 128);
    assert_eq!(FRAME_RIP, 128 + 0x08);
    assert_eq!(FRAME_CS, 128 + 0x10);
    assert_eq!(FRAME_RFLAGS, 128 + 0x18);
    assert_eq!(FRAME_RSP, 128 + 0x20);
    assert_eq!(FRAME_SS, 128 + 0x28);
    assert_eq!(FRAME_EVENT_DATA, 128 + 0x30);
    assert_eq!(FRAME_RESERVED, 128 + 0x38);
    assert_eq!(FRAME_SIZE, 192);
    // Same order as Linux's pt_regs (fred-facts.md §8.4), orig_ax replaced by `reserved`.
    let gprs = [
        FRAME_R15,
        FRAME_R14,
        FRAME_R13,
        FRAME_R12,
        FRAME_RBP,
        FRAME_RBX,
        FRAME_R11,
        FRAME_R10,
        FRAME_R9,
        FRAME_R8,
        FRAME_RAX,
        FRAME_RCX,
        FRAME_RDX,
        FRAME_RSI,
        FRAME_RDI,
        FRAME_GPRS_RESERVED,
    ];
    for (slot, offset) in gprs.iter().enumerate() {
        assert_eq!(*offset, slot * 8);
    }
}

#[test]
fn cs_qword_fields() {
    let cs = CsQword::new(gdt::KERNEL_CS, StackLevel::SL3, true);
    assert_eq!(cs.raw(), 0x0007_e008);
    assert_eq!(cs.selector().raw(), 0xe008);
    assert_eq!(cs.stack_level(), StackLevel::SL3);
    assert!(cs.wfe());
    let user = CsQword::from_raw(0xe033);
    assert_eq!(user.selector().rpl(), 3);
    assert_eq!(user.stack_level(), StackLevel::SL0);
    assert!(!user.wfe());
}

#[test]
fn ss_qword_fields() {
    // A SYSCALL from 64-bit ring 3 (instruction length 2), as Bochs writes it.
    let ss = SsQword::new(gdt::USER_DS, EventType::Other, 1)
        .with_64bit(true)
        .with_insn_len(2)
        .unwrap();
    assert_eq!(ss.raw(), 0x2207_0001_0002_e02b);
    assert_eq!(ss.selector().raw(), 0xe02b);
    assert!(
        ss.swevent() && ss.is_64bit() && !ss.nmi() && !ss.sti() && !ss.nested() && !ss.enclave()
    );
    assert_eq!(
        (ss.vector(), ss.event_type(), ss.insn_len()),
        (1, Ok(EventType::Other), 2)
    );
    let nmi = SsQword::new(gdt::KERNEL_DS, EventType::Nmi, 2);
    assert_eq!(nmi.raw(), 0x0002_0002_0004_e010);
    assert!(nmi.nmi());
    let nested = SsQword::from_raw(0).with_nested(true).with_sti(true);
    assert_eq!(nested.raw(), (1 << 58) | (1 << 16));
    assert_eq!(SsQword::from_raw(0).with_insn_len(16), None);
    assert_eq!(
        SsQword::from_raw(1 << 56)
            .with_nmi(true)
            .with_swevent(false)
            .raw(),
        (1 << 56) | (1 << 18)
    );
}

#[test]
fn event_type_numbers() {
    for (raw, expected) in [
        (0, Ok(EventType::ExternalInterrupt)),
        (1, Err(UnknownEventType(1))),
        (2, Ok(EventType::Nmi)),
        (3, Ok(EventType::HardwareException)),
        (4, Ok(EventType::SoftwareInterrupt)),
        (5, Ok(EventType::PrivilegedSoftwareException)),
        (6, Ok(EventType::SoftwareException)),
        (7, Ok(EventType::Other)),
        (8, Err(UnknownEventType(8))),
        (15, Err(UnknownEventType(15))),
    ] {
        assert_eq!(EventType::try_from(raw), expected);
        if let Ok(event_type) = expected {
            assert_eq!(event_type as u8, raw);
        }
    }
}

#[test]
fn every_exception_vector() {
    for vector in 0..32u8 {
        let decoded = decode(&state(3, vector, 0x1234, 0));
        if vector == 2 {
            assert_eq!(
                decoded,
                Err(DecodeError::VectorMismatch {
                    event_type: EventType::HardwareException,
                    vector: 2
                })
            );
        } else {
            assert_eq!(
                decoded,
                Ok(EventKind::Exception {
                    vector,
                    error_code: 0x1234
                })
            );
        }
    }
    // #PF with CR2 in event data: the decoder keeps the error code, the event the data.
    let mut frame = Frame {
        gprs: Gprs::default(),
        ret: state(3, 14, 0x2, 0xdead_beef_0000),
    };
    frame.ret.cs = CsQword::new(gdt::USER_CS64, StackLevel::SL0, false);
    let event = frame.event(1, 7).unwrap();
    assert_eq!(
        event.kind,
        EventKind::Exception {
            vector: 14,
            error_code: 2
        }
    );
    assert_eq!(
        (event.cpu, event.owner, event.event_data),
        (1, 7, 0xdead_beef_0000)
    );
    assert_eq!((event.cs, event.ss, event.from_ring), (0xe033, 0xe010, 3));
    assert_eq!(
        (event.rip, event.rflags, event.rsp),
        (0xffff_8000_0012_3456, 0x202, 0xffff_8000_0010_7f00)
    );
}

#[test]
fn every_interrupt_vector() {
    for vector in 0..=255u8 {
        let decoded = decode(&state(0, vector, 0, 0));
        if vector >= 32 {
            assert_eq!(decoded, Ok(EventKind::Interrupt { vector }));
        } else {
            assert_eq!(
                decoded,
                Err(DecodeError::VectorMismatch {
                    event_type: EventType::ExternalInterrupt,
                    vector
                })
            );
        }
        assert_eq!(
            decode(&state(4, vector, 0, 0)),
            Ok(EventKind::SoftwareInterrupt { vector })
        );
    }
}

#[test]
fn nmi_and_software_exceptions_and_other() {
    assert_eq!(
        decode(&state(2, 2, 0, 0x8005)),
        Ok(EventKind::Nmi { sources: 0x8005 })
    );
    assert_eq!(
        decode(&state(2, 3, 0, 0)),
        Err(DecodeError::VectorMismatch {
            event_type: EventType::Nmi,
            vector: 3
        })
    );
    assert_eq!(
        decode(&state(5, 1, 0, 0)),
        Ok(EventKind::PrivilegedSoftwareException)
    );
    assert_eq!(
        decode(&state(5, 3, 0, 0)),
        Err(DecodeError::VectorMismatch {
            event_type: EventType::PrivilegedSoftwareException,
            vector: 3
        })
    );
    assert_eq!(
        decode(&state(6, 3, 0, 0)),
        Ok(EventKind::SoftwareException { vector: 3 })
    );
    assert_eq!(
        decode(&state(6, 4, 0, 0)),
        Ok(EventKind::SoftwareException { vector: 4 })
    );
    assert_eq!(
        decode(&state(6, 5, 0, 0)),
        Err(DecodeError::VectorMismatch {
            event_type: EventType::SoftwareException,
            vector: 5
        })
    );
    assert_eq!(decode(&state(7, 1, 0, 0)), Ok(EventKind::Syscall));
    assert_eq!(decode(&state(7, 2, 0, 0)), Ok(EventKind::Sysenter));
    for vector in [0u8, 3, 0x80] {
        assert_eq!(
            decode(&state(7, vector, 0, 0)),
            Err(DecodeError::VectorMismatch {
                event_type: EventType::Other,
                vector
            })
        );
    }
    assert_eq!(
        decode(&state(1, 2, 0, 0)),
        Err(DecodeError::UnknownType(UnknownEventType(1)))
    );
    assert_eq!(
        decode(&state(9, 2, 0, 0)),
        Err(DecodeError::UnknownType(UnknownEventType(9)))
    );
}

#[test]
fn decoded_kind_round_trips_type_and_vector() {
    for event_type in 0..8u8 {
        for vector in 0..=255u8 {
            if let Ok(kind) = decode(&state(event_type, vector, 0, 0)) {
                assert_eq!((kind.fred_type(), kind.vector()), (event_type, vector));
            }
        }
    }
}

#[test]
fn idt_table() {
    assert_eq!(idt_event_type(0), EventType::HardwareException);
    assert_eq!(idt_event_type(1), EventType::HardwareException);
    assert_eq!(idt_event_type(2), EventType::Nmi);
    assert_eq!(idt_event_type(3), EventType::SoftwareException);
    assert_eq!(idt_event_type(4), EventType::SoftwareException);
    assert_eq!(idt_event_type(8), EventType::HardwareException);
    assert_eq!(idt_event_type(14), EventType::HardwareException);
    assert_eq!(idt_event_type(31), EventType::HardwareException);
    for vector in 32..=255u8 {
        assert_eq!(idt_event_type(vector), EventType::ExternalInterrupt);
    }
    // Whatever the IDT stubs write must decode.
    for vector in 0..=255u8 {
        let ret = state(idt_event_type(vector) as u8, vector, 0, 0);
        assert!(decode(&ret).is_ok(), "vector {vector}");
    }
    let with_code: Vec<u8> = (0..32).filter(|&v| idt_pushes_error_code(v)).collect();
    assert_eq!(with_code, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
}

#[test]
fn fills_a_dump() {
    let mut frame = Frame {
        gprs: Gprs {
            rax: 0xa,
            r15: 0xf,
            rdi: 0xd1,
            ..Gprs::default()
        },
        ret: state(3, 14, 2, 0xdead),
    };
    frame.ret.ss = frame.ret.ss.with_nested(true);
    let mut dump = RegisterDump::default();
    frame.fill_dump(&mut dump);
    assert_eq!(
        (
            dump.event_type,
            dump.vector,
            dump.error_code,
            dump.event_data
        ),
        (3, 14, 2, 0xdead)
    );
    assert_eq!(
        dump.event,
        Some(EventKind::Exception {
            vector: 14,
            error_code: 2
        })
    );
    assert_eq!(
        (dump.cs, dump.ss, dump.rip, dump.rflags),
        (0xe008, 0xe010, 0xffff_8000_0012_3456, 0x202)
    );
    assert_eq!(
        (dump.gprs.rax, dump.gprs.r15, dump.gprs.rdi),
        (0xa, 0xf, 0xd1)
    );
    frame.ret = state(1, 2, 0, 0);
    frame.fill_dump(&mut dump);
    assert_eq!((dump.event, dump.event_type, dump.vector), (None, 1, 2));
}

#[test]
fn decode_error_display() {
    let error = DecodeError::VectorMismatch {
        event_type: EventType::ExternalInterrupt,
        vector: 14,
    };
    assert_eq!(
        error.to_string(),
        "frame: vector 14 is impossible for event type 0 (external interrupt)"
    );
    assert_eq!(
        DecodeError::UnknownType(UnknownEventType(1)).to_string(),
        "frame: event type 1 is reserved"
    );
}
