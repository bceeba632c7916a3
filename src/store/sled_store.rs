//! The embedded store on sled: reads run on the caller's task straight from
//! sled's page cache; every mutation goes through the [`Writer`] thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{self, Entry, StreamState};
use super::generation::{self, DbCell, LogSinceOpen};
use super::id_filter::IdFilter;
use super::id_index::IdIndex;
use super::projections::Projections;
use super::rebuild;
use super::scavenge::{ScavengeReport, ScavengeStarted, Scavenger};
use super::visibility::{self, now_micros};
use super::writer::{Command, Files, Start, Writer};
use super::{
    AllRead, AllSlice, Append, AppendOutcome, Direction, Durability, ExpectedVersion, Head, LINK_EVENT_TYPE,
    Notifier, ReadEvent, RecordedEvent, Store, StoreError, StreamRead, StreamSlice, StreamView, keys,
};

/// The layout this build reads and writes. A store written by another
/// layout is refused at open rather than misread. Layout 3 added runs of
/// links, layout 4 runs of records (see [`codec`]), layout 5 the id index
/// of segments and runs (see [`super::id_index`]; the per-id keys of
/// earlier layouts are still read). Each older layout is a valid newer one,
/// so such a store is upgraded in place at open, after which older builds
/// refuse it.
const LAYOUT_VERSION: u64 = 5;
/// The older layouts this build upgrades at open.
const UPGRADABLE_LAYOUTS: [u64; 3] = [2, 3, 4];

/// How many commands may queue for the writer before senders wait. Large
/// enough that the writer always finds a full batch under load; bounded so a
/// flood of requests applies back-pressure instead of growing memory.
const COMMAND_QUEUE: usize = 16 * 1024;

/// Options for opening a [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledStoreOptions {
    pub path: PathBuf,
    pub durability: Durability,
    pub projections: Projections,
    /// sled's page cache size in bytes.
    pub cache_capacity: u64,
}

impl SledStoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            projections: Projections::default(),
            cache_capacity: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
pub struct SledStore {
    /// The current generation's database; compaction swaps it.
    db: DbCell,
    commands: mpsc::Sender<Command>,
    notifier: Arc<Notifier>,
    /// Projections still being built from the log.
    building: rebuild::Building,
    scavenger: Scavenger,
    /// Joined at close, so that `close` returns only once sled is flushed.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    id_scan: IdScan,
    written: Arc<LogSinceOpen>,
}

/// The thread that adds the id index to the writer's [`IdFilter`] after
/// start-up. Stopped at close: it holds a handle of the database, and the
/// directory's lock is only released once every handle is dropped.
#[derive(Debug)]
struct IdScan {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IdScan {
    fn start(ids: Arc<IdFilter>, db: sled::Db) -> Result<Self, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("eventfeed-ids".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match ids.fill(&db, &stopped) {
                    // Until it is complete, every id is looked up in sled.
                    Err(error) => {
                        tracing::warn!(%error, "reading the event id index failed; ids are looked up")
                    }
                    Ok(()) if stopped.load(Ordering::Relaxed) => {}
                    Ok(()) => tracing::debug!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "event id filter complete"
                    ),
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the id index reader: {e}")))?;
        Ok(Self { stop, thread: Mutex::new(Some(thread)) })
    }

    /// Stops the scan and waits for its thread to let go of the database.
    async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// How often the writer is offered a moment for upkeep (see
/// [`Command::Upkeep`]).
const UPKEEP_TICK: Duration = Duration::from_millis(20);

/// Starts the thread that sends the writer its upkeep ticks. It holds only
/// a weak sender, so it ends once the store is closed or dropped.
fn start_upkeep_ticks(commands: &mpsc::Sender<Command>) -> Result<(), StoreError> {
    let commands = commands.downgrade();
    std::thread::Builder::new()
        .name("eventfeed-upkeep".into())
        .spawn(move || {
            while let Some(sender) = commands.upgrade() {
                // A full queue needs no tick: the writer is busy.
                if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(Command::Upkeep) {
                    return;
                }
                drop(sender);
                std::thread::sleep(UPKEEP_TICK);
            }
        })
        .map(drop)
        .map_err(|e| StoreError::Io(format!("cannot start the upkeep ticks: {e}")))
}

impl SledStore {
    /// Opens (or creates) the store. Reads a few counters and the id
    /// index's live segments (at most 8,192 ids and one commit's); never
    /// scans the log.
    pub fn open(options: SledStoreOptions) -> Result<Self, StoreError> {
        let generation = generation::current(&options.path)?;
        let db = generation::open(&generation, options.cache_capacity)?;

        let layout_key = keys::counter(keys::LAYOUT_VERSION);
        match db.get(&layout_key)? {
            Some(value) => {
                let found = keys::decode_u64(&value).unwrap_or(0);
                if UPGRADABLE_LAYOUTS.contains(&found) {
                    db.insert(&layout_key, &keys::u64_value(LAYOUT_VERSION)[..])?;
                    db.flush()?;
                } else if found != LAYOUT_VERSION {
                    return Err(StoreError::Corrupt(format!(
                        "the data directory has layout version {found}; this build reads {LAYOUT_VERSION}"
                    )));
                }
            }
            None => {
                db.insert(&layout_key, &keys::u64_value(LAYOUT_VERSION)[..])?;
                db.flush()?;
            }
        }

        let counter = |name: &[u8]| -> Result<u64, StoreError> {
            match db.get(keys::counter(name))? {
                Some(value) => keys::decode_u64(&value).ok_or_else(|| {
                    StoreError::Corrupt(format!("counter {} is malformed", String::from_utf8_lossy(name)))
                }),
                None => Ok(0),
            }
        };
        // Everything sled recovered at open is on disk, so the stored
        // counters are the durable head.
        let head =
            Head { next_position: counter(keys::NEXT_POSITION)?, commit_seq: counter(keys::COMMIT_SEQ)? };
        let last_created_micros = match db.get_lt([keys::LOG + 1])? {
            Some((key, value)) if keys::log_position(&key).is_some() => {
                let span = LogSpan::decode(&key, &value)?;
                match stored_entry(&db, &span.stream, span.last_number())? {
                    Some(Entry::Event(event)) => event.created_micros,
                    Some(Entry::Link { created_micros, .. }) => created_micros,
                    None => 0,
                }
            }
            _ => 0,
        };

        let (active, to_build) = rebuild::plan(&db, options.projections, head.next_position)?;
        db.flush()?;
        let notifier = Arc::new(Notifier::new(head));
        let held_ids = Arc::new(IdFilter::new(head.next_position));
        let start = Start {
            projections: active,
            to_build: to_build.clone(),
            head,
            last_created_micros,
            id_index: IdIndex::open(&db, Arc::clone(&held_ids))?,
        };
        let cell = DbCell::new(db.clone());
        let written = Arc::new(LogSinceOpen::default());
        let files = Files {
            data_dir: options.path.clone(),
            generation,
            cell: cell.clone(),
            cache_capacity: options.cache_capacity,
            written: Arc::clone(&written),
        };
        let writer = Writer::new(db.clone(), files, options.durability, Arc::clone(&notifier), start)?;
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let writer_thread = std::thread::Builder::new()
            .name("eventfeed-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        let id_scan = IdScan::start(held_ids, db.clone())?;
        start_upkeep_ticks(&commands)?;
        let building: rebuild::Building = Arc::new(Mutex::new(to_build.clone()));
        if !to_build.is_empty() {
            let (commands, building) = (commands.clone(), Arc::clone(&building));
            std::thread::Builder::new()
                .name("eventfeed-projections".into())
                .spawn(move || rebuild::drive(commands, to_build, building))
                .map_err(|e| StoreError::Io(format!("cannot start the projection builder: {e}")))?;
        }

        Scavenger::mark_interrupted(&db)?;
        let scavenger = Scavenger {
            db: cell.clone(),
            path: options.path.clone(),
            commands: commands.clone(),
            running: Arc::new(Mutex::new(None)),
            task: Arc::new(Mutex::new(None)),
        };
        Ok(Self {
            db: cell,
            commands,
            notifier,
            building,
            scavenger,
            writer_thread: Mutex::new(Some(writer_thread)),
            id_scan,
            written,
        })
    }

    /// Bytes of keys and values written since the store was opened: about
    /// what sled would replay from its log at the next open, unless the
    /// store is checkpointed after it is closed.
    pub fn written_since_open(&self) -> u64 {
        self.written.bytes()
    }

    /// Opens the store in `data_dir` and closes it again, so that the next
    /// open starts fast. Call it once the store was closed and its last
    /// handle dropped.
    ///
    /// sled 0.34 snapshots its page table only when it opens a store; the
    /// next open then replays the log written since that snapshot, which
    /// after millions of appends takes seconds (10 s for 10M events,
    /// measured). Opening here does that replay and writes a fresh snapshot.
    /// Nothing is written but the snapshot, which sled writes to a
    /// temporary file and renames: killing the process in the middle of a
    /// checkpoint loses nothing, and the next open replays instead.
    pub fn checkpoint(data_dir: &Path, cache_capacity: u64) -> Result<(), StoreError> {
        let generation = generation::current(data_dir)?;
        // The open itself writes the snapshot; nothing else was written.
        drop(generation::open(&generation, cache_capacity)?);
        Ok(())
    }

    /// Sends a command to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    fn load_state(db: &sled::Db, stream: &str) -> Result<Option<StreamState>, StoreError> {
        match db.get(keys::stream(stream))? {
            Some(bytes) => codec::decode_state(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Runs a read, then, if it used any state written by a batch that is
    /// not yet durable, waits for that batch before answering. A read thus
    /// never shows an unacknowledged append. The wait is at most one group
    /// commit; there is no re-read, because everything a state refers to was
    /// written in that batch or before it, and sled applies a batch
    /// atomically with respect to single-key reads.
    async fn consistent<T>(
        &self,
        read: impl FnOnce(&mut ReadContext) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut context = ReadContext { db: self.db.get(), first_visible: HashMap::new(), newest_commit: 0 };
        let result = read(&mut context)?;
        let newest_commit = context.newest_commit;
        if newest_commit > self.notifier.commit_seq()
            && !self.notifier.wait_for_commit(newest_commit, COMMIT_WAIT).await
        {
            return Err(StoreError::Unavailable);
        }
        Ok(result)
    }
}

/// The longest a read waits for an in-flight batch to become durable. A
/// batch takes one fsync; if it takes this long the writer has failed.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How many positions one `$all` read examines at most, whatever it finds.
/// Bounds the work of a read across a long run of hidden (deleted or
/// expired, not yet scavenged) events; the page then simply holds fewer.
const MAX_ALL_SCAN: usize = 100_000;

/// One read's access to the store: it memoises the stream states it loads
/// and remembers the newest commit among them (see
/// [`SledStore::consistent`]).
struct ReadContext {
    /// The generation this read uses from start to end, even if a
    /// compaction switches generations meanwhile.
    db: sled::Db,
    /// Per stream touched (link targets, `$all` entries): the first visible
    /// event number, `None` when nothing is visible.
    first_visible: HashMap<String, Option<u64>>,
    newest_commit: u64,
}

impl ReadContext {
    fn db(&self) -> &sled::Db {
        &self.db
    }

    fn state(&mut self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        let state = SledStore::load_state(&self.db, stream)?;
        if let Some(state) = &state {
            self.newest_commit = self.newest_commit.max(state.commit_seq);
        }
        Ok(state)
    }

    /// The state of a readable stream, or why it cannot be read.
    fn readable_state(&mut self, stream: &str) -> Result<StreamState, StoreError> {
        match self.state(stream)? {
            Some(state) if state.tombstoned => Err(StoreError::StreamDeleted),
            Some(state) if state.exists() => Ok(state),
            _ => Err(StoreError::StreamNotFound),
        }
    }

    /// The stream's state as reads see it.
    fn view(&self, stream: &str, state: &StreamState) -> Result<StreamView, StoreError> {
        Ok(StreamView {
            last_number: state.next_number.saturating_sub(1),
            first_visible: visibility::first_visible(self.db(), stream, state, now_micros())?,
            settings: state.settings,
        })
    }

    /// Reads numbers `low..=high` of a stream, skipping scavenged records.
    fn read_range(
        &mut self,
        stream: &str,
        low: u64,
        high: u64,
        resolve_links: bool,
    ) -> Result<Vec<ReadEvent>, StoreError> {
        let mut events = Vec::with_capacity(span_capacity(low, high));
        let mut names = codec::Names::default();
        // A handle of its own (a reference count): links are materialised
        // as they are decoded, which needs `self`.
        let db = self.db.clone();
        visit_stored_values(&db, stream, low, high, |first, value| {
            if codec::decode_events_within(&value, first, low, high, &mut names, &mut events)? {
                return Ok(());
            }
            codec::decode_entries_within(value, first, low, high, &mut names, &mut |number, entry| {
                events.push(self.materialise(stream, number, entry, resolve_links)?);
                Ok(())
            })
        })?;
        Ok(events)
    }

    /// Turns what is stored under an event key into what a read returns.
    fn materialise(
        &mut self,
        stream: &str,
        number: u64,
        entry: Entry,
        resolve_links: bool,
    ) -> Result<ReadEvent, StoreError> {
        match entry {
            Entry::Event(event) => Ok(ReadEvent { event, link: None }),
            Entry::Link { position, created_micros, number: target_number, stream: target } => {
                let link = link_event(stream, number, position, created_micros, target_number, &target);
                if resolve_links {
                    if let Some(event) = self.visible_event(&target, target_number)? {
                        return Ok(ReadEvent { event, link: Some(Box::new(link)) });
                    }
                }
                Ok(ReadEvent { event: link, link: None })
            }
        }
    }

    /// Event `number` of user stream `stream`, if it is still visible.
    fn visible_event(&mut self, stream: &str, number: u64) -> Result<Option<RecordedEvent>, StoreError> {
        if self.visible_from(stream)?.is_none_or(|first| number < first) {
            return Ok(None);
        }
        stored_entry(self.db(), stream, number)?.map(|entry| entry.into_event(stream, number)).transpose()
    }

    /// The events of a span of the log that reads can see, oldest first.
    fn visible_events(&mut self, span: &LogSpan) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some(first) = self.visible_from(&span.stream)? else { return Ok(Vec::new()) };
        let (low, high) = (first.max(span.number), span.last_number());
        if low > high {
            return Ok(Vec::new());
        }
        stored_entries(self.db(), &span.stream, low, high)?
            .into_iter()
            .map(|(number, entry)| entry.into_event(&span.stream, number))
            .collect()
    }

    /// The lowest event number of `stream` reads can see (retention, soft
    /// delete), or `None` when none can be (deleted, tombstoned, missing).
    /// Memoised for the read.
    fn visible_from(&mut self, stream: &str) -> Result<Option<u64>, StoreError> {
        if let Some(first) = self.first_visible.get(stream) {
            return Ok(*first);
        }
        let first = match self.state(stream)? {
            Some(state) if !state.tombstoned && !state.soft_deleted => {
                Some(self.view(stream, &state)?.first_visible)
            }
            _ => None,
        };
        self.first_visible.insert(stream.to_owned(), first);
        Ok(first)
    }

    fn read_stream(&mut self, read: &StreamRead) -> Result<StreamSlice, StoreError> {
        let state = self.readable_state(&read.stream)?;
        let view = self.view(&read.stream, &state)?;
        let Some(last) = state.last_number() else {
            return Ok(StreamSlice { view, events: Vec::new() });
        };
        let count = read.count.max(1);
        let from = read.from.unwrap_or(last);
        let (low, high) = match read.direction {
            Direction::Forward => (from, from.saturating_add(count - 1)),
            Direction::Backward => (from.saturating_sub(count - 1), from),
        };
        let (low, high) = (low.max(view.first_visible), high.min(last));
        let events = if low > high {
            Vec::new()
        } else {
            self.read_range(&read.stream, low, high, read.resolve_links)?
        };
        Ok(StreamSlice { view, events })
    }

    fn read_event(
        &mut self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        let state = self.readable_state(stream)?;
        let view = self.view(stream, &state)?;
        if number < view.first_visible || number >= state.next_number {
            return Ok((view, None));
        }
        let Some((_, entry)) = stored_entries(self.db(), stream, number, number)?.pop() else {
            return Ok((view, None));
        };
        let is_link = matches!(entry, Entry::Link { .. });
        let event = self.materialise(stream, number, entry, resolve_links)?;
        // v5: a resolved read of a link whose target is gone is a 404.
        let gone = is_link && resolve_links && event.link.is_none();
        Ok((view, (!gone).then_some(event)))
    }

    fn read_all(&mut self, read: AllRead, next_position: u64) -> Result<AllSlice, StoreError> {
        let count = usize::try_from(read.count.max(1)).unwrap_or(usize::MAX);
        let mut events = Vec::with_capacity(count.min(4096));
        let mut scanned: Option<(u64, u64)> = None;
        // Only positions below `next_position` are acknowledged; a batch
        // being applied right now is not.
        let Some(last) = next_position.checked_sub(1) else {
            return Ok(AllSlice { next_position, scanned, events });
        };
        let (low, high, backward) = match read.direction {
            Direction::Forward => {
                let from = read.from.unwrap_or(last);
                if from > last {
                    return Ok(AllSlice { next_position, scanned, events });
                }
                (from, last, false)
            }
            Direction::Backward => (0, read.from.unwrap_or(last).min(last), true),
        };
        let mut budget = MAX_ALL_SCAN as u64;
        'spans: for span in log_spans(self.db(), low, high, backward)? {
            if budget == 0 {
                break;
            }
            // Within the budget: a span's start going forward, its end
            // going backward.
            let span = span?.part(budget, backward);
            budget = budget.saturating_sub(span.count);
            let mut found = self.visible_events(&span)?;
            if backward {
                found.reverse();
            }
            for event in found {
                let position = event.position;
                events.push(event);
                if events.len() >= count {
                    widen(
                        &mut scanned,
                        if backward { (position, span.last()) } else { (span.position, position) },
                    );
                    break 'spans;
                }
            }
            widen(&mut scanned, (span.position, span.last()));
        }
        if backward {
            events.reverse();
        }
        Ok(AllSlice { next_position, scanned, events })
    }
}

/// Extends a read's range of examined positions.
fn widen(scanned: &mut Option<(u64, u64)>, (low, high): (u64, u64)) {
    *scanned = Some(match *scanned {
        None => (low, high),
        Some((lowest, highest)) => (lowest.min(low), highest.max(high)),
    });
}

/// What is stored for numbers `low..=high` of `stream`, in order, with each
/// entry's number; scavenged numbers are simply absent. Entries written
/// together are stored in runs under the key of a run's first entry, so the
/// page starts with the value that holds `low`, if one does, and continues
/// with the keys after it.
///
/// A point lookup comes first: each sled iterator starts by copying the
/// leaf it starts in, and a page inside one run, or one that starts on a
/// key and ends in the value under it, needs no iterator at all. (Walking
/// up from `low`, then down from it for the run that holds it, took twice
/// the iterators; walking down from `high` alone is slower still, since
/// sled's reverse steps cost more.)
pub(crate) fn stored_entries(
    db: &sled::Db,
    stream: &str,
    low: u64,
    high: u64,
) -> Result<Vec<(u64, Entry)>, StoreError> {
    let mut found = Vec::with_capacity(span_capacity(low, high));
    let mut names = codec::Names::default();
    visit_stored_values(db, stream, low, high, |first, value| {
        codec::decode_entries_within(value, first, low, high, &mut names, &mut |number, entry| {
            found.push((number, entry));
            Ok(())
        })
    })?;
    Ok(found)
}

/// Room for the entries `low..=high`, up to a page's most.
fn span_capacity(low: u64, high: u64) -> usize {
    usize::try_from(high.saturating_sub(low).saturating_add(1)).unwrap_or(usize::MAX).min(4096)
}

/// Hands each value that holds numbers `low..=high` of `stream` to
/// `found`, in order, with the number of its key (see [`stored_entries`]).
fn visit_stored_values(
    db: &sled::Db,
    stream: &str,
    low: u64,
    high: u64,
    mut found: impl FnMut(u64, Bytes) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // The lowest number whose key the range below still has to visit.
    let mut rest = low;
    if let Some((first, value)) = value_holding(db, stream, low)? {
        rest = first.saturating_add(codec::entry_count(&value)?).max(low);
        found(first, codec::shared(value))?;
    }
    if rest <= high {
        for item in db.range(keys::event(stream, rest)..=keys::event(stream, high)) {
            let (key, value) = item?;
            found(event_key_number(&key)?, codec::shared(value))?;
        }
    }
    Ok(())
}

/// What is stored for number `number` of `stream`: an entry of its own, or
/// one item of the run that holds it (only that item is decoded). `None`
/// when it was never written or has been scavenged.
pub(crate) fn stored_entry(db: &sled::Db, stream: &str, number: u64) -> Result<Option<Entry>, StoreError> {
    match value_holding(db, stream, number)? {
        Some((first, value)) => codec::decode_entry_at(codec::shared(value), first, number),
        None => Ok(None),
    }
}

/// The value stored under the greatest key of `stream` at or below
/// `number`, with that key's number: the value holding `number` if any
/// does (its own entry, or a run that starts below it), else an entry that
/// ends below it. A key of its own is a point lookup; only a miss looks
/// down with an iterator (which starts by copying a leaf).
fn value_holding(db: &sled::Db, stream: &str, number: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
    let key = keys::event(stream, number);
    if let Some(value) = db.get(&key)? {
        return Ok(Some((number, value)));
    }
    if number == 0 {
        return Ok(None);
    }
    match db.range(keys::event_prefix(stream)..key).next_back() {
        Some(item) => {
            let (key, value) = item?;
            Ok(Some((event_key_number(&key)?, value)))
        }
        None => Ok(None),
    }
}

/// Consecutive positions of the log that hold consecutive events of one
/// stream: what one log entry records, or the part of it a read asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSpan {
    pub position: u64,
    pub stream: String,
    pub number: u64,
    pub count: u64,
}

impl LogSpan {
    fn decode(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let position =
            keys::log_position(key).ok_or_else(|| StoreError::Corrupt("log key is malformed".into()))?;
        let (stream, number, count) = codec::decode_log_entry(value)?;
        Ok(Self { position, stream, number, count })
    }

    /// The last position it covers.
    pub fn last(&self) -> u64 {
        self.position + (self.count - 1)
    }

    /// The number of the event at its last position.
    pub fn last_number(&self) -> u64 {
        self.number + (self.count - 1)
    }

    /// Its first `count` positions, or its last when `from_end`.
    fn part(self, count: u64, from_end: bool) -> Self {
        let count = count.min(self.count);
        let skip = if from_end { self.count - count } else { 0 };
        Self { position: self.position + skip, number: self.number + skip, count, stream: self.stream }
    }

    /// Its part within positions `low..=high`, if any.
    pub fn clip(self, low: u64, high: u64) -> Option<Self> {
        let (start, end) = (self.position.max(low), self.last().min(high));
        (start <= end).then(|| Self {
            number: self.number + (start - self.position),
            position: start,
            count: end - start + 1,
            stream: self.stream,
        })
    }
}

/// The log between positions `low` and `high` (inclusive) as spans clipped
/// to that range, in position order or, `backward`, in reverse. The log
/// stores the positions one append wrote as one entry under the first, so
/// the range starts with the entry that holds `low`, if it starts below.
pub(crate) fn log_spans(
    db: &sled::Db,
    low: u64,
    high: u64,
    backward: bool,
) -> Result<Box<dyn Iterator<Item = Result<LogSpan, StoreError>>>, StoreError> {
    let before = match db.range(keys::log(0)..keys::log(low)).next_back() {
        Some(item) => {
            let (key, value) = item?;
            LogSpan::decode(&key, &value)?.clip(low, high)
        }
        None => None,
    };
    let within = db.range(keys::log(low)..=keys::log(high)).map(move |item| {
        let (key, value) = item?;
        Ok(LogSpan::decode(&key, &value)?.clip(low, high))
    });
    let within = within.filter_map(Result::transpose);
    Ok(if backward {
        Box::new(within.rev().chain(before.map(Ok)))
    } else {
        Box::new(before.map(Ok).into_iter().chain(within))
    })
}

fn event_key_number(key: &[u8]) -> Result<u64, StoreError> {
    keys::event_number(key).ok_or_else(|| StoreError::Corrupt("event key is malformed".into()))
}

/// The type of every `$>` event, shared.
static LINK_TYPE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(LINK_EVENT_TYPE));

/// The `$>` event a system-stream index entry stands for.
fn link_event(
    stream: &str,
    number: u64,
    target_position: u64,
    created_micros: i64,
    target_number: u64,
    target_stream: &str,
) -> RecordedEvent {
    RecordedEvent {
        stream: stream.into(),
        number,
        position: target_position,
        id: link_id(target_position, stream),
        event_type: LINK_TYPE.clone(),
        created_micros,
        is_json: false,
        metadata_is_json: false,
        data: Bytes::from(format!("{target_number}@{target_stream}")),
        metadata: Bytes::new(),
    }
}

/// A stable id for a link: links are not stored as records, so their id is
/// derived from what identifies them (the target position and the system
/// stream) as a version-8 (custom) UUID. The same link has the same id on
/// every read, every node and every restart.
fn link_id(target_position: u64, stream: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&target_position.to_be_bytes());
    bytes[8..].copy_from_slice(&crate::hash::fnv1a_64(stream.as_bytes()).to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[async_trait]
impl Store for SledStore {
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        self.ask(|reply| Command::Append { append, reply }).await
    }

    async fn read_stream(&self, read: StreamRead) -> Result<StreamSlice, StoreError> {
        self.consistent(|context| context.read_stream(&read)).await
    }

    async fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError> {
        let next_position = self.notifier.next_position();
        self.consistent(|context| context.read_all(read, next_position)).await
    }

    async fn read_event(
        &self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        self.consistent(|context| context.read_event(stream, number, resolve_links)).await
    }

    async fn delete(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let stream = stream.to_owned();
        self.ask(|reply| Command::Delete { stream, expected, hard, reply }).await
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        self.consistent(|context| context.state(stream)).await
    }

    fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    async fn start_scavenge(&self) -> Result<ScavengeStarted, StoreError> {
        self.scavenger.start()
    }

    async fn scavenge_report(&self, id: Uuid) -> Result<Option<ScavengeReport>, StoreError> {
        self.scavenger.report(&id)
    }

    fn projections_building(&self) -> Vec<&'static str> {
        let building = self.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        building.iter().map(|projection| projection.name()).collect()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let result = self.ask(|reply| Command::Close { reply }).await;
        let thread = self.writer_thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Io(format!("writer thread join failed: {e}")))?
                .map_err(|_| StoreError::Io("the writer thread panicked".into()))?;
        }
        self.scavenger.finish().await;
        self.id_scan.stop().await;
        match result {
            // Already closed by an earlier call: nothing left to flush.
            Err(StoreError::Unavailable) => Ok(()),
            other => other,
        }
    }
}
