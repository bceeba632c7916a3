//! Every thread and task that feeds the writer commands besides request
//! handlers: the id-index scan at start-up, the upkeep ticks, projection
//! builds, and the scavenger (its steps, compaction and reports).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::command::Command;
use super::generation::DbCell;
use super::id_filter::IdFilter;
use super::keys;
use super::scavenge::{Cursor, directory_bytes};
use crate::store::projections::Projection;
use crate::store::retention::now_micros;
use crate::store::{ScavengeHold, ScavengeReport, ScavengeStarted, ScavengeStatus, StoreError};

/// The thread that adds the id index to the writer's [`IdFilter`] after
/// start-up. Stopped at close: it holds a handle of the database, and the
/// directory's lock is only released once every handle is dropped.
#[derive(Debug)]
pub(super) struct IdScan {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IdScan {
    pub(super) fn start(ids: Arc<IdFilter>, db: sled::Db) -> Result<Self, StoreError> {
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
    pub(super) async fn stop(&self) {
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
pub(super) fn start_upkeep_ticks(commands: &mpsc::Sender<Command>) -> Result<(), StoreError> {
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

/// The projections whose build has not finished, shared with readers.
pub(super) type Building = Arc<Mutex<Vec<Projection>>>;

/// How often a build logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Starts building `to_build` in the background (see [`drive`]), and
/// returns the list of projections still being built, which the builds
/// shorten as each finishes.
pub(super) fn start_projection_builds(
    commands: &mpsc::Sender<Command>,
    to_build: Vec<Projection>,
) -> Result<Building, StoreError> {
    let building: Building = Arc::new(Mutex::new(to_build.clone()));
    if !to_build.is_empty() {
        let (commands, building) = (commands.clone(), Arc::clone(&building));
        std::thread::Builder::new()
            .name("eventfeed-projections".into())
            .spawn(move || drive(commands, to_build, building))
            .map_err(|e| StoreError::Io(format!("cannot start the projection builder: {e}")))?;
    }
    Ok(building)
}

/// Drives the builds of `projections` one after the other, from a thread of
/// its own, logging progress. Ends early if the writer stops.
fn drive(commands: mpsc::Sender<Command>, projections: Vec<Projection>, building: Building) {
    let finish = |projection: Projection| {
        building.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|p| *p != projection);
    };
    for projection in projections {
        let started = Instant::now();
        let mut last_report = Instant::now();
        tracing::info!(projection = projection.name(), "building projection from the log");
        loop {
            let (reply, answer) = oneshot::channel();
            if commands.blocking_send(Command::BuildProjection { projection, reply }).is_err() {
                return;
            }
            match answer.blocking_recv() {
                Ok(Ok(progress)) if progress.done => {
                    tracing::info!(
                        projection = projection.name(),
                        events = progress.head,
                        seconds = started.elapsed().as_secs_f64(),
                        "projection built; maintained live from now on"
                    );
                    finish(projection);
                    break;
                }
                Ok(Ok(progress)) => {
                    if last_report.elapsed() >= PROGRESS_EVERY {
                        tracing::info!(
                            projection = projection.name(),
                            linked = progress.next,
                            of = progress.head,
                            "building projection"
                        );
                        last_report = Instant::now();
                    }
                }
                Ok(Err(error)) => {
                    tracing::error!(projection = projection.name(), %error, "building the projection failed");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Everything the background scavenge needs, detached from the store.
#[derive(Debug, Clone)]
pub(super) struct Scavenger {
    /// Reports are kept in the store; through the cell, so they follow a
    /// compaction to the new generation.
    db: DbCell,
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    /// The report of the scavenge running now, if any, updated after every
    /// step: what `report` shows for it, so progress is current, not as
    /// of the last save.
    running: Arc<Mutex<Option<ScavengeReport>>>,
    /// The report of the scavenge started last, once it ended (read from
    /// the store at open): what `latest` shows when none is running, so a
    /// status page needs no scan of every report.
    last: Arc<Mutex<Option<ScavengeReport>>>,
    /// The task of the last scavenge started. The task holds the store's
    /// files open (through `db`), so closing the store waits for it: a
    /// restart in the same process must not find the files still locked.
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Exports reading the store now: no scavenge starts while any does
    /// (see [`Scavenger::hold`]). Changed under the `running` lock.
    holds: Arc<AtomicUsize>,
}

/// An export's hold on scavenges; released when dropped.
struct Hold(Arc<AtomicUsize>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often a running scavenge saves its report (so that a kill leaves a
/// recent one; while it runs, `report` shows the live one).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Scavenger {
    /// The scavenger of the store in `path`. Marks the scavenges that were
    /// running when the server last stopped as interrupted.
    pub(super) fn new(
        db: &sled::Db,
        cell: DbCell,
        path: PathBuf,
        commands: mpsc::Sender<Command>,
    ) -> Result<Self, StoreError> {
        let last = Self::mark_interrupted(db)?;
        Ok(Self {
            db: cell,
            path,
            commands,
            running: Arc::default(),
            last: Arc::new(Mutex::new(last)),
            task: Arc::default(),
            holds: Arc::default(),
        })
    }

    /// Marks scavenges that were running when the server last stopped as
    /// interrupted (a few small records, read once at open); answers the
    /// one started last.
    fn mark_interrupted(db: &sled::Db) -> Result<Option<ScavengeReport>, StoreError> {
        let mut last: Option<ScavengeReport> = None;
        for item in db.scan_prefix([keys::SCAVENGE]) {
            let (key, value) = item?;
            if let Ok(mut report) = serde_json::from_slice::<ScavengeReport>(&value) {
                if report.status == ScavengeStatus::Running {
                    report.status = ScavengeStatus::Interrupted;
                    db.insert(key, encode(&report))?;
                }
                if last.as_ref().is_none_or(|newest| report.started_micros > newest.started_micros) {
                    last = Some(report);
                }
            }
        }
        Ok(last)
    }

    /// The running scavenge's live report, else the last one's.
    pub fn latest(&self) -> Option<ScavengeReport> {
        if let Some(running) = self.lock_running().as_ref() {
            return Some(running.clone());
        }
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Keeps scavenges from starting until the hold is dropped, for an
    /// export: it reads entries that a scavenge would remove. Refused
    /// while a scavenge runs.
    pub fn hold(&self) -> Result<ScavengeHold, StoreError> {
        let running = self.lock_running();
        if let Some(report) = &*running {
            return Err(StoreError::Busy(format!(
                "scavenge {} is running; export or back up once it has finished",
                report.scavenge_id
            )));
        }
        self.holds.fetch_add(1, Ordering::AcqRel);
        Ok(ScavengeHold(Some(Box::new(Hold(Arc::clone(&self.holds))))))
    }

    pub fn start(&self) -> Result<ScavengeStarted, StoreError> {
        let mut running = self.lock_running();
        if let Some(report) = &*running {
            return Ok(ScavengeStarted::AlreadyRunning(report.scavenge_id));
        }
        if self.holds.load(Ordering::Acquire) > 0 {
            return Err(StoreError::Busy(
                "an export or backup is reading the store; scavenge once it has finished".into(),
            ));
        }
        let id = Uuid::new_v4();
        let report = ScavengeReport::starting(id, directory_bytes(&self.path));
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
            let command = Command::Scavenge { cursor: cursor.clone(), reply };
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
        report.finished_micros = Some(now_micros());
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
        // IMPORTANT: `last` before `running` is emptied, so `latest` never
        // misses the report in between.
        *self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
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
            self.commands.send(Command::Compact { reply }).await.map_err(|_| StoreError::Unavailable)?;
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
