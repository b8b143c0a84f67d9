//! `start_info`: what the domain builder hands a PV guest in `rsi` (pv64-abi.md §2.2).

use bitflags::bitflags;

use crate::wire;

/// The magic a 64-bit PV guest finds at the start of its start_info.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";
/// Bytes of `cmd_line`, including the NUL that ends it.
pub const MAX_GUEST_CMDLINE: usize = 1024;

bitflags! {
    /// `start_info.flags` (SIF_*).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SifFlags: u32 {
        /// The domain is privileged.
        const PRIVILEGED = 1 << 0;
        /// The domain is the initial (hardware) domain.
        const INITDOMAIN = 1 << 1;
        /// `mod_start` is a multiboot module list.
        const MULTIBOOT_MOD = 1 << 2;
        /// `mod_start` is a pfn, not a VA.
        const MOD_START_PFN = 1 << 3;
        /// The p2m list is virtually mapped for the tools.
        const VIRT_P2M_4TOOLS = 1 << 4;
    }
}

/// The domU half of the `console` union (`console.domU`); a dom0 sees `{u32 info_off,
/// u32 info_size}` at the same place, which fredvisor never builds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomUConsole {
    /// Machine frame of the console ring.
    pub mfn: u64,
    /// Event channel of the console ring.
    pub evtchn: u32,
    pub _pad: u32,
}

/// `struct start_info` (x86-64, 1168 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`], NUL padded.
    pub magic: [u8; 32],
    /// Pages the domain owns.
    pub nr_pages: u64,
    /// **Machine** address of the shared_info frame.
    pub shared_info: u64,
    /// [`SifFlags`] bits.
    pub flags: u32,
    pub _pad0: u32,
    /// Machine frame of the xenstore ring (0 if none).
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub _pad1: u32,
    pub console: DomUConsole,
    /// **VA** of the bootstrap L4.
    pub pt_base: u64,
    /// Frames of bootstrap page tables.
    pub nr_pt_frames: u64,
    /// **VA** of the p2m list (`mfn_list[nr_pages]`).
    pub mfn_list: u64,
    /// VA of the initrd, or its pfn with [`SifFlags::MOD_START_PFN`].
    pub mod_start: u64,
    /// Bytes of the initrd.
    pub mod_len: u64,
    /// NUL-terminated command line.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// With INIT_P2M only.
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
}

// pv64-abi.md §2.2.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<StartInfo>() == 1168);
    assert!(offset_of!(StartInfo, magic) == 0);
    assert!(offset_of!(StartInfo, nr_pages) == 32);
    assert!(offset_of!(StartInfo, shared_info) == 40);
    assert!(offset_of!(StartInfo, flags) == 48);
    assert!(offset_of!(StartInfo, store_mfn) == 56);
    assert!(offset_of!(StartInfo, store_evtchn) == 64);
    assert!(offset_of!(StartInfo, console) + offset_of!(DomUConsole, mfn) == 72);
    assert!(offset_of!(StartInfo, console) + offset_of!(DomUConsole, evtchn) == 80);
    assert!(offset_of!(StartInfo, pt_base) == 88);
    assert!(offset_of!(StartInfo, nr_pt_frames) == 96);
    assert!(offset_of!(StartInfo, mfn_list) == 104);
    assert!(offset_of!(StartInfo, mod_start) == 112);
    assert!(offset_of!(StartInfo, mod_len) == 120);
    assert!(offset_of!(StartInfo, cmd_line) == 128);
    assert!(offset_of!(StartInfo, first_p2m_pfn) == 1152);
    assert!(offset_of!(StartInfo, nr_p2m_frames) == 1160);
};

/// A command line longer than `cmd_line` can hold with its NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdlineTooLong {
    pub len: usize,
}

impl core::fmt::Display for CmdlineTooLong {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "command line of {} bytes does not fit start_info ({} at most)",
            self.len,
            MAX_GUEST_CMDLINE - 1
        )
    }
}

impl StartInfo {
    pub const SIZE: usize = 1168;

    /// All zero but the magic.
    pub const fn new() -> Self {
        let mut magic = [0; 32];
        let mut i = 0;
        while i < START_INFO_MAGIC.len() {
            magic[i] = START_INFO_MAGIC[i];
            i += 1;
        }
        Self {
            magic,
            nr_pages: 0,
            shared_info: 0,
            flags: 0,
            _pad0: 0,
            store_mfn: 0,
            store_evtchn: 0,
            _pad1: 0,
            console: DomUConsole {
                mfn: 0,
                evtchn: 0,
                _pad: 0,
            },
            pt_base: 0,
            nr_pt_frames: 0,
            mfn_list: 0,
            mod_start: 0,
            mod_len: 0,
            cmd_line: [0; MAX_GUEST_CMDLINE],
            first_p2m_pfn: 0,
            nr_p2m_frames: 0,
        }
    }

    /// The magic up to its first NUL.
    pub fn magic_str(&self) -> &[u8] {
        until_nul(&self.magic)
    }

    /// The command line up to its first NUL (all of it if a guest overwrote the NUL).
    pub fn cmdline(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }

    /// Stores `text` NUL-terminated; a NUL inside `text` ends the line there for the guest.
    pub fn set_cmdline(&mut self, text: &[u8]) -> Result<(), CmdlineTooLong> {
        if text.len() >= MAX_GUEST_CMDLINE {
            return Err(CmdlineTooLong { len: text.len() });
        }
        self.cmd_line = [0; MAX_GUEST_CMDLINE];
        self.cmd_line[..text.len()].copy_from_slice(text);
        Ok(())
    }

    pub fn sif_flags(&self) -> SifFlags {
        SifFlags::from_bits_retain(self.flags)
    }

    /// The guest's byte image of this struct.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        let b = &mut out;
        wire::put(b, offset_of!(Self, magic), self.magic);
        wire::put_u64(b, offset_of!(Self, nr_pages), self.nr_pages);
        wire::put_u64(b, offset_of!(Self, shared_info), self.shared_info);
        wire::put_u32(b, offset_of!(Self, flags), self.flags);
        wire::put_u64(b, offset_of!(Self, store_mfn), self.store_mfn);
        wire::put_u32(b, offset_of!(Self, store_evtchn), self.store_evtchn);
        let console = offset_of!(Self, console);
        wire::put_u64(b, console + offset_of!(DomUConsole, mfn), self.console.mfn);
        wire::put_u32(
            b,
            console + offset_of!(DomUConsole, evtchn),
            self.console.evtchn,
        );
        wire::put_u64(b, offset_of!(Self, pt_base), self.pt_base);
        wire::put_u64(b, offset_of!(Self, nr_pt_frames), self.nr_pt_frames);
        wire::put_u64(b, offset_of!(Self, mfn_list), self.mfn_list);
        wire::put_u64(b, offset_of!(Self, mod_start), self.mod_start);
        wire::put_u64(b, offset_of!(Self, mod_len), self.mod_len);
        wire::put(b, offset_of!(Self, cmd_line), self.cmd_line);
        wire::put_u64(b, offset_of!(Self, first_p2m_pfn), self.first_p2m_pfn);
        wire::put_u64(b, offset_of!(Self, nr_p2m_frames), self.nr_p2m_frames);
        out
    }

    /// Reads a byte image (padding is dropped).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        let console = offset_of!(Self, console);
        Self {
            magic: wire::get(bytes, offset_of!(Self, magic)),
            nr_pages: wire::get_u64(bytes, offset_of!(Self, nr_pages)),
            shared_info: wire::get_u64(bytes, offset_of!(Self, shared_info)),
            flags: wire::get_u32(bytes, offset_of!(Self, flags)),
            _pad0: 0,
            store_mfn: wire::get_u64(bytes, offset_of!(Self, store_mfn)),
            store_evtchn: wire::get_u32(bytes, offset_of!(Self, store_evtchn)),
            _pad1: 0,
            console: DomUConsole {
                mfn: wire::get_u64(bytes, console + offset_of!(DomUConsole, mfn)),
                evtchn: wire::get_u32(bytes, console + offset_of!(DomUConsole, evtchn)),
                _pad: 0,
            },
            pt_base: wire::get_u64(bytes, offset_of!(Self, pt_base)),
            nr_pt_frames: wire::get_u64(bytes, offset_of!(Self, nr_pt_frames)),
            mfn_list: wire::get_u64(bytes, offset_of!(Self, mfn_list)),
            mod_start: wire::get_u64(bytes, offset_of!(Self, mod_start)),
            mod_len: wire::get_u64(bytes, offset_of!(Self, mod_len)),
            cmd_line: wire::get(bytes, offset_of!(Self, cmd_line)),
            first_p2m_pfn: wire::get_u64(bytes, offset_of!(Self, first_p2m_pfn)),
            nr_p2m_frames: wire::get_u64(bytes, offset_of!(Self, nr_p2m_frames)),
        }
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        Self::new()
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn new_has_the_magic_and_nothing_else() {
        let info = StartInfo::new();
        assert_eq!(info.magic_str(), b"xen-3.0-x86_64");
        let bytes = info.to_bytes();
        assert_eq!(&bytes[..14], b"xen-3.0-x86_64");
        assert!(bytes[14..].iter().all(|&b| b == 0));
    }

    #[test]
    fn fields_land_at_the_documented_offsets() {
        let mut info = StartInfo::new();
        info.nr_pages = 0x1000;
        info.shared_info = 0x1234_5000;
        info.flags = SifFlags::MOD_START_PFN.bits();
        info.store_mfn = 0x55;
        info.store_evtchn = 1;
        info.console.mfn = 0x66;
        info.console.evtchn = 2;
        info.pt_base = 0x7000;
        info.nr_pt_frames = 4;
        info.mfn_list = 0x5000;
        info.mod_start = 0x8000;
        info.mod_len = 0x99;
        info.set_cmdline(b"console=hvc0").unwrap();
        info.first_p2m_pfn = 0xaa;
        info.nr_p2m_frames = 0xbb;
        let b = info.to_bytes();
        let u64_at = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
        let u32_at = |off: usize| u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        assert_eq!(u64_at(32), 0x1000);
        assert_eq!(u64_at(40), 0x1234_5000);
        assert_eq!(u32_at(48), 8);
        assert_eq!(u64_at(56), 0x55);
        assert_eq!(u32_at(64), 1);
        assert_eq!(u64_at(72), 0x66);
        assert_eq!(u32_at(80), 2);
        assert_eq!(u64_at(88), 0x7000);
        assert_eq!(u64_at(96), 4);
        assert_eq!(u64_at(104), 0x5000);
        assert_eq!(u64_at(112), 0x8000);
        assert_eq!(u64_at(120), 0x99);
        assert_eq!(&b[128..141], b"console=hvc0\0");
        assert_eq!(u64_at(1152), 0xaa);
        assert_eq!(u64_at(1160), 0xbb);
        assert_eq!(StartInfo::from_bytes(&b), info);
        assert_eq!(info.sif_flags(), SifFlags::MOD_START_PFN);
    }

    #[test]
    fn cmdline_limits() {
        let mut info = StartInfo::new();
        let longest = [b'x'; MAX_GUEST_CMDLINE - 1];
        info.set_cmdline(&longest).unwrap();
        assert_eq!(info.cmdline(), &longest[..]);
        assert_eq!(info.cmd_line[MAX_GUEST_CMDLINE - 1], 0);
        let err = info.set_cmdline(&[b'x'; MAX_GUEST_CMDLINE]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command line of 1024 bytes does not fit start_info (1023 at most)"
        );
        // The earlier line survives a refused one.
        assert_eq!(info.cmdline().len(), MAX_GUEST_CMDLINE - 1);
        info.set_cmdline(b"").unwrap();
        assert_eq!(info.cmdline(), b"");
    }

    proptest! {
        #[test]
        fn byte_image_round_trips(bytes in prop::collection::vec(any::<u8>(), StartInfo::SIZE)) {
            let mut image: [u8; StartInfo::SIZE] = bytes.try_into().unwrap();
            // Padding is not carried: clear it so that the comparison is about fields.
            for pad in [52..56, 68..72, 84..88] {
                image[pad].fill(0);
            }
            prop_assert_eq!(StartInfo::from_bytes(&image).to_bytes(), image);
        }
    }
}
