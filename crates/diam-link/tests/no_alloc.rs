//! Emitting an event nobody listens to must not allocate. A counting global allocator
//! (counting only on the thread under test) proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use diam_link::events::{ConnectionId, Event, EventData, EventDispatcher, EventKind};
use diam_link::Remote;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn emitting_without_listeners_does_not_allocate() {
    let remote = Arc::new("127.0.0.1:3868".parse::<Remote>().unwrap());
    let id = ConnectionId::new(7);
    let dispatcher = EventDispatcher::new();
    // Listeners for other kinds and a dropped stream must not change the answer.
    let _other = dispatcher.subscribe(EventKind::PoolReset, |_: &Event| {});
    drop(dispatcher.stream());

    // The counter works: a plain allocation is seen.
    assert_eq!(allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))), 1);

    let n = allocations_during(|| {
        for attempt in 0..10_000u32 {
            let data = match attempt % 4 {
                0 => EventData::Connected { first: false },
                1 => EventData::Reconnected { attempt },
                2 => EventData::ReconnectScheduled { attempt, delay: Duration::from_millis(50) },
                _ => EventData::ConnectionAcquired { wait: Duration::ZERO },
            };
            let event = Event::new(id, Some(Arc::clone(&remote)), data);
            dispatcher.emit(std::hint::black_box(event)).unwrap();
        }
    });
    assert_eq!(n, 0, "emit() with no listeners allocated {n} times");
    assert_eq!(dispatcher.stats(EventKind::Reconnected).events, 2_500);

    // With a listener the cost is allowed, and the same counter sees it.
    let _listener = dispatcher.subscribe(EventKind::Connected, |e: &Event| {
        std::hint::black_box(format!("{:?}", e.kind()));
    });
    let with_listener = allocations_during(|| {
        dispatcher.emit(Event::new(id, Some(Arc::clone(&remote)), EventData::Connected { first: true })).unwrap();
    });
    assert!(with_listener > 0);
}
