//! The state machine of one group: what has been read from the source, what
//! is in flight with whom, what waits for a retry or for parking, and what
//! the checkpoint may say. No I/O and no clock: the caller passes `now` and
//! performs the reads and writes this module asks for (see `driver`).
//!
//! Positions are where messages sit in the source: event numbers for a
//! stream, global positions for `$all`. Every position below `next_read`
//! has been read; a read position is *pending* until its message is done
//! (acknowledged, skipped or durably parked), and every other read position
//! is done (or was never a message: hidden, filtered). The checkpoint is
//! derived from that alone.
//!
//! Invariants:
//! - a message is in exactly one place: the read-ahead buffer, or tracked
//!   (in flight, waiting for a retry, or waiting to be parked);
//! - the checkpoint never claims a pending position is done, so after a
//!   crash every message not known to be done is delivered again;
//! - at most `maxCheckPointCount` messages are handed out for the first
//!   time between one durable checkpoint and the next (the *gate*), so a
//!   crash redelivers at most that many beyond what the checkpoint itself
//!   lists as outstanding.
//!
//! Layout: this file holds [`GroupState`] and delivery (take, ack, nack,
//! timeouts); `read` reads the source into the buffer, `checkpoint` holds
//! the snapshot, when to write it and the gate, `replay` parking and
//! replays of the parked stream, `stats` what `info` shows, and `tests` the
//! unit tests of them all.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::consumers::{Consumers, GroupFull, liveness};
use super::settings::{Settings, Strategy};
use crate::store::ReadEvent;

mod checkpoint;
mod read;
mod replay;
mod stats;

pub use checkpoint::{Checkpoint, MAX_CHECKPOINT_RANGES};
pub use read::{ReadRequest, SourceStatus};
pub use replay::{PARKED_AFTER_RETRIES, PARKED_BY_CONSUMER, ParkRequest};
pub use stats::{ConnectionStats, Stats};

use replay::Replay;
use stats::Meter;

/// A message of the group: one event of the source (or one parked message
/// being replayed).
#[derive(Debug)]
pub struct Message {
    /// How the consumer names it in `ack`/`nack`: the id of the event as it
    /// sits in the source (for a resolved link, the link's id, as in v5).
    pub id: Uuid,
    /// Its position in the source.
    pub position: u64,
    pub event: ReadEvent,
    /// The source stream `Pinned` keys on: the stream the (resolved) event
    /// belongs to.
    pub pin: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from the source; counts for the checkpoint.
    Source,
    /// Replayed from the parked stream, at this event number there.
    Parked(u64),
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub message: Arc<Message>,
    /// How many times it was delivered before (0 the first time).
    pub retry_count: u32,
}

/// What a consumer wants done with a message it cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver it again (counts as a retry; parked after `maxRetryCount`).
    Retry,
    /// Forget it: it counts as processed.
    Skip,
    /// Park it now.
    Park,
    /// Give it back without counting a retry, and release the consumer:
    /// everything it holds goes back to the group and it no longer counts
    /// as connected.
    Stop,
}

#[derive(Debug)]
enum Phase {
    InFlight { consumer: String, deadline: (Instant, u64) },
    Retry,
    Parking { reason: &'static str },
}

#[derive(Debug)]
struct Tracked {
    message: Arc<Message>,
    retry_count: u32,
    phase: Phase,
}

#[derive(Debug)]
pub struct GroupState {
    pub settings: Settings,
    next_read: u64,
    read_epoch: u64,
    /// The last read reached the end of the source.
    caught_up: bool,
    source_status: SourceStatus,
    /// Read, never delivered, in position order.
    buffer: VecDeque<Arc<Message>>,
    /// Read positions whose message is not done.
    pending: BTreeSet<u64>,
    tracked: HashMap<Uuid, Tracked>,
    /// Messages waiting to be delivered again, source messages first, each
    /// kind in order.
    retry: BTreeMap<(u8, u64), Uuid>,
    /// In-flight messages by deadline (the second half makes keys unique).
    deadlines: BTreeMap<(Instant, u64), Uuid>,
    deadline_seq: u64,
    /// Messages in the parking phase the driver has not picked up yet.
    to_park: Vec<Uuid>,
    /// Done ranges from the checkpoint the group started from, at or above
    /// the low-water mark: reads skip them.
    recovered: Vec<(u64, u64)>,
    /// The highest position done through a delivery; done ranges above it
    /// are not worth listing in a checkpoint.
    high_done: Option<u64>,
    durable: Checkpoint,
    /// Source messages done since the last checkpoint was taken.
    done_since_checkpoint: u64,
    /// First deliveries of source messages, ever, and as of the last
    /// durable checkpoint: their difference is what the gate limits.
    first_deliveries: u64,
    durable_first_deliveries: u64,
    /// A checkpoint being written: (first deliveries, done count) it covers.
    writing: Option<(u64, u64)>,
    last_checkpoint_at: Instant,
    replay: Replay,
    consumers: Consumers,
    processed_total: u64,
    meter: Meter,
    /// Fresh reads asked for by requests that found nothing (see
    /// [`Self::request_read`]), numbered; and the highest such number a
    /// completed read started after.
    read_requests: u64,
    reads_served: u64,
}

impl GroupState {
    /// A group starting at `start` (no checkpoint) or from `checkpoint`;
    /// `parked_first` is the first parked event not yet replayed.
    pub fn new(
        settings: Settings,
        start: u64,
        checkpoint: Option<Checkpoint>,
        parked_first: u64,
        now: Instant,
    ) -> Self {
        let durable = checkpoint.unwrap_or(Checkpoint { next: start, done: Vec::new() });
        let high_done = durable.done.last().map(|(_, end)| *end).or(durable.last_processed());
        Self {
            settings,
            next_read: durable.next,
            read_epoch: 0,
            caught_up: false,
            source_status: SourceStatus::Reading,
            buffer: VecDeque::new(),
            pending: BTreeSet::new(),
            tracked: HashMap::new(),
            retry: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            deadline_seq: 0,
            to_park: Vec::new(),
            recovered: durable.done.clone(),
            high_done,
            durable,
            done_since_checkpoint: 0,
            first_deliveries: 0,
            durable_first_deliveries: 0,
            writing: None,
            last_checkpoint_at: now,
            replay: Replay::new(parked_first),
            consumers: Consumers::default(),
            processed_total: 0,
            meter: Meter::new(now),
            read_requests: 0,
            reads_served: 0,
        }
    }

    fn liveness(&self) -> Duration {
        liveness(self.settings.message_timeout)
    }

    // ---- delivering ----

    /// Hands up to `count` messages to `consumer`: retries first, then new
    /// messages, as the strategy allows.
    pub fn take(&mut self, consumer: &str, count: usize, now: Instant) -> Result<Vec<Delivered>, GroupFull> {
        let liveness = self.liveness();
        self.consumers.touch(consumer, now, liveness, self.settings.max_subscriber_count)?;
        let strategy = self.settings.strategy;
        if strategy == Strategy::DispatchToSingle && self.consumers.single(now, liveness) != Some(consumer) {
            return Ok(Vec::new());
        }
        let active: Vec<String> = match strategy {
            Strategy::Pinned => self.consumers.active(now, liveness).into_iter().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let active: Vec<&str> = active.iter().map(String::as_str).collect();

        let mut out = Vec::with_capacity(count.min(64));
        let retries: Vec<((u8, u64), Uuid)> = self
            .retry
            .iter()
            .filter(|(_, id)| {
                self.tracked
                    .get(id)
                    .is_some_and(|t| self.consumers.may_take(strategy, consumer, &t.message.pin, &active))
            })
            .take(count)
            .map(|(key, id)| (*key, *id))
            .collect();
        for (key, id) in retries {
            self.retry.remove(&key);
            if let Some(delivered) = self.start_flight(id, consumer, now) {
                out.push(delivered);
            }
        }

        let gate = self.settings.max_check_point_count.saturating_sub(self.undurable_deliveries());
        let wanted = (count - out.len()).min(usize::try_from(gate).unwrap_or(usize::MAX));
        if wanted > 0 {
            let mut chosen = Vec::with_capacity(wanted);
            if strategy == Strategy::Pinned {
                let mut index = 0;
                while index < self.buffer.len() && chosen.len() < wanted {
                    let eligible =
                        self.consumers.may_take(strategy, consumer, &self.buffer[index].pin, &active);
                    if eligible {
                        chosen.extend(self.buffer.remove(index));
                    } else {
                        index += 1;
                    }
                }
            } else {
                let available = wanted.min(self.buffer.len());
                chosen.extend(self.buffer.drain(..available));
            }
            for message in chosen {
                let id = message.id;
                self.first_deliveries += 1;
                self.tracked.insert(id, Tracked { message, retry_count: 0, phase: Phase::Retry });
                if let Some(delivered) = self.start_flight(id, consumer, now) {
                    out.push(delivered);
                }
            }
        }
        Ok(out)
    }

    fn start_flight(&mut self, id: Uuid, consumer: &str, now: Instant) -> Option<Delivered> {
        self.deadline_seq += 1;
        let deadline = (now + self.settings.message_timeout, self.deadline_seq);
        let tracked = self.tracked.get_mut(&id)?;
        tracked.phase = Phase::InFlight { consumer: consumer.to_owned(), deadline };
        self.deadlines.insert(deadline, id);
        self.consumers.delivered(consumer, &tracked.message.pin);
        Some(Delivered { message: Arc::clone(&tracked.message), retry_count: tracked.retry_count })
    }

    /// Takes a message out of flight (if it is in flight), releasing its
    /// deadline and its consumer's hold.
    fn land(&mut self, id: &Uuid, processed: bool) {
        let Some(tracked) = self.tracked.get_mut(id) else { return };
        if let Phase::InFlight { consumer, deadline } = &tracked.phase {
            self.deadlines.remove(deadline);
            self.consumers.released(consumer, &tracked.message.pin, processed);
            tracked.phase = Phase::Retry;
        }
    }

    /// Acknowledges messages; unknown ids (already done, or from before a
    /// restart) are ignored. A late ack of a message waiting for its retry
    /// still counts. Returns how many were acknowledged.
    pub fn ack(&mut self, consumer: &str, ids: &[Uuid], now: Instant) -> usize {
        self.consumers.refresh(consumer, now);
        let mut acked = 0;
        for id in ids {
            let Some(tracked) = self.tracked.get(id) else { continue };
            match tracked.phase {
                Phase::InFlight { .. } => self.land(id, true),
                Phase::Retry => {
                    let key = retry_key(&tracked.message);
                    self.retry.remove(&key);
                }
                Phase::Parking { .. } => continue,
            }
            if let Some(tracked) = self.tracked.remove(id) {
                self.done(&tracked.message, now);
                acked += 1;
            }
        }
        acked
    }

    /// Negative acknowledgements; unknown ids are ignored.
    pub fn nack(&mut self, consumer: &str, ids: &[Uuid], action: NackAction, now: Instant) {
        self.consumers.refresh(consumer, now);
        let mut stopping: Vec<String> = Vec::new();
        for id in ids {
            let Some(tracked) = self.tracked.get(id) else { continue };
            let key = retry_key(&tracked.message);
            let holder = match &tracked.phase {
                Phase::InFlight { consumer, .. } => Some(consumer.clone()),
                Phase::Retry => None,
                Phase::Parking { .. } => continue,
            };
            match action {
                NackAction::Retry => {
                    if holder.is_some() {
                        self.land(id, false);
                        self.retry_or_park(*id);
                    }
                }
                NackAction::Skip => {
                    self.land(id, false);
                    self.retry.remove(&key);
                    if let Some(tracked) = self.tracked.remove(id) {
                        self.done(&tracked.message, now);
                    }
                }
                NackAction::Park => {
                    self.land(id, false);
                    self.retry.remove(&key);
                    self.park(*id, PARKED_BY_CONSUMER);
                }
                NackAction::Stop => {
                    if let Some(holder) = holder {
                        stopping.push(holder);
                    }
                }
            }
        }
        if action == NackAction::Stop {
            stopping.push(consumer.to_owned());
            stopping.sort_unstable();
            stopping.dedup();
            for name in stopping {
                self.release_consumer(&name);
            }
        }
    }

    /// Gives back everything `name` holds, without counting retries, and
    /// forgets it.
    fn release_consumer(&mut self, name: &str) {
        let held: Vec<Uuid> = self
            .tracked
            .iter()
            .filter(|(_, t)| matches!(&t.phase, Phase::InFlight { consumer, .. } if consumer == name))
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.land(&id, false);
            if let Some(tracked) = self.tracked.get(&id) {
                self.retry.insert(retry_key(&tracked.message), id);
            }
        }
        self.consumers.remove(name);
    }

    /// A delivery failed (timeout or nack): retry, or park when retries
    /// are used up.
    fn retry_or_park(&mut self, id: Uuid) {
        let Some(tracked) = self.tracked.get_mut(&id) else { return };
        if tracked.retry_count >= self.settings.max_retry_count {
            self.park(id, PARKED_AFTER_RETRIES);
        } else {
            tracked.retry_count += 1;
            tracked.phase = Phase::Retry;
            self.retry.insert(retry_key(&tracked.message), id);
        }
    }

    fn done(&mut self, message: &Message, now: Instant) {
        match message.origin {
            Origin::Source => {
                self.pending.remove(&message.position);
                self.done_since_checkpoint += 1;
                self.high_done = Some(self.high_done.map_or(message.position, |h| h.max(message.position)));
            }
            Origin::Parked(number) => {
                self.replay.pending.remove(&number);
            }
        }
        self.processed_total += 1;
        self.meter.record(now);
    }

    /// Moves timed-out messages to the retry queue (or parking) and forgets
    /// consumers that have gone. Returns whether anything changed that may
    /// let a waiting consumer take a message.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Some((&key, &id)) = self.deadlines.first_key_value() {
            if key.0 > now {
                break;
            }
            self.land(&id, false);
            self.retry_or_park(id);
            changed = true;
        }
        changed | self.consumers.sweep(now, self.liveness())
    }

    /// When the driver must next look at this group even if nothing
    /// happens: the first deadline, a consumer leaving, a timed checkpoint.
    pub fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.first_key_value().map(|((at, _), _)| *at);
        let consumer = self.consumers.next_expiry(self.liveness());
        // Only once a timed checkpoint could be due: below the minimum, the
        // acks that reach it wake the driver anyway (and an instant in the
        // past would have it spin).
        let timed = self.done_since_checkpoint > 0
            && self.done_since_checkpoint >= self.settings.min_check_point_count
            && self.writing.is_none();
        let checkpoint = timed.then(|| self.last_checkpoint_at + self.settings.check_point_after);
        [deadline, consumer, checkpoint].into_iter().flatten().min()
    }

    // ---- settings, waiting ----

    /// New settings. In-flight messages keep their deadlines; a change of
    /// `resolveLinktos` re-reads what was read ahead but not yet delivered.
    pub fn update_settings(&mut self, settings: Settings) {
        let reread = settings.resolve_link_tos != self.settings.resolve_link_tos;
        self.settings = settings;
        if reread {
            if let Some(first) = self.buffer.front().map(|m| m.position) {
                for message in self.buffer.drain(..) {
                    self.pending.remove(&message.position);
                }
                self.next_read = first;
            }
            self.read_epoch += 1;
            self.caught_up = false;
        }
    }

    /// Admits `consumer` (as a request would) and marks it as waiting.
    pub fn begin_wait(&mut self, consumer: &str) {
        self.consumers.begin_wait(consumer);
    }

    pub fn end_wait(&mut self, consumer: &str, now: Instant) {
        self.consumers.end_wait(consumer, now);
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up
    }
}

fn retry_key(message: &Message) -> (u8, u64) {
    match message.origin {
        Origin::Source => (0, message.position),
        Origin::Parked(number) => (1, number),
    }
}

#[cfg(test)]
mod tests;
