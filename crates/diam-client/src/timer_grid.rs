//! One timer for the long deadlines of many peers.
//!
//! A peer's watchdog deadline (RFC 3539's Tw, 30 s by default) lies on the
//! coalescing grid ([`ConnectionConfig::timer_coalescing`]): it is rounded
//! up to a grid point, so thousands of idle peers share a few dozen points.
//! A peer puts such a deadline here instead of in a timer of its own. The
//! grid keeps one bucket per point, in order, and one task with one tokio
//! timer sleeps until the first point, then wakes every peer in its bucket.
//!
//! With a tokio timer per peer, each deadline is an entry the timer wheel
//! moves at each of its levels (three for 30 s) before it fires, each move
//! a cache miss on scattered, cold memory: with 10,000 idle peers that was
//! the largest single cost of a process. Here a deadline is one push into a
//! contiguous bucket, and firing walks the bucket once.
//!
//! Written here because nothing fits: tokio's timer is that wheel, and
//! `tokio_util::time::DelayQueue` is a wheel of its own polled by one owner,
//! while here each peer's own task registers and is woken by its own waker.
//!
//! A grid follows the clock of the runtime its task runs on: the runtime of
//! the first peer that registers (and again after that runtime is gone).
//! Share one between nodes only when their peers run on one runtime.
//!
//! [`ConnectionConfig::timer_coalescing`]: crate::ConnectionConfig::timer_coalescing

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::handle::lock;

/// A timer shared by peers for their deadlines on the coalescing grid.
///
/// Every [`Node`](crate::Node) makes its own unless it is given one with
/// [`NodeBuilder::timer_grid`](crate::NodeBuilder::timer_grid). Nodes whose
/// peers run on one runtime may share one (as `diam serve` does for the
/// node of each port): one task and one timer then serve them all. Cloning
/// gives another handle to the same grid; its task ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct TimerGrid {
    handle: Arc<Handle>,
}

/// Dropped with the last [`TimerGrid`]: tells the task to end.
struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// A point earlier than the task sleeps for, or the last handle gone.
    wake: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<Instant, Vec<Entry>>,
    /// Entries in all buckets, live or stale.
    entries: usize,
    /// The task is running (it clears this when it ends or is dropped with
    /// its runtime, so the next registration starts another).
    running: bool,
}

/// A registration: stale unless `generation` is still the slot's.
struct Entry {
    slot: Arc<Slot>,
    generation: u64,
}

/// One peer's place on a grid: it is registered at one point at a time,
/// and a registration is stale once the slot registers again or cancels.
/// The waker is kept here, once, rather than in each entry: firing or
/// dropping a stale entry then touches only the slot.
#[derive(Default)]
pub(crate) struct Slot {
    generation: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    /// Makes every earlier registration stale.
    pub(crate) fn cancel(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Default for TimerGrid {
    fn default() -> Self {
        TimerGrid::new()
    }
}

impl fmt::Debug for TimerGrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.handle.inner.state);
        f.debug_struct("TimerGrid").field("points", &st.buckets.len()).field("entries", &st.entries).finish()
    }
}

impl TimerGrid {
    /// A grid with no deadlines. Its task starts with the first one.
    pub fn new() -> TimerGrid {
        let inner = Arc::new(Inner { state: Mutex::default(), wake: Notify::new(), closed: AtomicBool::new(false) });
        TimerGrid { handle: Arc::new(Handle { inner }) }
    }

    /// Wakes `waker` at `at`, unless `slot` registers again or cancels
    /// before. Must be called inside a tokio runtime (the first call starts
    /// the grid's task on it).
    ///
    /// Entries stay in their bucket until its point, stale or not; a peer
    /// registers again only for an earlier point, or (idle) for a later one
    /// at most once per deadline, so its stale entries are bounded by the
    /// points between now and its longest deadline.
    pub(crate) fn register(&self, slot: &Arc<Slot>, at: Instant, waker: &Waker) {
        let inner = &self.handle.inner;
        {
            let mut w = lock(&slot.waker);
            if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *w = Some(waker.clone());
            }
        }
        let generation = slot.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let entry = Entry { slot: slot.clone(), generation };
        let mut st = lock(&inner.state);
        let earliest = st.buckets.first_key_value().is_none_or(|(first, _)| at < *first);
        st.buckets.entry(at).or_default().push(entry);
        st.entries += 1;
        if !st.running {
            st.running = true;
            tokio::spawn(run(inner.clone()));
        } else if earliest {
            inner.wake.notify_one();
        }
    }

    /// Entries in all buckets (stale ones included): for tests.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        lock(&self.handle.inner.state).entries
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

/// Clears `running` when the task ends, however it ends.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.0.state).running = false;
    }
}

/// Sleeps until the first point, wakes the live entries of every bucket
/// due, and again, until the last handle is gone.
async fn run(inner: Arc<Inner>) {
    let _running = Running(inner.clone());
    let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut due = Vec::new();
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let first = lock(&inner.state).buckets.first_key_value().map(|(at, _)| *at);
        match first {
            Some(at) => {
                if sleep.deadline() != at || sleep.is_elapsed() {
                    sleep.as_mut().reset(at);
                }
                tokio::select! {
                    biased;
                    () = inner.wake.notified() => continue,
                    () = &mut sleep => {}
                }
            }
            None => {
                inner.wake.notified().await;
                continue;
            }
        }
        let now = Instant::now();
        {
            let mut st = lock(&inner.state);
            while st.buckets.first_key_value().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, bucket)) = st.buckets.pop_first() {
                    st.entries -= bucket.len();
                    due.push(bucket);
                }
            }
        }
        // Wakes outside the lock: a woken peer may register at once.
        for bucket in due.drain(..) {
            for e in bucket {
                if e.slot.generation.load(Ordering::Acquire) == e.generation {
                    if let Some(w) = lock(&e.slot.waker).as_ref() {
                        w.wake_by_ref();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::time::Duration;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter::default());
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Counter) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    /// Lets the grid's task run (paused time does not move).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_each_peer_at_its_point_and_not_before() {
        let grid = TimerGrid::new();
        let t0 = Instant::now();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let (sa, sb) = (Arc::new(Slot::default()), Arc::new(Slot::default()));
        grid.register(&sa, t0 + Duration::from_secs(30), &wa);
        grid.register(&sb, t0 + Duration::from_secs(10), &wb);
        tokio::time::sleep_until(t0 + Duration::from_millis(9_999)).await;
        settle().await;
        assert_eq!((woken(&a), woken(&b)), (0, 0));
        tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
        settle().await;
        assert_eq!((woken(&a), woken(&b)), (0, 1));
        tokio::time::sleep_until(t0 + Duration::from_secs(30)).await;
        settle().await;
        assert_eq!((woken(&a), woken(&b)), (1, 1));
        assert_eq!(grid.entries(), 0);
    }

    /// An earlier point registered while the task sleeps for a later one
    /// is still kept.
    #[tokio::test(start_paused = true)]
    async fn an_earlier_point_wakes_the_sleeping_task() {
        let grid = TimerGrid::new();
        let t0 = Instant::now();
        let (a, wa) = counter();
        let (b, wb) = counter();
        grid.register(&Arc::new(Slot::default()), t0 + Duration::from_secs(60), &wa);
        settle().await;
        grid.register(&Arc::new(Slot::default()), t0 + Duration::from_secs(7), &wb);
        tokio::time::sleep_until(t0 + Duration::from_secs(7)).await;
        settle().await;
        assert_eq!((woken(&a), woken(&b)), (0, 1));
    }

    /// Registering again, or cancelling, makes the earlier entry stale: it
    /// wakes nobody, and leaves its bucket at its point.
    #[tokio::test(start_paused = true)]
    async fn stale_entries_wake_nobody() {
        let grid = TimerGrid::new();
        let t0 = Instant::now();
        let (a, wa) = counter();
        let slot = Arc::new(Slot::default());
        grid.register(&slot, t0 + Duration::from_secs(10), &wa);
        grid.register(&slot, t0 + Duration::from_secs(20), &wa);
        assert_eq!(grid.entries(), 2);
        tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(woken(&a), 0, "the moved registration fired");
        assert_eq!(grid.entries(), 1);
        slot.cancel();
        tokio::time::sleep_until(t0 + Duration::from_secs(20)).await;
        settle().await;
        assert_eq!(woken(&a), 0, "the cancelled registration fired");
        assert_eq!(grid.entries(), 0);
    }

    /// Many peers on one point: each is woken once, by one timer.
    #[tokio::test(start_paused = true)]
    async fn one_point_wakes_all_its_peers_once() {
        let grid = TimerGrid::new();
        let at = Instant::now() + Duration::from_secs(30);
        let peers: Vec<_> = (0..1000).map(|_| (counter(), Arc::new(Slot::default()))).collect();
        for ((_, w), s) in &peers {
            grid.register(s, at, w);
        }
        tokio::time::sleep_until(at).await;
        settle().await;
        let total: usize = peers.iter().map(|((c, _), _)| woken(c)).sum();
        assert_eq!(total, 1000);
        assert!(peers.iter().all(|((c, _), _)| woken(c) == 1));
    }

    /// The task ends with the last handle, and a grid whose runtime is gone
    /// starts a task on the next runtime that registers.
    #[test]
    fn the_task_follows_its_handles_and_its_runtime() {
        let grid = TimerGrid::new();
        let inner = grid.handle.inner.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (_, w) = counter();
            grid.register(&Arc::new(Slot::default()), Instant::now() + Duration::from_secs(10), &w);
            settle().await;
            assert!(lock(&inner.state).running);
        });
        drop(rt);
        assert!(!lock(&inner.state).running, "the task outlived its runtime");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (c, w) = counter();
            let at = Instant::now() + Duration::from_secs(10);
            grid.register(&Arc::new(Slot::default()), at, &w);
            tokio::time::sleep_until(at).await;
            settle().await;
            assert_eq!(woken(&c), 1, "no task on the second runtime");
            drop(grid);
            settle().await;
            assert!(!lock(&inner.state).running, "the task outlived the last handle");
        });
    }
}
