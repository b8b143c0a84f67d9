//! Per-CPU stack block: the 8-page layout of architecture.md §4, as pure address arithmetic.
//!
//! Owns the page roles, the stack tops derived from them (primary/SL0, #DF/SL3 and the IDT
//! IST stacks), the guard pages and `classify`, which tells a diagnostic dump which stack
//! an address lies on. Does not map pages or program MSRs/the TSS: the nucleus maps
//! `mapped_pages()` and `fred::FredMsrPlan` turns the tops into MSR values.
//!
//! The block is 8 pages, 8-page (32 KiB) aligned, so `rsp & !0x7fff` finds the block (and
//! `cpu_info`) from any address on any of its stacks. Pages 0 and 5 hold shadow stacks; with
//! CET off they stay unmapped and double as guard pages, together with the page below the
//! block. FRED realigns stacks to 64 bytes (fred-facts.md §3.2), so every top is 64-byte
//! aligned and `cpu_info` is a 64-byte block at the very top.

use core::fmt;

use ipc::dump::StackName;

/// Bytes per page.
pub const PAGE_SIZE: u64 = 4096;
/// Pages per block.
pub const PAGES: u64 = 8;
/// Bytes per block, which is also its alignment.
pub const BLOCK_SIZE: u64 = PAGES * PAGE_SIZE;
/// Size of the `cpu_info` block at the top of the primary stack.
pub const CPU_INFO_SIZE: u64 = 64;

/// The role of one page of the block (the discriminant is the page index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StackPage {
    /// Page 0: IST shadow stacks (4 × 1 KiB, read-only); unmapped while CET is off.
    IstShadowStacks = 0,
    /// Page 1: `#MC` stack (IDT IST).
    Mc = 1,
    /// Page 2: NMI stack (IDT IST).
    Nmi = 2,
    /// Page 3: `#DB` stack (IDT IST).
    Db = 3,
    /// Page 4: `#DF` stack (IDT IST, FRED SL3).
    Df = 4,
    /// Page 5: primary shadow stack (read-only); unmapped while CET is off.
    PrimaryShadow = 5,
    /// Pages 6 and 7: primary stack (FRED SL0, TSS.RSP0) with `cpu_info` at the top.
    Primary = 6,
}

impl StackPage {
    /// The role of page `index` (0..=7).
    pub const fn from_index(index: u64) -> Option<Self> {
        Some(match index {
            0 => Self::IstShadowStacks,
            1 => Self::Mc,
            2 => Self::Nmi,
            3 => Self::Db,
            4 => Self::Df,
            5 => Self::PrimaryShadow,
            6 | 7 => Self::Primary,
            _ => return None,
        })
    }

    /// True for the shadow-stack pages, which are guard pages while CET is off.
    pub const fn is_shadow_stack(self) -> bool {
        matches!(self, Self::IstShadowStacks | Self::PrimaryShadow)
    }
}

impl fmt::Display for StackPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IstShadowStacks => "IST shadow stacks",
            Self::Mc => "#MC",
            Self::Nmi => "NMI",
            Self::Db => "#DB",
            Self::Df => "#DF",
            Self::PrimaryShadow => "primary shadow stack",
            Self::Primary => "primary",
        })
    }
}

/// A base that cannot hold a stack block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackBlockError {
    /// The base is not 32 KiB aligned.
    Misaligned { base: u64 },
    /// The block (or the guard page below it) would leave the canonical half it starts in.
    NotCanonical { base: u64 },
}

impl fmt::Display for StackBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { base } => write!(f, "stack block {base:#x} is not 32 KiB aligned"),
            Self::NotCanonical { base } => {
                write!(f, "stack block {base:#x} is not inside one canonical half")
            }
        }
    }
}

/// One page the nucleus must map for a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedPage {
    /// Page index within the block, 0..=7.
    pub index: u8,
    /// Linear address of the page.
    pub address: u64,
    /// Ordinary writable stack page (shadow-stack pages, once CET exists, are not).
    pub writable: bool,
}

/// The stack block of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackBlock {
    base: u64,
}

impl StackBlock {
    /// A block at `base`, which must be 32 KiB aligned, with the block and the guard page
    /// below it inside one canonical half.
    pub const fn new(base: u64) -> Result<Self, StackBlockError> {
        if !base.is_multiple_of(BLOCK_SIZE) {
            return Err(StackBlockError::Misaligned { base });
        }
        let Some(below) = base.checked_sub(PAGE_SIZE) else {
            return Err(StackBlockError::NotCanonical { base });
        };
        let last = base + (BLOCK_SIZE - 1);
        if !crate::msr::is_canonical(below)
            || !crate::msr::is_canonical(last)
            || (below >> 63) != (last >> 63)
        {
            return Err(StackBlockError::NotCanonical { base });
        }
        Ok(Self { base })
    }

    /// Lowest address of the block (page 0).
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Lowest address of page `page`.
    pub const fn page_address(&self, page: StackPage) -> u64 {
        self.base + page as u64 * PAGE_SIZE
    }

    /// One past the highest byte of `page` (for `Primary`, of page 7).
    const fn page_top(&self, page: StackPage) -> u64 {
        match page {
            StackPage::Primary => self.base + BLOCK_SIZE,
            other => self.page_address(other) + PAGE_SIZE,
        }
    }

    /// The 64-byte `cpu_info` block at the very top of the block.
    pub const fn cpu_info(&self) -> u64 {
        self.base + BLOCK_SIZE - CPU_INFO_SIZE
    }

    /// Top of the primary stack, just below `cpu_info`: FRED RSP0 and TSS.RSP0.
    pub const fn primary_top(&self) -> u64 {
        self.cpu_info()
    }

    /// Top of the `#DF` stack (page 4): FRED RSP3 and the IDT `#DF` IST entry.
    pub const fn df_top(&self) -> u64 {
        self.page_top(StackPage::Df)
    }

    /// Top of the `#DB` stack (page 3): IDT IST only (FRED: SL0, no syscall gap).
    pub const fn db_top(&self) -> u64 {
        self.page_top(StackPage::Db)
    }

    /// Top of the NMI stack (page 2): IDT IST only.
    pub const fn nmi_top(&self) -> u64 {
        self.page_top(StackPage::Nmi)
    }

    /// Top of the `#MC` stack (page 1): IDT IST only.
    pub const fn mc_top(&self) -> u64 {
        self.page_top(StackPage::Mc)
    }

    /// Top of the primary shadow-stack page (page 5). Unmapped while CET is off, so a stack
    /// pointer here faults on its first push (used for the unused FRED RSP1).
    pub const fn primary_shadow_top(&self) -> u64 {
        self.page_top(StackPage::PrimaryShadow)
    }

    /// Top of the IST shadow-stack page (page 0). Unmapped while CET is off (used for the
    /// unused FRED RSP2).
    pub const fn ist_shadow_top(&self) -> u64 {
        self.page_top(StackPage::IstShadowStacks)
    }

    /// Guard pages while CET is off: the page below the block, page 0 and page 5.
    pub const fn guard_pages(&self) -> [u64; 3] {
        [
            self.base - PAGE_SIZE,
            self.page_address(StackPage::IstShadowStacks),
            self.page_address(StackPage::PrimaryShadow),
        ]
    }

    /// The pages to map (CET off): 1–4 and 6–7, all writable, lowest first.
    pub fn mapped_pages(&self) -> impl Iterator<Item = MappedPage> + use<> {
        let base = self.base;
        (0..PAGES as u8)
            .filter(|&index| matches!(StackPage::from_index(index as u64), Some(page) if !page.is_shadow_stack()))
            .map(move |index| MappedPage { index, address: base + index as u64 * PAGE_SIZE, writable: true })
    }

    /// Which page of this block `addr` lies in, or `None` outside the block. Used by the
    /// register dump to name the stack an event arrived on.
    pub const fn classify(&self, addr: u64) -> Option<StackPage> {
        if addr < self.base || addr - self.base >= BLOCK_SIZE {
            return None;
        }
        StackPage::from_index((addr - self.base) / PAGE_SIZE)
    }

    /// The register dump's name for the stack `rsp` is on: a page of this block, `User` for a
    /// lower-half address, `Unknown` otherwise (e.g. another CPU's block or a guard page).
    pub const fn stack_name(&self, rsp: u64) -> StackName {
        match self.classify_stack_pointer(rsp) {
            Some(StackPage::Primary) => StackName::Primary,
            Some(StackPage::Df) => StackName::DoubleFault,
            Some(StackPage::Db) => StackName::Debug,
            Some(StackPage::Nmi) => StackName::Nmi,
            Some(StackPage::Mc) => StackName::MachineCheck,
            Some(StackPage::IstShadowStacks | StackPage::PrimaryShadow) => StackName::Unknown,
            None if rsp >> 63 == 0 => StackName::User,
            None => StackName::Unknown,
        }
    }

    /// Like [`classify`](Self::classify), but for a stack *top*: an empty stack's pointer
    /// equals the top, which is the first byte of the next page.
    pub const fn classify_stack_pointer(&self, rsp: u64) -> Option<StackPage> {
        if rsp == 0 {
            return None;
        }
        self.classify(rsp - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xffff_8000_0010_0000;

    #[test]
    fn rejects_bad_bases() {
        assert_eq!(
            StackBlock::new(BASE + 0x1000),
            Err(StackBlockError::Misaligned {
                base: BASE + 0x1000
            })
        );
        assert_eq!(
            StackBlock::new(0),
            Err(StackBlockError::NotCanonical { base: 0 })
        );
        assert_eq!(
            StackBlock::new(0xffff_8000_0000_0000),
            Err(StackBlockError::NotCanonical {
                base: 0xffff_8000_0000_0000
            })
        );
        assert_eq!(
            StackBlock::new(0x0000_7fff_ffff_8000),
            Ok(StackBlock {
                base: 0x0000_7fff_ffff_8000
            })
        );
        assert_eq!(
            StackBlock::new(0x0000_8000_0000_0000),
            Err(StackBlockError::NotCanonical {
                base: 0x0000_8000_0000_0000
            })
        );
    }

    #[test]
    fn tops() {
        let block = StackBlock::new(BASE).unwrap();
        assert_eq!(block.cpu_info(), 0xffff_8000_0010_7fc0);
        assert_eq!(block.primary_top(), 0xffff_8000_0010_7fc0);
        assert_eq!(block.primary_shadow_top(), 0xffff_8000_0010_6000);
        assert_eq!(block.df_top(), 0xffff_8000_0010_5000);
        assert_eq!(block.db_top(), 0xffff_8000_0010_4000);
        assert_eq!(block.nmi_top(), 0xffff_8000_0010_3000);
        assert_eq!(block.mc_top(), 0xffff_8000_0010_2000);
        assert_eq!(block.ist_shadow_top(), 0xffff_8000_0010_1000);
        for top in [
            block.primary_top(),
            block.df_top(),
            block.db_top(),
            block.nmi_top(),
            block.mc_top(),
        ] {
            assert_eq!(top % 64, 0);
        }
        assert_eq!(
            block.guard_pages(),
            [
                0xffff_8000_000f_f000,
                0xffff_8000_0010_0000,
                0xffff_8000_0010_5000
            ]
        );
    }

    #[test]
    fn mapped_pages_skip_guards() {
        let block = StackBlock::new(BASE).unwrap();
        let pages: Vec<(u8, u64, bool)> = block
            .mapped_pages()
            .map(|p| (p.index, p.address, p.writable))
            .collect();
        assert_eq!(
            pages,
            vec![
                (1, BASE + 0x1000, true),
                (2, BASE + 0x2000, true),
                (3, BASE + 0x3000, true),
                (4, BASE + 0x4000, true),
                (6, BASE + 0x6000, true),
                (7, BASE + 0x7000, true),
            ]
        );
        for guard in block.guard_pages() {
            assert!(block.mapped_pages().all(|p| p.address != guard));
        }
    }

    #[test]
    fn classify_every_page() {
        let block = StackBlock::new(BASE).unwrap();
        assert_eq!(block.classify(BASE - 1), None);
        assert_eq!(block.classify(BASE), Some(StackPage::IstShadowStacks));
        assert_eq!(block.classify(BASE + 0x1fff), Some(StackPage::Mc));
        assert_eq!(block.classify(BASE + 0x2000), Some(StackPage::Nmi));
        assert_eq!(block.classify(BASE + 0x3800), Some(StackPage::Db));
        assert_eq!(block.classify(block.df_top() - 8), Some(StackPage::Df));
        assert_eq!(
            block.classify(BASE + 0x5000),
            Some(StackPage::PrimaryShadow)
        );
        assert_eq!(block.classify(BASE + 0x6000), Some(StackPage::Primary));
        assert_eq!(block.classify(block.cpu_info()), Some(StackPage::Primary));
        assert_eq!(block.classify(BASE + BLOCK_SIZE), None);
        assert_eq!(
            block.classify_stack_pointer(block.df_top()),
            Some(StackPage::Df)
        );
        assert_eq!(
            block.classify_stack_pointer(block.primary_top()),
            Some(StackPage::Primary)
        );
    }

    #[test]
    fn stack_names_for_the_dump() {
        let block = StackBlock::new(BASE).unwrap();
        assert_eq!(
            block.stack_name(block.primary_top() - 0xc0),
            StackName::Primary
        );
        assert_eq!(
            block.stack_name(block.df_top() - 0xc0),
            StackName::DoubleFault
        );
        assert_eq!(block.stack_name(block.db_top()), StackName::Debug);
        assert_eq!(block.stack_name(block.nmi_top() - 8), StackName::Nmi);
        assert_eq!(
            block.stack_name(block.mc_top() - 8),
            StackName::MachineCheck
        );
        assert_eq!(
            block.stack_name(block.primary_shadow_top() - 8),
            StackName::Unknown
        );
        assert_eq!(block.stack_name(0x7fff_ffff_e000), StackName::User);
        assert_eq!(block.stack_name(0xffff_8000_0020_0000), StackName::Unknown);
    }
}
