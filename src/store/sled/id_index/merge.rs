//! Merging runs of the id index: the inputs are read a chunk at a time and
//! written as one run, a step's budget of ids at a time.

use std::collections::VecDeque;
use std::ops::Bound;

use uuid::Uuid;

use super::{Owner, Writes, decode_owners, keys, write_chunk};
use crate::store::StoreError;

/// Runs being merged into a new one.
#[derive(Debug)]
pub(super) struct Merge {
    /// The runs merged, oldest first.
    pub(super) inputs: Vec<u64>,
    pub(super) output: u64,
    sources: Vec<Source>,
    /// Merged ids not yet written: fewer than a chunk, or the entries of
    /// one id, which a chunk never splits.
    pending: Vec<(Uuid, Owner)>,
    /// Ids written to the output so far.
    pub(super) written: u64,
}

impl Merge {
    pub(super) fn new(inputs: Vec<u64>, output: u64) -> Self {
        let sources = inputs.iter().copied().map(Source::new).collect();
        Self { inputs, output, sources, pending: Vec::new(), written: 0 }
    }

    /// Merges up to `budget` ids into the output; true once all are.
    pub(super) fn step(
        &mut self,
        db: &sled::Db,
        budget: usize,
        chunk: usize,
        writes: &mut Writes<'_>,
    ) -> Result<bool, StoreError> {
        for _ in 0..budget {
            // The source with the smallest next id.
            let mut from: Option<(usize, Uuid)> = None;
            for (index, source) in self.sources.iter_mut().enumerate() {
                if let Some(id) = source.head(db)? {
                    if from.is_none_or(|(_, smallest)| id < smallest) {
                        from = Some((index, id));
                    }
                }
            }
            let Some((from, id)) = from else {
                self.flush(writes);
                return Ok(true);
            };
            // A chunk ends only where the id changes, so that every entry
            // of an id is in the chunk a lookup finds (see `write_chunks`).
            if self.pending.len() >= chunk && self.pending.last().is_some_and(|(last, _)| *last != id) {
                self.flush(writes);
            }
            if let Some(entry) = self.sources[from].entries.pop_front() {
                self.pending.push(entry);
            }
        }
        Ok(false)
    }

    fn flush(&mut self, writes: &mut Writes<'_>) {
        self.written += self.pending.len() as u64;
        write_chunk(writes, self.output, &self.pending);
        self.pending.clear();
    }
}

/// One input of a merge, read a chunk at a time.
#[derive(Debug)]
struct Source {
    run: u64,
    /// The key of the last chunk read.
    after: Option<sled::IVec>,
    entries: VecDeque<(Uuid, Owner)>,
    exhausted: bool,
}

impl Source {
    fn new(run: u64) -> Self {
        Self { run, after: None, entries: VecDeque::new(), exhausted: false }
    }

    /// The smallest id not yet merged, reading the next chunk if needed.
    fn head(&mut self, db: &sled::Db) -> Result<Option<Uuid>, StoreError> {
        while self.entries.is_empty() && !self.exhausted {
            let start = match &self.after {
                Some(key) => Bound::Excluded(key.to_vec()),
                None => Bound::Included(keys::id_run(self.run).to_vec()),
            };
            let end = Bound::Excluded(keys::id_run(self.run + 1).to_vec());
            match db.range::<Vec<u8>, _>((start, end)).next().transpose()? {
                Some((key, value)) => {
                    self.entries.extend(decode_owners(&value)?);
                    self.after = Some(key);
                }
                None => self.exhausted = true,
            }
        }
        Ok(self.entries.front().map(|(id, _)| *id))
    }
}
