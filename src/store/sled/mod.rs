//! The embedded store on sled, the default backend.
//!
//! Reads run on the caller's task straight from sled's page cache
//! ([`read`]); every mutation goes through the [`Writer`] thread, which
//! stages each batch in a [`staging::Staging`] overlay and commits it as
//! one `sled::Batch`. The files below, from the bottom up:
//! - [`keys`] and [`codec`]: the key space and the record formats;
//! - [`entries`]: raw access to what is stored for a stream or the log;
//! - [`id_filter`], [`id_index`]: where each event id was written;
//! - [`generation`], [`compact`]: the data directory's generations;
//! - [`staging`]: a batch's validation and overlay (the rules of an append);
//! - [`rebuild`], [`scavenge`]: the steps of a projection build and of a
//!   scavenge, which run inside the writer's batches;
//! - [`command`] and [`writer`]: what the writer is asked, and the writer
//!   ([`syncer`]: how it makes sled's files durable);
//! - [`transfer`]: exports' snapshots and reads, and imports, run by the
//!   writer between batches;
//! - [`background`]: every thread and task that feeds the writer commands;
//! - [`read`]: the read path.
//!
//! Only this folder knows sled.

mod background;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod bench_support;
pub mod codec;
mod command;
mod compact;
mod entries;
mod generation;
mod id_filter;
mod id_index;
pub mod keys;
mod read;
mod rebuild;
mod scavenge;
mod space;
mod staging;
mod syncer;
mod transfer;
mod undo;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use self::background::{Building, IdScan, Scavenger};
use self::command::Command;
use self::generation::{DbCell, LogSinceOpen};
use self::id_filter::IdFilter;
use self::id_index::IdIndex;
use self::read::ReadContext;
use self::writer::{Files, Start, Writer};
use super::projections::Projections;
use super::{
    AfterRelease, AllRead, AllSlice, Append, AppendOutcome, DiskSpace, Durability, ExpectedVersion,
    ExportSnapshot, Head, ImportStep, Notifier, ReadEvent, ScavengeReport, ScavengeStarted, SpentId, Store,
    StoreError, StoredEntry, StreamRead, StreamSlice, StreamState, StreamView,
};

impl From<::sled::Error> for StoreError {
    fn from(error: ::sled::Error) -> Self {
        Self::Io(error.to_string())
    }
}

/// The layout this build reads and writes. A store written by another
/// layout is refused at open rather than misread. Layout 3 added runs of
/// links, layout 4 runs of records (see [`codec`]), layout 5 the id index
/// of segments and runs (see [`super::id_index`]; the per-id keys of
/// earlier layouts are still read), layout 6 made event ids unique per
/// stream, not per store (an id table may hold an id once per stream; an
/// older build would find one of them and refuse the others' retries).
/// Each older layout is a valid newer one, so such a store is upgraded in
/// place at open, after which older builds refuse it.
const LAYOUT_VERSION: u64 = 6;
/// The older layouts this build upgrades at open.
const UPGRADABLE_LAYOUTS: [u64; 4] = [2, 3, 4, 5];

/// How many commands may queue for the writer before senders wait. Large
/// enough that the writer always finds a full batch under load; bounded so a
/// flood of requests applies back-pressure instead of growing memory.
const COMMAND_QUEUE: usize = 16 * 1024;

/// The free space the store keeps by default: room for sled to finish what
/// it has started (its background flushes, the snapshot of the next open)
/// and for an operator to act, far above what one batch writes.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// An open slower than this gets a line in the log saying why.
const SLOW_OPEN: Duration = Duration::from_secs(2);

/// Options for opening a [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledStoreOptions {
    pub path: PathBuf,
    pub durability: Durability,
    pub projections: Projections,
    /// sled's page cache size in bytes.
    pub cache_capacity: u64,
    /// Checkpoint the store after it is closed (see
    /// [`SledStore::checkpoint`]) once this many bytes were written since
    /// it was opened (and any were).
    pub checkpoint_after_bytes: u64,
    /// The fewest bytes the store leaves free on its disk: appends that
    /// could take it below are refused, and it does not open below it
    /// (see [`space`]). 0 turns the check off.
    pub min_free_bytes: u64,
}

impl SledStoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            projections: Projections::default(),
            cache_capacity: 512 * 1024 * 1024,
            checkpoint_after_bytes: 256 * 1024 * 1024,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
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
    building: Building,
    scavenger: Scavenger,
    /// Joined at close, so that `close` returns only once sled is flushed.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    id_scan: IdScan,
    written: Arc<LogSinceOpen>,
    /// Where the store is and how it was opened, for the checkpoint.
    path: PathBuf,
    cache_capacity: u64,
    checkpoint_after_bytes: u64,
    min_free_bytes: u64,
}

impl SledStore {
    /// Opens (or creates) the store. Reads a few counters and the id
    /// index's live segments (at most 8,192 ids and one commit's); never
    /// scans the log.
    pub fn open(options: SledStoreOptions) -> Result<Self, StoreError> {
        let opening = std::time::Instant::now();
        // IMPORTANT: before anything is written, so that a start on a full
        // disk leaves the store exactly as it was.
        space::check_before_open(&options.path, options.min_free_bytes)?;
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

        // IMPORTANT: before anything reads the store; see `undo`.
        undo::repair(&db)?;

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
        if opening.elapsed() > SLOW_OPEN {
            // sled 0.34 records where its log stands only when it opens a
            // store (or a clean stop checkpoints it), so the first open after
            // a crash that followed many writes replays them all.
            tracing::info!(
                "the store's log was replayed from its last snapshot, taken at the last start or clean stop; a clean stop checkpoints it again"
            );
        }
        let last_created_micros = entries::newest_created_micros(&db)?;

        let (active, to_build) = rebuild::plan(&db, options.projections, head.next_position)?;
        db.flush()?;
        let notifier = Arc::new(Notifier::new(head));
        // The writer, the store's only one, forgets every state it commits
        // before answering: kept states are always current.
        notifier.recent_states().set_hearing(true);
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
            space: space::SpaceFloor::new(&options.path, options.min_free_bytes),
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
        background::start_upkeep_ticks(&commands)?;
        let building = background::start_projection_builds(&commands, to_build)?;
        let scavenger = Scavenger::new(&db, cell.clone(), options.path.clone(), commands.clone())?;
        Ok(Self {
            db: cell,
            commands,
            notifier,
            building,
            scavenger,
            writer_thread: Mutex::new(Some(writer_thread)),
            id_scan,
            written,
            path: options.path,
            cache_capacity: options.cache_capacity,
            checkpoint_after_bytes: options.checkpoint_after_bytes,
            min_free_bytes: options.min_free_bytes,
        })
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

    /// Whether `data_dir` holds a store, and whether something (a running
    /// server) has it open; see [`generation::in_use`].
    pub fn probe(data_dir: &Path) -> Result<(bool, bool), StoreError> {
        Ok((generation::exists(data_dir), generation::in_use(data_dir)?))
    }

    /// Sends a command to the writer and waits for its answer.
    async fn send_to_writer<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Runs a read, then, if it used any state written by a batch that is
    /// not yet durable, waits for that batch before answering. A read thus
    /// never shows an unacknowledged append. The wait is at most one group
    /// commit; there is no re-read, because everything a state refers to was
    /// written in that batch or before it, and sled applies a batch
    /// atomically with respect to single-key reads.
    async fn read_durable<T>(
        &self,
        read: impl FnOnce(&mut ReadContext) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut context = ReadContext::new(self.db.get());
        let result = read(&mut context).map_err(|error| match error {
            // After a failed write sled fails reads of what that write
            // touched: the store's fault, and over once it is restarted.
            StoreError::Io(_) if self.notifier.writes_stopped().is_some() => StoreError::Unavailable,
            other => other,
        })?;
        let newest_commit = context.newest_commit();
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

#[async_trait]
impl Store for SledStore {
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        self.send_to_writer(|reply| Command::Append { append, reply }).await
    }

    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<AppendOutcome>, StoreError> {
        self.send_to_writer(|reply| Command::AppendAll { appends, reply }).await
    }

    async fn read_stream(&self, read: StreamRead) -> Result<StreamSlice, StoreError> {
        self.read_durable(|context| context.read_stream(&read)).await
    }

    async fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError> {
        let next_position = self.notifier.next_position();
        self.read_durable(|context| context.read_all(read, next_position)).await
    }

    async fn read_event(
        &self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        self.read_durable(|context| context.read_event(stream, number, resolve_links)).await
    }

    async fn delete(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let stream = stream.to_owned();
        self.send_to_writer(|reply| Command::Delete { stream, expected, hard, reply }).await
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        self.read_durable(|context| context.state(stream)).await
    }

    fn all_pages_epoch(&self) -> Option<u64> {
        Some(self.notifier.hiding_epoch())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamState)>, StoreError> {
        self.read_durable(|context| context.list_streams(prefix, after, limit)).await
    }

    async fn metadata_number(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        // Without `read_durable`'s wait: see the trait.
        let state = ReadContext::new(self.db.get()).state(stream)?;
        Ok(state.and_then(|state| state.settings.metadata_number))
    }

    /// Holds scavenges off (they remove entries), then asks the writer,
    /// which reads the states between two batches: appends wait for that
    /// read, and for nothing else of the export.
    async fn export_snapshot(&self) -> Result<ExportSnapshot, StoreError> {
        let building = self.projections_building();
        if !building.is_empty() {
            return Err(StoreError::Busy(format!(
                "projections are being built ({}); export once they are",
                building.join(", ")
            )));
        }
        let hold = self.scavenger.hold()?;
        let mut snapshot = self.send_to_writer(|reply| Command::Snapshot { reply }).await?;
        snapshot.hold = hold;
        Ok(snapshot)
    }

    /// Straight from sled, without waiting for a commit: the entries
    /// below a snapshot's numbers are durable.
    fn backend_name(&self) -> &'static str {
        "sled"
    }

    async fn export_entries(
        &self,
        stream: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        transfer::export_entries(&self.db.get(), stream, from, below, limit)
    }

    async fn export_spent_ids(&self, snapshot: &ExportSnapshot) -> Result<Vec<SpentId>, StoreError> {
        let db = self.db.get();
        let below = snapshot.streams.iter().map(|(name, state)| (name.clone(), state.next_number)).collect();
        // IMPORTANT: off the async threads: on a store of a million events
        // the scan takes a second or more, which every request (appends
        // included) would otherwise wait out (measured by bench/run backup).
        tokio::task::spawn_blocking(move || transfer::export_spent_ids(&db, &below))
            .await
            .map_err(|error| StoreError::Io(format!("the scan of spent ids failed: {error}")))?
    }

    async fn import(&self, step: ImportStep) -> Result<(), StoreError> {
        self.send_to_writer(|reply| Command::Import { step, reply }).await
    }

    fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    fn disk_space(&self) -> Option<DiskSpace> {
        let free_bytes = space::available(&self.path).ok()?;
        Some(DiskSpace { free_bytes, min_free_bytes: self.min_free_bytes })
    }

    async fn start_scavenge(&self) -> Result<ScavengeStarted, StoreError> {
        self.scavenger.start()
    }

    async fn scavenge_report(&self, id: Uuid) -> Result<Option<ScavengeReport>, StoreError> {
        self.scavenger.report(&id)
    }

    fn latest_scavenge(&self) -> Option<ScavengeReport> {
        self.scavenger.latest()
    }

    fn size_on_disk(&self) -> Option<u64> {
        Some(scavenge::directory_bytes(&self.path))
    }

    fn projections_building(&self) -> Vec<&'static str> {
        let building = self.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        building.iter().map(|projection| projection.name()).collect()
    }

    fn after_release(&self) -> Option<AfterRelease> {
        if let Some(reason) = self.notifier.writes_stopped() {
            tracing::warn!(%reason, "not checkpointing a store whose writes failed; the next start replays its log");
            return None;
        }
        let written = self.written.bytes();
        if written == 0 || written < self.checkpoint_after_bytes {
            return None;
        }
        let (path, cache_capacity) = (self.path.clone(), self.cache_capacity);
        tracing::info!(
            written_mb = written / (1024 * 1024),
            "the store will be checkpointed, so that the next start need not replay what was written since this one"
        );
        Some(AfterRelease {
            what: "checkpoint (the next start then need not replay the store's log)",
            run: Box::new(move || Self::checkpoint(&path, cache_capacity)),
        })
    }

    async fn close(&self) -> Result<(), StoreError> {
        let result = self.send_to_writer(|reply| Command::Close { reply }).await;
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
