//! Every answer with exact values, over a fake guest memory.

use std::collections::HashMap;
use std::string::String;

use super::*;

/// Guest memory: the pages present are the ones a test put there.
#[derive(Default)]
pub(crate) struct Fake {
    pages: HashMap<u64, [u8; 4096]>,
}

impl Fake {
    pub(crate) fn with_pages(pages: &[u64]) -> Self {
        let mut fake = Self::default();
        for &page in pages {
            fake.pages.insert(page, [0; 4096]);
        }
        fake
    }

    pub(crate) fn put(&mut self, va: u64, bytes: &[u8]) {
        self.write(va, bytes).unwrap();
    }

    pub(crate) fn get(&mut self, va: u64, len: usize) -> std::vec::Vec<u8> {
        let mut out = vec![0; len];
        self.read(va, &mut out).unwrap();
        out
    }
}

impl GuestMemory for Fake {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = va + i as u64;
            let page = self
                .pages
                .get(&(at & !0xfff))
                .ok_or(GuestFault { va: at })?;
            *byte = page[(at & 0xfff) as usize];
        }
        Ok(())
    }

    fn write(&mut self, va: u64, bytes: &[u8]) -> Result<(), GuestFault> {
        // All or nothing, as the nucleus' copy checks the whole range first.
        for i in 0..bytes.len() as u64 {
            if !self.pages.contains_key(&((va + i) & !0xfff)) {
                return Err(GuestFault { va: va + i });
            }
        }
        for (i, &byte) in bytes.iter().enumerate() {
            let at = va + i as u64;
            self.pages.get_mut(&(at & !0xfff)).unwrap()[(at & 0xfff) as usize] = byte;
        }
        Ok(())
    }
}

/// Guest `hello`'s hypercalls over its fake memory.
struct Guest {
    domain: DomainCalls,
    memory: Fake,
}

impl Guest {
    fn new(vcpus: u32, memory: Fake) -> Self {
        Self {
            domain: DomainCalls::new(vcpus),
            memory,
        }
    }

    /// Answers hypercall `number`: its outcome and what it printed.
    fn call(&mut self, number: Hypercall, args: [u64; 5]) -> (Outcome, String) {
        let mut out = String::new();
        let outcome = self.domain.answer(
            "hello",
            u64::from(number.raw()),
            args,
            &mut self.memory,
            &mut out,
        );
        (outcome, out)
    }

    /// Answers hypercall `number`: its outcome.
    fn answer(&mut self, number: Hypercall, args: [u64; 5]) -> Outcome {
        self.call(number, args).0
    }
}

fn err(errno: Errno) -> Outcome {
    Outcome::Return(errno.rax())
}

/// The pointers every hypercall with an argument must refuse with -EFAULT (issue 15 point
/// 6d): a kernel (hypervisor-window) pointer, a non-canonical one, an unmapped one.
const BAD_POINTERS: [u64; 4] = [
    0xffff_8000_0000_1000,
    0x0000_8000_0000_0000,
    0x7000,
    u64::MAX - 2,
];

#[test]
fn console_write_prints_lines_and_faults_cleanly() {
    let mut guest = Guest::new(1, Fake::with_pages(&[0x5000, 0x6000]));
    guest.memory.put(0x5ffc, b"hi\r\nthere");
    let (outcome, out) = guest.call(Hypercall::ConsoleIo, [0, 9, 0x5ffc, 0, 0]);
    assert_eq!(outcome, Outcome::Return(0));
    assert_eq!(out, "guest hello: hi\n");
    let (_, out) = guest.call(Hypercall::ConsoleIo, [0, 1, 0x6010, 0, 0]);
    assert_eq!(out, "", "no line end yet: nothing printed");
    guest.memory.put(0x6020, b"\n");
    let (_, out) = guest.call(Hypercall::ConsoleIo, [0, 1, 0x6020, 0, 0]);
    assert_eq!(out, "guest hello: there\\x00\n");
    for bad in BAD_POINTERS {
        let (outcome, out) = guest.call(Hypercall::ConsoleIo, [0, 4, bad, 0, 0]);
        assert_eq!(outcome, err(Errno::Efault), "{bad:#x}");
        assert_eq!(out, "");
    }
    // A buffer running off its last page: the part before is printed, then -EFAULT.
    guest.memory.put(0x6ff0, b"0123456789abcdef");
    let (outcome, _) = guest.call(Hypercall::ConsoleIo, [0, 400, 0x6ff0, 0, 0]);
    assert_eq!(outcome, err(Errno::Efault));
    // Zero bytes from anywhere canonical is fine; read has no input; other cmds -ENOSYS.
    assert_eq!(
        guest.answer(Hypercall::ConsoleIo, [0, 0, 0x7000, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(
        guest.answer(Hypercall::ConsoleIo, [1, 10, 0x5000, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(
        guest.answer(Hypercall::ConsoleIo, [1, 1 << 31, 0x5000, 0, 0]),
        err(Errno::E2big)
    );
    assert_eq!(
        guest.answer(Hypercall::ConsoleIo, [2, 0, 0, 0, 0]),
        err(Errno::Enosys)
    );
}

#[test]
fn long_console_writes_continue() {
    let pages: std::vec::Vec<u64> = (0..8).map(|i| 0x10_0000 + i * 0x1000).collect();
    let mut guest = Guest::new(1, Fake::with_pages(&pages));
    let text: std::vec::Vec<u8> = (0..0x8000)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    guest.memory.put(0x10_0000, &text);
    let mut args = [0, 0x8000, 0x10_0000, 0, 0];
    let mut printed = String::new();
    let mut calls = 0;
    loop {
        let (outcome, out) = guest.call(Hypercall::ConsoleIo, args);
        printed.push_str(&out);
        calls += 1;
        match outcome {
            Outcome::Continue(next) => {
                assert_eq!(next[1], args[1] - CONSOLE_BUDGET as u64);
                assert_eq!(next[2], args[2] + CONSOLE_BUDGET as u64);
                args = next;
            }
            other => {
                assert_eq!(other, Outcome::Return(0));
                break;
            }
        }
    }
    assert_eq!(calls, 0x8000 / CONSOLE_BUDGET);
    assert_eq!(printed.lines().count(), 0x8000 / 64);
    assert!(
        printed
            .lines()
            .all(|l| l.len() == "guest hello: ".len() + 63)
    );
}

#[test]
fn sched_op_yield_shutdown_and_code() {
    let mut guest = Guest::new(1, Fake::with_pages(&[0x5000]));
    assert_eq!(
        guest.answer(Hypercall::SchedOp, [0, 0, 0, 0, 0]),
        Outcome::Yield
    );
    for reason in ShutdownReason::ALL {
        guest.memory.put(0x5100, &reason.raw().to_le_bytes());
        assert_eq!(
            guest.answer(Hypercall::SchedOp, [2, 0x5100, 0, 0, 0]),
            Outcome::Shutdown(*reason)
        );
    }
    guest.memory.put(0x5100, &9u32.to_le_bytes());
    assert_eq!(
        guest.answer(Hypercall::SchedOp, [2, 0x5100, 0, 0, 0]),
        err(Errno::Einval)
    );
    for bad in BAD_POINTERS {
        assert_eq!(
            guest.answer(Hypercall::SchedOp, [2, bad, 0, 0, 0]),
            err(Errno::Efault)
        );
        assert_eq!(
            guest.answer(Hypercall::SchedOp, [5, bad, 0, 0, 0]),
            err(Errno::Efault)
        );
    }
    assert_eq!(
        guest.domain.shutdown_code, None,
        "no failed call changed anything"
    );
    guest.memory.put(0x5100, &1u32.to_le_bytes());
    assert_eq!(
        guest.answer(Hypercall::SchedOp, [5, 0x5100, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(guest.domain.shutdown_code, Some(ShutdownReason::Reboot));
    assert_eq!(
        guest.answer(Hypercall::SchedOp, [1, 0, 0, 0, 0]),
        err(Errno::Enosys)
    );
    assert_eq!(
        guest.answer(Hypercall::SchedOp, [4, 0, 0, 0, 0]),
        err(Errno::Enosys)
    );
    assert_eq!(guest.domain.unimplemented, 2);
}

#[test]
fn xen_version_answers() {
    let mut guest = Guest::new(1, Fake::with_pages(&[0x5000]));
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [0, 0, 0, 0, 0]),
        Outcome::Return(0x40015)
    );
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [1, 0x5000, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(guest.memory.get(0x5000, 16), b".0-fredvisor\0\0\0\0");
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [3, 0x5000, 0, 0, 0]),
        Outcome::Return(0)
    );
    let caps = guest.memory.get(0x5000, 1024);
    assert_eq!(&caps[..16], b"xen-3.0-x86_64 \0");
    assert!(caps[16..].iter().all(|&b| b == 0));
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [5, 0x5000, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(
        guest.memory.get(0x5000, 8),
        0xffff_8000_0000_0000u64.to_le_bytes()
    );
    // get_features: submap 0 = bits 5, 7, 17; any other index -EINVAL.
    guest.memory.put(0x5100, &[0; 8]);
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [6, 0x5100, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(guest.memory.get(0x5104, 4), 0x0002_00a0u32.to_le_bytes());
    guest.memory.put(0x5100, &1u32.to_le_bytes());
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [6, 0x5100, 0, 0, 0]),
        err(Errno::Einval)
    );
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [7, 0, 0, 0, 0]),
        Outcome::Return(4096)
    );
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [7, 0x5000, 0, 0, 0]),
        err(Errno::Einval)
    );
    for cmd in [1, 3, 5, 6] {
        for bad in BAD_POINTERS {
            assert_eq!(
                guest.answer(Hypercall::XenVersion, [cmd, bad, 0, 0, 0]),
                err(Errno::Efault),
                "cmd {cmd} at {bad:#x}"
            );
        }
    }
    // A capabilities buffer that runs into an unmapped page: -EFAULT, nothing written.
    guest.memory.put(0x5c00, &[0xaa; 1024]);
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [3, 0x5e00, 0, 0, 0]),
        err(Errno::Efault)
    );
    assert_eq!(guest.memory.get(0x5e00, 1), [0xaa]);
    assert_eq!(
        guest.answer(Hypercall::XenVersion, [10, 0, 0, 0, 0]),
        err(Errno::Enosys)
    );
}

#[test]
fn vm_assist_vcpu_op_and_segment_bases() {
    let mut guest = Guest::new(2, Fake::default());
    assert_eq!(
        guest.answer(Hypercall::VmAssist, [0, 2, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(
        guest.answer(Hypercall::VmAssist, [0, 32, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(guest.domain.vm_assist, (1 << 2) | (1 << 32));
    assert_eq!(
        guest.answer(Hypercall::VmAssist, [1, 2, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(guest.domain.vm_assist, 1 << 32);
    for kind in [6, 31, 33, 64, u64::MAX] {
        assert_eq!(
            guest.answer(Hypercall::VmAssist, [0, kind, 0, 0, 0]),
            err(Errno::Einval)
        );
    }
    assert_eq!(
        guest.answer(Hypercall::VmAssist, [2, 2, 0, 0, 0]),
        err(Errno::Enosys)
    );
    assert_eq!(guest.domain.vm_assist, 1 << 32);

    assert_eq!(
        guest.answer(Hypercall::VcpuOp, [3, 0, 0, 0, 0]),
        Outcome::Return(1)
    );
    assert_eq!(
        guest.answer(Hypercall::VcpuOp, [3, 1, 0, 0, 0]),
        Outcome::Return(0)
    );
    assert_eq!(
        guest.answer(Hypercall::VcpuOp, [3, 2, 0, 0, 0]),
        err(Errno::Enoent)
    );
    assert_eq!(
        guest.answer(Hypercall::VcpuOp, [10, 0, 0, 0, 0]),
        err(Errno::Enosys)
    );

    assert_eq!(
        guest.answer(Hypercall::SetSegmentBase, [0, 0x7fff_0000, 0, 0, 0]),
        Outcome::SetSegmentBase {
            which: SegmentBaseWhich::Fs,
            base: 0x7fff_0000
        }
    );
    assert_eq!(
        guest.answer(
            Hypercall::SetSegmentBase,
            [2, 0xffff_8880_0000_0000, 0, 0, 0]
        ),
        Outcome::SetSegmentBase {
            which: SegmentBaseWhich::GsKernel,
            base: 0xffff_8880_0000_0000
        }
    );
    assert_eq!(
        guest.answer(Hypercall::SetSegmentBase, [1, 0x8000_0000_0000, 0, 0, 0]),
        err(Errno::Einval)
    );
    assert_eq!(
        guest.answer(Hypercall::SetSegmentBase, [4, 0, 0, 0, 0]),
        err(Errno::Einval)
    );
    // The selector form: `base` is a selector, never checked as an address.
    assert_eq!(
        guest.answer(Hypercall::SetSegmentBase, [3, 0x8000_0000_e02b, 0, 0, 0]),
        Outcome::SetSegmentBase {
            which: SegmentBaseWhich::GsUserSel,
            base: 0x8000_0000_e02b
        }
    );
    // `which` is Xen's unsigned int: only its low 32 bits count.
    assert_eq!(
        guest.answer(Hypercall::SetSegmentBase, [(1 << 32) | 1, 0x5000, 0, 0, 0]),
        Outcome::SetSegmentBase {
            which: SegmentBaseWhich::GsUser,
            base: 0x5000
        }
    );
}

#[test]
fn memory_op_says_where_the_m2p_is() {
    let mut guest = Guest::new(1, Fake::with_pages(&[0x5000]));
    let (outcome, _) = guest.call(Hypercall::MemoryOp, [12, 0x5008, 0, 0, 0]);
    assert_eq!(outcome, Outcome::Return(0));
    let words: std::vec::Vec<u64> = guest
        .memory
        .get(0x5008, 24)
        .chunks(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    assert_eq!(
        words,
        [0xffff_8000_0000_0000, 0xffff_8040_0000_0000, (1 << 35) - 1]
    );
    for bad in BAD_POINTERS {
        let (outcome, _) = guest.call(Hypercall::MemoryOp, [12, bad, 0, 0, 0]);
        assert_eq!(outcome, err(Errno::Efault), "{bad:#x}");
    }
    // The other commands are part 2's.
    let (outcome, _) = guest.call(Hypercall::MemoryOp, [9, 0x5000, 0, 0, 0]);
    assert_eq!(outcome, err(Errno::Enosys));
}

#[test]
fn unknown_hypercalls_are_enosys_and_counted() {
    let mut guest = Guest::new(1, Fake::default());
    let mut out = String::new();
    for number in [6, 11, 27, 40, 127, 128, 1 << 40] {
        assert_eq!(
            guest
                .domain
                .answer("hello", number, [0; 5], &mut guest.memory, &mut out),
            err(Errno::Enosys)
        );
    }
    // Known to the ABI but not answered here (page tables go to the nucleus).
    assert_eq!(
        guest.answer(Hypercall::SetTrapTable, [0; 5]),
        err(Errno::Enosys)
    );
    assert_eq!(guest.domain.unimplemented, 8);
    assert_eq!(out, "");
}

#[test]
fn guest_range_edges() {
    assert_eq!(guest_range(0x7fff_ffff_f000, 0x1000), Ok(()));
    assert_eq!(guest_range(0x7fff_ffff_f000, 0x1001), Err(Errno::Efault));
    assert_eq!(guest_range(0xffff_87ff_ffff_fff0, 16), Err(Errno::Efault));
    assert_eq!(guest_range(0xffff_8800_0000_0000, 16), Ok(()));
    assert_eq!(guest_range(0xffff_ffff_ffff_fff0, 16), Ok(()));
    assert_eq!(guest_range(0xffff_ffff_ffff_fff0, 17), Err(Errno::Efault));
    assert_eq!(guest_range(0, 0), Ok(()));
}
