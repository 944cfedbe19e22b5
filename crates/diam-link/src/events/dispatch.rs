//! The event dispatcher: registration, delivery, isolation, executor, statistics, stream.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::{Event, EventKind};
use crate::error::{BoxError, ConfigError};

type Callback = Box<dyn Fn(&Event) -> Result<(), BoxError> + Send + Sync>;
type ListenerList = Arc<[Arc<Listener>]>;

/// Locks, ignoring poison: every critical section here leaves its data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the dispatcher does when a listener returns an error or panics. Either way the
/// other listeners still run and the error is counted in [`KindStats::errors`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Count it and move on.
    Ignore,
    /// Count it and log it at `warn` through `tracing` (the default).
    #[default]
    Log,
    /// Count it and return the first one from [`EventDispatcher::emit`] once every
    /// listener has run. Meant for tests. Listeners on an executor have no caller to
    /// return to, so there it behaves like [`Log`](Self::Log).
    Propagate,
}

/// What a bounded executor does with an event when its queue is full. Either way the
/// event is counted in [`EventDispatcher::dropped_events`] and [`KindStats::dropped`];
/// the emitting task never blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Discard the event being emitted; the queue keeps the older ones (the default).
    #[default]
    DropNewest,
    /// Discard the oldest queued event to make room for the new one.
    DropOldest,
}

/// Runs listeners on a pool of worker threads instead of the emitting task, so a slow
/// listener never delays I/O.
///
/// Events go through one bounded FIFO queue. With one worker, listeners see events in
/// emission order; with more, events are handled concurrently and their relative order
/// is lost (the listeners of one event still run in registration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct ExecutorConfig {
    workers: usize,
    queue_size: usize,
    overflow: Overflow,
}

impl ExecutorConfig {
    /// `workers` threads (1 to 64) sharing a queue of `queue_size` events (1 to 1 048 576);
    /// the queue is allocated up front. Overflow defaults to [`Overflow::DropNewest`].
    pub const fn new(workers: usize, queue_size: usize) -> Self {
        Self { workers, queue_size, overflow: Overflow::DropNewest }
    }

    /// Sets the overflow policy.
    pub const fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.workers) {
            return Err(ConfigError::value("executor workers", "must be between 1 and 64"));
        }
        if !(1..=1 << 20).contains(&self.queue_size) {
            return Err(ConfigError::value("executor queue_size", "must be between 1 and 1048576"));
        }
        Ok(())
    }
}

impl Default for ExecutorConfig {
    /// Two workers, a queue of 1024 events, [`Overflow::DropNewest`].
    fn default() -> Self {
        Self::new(2, 1024)
    }
}

/// A listener failed; see [`ErrorPolicy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The listener returned an error.
    #[error("{kind} listener failed")]
    #[non_exhaustive]
    Failed {
        /// The kind of event being delivered.
        kind: EventKind,
        /// What the listener returned.
        #[source]
        source: BoxError,
    },
    /// The listener panicked.
    #[error("{kind} listener panicked: {message}")]
    #[non_exhaustive]
    Panicked {
        /// The kind of event being delivered.
        kind: EventKind,
        /// The panic message, when it was a string.
        message: String,
    },
}

/// The return types a listener may have: `()` or `Result<(), E>`.
pub trait IntoListenerResult: sealed::Sealed {
    #[doc(hidden)]
    fn into_listener_result(self) -> Result<(), BoxError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<E> Sealed for Result<(), E> {}
}

impl IntoListenerResult for () {
    fn into_listener_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoListenerResult for Result<(), E> {
    fn into_listener_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// Per-kind instrumentation, as returned by [`EventDispatcher::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindStats {
    /// Events emitted.
    pub events: u64,
    /// Listener invocations.
    pub callbacks: u64,
    /// Invocations that returned an error or panicked.
    pub errors: u64,
    /// Events an executor discarded because its queue was full or shut down.
    pub dropped: u64,
    /// Time spent in listeners, in total.
    pub total_time: Duration,
    /// The slowest single invocation.
    pub max_time: Duration,
}

impl KindStats {
    /// Mean time per invocation (zero when nothing ran).
    pub fn avg_time(&self) -> Duration {
        match u32::try_from(self.callbacks) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_time / n,
            Err(_) => Duration::from_nanos((self.total_time.as_nanos() / u128::from(self.callbacks)) as u64),
        }
    }
}

#[derive(Default)]
struct StatsCell {
    events: AtomicU64,
    callbacks: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl StatsCell {
    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn snapshot(&self) -> KindStats {
        KindStats {
            events: self.events.load(Ordering::Relaxed),
            callbacks: self.callbacks.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            total_time: Duration::from_nanos(self.total_ns.load(Ordering::Relaxed)),
            max_time: Duration::from_nanos(self.max_ns.load(Ordering::Relaxed)),
        }
    }
}

struct Listener {
    id: u64,
    active: AtomicBool,
    callback: Callback,
}

struct Slot {
    /// Copy-on-write list: dispatch clones the `Arc` (a snapshot) and releases the lock
    /// before calling anything, so listeners may subscribe and unsubscribe freely.
    listeners: Mutex<ListenerList>,
    len: AtomicUsize,
    stats: StatsCell,
}

/// State shared by dispatcher handles, subscriptions and executor workers.
struct Core {
    slots: [Slot; EventKind::COUNT],
    policy: ErrorPolicy,
    next_id: AtomicU64,
    dropped: AtomicU64,
    streams: AtomicUsize,
}

impl Core {
    fn slot(&self, kind: EventKind) -> &Slot {
        &self.slots[kind.index()]
    }

    fn drop_event(&self, kind: EventKind) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.slot(kind).stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn deliver(
        &self,
        kind: EventKind,
        listeners: &[Arc<Listener>],
        event: &Event,
        policy: ErrorPolicy,
    ) -> Result<(), ListenerError> {
        let stats = &self.slot(kind).stats;
        let mut first_error = None;
        for listener in listeners {
            if !listener.active.load(Ordering::Acquire) {
                continue;
            }
            let started = Instant::now();
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| (listener.callback)(event)));
            stats.record(started.elapsed());
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(source)) => ListenerError::Failed { kind, source },
                Err(payload) => ListenerError::Panicked { kind, message: panic_message(payload.as_ref()) },
            };
            stats.errors.fetch_add(1, Ordering::Relaxed);
            match policy {
                ErrorPolicy::Ignore => {}
                ErrorPolicy::Log => {
                    tracing::warn!(event = %kind, listener = listener.id, error = %error, "event listener failed")
                }
                ErrorPolicy::Propagate => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn remove(&self, id: u64) {
        for slot in &self.slots {
            let mut list = lock(&slot.listeners);
            if list.iter().any(|l| l.id == id) {
                let kept: Vec<_> = list.iter().filter(|l| l.id != id).cloned().collect();
                slot.len.store(kept.len(), Ordering::Release);
                *list = kept.into();
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

struct Job {
    kind: EventKind,
    listeners: ListenerList,
    event: Event,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
    live_workers: usize,
}

struct Queue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
    workers_done: Condvar,
    capacity: usize,
    overflow: Overflow,
}

struct Executor {
    queue: Arc<Queue>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Executor {
    fn start(config: ExecutorConfig, core: &Arc<Core>) -> Result<Self, ConfigError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(config.queue_size),
                closed: false,
                live_workers: config.workers,
            }),
            not_empty: Condvar::new(),
            workers_done: Condvar::new(),
            capacity: config.queue_size,
            overflow: config.overflow,
        });
        let mut handles = Vec::with_capacity(config.workers);
        for n in 0..config.workers {
            let (worker_queue, worker_core) = (Arc::clone(&queue), Arc::clone(core));
            let spawned = std::thread::Builder::new()
                .name(format!("diam-link-events-{n}"))
                .spawn(move || worker(&worker_queue, &worker_core));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(_) => {
                    let executor = Self { queue, handles: Mutex::new(handles) };
                    executor.close();
                    lock(&executor.queue.state).live_workers -= config.workers - n;
                    return Err(ConfigError::value("executor workers", "could not spawn a worker thread"));
                }
            }
        }
        Ok(Self { queue, handles: Mutex::new(handles) })
    }

    /// Queues a job; on overflow returns the kind of the job that was discarded.
    fn submit(&self, job: Job) -> Result<(), EventKind> {
        let mut state = lock(&self.queue.state);
        if state.closed {
            return Err(job.kind);
        }
        let mut discarded = None;
        if state.jobs.len() >= self.queue.capacity {
            match self.queue.overflow {
                Overflow::DropNewest => return Err(job.kind),
                Overflow::DropOldest => discarded = state.jobs.pop_front().map(|old| old.kind),
            }
        }
        state.jobs.push_back(job);
        drop(state);
        self.queue.not_empty.notify_one();
        discarded.map_or(Ok(()), Err)
    }

    fn close(&self) {
        lock(&self.queue.state).closed = true;
        self.queue.not_empty.notify_all();
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        self.close();
        let state = lock(&self.queue.state);
        let (state, _) = self
            .queue
            .workers_done
            .wait_timeout_while(state, timeout, |s| s.live_workers > 0)
            .unwrap_or_else(PoisonError::into_inner);
        let drained = state.live_workers == 0;
        drop(state);
        if drained {
            for handle in lock(&self.handles).drain(..) {
                let _ = handle.join();
            }
        }
        drained
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Workers finish what is queued, then exit; nobody waits for them here.
        self.close();
    }
}

fn worker(queue: &Queue, core: &Core) {
    loop {
        let job = {
            let mut state = lock(&queue.state);
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break Some(job);
                }
                if state.closed {
                    break None;
                }
                state = queue.not_empty.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let Some(job) = job else { break };
        let policy = match core.policy {
            ErrorPolicy::Propagate => ErrorPolicy::Log,
            other => other,
        };
        let _ = core.deliver(job.kind, &job.listeners, &job.event, policy);
    }
    lock(&queue.state).live_workers -= 1;
    queue.workers_done.notify_all();
}

/// Configures an [`EventDispatcher`]; see [`EventDispatcher::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DispatcherBuilder {
    policy: ErrorPolicy,
    executor: Option<ExecutorConfig>,
    stream_capacity: usize,
}

impl DispatcherBuilder {
    /// How listener failures are handled; default [`ErrorPolicy::Log`].
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Runs every listener on a bounded pool of worker threads; default: listeners run
    /// inline, on the task that emits.
    pub fn executor(mut self, config: ExecutorConfig) -> Self {
        self.executor = Some(config);
        self
    }

    /// How many events an [`EventStream`] may fall behind before it skips (1 to 65 536,
    /// default 256); see [`EventDispatcher::stream`].
    pub fn stream_capacity(mut self, capacity: usize) -> Self {
        self.stream_capacity = capacity;
        self
    }

    /// Validates the settings, starts the executor's threads if there is one, and builds
    /// the dispatcher.
    pub fn build(self) -> Result<EventDispatcher, ConfigError> {
        if !(1..=1 << 16).contains(&self.stream_capacity) {
            return Err(ConfigError::value("stream_capacity", "must be between 1 and 65536"));
        }
        if let Some(config) = &self.executor {
            config.validate()?;
        }
        let empty: ListenerList = Arc::new([]);
        let core = Arc::new(Core {
            slots: std::array::from_fn(|_| Slot {
                listeners: Mutex::new(Arc::clone(&empty)),
                len: AtomicUsize::new(0),
                stats: StatsCell::default(),
            }),
            policy: self.policy,
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        });
        let executor = self.executor.map(|config| Executor::start(config, &core)).transpose()?.map(Arc::new);
        let (stream, _) = broadcast::channel(self.stream_capacity);
        Ok(EventDispatcher { core, executor, stream })
    }
}

/// Delivers [`Event`]s to listeners.
///
/// * **Registration**: [`subscribe`](Self::subscribe) to one kind or
///   [`subscribe_all`](Self::subscribe_all); a listener is a closure returning `()` or
///   `Result<(), E>`. Listeners of an event run in registration order.
/// * **Snapshots**: `emit` takes a snapshot of the listener list and releases every lock
///   before calling anything, so a listener may subscribe or unsubscribe (even itself)
///   from inside its callback. A listener unsubscribed mid-dispatch is skipped from then on.
/// * **Isolation**: a panic or error in one listener never reaches the emitter or the
///   other listeners; [`ErrorPolicy`] says whether it is ignored, logged or returned.
/// * **Executor**: optionally, listeners run on a bounded worker pool
///   ([`ExecutorConfig`]); when its queue is full the [`Overflow`] policy discards an
///   event and counts it.
/// * **Statistics**: per kind, events, invocations, errors, drops, total, mean and
///   maximum time ([`stats`](Self::stats)).
/// * **Stream**: [`stream`](Self::stream) gives a broadcast [`EventStream`].
/// * **Cost**: emitting an event that nobody listens to and nobody streams touches two
///   atomics and never allocates (a counting-allocator test and the `dispatch` bench
///   check this).
///
/// The dispatcher is a cheap handle: clones share listeners, statistics and executor.
///
/// ```
/// use diam_link::events::{ConnectionId, Event, EventData, EventDispatcher, EventKind};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let dispatcher = EventDispatcher::new();
/// let connects = Arc::new(AtomicU32::new(0));
/// let seen = Arc::clone(&connects);
/// let subscription = dispatcher.subscribe(EventKind::Connected, move |_event: &Event| {
///     seen.fetch_add(1, Ordering::Relaxed);
/// });
/// dispatcher.emit(Event::new(ConnectionId::new(1), None, EventData::Connected { first: true }))?;
/// assert_eq!(connects.load(Ordering::Relaxed), 1);
/// drop(subscription); // unsubscribes
/// # Ok::<(), diam_link::events::ListenerError>(())
/// ```
#[derive(Clone)]
pub struct EventDispatcher {
    core: Arc<Core>,
    executor: Option<Arc<Executor>>,
    stream: broadcast::Sender<Event>,
}

impl EventDispatcher {
    /// A dispatcher with inline listeners, [`ErrorPolicy::Log`] and a stream capacity of 256.
    pub fn new() -> Self {
        Self::builder().build().unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// Starts configuring a dispatcher.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder { policy: ErrorPolicy::default(), executor: None, stream_capacity: 256 }
    }

    /// Calls `listener` for every event of `kind` until the returned [`Subscription`] is
    /// dropped or [`unsubscribe`](Subscription::unsubscribe)d.
    pub fn subscribe<F, R>(&self, kind: EventKind, listener: F) -> Subscription
    where
        F: Fn(&Event) -> R + Send + Sync + 'static,
        R: IntoListenerResult,
    {
        self.register(&[kind], listener)
    }

    /// Calls `listener` for every event of every kind; see [`subscribe`](Self::subscribe).
    pub fn subscribe_all<F, R>(&self, listener: F) -> Subscription
    where
        F: Fn(&Event) -> R + Send + Sync + 'static,
        R: IntoListenerResult,
    {
        self.register(&EventKind::ALL, listener)
    }

    fn register<F, R>(&self, kinds: &[EventKind], listener: F) -> Subscription
    where
        F: Fn(&Event) -> R + Send + Sync + 'static,
        R: IntoListenerResult,
    {
        let id = self.core.next_id.fetch_add(1, Ordering::Relaxed);
        let listener = Arc::new(Listener {
            id,
            active: AtomicBool::new(true),
            callback: Box::new(move |event| listener(event).into_listener_result()),
        });
        for &kind in kinds {
            let slot = self.core.slot(kind);
            let mut list = lock(&slot.listeners);
            let grown: Vec<_> = list.iter().cloned().chain([Arc::clone(&listener)]).collect();
            slot.len.store(grown.len(), Ordering::Release);
            *list = grown.into();
        }
        Subscription { id, core: Arc::downgrade(&self.core), listener: Some(listener) }
    }

    /// `true` when an event of `kind` would reach anyone: a listener registered for it, or
    /// an open [`EventStream`]. A way to skip building an expensive
    /// [`CustomEvent`](super::CustomEvent) nobody will see.
    pub fn has_listeners(&self, kind: EventKind) -> bool {
        self.core.slot(kind).len.load(Ordering::Acquire) > 0 || self.core.streams.load(Ordering::Acquire) > 0
    }

    /// Delivers `event`: to the stream if anyone streams, then to the listeners of its
    /// kind, inline or through the executor.
    ///
    /// Returns an error only under [`ErrorPolicy::Propagate`], after every listener ran.
    pub fn emit(&self, event: Event) -> Result<(), ListenerError> {
        let kind = event.kind();
        let slot = self.core.slot(kind);
        slot.stats.events.fetch_add(1, Ordering::Relaxed);
        let listening = slot.len.load(Ordering::Acquire) > 0;
        if self.core.streams.load(Ordering::Acquire) > 0 {
            if !listening {
                let _ = self.stream.send(event);
                return Ok(());
            }
            let _ = self.stream.send(event.clone());
        }
        if !listening {
            return Ok(());
        }
        let listeners = Arc::clone(&*lock(&slot.listeners));
        match &self.executor {
            None => self.core.deliver(kind, &listeners, &event, self.core.policy),
            Some(executor) => {
                if let Err(discarded) = executor.submit(Job { kind, listeners, event }) {
                    self.core.drop_event(discarded);
                }
                Ok(())
            }
        }
    }

    /// A broadcast stream of every event emitted from now on.
    ///
    /// **Lag**: the stream buffers up to the configured capacity (default 256) events. A
    /// consumer that falls further behind loses the oldest ones and then receives
    /// `Err(Lagged)` saying how many it missed, followed by the oldest event still
    /// buffered; emitters never wait for streams. The stream ends when every dispatcher
    /// handle is gone.
    pub fn stream(&self) -> EventStream {
        self.core.streams.fetch_add(1, Ordering::AcqRel);
        EventStream { inner: BroadcastStream::new(self.stream.subscribe()), core: Arc::clone(&self.core) }
    }

    /// Statistics for one kind.
    pub fn stats(&self, kind: EventKind) -> KindStats {
        self.core.slot(kind).stats.snapshot()
    }

    /// Statistics for every kind, in [`EventKind::ALL`] order.
    pub fn all_stats(&self) -> Vec<(EventKind, KindStats)> {
        EventKind::ALL.iter().map(|&kind| (kind, self.stats(kind))).collect()
    }

    /// Events the executor discarded (queue full, or emitted after shutdown), all kinds.
    pub fn dropped_events(&self) -> u64 {
        self.core.dropped.load(Ordering::Relaxed)
    }

    /// Stops the executor: it refuses new events (counted as dropped) and its workers
    /// finish what is queued. Blocks the calling thread until they are done or `timeout`
    /// passes, and returns whether they finished (from async code, call it through
    /// `tokio::task::spawn_blocking`). Without an executor it returns `true` at once.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.executor.as_ref().is_none_or(|executor| executor.shutdown(timeout))
    }
}

impl Default for EventDispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners: usize = self.core.slots.iter().map(|s| s.len.load(Ordering::Relaxed)).sum();
        f.debug_struct("EventDispatcher")
            .field("policy", &self.core.policy)
            .field("executor", &self.executor.is_some())
            .field("listener_registrations", &listeners)
            .field("dropped_events", &self.dropped_events())
            .finish_non_exhaustive()
    }
}

/// A registered listener. **Dropping it unsubscribes**; call [`detach`](Self::detach) to
/// keep the listener for the dispatcher's lifetime instead.
#[must_use = "dropping a Subscription unsubscribes its listener at once; call .detach() to keep it"]
pub struct Subscription {
    id: u64,
    core: Weak<Core>,
    listener: Option<Arc<Listener>>,
}

impl Subscription {
    /// Removes the listener. It is not called again once this returns, not even by a
    /// dispatch already in progress (a call already running finishes).
    pub fn unsubscribe(self) {
        drop(self);
    }

    /// Keeps the listener registered for as long as the dispatcher lives.
    pub fn detach(mut self) {
        self.listener = None;
    }

    /// A number unique among this dispatcher's subscriptions.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else { return };
        listener.active.store(false, Ordering::Release);
        if let Some(core) = self.core.upgrade() {
            core.remove(self.id);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("detached", &self.listener.is_none()).finish()
    }
}

/// An [`EventStream`] fell behind and missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event stream lagged: {skipped} events were missed")]
pub struct Lagged {
    skipped: u64,
}

impl Lagged {
    /// How many events were missed.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// A broadcast stream of events; see [`EventDispatcher::stream`] for its lag behaviour.
pub struct EventStream {
    inner: BroadcastStream<Event>,
    core: Arc<Core>,
}

impl futures_core::Stream for EventStream {
    type Item = Result<Event, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|result| result.map_err(|BroadcastStreamRecvError::Lagged(skipped)| Lagged { skipped }))
        })
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.core.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ConnectionId, EventData};
    use std::sync::mpsc;

    fn event(attempt: u32) -> Event {
        Event::new(ConnectionId::new(1), None, EventData::Reconnected { attempt })
    }

    fn attempt(event: &Event) -> u32 {
        match event.data() {
            EventData::Reconnected { attempt } => *attempt,
            _ => 0,
        }
    }

    #[test]
    fn listeners_run_in_registration_order_across_kind_and_all() {
        let d = EventDispatcher::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let subs: Vec<Subscription> = (0..4)
            .map(|i| {
                let log = Arc::clone(&log);
                let f = move |_: &Event| lock(&log).push(i);
                if i % 2 == 0 {
                    d.subscribe(EventKind::Reconnected, f)
                } else {
                    d.subscribe_all(f)
                }
            })
            .collect();
        d.emit(event(1)).unwrap();
        assert_eq!(*lock(&log), [0, 1, 2, 3]);
        lock(&log).clear();
        d.emit(Event::new(ConnectionId::new(1), None, EventData::PoolReset)).unwrap();
        assert_eq!(*lock(&log), [1, 3]);
        drop(subs);
        assert!(!d.has_listeners(EventKind::Reconnected));
    }

    #[test]
    fn unsubscribe_and_subscribe_inside_a_callback() {
        let d = EventDispatcher::new();
        let calls = Arc::new(AtomicU64::new(0));
        let slot: Arc<Mutex<Option<Subscription>>> = Arc::new(Mutex::new(None));
        let late = Arc::new(Mutex::new(Vec::new()));
        let sub = {
            let (calls, slot, late, d2) = (Arc::clone(&calls), Arc::clone(&slot), Arc::clone(&late), d.clone());
            d.subscribe(EventKind::Reconnected, move |_: &Event| {
                calls.fetch_add(1, Ordering::SeqCst);
                // One-shot: drop our own subscription, and register a newcomer.
                drop(lock(&slot).take());
                let late2 = Arc::clone(&late);
                lock(&late).push(d2.subscribe(EventKind::Reconnected, move |_: &Event| {
                    let _ = &late2;
                }));
            })
        };
        *lock(&slot) = Some(sub);
        d.emit(event(1)).unwrap();
        d.emit(event(2)).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(lock(&late).len(), 1, "the newcomer registered once and is not the one-shot");
    }

    #[test]
    fn a_listener_removed_mid_dispatch_is_skipped() {
        let d = EventDispatcher::new();
        let second: Arc<Mutex<Option<Subscription>>> = Arc::new(Mutex::new(None));
        let ran = Arc::new(AtomicBool::new(false));
        let first = {
            let second = Arc::clone(&second);
            d.subscribe(EventKind::Reconnected, move |_: &Event| drop(lock(&second).take()))
        };
        let ran2 = Arc::clone(&ran);
        *lock(&second) = Some(d.subscribe(EventKind::Reconnected, move |_: &Event| ran2.store(true, Ordering::SeqCst)));
        d.emit(event(1)).unwrap();
        assert!(!ran.load(Ordering::SeqCst));
        drop(first);
    }

    #[test]
    fn panics_and_errors_are_isolated_and_counted() {
        let d = EventDispatcher::builder().error_policy(ErrorPolicy::Propagate).build().unwrap();
        let after = Arc::new(AtomicU64::new(0));
        let _a = d.subscribe(EventKind::Reconnected, |_: &Event| -> () { panic!("boom") });
        let _b = d.subscribe(EventKind::Reconnected, |_: &Event| Err::<(), _>("refused"));
        let after2 = Arc::clone(&after);
        let _c = d.subscribe(EventKind::Reconnected, move |_: &Event| {
            after2.fetch_add(1, Ordering::SeqCst);
        });
        let err = d.emit(event(1)).unwrap_err();
        assert!(matches!(&err, ListenerError::Panicked { message, .. } if message == "boom"), "{err}");
        assert_eq!(after.load(Ordering::SeqCst), 1, "later listeners still ran");
        let stats = d.stats(EventKind::Reconnected);
        assert_eq!((stats.events, stats.callbacks, stats.errors), (1, 3, 2));
        assert!(stats.max_time <= stats.total_time && stats.avg_time() <= stats.max_time);

        let quiet = EventDispatcher::builder().error_policy(ErrorPolicy::Ignore).build().unwrap();
        let _p = quiet.subscribe_all(|_: &Event| -> () { panic!("ignored") });
        assert!(quiet.emit(event(1)).is_ok());
        assert_eq!(quiet.stats(EventKind::Reconnected).errors, 1);
    }

    fn blocked_executor(
        overflow: Overflow,
    ) -> (EventDispatcher, mpsc::Receiver<u32>, mpsc::SyncSender<()>, Subscription) {
        let d = EventDispatcher::builder().executor(ExecutorConfig::new(1, 2).overflow(overflow)).build().unwrap();
        let (seen_tx, seen_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::sync_channel::<()>(16);
        let go_rx = Mutex::new(go_rx);
        let sub = d.subscribe(EventKind::Reconnected, move |e: &Event| {
            seen_tx.send(attempt(e)).unwrap();
            let _ = lock(&go_rx).recv_timeout(Duration::from_secs(5));
        });
        d.emit(event(1)).unwrap();
        // The single worker now holds event 1 and waits; the queue (2 slots) is empty.
        assert_eq!(seen_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        for n in 2..=10 {
            d.emit(event(n)).unwrap();
        }
        (d, seen_rx, go_tx, sub)
    }

    #[test]
    fn executor_drop_newest_counts_overflow() {
        let (d, seen, go, _sub) = blocked_executor(Overflow::DropNewest);
        assert_eq!(d.dropped_events(), 7);
        assert_eq!(d.stats(EventKind::Reconnected).dropped, 7);
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        assert!(d.shutdown(Duration::from_secs(5)));
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), [2, 3]);
        d.emit(event(11)).unwrap();
        assert_eq!(d.dropped_events(), 8, "events after shutdown are dropped and counted");
    }

    #[test]
    fn executor_drop_oldest_keeps_the_newest() {
        let (d, seen, go, _sub) = blocked_executor(Overflow::DropOldest);
        assert_eq!(d.dropped_events(), 7);
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        assert!(d.shutdown(Duration::from_secs(5)));
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), [9, 10]);
    }

    #[test]
    fn executor_shutdown_reports_a_missed_deadline() {
        let (d, _seen, go, _sub) = blocked_executor(Overflow::DropNewest);
        assert!(!d.shutdown(Duration::from_millis(20)), "the worker is still blocked");
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        assert!(d.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn executor_config_is_validated() {
        assert!(EventDispatcher::builder().executor(ExecutorConfig::new(0, 8)).build().is_err());
        assert!(EventDispatcher::builder().executor(ExecutorConfig::new(1, 0)).build().is_err());
        assert!(EventDispatcher::builder().stream_capacity(0).build().is_err());
    }

    #[tokio::test]
    async fn stream_receives_and_reports_lag() {
        use tokio_stream::StreamExt;
        let d = EventDispatcher::builder().stream_capacity(2).build().unwrap();
        let mut stream = d.stream();
        assert!(d.has_listeners(EventKind::PoolReset));
        for n in 1..=3 {
            d.emit(event(n)).unwrap();
        }
        assert_eq!(stream.next().await.unwrap().unwrap_err().skipped(), 1);
        assert_eq!(attempt(&stream.next().await.unwrap().unwrap()), 2);
        assert_eq!(attempt(&stream.next().await.unwrap().unwrap()), 3);
        drop(stream);
        assert!(!d.has_listeners(EventKind::PoolReset));
        drop(d);
    }
}
