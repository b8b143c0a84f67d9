use super::*;
use crate::frame::{EventType, FredState, SsQword, decode};
use crate::gdt::USER_DS;

#[test]
fn syscall_ss_qword_is_what_fred_writes() {
    let fred = SsQword::new(USER_DS, EventType::Other, 1)
        .with_swevent(true)
        .with_64bit(true)
        .with_insn_len(2)
        .map(SsQword::raw);
    assert_eq!(fred, Some(SYSCALL_SS_QWORD));
    let ret = FredState {
        ss: SsQword::from_raw(SYSCALL_SS_QWORD),
        ..FredState::default()
    };
    assert_eq!(decode(&ret), Ok(ipc::EventKind::Syscall));
}

#[test]
fn a_compat_syscall_decodes_as_a_ud_from_ring_3() {
    let ret = FredState {
        ss: SsQword::from_raw(COMPAT_SYSCALL_SS_QWORD),
        cs: crate::frame::CsQword::from_raw(u64::from(crate::gdt::USER_CS32.raw())),
        ..FredState::default()
    };
    assert_eq!(
        decode(&ret),
        Ok(ipc::EventKind::Exception {
            vector: 6,
            error_code: 0
        })
    );
    assert!(!ret.ss.is_64bit());
}

#[test]
fn idt_stub_table_matches_the_decoder_table() {
    // The `.if` chain in `entry_stubs!` encodes these types; this is the same table.
    for vector in 0..=255u8 {
        let expected = match vector {
            2 => EventType::Nmi,
            3 | 4 => EventType::SoftwareException,
            0..32 => EventType::HardwareException,
            _ => EventType::ExternalInterrupt,
        };
        assert_eq!(
            crate::frame::idt_event_type(vector),
            expected,
            "vector {vector}"
        );
        let pushes = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
        assert_eq!(
            crate::frame::idt_pushes_error_code(vector),
            pushes,
            "vector {vector}"
        );
    }
}
