//! What a group may write as its checkpoint, and when: the snapshot of the
//! done positions, v5's rules for when to write one, and the gate that
//! holds back first deliveries until a checkpoint is durable.
//!
//! One checkpoint is written at a time: `begin_checkpoint` takes the
//! snapshot and `end_checkpoint` makes it the durable one (or, when the
//! write failed, puts its count back so that the next one is tried soon).

use tokio::time::Instant;

use super::GroupState;

/// The most done ranges a checkpoint lists. Each range is a run of done
/// messages above a still-outstanding one; beyond this many, the higher
/// ones are left out, which only means they would be redelivered.
pub const MAX_CHECKPOINT_RANGES: usize = 1000;

/// What a checkpoint says: every position below `next` is done, and so is
/// every position inside the (inclusive, ascending, disjoint) `done` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub next: u64,
    pub done: Vec<(u64, u64)>,
}

impl Checkpoint {
    /// The last position known processed with everything before it, the
    /// number v5 calls the checkpoint; `None` before anything.
    pub fn last_processed(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }
}

impl GroupState {
    /// Source messages handed out for the first time since the last
    /// durable checkpoint.
    pub(super) fn undurable_deliveries(&self) -> u64 {
        self.first_deliveries - self.durable_first_deliveries
    }

    /// Whether a checkpoint should be written now (v5's rules, plus one:
    /// write before the gate closes).
    pub fn wants_checkpoint(&self, now: Instant) -> bool {
        if self.writing.is_some() || self.done_since_checkpoint == 0 {
            return false;
        }
        let settings = &self.settings;
        self.done_since_checkpoint >= settings.max_check_point_count
            || self.undurable_deliveries() >= settings.max_check_point_count.div_ceil(2)
            || (self.done_since_checkpoint >= settings.min_check_point_count
                && now >= self.last_checkpoint_at + settings.check_point_after)
    }

    /// Starts a checkpoint: the snapshot to write, or `None` when it would
    /// say nothing new (then it counts as written).
    pub fn begin_checkpoint(&mut self, now: Instant) -> Option<Checkpoint> {
        if self.writing.is_some() {
            return None;
        }
        let snapshot = self.snapshot();
        self.last_checkpoint_at = now;
        if snapshot == self.durable {
            self.done_since_checkpoint = 0;
            self.durable_first_deliveries = self.first_deliveries;
            return None;
        }
        self.writing = Some((self.first_deliveries, self.done_since_checkpoint));
        self.done_since_checkpoint = 0;
        Some(snapshot)
    }

    /// The checkpoint started by [`Self::begin_checkpoint`] is durable
    /// (`Some`) or failed (`None`).
    pub fn end_checkpoint(&mut self, written: Option<Checkpoint>) {
        let Some((first_deliveries, done)) = self.writing.take() else { return };
        match written {
            Some(checkpoint) => {
                self.durable = checkpoint;
                self.durable_first_deliveries = first_deliveries;
            }
            None => self.done_since_checkpoint += done,
        }
    }

    /// Whether the gate is closed: new messages wait for a checkpoint.
    pub fn gate_closed(&self) -> bool {
        self.undurable_deliveries() >= self.settings.max_check_point_count
    }

    /// What a checkpoint written now would say.
    pub fn snapshot(&self) -> Checkpoint {
        let mut next = self.low_water_mark();
        let mut done: Vec<(u64, u64)> = Vec::new();
        if let (Some(high_done), Some(last_read)) = (self.high_done, self.next_read.checked_sub(1)) {
            let upper = high_done.min(last_read);
            let mut previous = next;
            for &position in self.pending.range(next.saturating_add(1)..) {
                if previous >= upper {
                    break;
                }
                if position > previous + 1 {
                    done.push((previous + 1, (position - 1).min(upper)));
                }
                previous = position;
            }
            if !self.pending.is_empty() && previous < upper {
                done.push((previous + 1, upper));
            }
        }
        for &(start, end) in &self.recovered {
            let start = start.max(self.next_read);
            if start <= end {
                done.push((start, end));
            }
        }
        // Merge touching ranges and fold a leading one into `next`.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(done.len());
        for (start, end) in done {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        while let Some(&(start, end)) = merged.first() {
            if start > next {
                break;
            }
            next = next.max(end.saturating_add(1));
            merged.remove(0);
        }
        merged.truncate(MAX_CHECKPOINT_RANGES);
        Checkpoint { next, done: merged }
    }

    pub fn durable_checkpoint(&self) -> &Checkpoint {
        &self.durable
    }
}
