//! The binary trace on the host: COM2's raw bytes and the ELFs that wrote them in, one text
//! line per record out (architecture.md §8).
//!
//! Owns the ELFs' `defmt` tables (read from the unstripped ELFs under `target/`, which are
//! the ones that went into the ISO), the mapping from a record's source to its ELF (the
//! nucleus' own `server N NAME: started` record says which server a slot holds) and the
//! text of a decoded trace. The envelope is `ipc::trace`'s. Damage never panics: the nucleus'
//! envelope or one of its own records that does not decode ends the trace with one line
//! saying where; a server's record that does not decode costs one line and the rest goes on
//! (a server's bytes are only an allegation).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
pub use defmt_decoder::Table;
use ipc::trace::{Source, StreamError};

use crate::compile::{self, SERVER_BUILD, SERVERS};
use crate::image::{Iso, NamedFile};

/// The nucleus' record that names the server in a slot: `server SLOT NAME: started (…)`.
pub const SERVER_STARTED: &str = "server ";

/// Turns one record's payload into its text, or says it cannot.
pub trait FrameTable {
    /// `(timestamp, message)` of the payload, which must be exactly one frame.
    fn decode(&self, payload: &[u8]) -> Result<(Option<String>, String), String>;
}

impl FrameTable for Table {
    fn decode(&self, payload: &[u8]) -> Result<(Option<String>, String), String> {
        match Table::decode(self, payload) {
            Ok((frame, used)) if used == payload.len() => {
                let timestamp = frame.display_timestamp().map(|t| t.to_string());
                let level = frame
                    .level()
                    .map(|l| format!("{} ", l.as_str().to_uppercase()))
                    .unwrap_or_default();
                Ok((timestamp, format!("{level}{}", frame.display_message())))
            }
            Ok((_, used)) => Err(format!(
                "{} bytes after a {used}-byte frame",
                payload.len() - used
            )),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// The tables a trace decodes against: the nucleus' and each server's by name.
pub struct Tables<T> {
    pub nucleus: T,
    pub servers: HashMap<String, T>,
}

/// The ELFs of a boot: the nucleus and each server by name.
#[derive(Clone, Debug)]
pub struct Elfs {
    pub nucleus: PathBuf,
    pub servers: Vec<NamedFile>,
}

impl Elfs {
    /// The ELFs inside `iso`, whose `defmt` tables decode its boot's trace.
    pub fn of(iso: &Iso) -> Self {
        Self {
            nucleus: iso.nucleus_elf().to_path_buf(),
            servers: iso.server_elfs().to_vec(),
        }
    }

    /// What `cargo run -p image-builder` builds (`target/kernel/…/nucleus`,
    /// `target/servers/…/NAME`), with `nucleus` and `servers` taking the place of those
    /// they name.
    pub fn built(nucleus: Option<&Path>, servers: &[NamedFile]) -> Self {
        let target = compile::workspace_root().join("target");
        let release = |dir: &str| {
            target
                .join(dir)
                .join(crate::tools::KERNEL_TARGET)
                .join("release")
        };
        let mut all: Vec<NamedFile> = servers.to_vec();
        for spec in SERVERS {
            if !all.iter().any(|s| s.name == spec.name) {
                all.push(NamedFile {
                    name: spec.name.into(),
                    path: release(SERVER_BUILD.target_dir).join(spec.name),
                });
            }
        }
        Self {
            nucleus: nucleus.map_or_else(
                || release(compile::NUCLEUS_BUILD.target_dir).join("nucleus"),
                Path::to_path_buf,
            ),
            servers: all,
        }
    }

    /// Reads every table. The nucleus' must be there; a server ELF that is missing or has no
    /// `.defmt` section only makes that server's records undecodable (one line each).
    pub fn tables(&self) -> Result<(Tables<Table>, Vec<String>)> {
        let nucleus = read_table(&self.nucleus)
            .with_context(|| format!("nucleus ELF {}", self.nucleus.display()))?
            .with_context(|| {
                format!(
                    "nucleus ELF {} has no .defmt section (a build without the trace?)",
                    self.nucleus.display()
                )
            })?;
        let mut servers = HashMap::new();
        let mut notes = Vec::new();
        for server in &self.servers {
            match read_table(&server.path) {
                Ok(Some(table)) => {
                    servers.insert(server.name.clone(), table);
                }
                Ok(None) => {}
                Err(err) => notes.push(format!("trace: server {}: {err:#}", server.name)),
            }
        }
        Ok((Tables { nucleus, servers }, notes))
    }
}

fn read_table(path: &Path) -> Result<Option<Table>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Table::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A decoded trace: one line per record, plus at most one line saying where it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub lines: Vec<String>,
    /// The last line when the stream was damaged (it is also in `lines`).
    pub stopped: Option<String>,
    /// Records decoded.
    pub records: usize,
}

impl Decoded {
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        text
    }
}

/// Decodes a raw COM2 capture. Never panics, whatever the bytes.
pub fn decode<T: FrameTable>(raw: &[u8], tables: &Tables<T>) -> Decoded {
    let mut out = Decoded::default();
    let mut slots: HashMap<usize, String> = HashMap::new();
    let stop = |out: &mut Decoded, line: String| {
        out.lines.push(line.clone());
        out.stopped = Some(line);
    };
    for record in ipc::trace::records(raw) {
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let why = match err {
                    StreamError::Truncated { .. } => "truncated",
                    _ => "corrupt",
                };
                stop(
                    &mut out,
                    format!(
                        "trace: stopped ({why}) at {err}; {} bytes not decoded",
                        raw.len() - err.at()
                    ),
                );
                break;
            }
        };
        let (who, table) = match record.source.server_slot() {
            None => ("nucleus".to_owned(), Some(&tables.nucleus)),
            Some(slot) => match slots.get(&slot) {
                Some(name) => (name.clone(), tables.servers.get(name)),
                None => (format!("slot {slot}"), None),
            },
        };
        let Some(table) = table else {
            out.lines.push(format!(
                "trace: byte {}: a record of {who} (no defmt table for it), skipped",
                record.at
            ));
            continue;
        };
        match table.decode(record.payload) {
            Ok((timestamp, message)) => {
                if record.source == Source::NUCLEUS
                    && let Some((slot, name)) = server_started(&message)
                {
                    slots.insert(slot, name.to_owned());
                }
                out.records += 1;
                out.lines.push(format!(
                    "{} {who} {message}",
                    timestamp.as_deref().unwrap_or("-")
                ));
            }
            Err(err) if record.source == Source::NUCLEUS => {
                stop(
                    &mut out,
                    format!(
                        "trace: stopped (corrupt) at byte {}: a nucleus record does not decode \
                         ({err}); {} bytes not decoded",
                        record.at,
                        raw.len() - record.at
                    ),
                );
                break;
            }
            Err(err) => out.lines.push(format!(
                "trace: byte {}: a record of {who} does not decode ({err}), skipped",
                record.at
            )),
        }
    }
    out
}

/// `(slot, name)` of the nucleus' `server SLOT NAME: started (…)` message (after its level).
fn server_started(message: &str) -> Option<(usize, &str)> {
    let rest = message.split_once(SERVER_STARTED)?.1;
    let (slot, rest) = rest.split_once(' ')?;
    let (name, rest) = rest.split_once(':')?;
    rest.starts_with(" started").then_some(())?;
    Some((slot.parse().ok()?, name))
}

/// `image-builder trace RAW`: decodes `raw` with `elfs` into `output` (stdout if `None`).
pub fn decode_file(raw: &Path, elfs: &Elfs, output: Option<&Path>) -> Result<Decoded> {
    let bytes = fs::read(raw).with_context(|| format!("cannot read {}", raw.display()))?;
    let (tables, notes) = elfs.tables()?;
    let mut decoded = decode(&bytes, &tables);
    decoded.lines.splice(0..0, notes);
    match output {
        Some(path) => fs::write(path, decoded.text())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", decoded.text()),
    }
    Ok(decoded)
}

/// Fails unless `raw` is a file that can be written (checked before a long boot).
pub fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("--trace {}: is a directory", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::trace::encode;

    /// Payload `[n, text…]`: timestamp n, message text; anything starting with 0xff fails.
    struct Fake;

    impl FrameTable for Fake {
        fn decode(&self, payload: &[u8]) -> Result<(Option<String>, String), String> {
            match payload {
                [0xff, ..] | [] => Err("malformed frame".into()),
                [ts, text @ ..] => Ok((
                    Some(ts.to_string()),
                    String::from_utf8_lossy(text).into_owned(),
                )),
            }
        }
    }

    fn tables() -> Tables<Fake> {
        Tables {
            nucleus: Fake,
            servers: HashMap::from([("pv-server".to_owned(), Fake)]),
        }
    }

    fn stream(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (source, payload) in records {
            encode(Source(*source), payload, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn records_become_lines_timestamp_first_with_their_source() {
        let raw = stream(&[
            (0, b"\x01INFO server 1 pv-server: started (generation 0)"),
            (2, b"\x02hello from pv"),
            (1, b"\x03unknown slot"),
            (2, b"\xffbad"),
            (0, b"\x04event delivered"),
        ]);
        let decoded = decode(&raw, &tables());
        assert_eq!(
            decoded.lines,
            [
                "1 nucleus INFO server 1 pv-server: started (generation 0)",
                "2 pv-server hello from pv",
                "trace: byte 70: a record of slot 0 (no defmt table for it), skipped",
                "trace: byte 87: a record of pv-server does not decode (malformed frame), skipped",
                "4 nucleus event delivered",
            ]
        );
        assert_eq!((decoded.records, decoded.stopped), (3, None));
    }

    #[test]
    fn damage_ends_the_trace_with_one_line() {
        let raw = stream(&[(0, b"\x01one"), (0, b"\x02two"), (0, b"\x03three")]);
        let truncated = decode(&raw[..raw.len() - 2], &tables());
        assert_eq!(truncated.lines.len(), 3);
        assert_eq!(
            truncated.stopped.as_deref(),
            Some(
                "trace: stopped (truncated) at byte 16: the stream ends inside a record \
                 (8 of 10 bytes); 8 bytes not decoded"
            )
        );
        let mut corrupt = raw.clone();
        corrupt[12] ^= 1;
        let decoded = decode(&corrupt, &tables());
        assert_eq!(decoded.lines[0], "1 nucleus one");
        assert!(
            decoded.lines[1].starts_with("trace: stopped (corrupt) at byte 8: record fails"),
            "{:?}",
            decoded.lines
        );
        assert_eq!(decoded.lines.len(), 2);
        let bad_nucleus = stream(&[(0, b"\x01one"), (0, b"\xff")]);
        let decoded = decode(&bad_nucleus, &tables());
        assert_eq!(
            decoded.stopped.as_deref(),
            Some(
                "trace: stopped (corrupt) at byte 8: a nucleus record does not decode \
                 (malformed frame); 5 bytes not decoded"
            )
        );
        assert_eq!(decode(&[], &tables()), Decoded::default());
    }

    #[test]
    fn server_started_names_a_slot() {
        assert_eq!(
            server_started("INFO server 3 fred-server: started (generation 2)"),
            Some((3, "fred-server"))
        );
        assert_eq!(server_started("INFO server 3 fred-server: stopped"), None);
        assert_eq!(server_started("server x y: started"), None);
    }

    #[test]
    fn built_elfs_are_under_target_and_overrides_win() {
        let elfs = Elfs::built(
            None,
            &[NamedFile {
                name: "pv-server".into(),
                path: "/x/pv".into(),
            }],
        );
        assert!(
            elfs.nucleus
                .ends_with("target/kernel/x86_64-unknown-none/release/nucleus")
        );
        assert_eq!(elfs.servers[0].path, Path::new("/x/pv"));
        assert!(elfs.servers.iter().any(|s| {
            s.path
                .ends_with("target/servers/x86_64-unknown-none/release/fred-server")
        }));
    }

    #[test]
    fn random_and_mangled_bytes_never_panic() {
        let good = stream(&[(0, b"\x01INFO server 0 pv-server: started"), (1, b"\x02x")]);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let mut raw = good.clone();
            if round % 2 == 0 {
                raw = (0..next() % 64).map(|_| next() as u8).collect();
            } else {
                let at = next() as usize % raw.len();
                raw[at] = next() as u8;
                raw.truncate(next() as usize % (raw.len() + 1));
            }
            let decoded = decode(&raw, &tables());
            assert!(decoded.lines.len() <= raw.len() + 1);
        }
    }
}
