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

/// The shared index words of this server's event ring, for a consumer that lies about them
/// (the `hostile-server` fixture): the nucleus' published `head` and `dropped`, and `tail`.
pub mod event_ring {
    use crate::layout::{EVENT_RING, RING_BYTES};
    use crate::ring::{DROPPED_OFFSET, HEAD_OFFSET, TAIL_OFFSET, capacity_for};

    const _: () = assert!(TAIL_OFFSET + 4 <= RING_BYTES as usize);

    fn word(offset: usize) -> *mut u32 {
        (EVENT_RING as usize + offset) as *mut u32
    }

    /// Bytes of the ring's data area.
    pub const fn capacity() -> u32 {
        match capacity_for(RING_BYTES as usize) {
            Some(capacity) => capacity as u32,
            None => 0,
        }
    }

    /// The producer (nucleus) index as published.
    pub fn head() -> u32 {
        // SAFETY: the event ring page is mapped (readable) for this server at `EVENT_RING`
        // (the layout contract); the word is 4-byte aligned inside it. A racing write by the
        // producer only makes the value stale.
        unsafe { word(HEAD_OFFSET).read_volatile() }
    }

    /// Pushes the producer refused because the ring was full (its `dropped` counter).
    pub fn dropped() -> u32 {
        // SAFETY: as for `head`.
        unsafe { word(DROPPED_OFFSET).read_volatile() }
    }

    /// The consumer index as published.
    pub fn tail() -> u32 {
        // SAFETY: as for `head`.
        unsafe { word(TAIL_OFFSET).read_volatile() }
    }

    /// Publishes `value` as the consumer index without consuming anything: a lie the
    /// producer must survive. Popping through the runtime afterwards publishes the real one.
    pub fn set_tail(value: u32) {
        // SAFETY: the page is mapped writable for this server, which is the ring's only
        // consumer; the write can mislead only the producer, which checks every index.
        unsafe { word(TAIL_OFFSET).write_volatile(value) }
    }
}
