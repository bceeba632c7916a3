//! Wake-ups for live readers, fed by a store's writer after each durable
//! commit. Backend-neutral: every backend owns one `Notifier` and moves it
//! the same way (`advance` before the commit's requests are answered,
//! `publish` after).
//!
//! Two kinds of signal: the global [`Head`] (the next global position, for
//! `$all` readers, and the commit sequence of the last durable batch, for
//! readers that must not see anything newer) and one signal per stream
//! that somebody is waiting on. A reader takes its [`StreamWatch`] *before*
//! reading, then waits on it: an append that lands between the read and the
//! wait has already bumped the watch, so the wait returns at once and no
//! append is ever missed.
//!
//! Waiting costs no CPU and no storage resources: there is no polling and no
//! per-waiter sled subscriber. Streams nobody waits on cost nothing either;
//! their entries are dropped as soon as the last waiter goes.
//!
//! The notifier also carries what each commit cost ([`CommitFigures`]),
//! and for a database backend what each query took ([`DatabaseQuery`]),
//! to whoever observes them (`/metrics`): every backend already holds its
//! notifier, so this needs no change to the `Store` trait, and a backend
//! that reports nothing simply never calls [`Notifier::commit_observed`].
//! It also remembers when the last commit was acknowledged, so a waiter
//! can tell how long its wake-up took ([`Notifier::since_acknowledged`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::recent_states::RecentStates;

/// How many registry entries may accumulate between sweeps of dead ones.
/// Sweeping is O(entries), so doing it every this-many insertions keeps the
/// amortised cost per waiter constant.
const SWEEP_EVERY: usize = 1024;

/// What the writer publishes after each durable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// The next global position: every position below it is acknowledged.
    pub next_position: u64,
    /// The sequence number of the last durable commit: a token that grows
    /// by one per commit of this store, whatever its backend. Shared
    /// renders and long-polls compare it to know whether anything changed.
    pub commit_seq: u64,
}

/// What one durable commit did and cost, as its backend measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitFigures {
    /// Append requests (single or multi-stream) the commit answered,
    /// whatever their outcome.
    pub appends: usize,
    /// Events it wrote to the log.
    pub events: u64,
    /// From handing the batch to the engine until it was durable (for the
    /// sled store: the batch applied, flushed and, in `fsync` mode,
    /// `fdatasync`ed).
    pub duration: Duration,
}

/// What a database backend timed: a fixed set, so that a metric labelled
/// by it has a bounded number of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatabaseQuery {
    /// A range of a stream, or one event, in one snapshot.
    ReadStream,
    ReadAll,
    ReadEvent,
    /// One stream's state (`Store::stream_state`).
    StreamState,
    ListStreams,
    /// One batch's write transaction, from its `BEGIN` to its `COMMIT`'s
    /// answer (also when it wrote nothing or failed).
    WriteTransaction,
}

impl DatabaseQuery {
    /// Its name, as a metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ReadStream => "read_stream",
            Self::ReadAll => "read_all",
            Self::ReadEvent => "read_event",
            Self::StreamState => "stream_state",
            Self::ListStreams => "list_streams",
            Self::WriteTransaction => "write_transaction",
        }
    }
}

/// Told of every commit that wrote something (see [`CommitFigures`]) and,
/// by a database backend, of what each query took; called on the writer's
/// thread or a reading task, so it must be quick and never block.
pub trait CommitObserver: Send + Sync + fmt::Debug {
    fn committed(&self, figures: CommitFigures);

    /// A database backend's query (or transaction) took `took`, from
    /// holding a connection until the answer.
    fn queried(&self, _query: DatabaseQuery, _took: Duration) {}
}

#[derive(Debug)]
pub struct Notifier {
    /// Moves after every durable batch, and wakes whoever waits on it.
    head: watch::Sender<Head>,
    /// The head as reads see it: moved by [`Notifier::advance`] before the
    /// batch's requests are answered, without waking anybody, so that a
    /// client's read after its own acknowledged append finds the head past
    /// it. `head` and the waiters follow just after.
    next_position: AtomicU64,
    commit_seq: AtomicU64,
    /// Moves whenever a commit may hide events already in `$all` (a
    /// metadata write, a delete, a scavenge step, an import): see
    /// `Store::all_pages_epoch`.
    hiding_epoch: AtomicU64,
    /// Per-stream signals, held weakly so that a stream's entry lives only as
    /// long as somebody waits on it. The value is a change counter.
    streams: Mutex<Registry>,
    /// Why the store stopped taking writes after a failure, once it has:
    /// no commit will follow until a restart.
    writes_stopped: Mutex<Option<String>>,
    /// Who is told what each commit cost; set once, by the server.
    commit_observer: OnceLock<Arc<dyn CommitObserver>>,
    /// What [`Notifier::acknowledged_nanos`] counts from.
    origin: Instant,
    /// When the newest commit was acknowledged (its head advanced), in
    /// nanoseconds since `origin`: the start of every wake-up it causes.
    acknowledged_nanos: AtomicU64,
    /// Stream states kept for reads that do not depend on a head, which
    /// the writer forgets as it commits (see [`RecentStates`]).
    recent_states: RecentStates,
}

#[derive(Debug, Default)]
struct Registry {
    signals: HashMap<String, Weak<watch::Sender<u64>>>,
    inserts_since_sweep: usize,
}

/// A subscription to one stream's appends, taken before reading.
#[derive(Debug)]
pub struct StreamWatch {
    /// Keeps the registry entry alive while this watch exists.
    _signal: Arc<watch::Sender<u64>>,
    receiver: watch::Receiver<u64>,
}

impl StreamWatch {
    /// Whether the stream was appended to since this watch was taken,
    /// without waiting (caches of what a stream holds check it on use).
    pub fn has_changed(&self) -> bool {
        self.receiver.has_changed().unwrap_or(true)
    }

    /// Resolves when the stream has been appended to since this watch was
    /// taken (or since the last call). Pending forever if the notifier goes.
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A subscription to appends: to one stream, or to any (`$all` readers).
/// Taken before the read it guards, like a [`StreamWatch`].
#[derive(Debug)]
pub enum AppendWatch {
    Stream(StreamWatch),
    All(watch::Receiver<Head>),
}

impl AppendWatch {
    /// Resolves at the next append the watch covers since it was taken (or
    /// since the last call). Pending forever if the notifier goes.
    pub async fn changed(&mut self) {
        match self {
            Self::Stream(watch) => watch.changed().await,
            Self::All(head) => {
                if head.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl Notifier {
    pub fn new(head: Head) -> Self {
        Self {
            head: watch::Sender::new(head),
            next_position: AtomicU64::new(head.next_position),
            commit_seq: AtomicU64::new(head.commit_seq),
            hiding_epoch: AtomicU64::new(0),
            streams: Mutex::new(Registry::default()),
            writes_stopped: Mutex::new(None),
            commit_observer: OnceLock::new(),
            origin: Instant::now(),
            acknowledged_nanos: AtomicU64::new(0),
            recent_states: RecentStates::default(),
        }
    }

    /// The stream states kept for reads that do not depend on a head.
    pub(crate) fn recent_states(&self) -> &RecentStates {
        &self.recent_states
    }

    /// Sets who is told what each commit cost. Only the first call counts:
    /// one server observes one store.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.commit_observer.set(observer);
    }

    /// Called by a backend after each commit that wrote something. Without
    /// an observer it costs one atomic load.
    pub fn commit_observed(&self, figures: CommitFigures) {
        if let Some(observer) = self.commit_observer.get() {
            observer.committed(figures);
        }
    }

    /// Called by a database backend after each query it timed (see
    /// [`DatabaseQuery`]). Without an observer it costs one atomic load.
    pub fn query_observed(&self, query: DatabaseQuery, took: Duration) {
        if let Some(observer) = self.commit_observer.get() {
            observer.queried(query, took);
        }
    }

    /// How long ago the newest commit was acknowledged: read by a waiter
    /// as it wakes, that is its wake-up latency (for a commit of another
    /// node, from when this one learnt of it).
    pub fn since_acknowledged(&self) -> Duration {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(now.saturating_sub(self.acknowledged_nanos.load(Ordering::Acquire)))
    }

    /// Called by a store whose writes failed in a way only a restart
    /// recovers from: nothing more will commit. Wakes every wait for a
    /// commit, which then gives up at once instead of at its timeout.
    pub fn stop_writes(&self, reason: String) {
        *self.writes_stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
        self.head.send_modify(|_| {});
    }

    /// Why writes stopped, if they did (for health checks).
    pub fn writes_stopped(&self) -> Option<String> {
        self.writes_stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// A receiver of the head, for waiting on new events anywhere.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// The next global position right now.
    pub fn next_position(&self) -> u64 {
        self.next_position.load(Ordering::Acquire)
    }

    /// How many commits so far may have hidden events of `$all`.
    pub fn hiding_epoch(&self) -> u64 {
        self.hiding_epoch.load(Ordering::Acquire)
    }

    /// Records a commit that may hide events of `$all`. Called once the
    /// commit is applied and before anybody is answered, so that a read
    /// that meets the new epoch sees what the commit hid, and a page
    /// rendered before it is never found under the new epoch.
    pub fn hid_events(&self) {
        self.hiding_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The sequence number of the last durable batch right now.
    pub fn commit_seq(&self) -> u64 {
        self.commit_seq.load(Ordering::Acquire)
    }

    /// Called by the writer once a batch is durable, before it answers the
    /// batch's requests: moves the head reads see, waking nobody (waking
    /// a thousand long-polls first would put every 201 behind their
    /// renders; [`Notifier::publish`] does that after the answers).
    pub fn advance(&self, head: Head) {
        self.next_position.fetch_max(head.next_position, Ordering::AcqRel);
        if self.commit_seq.fetch_max(head.commit_seq, Ordering::AcqRel) < head.commit_seq {
            let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.acknowledged_nanos.fetch_max(now, Ordering::AcqRel);
        }
    }

    /// Waits until batch `commit_seq` is durable; `false` on timeout, or
    /// at once when writes stopped and it is not.
    pub async fn wait_for_commit(&self, commit_seq: u64, timeout: std::time::Duration) -> bool {
        let mut head = self.head.subscribe();
        let settled = |head: &Head| head.commit_seq >= commit_seq || self.writes_stopped().is_some();
        let waited = tokio::time::timeout(timeout, head.wait_for(settled)).await;
        waited.is_ok_and(|waited| waited.is_ok_and(|head| head.commit_seq >= commit_seq))
    }

    /// Starts watching `stream`'s appends, or every append for `None`.
    pub fn watch(&self, stream: Option<&str>) -> AppendWatch {
        match stream {
            Some(stream) => AppendWatch::Stream(self.watch_stream(stream)),
            // A fresh receiver counts the current head as seen.
            None => AppendWatch::All(self.head()),
        }
    }

    /// Starts watching a stream. Take it before the read it guards.
    pub fn watch_stream(&self, stream: &str) -> StreamWatch {
        let mut registry = self.lock();
        if let Some(signal) = registry.signals.get(stream).and_then(Weak::upgrade) {
            let receiver = signal.subscribe();
            return StreamWatch { _signal: signal, receiver };
        }
        let signal = Arc::new(watch::Sender::new(0));
        registry.signals.insert(stream.to_owned(), Arc::downgrade(&signal));
        registry.inserts_since_sweep += 1;
        if registry.inserts_since_sweep >= SWEEP_EVERY {
            registry.signals.retain(|_, weak| weak.strong_count() > 0);
            registry.inserts_since_sweep = 0;
        }
        let receiver = signal.subscribe();
        StreamWatch { _signal: signal, receiver }
    }

    /// Called by the writer once a batch is durable: moves the head, then
    /// wakes the waiters of every stream the batch touched. In that order,
    /// so that a woken waiter finds the head at or past the batch that woke
    /// it (long-polls woken together share a rendering on that basis).
    pub fn publish<'a>(&self, head: Head, streams: impl IntoIterator<Item = &'a str>) {
        self.advance(head);
        self.head.send_replace(head);
        {
            let mut registry = self.lock();
            for stream in streams {
                match registry.signals.get(stream).map(Weak::upgrade) {
                    Some(Some(signal)) => {
                        signal.send_modify(|version| *version = version.wrapping_add(1));
                    }
                    Some(None) => {
                        registry.signals.remove(stream);
                    }
                    None => {}
                }
            }
        }
    }

    /// Like [`Notifier::publish`], for a commit whose streams are not
    /// known (another node's, learnt of after a gap): wakes every waiter of
    /// every stream, who then read again and find whether anything changed.
    pub fn publish_all(&self, head: Head) {
        self.advance(head);
        self.head.send_replace(head);
        let registry = self.lock();
        for signal in registry.signals.values().filter_map(Weak::upgrade) {
            signal.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// How many streams have live waiters (for metrics and tests).
    pub fn watched_streams(&self) -> usize {
        self.lock().signals.values().filter(|weak| weak.strong_count() > 0).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert, remove or retain), so a
        // poisoned lock is safe to keep using.
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watch_taken_before_an_append_sees_it_even_if_it_waits_later() {
        let notifier = Notifier::new(Head::default());
        let mut watch = notifier.watch_stream("a");
        notifier.publish(head(1), ["a"]);
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("the append before the wait must not be missed");
    }

    /// Records the head's commit sequence at the moment a waiter is woken
    /// (inside `publish`, where the wake happens).
    struct Witness {
        notifier: Arc<Notifier>,
        seen: std::sync::atomic::AtomicU64,
    }

    impl std::task::Wake for Witness {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.seen.store(self.notifier.commit_seq(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_woken_watch_finds_the_head_at_the_batch_that_woke_it() {
        let notifier = Arc::new(Notifier::new(Head::default()));
        let mut watch = notifier.watch_stream("a");
        let witness = Arc::new(Witness { notifier: Arc::clone(&notifier), seen: u64::MAX.into() });
        let waker = std::task::Waker::from(Arc::clone(&witness));
        let mut changed = Box::pin(watch.changed());
        let mut context = std::task::Context::from_waker(&waker);
        assert!(changed.as_mut().poll(&mut context).is_pending());
        notifier.publish(head(7), ["a"]);
        assert_eq!(witness.seen.load(std::sync::atomic::Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn appends_to_other_streams_do_not_wake_a_watch() {
        let notifier = Notifier::new(Head::default());
        let mut watch = notifier.watch_stream("a");
        notifier.publish(head(1), ["b"]);
        let woke = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(woke.is_err());
        assert_eq!(notifier.next_position(), 1);
    }

    #[test]
    fn entries_go_when_their_last_watch_goes() {
        let notifier = Notifier::new(Head::default());
        let first = notifier.watch_stream("a");
        let second = notifier.watch_stream("a");
        assert_eq!(notifier.watched_streams(), 1);
        drop(first);
        assert_eq!(notifier.watched_streams(), 1);
        drop(second);
        assert_eq!(notifier.watched_streams(), 0);
        notifier.publish(head(1), ["a"]);
        assert!(notifier.lock().signals.is_empty());
    }

    #[tokio::test]
    async fn commit_waits_end_when_the_batch_is_published() {
        let notifier = std::sync::Arc::new(Notifier::new(Head::default()));
        assert!(!notifier.wait_for_commit(1, Duration::from_millis(20)).await);
        let publisher = std::sync::Arc::clone(&notifier);
        tokio::spawn(async move { publisher.publish(head(1), []) });
        assert!(notifier.wait_for_commit(1, Duration::from_secs(5)).await);
    }

    #[test]
    fn advancing_moves_the_head_reads_see_and_wakes_nobody() {
        let notifier = Notifier::new(head(1));
        let all = notifier.head();
        let stream = notifier.watch_stream("a");
        notifier.advance(head(3));
        assert_eq!((notifier.next_position(), notifier.commit_seq()), (3, 3));
        assert!(!all.has_changed().unwrap(), "no waiter on the head is woken");
        assert!(!stream.receiver.has_changed().unwrap(), "no stream waiter is woken");
        // The head never goes back, whatever order the calls come in.
        notifier.advance(head(2));
        notifier.publish(head(2), ["a"]);
        assert_eq!((notifier.next_position(), notifier.commit_seq()), (3, 3));
        notifier.publish(head(4), ["a"]);
        assert!(all.has_changed().unwrap() && stream.receiver.has_changed().unwrap());
        assert_eq!(all.borrow().commit_seq, 4);
    }

    fn head(n: u64) -> Head {
        Head { next_position: n, commit_seq: n }
    }
}
