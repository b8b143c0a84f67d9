//! guest-grants (issue 16 points 7 and 8): the v1 grant table with exact expected values:
//! `setup_table` gives one frame, which the guest maps read-write and writes a grant entry
//! into; `query_size` reports 1 of at most 4; `set_version` keeps v1 (2 is `-ENOSYS`, 3
//! `-EINVAL`, the version written back 1); too many frames, another domain and a bad frame
//! list get their status codes; mapping grants is not built (`-ENOSYS`).
//!
//! Prints `grants: N checks passed` and powers off; the first wrong value prints
//! `grants: WRONG …` and crashes.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use guest_rt::shared::Checks;
    use guest_rt::tables::{PAGE_RW, region_end, update_va_mapping};
    use guest_rt::{Boot, guest_main, hypercall, println, xen_guest_notes};
    use xen_abi::grant::{
        GnttabGetVersion, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GrantEntryV1, status,
    };
    use xen_abi::layout::DOMID_SELF;
    use xen_abi::{Errno, Hypercall};

    xen_guest_notes!("fredvisor-grants");

    fn gnttab<T>(cmd: u32, arg: &mut T, count: u64) -> u64 {
        // SAFETY: `arg` is ours, of the struct the command takes, and lives for the call.
        unsafe {
            hypercall(
                Hypercall::GrantTableOp,
                [u64::from(cmd), arg as *mut T as u64, count, 0, 0],
            )
        }
    }

    fn setup(dom: u16, nr_frames: u32, frame_list: u64) -> (u64, GnttabSetupTable) {
        let mut arg = GnttabSetupTable {
            dom,
            nr_frames,
            frame_list,
            ..Default::default()
        };
        (gnttab(2, &mut arg, 1), arg)
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        let mut c = Checks::new("grants");
        let mut frames = [0u64; 4];
        let (rc, out) = setup(DOMID_SELF, 1, frames.as_mut_ptr() as u64);
        c.eq("setup_table 1 frame", rc, 0);
        c.eq("setup_table status", out.status as u64, 0);
        c.yes("a frame number", frames[0] != 0);
        // The grant frame is the hypervisor's, shared with us read-write.
        let va = region_end(info) - 2 * 4096;
        c.eq(
            "map the grant frame",
            update_va_mapping(va, frames[0] << 12 | PAGE_RW),
            0,
        );
        let table = va as *mut GrantEntryV1;
        let entry = GrantEntryV1 {
            flags: 0,
            domid: 0,
            frame: 0x1234,
        };
        // SAFETY: the page at `va` is the grant frame just mapped read-write.
        let back = unsafe {
            c.yes(
                "fresh frame is zero",
                table.add(5).read_volatile() == GrantEntryV1::default(),
            );
            table.add(5).write_volatile(entry);
            table.add(5).read_volatile()
        };
        c.yes("grant entry written", back == entry);
        let mut again = [0u64; 4];
        let (_, out) = setup(DOMID_SELF, 1, again.as_mut_ptr() as u64);
        c.eq("setup_table again", out.status as u64, 0);
        c.eq("the same frame", again[0], frames[0]);

        let mut query = GnttabQuerySize {
            dom: DOMID_SELF,
            ..Default::default()
        };
        c.eq("query_size", gnttab(6, &mut query, 1), 0);
        c.eq("nr_frames", query.nr_frames.into(), 1);
        c.eq("max_nr_frames", query.max_nr_frames.into(), 4);
        c.eq("query status", query.status as u64, 0);
        let mut other = GnttabQuerySize {
            dom: 7,
            ..Default::default()
        };
        gnttab(6, &mut other, 1);
        c.eq(
            "query another domain",
            other.status as i64 as u64,
            status::BAD_DOMAIN as i64 as u64,
        );

        for (asked, answer) in [(1, 0), (2, Errno::Enosys.rax()), (3, Errno::Einval.rax())] {
            let mut version = GnttabSetVersion { version: asked };
            c.eq("set_version", gnttab(8, &mut version, 1), answer);
            c.eq("version in force", version.version.into(), 1);
        }
        let mut get = GnttabGetVersion {
            dom: DOMID_SELF,
            ..Default::default()
        };
        c.eq("get_version", gnttab(10, &mut get, 1), 0);
        c.eq("version", get.version.into(), 1);

        let (rc, out) = setup(DOMID_SELF, 5, frames.as_mut_ptr() as u64);
        c.eq("5 frames: answered", rc, 0);
        c.eq(
            "5 frames: general error",
            out.status as i64 as u64,
            status::GENERAL_ERROR as i64 as u64,
        );
        let (_, out) = setup(9, 1, frames.as_mut_ptr() as u64);
        c.eq(
            "another domain",
            out.status as i64 as u64,
            status::BAD_DOMAIN as i64 as u64,
        );
        let (_, out) = setup(DOMID_SELF, 1, 0xffff_8000_0000_0000);
        c.eq(
            "frame list in the hypervisor",
            out.status as i64 as u64,
            status::BAD_VIRT_ADDR as i64 as u64,
        );
        let mut arg = GnttabSetupTable::default();
        c.eq("count 2", gnttab(2, &mut arg, 2), Errno::Einval.rax());
        c.eq("map_grant_ref", gnttab(0, &mut arg, 1), Errno::Enosys.rax());
        println!("grants: one v1 frame, mapped and written");
        c.done()
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
