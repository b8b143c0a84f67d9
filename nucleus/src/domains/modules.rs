//! The guest boot modules (`guest NAME mem=… cmdline=…`), kept at boot and read by
//! pv-server through `guest_module` / `guest_module_read`.
use crate::mm::AddressSpace;
use crate::racy::racy_static;
use core::ops::Range;
use heapless::Vec;
use ipc::syscall::SyscallError;

/// A guest boot module: its text after `guest `, and its bytes.
struct GuestModule {
    text: Vec<u8, 256>,
    range: Range<u64>,
}

racy_static! {
    fn cell() -> Vec<GuestModule, 8> = Vec::new();
}

fn modules() -> &'static mut Vec<GuestModule, 8> {
    // SAFETY: written once at boot (`keep`), read by syscalls afterwards; one CPU.
    unsafe { &mut *cell().get() }
}

/// Boot: keeps every module whose name starts with `guest `.
#[cfg(target_os = "none")]
pub fn keep(boot: &crate::bootinfo::BootSummary) {
    for module in &boot.modules {
        if let Some(text) = module.name.strip_prefix(b"guest ")
            && let Ok(text) = Vec::from_slice(text)
        {
            let _ = modules().push(GuestModule {
                text,
                range: module.range.clone(),
            });
        }
    }
}

/// `guest_module`: module `index`'s text into pv-server's `buf` (at most `len` bytes).
pub fn text(space: &AddressSpace, index: u64, buf: u64, len: u64) -> Result<u64, SyscallError> {
    let module = modules()
        .get(index as usize)
        .ok_or(SyscallError::BadArgument)?;
    let n = module.text.len().min(len as usize);
    space
        .write(buf, &module.text[..n])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(n as u64)
}

/// `guest_module_read`: module `index`'s bytes from `offset` (at most 1 MiB a call).
pub fn read(
    space: &AddressSpace,
    index: u64,
    offset: u64,
    buf: u64,
    len: u64,
) -> Result<u64, SyscallError> {
    let module = modules()
        .get(index as usize)
        .ok_or(SyscallError::BadArgument)?;
    let bytes = crate::mm::module_bytes(&module.range);
    let start = (offset.min(bytes.len() as u64)) as usize;
    let n = (bytes.len() - start).min(len.min(1 << 20) as usize);
    space
        .write(buf, &bytes[start..start + n])
        .map_err(|_| SyscallError::BadPointer)?;
    Ok(n as u64)
}
