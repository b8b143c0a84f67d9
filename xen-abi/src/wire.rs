//! Little-endian field access by byte offset, for the `to_bytes`/`from_bytes` codecs.
//!
//! Offsets come from `offset_of!` on the `#[repr(C)]` structs, so the byte image and the
//! in-memory layout cannot disagree. Callers pass fixed-size arrays whose size is the
//! struct's, so every access is in bounds by construction (checked in the tests).

pub(crate) fn put<const N: usize>(buf: &mut [u8], offset: usize, bytes: [u8; N]) {
    buf[offset..offset + N].copy_from_slice(&bytes);
}

pub(crate) fn get<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[offset..offset + N]);
    out
}

pub(crate) fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    put(buf, offset, value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    put(buf, offset, value.to_le_bytes());
}

pub(crate) fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    put(buf, offset, value.to_le_bytes());
}

pub(crate) fn get_u64(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(get(buf, offset))
}

pub(crate) fn get_u32(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(get(buf, offset))
}

pub(crate) fn get_u16(buf: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(get(buf, offset))
}
