//! `bench --profile WHAT`: one sample of a measurement followed instruction by instruction
//! under QEMU's `-icount` benchmark boot, each instruction attributed to a phase (a stretch
//! of one address space and ring: the nucleus, a server, the guest) and to the function it
//! is in (issue 17: "measure first").
//!
//! QEMU's GDB server stops at a breakpoint where the sample starts (the IDT `int3` stub, the
//! SYSCALL entry with `nop`'s number in RAX, the nucleus' ping, the bench guest's
//! `xen_version` stub in its hypercall page), skips the first
//! samples (warm-up: the figures `bench` prints are minimums), then single-steps until the
//! sample is over (back in ring 3 of the address space it started in, or the ping's reply).
//! A step is one instruction, one iteration of a `rep` string instruction, so the counts
//! are those `-icount` charges. The ring-3 code of an address space is named by comparing
//! the bytes at its first instruction with each ELF's.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use elf::ElfBytes;
use elf::abi::{PT_LOAD, STT_FUNC};
use elf::endian::AnyEndian;

use crate::gdb_remote::Remote;

/// What `--profile` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// pv-server's `int3`: from the IDT vector-3 stub back to pv-server.
    Int3,
    /// pv-server's `nop` syscall: from `syscall_entry` back to ring 3.
    NullSyscall,
    /// The nucleus' ping: `bench::send_ping` to `bench::on_reply`.
    Ring,
    /// The bench guest's `xen_version(0)`: from its hypercall-page stub (`mov eax, 17;
    /// syscall`) back to the guest.
    Hypercall,
}

impl Target {
    pub const ALL: [Self; 4] = [Self::NullSyscall, Self::Int3, Self::Ring, Self::Hypercall];

    pub fn name(self) -> &'static str {
        match self {
            Self::NullSyscall => "null-syscall",
            Self::Int3 => "int3-roundtrip",
            Self::Ring => "ring-roundtrip",
            Self::Hypercall => "hypercall-roundtrip",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name || t.name().split('-').next() == Some(name))
    }
}

/// The syscall number the profile recognises the sample by (RAX at `syscall_entry`).
const NOP_SYSCALL: u64 = ipc::syscall::Syscall::Nop as u64;
/// `xen_version`'s stub in the guest's hypercall page (32 bytes per hypercall): where a
/// hypercall sample starts. A breakpoint in `syscall_entry` would stop at every server
/// syscall before the guest's turn.
const XEN_VERSION_STUB: u64 = 17 * 32;
/// The ELF (in [`Elfs::users`]) whose `hypercall_page` the hypercall sample starts in.
pub const HYPERCALL_GUEST: &str = "guest bench";
/// Most instructions one sample may take before the profile gives up.
const MAX_STEPS: usize = 50_000;

/// One ELF's loaded code and function symbols.
pub struct CodeMap {
    pub name: String,
    segments: Vec<(u64, Vec<u8>)>,
    functions: Vec<(u64, u64, String)>,
}

impl CodeMap {
    pub fn read(name: &str, path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(name, &bytes).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self> {
        let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).context("not an ELF file")?;
        let mut segments = Vec::new();
        for phdr in file.segments().context("no program headers")?.iter() {
            if phdr.p_type != PT_LOAD || phdr.p_flags & elf::abi::PF_X == 0 {
                continue;
            }
            let start = phdr.p_offset as usize;
            let end = start + phdr.p_filesz as usize;
            let data = bytes.get(start..end).context("segment outside the file")?;
            segments.push((phdr.p_vaddr, data.to_vec()));
        }
        let mut functions = Vec::new();
        if let Some((symbols, strings)) = file.symbol_table()? {
            for s in symbols.iter() {
                let is_code = s.st_symtype() == STT_FUNC || s.st_symtype() == elf::abi::STT_NOTYPE;
                if !is_code || s.st_value == 0 || s.st_shndx == 0 {
                    continue;
                }
                let Ok(raw) = strings.get(s.st_name as usize) else {
                    continue;
                };
                if raw.is_empty() || raw.starts_with('$') || raw.starts_with(".L") {
                    continue;
                }
                functions.push((s.st_value, s.st_size, crate::symbols::demangle(raw)));
            }
        }
        // Sized functions win over labels at the same address.
        functions.sort_by_key(|(address, size, _)| (*address, std::cmp::Reverse(*size)));
        functions.dedup_by_key(|(address, _, _)| *address);
        Ok(Self {
            name: name.to_owned(),
            segments,
            functions,
        })
    }

    /// The file's bytes at virtual `address` (`len` of them), if it has code there.
    pub fn code_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        self.segments.iter().find_map(|(base, data)| {
            let offset = usize::try_from(address.checked_sub(*base)?).ok()?;
            data.get(offset..offset.checked_add(len)?)
        })
    }

    /// The function `address` is in: the closest symbol at or below it.
    pub fn function(&self, address: u64) -> &str {
        let at = self.functions.partition_point(|(a, _, _)| *a <= address);
        match at.checked_sub(1).map(|i| &self.functions[i]) {
            Some((_, _, name)) => name,
            None => "?",
        }
    }

    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.functions
            .iter()
            .find(|(_, _, n)| n == name)
            .map(|(a, _, _)| *a)
    }
}

/// One executed instruction: where, in which ring and address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub rip: u64,
    pub ring: u8,
    pub cr3: u64,
}

/// A stretch of steps in one ring and address space, with the functions it went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    pub who: String,
    pub instructions: u64,
    /// (function, instructions), in the order first entered.
    pub functions: Vec<(String, u64)>,
}

/// Cuts `steps` into phases and counts per function. `who` names ring 3 of an address space
/// (`None`: unnamed), ring 0 is the nucleus (`nucleus`).
pub fn phases(
    steps: &[Step],
    nucleus: &CodeMap,
    users: &[CodeMap],
    who: &HashMap<u64, Option<usize>>,
) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    let mut last: Option<(u8, u64)> = None;
    for step in steps {
        let key = (step.ring, if step.ring == 0 { 0 } else { step.cr3 });
        let map = match step.ring {
            0 => Some(nucleus),
            _ => who.get(&step.cr3).copied().flatten().map(|i| &users[i]),
        };
        if last != Some(key) {
            let name = match (step.ring, map) {
                (0, _) => "nucleus".to_owned(),
                (_, Some(map)) => map.name.clone(),
                (_, None) => format!("ring 3, cr3 {:#x}", step.cr3),
            };
            out.push(Phase {
                who: name,
                instructions: 0,
                functions: Vec::new(),
            });
            last = Some(key);
        }
        let phase = out.last_mut().expect("pushed above");
        phase.instructions += 1;
        let function = map.map_or("?", |m| m.function(step.rip));
        match phase.functions.iter_mut().find(|(f, _)| f == function) {
            Some((_, n)) => *n += 1,
            None => phase.functions.push((function.to_owned(), 1)),
        }
    }
    out
}

/// The text `bench --profile` prints: every phase, its functions by cost.
pub fn report(target: Target, sample: u32, phases: &[Phase]) -> String {
    let total: u64 = phases.iter().map(|p| p.instructions).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} sample {sample}, single-stepped under QEMU -icount (IDT): {total} instructions \
         from the entry to the sample's end",
        target.name()
    );
    for (i, phase) in phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "phase {}: {:<14} {:>6}",
            i + 1,
            phase.who,
            phase.instructions
        );
        let mut functions = phase.functions.clone();
        functions.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (function, n) in functions {
            let _ = writeln!(out, "    {n:>6}  {function}");
        }
    }
    out
}

/// The ELFs of the benchmark boot.
pub struct Elfs {
    pub nucleus: PathBuf,
    /// Ring-3 programs by name: the servers, the guest.
    pub users: Vec<(String, PathBuf)>,
}

/// Follows sample `sample` (1-based) of `target` in a QEMU stopped at its first instruction
/// with its GDB server on `port`, then lets it run on.
pub fn follow(port: u16, elfs: &Elfs, target: Target, sample: u32) -> Result<Vec<Phase>> {
    let nucleus = CodeMap::read("nucleus", &elfs.nucleus)?;
    let users = elfs
        .users
        .iter()
        .map(|(name, path)| CodeMap::read(name, path))
        .collect::<Result<Vec<_>>>()?;
    let symbol = |name: &str| {
        nucleus
            .address_of(name)
            .with_context(|| format!("the nucleus has no symbol {name}"))
    };
    let start = match target {
        Target::Int3 => symbol("idt_vector_stubs")? + 3 * bsp_x86_64::entry::IDT_STUB_SIZE as u64,
        Target::NullSyscall => symbol("syscall_entry")?,
        Target::Hypercall => {
            let guest = users
                .iter()
                .find(|u| u.name == HYPERCALL_GUEST)
                .context("no bench guest to profile")?;
            guest
                .address_of("hypercall_page")
                .context("the bench guest has no symbol hypercall_page")?
                + XEN_VERSION_STUB
        }
        Target::Ring => symbol("nucleus::bench::send_ping")?,
    };
    let ring_end = match target {
        Target::Ring => Some(symbol("nucleus::bench::on_reply")?),
        _ => None,
    };
    let mut remote = Remote::connect(port, Duration::from_secs(20))?;
    let mut who: HashMap<u64, Option<usize>> = HashMap::new();
    remote.break_at(start)?;
    let mut seen = 0;
    let first = loop {
        remote.resume()?;
        // Resuming at a breakpoint would stop there again: step past it first, as gdb does.
        remote.clear_break(start)?;
        let regs = remote.regs()?;
        remote.step()?;
        remote.break_at(start)?;
        let counts = match target {
            Target::Int3 | Target::Ring | Target::Hypercall => true,
            Target::NullSyscall => regs.rax == NOP_SYSCALL,
        };
        if counts {
            seen += 1;
            if seen == sample {
                break regs;
            }
        }
    };
    remote.clear_break(start)?;
    // The first instruction has run (the step past the breakpoint).
    let mut steps = vec![Step {
        rip: first.rip,
        ring: first.ring(),
        cr3: first.cr3,
    }];
    let mut regs = remote.regs()?;
    let mut left = first.ring() == 0;
    loop {
        if regs.ring() == 3 {
            if !who.contains_key(&regs.cr3) {
                name_space(&mut remote, &users, &mut who, regs.cr3, regs.rip)?;
            }
            if ring_end.is_none() && left && regs.cr3 == first.cr3 {
                break;
            }
        }
        if ring_end == Some(regs.rip) {
            break;
        }
        left |= regs.ring() == 0;
        steps.push(Step {
            rip: regs.rip,
            ring: regs.ring(),
            cr3: regs.cr3,
        });
        if steps.len() > MAX_STEPS {
            bail!("the sample took more than {MAX_STEPS} instructions: gave up");
        }
        remote.step()?;
        regs = remote.regs()?;
    }
    remote.detach()?;
    if let Some(path) = std::env::var_os("FREDVISOR_PROFILE_STEPS") {
        write_steps(Path::new(&path), &steps, &nucleus, &users, &who)?;
    }
    Ok(phases(&steps, &nucleus, &users, &who))
}

/// `FREDVISOR_PROFILE_STEPS=FILE`: every step of the sample, one line each (ring, RIP,
/// function), to read next to `objdump -d` when a function's count needs explaining.
fn write_steps(
    path: &Path,
    steps: &[Step],
    nucleus: &CodeMap,
    users: &[CodeMap],
    who: &HashMap<u64, Option<usize>>,
) -> Result<()> {
    let mut out = String::new();
    for step in steps {
        let map = match step.ring {
            0 => Some(nucleus),
            _ => who.get(&step.cr3).copied().flatten().map(|i| &users[i]),
        };
        let function = map.map_or("?", |m| m.function(step.rip));
        let _ = writeln!(out, "{} {:#x} {function}", step.ring, step.rip);
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// Names the ring-3 code of address space `cr3` by the bytes at `rip`: the index of the ELF
/// whose code is there, `None` if none is.
fn name_space(
    remote: &mut Remote,
    users: &[CodeMap],
    who: &mut HashMap<u64, Option<usize>>,
    cr3: u64,
    rip: u64,
) -> Result<Option<usize>> {
    if let Some(&known) = who.get(&cr3) {
        return Ok(known);
    }
    const WINDOW: usize = 32;
    let live = remote.memory(rip, WINDOW).unwrap_or_default();
    let found = users
        .iter()
        .position(|map| !live.is_empty() && map.code_at(rip, WINDOW) == Some(&live[..]));
    who.insert(cr3, found);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, functions: &[(u64, &str)]) -> CodeMap {
        CodeMap {
            name: name.into(),
            segments: vec![(0x1000, vec![0x90, 0xc3, 0xcc, 0x0f])],
            functions: functions
                .iter()
                .map(|(a, n)| (*a, 0, (*n).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn steps_become_phases_per_ring_and_space_with_function_counts() {
        let nucleus = map("nucleus", &[(0x100, "entry"), (0x200, "dispatch")]);
        let users = [
            map("pv-server", &[(0x1000, "bench")]),
            map("fred-server", &[(0x1000, "serve")]),
        ];
        let who = HashMap::from([(0xa000, Some(0)), (0xb000, Some(1)), (0xc000, None)]);
        let s = |rip, ring, cr3| Step { rip, ring, cr3 };
        let steps = [
            s(0x100, 0, 0xa000),
            s(0x104, 0, 0xa000),
            s(0x200, 0, 0xb000), // CR3 switched inside the nucleus: still one phase
            s(0x1000, 3, 0xb000),
            s(0x1001, 3, 0xb000),
            s(0x100, 0, 0xb000),
            s(0x1000, 3, 0xc000),
        ];
        let got = phases(&steps, &nucleus, &users, &who);
        let names: Vec<(&str, u64)> = got
            .iter()
            .map(|p| (p.who.as_str(), p.instructions))
            .collect();
        assert_eq!(
            names,
            [
                ("nucleus", 3),
                ("fred-server", 2),
                ("nucleus", 1),
                ("ring 3, cr3 0xc000", 1)
            ]
        );
        assert_eq!(
            got[0].functions,
            [("entry".to_owned(), 2), ("dispatch".to_owned(), 1)]
        );
        let text = report(Target::Int3, 5, &got);
        assert!(text.starts_with("int3-roundtrip sample 5"), "{text}");
        assert!(text.contains("phase 2: fred-server         2"), "{text}");
    }

    #[test]
    fn code_and_functions_are_found_by_address() {
        let m = map("x", &[(0x1000, "a"), (0x1002, "b")]);
        assert_eq!(m.code_at(0x1001, 2), Some(&[0xc3, 0xcc][..]));
        assert_eq!(m.code_at(0x1003, 2), None);
        assert_eq!(m.function(0x1001), "a");
        assert_eq!(m.function(0x1009), "b");
        assert_eq!(m.function(0x10), "?");
        assert_eq!(m.address_of("b"), Some(0x1002));
    }

    #[test]
    fn targets_have_short_names() {
        assert_eq!(Target::from_name("int3"), Some(Target::Int3));
        assert_eq!(Target::from_name("ring-roundtrip"), Some(Target::Ring));
        assert_eq!(Target::from_name("null"), Some(Target::NullSyscall));
        assert_eq!(Target::from_name("hypercall"), Some(Target::Hypercall));
        assert_eq!(Target::from_name("nope"), None);
    }
}
