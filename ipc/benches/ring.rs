//! Ring benchmark: this ring against `rtrb`, `crossbeam_queue::ArrayQueue` and `heapless::spsc`.
//!
//! Two-thread throughput (messages/s) with 16- and 128-byte payloads, one message per
//! operation and in batches of 32 (only this ring and `rtrb` have a batch API), and a ping-pong
//! round trip over two queues. Criterion prints its own report per benchmark; at the end the
//! bench prints one comparison table from the same runs (median over criterion's samples).
//!
//! Every message carries its sequence number in its first 8 bytes and the receiver checks the
//! sum, so a queue that loses or duplicates messages fails the bench instead of winning it.
//! The other queues hold `[u8; N]` values; this ring copies the same bytes into length-prefixed
//! records, which is what it does with real messages. Capacities are about 1024 messages each.
//!
//! `IPC_BENCH_SECONDS` sets criterion's measurement time per benchmark (default 2).

use std::collections::BTreeMap;
use std::hint::{black_box, spin_loop};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use ipc::ring::RingStorage;

/// Messages per batch in the batched runs.
const BATCH: usize = 32;
/// Capacity of the queues that count elements.
const ELEMENTS: usize = 1024;
/// Calls with fewer messages than this (criterion's first warm-up calls) are left out of the
/// table: thread start-up dominates them.
const MIN_MESSAGES_FOR_TABLE: u64 = 20_000;

const QUEUES: [&str; 4] = ["fredvisor", "rtrb", "crossbeam ArrayQueue", "heapless spsc"];

fn message<const P: usize>(seq: u64) -> [u8; P] {
    let mut bytes = [0u8; P];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn sequence(bytes: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(seq)
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
        self.pop_with(sequence).ok().flatten()
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        self.pop_batch(max, |record| *sum = sum.wrapping_add(sequence(record)))
            .ok()
    }
}

impl<const P: usize> Sender<P> for rtrb::Producer<[u8; P]> {
    fn send(&mut self, seq: u64) -> bool {
        self.push(message::<P>(seq)).is_ok()
    }

    fn send_batch(&mut self, seq: u64, count: usize) -> Option<usize> {
        let count = count.min(self.slots());
        if count == 0 {
            return Some(0);
        }
        let chunk = self.write_chunk_uninit(count).ok()?;
        Some(chunk.fill_from_iter((0..count as u64).map(|i| message::<P>(seq + i))))
    }
}

impl<const P: usize> Receiver<P> for rtrb::Consumer<[u8; P]> {
    fn receive(&mut self) -> Option<u64> {
        self.pop().ok().map(|bytes| sequence(&bytes))
    }

    fn receive_batch(&mut self, max: usize, sum: &mut u64) -> Option<usize> {
        let count = max.min(self.slots());
        if count == 0 {
            return Some(0);
        }
        let chunk = self.read_chunk(count).ok()?;
        let (first, second) = chunk.as_slices();
        for bytes in first.iter().chain(second) {
            *sum = sum.wrapping_add(sequence(bytes));
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
        self.pop().map(|bytes| sequence(&bytes))
    }
}

impl<const P: usize> Sender<P> for heapless::spsc::Producer<'_, [u8; P]> {
    fn send(&mut self, seq: u64) -> bool {
        self.enqueue(message::<P>(seq)).is_ok()
    }
}

impl<const P: usize> Receiver<P> for heapless::spsc::Consumer<'_, [u8; P]> {
    fn receive(&mut self) -> Option<u64> {
        self.dequeue().map(|bytes| sequence(&bytes))
    }
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

/// Per benchmark: (messages, elapsed) of every criterion call.
static SAMPLES: Mutex<BTreeMap<String, Vec<(u64, Duration)>>> = Mutex::new(BTreeMap::new());

fn record(name: &str, count: u64, elapsed: Duration) -> Duration {
    SAMPLES
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .push((count, elapsed));
    elapsed
}

/// Median rate (messages per second) of the calls big enough to count.
fn median_rate(name: &str) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap();
    let all = samples.get(name)?;
    let big: Vec<_> = all
        .iter()
        .filter(|(count, _)| *count >= MIN_MESSAGES_FOR_TABLE)
        .collect();
    let use_all = big.is_empty();
    let mut rates: Vec<f64> = all
        .iter()
        .filter(|(count, _)| use_all || *count >= MIN_MESSAGES_FOR_TABLE)
        .map(|(count, elapsed)| *count as f64 / elapsed.as_secs_f64())
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied()
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
            let (mut tx, mut rx) = if P <= 16 {
                small.split()
            } else {
                storage.split()
            };
            let name = format!("{P}B {mode}/{}", QUEUES[0]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| record(&name, n, transfer::<P>(&mut tx, &mut rx, n, batched)))
            });
        }
        {
            let (mut tx, mut rx) = rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS);
            let name = format!("{P}B {mode}/{}", QUEUES[1]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| record(&name, n, transfer::<P>(&mut tx, &mut rx, n, batched)))
            });
        }
        if batched {
            continue; // no batch API in the other two
        }
        {
            let queue = ArrayQueue::<[u8; P]>::new(ELEMENTS);
            let name = format!("{P}B {mode}/{}", QUEUES[2]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| {
                    record(&name, n, transfer::<P>(&mut &queue, &mut &queue, n, false))
                })
            });
        }
        {
            let mut queue = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
            let (mut tx, mut rx) = queue.split();
            let name = format!("{P}B {mode}/{}", QUEUES[3]);
            group.bench_function(&name, |b| {
                b.iter_custom(|n| record(&name, n, transfer::<P>(&mut tx, &mut rx, n, false)))
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
        let ((mut ab_tx, mut ab_rx), (mut ba_tx, mut ba_rx)) = (ab.split(), ba.split());
        let name = format!("ping-pong/{}", QUEUES[0]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| {
                record(
                    &name,
                    n,
                    ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n),
                )
            })
        });
    }
    {
        let (mut ab_tx, mut ab_rx) = rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS);
        let (mut ba_tx, mut ba_rx) = rtrb::RingBuffer::<[u8; P]>::new(ELEMENTS);
        let name = format!("ping-pong/{}", QUEUES[1]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| {
                record(
                    &name,
                    n,
                    ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n),
                )
            })
        });
    }
    {
        let (ab, ba) = (
            ArrayQueue::<[u8; P]>::new(ELEMENTS),
            ArrayQueue::<[u8; P]>::new(ELEMENTS),
        );
        let name = format!("ping-pong/{}", QUEUES[2]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| {
                record(
                    &name,
                    n,
                    ping_pong::<P>(&mut &ab, &mut &ab, &mut &ba, &mut &ba, n),
                )
            })
        });
    }
    {
        let mut ab = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
        let mut ba = Box::new(heapless::spsc::Queue::<[u8; P], ELEMENTS>::new());
        let ((mut ab_tx, mut ab_rx), (mut ba_tx, mut ba_rx)) = (ab.split(), ba.split());
        let name = format!("ping-pong/{}", QUEUES[3]);
        group.bench_function(&name, |b| {
            b.iter_custom(|n| {
                record(
                    &name,
                    n,
                    ping_pong::<P>(&mut ab_tx, &mut ab_rx, &mut ba_tx, &mut ba_rx, n),
                )
            })
        });
    }
    group.finish();
}

fn print_table() {
    fn cell(rate: Option<f64>, latency: bool) -> String {
        match rate {
            Some(rate) if latency => format!("{:.0} ns", 1e9 / rate),
            Some(rate) => format!("{:.1} M/s", rate / 1e6),
            None => "n/a".to_string(),
        }
    }
    println!();
    println!(
        "ring comparison (median of criterion's samples; throughput in messages/s, higher is better;"
    );
    println!("ping-pong: round-trip time, lower is better)");
    println!();
    print!("| {:<20} |", "benchmark");
    for queue in QUEUES {
        print!(" {queue:>20} |");
    }
    println!(" {:>17} |", "fredvisor / best");
    print!("|{:-<22}|", "");
    for _ in QUEUES {
        print!("{:-<21}:|", "");
    }
    println!("{:-<18}:|", "");
    let rows = [
        ("16B single", false),
        ("16B batched", false),
        ("128B single", false),
        ("128B batched", false),
        ("ping-pong", true),
    ];
    for (row, latency) in rows {
        let rates: Vec<Option<f64>> = QUEUES
            .iter()
            .map(|queue| median_rate(&format!("{row}/{queue}")))
            .collect();
        print!("| {row:<20} |");
        for rate in &rates {
            print!(" {:>20} |", cell(*rate, latency));
        }
        // Batched rows compare against the best of the other queues in *any* mode: a queue
        // without a batch API is compared with its single-message rate.
        let single_row = row.replace("batched", "single");
        let best_other = QUEUES[1..]
            .iter()
            .filter_map(|queue| {
                median_rate(&format!("{row}/{queue}"))
                    .or_else(|| median_rate(&format!("{single_row}/{queue}")))
            })
            .fold(None, |best: Option<f64>, rate| {
                Some(best.map_or(rate, |b| b.max(rate)))
            });
        let ratio = match (rates[0], best_other) {
            (Some(ours), Some(best)) => format!("{:.2}x", ours / best),
            _ => "n/a".to_string(),
        };
        println!(" {ratio:>17} |");
    }
}

fn main() {
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
    print_table();
    black_box(());
}
