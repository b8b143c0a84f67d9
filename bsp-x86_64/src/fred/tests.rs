use super::*;

const BLOCK_BASE: u64 = 0xffff_8000_0010_0000;
const ENTRY_PAGE: u64 = 0xffff_ffff_8020_0000;

fn cpu(fred: bool, lkgs: bool) -> CpuFeatures {
    CpuFeatures {
        fred,
        lkgs,
        ..CpuFeatures::NONE
    }
}

#[test]
fn cpuid_bits() {
    assert_eq!(CpuFeatures::from_leaf7_1_eax(0), CpuFeatures::NONE);
    assert_eq!(CpuFeatures::from_leaf7_1_eax(1 << 17), cpu(true, false));
    assert_eq!(CpuFeatures::from_leaf7_1_eax(1 << 18), cpu(false, true));
    assert_eq!(
        CpuFeatures::from_leaf7_1_eax(0x001e_0000),
        CpuFeatures {
            fred: true,
            lkgs: true,
            wrmsrns: true,
            nmi_source: true
        }
    );
    assert_eq!(
        CpuFeatures::from_leaf7_1_eax(!(0xf << 17)),
        CpuFeatures::NONE,
        "bits other than 17..=20 mean nothing here"
    );
    let wrmsrns = CpuFeatures::from_leaf7_1_eax(1 << 19);
    assert!(wrmsrns.wrmsrns && !wrmsrns.fred && !wrmsrns.lkgs && !wrmsrns.nmi_source);
}

#[test]
fn decision_truth_table() {
    use FredMode::{Auto, Off, On};
    use Reason::*;
    // (mode, pv_shim, fred, lkgs) -> (enabled, reason, warned)
    let table = [
        (On, false, false, false, false, CpuLacksFred, true),
        (On, false, false, true, false, CpuLacksFred, true),
        (On, false, true, false, false, CpuLacksLkgs, true),
        (On, false, true, true, true, CpuHasFredAndLkgs, false),
        (On, true, false, false, false, PvShim, true),
        (On, true, false, true, false, PvShim, true),
        (On, true, true, false, false, PvShim, true),
        (On, true, true, true, false, PvShim, true),
        (Off, false, false, false, false, CommandLineOff, false),
        (Off, false, false, true, false, CommandLineOff, false),
        (Off, false, true, false, false, CommandLineOff, false),
        (Off, false, true, true, false, CommandLineOff, false),
        (Off, true, false, false, false, CommandLineOff, false),
        (Off, true, false, true, false, CommandLineOff, false),
        (Off, true, true, false, false, CommandLineOff, false),
        (Off, true, true, true, false, CommandLineOff, false),
        (Auto, false, false, false, false, CpuLacksFred, false),
        (Auto, false, false, true, false, CpuLacksFred, false),
        (Auto, false, true, false, false, CpuLacksLkgs, false),
        (Auto, false, true, true, true, CpuHasFredAndLkgs, false),
        (Auto, true, false, false, false, PvShim, false),
        (Auto, true, false, true, false, PvShim, false),
        (Auto, true, true, false, false, PvShim, false),
        (Auto, true, true, true, false, PvShim, false),
    ];
    for (mode, pv_shim, fred, lkgs, enabled, reason, warned) in table {
        let decision = decide(mode, pv_shim, cpu(fred, lkgs));
        let expected_warning = warned.then_some(OnRefused { reason });
        assert_eq!(
            decision,
            Decision {
                enabled,
                reason,
                warning: expected_warning
            },
            "{mode:?} pv_shim={pv_shim} fred={fred} lkgs={lkgs}"
        );
    }
}

#[test]
fn decision_lines() {
    let line = |mode, pv_shim, fred, lkgs| decide(mode, pv_shim, cpu(fred, lkgs)).to_string();
    assert_eq!(
        line(FredMode::Auto, false, true, true),
        "fred: enabled (cpu has FRED+LKGS)"
    );
    assert_eq!(
        line(FredMode::Off, false, true, true),
        "fred: disabled (fred=off)"
    );
    assert_eq!(
        line(FredMode::Auto, true, true, true),
        "fred: disabled (pv-shim)"
    );
    assert_eq!(
        line(FredMode::Auto, false, false, false),
        "fred: disabled (cpu lacks FRED)"
    );
    assert_eq!(
        line(FredMode::Auto, false, true, false),
        "fred: disabled (cpu lacks LKGS)"
    );
    let warning = decide(FredMode::On, false, CpuFeatures::NONE)
        .warning
        .unwrap();
    assert_eq!(
        warning.to_string(),
        "fred: warning: fred=on refused (cpu lacks FRED), staying on IDT delivery"
    );
    assert_eq!(FredMode::default(), FredMode::Auto);
}

#[test]
fn msr_addresses() {
    assert_eq!(FredRsp::<0>::ADDR, 0x1CC);
    assert_eq!(FredRsp::<1>::ADDR, 0x1CD);
    assert_eq!(FredRsp::<2>::ADDR, 0x1CE);
    assert_eq!(FredRsp::<3>::ADDR, 0x1CF);
    assert_eq!(FredStackLevels::ADDR, 0x1D0);
    assert_eq!(FredSsp::<1>::ADDR, 0x1D1);
    assert_eq!(FredSsp::<2>::ADDR, 0x1D2);
    assert_eq!(FredSsp::<3>::ADDR, 0x1D3);
    assert_eq!(FredConfig::ADDR, 0x1D4);
    assert_eq!(Pl0Ssp::ADDR, 0x6A4);
}

#[test]
fn stack_level_newtype() {
    assert_eq!(StackLevel::new(3), Some(StackLevel::SL3));
    assert_eq!(StackLevel::new(4), None);
    assert_eq!(StackLevel::SL2.get(), 2);
    assert_eq!(StackLevel::SL1.to_string(), "SL1");
}

#[test]
fn fred_config_values() {
    let config = FredConfig::new(ENTRY_PAGE, 1, StackLevel::SL0).unwrap();
    assert_eq!(config.raw(), 0xffff_ffff_8020_0040);
    assert_eq!(config.entry_ring3(), ENTRY_PAGE);
    assert_eq!(config.entry_ring0(), ENTRY_PAGE + 0x100);
    assert_eq!(config.redzone_bytes(), 64);
    assert_eq!(config.csl(), StackLevel::SL0);
    let max = FredConfig::new(ENTRY_PAGE, 7, StackLevel::SL3).unwrap();
    assert_eq!(max.raw(), ENTRY_PAGE | 0x1c0 | 0x600);
    assert_eq!(max.redzone_bytes(), 448);
    assert_eq!(max.int_stack_level(), StackLevel::SL3);
    assert_eq!(max.raw() & FredConfig::RESERVED_MASK, 0);
    assert_eq!(
        FredConfig::new(ENTRY_PAGE + 0x100, 0, StackLevel::SL0),
        Err(FredMsrError::Misaligned {
            value: ENTRY_PAGE + 0x100,
            align: 4096
        })
    );
    assert_eq!(
        FredConfig::new(0x0000_8000_0000_0000, 0, StackLevel::SL0),
        Err(FredMsrError::NotCanonical {
            value: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(
        FredConfig::new(ENTRY_PAGE, 8, StackLevel::SL0),
        Err(FredMsrError::RedZoneTooLarge { lines: 8 })
    );
    for bit in [2, 4, 5, 11] {
        let raw = ENTRY_PAGE | 1 << bit;
        assert_eq!(
            FredConfig::try_from_raw(raw),
            Err(FredMsrError::ReservedBits {
                value: raw,
                mask: 0x834
            })
        );
    }
    assert_eq!(
        FredConfig::try_from_raw(ENTRY_PAGE | 0x3 | 0x8).map(FredConfig::csl),
        Ok(StackLevel::SL3)
    );
}

#[test]
fn rsp_and_ssp_checks() {
    assert_eq!(
        FredRsp::<0>::new(0xffff_8000_0010_7fc0).map(FredRsp::top),
        Ok(0xffff_8000_0010_7fc0)
    );
    assert_eq!(
        FredRsp::<0>::new(0xffff_8000_0010_7fc8),
        Err(FredMsrError::Misaligned {
            value: 0xffff_8000_0010_7fc8,
            align: 64
        })
    );
    assert_eq!(
        FredRsp::<3>::new(0x8000_0000_0000_0000),
        Err(FredMsrError::NotCanonical {
            value: 0x8000_0000_0000_0000
        })
    );
    assert!(FredSsp::<1>::new(0xffff_8000_0010_0008).is_ok());
    assert_eq!(
        FredSsp::<2>::new(0xffff_8000_0010_0004),
        Err(FredMsrError::Misaligned {
            value: 0xffff_8000_0010_0004,
            align: 8
        })
    );
    assert_eq!(
        Pl0Ssp::new(0xffff_8000_0010_5ffc),
        Err(FredMsrError::Misaligned {
            value: 0xffff_8000_0010_5ffc,
            align: 8
        })
    );
}

#[test]
fn stack_levels() {
    let levels = FredStackLevels::nucleus();
    assert_eq!(levels.raw(), 0x3_0000, "#DF (vector 8) at bits 17:16 = 3");
    for vector in 0..32 {
        let expected = if vector == 8 {
            StackLevel::SL3
        } else {
            StackLevel::SL0
        };
        assert_eq!(levels.level(vector), Some(expected));
    }
    assert_eq!(levels.level(32), None);
    // Linux's choice (fred-facts.md §7): #DB=1, NMI=2, #MC=2, #DF=3.
    let linux = FredStackLevels::all_sl0()
        .with(1, StackLevel::SL1)
        .and_then(|l| l.with(2, StackLevel::SL2))
        .and_then(|l| l.with(18, StackLevel::SL2))
        .and_then(|l| l.with(8, StackLevel::SL3))
        .unwrap();
    assert_eq!(linux.raw(), (1 << 2) | (2 << 4) | (3 << 16) | (2 << 36));
    assert_eq!(linux.with(31, StackLevel::SL1).unwrap().raw() >> 62, 1);
    assert_eq!(
        linux.with(32, StackLevel::SL1),
        Err(FredMsrError::NotAnExceptionVector { vector: 32 })
    );
    assert_eq!(
        linux.with(8, StackLevel::SL0).unwrap().level(8),
        Some(StackLevel::SL0)
    );
}

#[test]
fn plan_values() {
    let block = StackBlock::new(BLOCK_BASE).unwrap();
    let plan = FredMsrPlan::new(&block, ENTRY_PAGE, false).unwrap();
    let writes: Vec<(u32, u64)> = plan
        .writes()
        .iter()
        .map(|w| (w.addr(), w.value()))
        .collect();
    assert_eq!(
        writes,
        [
            (0xC000_0081, 0xe023_e008_0000_0000),
            (0x1D4, 0xffff_ffff_8020_0000),
            (0x1CC, 0xffff_8000_0010_7fc0),
            (0x1CD, 0xffff_8000_0010_6000),
            (0x1CE, 0xffff_8000_0010_1000),
            (0x1CF, 0xffff_8000_0010_5000),
            (0x1D0, 0x0000_0000_0003_0000),
        ]
    );
    // RSP1/RSP2: the first push of a 64-byte frame lands in a guard page.
    for rsp in [plan.value_of(0x1CD).unwrap(), plan.value_of(0x1CE).unwrap()] {
        assert!(block.guard_pages().contains(&((rsp - 64) & !0xfff)));
    }
    // RSP0 and RSP3 push into mapped pages.
    for rsp in [plan.value_of(0x1CC).unwrap(), plan.value_of(0x1CF).unwrap()] {
        assert!(
            block
                .mapped_pages()
                .any(|p| p.address == (rsp - 64) & !0xfff)
        );
    }
    assert_eq!(plan.value_of(0x6A4), None);
}

#[test]
fn plan_with_shadow_stacks() {
    let block = StackBlock::new(BLOCK_BASE).unwrap();
    let plan = FredMsrPlan::new(&block, ENTRY_PAGE, true).unwrap();
    let tail: Vec<(u32, u64)> = plan.writes()[7..]
        .iter()
        .map(|w| (w.addr(), w.value()))
        .collect();
    assert_eq!(
        tail,
        [
            (0x1D1, 0xffff_8000_0010_0000),
            (0x1D2, 0xffff_8000_0010_0000),
            (0x1D3, 0xffff_8000_0010_1000),
            (0x6A4, 0xffff_8000_0010_6000),
        ]
    );
    assert_eq!(
        FredMsrPlan::new(&block, ENTRY_PAGE + 8, false),
        Err(FredMsrError::Misaligned {
            value: ENTRY_PAGE + 8,
            align: 4096
        })
    );
}

#[test]
fn error_display() {
    assert_eq!(
        FredMsrError::Misaligned {
            value: 0x1008,
            align: 64
        }
        .to_string(),
        "0x1008 is not 64-byte aligned"
    );
    assert_eq!(
        FredMsrError::ReservedBits {
            value: 0x804,
            mask: 0x834
        }
        .to_string(),
        "0x804 sets reserved bits 0x804"
    );
}
