//! Xen's error numbers (pv64-abi.md, "Conventions"): a hypercall fails with `-errno` in
//! `rax`. The values are Xen's own (`public/errno.h`), which happen to match Linux on x86.

use core::fmt;

abi_enum! {
    /// A Xen errno. [`Errno::rax`] gives the register value of a failed hypercall.
    pub enum Errno: u32 {
        /// Operation not permitted (e.g. a frame the domain may not map as asked).
        Eperm = 1,
        /// No such entry (a vCPU id that does not exist).
        Enoent = 2,
        /// No such domain.
        Esrch = 3,
        /// Interrupted.
        Eintr = 4,
        /// No such device or address (misaligned vcpu_info registration).
        Enxio = 6,
        /// Argument list too long.
        E2big = 7,
        /// Try again.
        Eagain = 11,
        /// Out of memory.
        Enomem = 12,
        /// Permission denied.
        Eacces = 13,
        /// Bad guest address: copying an argument faulted.
        Efault = 14,
        /// Busy: the frame has another type (a page table mapped writable, …).
        Ebusy = 16,
        /// Already exists.
        Eexist = 17,
        /// No such device.
        Enodev = 19,
        /// Bad argument.
        Einval = 22,
        /// No space left.
        Enospc = 28,
        /// Hypercall or sub-op not implemented.
        Enosys = 38,
        /// Timer expired.
        Etime = 62,
        /// Internal only: the hypercall is to be continued (never seen by a guest).
        Erestart = 85,
        /// Operation not supported.
        Eopnotsupp = 95,
    }
}

impl Errno {
    /// `-errno` as the 64-bit `rax` of a failed hypercall.
    pub const fn rax(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// The errno a failed hypercall's `rax` holds, if it is one.
    pub const fn from_rax(rax: u64) -> Option<Self> {
        Self::from_raw((rax as i64).wrapping_neg() as u64)
    }

    /// The symbolic name, as Xen's header spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Eperm => "EPERM",
            Self::Enoent => "ENOENT",
            Self::Esrch => "ESRCH",
            Self::Eintr => "EINTR",
            Self::Enxio => "ENXIO",
            Self::E2big => "E2BIG",
            Self::Eagain => "EAGAIN",
            Self::Enomem => "ENOMEM",
            Self::Eacces => "EACCES",
            Self::Efault => "EFAULT",
            Self::Ebusy => "EBUSY",
            Self::Eexist => "EEXIST",
            Self::Enodev => "ENODEV",
            Self::Einval => "EINVAL",
            Self::Enospc => "ENOSPC",
            Self::Enosys => "ENOSYS",
            Self::Etime => "ETIME",
            Self::Erestart => "ERESTART",
            Self::Eopnotsupp => "EOPNOTSUPP",
        }
    }
}

impl fmt::Display for Errno {
    /// `-EINVAL`: how a hypercall result is written in logs and tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_xens() {
        let expected = [
            (Errno::Eperm, 1),
            (Errno::Enoent, 2),
            (Errno::Esrch, 3),
            (Errno::Eintr, 4),
            (Errno::Enxio, 6),
            (Errno::E2big, 7),
            (Errno::Eagain, 11),
            (Errno::Enomem, 12),
            (Errno::Eacces, 13),
            (Errno::Efault, 14),
            (Errno::Ebusy, 16),
            (Errno::Eexist, 17),
            (Errno::Enodev, 19),
            (Errno::Einval, 22),
            (Errno::Enospc, 28),
            (Errno::Enosys, 38),
            (Errno::Etime, 62),
            (Errno::Erestart, 85),
            (Errno::Eopnotsupp, 95),
        ];
        assert_eq!(Errno::ALL.len(), expected.len());
        for (errno, value) in expected {
            assert_eq!(errno.raw(), value);
            assert_eq!(Errno::from_raw(u64::from(value)), Some(errno));
        }
    }

    #[test]
    fn rax_round_trip_and_display() {
        assert_eq!(Errno::Efault.rax(), 0xffff_ffff_ffff_fff2);
        assert_eq!(Errno::Enosys.rax(), (-38i64) as u64);
        for &errno in Errno::ALL {
            assert_eq!(Errno::from_rax(errno.rax()), Some(errno));
        }
        assert_eq!(Errno::from_rax(0), None);
        assert_eq!(
            Errno::from_rax(22),
            None,
            "a positive value is not an error"
        );
        assert_eq!(Errno::Einval.to_string(), "-EINVAL");
    }
}
