//! The frame-ownership table: which domain owns each machine frame, and what each frame is
//! used as (architecture.md §10; pv64-abi.md §5.1).
//!
//! One [`FrameInfo`] per machine frame of a contiguous range (the RAM the nucleus manages),
//! in storage the caller provides, so the table works without a heap and the host tests run
//! it over a `Vec`. It records:
//!
//! * the owner: nobody (the hypervisor's or free), a domain, or "shared with" a domain (a
//!   hypervisor frame a guest may map, such as its shared_info);
//! * the **type** of a domain frame (none, writable, L1-L4 page table, descriptor table) with
//!   its **type count**: a frame has one type at a time and changes type only while its count
//!   is 0, so no frame is ever a page table and writably mapped at once (Xen's rule I1);
//! * a **general count** of other references (read-only mappings), and the `validated` and
//!   `pinned` flags.
//!
//! The table only keeps books; it never touches a frame. Validating a page table's contents
//! when it first takes a table type is the caller's job ([`crate::guest_pte`]); the table
//! says when that is needed ([`Acquired::NeedsValidation`]).

use core::fmt;

use xen_abi::Mfn;

/// A domain: a PV guest the nucleus runs. Numbered by the nucleus, never by a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

/// Who a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The hypervisor's (or free): no guest may map it.
    Nobody,
    /// One of the domain's own pages.
    Domain(DomainId),
    /// A hypervisor frame the domain may map, read-write (shared_info, grant frames).
    SharedWith(DomainId),
}

/// What a domain frame is used as (Xen's page types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    /// No use that constrains it.
    None,
    /// Mapped writable somewhere.
    Writable,
    /// A page table of this level (1 = L1 … 4 = L4).
    PageTable(TableLevel),
    /// Part of a GDT or LDT.
    SegDesc,
}

/// A page-table level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TableLevel {
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
}

impl TableLevel {
    /// The level the entries of this one point at (`None` for L1, whose entries map pages).
    pub const fn below(self) -> Option<Self> {
        match self {
            Self::L4 => Some(Self::L3),
            Self::L3 => Some(Self::L2),
            Self::L2 => Some(Self::L1),
            Self::L1 => None,
        }
    }
}

impl PageType {
    /// True for the types that must never be mapped writable.
    pub const fn is_protected(self) -> bool {
        matches!(self, Self::PageTable(_) | Self::SegDesc)
    }

    const fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Writable => 1,
            Self::PageTable(level) => 1 + level as u8,
            Self::SegDesc => 6,
        }
    }

    const fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Writable,
            2 => Self::PageTable(TableLevel::L1),
            3 => Self::PageTable(TableLevel::L2),
            4 => Self::PageTable(TableLevel::L3),
            5 => Self::PageTable(TableLevel::L4),
            6 => Self::SegDesc,
            _ => Self::None,
        }
    }
}

const OWNER_NONE: u16 = u16::MAX;
const FLAG_SHARED: u8 = 1 << 0;
const FLAG_VALIDATED: u8 = 1 << 1;
const FLAG_PINNED: u8 = 1 << 2;

/// The record of one machine frame: 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FrameInfo {
    owner: u16,
    kind: u8,
    flags: u8,
    type_count: u32,
    general_count: u32,
}

const _: () = assert!(size_of::<FrameInfo>() == 12);

impl FrameInfo {
    /// Owned by nobody, no type, no references.
    pub const FREE: Self = Self {
        owner: OWNER_NONE,
        kind: 0,
        flags: 0,
        type_count: 0,
        general_count: 0,
    };

    pub const fn owner(&self) -> Owner {
        if self.owner == OWNER_NONE {
            Owner::Nobody
        } else if self.flags & FLAG_SHARED != 0 {
            Owner::SharedWith(DomainId(self.owner))
        } else {
            Owner::Domain(DomainId(self.owner))
        }
    }

    pub const fn page_type(&self) -> PageType {
        PageType::from_code(self.kind)
    }

    pub const fn type_count(&self) -> u32 {
        self.type_count
    }

    pub const fn general_count(&self) -> u32 {
        self.general_count
    }

    pub const fn is_validated(&self) -> bool {
        self.flags & FLAG_VALIDATED != 0
    }

    pub const fn is_pinned(&self) -> bool {
        self.flags & FLAG_PINNED != 0
    }

    /// The type this frame has in force (a type whose count fell to 0 no longer binds).
    pub const fn current_type(&self) -> PageType {
        if self.type_count == 0 {
            PageType::None
        } else {
            self.page_type()
        }
    }
}

/// Why the table refused a change. Nothing changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnershipError {
    /// The frame is not in the table's range: not RAM the nucleus manages (MMIO, a hole).
    NotRam(Mfn),
    /// The frame already belongs to someone (assign/share of a taken frame).
    Taken { mfn: Mfn, owner: Owner },
    /// The frame is not the domain's (release, type or reference on a foreign frame).
    NotOwner {
        mfn: Mfn,
        domain: DomainId,
        owner: Owner,
    },
    /// The frame still has references or a type and cannot be released.
    InUse {
        mfn: Mfn,
        type_count: u32,
        general_count: u32,
    },
    /// The frame has another type in force.
    TypeConflict {
        mfn: Mfn,
        has: PageType,
        wanted: PageType,
    },
    /// A count would overflow, or one was dropped that was never taken.
    CountMismatch(Mfn),
    /// Pin of a pinned frame, unpin of an unpinned one, or pin without a table type.
    PinState(Mfn),
    /// Domain id 0xffff is the table's "nobody".
    ReservedDomain,
}

impl fmt::Display for OwnershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRam(mfn) => write!(f, "{mfn}: not managed RAM"),
            Self::Taken { mfn, owner } => write!(f, "{mfn}: already owned ({owner:?})"),
            Self::NotOwner { mfn, domain, owner } => {
                write!(f, "{mfn}: not {domain}'s ({owner:?})")
            }
            Self::InUse {
                mfn,
                type_count,
                general_count,
            } => write!(
                f,
                "{mfn}: still in use ({type_count} type refs, {general_count} refs)"
            ),
            Self::TypeConflict { mfn, has, wanted } => {
                write!(f, "{mfn}: is {has:?}, cannot become {wanted:?}")
            }
            Self::CountMismatch(mfn) => write!(f, "{mfn}: reference count mismatch"),
            Self::PinState(mfn) => write!(f, "{mfn}: pin state does not allow this"),
            Self::ReservedDomain => f.write_str("domain id 0xffff is reserved"),
        }
    }
}

/// What taking a type reference found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The frame had that type already (validated, if a table type).
    Existing,
    /// The frame took a table type just now: the caller validates every entry, then calls
    /// [`FrameTable::mark_validated`], or [`FrameTable::put_type`] if validation failed.
    NeedsValidation,
    /// The frame took a non-table type just now (writable, descriptor, …).
    Fresh,
}

/// The ownership table over machine frames `[base, base + storage.len())`.
pub struct FrameTable<S> {
    base: u64,
    frames: S,
}

impl<S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>> FrameTable<S> {
    /// A table for the frames from `base` on, one per element of `storage`, all reset to
    /// [`FrameInfo::FREE`].
    pub fn new(base: Mfn, mut storage: S) -> Self {
        storage.as_mut().fill(FrameInfo::FREE);
        Self {
            base: base.0,
            frames: storage,
        }
    }

    /// The frames the table covers.
    pub fn range(&self) -> core::ops::Range<u64> {
        self.base..self.base + self.frames.as_ref().len() as u64
    }

    fn index(&self, mfn: Mfn) -> Result<usize, OwnershipError> {
        mfn.0
            .checked_sub(self.base)
            .filter(|&i| i < self.frames.as_ref().len() as u64)
            .map(|i| i as usize)
            .ok_or(OwnershipError::NotRam(mfn))
    }

    /// Every record, in frame order (for diagnostics and tests).
    pub fn infos(&self) -> &[FrameInfo] {
        self.frames.as_ref()
    }

    /// The record of `mfn` (`None` outside the table: not RAM).
    pub fn info(&self, mfn: Mfn) -> Option<&FrameInfo> {
        let index = self.index(mfn).ok()?;
        self.frames.as_ref().get(index)
    }

    fn entry(&mut self, mfn: Mfn) -> Result<&mut FrameInfo, OwnershipError> {
        let index = self.index(mfn)?;
        Ok(&mut self.frames.as_mut()[index])
    }

    /// Who owns `mfn` (`None` outside the table).
    pub fn owner(&self, mfn: Mfn) -> Option<Owner> {
        self.info(mfn).map(FrameInfo::owner)
    }

    /// Gives an unowned frame to `domain` as one of its pages.
    pub fn assign(&mut self, mfn: Mfn, domain: DomainId) -> Result<(), OwnershipError> {
        self.take(mfn, domain, 0)
    }

    /// Lets `domain` map a hypervisor frame (its shared_info, a grant frame).
    pub fn share(&mut self, mfn: Mfn, domain: DomainId) -> Result<(), OwnershipError> {
        self.take(mfn, domain, FLAG_SHARED)
    }

    fn take(&mut self, mfn: Mfn, domain: DomainId, flags: u8) -> Result<(), OwnershipError> {
        if domain.0 == OWNER_NONE {
            return Err(OwnershipError::ReservedDomain);
        }
        let info = self.entry(mfn)?;
        if info.owner != OWNER_NONE {
            return Err(OwnershipError::Taken {
                mfn,
                owner: info.owner(),
            });
        }
        *info = FrameInfo {
            owner: domain.0,
            flags,
            ..FrameInfo::FREE
        };
        Ok(())
    }

    /// Takes one frame back from `domain` (its own page or one shared with it). Refused
    /// while the frame has references: a live mapping would outlive the ownership.
    pub fn release(&mut self, mfn: Mfn, domain: DomainId) -> Result<(), OwnershipError> {
        let info = self.entry(mfn)?;
        let owner = info.owner();
        if !matches!(owner, Owner::Domain(d) | Owner::SharedWith(d) if d == domain) {
            return Err(OwnershipError::NotOwner { mfn, domain, owner });
        }
        if info.type_count != 0 || info.general_count != 0 {
            return Err(OwnershipError::InUse {
                mfn,
                type_count: info.type_count,
                general_count: info.general_count,
            });
        }
        *info = FrameInfo::FREE;
        Ok(())
    }

    /// Tears a whole domain down: every frame it owns or shares goes back to nobody,
    /// whatever its counts (its page tables go with it, so no reference survives), and
    /// `freed` is called with each of the domain's own frames for the allocator. Returns
    /// how many frames were the domain's own.
    pub fn release_domain(&mut self, domain: DomainId, mut freed: impl FnMut(Mfn)) -> u64 {
        let base = self.base;
        let mut count = 0;
        for (index, info) in self.frames.as_mut().iter_mut().enumerate() {
            match info.owner() {
                Owner::Domain(d) if d == domain => {
                    *info = FrameInfo::FREE;
                    freed(Mfn(base + index as u64));
                    count += 1;
                }
                Owner::SharedWith(d) if d == domain => *info = FrameInfo::FREE,
                _ => {}
            }
        }
        count
    }

    /// Frames `domain` owns (not counting shared ones).
    pub fn count_owned(&self, domain: DomainId) -> u64 {
        self.frames
            .as_ref()
            .iter()
            .filter(|info| info.owner() == Owner::Domain(domain))
            .count() as u64
    }

    /// Checks that `domain` may reference `mfn`: its own, or shared with it.
    pub fn check_owner(&self, mfn: Mfn, domain: DomainId) -> Result<Owner, OwnershipError> {
        let owner = self.info(mfn).ok_or(OwnershipError::NotRam(mfn))?.owner();
        match owner {
            Owner::Domain(d) | Owner::SharedWith(d) if d == domain => Ok(owner),
            _ => Err(OwnershipError::NotOwner { mfn, domain, owner }),
        }
    }

    /// Takes a general reference (a read-only mapping) on a frame `domain` may reference.
    pub fn get_ref(&mut self, mfn: Mfn, domain: DomainId) -> Result<(), OwnershipError> {
        self.check_owner(mfn, domain)?;
        let info = self.entry(mfn)?;
        info.general_count = info
            .general_count
            .checked_add(1)
            .ok_or(OwnershipError::CountMismatch(mfn))?;
        Ok(())
    }

    pub fn put_ref(&mut self, mfn: Mfn) -> Result<(), OwnershipError> {
        let info = self.entry(mfn)?;
        info.general_count = info
            .general_count
            .checked_sub(1)
            .ok_or(OwnershipError::CountMismatch(mfn))?;
        Ok(())
    }

    /// Takes a type reference of `wanted` on one of `domain`'s frames (I1: refused while
    /// another type is in force). Shared frames take only [`PageType::Writable`]: a
    /// hypervisor frame never becomes a guest page table or descriptor table.
    pub fn get_type(
        &mut self,
        mfn: Mfn,
        domain: DomainId,
        wanted: PageType,
    ) -> Result<Acquired, OwnershipError> {
        let owner = self.check_owner(mfn, domain)?;
        let info = self.entry(mfn)?;
        if matches!(owner, Owner::SharedWith(_)) && wanted != PageType::Writable {
            return Err(OwnershipError::TypeConflict {
                mfn,
                has: PageType::Writable,
                wanted,
            });
        }
        if info.type_count > 0 {
            let has = info.page_type();
            if has != wanted {
                return Err(OwnershipError::TypeConflict { mfn, has, wanted });
            }
            info.type_count = info
                .type_count
                .checked_add(1)
                .ok_or(OwnershipError::CountMismatch(mfn))?;
            return Ok(Acquired::Existing);
        }
        info.kind = wanted.code();
        info.type_count = 1;
        info.flags &= !(FLAG_VALIDATED | FLAG_PINNED);
        Ok(if matches!(wanted, PageType::PageTable(_)) {
            Acquired::NeedsValidation
        } else {
            Acquired::Fresh
        })
    }

    /// Records that a table-typed frame's entries were all validated.
    pub fn mark_validated(&mut self, mfn: Mfn) -> Result<(), OwnershipError> {
        let info = self.entry(mfn)?;
        if info.type_count == 0 {
            return Err(OwnershipError::CountMismatch(mfn));
        }
        info.flags |= FLAG_VALIDATED;
        Ok(())
    }

    /// Drops a type reference. At 0 the type no longer binds (the frame may be retyped) and
    /// the `validated` flag goes; returns true then, so that the caller drops the references
    /// the table's entries held.
    pub fn put_type(&mut self, mfn: Mfn) -> Result<bool, OwnershipError> {
        let info = self.entry(mfn)?;
        info.type_count = info
            .type_count
            .checked_sub(1)
            .ok_or(OwnershipError::CountMismatch(mfn))?;
        if info.type_count == 0 {
            info.kind = PageType::None.code();
            info.flags &= !(FLAG_VALIDATED | FLAG_PINNED);
            return Ok(true);
        }
        Ok(false)
    }

    /// Marks a table-typed frame pinned (the caller holds the pin's type reference).
    pub fn pin(&mut self, mfn: Mfn) -> Result<(), OwnershipError> {
        let info = self.entry(mfn)?;
        if info.is_pinned() || !matches!(info.current_type(), PageType::PageTable(_)) {
            return Err(OwnershipError::PinState(mfn));
        }
        info.flags |= FLAG_PINNED;
        Ok(())
    }

    /// Clears the pin; the caller then drops the pin's type reference.
    pub fn unpin(&mut self, mfn: Mfn) -> Result<(), OwnershipError> {
        let info = self.entry(mfn)?;
        if !info.is_pinned() {
            return Err(OwnershipError::PinState(mfn));
        }
        info.flags &= !FLAG_PINNED;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: DomainId = DomainId(1);
    const B: DomainId = DomainId(2);
    const L1: PageType = PageType::PageTable(TableLevel::L1);
    const L4: PageType = PageType::PageTable(TableLevel::L4);

    fn table(frames: usize) -> FrameTable<std::vec::Vec<FrameInfo>> {
        FrameTable::new(Mfn(0x100), std::vec![FrameInfo::FREE; frames])
    }

    #[test]
    fn assign_share_release() {
        let mut t = table(16);
        assert_eq!(t.range(), 0x100..0x110);
        assert_eq!(t.owner(Mfn(0x100)), Some(Owner::Nobody));
        assert_eq!(t.owner(Mfn(0xff)), None);
        assert_eq!(t.owner(Mfn(0x110)), None);
        t.assign(Mfn(0x100), A).unwrap();
        t.share(Mfn(0x101), A).unwrap();
        assert_eq!(t.owner(Mfn(0x100)), Some(Owner::Domain(A)));
        assert_eq!(t.owner(Mfn(0x101)), Some(Owner::SharedWith(A)));
        assert_eq!(
            t.assign(Mfn(0x100), B),
            Err(OwnershipError::Taken {
                mfn: Mfn(0x100),
                owner: Owner::Domain(A)
            })
        );
        assert_eq!(
            t.assign(Mfn(0x110), B),
            Err(OwnershipError::NotRam(Mfn(0x110)))
        );
        assert_eq!(
            t.assign(Mfn(0x102), DomainId(0xffff)),
            Err(OwnershipError::ReservedDomain)
        );
        assert_eq!(
            t.release(Mfn(0x100), B),
            Err(OwnershipError::NotOwner {
                mfn: Mfn(0x100),
                domain: B,
                owner: Owner::Domain(A)
            })
        );
        t.get_ref(Mfn(0x100), A).unwrap();
        assert_eq!(
            t.release(Mfn(0x100), A),
            Err(OwnershipError::InUse {
                mfn: Mfn(0x100),
                type_count: 0,
                general_count: 1
            })
        );
        t.put_ref(Mfn(0x100)).unwrap();
        t.release(Mfn(0x100), A).unwrap();
        assert_eq!(t.owner(Mfn(0x100)), Some(Owner::Nobody));
        assert_eq!(
            t.put_ref(Mfn(0x100)),
            Err(OwnershipError::CountMismatch(Mfn(0x100)))
        );
    }

    #[test]
    fn one_type_at_a_time() {
        let mut t = table(4);
        let f = Mfn(0x100);
        t.assign(f, A).unwrap();
        assert_eq!(t.get_type(f, A, L1), Ok(Acquired::NeedsValidation));
        t.mark_validated(f).unwrap();
        assert!(t.info(f).unwrap().is_validated());
        assert_eq!(t.get_type(f, A, L1), Ok(Acquired::Existing));
        // A page table can never become writable (I1).
        assert_eq!(
            t.get_type(f, A, PageType::Writable),
            Err(OwnershipError::TypeConflict {
                mfn: f,
                has: L1,
                wanted: PageType::Writable
            })
        );
        assert_eq!(t.put_type(f), Ok(false));
        assert_eq!(t.put_type(f), Ok(true));
        assert!(!t.info(f).unwrap().is_validated());
        assert_eq!(t.info(f).unwrap().current_type(), PageType::None);
        // Count 0: it may change type now, and a writable frame cannot become a table.
        assert_eq!(t.get_type(f, A, PageType::Writable), Ok(Acquired::Fresh));
        assert!(matches!(
            t.get_type(f, A, L4),
            Err(OwnershipError::TypeConflict { .. })
        ));
        assert!(matches!(
            t.get_type(f, A, PageType::SegDesc),
            Err(OwnershipError::TypeConflict { .. })
        ));
        assert_eq!(t.put_type(f), Ok(true));
        assert_eq!(t.put_type(f), Err(OwnershipError::CountMismatch(f)));
        // Another domain's frame takes no type at all.
        assert!(matches!(
            t.get_type(f, B, PageType::Writable),
            Err(OwnershipError::NotOwner { .. })
        ));
    }

    #[test]
    fn shared_frames_are_only_writable() {
        let mut t = table(4);
        let f = Mfn(0x102);
        t.share(f, A).unwrap();
        assert_eq!(t.get_type(f, A, PageType::Writable), Ok(Acquired::Fresh));
        assert!(matches!(
            t.get_type(f, A, L1),
            Err(OwnershipError::TypeConflict { .. })
        ));
        assert!(matches!(
            t.get_ref(f, B),
            Err(OwnershipError::NotOwner { .. })
        ));
    }

    #[test]
    fn pinning() {
        let mut t = table(4);
        let f = Mfn(0x101);
        t.assign(f, A).unwrap();
        assert_eq!(
            t.pin(f),
            Err(OwnershipError::PinState(f)),
            "no table type yet"
        );
        t.get_type(f, A, L4).unwrap();
        t.pin(f).unwrap();
        assert_eq!(t.pin(f), Err(OwnershipError::PinState(f)));
        t.unpin(f).unwrap();
        assert_eq!(t.unpin(f), Err(OwnershipError::PinState(f)));
    }

    #[test]
    fn teardown_returns_every_frame_of_the_domain_only() {
        let mut t = table(8);
        for i in 0..4 {
            t.assign(Mfn(0x100 + i), A).unwrap();
        }
        t.assign(Mfn(0x104), B).unwrap();
        t.share(Mfn(0x105), A).unwrap();
        t.get_type(Mfn(0x100), A, L4).unwrap();
        t.get_ref(Mfn(0x101), A).unwrap();
        assert_eq!(t.count_owned(A), 4);
        let mut freed = std::vec::Vec::new();
        assert_eq!(t.release_domain(A, |mfn| freed.push(mfn.0)), 4);
        assert_eq!(freed, [0x100, 0x101, 0x102, 0x103]);
        assert_eq!(t.count_owned(A), 0);
        assert_eq!(
            t.owner(Mfn(0x105)),
            Some(Owner::Nobody),
            "the share ends too"
        );
        assert_eq!(t.owner(Mfn(0x104)), Some(Owner::Domain(B)));
        assert_eq!(t.info(Mfn(0x100)), Some(&FrameInfo::FREE));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Assign(u8, bool),
        Share(u8, bool),
        Release(u8, bool),
        GetRef(u8, bool),
        PutRef(u8),
        GetType(u8, bool, u8),
        PutType(u8),
        Teardown(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let f = 0u8..12;
        prop_oneof![
            (f.clone(), any::<bool>()).prop_map(|(f, d)| Op::Assign(f, d)),
            (f.clone(), any::<bool>()).prop_map(|(f, d)| Op::Share(f, d)),
            (f.clone(), any::<bool>()).prop_map(|(f, d)| Op::Release(f, d)),
            (f.clone(), any::<bool>()).prop_map(|(f, d)| Op::GetRef(f, d)),
            f.clone().prop_map(Op::PutRef),
            (f.clone(), any::<bool>(), 0u8..7).prop_map(|(f, d, t)| Op::GetType(f, d, t)),
            f.prop_map(Op::PutType),
            any::<bool>().prop_map(Op::Teardown),
        ]
    }

    proptest! {
        /// Whatever sequence of requests arrives: a frame has one owner, a protected type and
        /// a writable type never coexist, a foreign domain never gets a reference, and a
        /// teardown leaves nothing of the domain behind.
        #[test]
        fn invariants_hold_under_any_sequence(ops in prop::collection::vec(op(), 1..200)) {
            let mut t = table(10); // frames 10 and 11 are outside: NotRam
            let dom = |b: bool| if b { A } else { B };
            for op in ops {
                let before: std::vec::Vec<FrameInfo> = t.frames.clone();
                let result = match op {
                    Op::Assign(f, d) => t.assign(Mfn(0x100 + u64::from(f)), dom(d)).map(|_| ()),
                    Op::Share(f, d) => t.share(Mfn(0x100 + u64::from(f)), dom(d)).map(|_| ()),
                    Op::Release(f, d) => t.release(Mfn(0x100 + u64::from(f)), dom(d)),
                    Op::GetRef(f, d) => t.get_ref(Mfn(0x100 + u64::from(f)), dom(d)),
                    Op::PutRef(f) => t.put_ref(Mfn(0x100 + u64::from(f))),
                    Op::GetType(f, d, ty) => {
                        let mfn = Mfn(0x100 + u64::from(f));
                        let wanted = PageType::from_code(ty);
                        let owner = t.owner(mfn);
                        let r = t.get_type(mfn, dom(d), wanted);
                        if r.is_ok() {
                            prop_assert!(matches!(owner, Some(Owner::Domain(x)) | Some(Owner::SharedWith(x)) if x == dom(d)));
                        }
                        r.map(|_| ())
                    }
                    Op::PutType(f) => t.put_type(Mfn(0x100 + u64::from(f))).map(|_| ()),
                    Op::Teardown(d) => {
                        t.release_domain(dom(d), |_| {});
                        prop_assert_eq!(t.count_owned(dom(d)), 0);
                        Ok(())
                    }
                };
                if result.is_err() {
                    prop_assert_eq!(&before, &t.frames, "a refused request changed the table");
                }
                for info in &t.frames {
                    if info.owner() == Owner::Nobody {
                        prop_assert_eq!(info, &FrameInfo::FREE);
                    }
                    if info.type_count() > 0 {
                        prop_assert!(info.owner() != Owner::Nobody);
                    }
                    if let Owner::SharedWith(_) = info.owner() {
                        prop_assert!(!info.current_type().is_protected());
                    }
                }
            }
        }
    }
}
