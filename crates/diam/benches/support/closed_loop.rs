//! A closed-loop load driver: N workers, each sending a request and awaiting
//! its answer back to back, so N requests are always in flight. Shared by
//! `benches/compare.rs` (in-process) and `examples/compare_peer.rs`
//! (separate processes), so both measure the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = bool> + Send>>;
/// Sends request number `n` and resolves to whether a 2001 answer came.
pub(crate) type SendFn = Arc<dyn Fn(u64) -> BoxFuture + Send + Sync>;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Latencies in µs, 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One measurement window.
pub(crate) struct Cell {
    /// Answers (2001) per second of the window.
    pub(crate) rps: f64,
    /// Requests sent in the window that got a 2001 answer.
    pub(crate) answers: u64,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    /// Requests sent in the window without a 2001 answer, plus workers
    /// still stuck `give_up` after the window.
    pub(crate) failures: u64,
}

/// Runs `inflight` closed-loop workers over `send`: `warmup`, then the
/// measured `window`. Only requests sent during the window count. A worker
/// still waiting `give_up` after the window is aborted and counted failed
/// (an implementation without request timeouts would otherwise hang).
pub(crate) async fn drive(
    send: SendFn,
    inflight: usize,
    warmup: Duration,
    window: Duration,
    give_up: Duration,
) -> Cell {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..inflight {
        let (send, phase, next, failures) = (send.clone(), phase.clone(), next.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut answers = 0u64;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOP {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                // No timer per request here (it would cost both sides a
                // timer-wheel insertion): a stuck worker is aborted below.
                let ok = send(n).await;
                let us = t0.elapsed().as_micros() as u64;
                if phase.load(Ordering::Relaxed) == MEASURE && p == MEASURE {
                    if ok {
                        answers += 1;
                        hist.saturating_record(us.max(1));
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !ok {
                    // Back off a failing peer instead of spinning on it.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (answers, hist)
        }));
    }
    tokio::time::sleep(warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut total = histogram();
    let mut answers = 0;
    let deadline = tokio::time::Instant::now() + give_up;
    for mut w in workers {
        match tokio::time::timeout_at(deadline, &mut w).await {
            Ok(Ok((a, h))) => {
                answers += a;
                // Same bounds on both sides: adding cannot fail.
                total.add(&h).expect("histograms with equal bounds");
            }
            _ => {
                // Stuck on a request that never got an answer.
                w.abort();
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let q = |q: f64| if total.is_empty() { 0 } else { total.value_at_quantile(q) };
    Cell {
        rps: answers as f64 / elapsed.as_secs_f64(),
        answers,
        p50: q(0.5),
        p99: q(0.99),
        failures: failures.load(Ordering::Relaxed),
    }
}
