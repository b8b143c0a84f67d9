use super::*;
use crate::guest_hypercalls::tests::Fake;
use crate::shared_page::tests::Page;
use crate::shared_page::{MASK, PENDING};
use xen_abi::evtchn::EvtchnBindVirq;

#[derive(Default)]
struct Nucleus {
    gdts: std::vec::Vec<(std::vec::Vec<u64>, u64)>,
    descriptors: std::vec::Vec<(u64, u64)>,
    shared: u64,
}

impl FrameSource for Nucleus {
    fn share_frame(&mut self) -> Result<Mfn, Errno> {
        self.shared += 1;
        Ok(Mfn(0x900 + self.shared))
    }
}

impl DescriptorTables for Nucleus {
    fn set_gdt(&mut self, frames: &[u64], entries: u64) -> Result<(), Errno> {
        if frames.contains(&0xbad) {
            return Err(Errno::Einval);
        }
        self.gdts.push((frames.to_vec(), entries));
        Ok(())
    }

    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        self.descriptors.push((maddr, desc));
        Ok(())
    }
}

const ARG: u64 = 0x5000;
/// 1 GHz: ns = TSC ticks.
const TIME: Option<TimeBase> = Some(TimeBase {
    tsc_khz: 1_000_000,
    wall_at_zero_ns: 0,
});

struct World {
    domain: PvDomain,
    memory: Fake,
    shared: Page,
    nucleus: Nucleus,
}

impl World {
    fn new() -> Self {
        Self {
            domain: PvDomain::new(2, Mfn(0x77), 0x1000),
            memory: Fake::with_pages(&[ARG]),
            shared: Page::default(),
            nucleus: Nucleus::default(),
        }
    }

    fn call(&mut self, tsc: u64, number: Hypercall, args: [u64; 5]) -> Result<Answer, Errno> {
        let mut env = Env {
            memory: &mut self.memory,
            shared: &mut self.shared,
            nucleus: &mut self.nucleus,
            time: TIME,
            tsc,
        };
        self.domain.answer(Token(5), number as u64, args, &mut env)
    }

    fn bind_timer(&mut self) -> u32 {
        self.memory.put(ARG, &EvtchnBindVirq::default().to_bytes());
        self.call(0, Hypercall::EventChannelOp, [1, ARG, 0, 0, 0])
            .unwrap();
        u32::from_le_bytes(self.memory.get(ARG + 8, 4).try_into().unwrap())
    }
}

#[test]
fn block_unmasks_and_sleeps_until_the_timer_raises_virq_timer() {
    let mut w = World::new();
    w.shared.0[1] = 1; // start of day: masked
    let port = w.bind_timer();
    assert_eq!(
        w.call(1_000, Hypercall::SetTimerOp, [5_000, 0, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    assert_eq!(
        w.call(1_000, Hypercall::SchedOp, [1, 0, 0, 0, 0]),
        Ok(Answer::Parked)
    );
    assert_eq!(w.shared.0[1], 0, "block unmasked events");
    assert!(w.domain.waits_for_time());
    assert_eq!(
        w.domain
            .wake(TIME, 4_999, &mut w.shared)
            .map(|p| p.map(|p| p.token)),
        Ok(None)
    );
    assert_eq!(
        w.domain
            .wake(TIME, 5_001, &mut w.shared)
            .map(|p| p.map(|p| p.token)),
        Ok(Some(Token(5)))
    );
    assert_eq!(w.shared.0[PENDING], 1 << port);
    assert_eq!(w.shared.0[0], 1, "upcall pending");
    let time =
        xen_abi::shared_info::VcpuTimeInfo::from_bytes(&w.shared.0[32..64].try_into().unwrap());
    assert_eq!((time.version, time.system_time), (2, 5_001));
    assert!(!w.domain.waits_for_time());
    assert_eq!(w.domain.parked, None);
    // With an upcall already pending, block returns at once.
    assert_eq!(
        w.call(6_000, Hypercall::SchedOp, [1, 0, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
}

#[test]
fn poll_wakes_on_a_masked_port_or_its_timeout() {
    let mut w = World::new();
    let port = w.bind_timer();
    w.shared.0[MASK] = 1 << port;
    w.memory.put(ARG + 0x100, &port.to_le_bytes());
    let poll = |timeout: u64| {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&(ARG + 0x100).to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[16..].copy_from_slice(&timeout.to_le_bytes());
        b
    };
    w.memory.put(ARG, &poll(0));
    w.call(0, Hypercall::SetTimerOp, [2_000, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        w.call(0, Hypercall::SchedOp, [3, ARG, 0, 0, 0]),
        Ok(Answer::Parked)
    );
    assert_eq!(
        w.domain
            .wake(TIME, 2_000, &mut w.shared)
            .map(|p| p.map(|p| p.token)),
        Ok(Some(Token(5)))
    );
    assert_eq!(w.shared.0[0], 0, "masked: no upcall");
    // A pending port returns at once; a timeout wakes with nothing pending.
    assert_eq!(
        w.call(3_000, Hypercall::SchedOp, [3, ARG, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    w.shared.0[PENDING] = 0;
    w.memory.put(ARG, &poll(10_000));
    assert_eq!(
        w.call(3_000, Hypercall::SchedOp, [3, ARG, 0, 0, 0]),
        Ok(Answer::Parked)
    );
    assert!(w.domain.waits_for_time());
    assert_eq!(
        w.domain
            .wake(TIME, 9_999, &mut w.shared)
            .map(|p| p.map(|p| p.token)),
        Ok(None)
    );
    assert_eq!(
        w.domain
            .wake(TIME, 10_000, &mut w.shared)
            .map(|p| p.map(|p| p.token)),
        Ok(Some(Token(5)))
    );
    // Too many ports, a bad pointer.
    let mut many = poll(0);
    many[8..12].copy_from_slice(&129u32.to_le_bytes());
    w.memory.put(ARG, &many);
    assert_eq!(
        w.call(0, Hypercall::SchedOp, [3, ARG, 0, 0, 0]),
        Err(Errno::Einval)
    );
    assert_eq!(
        w.call(0, Hypercall::SchedOp, [3, 0xffff_8000_0000_0000, 0, 0, 0]),
        Err(Errno::Efault)
    );
}

#[test]
fn set_iopl_set_gdt_and_update_descriptor() {
    let mut w = World::new();
    w.memory.put(ARG, &1u32.to_le_bytes());
    assert_eq!(
        w.call(0, Hypercall::PhysdevOp, [6, ARG, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    assert_eq!(w.domain.cpu.iopl, 1);
    w.memory.put(ARG, &4u32.to_le_bytes());
    assert_eq!(
        w.call(0, Hypercall::PhysdevOp, [6, ARG, 0, 0, 0]),
        Err(Errno::Einval)
    );
    assert_eq!(
        w.call(0, Hypercall::PhysdevOp, [28, ARG, 0, 0, 0]),
        Err(Errno::Enosys)
    );
    // set_gdt of 513 entries: two frames read from the guest.
    w.memory.put(
        ARG,
        &[0x123u64.to_le_bytes(), 0x124u64.to_le_bytes()].concat(),
    );
    assert_eq!(
        w.call(0, Hypercall::SetGdt, [ARG, 513, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    assert_eq!(w.nucleus.gdts, [(vec![0x123, 0x124], 513)]);
    assert_eq!(
        w.call(0, Hypercall::SetGdt, [ARG, 7169, 0, 0, 0]),
        Err(Errno::Einval),
        "reserved entries"
    );
    assert_eq!(
        w.call(0, Hypercall::SetGdt, [0x8000_0000_0000_0000, 8, 0, 0, 0]),
        Err(Errno::Efault)
    );
    w.memory.put(ARG, &0xbadu64.to_le_bytes());
    assert_eq!(
        w.call(0, Hypercall::SetGdt, [ARG, 8, 0, 0, 0]),
        Err(Errno::Einval)
    );
    assert_eq!(
        w.call(0, Hypercall::UpdateDescriptor, [0x123_008, 7, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    assert_eq!(w.nucleus.descriptors, [(0x123_008, 7)]);
}

#[test]
fn grants_events_and_unknown_calls_route() {
    let mut w = World::new();
    assert_eq!(w.bind_timer(), 1);
    assert_eq!(
        w.call(0, Hypercall::GrantTableOp, [8, 0, 2, 0, 0]),
        Err(Errno::Einval)
    );
    assert_eq!(
        w.call(0, Hypercall::SetTimerOp, [0, 0, 0, 0, 0]),
        Ok(Answer::Return(0))
    );
    assert_eq!(w.domain.timer, None);
    assert!(handles(Hypercall::GrantTableOp as u64));
    assert!(!handles(Hypercall::SchedOp as u64));
    assert!(handles_sched(Hypercall::SchedOp as u64, 1));
    assert!(!handles_sched(Hypercall::SchedOp as u64, 0));
}
