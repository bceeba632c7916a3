//! Parking and replaying: messages whose deliveries ran out (or that a
//! consumer parked) wait here until the driver has appended them to the
//! parked stream; a replay reads them back from that stream into the retry
//! queue, and moves the parked stream's `$tb` past the ones done.
//!
//! A parked message counts as done for the checkpoint only once its park
//! is durable ([`GroupState::parked`]); replayed messages never move the
//! checkpoint.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;
use uuid::Uuid;

use super::{GroupState, Message, Origin, Phase, Tracked, retry_key};

/// A message waiting to be appended to the parked stream.
#[derive(Debug, Clone)]
pub struct ParkRequest {
    pub message: Arc<Message>,
    pub reason: &'static str,
}

/// Why a message was parked, written to the parked event's metadata: its
/// deliveries ran out.
pub const PARKED_AFTER_RETRIES: &str = "Max retry count reached";
/// Why a message was parked: a consumer asked.
pub const PARKED_BY_CONSUMER: &str = "Parked by a consumer (nack with action Park)";

/// Where the replay of the parked stream stands.
#[derive(Debug)]
pub(super) struct Replay {
    /// The next parked event number to replay; below it, events were
    /// replayed (or are gone).
    pub(super) next: u64,
    /// The last parked event number the current replay covers.
    pub(super) until: Option<u64>,
    /// Replayed messages not yet done, by parked event number.
    pub(super) pending: BTreeSet<u64>,
    /// The `$tb` last written to the parked stream's metadata.
    truncated_before: u64,
}

impl Replay {
    /// No replay yet; `parked_first` is the first parked event not yet
    /// replayed.
    pub(super) fn new(parked_first: u64) -> Self {
        Self { next: parked_first, until: None, pending: BTreeSet::new(), truncated_before: parked_first }
    }
}

impl GroupState {
    // ---- parking ----

    /// Moves a tracked message to the parking phase, for the driver to
    /// pick up with [`Self::take_parking`].
    pub(super) fn park(&mut self, id: Uuid, reason: &'static str) {
        if let Some(tracked) = self.tracked.get_mut(&id) {
            tracked.phase = Phase::Parking { reason };
            self.to_park.push(id);
        }
    }

    /// The messages the driver should append to the parked stream now.
    pub fn take_parking(&mut self) -> Vec<ParkRequest> {
        let ids = std::mem::take(&mut self.to_park);
        ids.into_iter()
            .filter_map(|id| {
                let tracked = self.tracked.get(&id)?;
                match tracked.phase {
                    Phase::Parking { reason } => {
                        Some(ParkRequest { message: Arc::clone(&tracked.message), reason })
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The parked messages are durably in the parked stream: done.
    pub fn parked(&mut self, ids: &[Uuid], now: Instant) {
        for id in ids {
            if let Some(tracked) = self.tracked.remove(id) {
                self.done(&tracked.message, now);
            }
        }
    }

    /// Parking failed; try again later.
    pub fn park_failed(&mut self, ids: &[Uuid]) {
        self.to_park.extend_from_slice(ids);
    }

    // ---- replaying parked messages ----

    /// Starts (or extends) a replay up to parked event `last`. Returns how
    /// many parked messages are now waiting to be handed back.
    pub fn request_replay(&mut self, last: Option<u64>) -> u64 {
        if let Some(last) = last.filter(|last| *last >= self.replay.next) {
            self.replay.until = Some(self.replay.until.map_or(last, |until| until.max(last)));
        }
        self.replay.until.map_or(0, |until| until + 1 - self.replay.next)
    }

    /// The next read of the parked stream: from which number, how many.
    /// Replayed messages wait in the retry queue, which is kept within the
    /// buffer size.
    pub fn replay_read(&self) -> Option<(u64, usize)> {
        let until = self.replay.until?;
        let room = self.settings.buffer_size.saturating_sub(self.retry.len());
        let remaining = usize::try_from(until + 1 - self.replay.next).unwrap_or(usize::MAX);
        (room > 0).then(|| (self.replay.next, room.min(self.settings.read_batch_size).min(remaining)))
    }

    /// Adds replayed messages; `next` is the first parked number not yet
    /// read. Parked entries whose event is gone are simply passed over.
    pub fn apply_replay(&mut self, from: u64, messages: Vec<Message>, next: u64) {
        if from != self.replay.next {
            return;
        }
        let until = self.replay.until.unwrap_or(0);
        for message in messages {
            let Origin::Parked(number) = message.origin else { continue };
            if number > until || self.tracked.contains_key(&message.id) {
                continue;
            }
            self.replay.pending.insert(number);
            let message = Arc::new(message);
            self.retry.insert(retry_key(&message), message.id);
            self.tracked.insert(message.id, Tracked { message, retry_count: 0, phase: Phase::Retry });
        }
        self.replay.next = next.min(until + 1).max(self.replay.next);
        // A read that could not move on ends the replay rather than spin.
        if self.replay.next > until || next <= from {
            self.replay.until = None;
        }
    }

    /// The `$tb` the parked stream should now have, if it moved.
    pub fn truncate_target(&self) -> Option<u64> {
        let target = self.replay.pending.first().copied().unwrap_or(self.replay.next);
        (target > self.replay.truncated_before).then_some(target)
    }

    pub fn truncated(&mut self, before: u64) {
        self.replay.truncated_before = self.replay.truncated_before.max(before);
    }
}
