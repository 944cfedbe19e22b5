//! Cost of emitting an event: with no listeners (the hot path every connection pays),
//! with inline listeners, and through the bounded executor.
//!
//! A counting global allocator checks, before measuring, that the no-listener path makes
//! zero allocations, and prints the per-emit allocation count of each case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use diam_link::events::{ConnectionId, Event, EventData, EventDispatcher, EventKind, ExecutorConfig, Subscription};
use diam_link::Remote;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn event(remote: &Arc<Remote>) -> Event {
    Event::new(ConnectionId::new(1), Some(Arc::clone(remote)), EventData::Reconnected { attempt: 1 })
}

/// Allocations per emit, averaged over `n` emits on this thread (other threads idle).
fn allocations_per_emit(dispatcher: &EventDispatcher, remote: &Arc<Remote>, n: u64) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        let _ = dispatcher.emit(black_box(event(remote)));
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

fn listeners(dispatcher: &EventDispatcher, n: usize) -> Vec<Subscription> {
    (0..n)
        .map(|_| {
            dispatcher.subscribe(EventKind::Reconnected, |e: &Event| {
                black_box(e.connection_id());
            })
        })
        .collect()
}

fn dispatch(c: &mut Criterion) {
    let remote = Arc::new("127.0.0.1:3868".parse::<Remote>().unwrap());
    let mut group = c.benchmark_group("emit");

    let idle = EventDispatcher::new();
    let per_emit = allocations_per_emit(&idle, &remote, 100_000);
    println!("no listeners: {per_emit} allocations per emit");
    assert_eq!(per_emit, 0.0, "the no-listener path must not allocate");
    group.bench_function("no_listeners", |b| b.iter(|| idle.emit(black_box(event(&remote)))));

    for n in [1, 4] {
        let dispatcher = EventDispatcher::new();
        let _subs = listeners(&dispatcher, n);
        println!("{n} inline listener(s): {} allocations per emit", allocations_per_emit(&dispatcher, &remote, 10_000));
        group
            .bench_function(format!("inline_{n}_listeners"), |b| b.iter(|| dispatcher.emit(black_box(event(&remote)))));
    }

    let executor = EventDispatcher::builder().executor(ExecutorConfig::new(1, 4096)).build().unwrap();
    let _subs = listeners(&executor, 1);
    group.bench_function("executor_1_listener", |b| b.iter(|| executor.emit(black_box(event(&remote)))));
    group.finish();
    assert!(executor.shutdown(Duration::from_secs(5)));
    println!(
        "executor: {} events dropped on overflow (DropNewest, queue 4096)",
        executor.stats(EventKind::Reconnected).dropped
    );
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
