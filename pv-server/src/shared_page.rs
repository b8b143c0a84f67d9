//! A domain's shared_info frame as pv-server reads and writes it (through the nucleus'
//! frame calls on the target, a byte array in the tests), with the few typed accesses
//! event delivery and time keeping need (pv64-abi.md §2.4).
//!
//! pv-server writes while the domain's vCPU is not running (it waits for a reply or is
//! blocked), so a read-modify-write of a word is not raced by the guest on one CPU.

use xen_abi::Errno;
use xen_abi::shared_info::SharedInfo;

/// `shared_info` offsets (const-asserted in `xen_abi::shared_info`).
pub const PENDING: usize = 2048;
pub const MASK: usize = 2560;
pub const WC_VERSION: usize = 3072;
/// In each 64-byte `vcpu_info`.
pub const UPCALL_PENDING: usize = 0;
pub const UPCALL_MASK: usize = 1;
pub const PENDING_SEL: usize = 8;
pub const TIME: usize = 32;

/// The shared_info frame.
pub trait SharedPage {
    fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<(), Errno>;
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno>;

    fn read_u64(&mut self, offset: usize) -> Result<u64, Errno> {
        let mut word = [0; 8];
        self.read(offset, &mut word)?;
        Ok(u64::from_le_bytes(word))
    }

    fn write_u64(&mut self, offset: usize, value: u64) -> Result<(), Errno> {
        self.write(offset, &value.to_le_bytes())
    }

    fn read_u8(&mut self, offset: usize) -> Result<u8, Errno> {
        let mut byte = [0; 1];
        self.read(offset, &mut byte)?;
        Ok(byte[0])
    }

    fn write_u8(&mut self, offset: usize, value: u8) -> Result<(), Errno> {
        self.write(offset, &[value])
    }
}

/// The offset of vCPU `vcpu`'s `vcpu_info` field at `field`.
pub fn vcpu_field(vcpu: u32, field: usize) -> usize {
    SharedInfo::vcpu_info_offset(vcpu as usize).unwrap_or(0) + field
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A shared_info frame in memory.
    pub struct Page(pub std::vec::Vec<u8>);

    impl Default for Page {
        fn default() -> Self {
            Self(std::vec![0; 4096])
        }
    }

    impl SharedPage for Page {
        fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
            out.copy_from_slice(
                self.0
                    .get(offset..offset + out.len())
                    .ok_or(Errno::Efault)?,
            );
            Ok(())
        }

        fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
            self.0
                .get_mut(offset..offset + bytes.len())
                .ok_or(Errno::Efault)?
                .copy_from_slice(bytes);
            Ok(())
        }
    }
}
