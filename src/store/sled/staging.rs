//! Staging: the rules of every write, checked and applied against one
//! batch's overlay. The writer builds one [`Staging`] per batch; each
//! request is validated against the committed state plus the batch so far,
//! and only a request that passes every check stages anything.

mod parts;
mod runs;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use self::runs::{MAX_LINK_RUN, MAX_LOG_RUN, PendingLinks, PendingRecords};
use super::codec::{self, EventFields};
use super::entries::{LogSpan, load_state};
use super::id_index::{IdIndex, IdOwners};
use super::keys;
use super::undo::Undo;
use crate::store::projections::{Projection, Projections};
use crate::store::recent_states::RecentStates;
use crate::store::rules;
use crate::store::{
    Append, AppendOutcome, ExpectedVersion, StoreError, StreamSettings, StreamState, metadata,
};

/// The writes of one batch, and the state they produce, before they commit.
/// Every validation reads through this overlay, so requests in the same
/// batch see each other's effects.
pub(crate) struct Staging<'a> {
    db: &'a sled::Db,
    /// Committed stream states the writer remembers.
    cache: &'a StateCache,
    /// Which number each committed event id was written as, per stream.
    id_index: &'a IdIndex,
    /// The projections maintained live; a build may activate one mid-batch.
    pub(super) projections: Projections,
    batch: sled::Batch,
    writes: usize,
    /// Streams this batch changed, with their new state.
    states: HashMap<String, StreamState>,
    /// Streams whose state this batch removes.
    removed: HashSet<String>,
    /// Event ids this batch wrote, with their owners.
    ids: IdOwners,
    /// Links this batch adds, by system stream, written as runs at the end.
    links: HashMap<String, PendingLinks>,
    /// Records this batch adds, by stream, written as runs at the end.
    records: HashMap<String, PendingRecords>,
    /// The log entry being extended: positions one append wrote.
    log: Option<LogSpan>,
    /// Bytes of keys and values staged so far.
    bytes: u64,
    /// What the batch overwrites, to take it back if sled applies it only
    /// in part (see `undo`); stream states and counters are added at the end.
    undo: Undo,
    /// Keys written by [`Self::insert`], whose prior values go in `undo`.
    inserted: Vec<sled::IVec>,
    /// The head before the batch.
    first_position: u64,
    pub(crate) next_position: u64,
    /// The sequence number this batch will have.
    commit_seq: u64,
    created_micros: i64,
}

impl<'a> Staging<'a> {
    pub(super) fn new(
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
            ids: IdOwners::default(),
            links: HashMap::new(),
            records: HashMap::new(),
            log: None,
            bytes: 0,
            undo: Undo::default(),
            inserted: Vec::new(),
            first_position: next_position,
            next_position,
            created_micros,
        }
    }

    pub(super) fn has_writes(&self) -> bool {
        self.writes > 0
    }

    pub(crate) fn db(&self) -> &sled::Db {
        self.db
    }

    /// Adds a raw write to the batch (maintenance work).
    pub(crate) fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let key = key.into();
        self.inserted.push(key.clone());
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

    /// Removes a key that is still read, such as a log entry a scavenge
    /// rewrites: its value, `held`, comes back if the batch is taken back.
    pub(crate) fn remove_restorable(&mut self, key: sled::IVec, held: &[u8]) {
        self.undo.restore(key.to_vec(), Some(held));
        self.remove(key);
    }

    /// Starts maintaining `projection` live, from the next append on.
    pub(crate) fn activate(&mut self, projection: Projection) {
        self.projections.set(projection, true);
    }

    pub(super) fn touched_streams(&self) -> Vec<String> {
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
        Ok(load_state(self.db, stream)?.map(|(state, _)| state).unwrap_or_default())
    }

    /// Records a stream's new state; written once when the batch finishes.
    pub(crate) fn set_state(&mut self, stream: &str, state: StreamState) {
        self.removed.remove(stream);
        self.states.insert(stream.to_owned(), state);
        self.writes += 1;
    }

    /// The number `id` was written as in `stream`, by this batch or before.
    fn id_number_in(&self, id: &Uuid, stream: &str) -> Result<Option<u64>, StoreError> {
        if let Some(number) = self.ids.number_in(id, stream) {
            return Ok(Some(number));
        }
        self.id_index.number_in(self.db, id, stream)
    }

    /// Appends `append` to the batch, or fails and stages nothing of it: a
    /// pure [`Self::plan_append`] checks everything and reads every state
    /// the append touches, then an infallible [`Self::apply_append`] stages
    /// the plan.
    pub(super) fn append(&mut self, append: &Append) -> Result<AppendOutcome, StoreError> {
        match self.plan_append(append)? {
            Planned::Retry(outcome) => Ok(outcome),
            Planned::Write(plan) => Ok(self.apply_append(append, plan)),
        }
    }

    /// Every check of an append and every state it will change, read
    /// through the batch's overlay. Stages nothing, so whatever fails here
    /// (a rule, a read, a decode) leaves the batch as it was.
    fn plan_append(&self, append: &Append) -> Result<Planned, StoreError> {
        rules::check_request(append)?;

        let state = self.state(&append.stream)?;
        if state.tombstoned {
            return Err(StoreError::StreamDeleted);
        }
        rules::check_access(append, &state, |stream| self.state(stream))?;
        let current = rules::current_version(&state);

        if let Some(outcome) = self.retry_outcome(append, current)? {
            return Ok(Planned::Retry(outcome));
        }

        rules::check_expected(append.expected, current)?;

        let described = match (metadata::described_stream(&append.stream), append.events.last()) {
            (Some(described), Some(event)) => {
                let settings =
                    metadata::parse(&event.data).map_err(|error| StoreError::Invalid(error.to_string()))?;
                Some((described.to_owned(), self.state(described)?, settings))
            }
            _ => None,
        };

        // The append's links, per system stream in the order first met:
        // one state per system stream, not one per link (an append's events
        // mostly share their category and type).
        let mut links: Vec<PlannedLinks> = Vec::new();
        for (index, event) in append.events.iter().enumerate() {
            let creates_stream = state.next_number == 0 && index == 0;
            for link in self
                .projections
                .links(&append.stream, &event.event_type, creates_stream)
                .into_iter()
                .flatten()
            {
                match links.iter_mut().find(|planned| link.is(&planned.stream)) {
                    Some(planned) => planned.events.push(index),
                    None => {
                        let stream = link.name();
                        let state = self.state(&stream)?;
                        links.push(PlannedLinks { stream, state, events: vec![index] });
                    }
                }
            }
        }
        Ok(Planned::Write(AppendPlan { state, described, links }))
    }

    /// Stages a planned append: its records, log entries, ids, links and
    /// states. Nothing here can fail.
    fn apply_append(&mut self, append: &Append, plan: AppendPlan) -> AppendOutcome {
        let AppendPlan { mut state, described, links } = plan;
        let first_number = state.next_number;
        let first_position = self.next_position;
        let is_new_stream = state.next_number == 0;
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
        }
        for PlannedLinks { stream, state: link_state, events } in links {
            let targets: Vec<LinkTarget<'_>> = events
                .into_iter()
                .map(|index| LinkTarget {
                    position: first_position + index as u64,
                    created_micros: self.created_micros,
                    number: first_number + index as u64,
                    stream: &append.stream,
                })
                .collect();
            self.stage_links(&stream, link_state, &targets);
        }
        if is_new_stream {
            state.created_position = first_position;
        }
        state.soft_deleted = false;
        let last_number = state.next_number - 1;
        self.set_state(&append.stream, state);

        if let Some((described, mut target, mut settings)) = described {
            settings.metadata_number = Some(last_number);
            target.settings = settings;
            self.set_state(&described, target);
        }

        AppendOutcome { first_number, last_number, position: Some(first_position), idempotent: false }
    }

    /// Decides whether `append` repeats an earlier write to its stream
    /// (see [`rules::retry_outcome`]). Ids written to other streams play no
    /// part: ids are unique per stream.
    fn retry_outcome(&self, append: &Append, current: i64) -> Result<Option<AppendOutcome>, StoreError> {
        let ids = || append.events.iter().map(|event| &event.id);
        if !ids().any(|id| self.ids.contains(id)) && !self.id_index.may_hold_any(ids()) {
            return Ok(None);
        }
        let numbers = ids().map(|id| self.id_number_in(id, &append.stream)).collect::<Result<Vec<_>, _>>()?;
        rules::retry_outcome(append, current, &numbers)
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

    /// Stages links to `targets`, in order, to a system stream whose state
    /// (read beforehand, so that staging cannot fail) is `state`. The links
    /// a batch adds to one stream are written together, as runs.
    pub(crate) fn stage_links(
        &mut self,
        system_stream: &str,
        mut state: StreamState,
        targets: &[LinkTarget<'_>],
    ) {
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
    }

    pub(super) fn delete(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<(), StoreError> {
        let state = rules::deleted(self.state(stream)?, expected, hard)?;
        self.set_state(stream, state);
        Ok(())
    }

    /// Writes the final stream states and returns the batch to apply, with
    /// its undo if `undo` asks for it (see `space::needs_undo`). Fails only
    /// if a committed state cannot be read back for the undo.
    pub(super) fn finish(mut self, undo: bool) -> Result<Finished, StoreError> {
        if undo {
            self.stage_undo()?;
        }
        for (stream, run) in std::mem::take(&mut self.links) {
            self.put(keys::event(&stream, run.first), run.encode());
        }
        for (stream, run) in std::mem::take(&mut self.records) {
            self.put(keys::event(&stream, run.first), codec::encode_records(run.records));
        }
        if let Some(span) = self.log.take() {
            self.write_log(&span);
        }
        let states = std::mem::take(&mut self.states);
        for (stream, state) in &states {
            self.put(keys::stream(stream), codec::encode_state(state, self.commit_seq));
        }
        self.put(keys::counter(keys::COMMIT_SEQ), &keys::u64_value(self.commit_seq)[..]);
        self.put(keys::counter(keys::NEXT_POSITION), &keys::u64_value(self.next_position)[..]);
        Ok(Finished {
            batch: self.batch,
            bytes: self.bytes,
            states,
            removed: self.removed,
            ids: self.ids,
            undo: self.undo,
        })
    }

    /// What the batch overwrites: the counters, every state it changes
    /// (and the numbers past each, which it fills), the log past the head,
    /// and the keys [`Self::insert`] wrote.
    fn stage_undo(&mut self) -> Result<(), StoreError> {
        let committed = self.commit_seq - 1;
        let undo = &mut self.undo;
        // An absent counter reads as 0, as a new store's do.
        for (counter, held) in [(keys::COMMIT_SEQ, committed), (keys::NEXT_POSITION, self.first_position)] {
            undo.restore(keys::counter(counter), (held > 0).then_some(&keys::u64_value(held)[..]));
        }
        if self.next_position > self.first_position {
            undo.clear(keys::log(self.first_position), [keys::LOG + 1]);
        }
        for stream in self.states.keys() {
            let held = match self.cache.get(stream) {
                Some(state) => Some(state.clone()),
                None => load_state(self.db, stream)?.map(|(state, _)| state),
            };
            undo.stream(stream, held.as_ref(), committed);
        }
        for key in &self.inserted {
            undo.restore(key.to_vec(), self.db.get(key)?.as_deref());
        }
        Ok(())
    }
}

/// What [`Staging::plan_append`] decided.
// One lives on the stack for a moment per append and is never stored or
// moved in bulk: boxing the plan would only add an allocation per append.
#[allow(clippy::large_enum_variant)]
enum Planned {
    /// Every id was written before, by this very request: nothing to write.
    Retry(AppendOutcome),
    Write(AppendPlan),
}

/// An append that passed every check, with every state it changes.
struct AppendPlan {
    /// The stream's state before the append.
    state: StreamState,
    /// For a metadata append: the described stream, its state and its new
    /// settings.
    described: Option<(String, StreamState, StreamSettings)>,
    /// The system streams the append links into, in the order first met.
    links: Vec<PlannedLinks>,
}

/// The links an append adds to one system stream.
struct PlannedLinks {
    stream: String,
    /// The system stream's state before the append.
    state: StreamState,
    /// The indexes, in the append, of the events linked.
    events: Vec<usize>,
}

/// A batch ready to apply, and the stream states it leaves.
pub(super) struct Finished {
    pub batch: sled::Batch,
    /// Bytes of keys and values in `batch`.
    pub bytes: u64,
    pub states: HashMap<String, StreamState>,
    pub removed: HashSet<String>,
    /// The event ids the batch adds, for the id index.
    pub ids: IdOwners,
    /// What the batch overwrites; the id index adds its own.
    pub undo: Undo,
}

/// The committed states of the streams the writer touched lately, so an
/// append need not read its stream's state (and its system streams')
/// from sled. Only the writer changes states, and it updates this after
/// each commit, so an entry is never stale. Bounded: emptied when full.
#[derive(Default)]
pub(super) struct StateCache {
    states: HashMap<String, StreamState>,
}

/// How many stream states [`StateCache`] holds at most (a few MB).
const STATE_CACHE_ENTRIES: usize = 65_536;

impl StateCache {
    fn get(&self, stream: &str) -> Option<&StreamState> {
        self.states.get(stream)
    }

    /// Takes in what a committed batch wrote and removed, and has readers
    /// forget what they kept of those streams (before any of the batch's
    /// requests is answered: see `RecentStates`).
    pub(super) fn committed(
        &mut self,
        states: HashMap<String, StreamState>,
        removed: HashSet<String>,
        recent: &RecentStates,
    ) {
        recent.forget(states.keys().chain(&removed).map(String::as_str));
        for stream in removed {
            self.states.remove(&stream);
        }
        if self.states.len() + states.len() > STATE_CACHE_ENTRIES {
            self.states.clear();
        }
        self.states.extend(states);
    }

    /// Forgets every state, here and what readers kept: what is on disk is
    /// unknown after a failed commit, and each import step writes states
    /// neither knows of.
    pub(super) fn forget_all(&mut self, recent: &RecentStates) {
        self.states.clear();
        recent.forget_all();
    }
}

/// The event a system-stream link points at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkTarget<'a> {
    pub position: u64,
    pub created_micros: i64,
    pub number: u64,
    pub stream: &'a str,
}

#[cfg(test)]
mod tests;
