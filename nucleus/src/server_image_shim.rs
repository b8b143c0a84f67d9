//! TEMPORARY stand-in for `bsp_x86_64::server_image` until it lands (being written).
use core::fmt;

#[derive(Clone, Copy, Debug)]
pub struct ImageError;
impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid server image")
    }
}
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub file_offset: u64,
    pub filesz: u64,
    flags: u32,
}
impl Segment {
    pub fn writable(&self) -> bool {
        self.flags & 2 != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & 1 != 0
    }
}
pub struct ServerImage {
    pub entry: u64,
    pub segments: heapless::Vec<Segment, 8>,
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, ImageError> {
    Ok(u64::from_le_bytes(b.get(o..o + 8).ok_or(ImageError)?.try_into().map_err(|_| ImageError)?))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, ImageError> {
    Ok(u32::from_le_bytes(b.get(o..o + 4).ok_or(ImageError)?.try_into().map_err(|_| ImageError)?))
}
fn u16_at(b: &[u8], o: usize) -> Result<u16, ImageError> {
    Ok(u16::from_le_bytes(b.get(o..o + 2).ok_or(ImageError)?.try_into().map_err(|_| ImageError)?))
}
pub fn validate(b: &[u8]) -> Result<ServerImage, ImageError> {
    if b.get(..4) != Some(b"\x7fELF") {
        return Err(ImageError);
    }
    let entry = u64_at(b, 24)?;
    let phoff = u64_at(b, 32)? as usize;
    let phnum = u16_at(b, 56)? as usize;
    let mut segments = heapless::Vec::new();
    for i in 0..phnum {
        let o = phoff + i * 56;
        if u32_at(b, o)? != 1 {
            continue;
        }
        let seg = Segment {
            flags: u32_at(b, o + 4)?,
            file_offset: u64_at(b, o + 8)?,
            vaddr: u64_at(b, o + 16)?,
            filesz: u64_at(b, o + 32)?,
            memsz: u64_at(b, o + 40)?,
        };
        if seg.file_offset + seg.filesz > b.len() as u64 || seg.vaddr >= ipc::layout::IMAGE_END {
            return Err(ImageError);
        }
        segments.push(seg).map_err(|_| ImageError)?;
    }
    Ok(ServerImage { entry, segments })
}
