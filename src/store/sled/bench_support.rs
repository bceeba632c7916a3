//! Hooks for the criterion benchmarks in `benches/`, and for nothing else.
//!
//! A benchmark is a crate of its own and sees only `pub` items. The codec
//! and the feed renderers are public already; the id index is not, and
//! should not be: only the writer may change it, and its types (`IdIndex`,
//! `IdFilter`) would pin the writer's internals to a public API. So this one
//! hidden module wraps the index in [`IdLookup`], which can build an index
//! and look ids up, and the rest of the store stays private. Hidden from the
//! docs, it is no part of the API: it changes whenever the index does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use uuid::Uuid;

use super::StoreError;
use super::generation;
use super::id_filter::IdFilter;
use super::id_index::{IdIndex, IdOwners};
use super::keys;

/// An id index in a sled database of its own, as the writer keeps it.
#[derive(Debug)]
pub struct IdLookup {
    db: sled::Db,
    index: IdIndex,
}

impl IdLookup {
    /// Builds an index of `ids` (id, stream, event number) in a new database
    /// in `dir`: `per_commit` ids a commit, as the writer stages them, with
    /// the index's upkeep done as an idle writer does it; then reopens it as
    /// a restarted store does, with the filter filled by its scan.
    pub fn build(dir: &Path, ids: &[(Uuid, &str, u64)], per_commit: usize) -> Result<Self, StoreError> {
        let db = generation::open(dir, 512 * 1024 * 1024)?;
        let count = ids.len() as u64;
        let mut index = IdIndex::open(&db, Arc::new(IdFilter::new(count)))?;
        for (commit_seq, commit) in (1..).zip(ids.chunks(per_commit.max(1))) {
            let owners: IdOwners =
                commit.iter().map(|&(id, stream, number)| (id, (Arc::from(stream), number))).collect();
            let mut batch = sled::Batch::default();
            index.stage(&db, commit_seq, &owners, &mut batch)?;
            apply(&db, batch)?;
        }
        while index.has_upkeep() {
            let mut batch = sled::Batch::default();
            index.upkeep(&db, &mut batch)?;
            apply(&db, batch)?;
        }
        let filter = Arc::new(IdFilter::new(count));
        let index = IdIndex::open(&db, Arc::clone(&filter))?;
        filter.fill(&db, &AtomicBool::new(false))?;
        Ok(Self { db, index })
    }

    /// The number `id` was written as in `stream`: what the writer asks
    /// for each id of an append that may be a retry.
    pub fn number_in(&self, id: &Uuid, stream: &str) -> Result<Option<u64>, StoreError> {
        self.index.number_in(&self.db, id, stream)
    }

    /// Whether any of `ids` may have been written: what the writer asks
    /// first, for all the ids of an append.
    pub fn may_hold_any(&self, ids: &[Uuid]) -> bool {
        self.index.may_hold_any(ids)
    }

    /// One sled point read of a key the database holds (the index's
    /// manifest): the floor under every lookup that reaches sled, measured
    /// beside them as their reference.
    pub fn read_one_key(&self) -> Result<usize, StoreError> {
        Ok(self.db.get(keys::counter(keys::ID_INDEX))?.map_or(0, |value| value.len()))
    }
}

/// Applies a batch and flushes it, as the writer does in its default
/// durability mode. Flushing matters here: applied as fast as a loop can,
/// unflushed, the batches pile log writes onto sled's I/O threads, and
/// sled 0.34 can then deadlock when the log file shrinks (its segment
/// accountant waits for a truncation queued behind writes that wait for
/// the accountant; fixed after 0.34 by sled PR 1269). Unflushed, a build
/// hung about one run in two.
fn apply(db: &sled::Db, batch: sled::Batch) -> Result<(), StoreError> {
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
