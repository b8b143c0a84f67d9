//! The domain table: which domain numbers are live, each one's name, shared_info frame and
//! current L4. Numbers run from 1 to `MAX_DOMAINS`; a number pv-server passes is an
//! allegation until [`domain_number`] found it live.
use crate::racy::racy_static;
use heapless::{String, Vec};
use ipc::domain::{MAX_DOMAINS, MAX_GDT_FRAMES, MAX_LDT_FRAMES, MAX_SHARED_FRAMES};
use ipc::syscall::SyscallError;
use xen_abi::Mfn;

pub struct Domain {
    pub name: String<24>,
    pub shared_info: Mfn,
    /// The L4 the vCPU runs on (holds one type reference).
    pub base: Option<Mfn>,
    /// The L4 of the vCPU's user mode (`NEW_USER_BASEPTR`; holds one type reference).
    pub user_base: Option<Mfn>,
    /// The GDT's and LDT's frames (each holds a descriptor-page type reference).
    pub gdt: Vec<Mfn, MAX_GDT_FRAMES>,
    pub ldt: Vec<Mfn, MAX_LDT_FRAMES>,
    /// The reserved GDT page of its descriptor-table window, once it has one (`window`).
    pub reserved: Option<Mfn>,
    /// Frames shared with the domain besides shared_info (`domain_share`: grant frames).
    pub shared: Vec<Mfn, MAX_SHARED_FRAMES>,
}

racy_static! {
    fn cell() -> [Option<Domain>; MAX_DOMAINS] = [const { None }; MAX_DOMAINS];
}

pub fn domains() -> &'static mut [Option<Domain>; MAX_DOMAINS] {
    // SAFETY: reached only from the syscall path, once per call, interrupts off, one CPU.
    unsafe { &mut *cell().get() }
}

/// A domain number that names a live domain.
pub fn domain_number(raw: u64) -> Result<u16, SyscallError> {
    let number = u16::try_from(raw).map_err(|_| SyscallError::NotPermitted)?;
    match number
        .checked_sub(1)
        .and_then(|i| domains().get(usize::from(i)))
    {
        Some(Some(_)) => Ok(number),
        _ => Err(SyscallError::NotPermitted),
    }
}

/// The live domain `number` ([`domain_number`] checked it).
pub fn domain(number: u16) -> &'static mut Domain {
    match domains()[usize::from(number - 1)].as_mut() {
        Some(domain) => domain,
        None => unreachable!("domain_number checked it"),
    }
}
