//! The part of a guest vCPU's state that is mechanism (issue 16 point 4): which half of the
//! guest runs (kernel or user, both at CPL 3) and the user-mode tables. Xen's
//! `toggle_guest_mode`: the nucleus flips the mode only when pv-server's `GuestResume` asks
//! for the other one, and refuses user mode without a user L4.
use bsp_x86_64::paging::PhysAddr;
use ipc::message::GuestMode;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestVcpu {
    /// Which half runs.
    pub mode: GuestMode,
    /// The machine address of the user-mode L4 (`MMUEXT_NEW_USER_BASEPTR`), if any.
    pub user_root: Option<PhysAddr>,
}

/// Why a mode toggle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoUserTables;

impl GuestVcpu {
    pub const NEW: Self = Self {
        mode: GuestMode::Kernel,
        user_root: None,
    };

    /// The tables the CPU walks in the current mode, given the kernel ones.
    pub fn root(&self, kernel_root: Option<PhysAddr>) -> Option<PhysAddr> {
        match self.mode {
            GuestMode::Kernel => kernel_root,
            GuestMode::User => self.user_root,
        }
    }

    /// Switches to `mode`; user mode needs user tables.
    pub fn enter(&mut self, mode: GuestMode) -> Result<(), NoUserTables> {
        if mode == GuestMode::User && self.user_root.is_none() {
            return Err(NoUserTables);
        }
        self.mode = mode;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mode_needs_user_tables_and_picks_them() {
        let kernel = Some(PhysAddr::new(0x1000));
        let mut vcpu = GuestVcpu::NEW;
        assert_eq!(vcpu.enter(GuestMode::User), Err(NoUserTables));
        assert_eq!(vcpu.root(kernel), kernel);
        vcpu.user_root = Some(PhysAddr::new(0x2000));
        vcpu.enter(GuestMode::User).unwrap();
        assert_eq!(vcpu.root(kernel), Some(PhysAddr::new(0x2000)));
        vcpu.enter(GuestMode::Kernel).unwrap();
        assert_eq!(vcpu.root(kernel), kernel);
    }
}
