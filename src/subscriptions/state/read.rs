//! Reading the source: the read-ahead buffer's room, applying what a read
//! found, the tickets with which a request that found nothing waits for a
//! fresh read, and the done ranges recovered from the checkpoint the group
//! started from (reads skip them).

use std::sync::Arc;

use super::{GroupState, Message};

/// A read the driver should perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub from: u64,
    pub count: usize,
    /// Changes when the read position is rewound; a read started under an
    /// older epoch is discarded.
    pub epoch: u64,
}

/// The state of the group's source, as the driver last found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SourceStatus {
    #[default]
    Reading,
    /// The source was hard-deleted: nothing more will come.
    Deleted,
    /// The last read failed (the driver retries).
    Failing(String),
}

impl GroupState {
    fn buffer_capacity(&self) -> usize {
        if self.caught_up { self.settings.live_buffer_size } else { self.settings.buffer_size }
    }

    /// The next read of the source, if the buffer has room.
    pub fn read_request(&self) -> Option<ReadRequest> {
        if self.source_status == SourceStatus::Deleted {
            return None;
        }
        let room = self.buffer_capacity().saturating_sub(self.buffer.len());
        (room > 0).then(|| ReadRequest {
            from: self.next_read,
            count: room.min(self.settings.read_batch_size),
            epoch: self.read_epoch,
        })
    }

    /// Adds what a read found. `next_read` is where the next read starts
    /// (past everything examined); `caught_up` when the source has nothing
    /// more. Returns `false` (and changes nothing) if the read is stale.
    pub fn apply_read(
        &mut self,
        request: ReadRequest,
        messages: Vec<Message>,
        next_read: u64,
        caught_up: bool,
    ) -> bool {
        if request.epoch != self.read_epoch || request.from != self.next_read {
            return false;
        }
        for message in messages {
            if message.position < self.next_read
                || self.is_recovered_done(message.position)
                || self.tracked.contains_key(&message.id)
            {
                continue;
            }
            self.pending.insert(message.position);
            self.buffer.push_back(Arc::new(message));
        }
        self.next_read = self.next_read.max(next_read);
        let low = self.low_water_mark();
        self.recovered.retain(|(_, end)| *end >= low);
        self.caught_up = caught_up;
        self.source_status = SourceStatus::Reading;
        true
    }

    /// Asks the driver for a read that starts after this call, so that a
    /// request finding nothing can make sure it has seen every event
    /// acknowledged before it began. Returns the ticket to wait for with
    /// [`Self::is_served`], or `None` when no read could add anything (the
    /// buffer is full, or the source is gone).
    pub fn request_read(&mut self) -> Option<u64> {
        self.read_request()?;
        self.read_requests += 1;
        Some(self.read_requests)
    }

    /// Whether a read started after ticket `ticket` was asked for has
    /// completed.
    pub fn is_served(&self, ticket: u64) -> bool {
        self.reads_served >= ticket
    }

    /// The read tickets outstanding right now: a read that starts now serves
    /// up to the returned number (see [`Self::served`]).
    pub fn read_tickets(&self) -> (u64, bool) {
        (self.read_requests, self.read_requests > self.reads_served)
    }

    /// A read that started when the tickets were `upto` has completed (or
    /// could not run). Returns whether that served anyone.
    pub fn served(&mut self, upto: u64) -> bool {
        let served = upto > self.reads_served;
        self.reads_served = self.reads_served.max(upto);
        served
    }

    pub fn set_source_status(&mut self, status: SourceStatus) {
        self.source_status = status;
    }

    fn is_recovered_done(&self, position: u64) -> bool {
        let index = self.recovered.partition_point(|(_, end)| *end < position);
        self.recovered.get(index).is_some_and(|(start, _)| *start <= position)
    }

    /// The first position not known done.
    pub(super) fn low_water_mark(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.next_read)
    }
}
