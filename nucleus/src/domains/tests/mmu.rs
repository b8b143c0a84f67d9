//! domain_mmu: the page-table rules (the nucleus' slots, ownership, no writable tables).
use super::*;

#[test]
fn a_validated_l4_gets_the_nucleus_slots_and_no_guest_entry_may_go_there() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let window = ram::nucleus_root_entry(0).raw();
    for slot in 256..272 {
        assert_eq!(word(f[0], slot), window, "slot {slot}");
        let ptr = (f[0].0 << 12) | (slot as u64 * 8);
        assert_ne!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr,
                    val: entry(f[9], P | RW | U)
                }
            ),
            Ok(0)
        );
        assert_eq!(word(f[0], slot), window, "slot {slot} changed");
    }
    assert_eq!(word(f[0], 255), 0);
    assert_eq!(word(f[0], 272), 0);
    // The guest's own slots it may use (a fresh L3 at slot 272).
    let ptr = (f[0].0 << 12) | (272 * 8);
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr,
                val: entry(f[9], P | RW | U)
            }
        ),
        Ok(0)
    );
}

#[test]
fn an_entry_may_map_only_frames_the_domain_owns_or_shares() {
    let mut t = booted();
    let (d, shared_info, f) = with_pinned_base(&mut t);
    let (_, _, other) = create(&mut t, 4);
    let slot = |i: u64| (f[3].0 << 12) | (i * 8);
    for target in [other[0], Mfn(NUCLEUS_FRAME)] {
        assert_ne!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr: slot(20),
                    val: entry(target, P | U)
                }
            ),
            Ok(0)
        );
        assert_eq!(word(f[3], 20), 0, "{target:?} mapped");
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(20),
                val: entry(shared_info, P | RW | U)
            }
        ),
        Ok(0)
    );
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(21),
                val: entry(f[10], P | RW | U)
            }
        ),
        Ok(0)
    );
    // A table's entry must name a table of that table's own domain.
    let (_, _, g) = with_pinned_base(&mut t);
    assert_ne!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: (f[2].0 << 12) | 8,
                val: entry(g[3], P | RW | U)
            }
        ),
        Ok(0)
    );
}

#[test]
fn a_page_table_is_never_mapped_writable() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let slot = |i: u64| (f[3].0 << 12) | (i * 8);
    for table in &f[..4] {
        assert_eq!(
            mmu(
                &mut t,
                d,
                MmuOp::Update {
                    ptr: slot(30),
                    val: entry(*table, P | RW | U)
                }
            ),
            errno(Errno::Ebusy)
        );
        assert_eq!(word(f[3], 30), 0, "{table:?} mapped writable");
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::Update {
                ptr: slot(30),
                val: entry(f[2], P | U)
            }
        ),
        Ok(0)
    );
    // A frame mapped writable cannot become a table either.
    let (e, _, g) = create(&mut t, 16);
    with_tables(&mut t, e, &g);
    put_entry(&mut t, e, g[3], 9, entry(g[2], P | RW | U));
    assert_ne!(
        mmu(
            &mut t,
            e,
            MmuOp::Pin {
                level: 4,
                mfn: g[0].0
            }
        ),
        Ok(0)
    );
    // All or nothing: no frame of the refused tree kept a table type.
    for table in &g[..4] {
        assert_eq!(
            memory::table().unwrap().info(*table).unwrap().type_count(),
            0
        );
    }
    assert_eq!(write(&mut t, e, g[3], 9 * 8, &[0; 8]), Ok(0));
}

#[test]
fn update_va_mapping_refuses_the_hypervisor_window_and_non_canonical_addresses() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    // The window's tables are present (as on bare metal): only the check keeps a guest
    // entry out of the nucleus' L1.
    let l1 = Mfn(ram::WINDOW_TABLES[2]);
    for va in [
        0xffff_8000_0000_0000,
        0xffff_87ff_ffff_f000,
        0x0000_8000_0000_0000,
    ] {
        let before = word(l1, ((va >> 12) & 511) as usize);
        assert_eq!(
            mmu(
                &mut t,
                d,
                MmuOp::UpdateVa {
                    va,
                    val: entry(f[9], P | RW | U)
                }
            ),
            errno(Errno::Einval),
            "{va:#x}"
        );
        assert_eq!(
            word(l1, ((va >> 12) & 511) as usize),
            before,
            "{va:#x}: the nucleus' L1 changed"
        );
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::UpdateVa {
                va: 0x5000,
                val: entry(f[9], P | RW | U)
            }
        ),
        Ok(0)
    );
    assert_eq!(word(f[3], 5) & 0x000f_ffff_ffff_f000, f[9].0 << 12);
}

#[test]
fn machphys_update_changes_only_the_domains_own_frames() {
    let mut t = booted();
    let (d, shared_info, f) = create(&mut t, 4);
    let (_, _, other) = create(&mut t, 4);
    for mfn in [shared_info, other[0], Mfn(NUCLEUS_FRAME)] {
        assert_eq!(
            mmu(&mut t, d, MmuOp::MachphysUpdate { mfn: mfn.0, pfn: 7 }),
            errno(Errno::Eperm)
        );
        assert_ne!(m2p::get(mfn), 7);
    }
    assert_eq!(
        mmu(
            &mut t,
            d,
            MmuOp::MachphysUpdate {
                mfn: f[0].0,
                pfn: 7
            }
        ),
        Ok(0)
    );
    assert_eq!(m2p::get(f[0]), 7);
}

#[test]
fn pins_unpins_and_baseptrs_name_only_the_domains_own_tables() {
    let mut t = booted();
    let (d, _, f) = with_pinned_base(&mut t);
    let (e, _, g) = with_pinned_base(&mut t);
    assert_ne!(mmu(&mut t, d, MmuOp::Unpin { mfn: g[0].0 }), Ok(0));
    assert_ne!(mmu(&mut t, d, MmuOp::NewBaseptr { mfn: g[0].0 }), Ok(0));
    assert_ne!(
        mmu(
            &mut t,
            d,
            MmuOp::Pin {
                level: 4,
                mfn: g[0].0
            }
        ),
        Ok(0)
    );
    assert_ne!(
        mmu(&mut t, d, MmuOp::NewBaseptr { mfn: NUCLEUS_FRAME }),
        Ok(0)
    );
    assert_eq!(registry::domain(d as u16).base, Some(f[0]));
    assert_eq!(registry::domain(e as u16).base, Some(g[0]));
    assert!(memory::table().unwrap().info(g[0]).unwrap().is_pinned());
}
