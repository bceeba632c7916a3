//! The reference store: every rule of the [`Store`] contract, written as
//! plainly as it can be, in memory.
//!
//! It exists for tests. The contract suite (`tests/store_contract.rs`) runs
//! against it and against every real backend, and a differential test
//! replays one random history on it and on sled and demands the same
//! answers; so where a backend's optimisations (group commit, runs of
//! records, id filters) leave doubt about what the contract is, this file
//! is the answer. It is also a store for tests that need one without files.
//!
//! One `std::sync::Mutex` guards everything; each operation takes it once,
//! does all its work and releases it, never across an `.await`. A commit is
//! one operation, so it is atomic and the single writer comes for free.
//!
//! What it does not promise: durability. Nothing survives the process,
//! whatever a [`Durability`](super::Durability) mode says. Nor is it built
//! for size or speed: every read copies what it returns under the lock.

mod read;
mod transfer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use uuid::Uuid;

use super::projections::Projections;
use super::retention::{self, now_micros};
use super::rules::{self, Part, Parts};
use super::{
    AllRead, AllSlice, Append, AppendOutcome, ExpectedVersion, ExportSnapshot, Head, ImportStep, Notifier,
    ReadEvent, RecordedEvent, ScavengeReport, ScavengeStarted, ScavengeStatus, SpentId, Store, StoreError,
    StoredEntry, StreamRead, StreamSettings, StreamSlice, StreamState, StreamView,
};

/// How many positions one `$all` read examines at most.
const MAX_ALL_SCAN: u64 = rules::MAX_ALL_SCAN;

/// The store in memory. See the module documentation.
#[derive(Debug)]
pub struct MemoryStore {
    /// Everything the store holds.
    data: Mutex<Data>,
    notifier: Notifier,
    /// The system projections every append is linked into.
    projections: Projections,
}

#[derive(Debug, Default)]
struct Data {
    /// Every stream ever written, deleted or described by metadata.
    streams: HashMap<String, Stream>,
    /// The log: by global position, the stream and number of the event
    /// there. `None` once a scavenge removed it.
    log: Vec<Option<(Arc<str>, u64)>>,
    /// Every event id ever written, by stream, with its number there: ids
    /// are unique per stream, and spent forever, even after a delete or a
    /// scavenge.
    ids: HashMap<(Uuid, String), u64>,
    /// The sequence number of the last commit.
    commit_seq: u64,
    /// The creation time of the newest event: times never go backwards
    /// along the log, even if the clock does, so `$maxAge` can
    /// binary-search a stream by time.
    last_created_micros: i64,
    /// Every scavenge's report.
    scavenges: HashMap<Uuid, ScavengeReport>,
    /// Closed: writes are refused.
    closed: bool,
    /// An import was begun (see [`Store::import`]).
    importing: bool,
}

#[derive(Debug, Default)]
struct Stream {
    state: StreamState,
    /// By event number; `None` once a scavenge removed it. Always
    /// `state.next_number` long.
    entries: Vec<Option<Entry>>,
}

/// What is stored as one event of a stream.
#[derive(Debug, Clone)]
enum Entry {
    Event(RecordedEvent),
    /// A system stream's link to event `number` of `stream`, at `position`.
    Link {
        position: u64,
        created_micros: i64,
        number: u64,
        stream: Arc<str>,
    },
}

impl Entry {
    fn created_micros(&self) -> i64 {
        match self {
            Self::Event(event) => event.created_micros,
            Self::Link { created_micros, .. } => *created_micros,
        }
    }
}

impl Stream {
    fn entry(&self, number: u64) -> Option<&Entry> {
        usize::try_from(number).ok().and_then(|index| self.entries.get(index)).and_then(Option::as_ref)
    }

    /// The lowest number reads can see, by the shared rule.
    fn first_visible(&self, now_micros: i64) -> Result<u64, StoreError> {
        retention::first_visible(&self.state, now_micros, |number| {
            Ok(self.entry(number).map(Entry::created_micros))
        })
    }

    fn push(&mut self, entry: Entry) {
        self.entries.push(Some(entry));
        self.state.next_number += 1;
    }
}

impl MemoryStore {
    /// An empty store maintaining `projections`.
    pub fn new(projections: Projections) -> Self {
        Self { data: Mutex::default(), notifier: Notifier::new(Head::default()), projections }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        // A panic while the lock was held may have left a commit half done;
        // refuse to guess.
        self.data.lock().map_err(|_| StoreError::Unavailable)
    }

    /// Ends a commit that wrote something: the new head is what reads see
    /// before the caller is answered, and the waiters of every stream it
    /// touched are woken.
    ///
    /// IMPORTANT: called with the lock held, so that heads are published in
    /// commit order (a later head published first would move the watched
    /// head backwards). Waking only schedules the waiters; none runs here.
    fn commit(&self, data: &mut Data, touched: &HashSet<String>) {
        data.commit_seq += 1;
        let head = Head { next_position: data.log.len() as u64, commit_seq: data.commit_seq };
        self.notifier.advance(head);
        self.notifier.publish(head, touched.iter().map(String::as_str));
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Projections::default())
    }
}

impl Data {
    /// A stream's state; the default (nothing written) for a stream never seen.
    fn state(&self, stream: &str) -> StreamState {
        self.streams.get(stream).map(|s| s.state.clone()).unwrap_or_default()
    }

    fn append(
        &mut self,
        projections: Projections,
        append: &Append,
        touched: &mut HashSet<String>,
    ) -> Result<AppendOutcome, StoreError> {
        match self.check(append)? {
            Part::Repeat(outcome) => Ok(outcome),
            Part::Write(settings) => Ok(self.write(projections, append, settings, touched)),
        }
    }

    /// Every part or none (see [`rules::decide_parts`]); each part's
    /// checks depend on its own stream only, so all are checked first.
    fn append_all(
        &mut self,
        projections: Projections,
        appends: &[Append],
        touched: &mut HashSet<String>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        rules::check_parts(appends)?;
        let parts = appends.iter().map(|append| self.check(append)).collect();
        match rules::decide_parts(appends, parts)? {
            Parts::Repeat(outcomes) => Ok(outcomes),
            Parts::PartlyRepeated(indexes) => {
                Err(rules::partly_repeated(appends, &indexes, |stream| Ok(self.state(stream))))
            }
            Parts::Write(settings) => Ok(appends
                .iter()
                .zip(settings)
                .map(|(append, settings)| self.write(projections, append, settings, touched))
                .collect()),
        }
    }

    /// Every check of an append (see [`rules::check_append`]).
    fn check(&self, append: &Append) -> Result<Part<rules::SetsMetadata>, StoreError> {
        rules::check_append(
            append,
            |stream| Ok(self.state(stream)),
            || {
                let stream = append.stream.clone();
                Ok(append
                    .events
                    .iter()
                    .map(|event| self.ids.get(&(event.id, stream.clone())).copied())
                    .collect())
            },
        )
    }

    /// Writes a checked append; nothing here fails.
    fn write(
        &mut self,
        projections: Projections,
        append: &Append,
        settings: Option<(String, StreamSettings)>,
        touched: &mut HashSet<String>,
    ) -> AppendOutcome {
        let state = self.state(&append.stream);
        let created_micros = now_micros().max(self.last_created_micros);
        self.last_created_micros = created_micros;
        let name: Arc<str> = Arc::from(append.stream.as_str());
        let first_number = state.next_number;
        let first_position = self.log.len() as u64;
        let is_new_stream = state.next_number == 0;
        for event in &append.events {
            let position = self.log.len() as u64;
            let stream = self.streams.entry(append.stream.clone()).or_default();
            let number = stream.state.next_number;
            stream.push(Entry::Event(RecordedEvent {
                stream: Arc::clone(&name),
                number,
                position,
                id: event.id,
                event_type: Arc::from(event.event_type.as_str()),
                created_micros,
                is_json: event.is_json,
                metadata_is_json: event.metadata_is_json,
                data: event.data.clone(),
                metadata: event.metadata.clone(),
            }));
            self.log.push(Some((Arc::clone(&name), number)));
            self.ids.insert((event.id, append.stream.clone()), number);
            let creates_stream = is_new_stream && number == 0;
            for link in
                projections.links(&append.stream, &event.event_type, creates_stream).into_iter().flatten()
            {
                // A link neither stops at its system stream's tombstone nor
                // undoes its soft delete, as in the sled store (there,
                // `Staging::link_all`): the stream goes on numbering unseen.
                let system = self.streams.entry(link.name()).or_default();
                if system.state.next_number == 0 {
                    system.state.created_position = position;
                }
                system.push(Entry::Link { position, created_micros, number, stream: Arc::clone(&name) });
                touched.insert(link.name());
            }
        }
        let stream = self.streams.entry(append.stream.clone()).or_default();
        if is_new_stream {
            stream.state.created_position = first_position;
        }
        stream.state.soft_deleted = false;
        let last_number = stream.state.next_number - 1;
        touched.insert(append.stream.clone());
        if let Some((described, mut settings)) = settings {
            settings.metadata_number = Some(last_number);
            self.streams.entry(described.clone()).or_default().state.settings = settings;
            touched.insert(described);
        }
        AppendOutcome { first_number, last_number, position: Some(first_position), idempotent: false }
    }

    fn delete(&mut self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let state = rules::deleted(self.state(stream), expected, hard)?;
        self.streams.entry(stream.to_owned()).or_default().state = state;
        Ok(())
    }

    /// Removes every event and link no read can see any more, keeping
    /// stream states (tombstones, numbering) and event ids (idempotency).
    fn scavenge(&mut self, report: &mut ScavengeReport) -> Result<(), StoreError> {
        let now = now_micros();
        for stream in self.streams.values_mut() {
            report.streams_scanned += 1;
            let first_visible = usize::try_from(stream.first_visible(now)?).unwrap_or(usize::MAX);
            for slot in stream.entries.iter_mut().take(first_visible) {
                match slot.take() {
                    Some(Entry::Event(event)) => {
                        if let Some(logged) =
                            usize::try_from(event.position).ok().and_then(|i| self.log.get_mut(i))
                        {
                            *logged = None;
                        }
                        report.events_removed += 1;
                    }
                    Some(Entry::Link { .. }) => report.links_removed += 1,
                    None => {}
                }
            }
            report.keys_copied += stream.entries.iter().filter(|slot| slot.is_some()).count() as u64;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        let mut data = self.lock()?;
        if data.closed {
            return Err(StoreError::Unavailable);
        }
        let mut touched = HashSet::new();
        let outcome = data.append(self.projections, &append, &mut touched)?;
        if !outcome.idempotent {
            self.commit(&mut data, &touched);
        }
        Ok(outcome)
    }

    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut data = self.lock()?;
        if data.closed {
            return Err(StoreError::Unavailable);
        }
        let mut touched = HashSet::new();
        let outcomes = data.append_all(self.projections, &appends, &mut touched)?;
        if outcomes.iter().any(|outcome| !outcome.idempotent) {
            self.commit(&mut data, &touched);
        }
        Ok(outcomes)
    }

    async fn read_stream(&self, read: StreamRead) -> Result<StreamSlice, StoreError> {
        self.lock()?.read_stream(&read)
    }

    async fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError> {
        self.lock()?.read_all(read)
    }

    async fn read_event(
        &self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        self.lock()?.read_event(stream, number, resolve_links)
    }

    async fn delete(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let mut data = self.lock()?;
        if data.closed {
            return Err(StoreError::Unavailable);
        }
        data.delete(stream, expected, hard)?;
        self.commit(&mut data, &HashSet::from([stream.to_owned()]));
        Ok(())
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        Ok(self.lock()?.streams.get(stream).map(|found| found.state.clone()))
    }

    /// A scan of every stream: the memory store holds test-sized data.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamState)>, StoreError> {
        let data = self.lock()?;
        let mut found: Vec<_> = (data.streams.iter())
            .filter(|(name, _)| name.starts_with(prefix) && after.is_none_or(|after| name.as_str() > after))
            .map(|(name, stream)| (name.clone(), stream.state.clone()))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.truncate(limit);
        Ok(found)
    }

    /// Scavenges at once, under the lock: the report it records is already
    /// complete. Moves no head and wakes nobody, since no read changes.
    async fn start_scavenge(&self) -> Result<ScavengeStarted, StoreError> {
        let mut data = self.lock()?;
        let id = Uuid::new_v4();
        // Nothing is on disk; `keys_copied` counts the events and links kept.
        let mut report = ScavengeReport { bytes_after: Some(0), ..ScavengeReport::starting(id, 0) };
        // As the sled store does: a scavenge asked of a closed store starts,
        // removes nothing and is recorded as interrupted.
        report.status = if data.closed { ScavengeStatus::Interrupted } else { ScavengeStatus::Completed };
        let scavenged = if data.closed { Ok(()) } else { data.scavenge(&mut report) };
        if let Err(error) = scavenged {
            report.status = ScavengeStatus::Failed;
            report.error = Some(error.to_string());
        }
        report.finished_micros = Some(now_micros());
        data.scavenges.insert(id, report);
        Ok(ScavengeStarted::Started(id))
    }

    async fn scavenge_report(&self, id: Uuid) -> Result<Option<ScavengeReport>, StoreError> {
        Ok(self.lock()?.scavenges.get(&id).cloned())
    }

    fn latest_scavenge(&self) -> Option<ScavengeReport> {
        let data = self.lock().ok()?;
        data.scavenges.values().max_by_key(|report| report.started_micros).cloned()
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn export_entries(
        &self,
        stream: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        self.lock()?.export_entries(stream, from, below, limit)
    }

    async fn export_spent_ids(&self, snapshot: &ExportSnapshot) -> Result<Vec<SpentId>, StoreError> {
        self.lock()?.export_spent_ids(snapshot)
    }

    /// Under the lock, like every write; the head moves at the finish.
    async fn import(&self, step: ImportStep) -> Result<(), StoreError> {
        let mut data = self.lock()?;
        if data.closed {
            return Err(StoreError::Unavailable);
        }
        let finish = matches!(step, ImportStep::Finish { .. });
        data.import(step)?;
        if finish {
            self.commit(&mut data, &HashSet::new());
        }
        Ok(())
    }

    fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Refuses writes from now on; reads still answer. Nothing to flush.
    async fn close(&self) -> Result<(), StoreError> {
        self.lock()?.closed = true;
        Ok(())
    }
}
