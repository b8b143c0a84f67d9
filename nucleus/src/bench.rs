//! The `bench` option's ring benchmark: nucleus → fault handler → reply round trips over
//! the rings, timed with `rdtsc` (image-builder prints the table).
use crate::racy::Exclusive;
use crate::thread::Threads;
use core::sync::atomic::{AtomicU64, Ordering};
use ipc::{NucleusMessage, Token};

/// Round trips the `bench` option measures.
const ROUNDS: u32 = 1000;

struct RingBench {
    started_at: u64,
    rounds: u32,
    min: u64,
    max: u64,
    rdtsc_cost: u64,
}

/// The outstanding ping's token, 0 for none (tokens start at 1). Apart from [`BENCH`], so
/// the reply path's check of every token is one load.
static TOKEN: AtomicU64 = AtomicU64::new(0);

static BENCH: Exclusive<RingBench> = Exclusive::new(RingBench {
    started_at: 0,
    rounds: 0,
    min: u64::MAX,
    max: 0,
    rdtsc_cost: 0,
});

/// True if `token` is the benchmark's ping (its reply is not about any thread's event).
#[inline(always)]
pub fn owns(token: Token) -> bool {
    TOKEN.load(Ordering::Relaxed) == token.0 && token.0 != 0
}

/// Cost of an empty `rdtsc` pair, subtracted from every sample.
fn rdtsc_pair_cost() -> u64 {
    (0..64)
        .map(|_| {
            let a = bsp_x86_64::insn::rdtsc();
            let b = bsp_x86_64::insn::rdtsc();
            b.wrapping_sub(a)
        })
        .min()
        .unwrap_or(0)
}

/// Starts the benchmark: the first ping.
pub fn start(t: &mut Threads) {
    let cost = rdtsc_pair_cost();
    BENCH.with(|b| b.rdtsc_cost = cost);
    println!("bench: rdtsc pair costs {cost} ticks");
    send_ping(t);
}

fn send_ping(t: &mut Threads) {
    let Some(peer) = t.first_fault_handler() else {
        println!("bench: ring-roundtrip: no fault handler to ping");
        return;
    };
    let token = t.next_token();
    TOKEN.store(token.0, Ordering::Relaxed);
    BENCH.with(|b| b.started_at = bsp_x86_64::insn::rdtsc());
    if let Err(e) = t.send(peer, &NucleusMessage::Ping { token }) {
        println!("bench: ring-roundtrip: cannot reach fred-server ({e})");
        TOKEN.store(0, Ordering::Relaxed);
    }
}

/// The ping came back: one sample, and the next ping or the result line.
pub fn on_reply(t: &mut Threads) {
    let now = bsp_x86_64::insn::rdtsc();
    let more = BENCH.with(|b| {
        let sample = now.wrapping_sub(b.started_at).saturating_sub(b.rdtsc_cost);
        b.min = b.min.min(sample);
        b.max = b.max.max(sample);
        b.rounds += 1;
        if b.rounds < ROUNDS {
            return true;
        }
        TOKEN.store(0, Ordering::Relaxed);
        println!(
            "bench: ring-roundtrip min={} max={} rounds={}",
            b.min, b.max, b.rounds
        );
        false
    });
    if more {
        send_ping(t);
    }
}
