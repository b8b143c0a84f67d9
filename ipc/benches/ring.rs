//! Ring benchmark: this crate's two rings (the byte ring, `ipc::ring`, and the slot ring,
//! `ipc::ring::slots`) against `rtrb`, `crossbeam_queue::ArrayQueue` and `heapless::spsc`.
//!
//! Two-thread throughput (messages/s) with 16- and 128-byte payloads, one message per
//! operation and in batches of 32 (only these rings and `rtrb` have a batch API), and a ping-pong
//! round trip over two queues. Criterion prints its own report per benchmark. The comparison
//! table at the end comes from a separate, interleaved measurement: in each of [`ROUNDS`]
//! rounds every queue runs the same workload once, in turn (each round starting with the next
//! queue), and the table shows the median rate per queue and the medians of the per-round
//! ratios (the slot ring and the byte ring against `rtrb`, the slot ring against the best of
//! the others; for ping-pong, of round trips per second). On a shared machine whose speed
//! changes from minute to minute (the development VM's does, 3-4x), criterion's
//! one-queue-after-another runs compare queues measured in different conditions; rounds do
//! not. A second `rtrb` ("rtrb again") runs in every round as a control: its ratio to the
//! first is what the same queue measures against itself, so a ratio no farther from 1 than
//! that one is noise, not a difference between queues.
//!
//! Every message carries its sequence number in each of its 8-byte words and the receiver
//! reads them all (the mean is the number) and checks the sum, so a queue that loses or
//! duplicates messages fails the bench instead of winning it, and every queue's receiver
//! touches the whole message as a real one does (reading only the first word let the
//! compiler skip the rest of a 128-byte element for the queues that hand out values, which a
//! receiver that decodes its message never can).
//! The other queues hold `[u8; N]` values; the byte ring copies the same bytes into
//! length-prefixed records, which is what it does with real messages, and the slot ring into
//! `N`-byte slots. Both copy every message out into private memory before the receiver reads
//! it (a peer's bytes are read once; the slot ring's copy is volatile loads of 16 bytes, or
//! of a word, which the compiler folds into the receiver's reads, so it costs what `rtrb`'s
//! in-place reads of a chunk cost). Every queue is used the way its documentation shows: one message
//! per push or pop, or a chunk of up to [`BATCH`] taken from what its cached indices allow.
//! Capacities are about 1024 messages each.
//!
//! `IPC_BENCH_SECONDS` sets criterion's measurement time per benchmark (default 2).

use std::hint::{black_box, spin_loop};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use ipc::ring::RingStorage;
use ipc::ring::slots::{SlotConsumer, SlotProducer, SlotStorage};

/// Messages per batch in the batched runs.
const BATCH: usize = 32;
/// Capacity of the queues that count elements.
const ELEMENTS: usize = 1024;

/// The queues, in the table's order.
const QUEUES: [&str; 6] = [
    "fredvisor bytes",
    "fredvisor slots",
    "rtrb",
    "crossbeam ArrayQueue",
    "heapless spsc",
    "rtrb again",
];
/// Where `rtrb` is in [`QUEUES`]: the table's ratios are against it.
const RTRB: usize = 2;
/// Where the table's control is in [`QUEUES`]: a second `rtrb`, run in each round like the
/// others, so that its ratio to the first shows how far two runs of the same queue differ in
/// the same conditions (the noise any other ratio of the run has to be read against).
const CONTROL: usize = 5;

/// Message `seq`: its sequence number in every 8-byte word.
fn message<const P: usize>(seq: u64) -> [u8; P] {
    let mut bytes = [0u8; P];
    for word in bytes.chunks_exact_mut(8) {
        word.copy_from_slice(&seq.to_le_bytes());
    }
    bytes
}

/// The sequence number of a message, from all of its words (their mean), so that every queue's
/// receiver reads the whole message, as a real one does; a queue that hands over a torn or
/// mixed message gets a wrong sum.
fn sequence<const P: usize>(bytes: &[u8]) -> u64 {
    let sum = bytes[..P]
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add);
    sum / (P / 8) as u64
}

/// Spin briefly, then yield: two cores, shared with whatever else runs.
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        if self.0 < 128 {
            spin_loop();
            self.0 += 1;
        } else {
            thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The sending half of a queue under test.
trait Sender<const P: usize>: Send {
    fn send(&mut self, seq: u64) -> bool;
    /// Sends up to `count` messages starting at `seq`; returns how many. `None`: no batch API.
    fn send_batch(&mut self, _seq: u64, _count: usize) -> Option<usize> {
        None
    }
}

/// The receiving half; returns sequence numbers.
trait Receiver<const P: usize>: Send {
    fn receive(&mut self) -> Option<u64>;
    /// Receives up to `max` messages, adding their sequence numbers to `sum`; `None`: no batch
    /// API.
    fn receive_batch(&mut self, _max: usize, _sum: &mut u64) -> Option<usize> {
        None
    }
}

impl<const P: usize> Sender<P> for ipc::Producer<'_> {
    fn send(&mut self, seq: u64) -> bool {
        self.try_push(&message::<P>(seq)).is_ok()
    }

    fn send_batch(&mut self, seq: u64, count: usize) -> Option<usize> {
        let mut batch = self.batch();
        for i in 0..count {
            if batch.try_push(&message::<P>(seq + i as u64)).is_err() {
                break;
            }
        }
        Some(batch.commit())
    }
}

impl<const P: usize> Receiver<P> for ipc::Consumer<'_> {
    fn receive(&mut self) -> Option<u64> {
        self.pop_with(sequence::<P>).ok().flatten()
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        self.pop_batch(max, |record| *sum = sum.wrapping_add(sequence::<P>(record)))
            .ok()
    }
}

impl<const P: usize> Sender<P> for SlotProducer<'_, P> {
    fn send(&mut self, seq: u64) -> bool {
        self.try_push(&message::<P>(seq)).is_ok()
    }

    fn send_batch(&mut self, seq: u64, count: usize) -> Option<usize> {
        let mut batch = self.batch();
        for i in 0..count {
            if batch.try_push(&message::<P>(seq + i as u64)).is_err() {
                break;
            }
        }
        Some(batch.commit())
    }
}

impl<const P: usize> Receiver<P> for SlotConsumer<'_, P> {
    fn receive(&mut self) -> Option<u64> {
        self.pop_with(|record| sequence::<P>(record)).ok().flatten()
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        self.pop_batch(max, |record| *sum = sum.wrapping_add(sequence::<P>(record)))
            .ok()
    }
}

// rtrb's chunks: asked for `count` slots, rtrb checks its cached index of the other side
// first and loads the shared one only if that says too few (then it reports how many there
// are, and the chunk is taken again at that size), as its documentation's `push_from_iter`
// does. Asking `slots()` first would load the other side's index on every batch, which this
// ring's batches do not do either.
impl<const P: usize> Sender<P> for rtrb::Producer<[u8; P]> {
    fn send(&mut self, seq: u64) -> bool {
        self.push(message::<P>(seq)).is_ok()
    }

    fn send_batch(&mut self, seq: u64, count: usize) -> Option<usize> {
        let chunk = match self.write_chunk_uninit(count) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return Some(0),
            Err(rtrb::chunks::ChunkError::TooFewSlots(free)) => {
                self.write_chunk_uninit(free).ok()?
            }
        };
        let count = chunk.len() as u64;
        Some(chunk.fill_from_iter((0..count).map(|i| message::<P>(seq + i))))
    }
}

impl<const P: usize> Receiver<P> for rtrb::Consumer<[u8; P]> {
    fn receive(&mut self) -> Option<u64> {
        self.pop().ok().map(|bytes| sequence::<P>(&bytes))
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        let chunk = match self.read_chunk(max) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return Some(0),
            Err(rtrb::chunks::ChunkError::TooFewSlots(available)) => {
                self.read_chunk(available).ok()?
            }
        };
        let count = chunk.len();
        let (first, second) = chunk.as_slices();
        for bytes in first.iter().chain(second) {
            *sum = sum.wrapping_add(sequence::<P>(bytes));
        }
        chunk.commit_all();
        Some(count)
    }
}

impl<const P: usize> Sender<P> for &ArrayQueue<[u8; P]> {
    fn send(&mut self, seq: u64) -> bool {
        self.push(message::<P>(seq)).is_ok()
    }
}

impl<const P: usize> Receiver<P> for &ArrayQueue<[u8; P]> {
    fn receive(&mut self) -> Option<u64> {
        self.pop().map(|bytes| sequence::<P>(&bytes))
    }
}

impl<const P: usize> Sender<P> for heapless::spsc::Producer<'_, [u8; P]> {
    fn send(&mut self, seq: u64) -> bool {
        self.enqueue(message::<P>(seq)).is_ok()
    }
}

impl<const P: usize> Receiver<P> for heapless::spsc::Consumer<'_, [u8; P]> {
    fn receive(&mut self) -> Option<u64> {
        self.dequeue().map(|bytes| sequence::<P>(&bytes))
    }
}

/// A queue handle alone on its pair of cache lines. Every handle in this bench is wrapped, so
/// no queue is slowed by where its handles happen to land: rtrb's handles update their cached
/// indices on every operation, and two of them side by side in one stack frame or closure
/// share a cache line between the two threads (this ring's handles are aligned already).
#[repr(align(128))]
struct Padded<T>(T);

impl<const P: usize, S: Sender<P>> Sender<P> for Padded<S> {
    fn send(&mut self, seq: u64) -> bool {
        self.0.send(seq)
    }

    fn send_batch(&mut self, seq: u64, count: usize) -> Option<usize> {
        self.0.send_batch(seq, count)
    }
}

impl<const P: usize, R: Receiver<P>> Receiver<P> for Padded<R> {
    fn receive(&mut self) -> Option<u64> {
        self.0.receive()
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        self.0.receive_batch(max, sum)
    }
}

/// Both halves of a queue, each [`Padded`].
fn padded<T, U>((tx, rx): (T, U)) -> (Padded<T>, Padded<U>) {
    (Padded(tx), Padded(rx))
}

/// Moves `count` messages from `tx` to `rx` on two threads; returns the elapsed time, or `None`
/// if a batched run was asked of a queue without a batch API.
fn transfer<const P: usize>(
    tx: &mut impl Sender<P>,
    rx: &mut impl Receiver<P>,
    count: u64,
    batched: bool,
) -> Duration {
    let start = Instant::now();
    let sum = thread::scope(|scope| {
        scope.spawn(|| {
            let mut backoff = Backoff(0);
            let mut seq = 0;
            while seq < count {
                let sent = if batched {
                    let want = BATCH.min((count - seq) as usize);
                    tx.send_batch(seq, want).expect("batch API") as u64
                } else {
                    u64::from(tx.send(seq))
                };
                if sent == 0 {
                    backoff.wait();
                } else {
                    backoff.reset();
                    seq += sent;
                }
            }
        });
        let mut backoff = Backoff(0);
        let mut received = 0;
        let mut sum = 0u64;
        while received < count {
            let got = if batched {
                let max = BATCH.min((count - received) as usize);
                rx.receive_batch(max, &mut sum).expect("batch API") as u64
            } else {
                match rx.receive() {
                    Some(seq) => {
                        sum = sum.wrapping_add(seq);
                        1
                    }
                    None => 0,
                }
            };
            if got == 0 {
                backoff.wait();
            } else {
                backoff.reset();
                received += got;
            }
        }
        sum
    });
    let elapsed = start.elapsed();
    assert_eq!(
        sum,
        count.wrapping_mul(count.wrapping_sub(1)) / 2,
        "messages lost or duplicated"
    );
    elapsed
}

/// `count` round trips: A sends to B over `ab`, B sends it back over `ba`.
fn ping_pong<const P: usize>(
    ab_tx: &mut impl Sender<P>,
    ab_rx: &mut impl Receiver<P>,
    ba_tx: &mut impl Sender<P>,
    ba_rx: &mut impl Receiver<P>,
    count: u64,
) -> Duration {
    let start = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut backoff = Backoff(0);
            for _ in 0..count {
                let seq = loop {
                    match ab_rx.receive() {
                        Some(seq) => break seq,
                        None => backoff.wait(),
                    }
                };
                backoff.reset();
                while !ba_tx.send(seq) {
                    backoff.wait();
                }
            }
        });
        let mut backoff = Backoff(0);
        for seq in 0..count {
            while !ab_tx.send(seq) {
                backoff.wait();
            }
            let echoed = loop {
                match ba_rx.receive() {
                    Some(echoed) => break echoed,
                    None => backoff.wait(),
                }
            };
            backoff.reset();
            assert_eq!(echoed, seq, "ping-pong out of order");
        }
    });
    start.elapsed()
}

fn throughput<const P: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("throughput/{P}B"));
    group.throughput(Throughput::Elements(1));
    for batched in [false, true] {
        let mode = if batched { "batched" } else { "single" };
        // This ring: about ELEMENTS records of P bytes (a record is P + 4 rounded up to 8).
        {
            let mut storage = Box::new(RingStorage::<{ 128 * 1024 }>::new());
            let mut small = Box::new(RingStorage::<{ 32 * 1024 }>::new());
            let (mut tx, mut rx) = padded(if P <= 16 {
                small.split()
            } else {
                storage.split()
            });
            let name = format!("{P}B {mode}/{}", QUEUES[0]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| transfer::<P>(&mut tx, &mut rx, n, batched))
            });
        }
        {
            let mut storage = Box::new(SlotStorage::<P, ELEMENTS>::new());
            let (mut tx, mut rx) = padded(storage.split());
            let name = format!("{P}B {mode}/{}", QUEUES[1]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| transfer::<P>(&mut tx, &mut rx, n, batched))
            });
        }
        {
            let (mut tx, mut rx) = padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
            let name = format!("{P}B {mode}/{}", QUEUES[RTRB]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| transfer::<P>(&mut tx, &mut rx, n, batched))
            });
        }
        if batched {
            continue; // no batch API in the other two
        }
        {
            let queue = ArrayQueue::<[u8; P]>::new(ELEMENTS);
            let name = format!("{P}B {mode}/{}", QUEUES[3]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| transfer::<P>(&mut &queue, &mut &queue, n, false))
            });
        }
        {
            let mut queue = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
            let (mut tx, mut rx) = padded(queue.split());
            let name = format!("{P}B {mode}/{}", QUEUES[4]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| transfer::<P>(&mut tx, &mut rx, n, false))
            });
        }
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    const P: usize = 16;
    let mut group = c.benchmark_group("ping-pong/16B");
    {
        let mut ab = Box::new(RingStorage::<{ 32 * 1024 }>::new());
        let mut ba = Box::new(RingStorage::<{ 32 * 1024 }>::new());
        let ((mut ab_tx, mut ab_rx), (mut ba_tx, mut ba_rx)) =
            (padded(ab.split()), padded(ba.split()));
        let name = format!("ping-pong/{}", QUEUES[0]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n))
        });
    }
    {
        let mut ab = Box::new(SlotStorage::<P, ELEMENTS>::new());
        let mut ba = Box::new(SlotStorage::<P, ELEMENTS>::new());
        let ((mut ab_tx, mut ab_rx), (mut ba_tx, mut ba_rx)) =
            (padded(ab.split()), padded(ba.split()));
        let name = format!("ping-pong/{}", QUEUES[1]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n))
        });
    }
    {
        let (mut ab_tx, mut ab_rx) = padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
        let (mut ba_tx, mut ba_rx) = padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
        let name = format!("ping-pong/{}", QUEUES[RTRB]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n))
        });
    }
    {
        let (ab, ba) = (
            ArrayQueue::<[u8; P]>::new(ELEMENTS),
            ArrayQueue::<[u8; P]>::new(ELEMENTS),
        );
        let name = format!("ping-pong/{}", QUEUES[3]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| ping_pong::<P>(&mut &ab, &mut &ab, &mut &ba, &mut &ba, n))
        });
    }
    {
        let mut ab = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
        let mut ba = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
        let ((mut ab_tx, mut ab_rx), (mut ba_tx, mut ba_rx)) =
            (padded(ab.split()), padded(ba.split()));
        let name = format!("ping-pong/{}", QUEUES[4]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n))
        });
    }
    group.finish();
}

/// Rounds of the interleaved comparison (`IPC_BENCH_ROUNDS` overrides it).
const ROUNDS: usize = 7;

/// One workload run once on one queue: its rate in messages (or round trips) per second.
type Run = Box<dyn FnMut() -> f64>;

/// A row of the table: one workload, a run per queue (`None`: the queue has no such API).
struct Row {
    name: &'static str,
    latency: bool,
    runs: [Option<Run>; QUEUES.len()],
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// A run moving `count` messages of `P` bytes from `tx` to `rx`.
fn transfer_run<const P: usize>(
    mut tx: impl Sender<P> + 'static,
    mut rx: impl Receiver<P> + 'static,
    count: u64,
    batched: bool,
) -> Option<Run> {
    Some(Box::new(move || {
        rate(count, transfer::<P>(&mut tx, &mut rx, count, batched))
    }))
}

/// A run bouncing `count` messages of `P` bytes over a pair of queues.
fn ping_pong_run<const P: usize>(
    (mut ab_tx, mut ab_rx): (impl Sender<P> + 'static, impl Receiver<P> + 'static),
    (mut ba_tx, mut ba_rx): (impl Sender<P> + 'static, impl Receiver<P> + 'static),
    count: u64,
) -> Option<Run> {
    Some(Box::new(move || {
        rate(
            count,
            ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, count),
        )
    }))
}

/// The queues moving `count` messages of `P` bytes, single or batched. Queues without a
/// batch API are compared by their single-message rate.
fn throughput_runs<const P: usize>(count: u64, batched: bool) -> [Option<Run>; QUEUES.len()] {
    // About ELEMENTS records of P bytes (a record is P + 4 rounded up to 8).
    let (bytes_tx, bytes_rx) = if P <= 16 {
        padded(Box::leak(Box::new(RingStorage::<{ 32 * 1024 }>::new())).split())
    } else {
        padded(Box::leak(Box::new(RingStorage::<{ 128 * 1024 }>::new())).split())
    };
    let slots = Box::leak(Box::new(SlotStorage::<P, ELEMENTS>::new()));
    let (slots_tx, slots_rx) = padded(slots.split());
    let (rtrb_tx, rtrb_rx) = padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
    let crossbeam: &'static ArrayQueue<[u8; P]> = Box::leak(Box::new(ArrayQueue::new(ELEMENTS)));
    let heapless = Box::leak(Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new()));
    let (heapless_tx, heapless_rx) = padded(heapless.split());
    let (control_tx, control_rx) = padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
    [
        transfer_run::<P>(bytes_tx, bytes_rx, count, batched),
        transfer_run::<P>(slots_tx, slots_rx, count, batched),
        transfer_run::<P>(rtrb_tx, rtrb_rx, count, batched),
        transfer_run::<P>(crossbeam, crossbeam, count, false),
        transfer_run::<P>(heapless_tx, heapless_rx, count, false),
        transfer_run::<P>(control_tx, control_rx, count, batched),
    ]
}

/// The queues in pairs bouncing `count` 16-byte messages.
fn ping_pong_runs(count: u64) -> [Option<Run>; QUEUES.len()] {
    const P: usize = 16;
    let bytes = || padded(Box::leak(Box::new(RingStorage::<{ 32 * 1024 }>::new())).split());
    let slots = || padded(Box::leak(Box::new(SlotStorage::<P, ELEMENTS>::new())).split());
    let rtrb = || padded(rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS));
    let crossbeam = || {
        let queue: &'static ArrayQueue<[u8; P]> = Box::leak(Box::new(ArrayQueue::new(ELEMENTS)));
        (queue, queue)
    };
    let heapless =
        || padded(Box::leak(Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new())).split());
    [
        ping_pong_run::<P>(bytes(), bytes(), count),
        ping_pong_run::<P>(slots(), slots(), count),
        ping_pong_run::<P>(rtrb(), rtrb(), count),
        ping_pong_run::<P>(crossbeam(), crossbeam(), count),
        ping_pong_run::<P>(heapless(), heapless(), count),
        ping_pong_run::<P>(rtrb(), rtrb(), count),
    ]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs every row's queues in turn, [`ROUNDS`] times (or `IPC_BENCH_ROUNDS`), and prints the comparison table.
fn interleaved_table() {
    let rounds = std::env::var("IPC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    let mut rows = [
        Row {
            name: "16B single",
            latency: false,
            runs: throughput_runs::<16>(2_000_000, false),
        },
        Row {
            name: "16B batched",
            latency: false,
            runs: throughput_runs::<16>(4_000_000, true),
        },
        Row {
            name: "128B single",
            latency: false,
            runs: throughput_runs::<128>(500_000, false),
        },
        Row {
            name: "128B batched",
            latency: false,
            runs: throughput_runs::<128>(1_000_000, true),
        },
        Row {
            name: "ping-pong",
            latency: true,
            runs: ping_pong_runs(100_000),
        },
    ];
    println!();
    println!(
        "ring comparison, {rounds} interleaved rounds (every queue once per round, in turn): median \
         rate; throughput in messages/s, higher is better; ping-pong: round-trip time, lower is \
         better. Queues without a batch API appear in the batched rows with their single rate."
    );
    println!();
    const RATIOS: [&str; 4] = [
        "slots / rtrb",
        "bytes / rtrb",
        "slots / best",
        "again / rtrb",
    ];
    print!("| {:<14} |", "benchmark");
    for queue in QUEUES {
        print!(" {queue:>20} |");
    }
    for ratio in RATIOS {
        print!(" {ratio:>12} |");
    }
    println!();
    print!("|{:-<16}|", "");
    for _ in QUEUES {
        print!("{:-<21}:|", "");
    }
    for _ in RATIOS {
        print!("{:-<13}:|", "");
    }
    println!();
    // `IPC_BENCH_ROWS=16B`: only the rows whose name contains it.
    let only = std::env::var("IPC_BENCH_ROWS").unwrap_or_default();
    for row in rows
        .iter_mut()
        .filter(|row| row.name.contains(only.as_str()))
    {
        let mut rates: [Vec<f64>; QUEUES.len()] = Default::default();
        let mut ratios: [Vec<f64>; RATIOS.len()] = Default::default();
        for r in 0..rounds {
            // Each round starts with another queue, so none always runs first.
            let mut round = [f64::NAN; QUEUES.len()];
            for k in 0..QUEUES.len() {
                let q = (r + k) % QUEUES.len();
                if let Some(run) = row.runs[q].as_mut() {
                    round[q] = run();
                }
            }
            for (all, r) in rates.iter_mut().zip(&round) {
                all.push(*r);
            }
            let best_other = round[RTRB..].iter().copied().fold(0.0, f64::max);
            ratios[0].push(round[1] / round[RTRB]);
            ratios[1].push(round[0] / round[RTRB]);
            ratios[2].push(round[1] / best_other);
            ratios[3].push(round[CONTROL] / round[RTRB]);
        }
        print!("| {:<14} |", row.name);
        for all in &mut rates {
            let rate = median(all);
            let cell = if row.latency {
                format!("{:.0} ns", 1e9 / rate)
            } else {
                format!("{:.1} M/s", rate / 1e6)
            };
            print!(" {cell:>20} |");
        }
        for all in &mut ratios {
            print!(" {:>11.2}x |", median(all));
        }
        println!();
    }
}

/// Messages per row and queue in the instruction count.
const COUNTED: u64 = 1 << 16;
/// Messages sent before they are received in the instruction count: fewer than any queue holds.
const BLOCK: u64 = 256;

/// One thread sends `count` messages and receives them, [`BLOCK`] at a time, single or batched:
/// the instructions of a send and a receive and of the bench's own work (building and reading
/// the messages), without waiting. Never inlined, so callgrind reports it per queue and row.
#[inline(never)]
fn one_thread<const P: usize>(
    tx: &mut impl Sender<P>,
    rx: &mut impl Receiver<P>,
    count: u64,
    batched: bool,
) -> u64 {
    let mut sum = 0u64;
    for block in (0..count).step_by(BLOCK as usize) {
        let mut seq = block;
        while seq < block + BLOCK {
            seq += if batched {
                tx.send_batch(seq, BATCH).expect("batch API") as u64
            } else {
                u64::from(tx.send(seq))
            };
        }
        let mut received = 0;
        while received < BLOCK {
            received += if batched {
                rx.receive_batch(BATCH, &mut sum).expect("batch API") as u64
            } else {
                let seq = rx.receive().expect("sent before");
                sum = sum.wrapping_add(seq);
                1
            };
        }
    }
    assert_eq!(sum, count * (count - 1) / 2, "messages lost or duplicated");
    sum
}

/// `IPC_BENCH_INSTRUCTIONS=WHAT`: runs [`one_thread`] with [`COUNTED`] messages for the one
/// row and queue `WHAT` names ("16B single/rtrb", as criterion names them), for callgrind to
/// count: `valgrind --tool=callgrind --toggle-collect='*one_thread*'` on the bench binary
/// counts only `one_thread`, and its total divided by `COUNTED` is the instructions per
/// message, sent and received (`IPC_BENCH_INSTRUCTIONS=list` lists the names).
fn instruction_count(what: &str) {
    fn rows<const P: usize>(what: &str) {
        for batched in [false, true] {
            let mode = if batched { "batched" } else { "single" };
            let chosen = |queue: usize| {
                let name = format!("{P}B {mode}/{}", QUEUES[queue]);
                if what == "list" {
                    println!("{name}");
                }
                name == what
            };
            if chosen(0) {
                let mut bytes = Box::new(RingStorage::<{ 128 * 1024 }>::new());
                let (mut tx, mut rx) = bytes.split();
                black_box(one_thread::<P>(&mut tx, &mut rx, COUNTED, batched));
            }
            if chosen(1) {
                let mut slots = Box::new(SlotStorage::<P, ELEMENTS>::new());
                let (mut tx, mut rx) = slots.split();
                black_box(one_thread::<P>(&mut tx, &mut rx, COUNTED, batched));
            }
            if chosen(RTRB) {
                let (mut tx, mut rx) = rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS);
                black_box(one_thread::<P>(&mut tx, &mut rx, COUNTED, batched));
            }
            if batched {
                continue; // no batch API in the other two
            }
            if chosen(3) {
                let queue = ArrayQueue::<[u8; P]>::new(ELEMENTS);
                black_box(one_thread::<P>(&mut &queue, &mut &queue, COUNTED, false));
            }
            if chosen(4) {
                let mut queue = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
                let (mut tx, mut rx) = queue.split();
                black_box(one_thread::<P>(&mut tx, &mut rx, COUNTED, false));
            }
        }
    }
    rows::<16>(what);
    rows::<128>(what);
}

fn main() {
    if let Ok(what) = std::env::var("IPC_BENCH_INSTRUCTIONS") {
        return instruction_count(&what);
    }
    let seconds = std::env::var("IPC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs_f64(seconds))
        .configure_from_args();
    throughput::<16>(&mut criterion);
    throughput::<128>(&mut criterion);
    round_trip(&mut criterion);
    criterion.final_summary();
    interleaved_table();
    black_box(());
}
