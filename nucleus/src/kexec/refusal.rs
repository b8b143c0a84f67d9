//! Why a kexec request is refused: one type for the hand-off's checks and the line the
//! nucleus prints (below both `kexec` and `handoff`, so neither imports the other's caller).
use bsp_x86_64::kexec::{ImageError, MbiFull};
use core::fmt;

/// Why the nucleus will not hand the machine to a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request names a generation that is not this one's successor.
    Generation { asked: u32, current: u32 },
    /// No boot module with that index.
    NoModule { index: u16, count: usize },
    /// The module is not a multiboot2 ELF the hand-off can load.
    Image(ImageError),
    /// The hand-off's own low pages are not free RAM here.
    LowPages(&'static str),
    /// The next generation's boot information does not fit its pages.
    Mbi(MbiFull),
    /// Boot has not got far enough to know its modules.
    TooEarly,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generation { asked, current } => write!(
                f,
                "generation {asked} asked for, this is generation {current}"
            ),
            Self::NoModule { index, count } => {
                write!(f, "boot module {index} does not exist ({count} modules)")
            }
            Self::Image(e) => write!(f, "{e}"),
            Self::LowPages(why) => write!(f, "the hand-off's low pages {why}"),
            Self::Mbi(e) => write!(f, "{e}"),
            Self::TooEarly => f.write_str("boot is not far enough to know its modules"),
        }
    }
}
