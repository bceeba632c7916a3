//! Compaction: rewriting the live data into a new generation (see
//! [`super::generation`]) while the store keeps serving.
//!
//! The writer runs it. From the moment a compaction begins, every batch the
//! writer applies is applied to the new generation too; between batches it
//! copies the old generation over in key order, a bounded number of keys per
//! step. Copy steps and batches are both serialised in the writer, so a key
//! copied early and changed later is changed in both, a key removed before
//! it is reached is never copied, and when the copy reaches the end the new
//! generation is an exact replica. The writer then makes it durable,
//! switches `CURRENT` to it and hands readers the new handle; the old
//! generation is dropped and deleted by the caller.

use std::ops::Bound;
use std::path::PathBuf;

use super::{StoreError, generation};

/// The most keys copied per step, and how long a step may spend collecting
/// them: appends wait in the writer's queue while a step runs, and applying
/// 500 keys takes a few milliseconds. Each step is one sled batch: copying
/// with plain inserts instead left the new generation a quarter larger
/// (a million-event store, 90% expired: 50% of its size after compaction
/// against 40% in batches).
const COPY_STEP: usize = 500;
const COPY_BUDGET: std::time::Duration = std::time::Duration::from_millis(3);

/// A compaction in progress.
#[derive(Debug)]
pub(crate) struct Compaction {
    /// The new generation, written to alongside the current one.
    pub db: sled::Db,
    pub dir: PathBuf,
    /// The last key copied; the next step starts after it.
    after: Option<sled::IVec>,
    pub copied: u64,
    /// Bytes of keys and values written to the new generation so far.
    pub bytes: u64,
}

/// What one step did.
#[derive(Debug)]
pub(crate) struct CompactProgress {
    pub copied: u64,
    /// Once switched: the old generation, for the caller to drop (its last
    /// handles are here, so sled's shutdown work happens off the writer
    /// thread) and then delete.
    pub retired: Option<Retired>,
}

#[derive(Debug)]
pub(crate) struct Retired {
    pub dir: PathBuf,
    pub handles: Vec<sled::Db>,
}

impl Compaction {
    /// Opens an empty new generation beside `current`.
    pub fn begin(
        data_dir: &std::path::Path,
        current: &std::path::Path,
        cache_capacity: u64,
    ) -> Result<Self, StoreError> {
        let dir = generation::next(data_dir, current)?;
        let db = generation::open(&dir, cache_capacity)?;
        tracing::info!(generation = %dir.display(), "compaction started");
        Ok(Self { db, dir, after: None, copied: 0, bytes: 0 })
    }

    /// Copies the next keys of `from`; `true` when everything is copied.
    pub fn copy_step(&mut self, from: &sled::Db) -> Result<bool, StoreError> {
        let start = match &self.after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        let started = std::time::Instant::now();
        let mut batch = sled::Batch::default();
        let mut count = 0;
        let mut done = true;
        for item in from.range::<sled::IVec, _>((start, Bound::Unbounded)) {
            let (key, value) = item?;
            self.bytes += (key.len() + value.len()) as u64;
            batch.insert(key.clone(), value);
            self.after = Some(key);
            count += 1;
            if count >= COPY_STEP || (count % 64 == 0 && started.elapsed() >= COPY_BUDGET) {
                done = false;
                break;
            }
        }
        self.db.apply_batch(batch)?;
        self.copied += count as u64;
        Ok(done)
    }

    /// Applies a batch the writer applied to the current generation.
    pub fn apply(&mut self, batch: sled::Batch, bytes: u64) -> Result<(), StoreError> {
        self.db.apply_batch(batch)?;
        self.bytes += bytes;
        Ok(())
    }

    /// The generation's directory name, for `CURRENT`.
    pub fn name(&self) -> String {
        self.dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned()
    }

    /// Gives up: the new generation is removed; the current one never
    /// stopped being current.
    pub fn abandon(self, why: &StoreError) {
        tracing::warn!(error = %why, "compaction abandoned");
        let Self { db, dir, .. } = self;
        drop(db);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "could not remove the abandoned generation");
        }
    }
}
