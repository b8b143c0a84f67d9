//! guest-pagetables (issue 15 point 6): maps, remaps and unmaps one page of its own with
//! `update_va_mapping` and `mmu_update`, reading back through the mapping and through the
//! (read-only) L1 table each time, pins/unpins a spare table with `mmuext_op`, and reads and
//! moves its M2P entry (`MMU_MACHPHYS_UPDATE`). Prints
//! `pagetables: N checks passed` and powers off, or names the first check that failed and
//! shuts down with `crash`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::tables::{
        PAGE_RW, l1_entry_of, m2p, mmu_update, mmuext_op, p2m, read_entry, region_end,
        update_va_mapping,
    };
    use guest_rt::{Boot, guest_main, println, shutdown, xen_guest_notes};
    use xen_abi::mm::{MmuUpdate, MmuextOp};
    use xen_abi::sched::ShutdownReason;

    xen_guest_notes!("fredvisor-pagetables");

    struct Checks(u32);

    impl Checks {
        fn check(&mut self, what: &str, got: u64, want: u64) {
            if got != want {
                println!("pagetables: FAILED {what}: got {got:#x}, want {want:#x}");
                shutdown(ShutdownReason::Crash);
            }
            self.0 += 1;
        }
    }

    fn read(va: u64) -> u64 {
        // SAFETY: `va` is mapped readable when called (the checks just mapped it).
        unsafe { (va as *const u64).read_volatile() }
    }

    fn write(va: u64, value: u64) {
        // SAFETY: `va` is mapped writable when called.
        unsafe { (va as *mut u64).write_volatile(value) }
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let p2m = p2m(info);
        let nr = info.nr_pages as usize;
        // Two frames past the mapped region: owned, unmapped, zero.
        let (a, b) = (p2m[nr - 1], p2m[nr - 2]);
        let va = region_end(info) - 4096;
        let Some((l1, entry_ma)) = l1_entry_of(info, va) else {
            println!("pagetables: FAILED no L1 behind {va:#x}");
            shutdown(ShutdownReason::Crash)
        };
        let index = ((va >> 12) & 511) as usize;
        println!("pagetables: page {va:#x}, frames {a:#x} {b:#x}, L1 {l1:#x}");
        let mut c = Checks(0);

        // Map frame A with update_va_mapping, write through it.
        c.check("map A", update_va_mapping(va, a << 12 | PAGE_RW), 0);
        let entry = read_entry(info, l1, index).unwrap_or(0);
        c.check("L1 names A", entry >> 12 & 0xff_ffff_ffff, a);
        c.check("L1 not global", entry & 0x100, 0);
        c.check("A starts zero", read(va), 0);
        write(va, 0x5a0);
        c.check("A holds what was written", read(va), 0x5a0);

        // Remap to B: a fresh zero frame behind the same VA.
        c.check("remap to B", update_va_mapping(va, b << 12 | PAGE_RW), 0);
        c.check("B starts zero", read(va), 0);
        write(va, 0x6b0);

        // Back to A with mmu_update on the L1 entry's machine address.
        let (rax, done) = mmu_update(&[MmuUpdate {
            ptr: entry_ma,
            val: a << 12 | PAGE_RW,
        }]);
        c.check("mmu_update to A", rax, 0);
        c.check("mmu_update done", u64::from(done), 1);
        c.check("A kept its value", read(va), 0x5a0);

        // Unmap with mmu_update, then with update_va_mapping (already empty: still fine).
        let (rax, _) = mmu_update(&[MmuUpdate {
            ptr: entry_ma,
            val: 0,
        }]);
        c.check("unmap", rax, 0);
        c.check(
            "L1 entry empty",
            read_entry(info, l1, index).unwrap_or(1),
            0,
        );
        c.check("unmap again", update_va_mapping(va, 0), 0);

        // Map B read-only: the contents are B's.
        c.check("map B read-only", update_va_mapping(va, b << 12 | 0x25), 0);
        c.check("B kept its value", read(va), 0x6b0);
        c.check("unmap B", update_va_mapping(va, 0), 0);

        // Pin A as an L1 table (its one word is a non-present entry without an address, so
        // it validates), then it cannot be mapped writable.
        let pin = MmuextOp {
            cmd: 0,
            arg1: a,
            ..Default::default()
        };
        c.check("pin A as L1", mmuext_op(&[pin]), 0);
        c.check(
            "pinned table not writable",
            update_va_mapping(va, a << 12 | PAGE_RW),
            (-16i64) as u64,
        );
        let unpin = MmuextOp {
            cmd: 4,
            arg1: a,
            ..Default::default()
        };
        c.check("unpin A", mmuext_op(&[unpin]), 0);
        c.check(
            "A writable again",
            update_va_mapping(va, a << 12 | PAGE_RW),
            0,
        );
        c.check("A still holds its value", read(va), 0x5a0);
        c.check("unmap A", update_va_mapping(va, 0), 0);

        // Flushes are accepted.
        let flush = MmuextOp {
            cmd: 6,
            ..Default::default()
        };
        c.check("TLB_FLUSH_LOCAL", mmuext_op(&[flush]), 0);

        // The M2P (read at Xen's address): A is pfn nr-1; MMU_MACHPHYS_UPDATE moves it and
        // back, and refuses a frame that is not ours (shared_info, the nucleus at 1 MiB).
        let machphys = |mfn: u64, pfn: u64| {
            mmu_update(&[MmuUpdate {
                ptr: mfn << 12 | 1,
                val: pfn,
            }])
            .0
        };
        let a_pfn = nr as u64 - 1;
        c.check("M2P names A's pfn", m2p(a), a_pfn);
        c.check("MACHPHYS_UPDATE A", machphys(a, 0x1234), 0);
        c.check("M2P follows", m2p(a), 0x1234);
        c.check("MACHPHYS_UPDATE A back", machphys(a, a_pfn), 0);
        c.check("M2P back", m2p(a), a_pfn);
        let eperm = (-1i64) as u64;
        let shared_info = info.shared_info >> 12;
        c.check(
            "MACHPHYS_UPDATE shared_info",
            machphys(shared_info, 0),
            eperm,
        );
        c.check("M2P shared_info none", m2p(shared_info), !0);
        c.check("MACHPHYS_UPDATE not ours", machphys(0x100, 0), eperm);

        println!("pagetables: {} checks passed", c.0);
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
