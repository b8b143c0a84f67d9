//! Names for nucleus addresses, from the `nucleus.sym` boot module image-builder writes.
//!
//! The module is text (`<hex address> <name>` per line, sorted) and, like every module, an
//! allegation: malformed lines are skipped, names are cut to the dump's field, and nothing
//! here can fault (bytes are read through the direct map from a reserved module).
use crate::bootinfo::BootSummary;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};
use ipc::dump::{Symbol, Text};

/// Module string of the symbol map.
pub const MODULE_NAME: &[u8] = b"nucleus.sym";
/// Farthest a RIP may be past a symbol's start and still be named after it.
const MAX_OFFSET: u64 = 1 << 20;

static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);

/// Remembers where the map is; called once the direct map is live.
pub fn init(boot: &BootSummary) {
    if let Some(module) = boot
        .modules
        .iter()
        .find(|m| m.name.as_slice() == MODULE_NAME)
    {
        let Range { start, end } = module.range;
        START.store(start, Ordering::Relaxed);
        END.store(end, Ordering::Relaxed);
    }
}

fn map() -> &'static [u8] {
    let (start, end) = (START.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    if start == 0 || end <= start {
        return &[];
    }
    // The module's frames are reserved from the allocator (never reused) and `init` ran
    // after the direct map went live.
    crate::mm::module_bytes(&(start..end))
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        Some((acc << 4) | u64::from((b as char).to_digit(16)?))
    })
}

/// The function `rip` lies in, if the map names one within [`MAX_OFFSET`].
pub fn lookup(rip: u64) -> Option<Symbol> {
    let mut best: Option<(u64, &[u8])> = None;
    for line in map().split(|&b| b == b'\n') {
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        let Some(address) = parse_hex(&line[..space]) else {
            continue;
        };
        if address > rip {
            break;
        }
        best = Some((address, &line[space + 1..]));
    }
    let (address, name) = best?;
    let offset = rip - address;
    if offset > MAX_OFFSET {
        return None;
    }
    let name = core::str::from_utf8(name).unwrap_or("?");
    Some(Symbol {
        name: Text::truncated(name),
        offset,
    })
}
