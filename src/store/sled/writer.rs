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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::command::Command;
use super::compact::{CompactProgress, Compaction, Retired};
use super::generation::{self, DbCell, LogSinceOpen};
use super::id_index::IdIndex;
use super::rebuild::{self, Phase, Progress};
use super::scavenge;
use super::space::{self, SpaceFloor};
use super::staging::{Finished, Staging, StateCache};
use super::syncer::FileSyncer;
use super::transfer;
use super::undo::{self, Undo};
use crate::store::projections::{Projection, Projections};
use crate::store::retention::now_micros;
use crate::store::{AppendOutcome, CommitFigures, Durability, Head, Notifier, StoreError};

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

type CompactReply = oneshot::Sender<Result<CompactProgress, StoreError>>;

/// An answer held back until the batch is durable.
enum Reply {
    Append(oneshot::Sender<Result<AppendOutcome, StoreError>>, Result<AppendOutcome, StoreError>),
    AppendAll(
        oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>,
        Result<Vec<AppendOutcome>, StoreError>,
    ),
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
            Self::AppendAll(tx, Ok(_)) => Self::AppendAll(tx, Err(error.clone())),
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
            Self::AppendAll(tx, result) => drop(tx.send(result)),
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
    /// The free space appends must leave on the store's disk.
    pub space: SpaceFloor,
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
    /// An import under way, if one was begun.
    importing: transfer::Importing,
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
            importing: transfer::Importing::default(),
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
            if first.is_transfer() {
                if let Flow::Stop = self.transfer(first) {
                    break;
                }
                continue;
            }
            let mut batch_bytes = first.payload_bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_COMMANDS_PER_BATCH {
                let Ok(next) = commands.try_recv() else { break };
                batch_bytes += next.payload_bytes();
                if batch_bytes > MAX_BATCH_BYTES || next.is_transfer() {
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
        let appends = batch
            .iter()
            .filter(|command| matches!(command, Command::Append { .. } | Command::AppendAll { .. }))
            .count();
        let mut close: Option<oneshot::Sender<Result<(), StoreError>>> = None;
        // Appends wait for space; everything else (deletes, scavenges,
        // compaction, which give space back) goes on.
        let payload: usize = batch.iter().map(Command::payload_bytes).sum();
        let free = self.files.space.free();
        let space = if payload > 0 { self.files.space.admit(&free, payload as u64) } else { Ok(()) };
        // A compaction step's reply and whether its copy is complete.
        let mut compacting: Option<(CompactReply, Result<bool, StoreError>)> = None;

        // IMPORTANT: build steps run before this batch's appends. A step
        // links everything below the committed head; if it completes, the
        // projection goes live for the appends that follow, so each event is
        // linked exactly once.
        batch.sort_by_key(|command| !matches!(command, Command::BuildProjection { .. }));
        let hides = batch.iter().any(Command::may_hide_events);
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
                    let result = match &space {
                        Ok(()) => staging.append(&append),
                        Err(refused) => Err(refused.clone()),
                    };
                    replies.push(Reply::Append(reply, result));
                }
                Command::AppendAll { appends, reply } => {
                    let result = match &space {
                        Ok(()) => staging.append_all(&appends),
                        Err(refused) => Err(refused.clone()),
                    };
                    replies.push(Reply::AppendAll(reply, result));
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
                // Taken alone, before a batch (see `transfer`); never here.
                command @ (Command::Snapshot { .. } | Command::Import { .. }) => refuse(command),
                Command::Close { reply } => close = Some(reply),
            }
        }

        let mut flow = Flow::Continue;
        let mut published: Option<(Head, Vec<String>)> = None;
        let mut committed: Option<CommitFigures> = None;
        if staging.has_writes() {
            let next_position = staging.next_position;
            let touched = staging.touched_streams();
            let projections = staging.projections;
            let keep_undo = space::needs_undo(&free);
            let written = staging.finish(keep_undo).and_then(|finished| {
                let Finished { mut batch, bytes, states, removed, ids, mut undo } = finished;
                let index_bytes = self.id_index.stage(&self.db, commit_seq, &ids, &mut batch)?;
                undo.append(self.id_index.take_undo());
                let writing = Instant::now();
                self.write(batch, keep_undo.then_some(&undo), bytes + index_bytes)?;
                Ok((states, removed, writing.elapsed()))
            });
            match written {
                Ok((states, removed, duration)) => {
                    committed =
                        Some(CommitFigures { appends, events: next_position - self.next_position, duration });
                    self.states.committed(states, removed, self.notifier.recent_states());
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
                    self.notifier.stop_writes(format!("a commit failed: {error}"));
                    self.states.forget_all(self.notifier.recent_states());
                    let unknown = StoreError::CommitFailed(error.to_string());
                    replies = replies.into_iter().map(|r| r.fail(&unknown)).collect();
                    flow = Flow::Stop;
                }
            }
        }
        // IMPORTANT: the head reads see moves before anybody is answered, so
        // that a client reading `$all` after its 201 finds its own events;
        // likewise the epoch of kept `$all` pages.
        if let Some((head, _)) = &published {
            if hides {
                self.notifier.hid_events();
            }
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
        // After the answers and the wake-ups: what a commit cost is
        // reported off their path.
        if let Some(figures) = committed {
            self.notifier.commit_observed(figures);
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
                        self.notifier
                            .stop_writes(format!("switching to the compacted store failed: {error}"));
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

    /// A snapshot or an import step, alone between two batches (see
    /// [`transfer`]): a snapshot reads what every batch so far committed.
    fn transfer(&mut self, command: Command) -> Flow {
        let head = Head { next_position: self.next_position, commit_seq: self.commit_seq };
        match command {
            Command::Snapshot { reply } => {
                let started = Instant::now();
                let snapshot = transfer::snapshot(&self.db, head);
                let streams = snapshot.as_ref().map_or(0, |snapshot| snapshot.streams.len());
                tracing::info!(
                    streams,
                    pause_ms = started.elapsed().as_secs_f64() * 1e3,
                    "export snapshot taken"
                );
                drop(reply.send(snapshot));
            }
            Command::Import { step, reply } => {
                let commit_seq = self.commit_seq + 1;
                let mut batch = sled::Batch::default();
                let staged = match self.importing.stage(&self.db, head, step, commit_seq, &mut batch) {
                    Ok(staged) => staged,
                    Err(error) => {
                        drop(reply.send(Err(error)));
                        return Flow::Continue;
                    }
                };
                // An import fills a store that held nothing: a step taken
                // back only in part is no worse than one that failed.
                let written = (self.id_index.stage(&self.db, commit_seq, &staged.ids, &mut batch))
                    .and_then(|index_bytes| self.write(batch, None, staged.bytes + index_bytes));
                if let Err(error) = written {
                    tracing::error!(%error, "writer failed to commit an import step; refusing further writes");
                    self.notifier.stop_writes(format!("an import step failed: {error}"));
                    drop(reply.send(Err(StoreError::CommitFailed(error.to_string()))));
                    return Flow::Stop;
                }
                self.commit_seq = commit_seq;
                self.states.forget_all(self.notifier.recent_states());
                if let Some((next_position, last_created_micros)) = staged.finished {
                    self.next_position = next_position;
                    self.last_created_micros = last_created_micros;
                }
                let head = Head { next_position: self.next_position, commit_seq };
                self.notifier.hid_events();
                self.notifier.advance(head);
                drop(reply.send(Ok(())));
                self.notifier.publish_all(head);
            }
            other => refuse(other),
        }
        Flow::Continue
    }

    /// Maintains the id index (its merges and garbage), a bounded step
    /// at a time in batches of their own, until it is done or a command
    /// is waiting. Under load commits do it instead, a share each; this is
    /// for what is left when the load stops (without it, the garbage of the
    /// last merges would stay until the next append).
    fn upkeep(&mut self, commands: &mpsc::Receiver<Command>) -> Flow {
        while self.id_index.has_upkeep() && commands.is_empty() {
            let mut batch = sled::Batch::default();
            let written = self.id_index.upkeep(&self.db, &mut batch).and_then(|bytes| {
                let undo = self.id_index.take_undo();
                self.write(batch, space::needs_undo(&self.files.space.free()).then_some(&undo), bytes)
            });
            if let Err(error) = written {
                // As for a failed commit: what is on disk is unknown.
                tracing::error!(%error, "writer failed to maintain the id index; refusing further writes");
                self.states.forget_all(self.notifier.recent_states());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Applies `batch`, with its undo record if it has one (see `undo` and
    /// `space::needs_undo`), and makes it as durable as the store is.
    fn write(&mut self, batch: sled::Batch, undo: Option<&Undo>, bytes: u64) -> Result<(), StoreError> {
        let shadow = self.compaction.is_some().then(|| batch.clone());
        let record = undo.and_then(Undo::encode);
        undo::apply(&self.db, record.as_deref(), batch)?;
        let bytes = bytes + record.as_ref().map_or(0, |record| record.len() as u64);
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
        Command::AppendAll { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Delete { reply, .. } | Command::Close { reply } => {
            drop(reply.send(Err(StoreError::Unavailable)))
        }
        Command::BuildProjection { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Scavenge { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Compact { reply } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Snapshot { reply } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Import { reply, .. } => drop(reply.send(Err(StoreError::Unavailable))),
        Command::Upkeep => {}
    }
}
