//! The nucleus' symbol map, shipped as the boot module `nucleus.sym`, so that `show_registers`
//! can name the function RIP is in (issue 4: "RIP, with the symbol if cheap").
//!
//! Format: one line per function, `<address in hex> <demangled name>\n`, sorted by address.
//! Plain text because the nucleus reads it with a few lines of code on a fatal path, and a
//! human can read it too. The names are Rust's legacy mangling (`_ZN…E`) with the hash
//! segment dropped; this small demangler is hand-written because the chosen dependencies
//! have none and the nucleus needs only the path.
use anyhow::{Context, Result};
use elf::ElfBytes;
use elf::abi::STT_FUNC;
use elf::endian::AnyEndian;

/// Module string (and file name) of the map.
pub const MODULE_NAME: &str = "nucleus.sym";

/// The symbol map of the ELF `bytes`.
pub fn symbol_map(bytes: &[u8]) -> Result<String> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).context("nucleus is not an ELF file")?;
    let (symbols, strings) = file
        .symbol_table()
        .context("cannot read the nucleus' symbol table")?
        .context("the nucleus has no symbol table")?;
    let mut functions: Vec<(u64, String)> = symbols
        .iter()
        .filter(|s| s.st_symtype() == STT_FUNC && s.st_value != 0)
        .filter_map(|s| {
            let raw = strings.get(s.st_name as usize).ok()?;
            Some((s.st_value, demangle(raw)))
        })
        .collect();
    functions.sort();
    functions.dedup_by_key(|(address, _)| *address);
    Ok(functions
        .into_iter()
        .map(|(address, name)| format!("{address:016x} {name}\n"))
        .collect())
}

/// A symbol's readable name: Rust's legacy (`_ZN…E`) and v0 (`_R…`) manglings through
/// `rustc-demangle` (what std's backtraces use), without the hash and without the
/// `.llvm.NNN` suffix LLVM adds to names it made local; anything else as it is, less that
/// suffix.
pub fn demangle(raw: &str) -> String {
    let raw = without_llvm_suffix(raw);
    match rustc_demangle::try_demangle(raw) {
        // `{:#}`: the path without the trailing hash.
        Ok(name) => format!("{name:#}"),
        Err(_) => raw.to_owned(),
    }
}

/// `name` without a trailing `.llvm.<digits/hex>` (LLVM's suffix for promoted locals).
fn without_llvm_suffix(name: &str) -> &str {
    match name.rfind(".llvm.") {
        Some(at)
            if name[at + 6..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'@') =>
        {
            &name[..at]
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_lose_the_hash() {
        assert_eq!(
            demangle("_ZN7nucleus8dispatch8dispatch17h0123456789abcdefE"),
            "nucleus::dispatch::dispatch"
        );
        assert_eq!(
            demangle("_ZN4core3fmt5write17hffffffffffffffffE"),
            "core::fmt::write"
        );
        assert_eq!(
            demangle("_ZN36_$LT$T$u20$as$u20$core..any..Any$GT$7type_id17h0000000000000000E"),
            "<T as core::any::Any>::type_id"
        );
    }

    #[test]
    fn v0_names_and_llvm_suffixes_are_read() {
        assert_eq!(demangle("_RNvCs1234_7nucleus4main"), "nucleus::main");
        assert_eq!(
            demangle("_RNvNtCs1234_7nucleus8dispatch8dispatch.llvm.1234567890123"),
            "nucleus::dispatch::dispatch"
        );
        assert_eq!(demangle("memcpy.llvm.42"), "memcpy");
        assert_eq!(demangle("a.llvm.not-hex"), "a.llvm.not-hex");
    }

    #[test]
    fn other_names_and_garbage_pass_through() {
        assert_eq!(demangle("kernel_entry"), "kernel_entry");
        assert_eq!(demangle("_ZN99tooshortE"), "_ZN99tooshortE");
        assert_eq!(demangle("_ZNxE"), "_ZNxE");
        assert_eq!(demangle("_R"), "_R");
    }

    #[test]
    fn garbage_is_not_an_elf() {
        assert!(symbol_map(b"not an elf").is_err());
    }
}
