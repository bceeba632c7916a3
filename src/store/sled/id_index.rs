//! The permanent event-id index: which event number each id was written as
//! in each stream, so that a retried append is recognised however late it
//! comes. Ids are unique per stream, as in EventStore: one command's id is
//! often the id of the event it causes in each of several streams, so an id
//! may have an entry per stream (see [`IdOwners`]).
//!
//! One sled key per id made every event cost a sled insert of its own, and
//! sled's cost is per key: an insert copies the leaf it lands in, and a
//! random id (UUIDv4, what most clients send) lands in a different, cold
//! leaf each time. With a 20-event append writing 20 id keys beside its 7
//! others, the id keys were two thirds of the writer's work (the figures
//! are in `bench/HISTORY.md`). So the index is kept the way a log-structured tree keeps its keys,
//! in sorted runs that are written in bulk:
//!
//! - **Segments.** Each commit writes the ids it added as one key, an id
//!   table under the commit's sequence number, in the commit's own batch.
//!   The writer also keeps them in memory (`recent`), and at start-up reads
//!   the live segments back: at most [`Limits::convert_at`] ids and one
//!   commit's, never the log.
//! - **Runs.** Once the segments hold `convert_at` ids, they are sorted into
//!   a new run: chunks of [`Limits::chunk`] ids, each an id table keyed by
//!   run and first id, so that finding an id in a run is one range lookup.
//! - **Merges.** Like the carries of a base-8 counter, eight adjacent runs
//!   of about one size are merged into one, a bounded number of ids per
//!   commit, so that each id is rewritten about log8(ids / convert_at)
//!   times and there are at most seven runs of each size to look in.
//! - **The manifest** (one counter key) lists the live runs, oldest first,
//!   and the runs and segments that are garbage, to be removed a few
//!   hundred keys per commit.
//!
//! Under load each commit does a share of the merging and removing, in
//! proportion to the ids it adds; when the load stops, the writer does what
//! is left in steps of its own while it has nothing else to do
//! ([`IdIndex::upkeep`]).
//!
//! Every change is staged into a commit's batch, so it is as atomic and as
//! durable as the appends beside it; a merge interrupted by a crash leaves
//! chunks of a run the manifest does not list, which become garbage.
//!
//! IMPORTANT: an id only ever moves to a greater key (segment → run, run →
//! the merged run, which is numbered after every run before it), and the
//! keys it leaves are removed only in a later commit than the one that wrote
//! its new key. A forward scan of the keyspaces, in key order, therefore
//! meets every id the store held when it began, even while merges go on
//! (see `IdFilter::fill`, which depends on it).
//!
//! Stores written before this index (layout 4 and earlier) kept one key per
//! id under [`keys::EVENT_ID`]; those keys are still read, never written.
//! Layout 5 held each id once; its tables are valid tables of layout 6,
//! which may hold an id several times.

mod merge;
mod owners;

use std::sync::Arc;

use uuid::Uuid;

use self::merge::Merge;
pub(crate) use self::owners::IdOwners;
use super::id_filter::IdFilter;
use super::undo::Undo;
use super::{StoreError, codec, keys};

/// How the index is shaped; fixed in production, small in tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The ids the segments gather before they become a run.
    pub convert_at: usize,
    /// The ids per chunk of a run.
    pub chunk: usize,
    /// The fewest ids a commit merges, while a merge is under way; a
    /// commit of many ids merges [`MERGE_PER_ID`] times as many.
    pub merge_step: usize,
    /// The most garbage keys one commit removes.
    pub garbage_step: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Sorting 32,768 ids into a run took one commit 3 ms, enough to
        // show in the p99 latency of appends; 8,192 take under 1 ms and are
        // about 0.5 MB in memory. 128 ids make a chunk of about 4 KB, a few
        // of which fit a sled leaf.
        Self { convert_at: 8 * 1024, chunk: 128, merge_step: 4096, garbage_step: 256 }
    }
}

/// Ids merged per id a commit adds, while a merge is under way. Each id is
/// merged about log8(ids / convert_at) times in all, so merges keep up as
/// long as that stays below this.
const MERGE_PER_ID: usize = 16;

/// How many runs one merge takes. Every id a merge rewrites costs sled
/// about three times its bytes (leaf rewrites), and the bytes a store's
/// files grow by cost CPU: eight at a time rewrite each id a third fewer
/// times than four did (measured: 2.0 instead of 2.9 KiB written per event
/// on a store of 2.4 million random ids). A lookup that the id filter lets
/// through (a retry, or one new id in a few hundred) looks in more runs.
const FAN_IN: usize = 8;

/// How many commits' worth of upkeep one idle step does.
const UPKEEP_STEPS: usize = 4;

/// Where an id was written: its stream and event number. The writer names
/// an append's stream once for all its ids.
pub(crate) type Owner = (Arc<str>, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    id: u64,
    count: u64,
}

/// What the index consists of, as stored under [`keys::ID_INDEX`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    /// The number the next run gets; runs are numbered in order of creation.
    next_run: u64,
    /// The first live segment; those before it are garbage.
    segments_from: u64,
    /// The run a merge is writing, not yet live.
    merging: Option<u64>,
    /// The live runs, oldest first.
    runs: Vec<Run>,
    /// Runs whose chunks are still to be removed.
    garbage: Vec<u64>,
}

const MANIFEST_V1: u64 = 1;

impl Manifest {
    fn new() -> Self {
        Self { next_run: 1, segments_from: 0, merging: None, runs: Vec::new(), garbage: Vec::new() }
    }

    /// A sequence of big-endian u64s: version, next run, first live
    /// segment, the run being merged (0 for none), the count of runs and
    /// each run's number and size, the count of garbage runs and each.
    fn encode(&self) -> Vec<u8> {
        let mut words = vec![MANIFEST_V1, self.next_run, self.segments_from, self.merging.unwrap_or(0)];
        words.push(self.runs.len() as u64);
        words.extend(self.runs.iter().flat_map(|run| [run.id, run.count]));
        words.push(self.garbage.len() as u64);
        words.extend(&self.garbage);
        words.iter().flat_map(|word| word.to_be_bytes()).collect()
    }

    fn decode(value: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("the id index manifest is malformed".into());
        if value.len() % 8 != 0 {
            return Err(corrupt());
        }
        let mut words =
            value.chunks_exact(8).map(|word| u64::from_be_bytes(word.try_into().unwrap_or_default()));
        let mut next = || words.next().ok_or_else(corrupt);
        if next()? != MANIFEST_V1 {
            return Err(StoreError::Corrupt("the id index manifest has an unknown version".into()));
        }
        let (next_run, segments_from, merging) = (next()?, next()?, next()?);
        let mut runs = Vec::new();
        for _ in 0..next()? {
            runs.push(Run { id: next()?, count: next()? });
        }
        let mut garbage = Vec::new();
        for _ in 0..next()? {
            garbage.push(next()?);
        }
        Ok(Self { next_run, segments_from, merging: (merging != 0).then_some(merging), runs, garbage })
    }
}

/// The writer's handle on the index. Only the writer reads it (to tell a
/// retry from a new append) and only the writer changes it.
#[derive(Debug)]
pub(crate) struct IdIndex {
    manifest: Manifest,
    /// Whether the manifest changed since it was last staged.
    dirty: bool,
    /// The ids of the live segments.
    recent: IdOwners,
    /// Whether the store holds ids in the per-id layout of layout 4.
    legacy: bool,
    merge: Option<Merge>,
    /// Where garbage segments may start, while there may be some.
    segment_garbage: Option<u64>,
    /// Which ids the store certainly does not hold, so that looking a new
    /// id up rarely reaches the runs. Shared with the thread that fills it.
    filter: Arc<IdFilter>,
    limits: Limits,
    /// The manifest as stored (`None`: none is).
    stored: Option<Manifest>,
    /// What the last [`Self::stage`] or [`Self::upkeep`] overwrote (see
    /// `undo`), for the writer to take.
    undo: Undo,
}

impl IdIndex {
    /// Reads the manifest and the live segments. `filter` is to hold every
    /// id the store holds once filled; the index adds each id it stages.
    pub(crate) fn open(db: &sled::Db, filter: Arc<IdFilter>) -> Result<Self, StoreError> {
        Self::open_with(db, filter, Limits::default())
    }

    pub(crate) fn open_with(
        db: &sled::Db,
        filter: Arc<IdFilter>,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let stored = match db.get(keys::counter(keys::ID_INDEX))? {
            Some(value) => Some(Manifest::decode(&value)?),
            None => None,
        };
        let mut manifest = stored.clone().unwrap_or_else(Manifest::new);
        let mut dirty = false;
        if let Some(run) = manifest.merging.take() {
            // A merge the last process did not finish: its chunks so far
            // are removed, and the merge starts again when next due.
            manifest.garbage.push(run);
            dirty = true;
        }
        let mut recent = IdOwners::default();
        let from = keys::id_segment(manifest.segments_from).to_vec();
        for item in db.range(from..vec![keys::ID_SEGMENT + 1]) {
            let (_, value) = item?;
            for (id, owner) in decode_owners(&value)? {
                recent.insert(id, owner);
            }
        }
        let legacy = db.scan_prefix([keys::EVENT_ID]).next().transpose()?.is_some();
        Ok(Self {
            manifest,
            dirty,
            recent,
            legacy,
            merge: None,
            segment_garbage: Some(0),
            filter,
            limits,
            stored,
            undo: Undo::default(),
        })
    }

    /// False only when none of `ids` was written (nearly every append of
    /// new events, answered from memory).
    pub(crate) fn may_hold_any<'a>(&self, ids: impl IntoIterator<Item = &'a Uuid>) -> bool {
        self.filter.may_hold_any(ids)
    }

    /// The number `id` was written as in `stream`, if it was.
    pub(crate) fn number_in(
        &self,
        db: &sled::Db,
        id: &Uuid,
        stream: &str,
    ) -> Result<Option<u64>, StoreError> {
        if !self.filter.may_hold(id) {
            return Ok(None);
        }
        if let Some(number) = self.recent.number_in(id, stream) {
            return Ok(Some(number));
        }
        // An id is written to a stream once, so the first run that has it
        // for this stream is the only one.
        for run in self.manifest.runs.iter().rev() {
            let chunk = db
                .range(keys::id_run(run.id).to_vec()..=keys::id_run_chunk(run.id, id).to_vec())
                .next_back()
                .transpose()?;
            if let Some((_, value)) = chunk {
                if let Some(number) = codec::decode_id_table(&value)?.number_in(id, stream)? {
                    return Ok(Some(number));
                }
            }
        }
        if self.legacy {
            if let Some(value) = db.get(keys::event_id(id))? {
                let (owner, number) = codec::decode_event_ref(&value)?;
                return Ok((owner == stream).then_some(number));
            }
        }
        Ok(None)
    }

    /// Stages into `batch` the segment of commit `commit_seq`, holding
    /// `ids` (the ids it adds, with their owners), and a bounded share of
    /// the index's upkeep. Returns the bytes staged.
    ///
    /// The changes take effect in memory at once: the writer stops at the
    /// first batch that fails to commit, so nothing reads them otherwise.
    pub(crate) fn stage(
        &mut self,
        db: &sled::Db,
        commit_seq: u64,
        ids: &IdOwners,
        batch: &mut sled::Batch,
    ) -> Result<u64, StoreError> {
        let mut writes = Writes { batch, bytes: 0 };
        self.undo = Undo::default();
        let merge_budget = self.limits.merge_step.max(ids.len().saturating_mul(MERGE_PER_ID));
        // IMPORTANT: garbage goes first, so that keys that became garbage
        // in this commit are removed in a later one (see the module notes).
        self.collect_garbage(db, self.garbage_budget(merge_budget), &mut writes)?;
        // IMPORTANT: a run is merged only once it is committed: merges
        // read their inputs from sled, and a new run is only in the batch.
        let converted = self.recent.len() >= self.limits.convert_at;
        if converted {
            self.convert(commit_seq, &mut writes);
        }
        if !ids.is_empty() {
            self.undo.restore(keys::id_segment(commit_seq), None);
            writes.put(
                &keys::id_segment(commit_seq)[..],
                codec::encode_id_table(ids.iter().map(|(id, (stream, number))| (*id, &**stream, *number))),
            );
            self.filter.insert_all(ids.ids());
            self.recent.extend(ids);
        }
        if !converted {
            self.merge_step(db, merge_budget, &mut writes)?;
        }
        self.stage_manifest(&mut writes);
        Ok(writes.bytes)
    }

    /// What the last [`Self::stage`] or [`Self::upkeep`] overwrote.
    pub(crate) fn take_undo(&mut self) -> Undo {
        std::mem::take(&mut self.undo)
    }

    /// Whether merges or garbage are waiting for [`Self::upkeep`].
    pub(crate) fn has_upkeep(&self) -> bool {
        self.dirty
            || self.merge.is_some()
            || self.due_merge().is_some()
            || !self.manifest.garbage.is_empty()
            || self.segment_garbage.is_some()
    }

    /// Stages a step of upkeep alone, for a writer with nothing else to
    /// do: [`UPKEEP_STEPS`] commits' worth, so that an append arriving
    /// meanwhile waits a few milliseconds at most. Returns the bytes staged.
    pub(crate) fn upkeep(&mut self, db: &sled::Db, batch: &mut sled::Batch) -> Result<u64, StoreError> {
        let mut writes = Writes { batch, bytes: 0 };
        self.undo = Undo::default();
        let merge_budget = self.limits.merge_step * UPKEEP_STEPS;
        self.collect_garbage(db, self.garbage_budget(merge_budget), &mut writes)?;
        self.merge_step(db, merge_budget, &mut writes)?;
        self.stage_manifest(&mut writes);
        Ok(writes.bytes)
    }

    /// Garbage keys a step removes when it merges `merge_budget` ids: twice
    /// the chunks those ids fill, so that removal keeps up with merging.
    fn garbage_budget(&self, merge_budget: usize) -> usize {
        self.limits.garbage_step.max(2 * merge_budget / self.limits.chunk)
    }

    fn stage_manifest(&mut self, writes: &mut Writes<'_>) {
        if self.dirty {
            // Taken back, the manifest is as stored, and the runs numbered
            // since are chunks nothing lists (a merge's run is listed while
            // it is written, and dropped at open if unfinished).
            let held = self.stored.replace(self.manifest.clone());
            let free_run = held.as_ref().map_or_else(|| Manifest::new().next_run, |held| held.next_run);
            self.undo.restore(keys::counter(keys::ID_INDEX), held.map(|held| held.encode()).as_deref());
            self.undo.clear(keys::id_run(free_run), [keys::ID_RUN + 1]);
            writes.put(keys::counter(keys::ID_INDEX), self.manifest.encode());
            self.dirty = false;
        }
    }

    /// Sorts the ids of the live segments into a new run; this commit's
    /// segment is the first live one after it.
    fn convert(&mut self, commit_seq: u64, writes: &mut Writes<'_>) {
        let entries = self.recent.drain_sorted();
        let run = self.manifest.next_run;
        write_chunks(writes, run, &entries, self.limits.chunk);
        let old_from = std::mem::replace(&mut self.manifest.segments_from, commit_seq);
        self.segment_garbage = Some(self.segment_garbage.unwrap_or(old_from).min(old_from));
        self.manifest.next_run += 1;
        self.manifest.runs.push(Run { id: run, count: entries.len() as u64 });
        self.dirty = true;
        tracing::debug!(run, ids = entries.len(), runs = self.manifest.runs.len(), "id index sorted a run");
    }

    /// Merges up to `budget` ids, starting a merge if two runs are due.
    fn merge_step(
        &mut self,
        db: &sled::Db,
        budget: usize,
        writes: &mut Writes<'_>,
    ) -> Result<(), StoreError> {
        if self.merge.is_none() {
            let Some(inputs) = self.due_merge() else { return Ok(()) };
            let output = self.manifest.next_run;
            self.manifest.next_run += 1;
            self.manifest.merging = Some(output);
            self.dirty = true;
            self.merge = Some(Merge::new(inputs, output));
        }
        let Some(merge) = self.merge.as_mut() else { return Ok(()) };
        if !merge.step(db, budget, self.limits.chunk, writes)? {
            return Ok(());
        }
        let Some(Merge { inputs, output, written, .. }) = self.merge.take() else { return Ok(()) };
        // The inputs are adjacent: the output takes the place of the first.
        let runs = &mut self.manifest.runs;
        if let Some(first) = runs.iter().position(|run| run.id == inputs[0]) {
            runs[first] = Run { id: output, count: written };
        }
        runs.retain(|run| !inputs[1..].contains(&run.id));
        self.manifest.garbage.extend(inputs);
        self.manifest.merging = None;
        self.dirty = true;
        tracing::debug!(run = output, ids = written, runs = self.manifest.runs.len(), "id index merged runs");
        Ok(())
    }

    /// The newest [`FAN_IN`] adjacent runs of about one size (the largest
    /// at most twice the smallest), as a base-8 counter carries: each id is
    /// merged about log8(ids / convert_at) times in all, and the index
    /// holds at most seven runs of each size.
    fn due_merge(&self) -> Option<Vec<u64>> {
        self.manifest
            .runs
            .windows(FAN_IN)
            .rev()
            .find(|runs| {
                let largest = runs.iter().map(|run| run.count).max().unwrap_or(0);
                let smallest = runs.iter().map(|run| run.count).min().unwrap_or(0);
                largest <= smallest.saturating_mul(2)
            })
            .map(|runs| runs.iter().map(|run| run.id).collect())
    }

    /// Removes up to a step's worth of garbage keys: segments before the
    /// first live one, then the chunks of garbage runs.
    fn collect_garbage(
        &mut self,
        db: &sled::Db,
        mut budget: usize,
        writes: &mut Writes<'_>,
    ) -> Result<(), StoreError> {
        if let Some(from) = self.segment_garbage {
            let range =
                keys::id_segment(from).to_vec()..keys::id_segment(self.manifest.segments_from).to_vec();
            let found = db.range(range).keys().take(budget).collect::<Result<Vec<_>, _>>()?;
            self.segment_garbage = match found.last().and_then(|key| keys::id_segment_seq(key)) {
                Some(last) if found.len() == budget => Some(last + 1),
                _ => None,
            };
            budget -= found.len();
            for key in found {
                writes.remove(key);
            }
        }
        while budget > 0 {
            let Some(&run) = self.manifest.garbage.first() else { break };
            let found =
                db.scan_prefix(keys::id_run(run)).keys().take(budget).collect::<Result<Vec<_>, _>>()?;
            let finished = found.len() < budget;
            budget -= found.len();
            for key in found {
                writes.remove(key);
            }
            if !finished {
                break;
            }
            self.manifest.garbage.remove(0);
            self.dirty = true;
        }
        Ok(())
    }

    /// How many runs the index has (for tests and logs).
    #[cfg(test)]
    fn run_count(&self) -> usize {
        self.manifest.runs.len()
    }
}

/// The writes the index stages, and their bytes.
struct Writes<'a> {
    batch: &'a mut sled::Batch,
    bytes: u64,
}

impl Writes<'_> {
    fn put(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(key, value);
    }

    fn remove(&mut self, key: sled::IVec) {
        self.bytes += key.len() as u64;
        self.batch.remove(key);
    }
}

/// Writes `entries` (sorted by id) as chunks of `run`, of about `size`
/// entries each. A chunk never splits the entries of one id: a lookup reads
/// the one chunk whose first id is the greatest not after the id it looks
/// for, so every entry of that id must be in it. (So that chunk keys stay
/// unique too: two chunks never begin with the same id.)
fn write_chunks(writes: &mut Writes<'_>, run: u64, entries: &[(Uuid, Owner)], size: usize) {
    let mut rest = entries;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while end < rest.len() && rest[end].0 == rest[end - 1].0 {
            end += 1;
        }
        let (chunk, after) = rest.split_at(end);
        write_chunk(writes, run, chunk);
        rest = after;
    }
}

/// Writes `chunk` (sorted, not empty) as a chunk of `run`.
fn write_chunk(writes: &mut Writes<'_>, run: u64, chunk: &[(Uuid, Owner)]) {
    let Some((first, _)) = chunk.first() else { return };
    let entries = chunk.iter().map(|(id, (stream, number))| (*id, &**stream, *number));
    writes.put(&keys::id_run_chunk(run, first)[..], codec::encode_id_table(entries));
}

/// The entries of a stored id table, each stream's name shared.
fn decode_owners(value: &[u8]) -> Result<Vec<(Uuid, Owner)>, StoreError> {
    let table = codec::decode_id_table(value)?;
    let names: Vec<Arc<str>> = table.streams().iter().map(|stream| Arc::from(*stream)).collect();
    (0..table.len())
        .map(|index| {
            let (id, stream, number) = table.entry(index)?;
            Ok((id, (Arc::clone(&names[stream]), number)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
