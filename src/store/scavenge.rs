//! Scavenging: reclaiming the space of events no read can see any more —
//! events beyond `$maxCount`, older than `$maxAge`, before `$tb`, and the
//! events of soft- and hard-deleted streams — and of their index entries.
//!
//! A scavenge walks every stream in key order, in steps run inside the
//! writer. Each step decides visibility from the current state with the
//! same function reads use ([`super::visibility::first_visible`]) and
//! removes a bounded number of invisible index entries and log records as
//! one atomic batch. Entries written together are stored as runs (records,
//! links, log positions); the invisible part of a run is always its start,
//! since visibility is a lower bound on numbers, and a run it cuts keeps its
//! visible tail under the tail's first key. So:
//! - it never removes an event a read can still see, even if metadata
//!   changes while it runs (steps are serialised with appends);
//! - it can be killed at any point: every step is all or nothing, and what
//!   is left is simply found again by the next scavenge;
//! - appends are held up for one bounded step at a time, never for the
//!   whole scavenge.
//!
//! Kept on purpose: stream states (a tombstone must stay so the name stays
//! dead; a soft-deleted stream's numbering continues) and the event-id index
//! (an event id is spent forever, so idempotency stays permanent).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::codec::{self, Entry};
use super::writer::Staging;
use super::{StoreError, keys, visibility};

/// The most keys one step removes. Removals go into the writer's batch, so
/// the appends that share it wait for them: a few milliseconds' worth.
const STEP_REMOVALS: usize = 1_000;
/// The most streams one step examines (each costs a state read, and with
/// `$maxAge` a binary search).
const STEP_STREAMS: usize = 500;
/// A step stops examining streams after this long, whatever it found.
pub(crate) const STEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(3);

/// Where a scavenge has got to: the stream it is in (or will start after)
/// and the first event number of it not yet examined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub stream: Option<String>,
    pub next_number: u64,
}

/// What one step did, and where the next starts (`None`: finished).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepOutcome {
    pub next: Option<Cursor>,
    pub streams: u64,
    pub events_removed: u64,
    pub links_removed: u64,
}

/// The status of a scavenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScavengeStatus {
    Running,
    Completed,
    Failed,
    /// The server stopped (or died) while it ran; nothing readable was lost,
    /// and the next scavenge picks up what it left.
    Interrupted,
}

/// A scavenge's progress and result, kept in the store so it can be
/// looked up after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScavengeReport {
    pub scavenge_id: Uuid,
    pub status: ScavengeStatus,
    /// Microseconds since the Unix epoch.
    pub started_micros: i64,
    pub finished_micros: Option<i64>,
    pub streams_scanned: u64,
    pub events_removed: u64,
    pub links_removed: u64,
    /// Keys copied into the compacted generation.
    #[serde(default)]
    pub keys_copied: u64,
    /// Bytes in the data directory when it started and when it finished.
    pub bytes_before: u64,
    pub bytes_after: Option<u64>,
    pub error: Option<String>,
}

/// What asking for a scavenge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScavengeStarted {
    Started(Uuid),
    AlreadyRunning(Uuid),
}

/// Runs one step from `cursor`, inside the writer's batch.
pub(crate) fn step(staging: &mut Staging<'_>, cursor: &Cursor) -> Result<StepOutcome, StoreError> {
    let now = visibility::now_micros();
    let mut outcome = StepOutcome::default();
    let mut removals = 0usize;
    let start = match &cursor.stream {
        Some(stream) => keys::stream(stream),
        None => vec![keys::STREAM],
    };
    let streams: Vec<sled::IVec> = staging
        .db()
        .range(start..)
        .keys()
        .take_while(|key| key.as_ref().map_or(true, |key| key.first() == Some(&keys::STREAM)))
        .take(STEP_STREAMS)
        .collect::<Result<_, _>>()?;
    let examined_all = streams.len() < STEP_STREAMS;

    let started = std::time::Instant::now();
    // Log entries this step already trimmed: the batch is not readable
    // before it commits, so the same entry would otherwise be trimmed twice.
    let mut trimmed = HashSet::new();
    for key in &streams {
        let Some(stream) = keys::stream_name(key) else { continue };
        if outcome.streams > 0 && started.elapsed() >= STEP_BUDGET {
            // Out of time: the next step starts at this stream.
            outcome.next = Some(Cursor { stream: Some(stream.to_owned()), next_number: 0 });
            return Ok(outcome);
        }
        let from = match &cursor.stream {
            Some(current) if current == stream => cursor.next_number,
            _ => 0,
        };
        outcome.streams += 1;
        let state = staging.state(stream)?;
        let first_visible = visibility::first_visible(staging.db(), stream, &state, now)?;
        if first_visible <= from {
            continue;
        }
        let range = keys::event(stream, from)..keys::event(stream, first_visible);
        let entries: Vec<(sled::IVec, sled::IVec)> =
            staging.db().range(range).take(STEP_REMOVALS - removals).collect::<Result<_, _>>()?;
        for (index_key, value) in entries {
            let first = keys::event_number(&index_key)
                .ok_or_else(|| StoreError::Corrupt("event key is malformed".into()))?;
            let count = codec::entry_count(&value)?;
            // The entry's hidden prefix goes; a run that reaches a visible
            // number keeps its visible tail, under the tail's first number.
            let hidden = (first_visible - first).min(count);
            let value = codec::shared(value);
            if codec::is_link_entry(&value) {
                outcome.links_removed += hidden;
            } else {
                // The events' log entries go with them (a link's target
                // position belongs to the target).
                for entry in codec::decode_entries(value.clone())?.iter().take(hidden as usize) {
                    if let Entry::Event(event) = entry {
                        trim_log(staging, &mut trimmed, event.position, first_visible)?;
                    }
                }
                outcome.events_removed += hidden;
                removals += hidden as usize;
            }
            staging.remove(index_key);
            if hidden < count {
                staging
                    .insert(keys::event(stream, first + hidden), codec::run_tail(&value, hidden as usize)?);
            }
            removals += 1;
            if removals >= STEP_REMOVALS {
                outcome.next = Some(Cursor { stream: Some(stream.to_owned()), next_number: first + 1 });
                return Ok(outcome);
            }
        }
    }
    if !examined_all {
        // Resume after the last stream examined (its name plus a NUL sorts
        // right after it and before any longer name).
        let last = streams.last().and_then(|key| keys::stream_name(key)).map(|name| format!("{name}\0"));
        outcome.next = Some(Cursor { stream: last, next_number: 0 });
    }
    Ok(outcome)
}

/// Drops the log's record of the event at `position`, which is hidden (its
/// stream's events below `first_visible` are). A log entry covers
/// consecutive events of one stream, so its hidden events are a prefix of
/// it: they all go now, and a visible tail stays under its first position.
fn trim_log(
    staging: &mut Staging<'_>,
    trimmed: &mut HashSet<u64>,
    position: u64,
    first_visible: u64,
) -> Result<(), StoreError> {
    let Some(item) = staging.db().range(keys::log(0)..=keys::log(position)).next_back() else {
        return Ok(());
    };
    let (key, value) = item?;
    let Some(start) = keys::log_position(&key) else { return Ok(()) };
    let (stream, number, count) = codec::decode_log_entry(&value)?;
    // A tail left by an earlier step no longer covers `position`; the entry
    // found is then another's.
    if position >= start + count || trimmed.contains(&start) {
        return Ok(());
    }
    trimmed.insert(start);
    let hidden = first_visible.saturating_sub(number).min(count);
    staging.remove(key);
    if hidden < count {
        let tail = codec::encode_log_entry(&stream, number + hidden, count - hidden);
        staging.insert(&keys::log(start + hidden)[..], tail);
    }
    Ok(())
}

/// The bytes of every file under `path`.
pub(crate) fn directory_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Everything the background scavenge needs, detached from the store.
#[derive(Debug, Clone)]
pub(crate) struct Scavenger {
    /// Reports are kept in the store; through the cell, so they follow a
    /// compaction to the new generation.
    pub db: super::generation::DbCell,
    pub path: std::path::PathBuf,
    pub commands: tokio::sync::mpsc::Sender<super::writer::Command>,
    /// The report of the scavenge running now, if any, updated after every
    /// step: what `report` shows for it, so progress is current, not as
    /// of the last save.
    pub running: std::sync::Arc<std::sync::Mutex<Option<ScavengeReport>>>,
    /// The task of the last scavenge started. The task holds the store's
    /// files open (through `db`), so closing the store waits for it: a
    /// restart in the same process must not find the files still locked.
    pub task: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// How often a running scavenge saves its report (so that a kill leaves a
/// recent one; while it runs, `report` shows the live one).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Scavenger {
    /// Marks scavenges that were running when the server last stopped as
    /// interrupted (a few small records, read once at open).
    pub fn mark_interrupted(db: &sled::Db) -> Result<(), StoreError> {
        for item in db.scan_prefix([keys::SCAVENGE]) {
            let (key, value) = item?;
            if let Ok(mut report) = serde_json::from_slice::<ScavengeReport>(&value) {
                if report.status == ScavengeStatus::Running {
                    report.status = ScavengeStatus::Interrupted;
                    db.insert(key, encode(&report))?;
                }
            }
        }
        Ok(())
    }

    pub fn start(&self) -> Result<ScavengeStarted, StoreError> {
        let mut running = self.lock_running();
        if let Some(report) = &*running {
            return Ok(ScavengeStarted::AlreadyRunning(report.scavenge_id));
        }
        let id = Uuid::new_v4();
        let report = ScavengeReport {
            scavenge_id: id,
            status: ScavengeStatus::Running,
            started_micros: visibility::now_micros(),
            finished_micros: None,
            streams_scanned: 0,
            events_removed: 0,
            links_removed: 0,
            keys_copied: 0,
            bytes_before: directory_bytes(&self.path),
            bytes_after: None,
            error: None,
        };
        self.save(&report)?;
        *running = Some(report.clone());
        drop(running);
        tracing::info!(scavenge_id = %id, bytes = report.bytes_before, "scavenge started");
        let scavenger = self.clone();
        let task = tokio::spawn(async move { scavenger.run(report).await });
        *self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(task);
        Ok(ScavengeStarted::Started(id))
    }

    /// Waits for the running scavenge to notice that the writer has stopped
    /// and let go of the store. Called by `close` after the writer exits, so
    /// the scavenge's next step fails at once; the bound only guards against
    /// a filesystem that hangs while the old generation is removed.
    pub async fn finish(&self) {
        let task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(task) = task {
            if tokio::time::timeout(std::time::Duration::from_secs(30), task).await.is_err() {
                tracing::warn!("the scavenge did not stop within 30 s of the store closing");
            }
        }
    }

    pub fn report(&self, id: &Uuid) -> Result<Option<ScavengeReport>, StoreError> {
        if let Some(report) = self.lock_running().as_ref().filter(|report| report.scavenge_id == *id) {
            return Ok(Some(report.clone()));
        }
        match self.db.get().get(keys::scavenge(id))? {
            Some(value) => serde_json::from_slice(&value)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("scavenge report: {e}"))),
            None => Ok(None),
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<ScavengeReport>> {
        // Every write is one assignment: a poisoned lock holds a whole value.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shows the running scavenge's progress to `report`.
    fn publish(&self, report: &ScavengeReport) {
        if let Some(running) = self.lock_running().as_mut() {
            running.clone_from(report);
        }
    }

    fn save(&self, report: &ScavengeReport) -> Result<(), StoreError> {
        self.db.get().insert(keys::scavenge(&report.scavenge_id), encode(report))?;
        Ok(())
    }

    async fn run(self, mut report: ScavengeReport) {
        let mut cursor = Cursor::default();
        let mut last_saved = std::time::Instant::now();
        let status = loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let command = super::writer::Command::Scavenge { cursor: cursor.clone(), reply };
            let asked = std::time::Instant::now();
            if self.commands.send(command).await.is_err() {
                break ScavengeStatus::Interrupted;
            }
            match answer.await {
                Ok(Ok(step)) => {
                    report.streams_scanned += step.streams;
                    report.events_removed += step.events_removed;
                    report.links_removed += step.links_removed;
                    self.publish(&report);
                    match step.next {
                        Some(next) => cursor = next,
                        None => break ScavengeStatus::Completed,
                    }
                    yield_to_appends(asked).await;
                    if last_saved.elapsed() >= REPORT_EVERY {
                        let _ = self.save(&report);
                        last_saved = std::time::Instant::now();
                    }
                }
                Ok(Err(StoreError::Unavailable)) | Err(_) => break ScavengeStatus::Interrupted,
                Ok(Err(error)) => {
                    report.error = Some(error.to_string());
                    break ScavengeStatus::Failed;
                }
            }
        };
        let status = match status {
            ScavengeStatus::Completed => match self.compact(&mut report).await {
                Ok(()) => ScavengeStatus::Completed,
                Err(StoreError::Unavailable) => ScavengeStatus::Interrupted,
                Err(error) => {
                    report.error = Some(format!("compaction: {error}"));
                    ScavengeStatus::Failed
                }
            },
            other => other,
        };
        report.status = status;
        report.finished_micros = Some(visibility::now_micros());
        report.bytes_after = Some(directory_bytes(&self.path));
        self.publish(&report);
        if let Err(error) = self.save(&report) {
            tracing::warn!(%error, "could not save the scavenge report");
        }
        tracing::info!(
            scavenge_id = %report.scavenge_id,
            status = ?report.status,
            events_removed = report.events_removed,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            "scavenge finished"
        );
        *self.lock_running() = None;
    }
}

impl Scavenger {
    /// Rewrites the store into a new generation (see [`super::compact`]):
    /// the step that returns the space the scavenge freed, since sled never
    /// shrinks its files.
    async fn compact(&self, report: &mut ScavengeReport) -> Result<(), StoreError> {
        let mut last_saved = std::time::Instant::now();
        loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let asked = std::time::Instant::now();
            self.commands
                .send(super::writer::Command::Compact { reply })
                .await
                .map_err(|_| StoreError::Unavailable)?;
            let progress = answer.await.map_err(|_| StoreError::Unavailable)??;
            report.keys_copied = progress.copied;
            self.publish(report);
            if let Some(retired) = progress.retired {
                // Readers that took the old handle just before the switch
                // finish within milliseconds; give them ample time, then let
                // sled shut the old generation down and delete it.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let removed = tokio::task::spawn_blocking(move || {
                    drop(retired.handles);
                    std::fs::remove_dir_all(&retired.dir)
                })
                .await;
                if !matches!(removed, Ok(Ok(()))) {
                    tracing::warn!(
                        ?removed,
                        "could not remove the old generation; it goes at the next start"
                    );
                }
                return Ok(());
            }
            if last_saved.elapsed() >= REPORT_EVERY {
                let _ = self.save(report);
                last_saved = std::time::Instant::now();
            }
            yield_to_appends(asked).await;
        }
    }
}

/// Pauses between steps for as long as the last one took from asking to
/// answer, so that a scavenge has at most half of the writer's time (and of
/// a CPU): appends keep flowing at the cost of a scavenge that takes about
/// twice as long as it could.
async fn yield_to_appends(asked: std::time::Instant) {
    tokio::time::sleep(asked.elapsed().min(std::time::Duration::from_millis(50))).await;
}

fn encode(report: &ScavengeReport) -> Vec<u8> {
    serde_json::to_vec(report).unwrap_or_default()
}
