//! The 64-bit TSS and its stack indices: RSP0, the Interrupt Stack Table slots and which
//! event uses which one, and the I/O permission bitmap.
//!
//! `gdt` describes the TSS in a descriptor and `idt` names an IST slot in a gate; both take
//! the types from here, so neither needs the other for stacks.

use core::mem::{offset_of, size_of};

/// Index into the TSS's Interrupt Stack Table, 1..=7 (0 in a gate means "no stack switch").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IstIndex(u8);

impl IstIndex {
    pub const IST1: Self = Self(1);
    pub const IST2: Self = Self(2);
    pub const IST3: Self = Self(3);
    pub const IST4: Self = Self(4);
    pub const IST5: Self = Self(5);
    pub const IST6: Self = Self(6);
    pub const IST7: Self = Self(7);

    /// `None` unless `index` is 1..=7.
    pub const fn new(index: u8) -> Option<Self> {
        if index >= 1 && index <= 7 {
            Some(Self(index))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// IST slots (architecture.md §4): one per event that must not trust the current stack.
pub const IST_DF: IstIndex = IstIndex::IST1;
pub const IST_DB: IstIndex = IstIndex::IST2;
pub const IST_NMI: IstIndex = IstIndex::IST3;
pub const IST_MC: IstIndex = IstIndex::IST4;

/// Bytes in the I/O permission bitmap: one bit per port, 65536 ports.
pub const IO_BITMAP_BYTES: usize = 65536 / 8;

/// The 64-bit TSS (SDM vol. 3 §8.7) followed by the I/O permission bitmap.
///
/// Long mode uses the TSS only for RSP0 (IDT delivery from ring 3), the seven IST stacks and
/// the I/O bitmap; FRED uses only the bitmap, but VT-x wants a TSS of at least 0x68 bytes
/// anyway (fred-facts.md §11 point 4). A set bit denies ring-3 access to the port; the bitmap
/// must be followed by a 0xff byte inside the limit, because the CPU reads two bytes.
#[repr(C, packed(4))]
pub struct TaskStateSegment {
    reserved0: u32,
    /// RSP0..RSP2: the stack loaded on IDT delivery that raises CPL to 0..2.
    rsp: [u64; 3],
    reserved1: u64,
    /// IST1..IST7 (slot 0 is IST1).
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
    io_bitmap: [u8; IO_BITMAP_BYTES],
    /// The required 0xff after the bitmap, padded to the struct's 4-byte alignment.
    io_bitmap_end: [u8; 4],
}

const _: () = assert!(offset_of!(TaskStateSegment, rsp) == 0x04);
const _: () = assert!(offset_of!(TaskStateSegment, ist) == 0x24);
const _: () = assert!(offset_of!(TaskStateSegment, iomap_base) == 0x66);
const _: () = assert!(offset_of!(TaskStateSegment, io_bitmap) == 0x68);
const _: () = assert!(offset_of!(TaskStateSegment, io_bitmap_end) == 0x68 + IO_BITMAP_BYTES);
const _: () = assert!(size_of::<TaskStateSegment>() == 0x68 + IO_BITMAP_BYTES + 4);

impl Default for TaskStateSegment {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskStateSegment {
    /// Byte limit for the TSS descriptor: the whole struct, terminator included.
    pub const LIMIT: u32 = (size_of::<Self>() - 1) as u32;

    /// All stacks 0, every port denied to ring 3.
    pub const fn new() -> Self {
        Self {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: offset_of!(Self, io_bitmap) as u16,
            io_bitmap: [0xff; IO_BITMAP_BYTES],
            io_bitmap_end: [0xff; 4],
        }
    }

    /// All zeros, no port denied: not loadable as it is. For a TSS in a static that should
    /// take no room in the image's file (`.bss`); [`TaskStateSegment::reset`] makes it
    /// [`TaskStateSegment::new`] in place before it is used.
    pub const fn zeroed() -> Self {
        Self {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: 0,
            io_bitmap: [0; IO_BITMAP_BYTES],
            io_bitmap_end: [0; 4],
        }
    }

    /// Makes this TSS equal to [`TaskStateSegment::new`] where it lies (no 8 KiB temporary
    /// on a small stack).
    pub fn reset(&mut self) {
        self.rsp = [0; 3];
        self.ist = [0; 7];
        self.iomap_base = offset_of!(Self, io_bitmap) as u16;
        self.io_bitmap.fill(0xff);
        self.io_bitmap_end = [0xff; 4];
    }

    /// Stack for IDT delivery from ring 3 (architecture.md §4: the top of SL0's pages).
    pub fn set_rsp0(&mut self, top: u64) {
        self.rsp[0] = top;
    }

    pub fn rsp0(&self) -> u64 {
        self.rsp[0]
    }

    /// Stack switched to for gates whose IST field is `index`.
    pub fn set_ist(&mut self, index: IstIndex, top: u64) {
        self.ist[usize::from(index.get() - 1)] = top;
    }

    pub fn ist(&self, index: IstIndex) -> u64 {
        self.ist[usize::from(index.get() - 1)]
    }

    /// Offset of the I/O bitmap from the TSS base.
    pub fn iomap_base(&self) -> u16 {
        self.iomap_base
    }

    /// Grants (`true`) or denies ring-3 `in`/`out` on `port`.
    pub fn set_port_allowed(&mut self, port: u16, allowed: bool) {
        let byte = &mut self.io_bitmap[usize::from(port / 8)];
        let bit = 1 << (port % 8);
        if allowed {
            *byte &= !bit;
        } else {
            *byte |= bit;
        }
    }

    pub fn port_allowed(&self, port: u16) -> bool {
        self.io_bitmap[usize::from(port / 8)] & (1 << (port % 8)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_fields() {
        let mut tss = Box::new(TaskStateSegment::new());
        assert_eq!(tss.iomap_base(), 0x68);
        tss.set_rsp0(0xffff_8000_0000_8000);
        tss.set_ist(IstIndex::new(1).unwrap(), 0x1111_0000);
        tss.set_ist(IstIndex::new(7).unwrap(), 0x7777_0000);
        assert_eq!(tss.rsp0(), 0xffff_8000_0000_8000);
        assert_eq!(tss.ist(IstIndex::new(1).unwrap()), 0x1111_0000);
        assert_eq!(tss.ist(IstIndex::new(7).unwrap()), 0x7777_0000);

        // Check the raw bytes where the CPU looks for them.
        // SAFETY: TaskStateSegment is plain old data of exactly size_of bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(&*tss).cast::<u8>(),
                size_of::<TaskStateSegment>(),
            )
        };
        let qword = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(qword(0x04), 0xffff_8000_0000_8000);
        assert_eq!(qword(0x24), 0x1111_0000);
        assert_eq!(qword(0x24 + 6 * 8), 0x7777_0000);
        assert_eq!(u16::from_le_bytes([bytes[0x66], bytes[0x67]]), 0x68);
        assert_eq!(bytes[0x68 + IO_BITMAP_BYTES], 0xff);
    }

    fn bytes_of(tss: &TaskStateSegment) -> &[u8] {
        // SAFETY: TaskStateSegment is plain old data of exactly size_of bytes.
        unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(tss).cast::<u8>(),
                size_of::<TaskStateSegment>(),
            )
        }
    }

    #[test]
    fn a_reset_tss_is_a_new_one() {
        let zeroed = Box::new(TaskStateSegment::zeroed());
        assert!(bytes_of(&zeroed).iter().all(|&b| b == 0));
        let mut tss = zeroed;
        tss.set_rsp0(0x1000);
        tss.set_ist(IstIndex::new(3).unwrap(), 0x2000);
        tss.reset();
        assert_eq!(bytes_of(&tss), bytes_of(&TaskStateSegment::new()));
    }

    #[test]
    fn tss_io_bitmap() {
        let mut tss = Box::new(TaskStateSegment::new());
        assert!(!tss.port_allowed(0x3f8));
        tss.set_port_allowed(0x3f8, true);
        assert!(tss.port_allowed(0x3f8));
        assert!(!tss.port_allowed(0x3f9));
        assert_eq!(tss.io_bitmap[0x3f8 / 8], 0xfe);
        tss.set_port_allowed(0x3f8, false);
        assert_eq!(tss.io_bitmap[0x3f8 / 8], 0xff);
        tss.set_port_allowed(0xffff, true);
        assert_eq!(tss.io_bitmap[IO_BITMAP_BYTES - 1], 0x7f);
    }
}
