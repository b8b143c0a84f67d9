//! What pv-server asks of the nucleus about guests, as a trait: the nucleus' guest-manager
//! syscalls on the target (`Nucleus`), a fake in the host tests. Every check that protects
//! a frame, a table or another domain is the nucleus'; pv-server only asks.

use xen_abi::Errno;

use crate::domain_builder::{FrameWriteError, Mfn};
use ipc::domain::{MmuOp, VcpuStart};

/// The nucleus' guest-manager calls.
pub trait Hypervisor {
    /// The text of guest module `index` (after `guest `), or `None` past the last one.
    fn module_text(&mut self, index: u64, out: &mut [u8]) -> Option<usize>;
    /// Bytes of module `index`'s image from `offset`; how many were copied.
    fn module_read(&mut self, index: u64, offset: u64, out: &mut [u8]) -> usize;
    /// A new domain of `frames` zeroed frames; `mfns[0]` is its shared_info frame, then its
    /// frames in pfn order. `Err` when the nucleus refuses (not enough memory, no slot).
    fn create(&mut self, frames: u64, name: &[u8], mfns: &mut [Mfn]) -> Result<u16, ()>;
    /// Writes into one of the domain's frames.
    fn write_frame(
        &mut self,
        domain: u16,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), FrameWriteError>;
    /// Reads bytes of one of the domain's (or its shared) frames.
    fn read_frame(
        &mut self,
        domain: u16,
        mfn: Mfn,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), FrameWriteError>;
    /// A new zeroed frame shared with the domain (a grant frame).
    fn share_frame(&mut self, domain: u16) -> Result<Mfn, Errno>;
    /// `set_gdt` in the nucleus: these frames, `entries` descriptors, all checked.
    fn set_gdt(&mut self, domain: u16, frames: &[u64], entries: u64) -> Result<(), Errno>;
    /// One value of the nucleus' time base.
    fn clock(&mut self, which: ipc::domain::Clock) -> u64;
    /// Copies guest VA `va` into `out` (vCPU 0's kernel view).
    fn guest_read(&mut self, domain: u16, va: u64, out: &mut [u8]) -> Result<(), Errno>;
    /// Copies `bytes` to guest VA `va`.
    fn guest_write(&mut self, domain: u16, va: u64, bytes: &[u8]) -> Result<(), Errno>;
    /// One page-table operation, checked by the nucleus.
    fn mmu(&mut self, domain: u16, op: MmuOp) -> Result<(), Errno>;
    /// Starts vCPU 0.
    fn start(&mut self, domain: u16, regs: &VcpuStart) -> Result<(), Errno>;
    /// `set_segment_base(which, base)` for vCPU 0, checked and loaded by the nucleus.
    fn segment_base(&mut self, domain: u16, which: u64, base: u64) -> Result<(), Errno>;
    /// `vcpu_selectors`: the nucleus nulls the DS/ES/FS selectors of vCPU 0 that no longer
    /// load on its descriptor tables; the mask of those (bit 0 DS, 1 ES, 2 FS) and the four
    /// (DS, ES, FS, GS) as they were. Stand-ins without descriptor tables: none nulled.
    fn vcpu_selectors(&mut self, domain: u16) -> Result<(u64, [u16; 4]), Errno> {
        let _ = domain;
        Ok((0, [0; 4]))
    }
    /// Ends the domain; how many frames went back.
    fn destroy(&mut self, domain: u16) -> u64;
    /// Prints one console line of the domain (`guest NAME: <line>`).
    fn console_line(&mut self, domain: u16, line: &[u8]);
    /// Free RAM frames.
    fn free_frames(&mut self) -> u64;
}

/// A Xen answer (`0` or a positive errno) as a result.
pub fn xen_result(answer: u64) -> Result<(), Errno> {
    if answer == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(answer).unwrap_or(Errno::Einval))
    }
}

/// The real thing: ipc::rt's syscall wrappers.
#[cfg(target_os = "none")]
pub struct Nucleus;

/// Most frames a guest may have (`mem=` up to 64 MiB).
pub const MAX_GUEST_FRAMES: usize = 64 * 256;

/// The bytes `domain_create` writes the MFN list into (pv-server runs one thread; the lock
/// only makes the static safe to reach).
#[cfg(target_os = "none")]
static RAW_MFNS: spin::Mutex<[u8; (MAX_GUEST_FRAMES + 1) * 8]> =
    spin::Mutex::new([0; (MAX_GUEST_FRAMES + 1) * 8]);

#[cfg(target_os = "none")]
impl Hypervisor for Nucleus {
    fn module_text(&mut self, index: u64, out: &mut [u8]) -> Option<usize> {
        ipc::rt::sys::guest_module(index, out).ok()
    }

    fn module_read(&mut self, index: u64, offset: u64, out: &mut [u8]) -> usize {
        ipc::rt::sys::guest_module_read(index, offset, out).unwrap_or(0)
    }

    fn create(&mut self, frames: u64, name: &[u8], mfns: &mut [Mfn]) -> Result<u16, ()> {
        let count = frames as usize + 1;
        if mfns.len() < count {
            return Err(());
        }
        let mut raw = RAW_MFNS.lock();
        // Busy: the last pv-server's guests are still ending on other CPUs.
        let domain = loop {
            match ipc::rt::sys::domain_create(frames, name, &mut raw[..count * 8]) {
                Err(ipc::rt::sys::SysError::Known(ipc::syscall::SyscallError::Busy)) => {
                    ipc::rt::sys::yield_now()
                }
                result => break result.map_err(|_| ())?,
            }
        };
        for (slot, bytes) in mfns.iter_mut().zip(raw[..count * 8].chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            *slot = Mfn(u64::from_le_bytes(word));
        }
        Ok(domain)
    }

    fn write_frame(
        &mut self,
        domain: u16,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), FrameWriteError> {
        ipc::rt::sys::domain_write(domain, mfn.0, offset as u64, bytes)
            .map_err(|_| FrameWriteError("the nucleus refused the frame write"))
    }

    fn read_frame(
        &mut self,
        domain: u16,
        mfn: Mfn,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), FrameWriteError> {
        ipc::rt::sys::domain_read(domain, mfn.0, offset as u64, out)
            .map_err(|_| FrameWriteError("the nucleus refused the frame read"))
    }

    fn share_frame(&mut self, domain: u16) -> Result<Mfn, Errno> {
        ipc::rt::sys::domain_share(domain)
            .map(Mfn)
            .map_err(|_| Errno::Enomem)
    }

    fn set_gdt(&mut self, domain: u16, frames: &[u64], entries: u64) -> Result<(), Errno> {
        let op = MmuOp::SetGdt {
            list: frames.as_ptr() as u64,
            entries,
        };
        self.mmu(domain, op)
    }

    fn clock(&mut self, which: ipc::domain::Clock) -> u64 {
        ipc::rt::sys::clock(which).unwrap_or(0)
    }

    fn guest_read(&mut self, domain: u16, va: u64, out: &mut [u8]) -> Result<(), Errno> {
        let answer = ipc::rt::sys::guest_read(domain, va, out).map_err(|_| Errno::Efault)?;
        xen_result(answer)
    }

    fn guest_write(&mut self, domain: u16, va: u64, bytes: &[u8]) -> Result<(), Errno> {
        let answer = ipc::rt::sys::guest_write(domain, va, bytes).map_err(|_| Errno::Efault)?;
        xen_result(answer)
    }

    fn mmu(&mut self, domain: u16, op: MmuOp) -> Result<(), Errno> {
        let answer = ipc::rt::sys::domain_mmu(domain, op).map_err(|_| Errno::Einval)?;
        xen_result(answer)
    }

    fn start(&mut self, domain: u16, regs: &VcpuStart) -> Result<(), Errno> {
        let answer = ipc::rt::sys::vcpu_start(domain, regs).map_err(|_| Errno::Einval)?;
        xen_result(answer)
    }

    fn segment_base(&mut self, domain: u16, which: u64, base: u64) -> Result<(), Errno> {
        let answer =
            ipc::rt::sys::vcpu_segment_base(domain, which, base).map_err(|_| Errno::Einval)?;
        xen_result(answer)
    }

    fn vcpu_selectors(&mut self, domain: u16) -> Result<(u64, [u16; 4]), Errno> {
        let mut before = [0u16; 4];
        let mask = ipc::rt::sys::vcpu_selectors(domain, &mut before).map_err(|_| Errno::Einval)?;
        Ok((mask, before))
    }

    fn destroy(&mut self, domain: u16) -> u64 {
        use ipc::rt::sys::SysError;
        use ipc::syscall::SyscallError;
        // Busy: its vCPU is live on another CPU, which the nucleus has asked to let go of it.
        loop {
            match ipc::rt::sys::domain_destroy(domain) {
                Err(SysError::Known(SyscallError::Busy)) => ipc::rt::sys::yield_now(),
                result => return result.unwrap_or(0),
            }
        }
    }

    fn console_line(&mut self, domain: u16, line: &[u8]) {
        // The nucleus takes what pv-server's console budget allows; the rest after a yield.
        let mut rest = line;
        while !rest.is_empty() {
            match ipc::rt::sys::guest_console_write(domain, rest) {
                Ok(0) => ipc::rt::sys::yield_now(),
                Ok(n) => rest = rest.get(n as usize..).unwrap_or(&[]),
                Err(_) => break,
            }
        }
    }

    fn free_frames(&mut self) -> u64 {
        ipc::rt::sys::free_frames().unwrap_or(0)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A nucleus stand-in: guest memory as byte regions by base VA, frames as byte arrays,
    /// every call recorded.
    #[derive(Default)]
    pub struct FakeHypervisor {
        /// Guest VA regions: base → bytes.
        pub memory: BTreeMap<u64, Vec<u8>>,
        pub mmu_ops: Vec<MmuOp>,
        /// Refuse (`-EINVAL`) every mmu op after this many.
        pub refuse_after: Option<usize>,
        /// Guest modules: text, image.
        pub modules: Vec<(Vec<u8>, Vec<u8>)>,
        pub frames: BTreeMap<u64, Vec<u8>>,
        pub free: u64,
        pub next_mfn: u64,
        pub domains: Vec<u16>,
        pub started: Vec<(u16, VcpuStart)>,
        pub destroyed: Vec<u16>,
        pub lines: Vec<(u16, String)>,
        /// `segment_base` calls: domain, which, base.
        pub segment_bases: Vec<(u16, u64, u64)>,
        pub gdts: Vec<(Vec<u64>, u64)>,
        /// The clock's answers: TSC kHz, RTC seconds, RTC TSC.
        pub clock: [u64; 3],
    }

    impl FakeHypervisor {
        fn region(&mut self, va: u64, len: usize) -> Option<(&mut Vec<u8>, usize)> {
            let (&base, bytes) = self.memory.range_mut(..=va).next_back()?;
            let offset = (va - base) as usize;
            (offset + len <= bytes.len()).then_some((bytes, offset))
        }
    }

    impl Hypervisor for FakeHypervisor {
        fn module_text(&mut self, index: u64, out: &mut [u8]) -> Option<usize> {
            let (text, _) = self.modules.get(index as usize)?;
            let n = text.len().min(out.len());
            out[..n].copy_from_slice(&text[..n]);
            Some(n)
        }

        fn module_read(&mut self, index: u64, offset: u64, out: &mut [u8]) -> usize {
            let Some((_, image)) = self.modules.get(index as usize) else {
                return 0;
            };
            let start = (offset as usize).min(image.len());
            let n = (image.len() - start).min(out.len());
            out[..n].copy_from_slice(&image[start..start + n]);
            n
        }

        fn create(&mut self, frames: u64, _name: &[u8], mfns: &mut [Mfn]) -> Result<u16, ()> {
            if frames + 1 > self.free || mfns.len() < frames as usize + 1 {
                return Err(());
            }
            self.free -= frames + 1;
            for slot in &mut mfns[..frames as usize + 1] {
                self.next_mfn += 1;
                *slot = Mfn(0x1000 + self.next_mfn);
                self.frames.insert(slot.0, vec![0; 4096]);
            }
            let domain = self.domains.len() as u16 + 1;
            self.domains.push(domain);
            Ok(domain)
        }

        fn write_frame(
            &mut self,
            _domain: u16,
            mfn: Mfn,
            offset: usize,
            bytes: &[u8],
        ) -> Result<(), FrameWriteError> {
            let frame = self
                .frames
                .get_mut(&mfn.0)
                .ok_or(FrameWriteError("no frame"))?;
            frame[offset..offset + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }

        fn read_frame(
            &mut self,
            _domain: u16,
            mfn: Mfn,
            offset: usize,
            out: &mut [u8],
        ) -> Result<(), FrameWriteError> {
            let frame = self.frames.get(&mfn.0).ok_or(FrameWriteError("no frame"))?;
            out.copy_from_slice(&frame[offset..offset + out.len()]);
            Ok(())
        }

        fn share_frame(&mut self, _domain: u16) -> Result<Mfn, Errno> {
            self.next_mfn += 1;
            let mfn = Mfn(0x1000 + self.next_mfn);
            self.frames.insert(mfn.0, vec![0; 4096]);
            Ok(mfn)
        }

        fn set_gdt(&mut self, _domain: u16, frames: &[u64], entries: u64) -> Result<(), Errno> {
            self.gdts.push((frames.to_vec(), entries));
            Ok(())
        }

        fn clock(&mut self, which: ipc::domain::Clock) -> u64 {
            self.clock[which as usize]
        }

        fn guest_read(&mut self, _domain: u16, va: u64, out: &mut [u8]) -> Result<(), Errno> {
            let (bytes, offset) = self.region(va, out.len()).ok_or(Errno::Efault)?;
            out.copy_from_slice(&bytes[offset..offset + out.len()]);
            Ok(())
        }

        fn guest_write(&mut self, _domain: u16, va: u64, data: &[u8]) -> Result<(), Errno> {
            let (bytes, offset) = self.region(va, data.len()).ok_or(Errno::Efault)?;
            bytes[offset..offset + data.len()].copy_from_slice(data);
            Ok(())
        }

        fn mmu(&mut self, _domain: u16, op: MmuOp) -> Result<(), Errno> {
            if self.refuse_after.is_some_and(|n| self.mmu_ops.len() >= n) {
                return Err(Errno::Einval);
            }
            self.mmu_ops.push(op);
            Ok(())
        }

        fn start(&mut self, domain: u16, regs: &VcpuStart) -> Result<(), Errno> {
            self.started.push((domain, *regs));
            Ok(())
        }

        fn segment_base(&mut self, domain: u16, which: u64, base: u64) -> Result<(), Errno> {
            self.segment_bases.push((domain, which, base));
            Ok(())
        }

        fn destroy(&mut self, domain: u16) -> u64 {
            self.destroyed.push(domain);
            0
        }

        fn console_line(&mut self, domain: u16, line: &[u8]) {
            self.lines
                .push((domain, String::from_utf8_lossy(line).into_owned()));
        }

        fn free_frames(&mut self) -> u64 {
            self.free
        }
    }
}
