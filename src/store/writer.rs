//! The writer: the one thread that mutates the sled store.
//!
//! Group commit: the writer takes every command waiting in its channel,
//! validates each against the state built so far in this batch (expected
//! versions, idempotency), stages the writes of those that pass into one
//! `sled::Batch`, applies it atomically, makes it durable once, and only then
//! answers every request and wakes live readers. Under load dozens of appends
//! share one fsync; alone, an append costs one fsync.
//!
//! It runs on a dedicated OS thread rather than a tokio task because every
//! step of a commit (sled apply, flush, fdatasync) blocks.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{self, EventFields, StreamState};
use super::compact::{CompactProgress, Compaction, Retired};
use super::generation::{self, DbCell, LogSinceOpen};
use super::id_index::{IdIndex, Owner};
use super::projections::{Projection, Projections};
use super::rebuild::{self, Phase, Progress};
use super::scavenge;
use super::sled_store::LogSpan;
use super::visibility::now_micros;
use super::{Append, AppendOutcome, Durability, ExpectedVersion, Head, Notifier, StoreError, keys, metadata};

/// The most commands one batch takes. Bounds the latency of the first
/// request in a batch and the size of the reply fan-out; under any realistic
/// client count the channel holds far fewer.
const MAX_COMMANDS_PER_BATCH: usize = 4096;

/// The most payload bytes one batch takes (a single larger request still
/// goes through, alone). Bounds the writer's memory and the time one fsync
/// covers, so a burst of large events cannot starve small ones for long.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// How long the writer must have had nothing to write before an upkeep
/// tick makes it maintain the id index: long enough that a pause between
/// a load's requests never counts (each step delays a request arriving
/// meanwhile by a few milliseconds).
const IDLE_BEFORE_UPKEEP: Duration = Duration::from_millis(50);

/// A request to the writer.
pub(crate) enum Command {
    Append {
        append: Append,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    },
    Delete {
        stream: String,
        expected: ExpectedVersion,
        hard: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// One step of building a projection from the log (see [`rebuild`]).
    BuildProjection {
        projection: Projection,
        reply: oneshot::Sender<Result<Progress, StoreError>>,
    },
    /// One step of compacting the store into a new generation (see
    /// [`compact`]); the first step begins it.
    Compact {
        reply: oneshot::Sender<Result<CompactProgress, StoreError>>,
    },
    /// One step of a scavenge (see [`scavenge`]).
    Scavenge {
        cursor: scavenge::Cursor,
        reply: oneshot::Sender<Result<scavenge::StepOutcome, StoreError>>,
    },
    /// A tick, a few times a second: a writer that has had nothing else to
    /// do for a while maintains the id index (see [`Writer::upkeep`]).
    Upkeep,
    /// Flush everything and stop.
    Close {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { append, .. } => f.debug_struct("Append").field("append", append).finish(),
            Self::Delete { stream, expected, hard, .. } => f
                .debug_struct("Delete")
                .field("stream", stream)
                .field("expected", expected)
                .field("hard", hard)
                .finish(),
            Self::BuildProjection { projection, .. } => {
                f.debug_struct("BuildProjection").field("projection", projection).finish()
            }
            Self::Scavenge { cursor, .. } => f.debug_struct("Scavenge").field("cursor", cursor).finish(),
            Self::Compact { .. } => f.write_str("Compact"),
            Self::Upkeep => f.write_str("Upkeep"),
            Self::Close { .. } => f.write_str("Close"),
        }
    }
}

impl Command {
    fn payload_bytes(&self) -> usize {
        match self {
            Self::Append { append, .. } => append.events.iter().map(|e| e.size()).sum(),
            _ => 0,
        }
    }
}

type CompactReply = oneshot::Sender<Result<CompactProgress, StoreError>>;

/// An answer held back until the batch is durable.
enum Reply {
    Append(oneshot::Sender<Result<AppendOutcome, StoreError>>, Result<AppendOutcome, StoreError>),
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Build(oneshot::Sender<Result<Progress, StoreError>>, Result<Progress, StoreError>),
    Scavenge(
        oneshot::Sender<Result<scavenge::StepOutcome, StoreError>>,
        Result<scavenge::StepOutcome, StoreError>,
    ),
}

impl Reply {
    /// Turns a staged success into `error`, because the batch did not commit.
    fn fail(self, error: &StoreError) -> Self {
        match self {
            Self::Append(tx, Ok(_)) => Self::Append(tx, Err(error.clone())),
            Self::Unit(tx, Ok(())) => Self::Unit(tx, Err(error.clone())),
            Self::Build(tx, Ok(_)) => Self::Build(tx, Err(error.clone())),
            Self::Scavenge(tx, Ok(_)) => Self::Scavenge(tx, Err(error.clone())),
            other => other,
        }
    }

    fn send(self) {
        // A requester that stopped waiting (client went away) is fine: the
        // write stands, exactly as if the response had been lost in transit.
        match self {
            Self::Append(tx, result) => drop(tx.send(result)),
            Self::Unit(tx, result) => drop(tx.send(result)),
            Self::Build(tx, result) => drop(tx.send(result)),
            Self::Scavenge(tx, result) => drop(tx.send(result)),
        }
    }
}

/// Where the writer starts from, as read from the store at open.
#[derive(Debug)]
pub(crate) struct Start {
    /// Projections complete and maintained live.
    pub projections: Projections,
    /// Projections to build from the log first.
    pub to_build: Vec<Projection>,
    pub head: Head,
    /// The creation time of the newest event.
    pub last_created_micros: i64,
    pub id_index: IdIndex,
}

/// Where the store's files are, for syncing and for compaction.
#[derive(Debug)]
pub(crate) struct Files {
    pub data_dir: PathBuf,
    /// The current generation's directory.
    pub generation: PathBuf,
    /// The handle readers use; replaced when a compaction switches.
    pub cell: DbCell,
    pub cache_capacity: u64,
    /// What this process wrote to the current generation.
    pub written: Arc<LogSinceOpen>,
}

pub(crate) struct Writer {
    db: sled::Db,
    files: Files,
    /// A compaction in progress: every batch is written to it too.
    compaction: Option<Compaction>,
    durability: Durability,
    /// Present in `fsync` mode: makes sled's files durable after its flush.
    syncer: Option<FileSyncer>,
    notifier: Arc<Notifier>,
    /// The projections maintained live.
    projections: Projections,
    /// Committed stream states, so appends rarely read them from sled.
    states: StateCache,
    /// Which stream and number each event id was written as.
    id_index: IdIndex,
    /// Projections being built from the log, and where each build is.
    builds: Vec<(Projection, Phase)>,
    next_position: u64,
    /// The sequence number of the last committed batch.
    commit_seq: u64,
    /// Timestamps never go backwards along the log, even if the clock does,
    /// so `$maxAge` can binary-search a stream by time.
    last_created_micros: i64,
    /// When the last batch with writes committed.
    last_write: Instant,
}

impl Writer {
    pub(crate) fn new(
        db: sled::Db,
        files: Files,
        durability: Durability,
        notifier: Arc<Notifier>,
        start: Start,
    ) -> Result<Self, StoreError> {
        let Start { projections, to_build, head, last_created_micros, id_index } = start;
        let syncer = match durability {
            Durability::Fsync => Some(FileSyncer::open(&files.generation)?),
            Durability::Flush | Durability::None => None,
        };
        Ok(Self {
            db,
            files,
            compaction: None,
            durability,
            syncer,
            notifier,
            projections,
            states: StateCache::default(),
            id_index,
            builds: to_build.iter().map(|projection| (*projection, Phase::Clearing)).collect(),
            next_position: head.next_position,
            commit_seq: head.commit_seq,
            last_created_micros,
            last_write: Instant::now(),
        })
    }

    /// Serves commands until the channel closes or a `Close` arrives.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut carried: Option<Command> = None;
        loop {
            let first = match carried.take() {
                Some(command) => command,
                None => match commands.blocking_recv() {
                    Some(command) => command,
                    None => break,
                },
            };
            let mut batch_bytes = first.payload_bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_COMMANDS_PER_BATCH {
                let Ok(next) = commands.try_recv() else { break };
                batch_bytes += next.payload_bytes();
                if batch_bytes > MAX_BATCH_BYTES {
                    carried = Some(next);
                    break;
                }
                batch.push(next);
            }
            let ticks_only = batch.iter().all(|command| matches!(command, Command::Upkeep));
            if let Flow::Stop = self.commit(batch) {
                break;
            }
            if ticks_only && self.last_write.elapsed() >= IDLE_BEFORE_UPKEEP {
                if let Flow::Stop = self.upkeep(&commands) {
                    break;
                }
            }
        }
        // Anything still queued is answered, never silently dropped.
        commands.close();
        if let Some(command) = carried {
            refuse(command);
        }
        while let Ok(command) = commands.try_recv() {
            refuse(command);
        }
    }

    fn commit(&mut self, mut batch: Vec<Command>) -> Flow {
        let now = now_micros().max(self.last_created_micros);
        let commit_seq = self.commit_seq + 1;
        let mut staging = Staging::new(
            &self.db,
            &self.states,
            &self.id_index,
            self.projections,
            self.next_position,
            commit_seq,
            now,
        );
        let mut replies = Vec::with_capacity(batch.len());
        let mut close: Option<oneshot::Sender<Result<(), StoreError>>> = None;
        // A compaction step's reply and whether its copy is complete.
        let mut compacting: Option<(CompactReply, Result<bool, StoreError>)> = None;

        // IMPORTANT: build steps run before this batch's appends. A step
        // links everything below the committed head; if it completes, the
        // projection goes live for the appends that follow, so each event is
        // linked exactly once.
        batch.sort_by_key(|command| !matches!(command, Command::BuildProjection { .. }));
        for command in batch {
            match command {
                Command::BuildProjection { projection, reply } => {
                    let result = match self.builds.iter_mut().find(|(p, _)| *p == projection) {
                        Some((_, phase)) => rebuild::step(projection, phase, &mut staging),
                        None => Err(StoreError::Invalid(format!("{} is not being built", projection.name()))),
                    };
                    if result.as_ref().is_ok_and(|progress| progress.done) {
                        self.builds.retain(|(p, _)| *p != projection);
                    }
                    replies.push(Reply::Build(reply, result));
                }
                Command::Append { append, reply } => {
                    let result = staging.append(&append);
                    replies.push(Reply::Append(reply, result));
                }
                Command::Delete { stream, expected, hard, reply } => {
                    let result = staging.delete(&stream, expected, hard);
                    replies.push(Reply::Unit(reply, result));
                }
                Command::Scavenge { cursor, reply } => {
                    let result = scavenge::step(&mut staging, &cursor);
                    replies.push(Reply::Scavenge(reply, result));
                }
                Command::Compact { reply } => {
                    if self.compaction.is_none() {
                        match Compaction::begin(
                            &self.files.data_dir,
                            &self.files.generation,
                            self.files.cache_capacity,
                        ) {
                            Ok(compaction) => self.compaction = Some(compaction),
                            Err(error) => {
                                drop(reply.send(Err(error)));
                                continue;
                            }
                        }
                    }
                    let copied = match self.compaction.as_mut() {
                        Some(compaction) => compaction.copy_step(staging.db()),
                        None => Ok(false),
                    };
                    compacting = Some((reply, copied));
                }
                Command::Upkeep => {}
                Command::Close { reply } => close = Some(reply),
            }
        }

        let mut flow = Flow::Continue;
        let mut published: Option<(Head, Vec<String>)> = None;
        if staging.has_writes() {
            let next_position = staging.next_position;
            let touched = staging.touched_streams();
            let projections = staging.projections;
            let Finished { mut batch, mut bytes, states, removed, ids } = staging.finish();
            let staged = self.id_index.stage(&self.db, commit_seq, &ids, &mut batch);
            let written = staged.and_then(|index_bytes| {
                bytes += index_bytes;
                self.write(batch, bytes)
            });
            match written {
                Ok(()) => {
                    self.states.committed(states, removed);
                    self.projections = projections;
                    self.next_position = next_position;
                    self.commit_seq = commit_seq;
                    self.last_created_micros = now;
                    self.last_write = Instant::now();
                    published = Some((Head { next_position, commit_seq }, touched));
                }
                Err(error) => {
                    // IMPORTANT: after a failed flush or fsync the kernel may
                    // have dropped dirty pages, so what is on disk is unknown
                    // ("fsyncgate"). Acknowledging anything further could lie
                    // about durability: stop writing; a restart recovers.
                    tracing::error!(%error, "writer failed to commit a batch; refusing further writes");
                    self.states = StateCache::default();
                    replies = replies.into_iter().map(|r| r.fail(&error)).collect();
                    flow = Flow::Stop;
                }
            }
        }
        // IMPORTANT: the head reads see moves before anybody is answered, so
        // that a client reading `$all` after its 201 finds its own events.
        if let Some((head, _)) = &published {
            self.notifier.advance(*head);
        }
        for reply in replies {
            reply.send();
        }
        // IMPORTANT: appenders are answered before waiters are woken. Woken
        // waiters each re-read and render a page; answering them first put
        // an appender's 201 behind a thousand renders (38 ms, measured). A
        // reader that meets this batch's commit sequence before it is
        // published waits for the publication, which follows at once.
        if let Some((head, touched)) = published {
            self.notifier.publish(head, touched.iter().map(String::as_str));
        }
        if let Some((reply, copied)) = compacting {
            // IMPORTANT: only now, with this batch applied to both
            // generations, is the copy complete.
            let result = match (copied, flow) {
                (_, Flow::Stop) => Err(StoreError::Unavailable),
                (Ok(true), Flow::Continue) => match self.finish_compaction() {
                    Ok(Ok((retired, copied))) => Ok(CompactProgress { copied, retired: Some(retired) }),
                    Ok(Err(error)) => Err(error),
                    Err(Fatal(error)) => {
                        tracing::error!(%error, "switching to the compacted store failed; refusing further writes");
                        flow = Flow::Stop;
                        Err(error)
                    }
                },
                (Ok(false), Flow::Continue) => Ok(CompactProgress {
                    copied: self.compaction.as_ref().map_or(0, |c| c.copied),
                    retired: None,
                }),
                (Err(error), Flow::Continue) => {
                    if let Some(compaction) = self.compaction.take() {
                        compaction.abandon(&error);
                    }
                    Err(error)
                }
            };
            drop(reply.send(result));
        }
        if let Some(reply) = close {
            let result = self.flush_all();
            drop(reply.send(result));
            flow = Flow::Stop;
        }
        flow
    }

    /// Maintains the id index (its merges and garbage), a bounded step
    /// at a time in batches of their own, until it is done or a command
    /// is waiting. Under load commits do it instead, a share each; this is
    /// for what is left when the load stops (without it, the garbage of the
    /// last merges would stay until the next append).
    fn upkeep(&mut self, commands: &mpsc::Receiver<Command>) -> Flow {
        while self.id_index.has_upkeep() && commands.is_empty() {
            let mut batch = sled::Batch::default();
            let written =
                self.id_index.upkeep(&self.db, &mut batch).and_then(|bytes| self.write(batch, bytes));
            if let Err(error) = written {
                // As for a failed commit: what is on disk is unknown.
                tracing::error!(%error, "writer failed to maintain the id index; refusing further writes");
                self.states = StateCache::default();
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn write(&mut self, batch: sled::Batch, bytes: u64) -> Result<(), StoreError> {
        let shadow = self.compaction.is_some().then(|| batch.clone());
        self.db.apply_batch(batch)?;
        self.files.written.add(bytes);
        if let Some(shadow) = shadow {
            if let Some(Err(error)) = self.compaction.as_mut().map(|c| c.apply(shadow, bytes)) {
                if let Some(compaction) = self.compaction.take() {
                    compaction.abandon(&error);
                }
            }
        }
        match self.durability {
            Durability::Fsync => {
                self.db.flush()?;
                if let Some(syncer) = self.syncer.as_mut() {
                    syncer.sync().map_err(|e| StoreError::Io(format!("fdatasync failed: {e}")))?;
                }
            }
            Durability::Flush => {
                self.db.flush()?;
            }
            Durability::None => {}
        }
        Ok(())
    }

    /// Makes the fully copied new generation durable, switches `CURRENT` to
    /// it and gives readers its handle. A failure before the switch abandons
    /// the compaction (the inner error; the old generation stays current). A
    /// failure of the switch itself is fatal (the outer error), because what
    /// `CURRENT` says on disk is then unknown.
    fn finish_compaction(&mut self) -> Result<Result<(Retired, u64), StoreError>, Fatal> {
        let Some(compaction) = self.compaction.take() else {
            return Ok(Err(StoreError::Invalid("no compaction is running".into())));
        };
        let synced =
            compaction.db.flush().map_err(StoreError::from).and_then(|_| FileSyncer::open(&compaction.dir));
        let syncer = match synced {
            Ok(syncer) => syncer,
            Err(error) => {
                compaction.abandon(&error);
                return Ok(Err(error));
            }
        };
        generation::switch(&self.files.data_dir, &compaction.name()).map_err(Fatal)?;
        let copied = compaction.copied;
        self.files.written.set(compaction.bytes);
        let old_db = std::mem::replace(&mut self.db, compaction.db.clone());
        let old_cell_db = self.files.cell.get();
        self.files.cell.replace(compaction.db);
        if self.syncer.is_some() {
            self.syncer = Some(syncer);
        }
        let old_dir = std::mem::replace(&mut self.files.generation, compaction.dir);
        tracing::info!(
            generation = %self.files.generation.display(),
            keys = copied,
            "compaction switched to the new generation"
        );
        Ok(Ok((Retired { dir: old_dir, handles: vec![old_db, old_cell_db] }, copied)))
    }

    fn flush_all(&mut self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(syncer) = self.syncer.as_mut() {
            syncer.sync().map_err(|e| StoreError::Io(format!("fdatasync failed: {e}")))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Flow {
    Continue,
    Stop,
}

/// An error after which the writer must stop.
struct Fatal(StoreError);

fn refuse(command: Command) {
    match command {
        Command::Append { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Delete { reply, .. } | Command::Close { reply } => {
            drop(reply.send(Err(StoreError::Unavailable)))
        }
        Command::BuildProjection { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Scavenge { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Compact { reply } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Upkeep => {}
    }
}

/// The writes of one batch, and the state they produce, before they commit.
/// Every validation reads through this overlay, so requests in the same
/// batch see each other's effects.
pub(crate) struct Staging<'a> {
    db: &'a sled::Db,
    /// Committed stream states the writer remembers.
    cache: &'a StateCache,
    /// Which stream and number each committed event id was written as.
    id_index: &'a IdIndex,
    /// The projections maintained live; a build may activate one mid-batch.
    projections: Projections,
    batch: sled::Batch,
    writes: usize,
    /// Streams this batch changed, with their new state.
    states: HashMap<String, StreamState>,
    /// Streams whose state this batch removes.
    removed: HashSet<String>,
    /// Event ids this batch wrote, with their owner.
    ids: HashMap<Uuid, Owner>,
    /// Links this batch adds, by system stream, written as runs at the end.
    links: HashMap<String, PendingLinks>,
    /// Records this batch adds, by stream, written as runs at the end.
    records: HashMap<String, PendingRecords>,
    /// The log entry being extended: positions one append wrote.
    log: Option<LogSpan>,
    /// Bytes of keys and values staged so far.
    bytes: u64,
    pub(crate) next_position: u64,
    /// The sequence number this batch will have.
    commit_seq: u64,
    created_micros: i64,
}

impl<'a> Staging<'a> {
    fn new(
        db: &'a sled::Db,
        cache: &'a StateCache,
        id_index: &'a IdIndex,
        projections: Projections,
        next_position: u64,
        commit_seq: u64,
        created_micros: i64,
    ) -> Self {
        Self {
            commit_seq,
            db,
            cache,
            id_index,
            projections,
            batch: sled::Batch::default(),
            writes: 0,
            states: HashMap::new(),
            removed: HashSet::new(),
            ids: HashMap::new(),
            links: HashMap::new(),
            records: HashMap::new(),
            log: None,
            bytes: 0,
            next_position,
            created_micros,
        }
    }

    fn has_writes(&self) -> bool {
        self.writes > 0
    }

    pub(crate) fn db(&self) -> &sled::Db {
        self.db
    }

    /// Adds a raw write to the batch (maintenance work).
    pub(crate) fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.put(key, value);
        self.writes += 1;
    }

    /// Stages a key's new value. Every write of a batch goes through here
    /// or [`Self::remove`], so the batch knows how much it adds to sled's
    /// log (see [`LogSinceOpen`]).
    fn put(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(key, value);
    }

    /// Adds a raw removal to the batch (maintenance work). Removing a
    /// stream's state also drops any change this batch staged for it.
    pub(crate) fn remove(&mut self, key: impl Into<sled::IVec>) {
        let key = key.into();
        if let Some(stream) = keys::stream_name(&key) {
            self.states.remove(stream);
            self.removed.insert(stream.to_owned());
        }
        self.bytes += key.len() as u64;
        self.batch.remove(key);
        self.writes += 1;
    }

    /// Starts maintaining `projection` live, from the next append on.
    pub(crate) fn activate(&mut self, projection: Projection) {
        self.projections.set(projection, true);
    }

    fn touched_streams(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }

    /// The state of a stream including this batch's changes.
    pub(crate) fn state(&self, stream: &str) -> Result<StreamState, StoreError> {
        if let Some(state) = self.states.get(stream) {
            return Ok(state.clone());
        }
        if self.removed.contains(stream) {
            return Ok(StreamState::default());
        }
        if let Some(state) = self.cache.get(stream) {
            return Ok(state.clone());
        }
        match self.db.get(keys::stream(stream))? {
            Some(bytes) => codec::decode_state(&bytes),
            None => Ok(StreamState::default()),
        }
    }

    /// Records a stream's new state; written once when the batch finishes.
    pub(crate) fn set_state(&mut self, stream: &str, state: StreamState) {
        self.removed.remove(stream);
        self.states.insert(stream.to_owned(), state);
        self.writes += 1;
    }

    fn id_owner(&self, id: &Uuid) -> Result<Option<(String, u64)>, StoreError> {
        if let Some((stream, number)) = self.ids.get(id) {
            return Ok(Some((stream.to_string(), *number)));
        }
        self.id_index.owner(self.db, id)
    }

    fn append(&mut self, append: &Append) -> Result<AppendOutcome, StoreError> {
        if append.events.is_empty() {
            return Err(StoreError::Invalid("the request holds no events".into()));
        }
        let mut seen = HashSet::with_capacity(append.events.len());
        for event in &append.events {
            if !seen.insert(event.id) {
                return Err(StoreError::Invalid(format!(
                    "event id {} appears twice in one request",
                    event.id
                )));
            }
        }

        let mut state = self.state(&append.stream)?;
        if state.tombstoned {
            return Err(StoreError::StreamDeleted);
        }
        let current = current_version(&state);

        if let Some(outcome) = self.retry_outcome(append, current)? {
            return Ok(outcome);
        }

        check_expected(append.expected, current)?;

        let settings_update = match metadata::described_stream(&append.stream) {
            Some(described) => match append.events.last() {
                Some(event) => Some((
                    described.to_owned(),
                    metadata::parse(&event.data).map_err(|error| StoreError::Invalid(error.to_string()))?,
                )),
                None => None,
            },
            None => None,
        };

        let first_number = state.next_number;
        let first_position = self.next_position;
        let is_new_stream = state.next_number == 0;
        // The append's links, per system stream in the order first met, are
        // staged after its events: one state per system stream, not one per
        // link (an append's events mostly share their category and type).
        let mut linked: Vec<(String, Vec<LinkTarget<'_>>)> = Vec::new();
        // The name every id of the append is owned by, made once.
        let name: Arc<str> = Arc::from(append.stream.as_str());
        for event in &append.events {
            let position = self.next_position;
            let number = state.next_number;
            let record = codec::encode_event(&EventFields {
                stream: &append.stream,
                number,
                position,
                id: &event.id,
                event_type: &event.event_type,
                created_micros: self.created_micros,
                is_json: event.is_json,
                metadata_is_json: event.metadata_is_json,
                data: &event.data,
                metadata: &event.metadata,
            });
            self.stage_record(&append.stream, number, record);
            self.stage_log(position, &append.stream, number);
            self.ids.insert(event.id, (Arc::clone(&name), number));
            self.writes += 2;
            self.next_position += 1;
            state.next_number += 1;
            let target =
                LinkTarget { position, created_micros: self.created_micros, number, stream: &append.stream };
            let links =
                self.projections.links(&append.stream, &event.event_type, is_new_stream && number == 0);
            for link in links.into_iter().flatten() {
                match linked.iter_mut().find(|(name, _)| link.is(name)) {
                    Some((_, targets)) => targets.push(target),
                    None => linked.push((link.name(), vec![target])),
                }
            }
        }
        for (system_stream, targets) in &linked {
            self.link_all(system_stream, targets)?;
        }
        if is_new_stream {
            state.created_position = first_position;
        }
        state.soft_deleted = false;
        let last_number = state.next_number - 1;
        self.set_state(&append.stream, state);

        if let Some((described, mut settings)) = settings_update {
            let mut target = self.state(&described)?;
            settings.metadata_number = Some(last_number);
            target.settings = settings;
            self.set_state(&described, target);
        }

        Ok(AppendOutcome { first_number, last_number, position: Some(first_position), idempotent: false })
    }

    /// Decides whether `append` repeats an earlier write. Returns the
    /// original outcome when every id was written to this stream as one
    /// consecutive run in the same order; fails when only some ids match (or
    /// they belong elsewhere); `None` when none was written before.
    fn retry_outcome(&self, append: &Append, current: i64) -> Result<Option<AppendOutcome>, StoreError> {
        let ids = || append.events.iter().map(|event| &event.id);
        if !ids().any(|id| self.ids.contains_key(id)) && !self.id_index.may_hold_any(ids()) {
            return Ok(None);
        }
        let mut owners = Vec::with_capacity(append.events.len());
        for event in &append.events {
            owners.push(self.id_owner(&event.id)?);
        }
        if owners.iter().all(Option::is_none) {
            return Ok(None);
        }
        let Some(Some((_, first_number))) = owners.first() else {
            return Err(partial_match(append, current, &owners));
        };
        let is_same_run = owners.iter().enumerate().all(|(i, owner)| {
            owner.as_ref().is_some_and(|(stream, number)| {
                *stream == append.stream && *number == first_number + i as u64
            })
        });
        if !is_same_run {
            return Err(partial_match(append, current, &owners));
        }
        Ok(Some(AppendOutcome {
            first_number: *first_number,
            last_number: first_number + owners.len() as u64 - 1,
            position: None,
            idempotent: true,
        }))
    }

    /// Adds event `number`'s record to `stream`. The records a batch adds
    /// to one stream are written together, as runs.
    fn stage_record(&mut self, stream: &str, number: u64, record: Vec<u8>) {
        match self.records.get_mut(stream) {
            Some(run) if run.takes(number, &record) => {
                run.bytes += record.len();
                run.records.push(record);
            }
            _ => {
                let run = PendingRecords { first: number, bytes: record.len(), records: vec![record] };
                if let Some(full) = self.records.insert(stream.to_owned(), run) {
                    self.put(keys::event(stream, full.first), codec::encode_records(full.records));
                }
            }
        }
    }

    /// Logs event `number` of `stream` at `position`. Consecutive positions
    /// holding consecutive events of one stream share one log entry.
    fn stage_log(&mut self, position: u64, stream: &str, number: u64) {
        if let Some(span) = &mut self.log {
            let extends = span.stream == stream
                && span.position + span.count == position
                && span.number + span.count == number
                && span.count < MAX_LOG_RUN;
            if extends {
                span.count += 1;
                return;
            }
        }
        let span = LogSpan { position, stream: stream.to_owned(), number, count: 1 };
        if let Some(full) = self.log.replace(span) {
            self.write_log(&full);
        }
    }

    fn write_log(&mut self, span: &LogSpan) {
        self.put(
            &keys::log(span.position)[..],
            codec::encode_log_entry(&span.stream, span.number, span.count),
        );
    }

    /// Appends a link to the event at `position` to a system stream. The
    /// links a batch adds to one stream are written together, as runs.
    pub(crate) fn link(&mut self, system_stream: &str, target: &LinkTarget<'_>) -> Result<(), StoreError> {
        self.link_all(system_stream, std::slice::from_ref(target))
    }

    /// Appends links to `targets`, in order, to a system stream.
    fn link_all(&mut self, system_stream: &str, targets: &[LinkTarget<'_>]) -> Result<(), StoreError> {
        let mut state = self.state(system_stream)?;
        for target in targets {
            let number = state.next_number;
            if number == 0 {
                state.created_position = target.position;
            }
            let link = (target.position, target.created_micros, target.number, target.stream.to_owned());
            match self.links.get_mut(system_stream) {
                Some(run) if run.next() == number && run.links.len() < MAX_LINK_RUN => run.links.push(link),
                _ => {
                    let run = PendingLinks { first: number, links: vec![link] };
                    if let Some(full) = self.links.insert(system_stream.to_owned(), run) {
                        self.put(keys::event(system_stream, full.first), full.encode());
                    }
                }
            }
            self.writes += 1;
            state.next_number += 1;
        }
        self.set_state(system_stream, state);
        Ok(())
    }

    fn delete(&mut self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let mut state = self.state(stream)?;
        if state.tombstoned {
            return Err(StoreError::StreamDeleted);
        }
        let current = current_version(&state);
        check_expected(expected, current)?;
        if hard {
            // A tombstone may be placed on a stream that never existed, so
            // that its name can never be used (as v5 allows).
            state.tombstoned = true;
        } else {
            if current == -1 {
                return Err(StoreError::StreamNotFound);
            }
            state.soft_deleted = true;
            state.deleted_before = state.next_number;
        }
        self.set_state(stream, state);
        Ok(())
    }

    /// Writes the final stream states and returns the batch to apply.
    fn finish(mut self) -> Finished {
        for (stream, run) in std::mem::take(&mut self.links) {
            self.put(keys::event(&stream, run.first), run.encode());
        }
        for (stream, run) in std::mem::take(&mut self.records) {
            self.put(keys::event(&stream, run.first), codec::encode_records(run.records));
        }
        if let Some(span) = self.log.take() {
            self.write_log(&span);
        }
        let mut states = std::mem::take(&mut self.states);
        for (stream, state) in &mut states {
            state.commit_seq = self.commit_seq;
            self.put(keys::stream(stream), codec::encode_state(state));
        }
        self.put(keys::counter(keys::COMMIT_SEQ), &keys::u64_value(self.commit_seq)[..]);
        self.put(keys::counter(keys::NEXT_POSITION), &keys::u64_value(self.next_position)[..]);
        Finished { batch: self.batch, bytes: self.bytes, states, removed: self.removed, ids: self.ids }
    }
}

/// A batch ready to apply, and the stream states it leaves.
struct Finished {
    batch: sled::Batch,
    /// Bytes of keys and values in `batch`.
    bytes: u64,
    states: HashMap<String, StreamState>,
    removed: HashSet<String>,
    /// The event ids the batch adds, for the id index.
    ids: HashMap<Uuid, Owner>,
}

/// The committed states of the streams the writer touched lately, so an
/// append need not read its stream's state (and its system streams')
/// from sled. Only the writer changes states, and it updates this after
/// each commit, so an entry is never stale. Bounded: emptied when full.
#[derive(Default)]
struct StateCache {
    states: HashMap<String, StreamState>,
}

/// How many stream states [`StateCache`] holds at most (a few MB).
const STATE_CACHE_ENTRIES: usize = 65_536;

impl StateCache {
    fn get(&self, stream: &str) -> Option<&StreamState> {
        self.states.get(stream)
    }

    /// Takes in what a committed batch wrote and removed.
    fn committed(&mut self, states: HashMap<String, StreamState>, removed: HashSet<String>) {
        for stream in removed {
            self.states.remove(&stream);
        }
        if self.states.len() + states.len() > STATE_CACHE_ENTRIES {
            self.states.clear();
        }
        self.states.extend(states);
    }
}

/// The most links one run holds. Reading a link walks its run's items (they
/// vary in size), so runs stay short enough for that to cost little (a
/// projection built from the log would otherwise put thousands in one).
const MAX_LINK_RUN: usize = 64;

/// Consecutive links to one system stream, staged by one batch.
struct PendingLinks {
    /// The number of the first.
    first: u64,
    /// (target position, created µs, target number, target stream).
    links: Vec<(u64, i64, u64, String)>,
}

impl PendingLinks {
    fn next(&self) -> u64 {
        self.first + self.links.len() as u64
    }

    fn encode(&self) -> Vec<u8> {
        let links: Vec<(u64, i64, u64, &str)> = self
            .links
            .iter()
            .map(|(position, created, number, stream)| (*position, *created, *number, stream.as_str()))
            .collect();
        codec::encode_links(&links)
    }
}

/// Runs of records start at multiples of this (the default page size) and
/// never cross one, so a page that starts at such a number, as a forward
/// walk from the start of a stream does, is read from the key it starts at:
/// one key, no look back for a run that started earlier.
const RECORD_RUN_ALIGN: u64 = 20;

/// The most bytes of records one run holds: sled rewrites a leaf's values
/// when it consolidates it, so a run of large events stays small. A record
/// larger than this is stored alone.
const MAX_RECORD_RUN_BYTES: usize = 32 * 1024;

/// Consecutive records of one stream, staged by one batch.
struct PendingRecords {
    /// The number of the first.
    first: u64,
    records: Vec<Vec<u8>>,
    /// The records' total size.
    bytes: usize,
}

impl PendingRecords {
    /// Whether `record`, numbered `number`, extends this run.
    fn takes(&self, number: u64, record: &[u8]) -> bool {
        self.first + self.records.len() as u64 == number
            && number % RECORD_RUN_ALIGN != 0
            && self.bytes + record.len() <= MAX_RECORD_RUN_BYTES
    }
}

/// The most positions one log entry covers. `$all` pages and projection
/// builds read a log entry with one range read of its stream.
const MAX_LOG_RUN: u64 = 64;

/// The event a system-stream link points at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkTarget<'a> {
    pub position: u64,
    pub created_micros: i64,
    pub number: u64,
    pub stream: &'a str,
}

/// The version an expected-version check compares against: the last event
/// number, or -1 when the stream does not exist (never written or deleted).
fn current_version(state: &StreamState) -> i64 {
    match state.last_number() {
        Some(last) if state.exists() => i64::try_from(last).unwrap_or(i64::MAX),
        _ => -1,
    }
}

/// Checks `ES-ExpectedVersion` against the stream's current version.
fn check_expected(expected: ExpectedVersion, current: i64) -> Result<(), StoreError> {
    let matches = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == -1,
        ExpectedVersion::StreamExists => current >= 0,
        ExpectedVersion::Exact(n) => i64::try_from(n).is_ok_and(|n| n == current),
    };
    if matches {
        return Ok(());
    }
    Err(StoreError::WrongExpectedVersion {
        current,
        detail: format!("Expected version {expected}, but the stream is at {current}."),
    })
}

fn partial_match(append: &Append, current: i64, owners: &[Option<(String, u64)>]) -> StoreError {
    let taken = append
        .events
        .iter()
        .zip(owners)
        .find_map(|(event, owner)| owner.as_ref().map(|(s, n)| (event.id, s, n)));
    let detail = match taken {
        Some((id, stream, number)) => format!(
            "event id {id} was already written as event {number} of stream '{stream}', \
             and the request does not repeat that write exactly"
        ),
        None => "the request's event ids only partly match an earlier write".into(),
    };
    StoreError::WrongExpectedVersion { current, detail }
}

/// Makes sled's files durable: sled's own flush writes its log with
/// `sync_file_range`, which does not flush the device cache and does not
/// cover file-size metadata, and it never syncs blob files (values of large
/// nodes) at all.
struct FileSyncer {
    /// sled's log, kept open so each sync is one syscall.
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already synced. Blob files are written once and never
    /// modified, so each needs one sync; names of removed blobs are dropped
    /// on the next listing.
    synced_blobs: HashSet<OsString>,
}

impl FileSyncer {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let log = File::open(path.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open sled's log for syncing: {e}")))?;
        // The data directory's entries (db, conf, blobs/) must be durable too.
        File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Io(format!("cannot sync the data directory: {e}")))?;
        let mut syncer = Self { log, blobs_dir: path.join("blobs"), synced_blobs: HashSet::new() };
        syncer.sync().map_err(|e| StoreError::Io(format!("initial fdatasync failed: {e}")))?;
        Ok(syncer)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced_blobs.len());
        let mut synced_new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // sled's garbage collector removed it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_new = true;
            }
            present.insert(name);
        }
        if synced_new {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
