//! Misbehaviour on purpose, for the boot tests that check the nucleus survives a hostile
//! server (engineering rule: a hostile server message gets one clear line, and the nucleus
//! keeps running). Only the `alt-server` test fixture calls these.
use crate::layout::{REPLY_RING, RING_BYTES};
use crate::ring::HEAD_OFFSET;
use crate::rt::{Server, sys};

impl Server {
    /// Pushes raw bytes as one record (not a valid message) and notifies.
    pub fn push_garbage_record(&mut self, bytes: &[u8]) -> Result<(), crate::ring::PushError> {
        self.replies.try_push(bytes)?;
        let _ = sys::ring_notify(sys::RingId::Reply);
        Ok(())
    }
}

/// Overwrites the producer index of this server's reply ring with `value` (as a buggy or
/// hostile producer would) and notifies the nucleus.
pub fn corrupt_reply_ring_head(value: u32) {
    const _: () = assert!(HEAD_OFFSET + 4 <= RING_BYTES as usize);
    let head = (REPLY_RING as usize + HEAD_OFFSET) as *mut u32;
    // SAFETY: the reply ring page is mapped writable for this server at `REPLY_RING` (the
    // layout contract), `HEAD_OFFSET` is 4-byte aligned inside it, and only this server
    // produces into that ring: the write hurts nobody but the writer, which is the point.
    unsafe { head.write_volatile(value) };
    let _ = sys::ring_notify(sys::RingId::Reply);
}

/// A syscall number the nucleus does not know; returns what it answered.
pub fn unknown_syscall() -> Result<u64, sys::SysError> {
    // SAFETY: an unknown number touches no memory: the nucleus only writes rax.
    let rax = unsafe { sys::raw(0xdead, [0; 6]) };
    crate::syscall::from_rax(rax).map_err(|known| match known {
        Some(error) => sys::SysError::Known(error),
        None => sys::SysError::Unknown(rax),
    })
}
