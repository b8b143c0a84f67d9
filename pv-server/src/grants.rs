//! `grant_table_op` for a v1-only grant table (issue 16 point 7, pv64-abi.md §4.9):
//! `setup_table` hands the guest its grant frames (hypervisor frames shared with it, made on
//! first use by the nucleus), `query_size` says how many there are and may be,
//! `set_version`/`get_version` answer as Xen does when the table may only be v1. Mapping and
//! copying grants needs a second domain and is `-ENOSYS`.

use heapless::Vec;
use xen_abi::grant::{
    GnttabGetVersion, GnttabOpCmd, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, status,
};
use xen_abi::layout::DOMID_SELF;
use xen_abi::{Errno, Mfn};

use crate::guest_hypercalls::{GuestMemory, read, write};

/// Most grant frames a domain may have (`max_nr_frames`).
pub const MAX_FRAMES: usize = ipc::domain::MAX_SHARED_FRAMES;

/// Makes a new grant frame for the domain.
pub trait FrameSource {
    fn share_frame(&mut self) -> Result<Mfn, Errno>;
}

/// One domain's grant table.
#[derive(Clone, Debug, Default)]
pub struct GrantTable {
    domain: u16,
    frames: Vec<Mfn, MAX_FRAMES>,
}

impl GrantTable {
    pub const fn new(domain: u16) -> Self {
        Self {
            domain,
            frames: Vec::new(),
        }
    }

    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    fn ours(&self, dom: u16) -> bool {
        dom == DOMID_SELF || dom == self.domain
    }

    /// `grant_table_op(cmd, uop, count)`.
    pub fn op(
        &mut self,
        cmd: u64,
        uop: u64,
        count: u64,
        memory: &mut impl GuestMemory,
        source: &mut impl FrameSource,
    ) -> Result<u64, Errno> {
        let Some(cmd) = GnttabOpCmd::from_raw(cmd) else {
            return Err(Errno::Enosys);
        };
        match cmd {
            GnttabOpCmd::SetupTable
            | GnttabOpCmd::QuerySize
            | GnttabOpCmd::SetVersion
            | GnttabOpCmd::GetVersion
                if count != 1 =>
            {
                Err(Errno::Einval)
            }
            GnttabOpCmd::SetupTable => self.setup_table(uop, memory, source),
            GnttabOpCmd::QuerySize => {
                let mut bytes = [0; GnttabQuerySize::SIZE];
                read(memory, uop, &mut bytes)?;
                let mut query = GnttabQuerySize::from_bytes(&bytes);
                if self.ours(query.dom) {
                    query.nr_frames = self.frames.len() as u32;
                    query.max_nr_frames = MAX_FRAMES as u32;
                    query.status = status::OKAY;
                } else {
                    query.status = status::BAD_DOMAIN;
                }
                write(memory, uop, &query.to_bytes())?;
                Ok(0)
            }
            GnttabOpCmd::SetVersion => {
                let mut bytes = [0; GnttabSetVersion::SIZE];
                read(memory, uop, &mut bytes)?;
                let asked = GnttabSetVersion::from_bytes(&bytes).version;
                // The version in force is always written back.
                write(memory, uop, &GnttabSetVersion { version: 1 }.to_bytes())?;
                match asked {
                    1 => Ok(0),
                    // Xen with max_grant_version 1: "as before set_version existed".
                    2 => Err(Errno::Enosys),
                    _ => Err(Errno::Einval),
                }
            }
            GnttabOpCmd::GetVersion => {
                let mut bytes = [0; GnttabGetVersion::SIZE];
                read(memory, uop, &mut bytes)?;
                let mut get = GnttabGetVersion::from_bytes(&bytes);
                if !self.ours(get.dom) {
                    return Err(Errno::Esrch);
                }
                get.version = 1;
                write(memory, uop, &get.to_bytes())?;
                Ok(0)
            }
            _ => Err(Errno::Enosys),
        }
    }

    fn setup_table(
        &mut self,
        uop: u64,
        memory: &mut impl GuestMemory,
        source: &mut impl FrameSource,
    ) -> Result<u64, Errno> {
        let mut bytes = [0; GnttabSetupTable::SIZE];
        read(memory, uop, &mut bytes)?;
        let mut setup = GnttabSetupTable::from_bytes(&bytes);
        setup.status = if !self.ours(setup.dom) {
            status::BAD_DOMAIN
        } else if setup.nr_frames as usize > MAX_FRAMES {
            status::GENERAL_ERROR
        } else {
            self.fill(setup.nr_frames as usize, setup.frame_list, memory, source)
        };
        write(memory, uop, &setup.to_bytes())?;
        Ok(0)
    }

    /// Grows the table to `wanted` frames and writes their MFNs to `list`; the status.
    fn fill(
        &mut self,
        wanted: usize,
        list: u64,
        memory: &mut impl GuestMemory,
        source: &mut impl FrameSource,
    ) -> i16 {
        while self.frames.len() < wanted {
            match source.share_frame() {
                Ok(mfn) => {
                    let _ = self.frames.push(mfn);
                }
                Err(_) => return status::GENERAL_ERROR,
            }
        }
        let mut result = status::OKAY;
        for (i, mfn) in self.frames[..wanted].iter().enumerate() {
            let at = list.wrapping_add(8 * i as u64);
            if write(memory, at, &mfn.0.to_le_bytes()).is_err() {
                result = status::BAD_VIRT_ADDR;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_hypercalls::tests::Fake;

    struct Frames(u64);

    impl FrameSource for Frames {
        fn share_frame(&mut self) -> Result<Mfn, Errno> {
            self.0 += 1;
            if self.0 > 3 {
                return Err(Errno::Enomem);
            }
            Ok(Mfn(0x800 + self.0))
        }
    }

    const UOP: u64 = 0x5000;
    const LIST: u64 = 0x5100;

    fn setup(
        table: &mut GrantTable,
        mem: &mut Fake,
        src: &mut Frames,
        dom: u16,
        nr: u32,
        list: u64,
    ) -> (Result<u64, Errno>, GnttabSetupTable) {
        let arg = GnttabSetupTable {
            dom,
            nr_frames: nr,
            frame_list: list,
            ..Default::default()
        };
        mem.put(UOP, &arg.to_bytes());
        let result = table.op(2, UOP, 1, mem, src);
        (
            result,
            GnttabSetupTable::from_bytes(&mem.get(UOP, 24).try_into().unwrap()),
        )
    }

    #[test]
    fn setup_table_hands_out_shared_frames() {
        let (mut table, mut mem, mut src) =
            (GrantTable::new(2), Fake::with_pages(&[UOP]), Frames(0));
        let (result, out) = setup(&mut table, &mut mem, &mut src, DOMID_SELF, 2, LIST);
        assert_eq!((result, out.status), (Ok(0), status::OKAY));
        assert_eq!(
            mem.get(LIST, 16),
            [0x801u64.to_le_bytes(), 0x802u64.to_le_bytes()].concat()
        );
        // The same frames again, one more on growth.
        let (_, out) = setup(&mut table, &mut mem, &mut src, 2, 3, LIST);
        assert_eq!(out.status, status::OKAY);
        assert_eq!(table.frames(), [Mfn(0x801), Mfn(0x802), Mfn(0x803)]);
        let (_, out) = setup(&mut table, &mut mem, &mut src, 9, 1, LIST);
        assert_eq!(out.status, status::BAD_DOMAIN);
        let (_, out) = setup(&mut table, &mut mem, &mut src, DOMID_SELF, 5, LIST);
        assert_eq!(out.status, status::GENERAL_ERROR);
        for bad in [0xffff_8000_0000_0000, 0x8000_0000_0000_0000, 0x9000] {
            let (result, out) = setup(&mut table, &mut mem, &mut src, DOMID_SELF, 1, bad);
            assert_eq!(
                (result, out.status),
                (Ok(0), status::BAD_VIRT_ADDR),
                "{bad:#x}"
            );
        }
        assert_eq!(table.op(2, UOP, 2, &mut mem, &mut src), Err(Errno::Einval));
        assert_eq!(
            table.op(2, 0xffff_8000_0000_1000, 1, &mut mem, &mut src),
            Err(Errno::Efault)
        );
    }

    #[test]
    fn query_size_and_versions() {
        let (mut table, mut mem, mut src) =
            (GrantTable::new(2), Fake::with_pages(&[UOP]), Frames(0));
        let _ = setup(&mut table, &mut mem, &mut src, DOMID_SELF, 1, LIST);
        mem.put(
            UOP,
            &GnttabQuerySize {
                dom: DOMID_SELF,
                ..Default::default()
            }
            .to_bytes(),
        );
        assert_eq!(table.op(6, UOP, 1, &mut mem, &mut src), Ok(0));
        let q = GnttabQuerySize::from_bytes(&mem.get(UOP, 16).try_into().unwrap());
        assert_eq!((q.nr_frames, q.max_nr_frames, q.status), (1, 4, 0));
        for (asked, answer) in [(1, Ok(0)), (2, Err(Errno::Enosys)), (3, Err(Errno::Einval))] {
            mem.put(UOP, &GnttabSetVersion { version: asked }.to_bytes());
            assert_eq!(table.op(8, UOP, 1, &mut mem, &mut src), answer);
            assert_eq!(mem.get(UOP, 4), 1u32.to_le_bytes());
        }
        mem.put(
            UOP,
            &GnttabGetVersion {
                dom: DOMID_SELF,
                ..Default::default()
            }
            .to_bytes(),
        );
        assert_eq!(table.op(10, UOP, 1, &mut mem, &mut src), Ok(0));
        assert_eq!(mem.get(UOP + 4, 4), 1u32.to_le_bytes());
        assert_eq!(
            table.op(0, UOP, 1, &mut mem, &mut src),
            Err(Errno::Enosys),
            "map_grant_ref"
        );
    }
}
