//! Multi-stream appends: every part is written in this batch, or none.

use super::{Planned, Staging};
use crate::store::rules::{self, Part, Parts};
use crate::store::{Append, AppendOutcome, StoreError};

impl Staging<'_> {
    /// Appends every part of `appends` to the batch, or fails and stages
    /// nothing of them.
    ///
    /// Every part is first planned against the batch as it stands, to
    /// decide: each part's own checks depend only on its own stream, and
    /// streams are distinct. Then the parts are applied in order, each
    /// planned again first, since parts share system streams (`$ce-`,
    /// `$streams`), and a metadata part describes another part's stream.
    /// That second plan fails only if a read fails; the batch then goes
    /// back to where it was before the first part.
    pub(in crate::store::sled) fn append_all(
        &mut self,
        appends: &[Append],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        rules::check_parts(appends)?;
        let parts = appends
            .iter()
            .map(|append| {
                self.plan_append(append).map(|planned| match planned {
                    Planned::Retry(outcome) => Part::Repeat(outcome),
                    Planned::Write(_) => Part::Write(()),
                })
            })
            .collect();
        match rules::decide_parts(appends, parts)? {
            Parts::Repeat(outcomes) => Ok(outcomes),
            Parts::PartlyRepeated(indexes) => {
                Err(rules::partly_repeated(appends, &indexes, |stream| self.state(stream)))
            }
            Parts::Write(_) => {
                let before = self.savepoint();
                let mut outcomes = Vec::with_capacity(appends.len());
                for append in appends {
                    match self.plan_append(append) {
                        Ok(Planned::Write(plan)) => outcomes.push(self.apply_append(append, plan)),
                        Ok(Planned::Retry(_)) => {
                            self.restore(before);
                            return Err(StoreError::Invalid("a part changed while it was written".into()));
                        }
                        Err(error) => {
                            self.restore(before);
                            return Err(error);
                        }
                    }
                }
                Ok(outcomes)
            }
        }
    }

    /// Everything the batch has staged so far, to go back to.
    fn savepoint(&self) -> Savepoint {
        Savepoint {
            batch: self.batch.clone(),
            writes: self.writes,
            states: self.states.clone(),
            removed: self.removed.clone(),
            ids: self.ids.clone(),
            links: self.links.clone(),
            records: self.records.clone(),
            log: self.log.clone(),
            bytes: self.bytes,
            next_position: self.next_position,
        }
    }

    fn restore(&mut self, savepoint: Savepoint) {
        let Savepoint { batch, writes, states, removed, ids, links, records, log, bytes, next_position } =
            savepoint;
        self.batch = batch;
        self.writes = writes;
        self.states = states;
        self.removed = removed;
        self.ids = ids;
        self.links = links;
        self.records = records;
        self.log = log;
        self.bytes = bytes;
        self.next_position = next_position;
    }
}

/// A copy of what a batch had staged (see [`Staging::savepoint`]).
struct Savepoint {
    batch: sled::Batch,
    writes: usize,
    states: std::collections::HashMap<String, crate::store::StreamState>,
    removed: std::collections::HashSet<String>,
    ids: super::IdOwners,
    links: std::collections::HashMap<String, super::PendingLinks>,
    records: std::collections::HashMap<String, super::PendingRecords>,
    log: Option<super::LogSpan>,
    bytes: u64,
    next_position: u64,
}
