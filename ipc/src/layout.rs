//! Where things are in a server's address space: the fixed part of the Ring3 ABI.
//!
//! The nucleus maps every server the same way, so the server runtime needs no discovery:
//! the ELF image below [`IMAGE_END`], the start page at [`START_INFO`], its two rings at
//! [`EVENT_RING`] and [`REPLY_RING`], and a stack ending at [`STACK_TOP`] with an unmapped
//! guard page below it. The upper half belongs to the nucleus (supervisor-only).

/// First address above the user half (canonical lower half ends here).
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Servers are linked here (`ET_EXEC`, static).
pub const SERVER_LINK_BASE: u64 = 0x0040_0000;
/// Every `PT_LOAD` segment must lie in `[IMAGE_START, IMAGE_END)`.
pub const IMAGE_START: u64 = 0x0000_0000_0001_0000;
pub const IMAGE_END: u64 = 0x0000_4000_0000_0000;
/// The [`StartInfo`] page (read-only for the server); its address is also passed in `rdi`.
pub const START_INFO: u64 = 0x0000_6000_0000_0000;
/// Nucleus → server ring (events, dumps), one page.
pub const EVENT_RING: u64 = 0x0000_6000_0001_0000;
/// Server → nucleus ring (hello, replies, logs), one page.
pub const REPLY_RING: u64 = 0x0000_6000_0002_0000;
/// Bytes of each ring region (header + data).
pub const RING_BYTES: u64 = 4096;
/// Top of the server stack (16-byte aligned; RSP at entry).
pub const STACK_TOP: u64 = 0x0000_7fff_ff00_0000;
/// Stack size; the page below `STACK_TOP - STACK_BYTES` stays unmapped (guard).
pub const STACK_BYTES: u64 = 64 * 1024;

/// Ring numbers for `RingWait`/`RingNotify`.
pub const EVENT_RING_ID: u64 = 0;
pub const REPLY_RING_ID: u64 = 1;

/// `StartInfo::magic`: "FREDSTRT".
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"FREDSTRT");
/// Layout version of [`StartInfo`].
pub const START_INFO_VERSION: u32 = 1;

/// What a server learns at start, at [`START_INFO`] (and in `rdi`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    pub magic: u64,
    pub version: u32,
    /// How many times this server was restarted (0 on first start).
    pub generation: u32,
    /// The module string, NUL-padded.
    pub name: [u8; 32],
    /// Options for this server from the nucleus command line (`server-args=NAME:ARGS`),
    /// NUL-padded, space-separated (e.g. `fault=null`).
    pub args: [u8; 128],
    pub event_ring: u64,
    pub reply_ring: u64,
    pub ring_bytes: u64,
}

impl StartInfo {
    /// The name up to its first NUL.
    pub fn name(&self) -> &[u8] {
        until_nul(&self.name)
    }

    /// The arguments up to the first NUL.
    pub fn args(&self) -> &[u8] {
        until_nul(&self.args)
    }

    /// True if `word` is one of the space-separated arguments.
    pub fn has_arg(&self, word: &[u8]) -> bool {
        self.args().split(|&b| b == b' ').any(|w| w == word)
    }

    /// The value of `key=value` among the arguments.
    pub fn arg_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.args().split(|&b| b == b' ').find_map(|w| {
            let rest = w.strip_prefix(key)?;
            rest.strip_prefix(b"=")
        })
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

const _: () = assert!(core::mem::size_of::<StartInfo>() <= 4096);
const _: () = assert!(
    EVENT_RING.is_multiple_of(4096)
        && REPLY_RING.is_multiple_of(4096)
        && START_INFO.is_multiple_of(4096)
);
const _: () =
    assert!(STACK_TOP.is_multiple_of(16) && STACK_TOP < USER_END && IMAGE_END <= START_INFO);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_found_by_word_and_key() {
        let mut info = StartInfo {
            magic: START_INFO_MAGIC,
            version: START_INFO_VERSION,
            generation: 0,
            name: [0; 32],
            args: [0; 128],
            event_ring: EVENT_RING,
            reply_ring: REPLY_RING,
            ring_bytes: RING_BYTES,
        };
        info.name[..9].copy_from_slice(b"pv-server");
        info.args[..19].copy_from_slice(b"fault=null selfchk ");
        assert_eq!(info.name(), b"pv-server");
        assert!(info.has_arg(b"selfchk"));
        assert!(!info.has_arg(b"fault"));
        assert_eq!(info.arg_value(b"fault"), Some(&b"null"[..]));
        assert_eq!(info.arg_value(b"bench"), None);
    }
}
