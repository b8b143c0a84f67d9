use super::*;

#[test]
fn cpuid_vendor_and_max_leaf() {
    let leaf0 = cpuid(0, 0);
    assert!(leaf0.eax >= 1, "max basic leaf {}", leaf0.eax);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    // Cross-check against the compiler's intrinsic, which has its own rbx handling.
    let expected = core::arch::x86_64::__cpuid_count(0, 0);
    assert_eq!(
        (leaf0.ebx, leaf0.ecx, leaf0.edx),
        (expected.ebx, expected.ecx, expected.edx)
    );
    assert!(vendor.iter().all(u8::is_ascii_graphic), "vendor {vendor:?}");
}

#[test]
fn cpuid_subleaf_reaches_ecx() {
    // Leaf 7 sub-leaf 0 and 1 differ on any CPU that reports FRED/LKGS; at minimum the call
    // must match the intrinsic for both.
    for subleaf in [0, 1] {
        let ours = cpuid(7, subleaf);
        let theirs = core::arch::x86_64::__cpuid_count(7, subleaf);
        assert_eq!(
            [ours.eax, ours.ebx, ours.ecx, ours.edx],
            [theirs.eax, theirs.ebx, theirs.ecx, theirs.edx]
        );
    }
}

fn current(read: fn() -> u16) -> Selector {
    Selector::from_raw(read())
}

fn cs() -> u16 {
    let value: u16;
    // SAFETY: reading a segment register is unprivileged and has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

fn ss() -> u16 {
    let value: u16;
    // SAFETY: as for `cs`.
    unsafe { asm!("mov {:x}, ss", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

fn ds() -> u16 {
    let value: u16;
    // SAFETY: as for `cs`.
    unsafe { asm!("mov {:x}, ds", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

#[test]
fn segment_loads_work_at_ring3_with_current_selectors() {
    // Reloading the selectors the host process already runs with is legal at CPL 3, so the
    // far-return trick and the moves execute for real here.
    let (cs_before, ss_before, ds_before) = (current(cs), current(ss), current(ds));
    assert_eq!(cs_before.rpl(), 3);
    // SAFETY: same code segment, same privilege: execution continues after the retfq.
    unsafe { reload_cs(cs_before) };
    // SAFETY: the stack segment the process already uses.
    unsafe { load_ss(ss_before) };
    // SAFETY: the data selector the process already uses (null or a flat data segment).
    unsafe { load_ds_es(ds_before) };
    assert_eq!(
        (current(cs), current(ss), current(ds)),
        (cs_before, ss_before, ds_before)
    );
}

#[test]
fn rdtsc_advances() {
    let first = rdtsc();
    let second = rdtsc();
    assert!(second >= first, "{second} < {first}");
    assert_ne!(first, 0);
}
