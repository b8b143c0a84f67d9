//! A minimal client of QEMU's GDB remote protocol: breakpoints, single steps, registers and
//! memory, what `bench --profile` needs to follow one sample instruction by instruction.
//!
//! Packets are `$payload#checksum`; after `QStartNoAckMode` neither side sends `+` acks.
//! QEMU's single step masks interrupts and timers by default (its `sstep` flags), so a step
//! never wanders into a tick the sample did not take.
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The registers a profile looks at, from one `g` packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub cs: u32,
    pub cr3: u64,
}

/// Byte offsets in QEMU's x86-64 `g` packet (its target description: 16 GPRs, RIP, EFLAGS,
/// six selectors, then FS/GS/KERNEL_GS bases, CR0, CR2, CR3, ...).
const G_RAX: usize = 0;
const G_RCX: usize = 16;
const G_RSP: usize = 56;
const G_RIP: usize = 128;
const G_CS: usize = 140;
const G_CR3: usize = 204;

impl Regs {
    /// Reads the fields from a decoded `g` reply.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let word = |at: usize| -> Result<u64> {
            let raw = bytes
                .get(at..at + 8)
                .context("short register packet from QEMU")?;
            Ok(u64::from_le_bytes(raw.try_into()?))
        };
        Ok(Self {
            rax: word(G_RAX)?,
            rcx: word(G_RCX)?,
            rsp: word(G_RSP)?,
            rip: word(G_RIP)?,
            cs: word(G_CS)? as u32,
            cr3: word(G_CR3)? & !0xfff,
        })
    }

    /// The privilege level of the code running.
    pub fn ring(&self) -> u8 {
        (self.cs & 3) as u8
    }
}

/// A connection to a stopped QEMU.
pub struct Remote {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    acks: bool,
}

impl Remote {
    /// Connects to `port` on this host, retrying until `timeout` (QEMU opens it as it starts).
    pub fn connect(port: u16, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => bail!("cannot reach QEMU's GDB server on port {port}: {e}"),
            }
        };
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let mut remote = Self {
            reader: BufReader::new(stream),
            writer,
            acks: true,
        };
        if remote.request("QStartNoAckMode")? == "OK" {
            remote.acks = false;
        }
        Ok(remote)
    }

    fn send(&mut self, payload: &str) -> Result<()> {
        let sum = payload.bytes().fold(0u8, u8::wrapping_add);
        write!(self.writer, "${payload}#{sum:02x}")?;
        self.writer.flush()?;
        Ok(())
    }

    /// The next packet's payload (console output packets `O…` skipped).
    fn receive(&mut self) -> Result<String> {
        loop {
            let mut byte = [0u8];
            self.reader.read_exact(&mut byte)?;
            match byte[0] {
                b'$' => {}
                b'+' | b'-' => continue,
                _ => continue,
            }
            let mut payload = Vec::new();
            loop {
                self.reader.read_exact(&mut byte)?;
                if byte[0] == b'#' {
                    break;
                }
                payload.push(byte[0]);
            }
            let mut sum = [0u8; 2];
            self.reader.read_exact(&mut sum)?;
            if self.acks {
                self.writer.write_all(b"+")?;
            }
            let text = String::from_utf8(payload).context("non-UTF-8 packet from QEMU")?;
            if text.starts_with('O') && text != "OK" {
                continue;
            }
            return Ok(text);
        }
    }

    fn request(&mut self, payload: &str) -> Result<String> {
        self.send(payload)?;
        self.receive()
    }

    /// A hardware breakpoint at `address` (QEMU's are virtual addresses, any address space).
    pub fn break_at(&mut self, address: u64) -> Result<()> {
        match self.request(&format!("Z1,{address:x},1"))?.as_str() {
            "OK" => Ok(()),
            other => bail!("QEMU refused a breakpoint at {address:#x}: {other:?}"),
        }
    }

    pub fn clear_break(&mut self, address: u64) -> Result<()> {
        self.request(&format!("z1,{address:x},1")).map(drop)
    }

    /// Runs until a breakpoint (or any stop); `Err` if QEMU ended.
    pub fn resume(&mut self) -> Result<()> {
        let reply = self.request("c")?;
        stop_reply(&reply)
    }

    /// Executes one instruction (one iteration of a `rep` string instruction).
    pub fn step(&mut self) -> Result<()> {
        let reply = self.request("s")?;
        stop_reply(&reply)
    }

    pub fn regs(&mut self) -> Result<Regs> {
        let reply = self.request("g")?;
        Regs::parse(&hex_bytes(&reply)?)
    }

    /// `len` bytes at virtual `address` in the current address space.
    pub fn memory(&mut self, address: u64, len: usize) -> Result<Vec<u8>> {
        let reply = self.request(&format!("m{address:x},{len:x}"))?;
        if reply.starts_with('E') {
            bail!("QEMU cannot read {len} bytes at {address:#x}: {reply}");
        }
        hex_bytes(&reply)
    }

    /// Lets QEMU run on without the debugger.
    pub fn detach(mut self) -> Result<()> {
        self.send("D")?;
        Ok(())
    }
}

fn stop_reply(reply: &str) -> Result<()> {
    match reply.as_bytes().first() {
        Some(b'T' | b'S') => Ok(()),
        _ => bail!("QEMU stopped with {reply:?}"),
    }
}

fn hex_bytes(text: &str) -> Result<Vec<u8>> {
    (0..text.len() / 2)
        .map(|i| {
            u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                // QEMU sends `xx` for registers it cannot read.
                .or_else(|_| Ok(0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_come_from_their_g_packet_offsets() {
        let mut bytes = vec![0u8; 300];
        bytes[G_RAX] = 5;
        bytes[G_RCX] = 7;
        bytes[G_RSP..G_RSP + 8].copy_from_slice(&0x7fff_f000u64.to_le_bytes());
        bytes[G_RIP..G_RIP + 8].copy_from_slice(&0xffff_ffff_8020_a336u64.to_le_bytes());
        bytes[G_CS] = 0x2b;
        bytes[G_CR3..G_CR3 + 8].copy_from_slice(&0x1cf018u64.to_le_bytes());
        let regs = Regs::parse(&bytes).unwrap();
        assert_eq!(regs.rax, 5);
        assert_eq!(regs.rcx, 7);
        assert_eq!(regs.rsp, 0x7fff_f000);
        assert_eq!(regs.rip, 0xffff_ffff_8020_a336);
        assert_eq!(regs.ring(), 3);
        assert_eq!(
            regs.cr3, 0x1cf000,
            "PCID bits are not part of the table address"
        );
        assert!(Regs::parse(&bytes[..100]).is_err());
    }

    #[test]
    fn hex_decodes_and_unreadable_bytes_read_as_zero() {
        assert_eq!(hex_bytes("00ff10xx").unwrap(), vec![0, 0xff, 0x10, 0]);
    }
}
