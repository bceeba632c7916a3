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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::consumers::{Consumers, GroupFull, liveness};
use super::settings::{Settings, Strategy};
use crate::store::ReadEvent;

/// The most done ranges a checkpoint lists. Each range is a run of done
/// messages above a still-outstanding one; beyond this many, the higher
/// ones are left out, which only means they would be redelivered.
pub const MAX_CHECKPOINT_RANGES: usize = 1000;

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

#[derive(Debug)]
struct Replay {
    /// The next parked event number to replay; below it, events were
    /// replayed (or are gone).
    next: u64,
    /// The last parked event number the current replay covers.
    until: Option<u64>,
    /// Replayed messages not yet done, by parked event number.
    pending: BTreeSet<u64>,
    /// The `$tb` last written to the parked stream's metadata.
    truncated_before: u64,
}

/// Messages processed per second, over the last whole second or more.
#[derive(Debug)]
struct Meter {
    window_start: Instant,
    window_count: u64,
    rate: f64,
}

impl Meter {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            self.rate = self.window_count as f64 / elapsed.as_secs_f64();
            self.window_start = now;
            self.window_count = 0;
        }
    }
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

/// A snapshot for `info`.
#[derive(Debug, Clone)]
pub struct Stats {
    pub status: &'static str,
    pub checkpoint: Checkpoint,
    /// The highest source position read.
    pub last_read: Option<u64>,
    pub buffered: usize,
    pub retrying: usize,
    pub in_flight: usize,
    pub outstanding: usize,
    pub processed_total: u64,
    pub rate: f64,
    pub connections: Vec<ConnectionStats>,
    /// The first parked event number not yet handed back by a replay.
    pub replay_next: u64,
}

#[derive(Debug, Clone)]
pub struct ConnectionStats {
    pub name: String,
    pub in_flight: u32,
    pub processed: u64,
    pub waiting: u32,
    pub idle: Duration,
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
            replay: Replay {
                next: parked_first,
                until: None,
                pending: BTreeSet::new(),
                truncated_before: parked_first,
            },
            consumers: Consumers::default(),
            processed_total: 0,
            meter: Meter { window_start: now, window_count: 0, rate: 0.0 },
            read_requests: 0,
            reads_served: 0,
        }
    }

    fn liveness(&self) -> Duration {
        liveness(self.settings.message_timeout)
    }

    fn buffer_capacity(&self) -> usize {
        if self.caught_up { self.settings.live_buffer_size } else { self.settings.buffer_size }
    }

    // ---- reading the source ----

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
    fn low_water_mark(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.next_read)
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

    /// Source messages handed out for the first time since the last
    /// durable checkpoint.
    fn undurable_deliveries(&self) -> u64 {
        self.first_deliveries - self.durable_first_deliveries
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

    fn park(&mut self, id: Uuid, reason: &'static str) {
        if let Some(tracked) = self.tracked.get_mut(&id) {
            tracked.phase = Phase::Parking { reason };
            self.to_park.push(id);
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
        self.meter.roll(now);
        self.meter.window_count += 1;
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

    // ---- parking ----

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

    // ---- checkpoints ----

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

    // ---- settings, waiting, statistics ----

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

    pub fn stats(&mut self, now: Instant) -> Stats {
        self.meter.roll(now);
        let liveness = self.liveness();
        let active = self.consumers.active(now, liveness);
        let mut connections: Vec<ConnectionStats> = self
            .consumers
            .iter()
            .filter(|(name, _)| active.contains(&name.as_str()))
            .map(|(name, consumer)| ConnectionStats {
                name: name.clone(),
                in_flight: consumer.in_flight,
                processed: consumer.processed,
                waiting: consumer.waiting,
                idle: now.saturating_duration_since(consumer.last_seen),
            })
            .collect();
        connections.sort_by(|a, b| a.name.cmp(&b.name));
        let status =
            match (&self.source_status, self.replay.until.is_some() || !self.replay.pending.is_empty()) {
                (SourceStatus::Deleted, _) => "Dropped",
                (_, true) => "ReplayingParkedMessages",
                (SourceStatus::Failing(_), _) => "NotReady",
                _ if self.caught_up => "Live",
                _ => "Behind",
            };
        Stats {
            status,
            checkpoint: self.durable.clone(),
            last_read: self.next_read.checked_sub(1),
            buffered: self.buffer.len(),
            retrying: self.retry.len(),
            in_flight: self.deadlines.len(),
            outstanding: self.tracked.len(),
            processed_total: self.processed_total,
            rate: self.meter.rate,
            connections,
            replay_next: self.replay.next,
        }
    }
}

fn retry_key(message: &Message) -> (u8, u64) {
    match message.origin {
        Origin::Source => (0, message.position),
        Origin::Parked(number) => (1, number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordedEvent;

    fn message(position: u64, stream: &str) -> Message {
        Message {
            id: Uuid::from_u128(u128::from(position) + 1),
            position,
            event: ReadEvent {
                event: RecordedEvent {
                    stream: stream.into(),
                    number: position,
                    position,
                    id: Uuid::from_u128(u128::from(position) + 1),
                    event_type: "t".into(),
                    created_micros: 0,
                    is_json: true,
                    metadata_is_json: false,
                    data: bytes::Bytes::from_static(b"{}"),
                    metadata: bytes::Bytes::new(),
                },
                link: None,
            },
            pin: stream.to_owned(),
            origin: Origin::Source,
        }
    }

    fn settings() -> Settings {
        Settings { message_timeout: Duration::from_secs(10), max_retry_count: 2, ..Settings::default() }
    }

    /// A group that has read positions `0..count` of stream `s`.
    fn group_with(settings: Settings, count: u64, now: Instant) -> GroupState {
        let mut state = GroupState::new(settings, 0, None, 0, now);
        read(&mut state, (0..count).map(|p| message(p, "s")).collect(), count);
        state
    }

    fn read(state: &mut GroupState, messages: Vec<Message>, next_read: u64) {
        let request = state.read_request().expect("room to read");
        assert!(state.apply_read(request, messages, next_read, true));
    }

    fn positions(delivered: &[Delivered]) -> Vec<u64> {
        delivered.iter().map(|d| d.message.position).collect()
    }

    fn ids(delivered: &[Delivered]) -> Vec<Uuid> {
        delivered.iter().map(|d| d.message.id).collect()
    }

    #[test]
    fn acks_in_order_move_the_checkpoint() {
        let now = Instant::now();
        let mut state = group_with(settings(), 5, now);
        let taken = state.take("a", 3, now).expect("admitted");
        assert_eq!(positions(&taken), [0, 1, 2]);
        assert_eq!(state.ack("a", &ids(&taken), now), 3);
        assert_eq!(state.snapshot(), Checkpoint { next: 3, done: vec![] });
        assert_eq!(state.ack("a", &ids(&taken), now), 0, "a second ack is ignored");
    }

    #[test]
    fn acks_past_an_outstanding_message_are_listed_as_ranges() {
        let now = Instant::now();
        let mut state = group_with(settings(), 10, now);
        let taken = state.take("a", 6, now).expect("admitted");
        let acked: Vec<Uuid> =
            taken.iter().filter(|d| ![1, 4].contains(&d.message.position)).map(|d| d.message.id).collect();
        state.ack("a", &acked, now);
        // 0 done; 1 outstanding; 2-3 done; 4 outstanding; 5 done; 6-9 buffered.
        assert_eq!(state.snapshot(), Checkpoint { next: 1, done: vec![(2, 3), (5, 5)] });

        // After a crash the group restarts from that checkpoint and never
        // delivers 2, 3 or 5 again.
        let mut restarted = GroupState::new(settings(), 0, Some(state.snapshot()), 0, now);
        read(&mut restarted, (1..10).map(|p| message(p, "s")).collect(), 10);
        let again = restarted.take("a", 100, now).expect("admitted");
        assert_eq!(positions(&again), [1, 4, 6, 7, 8, 9]);
        restarted.ack("a", &ids(&again), now);
        assert_eq!(restarted.snapshot(), Checkpoint { next: 10, done: vec![] });
    }

    #[test]
    fn recovered_ranges_survive_until_they_are_read_past() {
        let now = Instant::now();
        let checkpoint = Checkpoint { next: 5, done: vec![(50, 60)] };
        let mut state = GroupState::new(settings(), 0, Some(checkpoint.clone()), 0, now);
        assert_eq!(state.snapshot(), checkpoint, "nothing read yet: the same checkpoint");
        read(&mut state, (5..20).map(|p| message(p, "s")).collect(), 20);
        let taken = state.take("a", 15, now).expect("admitted");
        state.ack("a", &ids(&taken), now);
        assert_eq!(state.snapshot(), Checkpoint { next: 20, done: vec![(50, 60)] });
    }

    #[test]
    fn timeouts_retry_then_park() {
        let now = Instant::now();
        let mut state = group_with(settings(), 1, now);
        let timeout = state.settings.message_timeout;
        let mut at = now;
        for expected_retry in 0..=2 {
            let taken = state.take("a", 1, at).expect("admitted");
            assert_eq!(taken.len(), 1);
            assert_eq!(taken[0].retry_count, expected_retry);
            assert_eq!(state.next_wake(), Some(at + timeout), "the driver wakes at the deadline");
            at += timeout + Duration::from_millis(1);
            assert!(state.expire(at));
        }
        assert!(state.take("a", 1, at).expect("admitted").is_empty(), "parking, not retrying");
        let parking = state.take_parking();
        assert_eq!(parking.len(), 1);
        assert_eq!(parking[0].reason, PARKED_AFTER_RETRIES);
        assert_eq!(state.snapshot().next, 0, "not done until the park is durable");
        state.parked(&[parking[0].message.id], at);
        assert_eq!(state.snapshot().next, 1);
    }

    #[test]
    fn a_late_ack_of_a_message_waiting_for_its_retry_counts() {
        let now = Instant::now();
        let mut state = group_with(settings(), 1, now);
        let taken = state.take("a", 1, now).expect("admitted");
        assert!(state.expire(now + Duration::from_secs(11)));
        assert_eq!(state.ack("a", &ids(&taken), now), 1);
        assert!(state.take("b", 1, now).expect("admitted").is_empty());
    }

    #[test]
    fn nack_actions() {
        let now = Instant::now();
        let mut state = group_with(settings(), 4, now);
        let taken = state.take("a", 4, now).expect("admitted");
        let [retry, skip, park, stop] = [0, 1, 2, 3].map(|i| taken[i].message.id);
        state.nack("a", &[retry], NackAction::Retry, now);
        state.nack("a", &[skip], NackAction::Skip, now);
        state.nack("a", &[park], NackAction::Park, now);
        assert_eq!(state.take_parking()[0].reason, PARKED_BY_CONSUMER);
        let again = state.take("a", 4, now).expect("admitted");
        assert_eq!(positions(&again), [0]);
        assert_eq!(again[0].retry_count, 1);
        // Stop gives back everything the consumer holds, uncounted.
        state.nack("a", &[stop], NackAction::Stop, now);
        let after_stop = state.take("b", 4, now).expect("admitted");
        assert_eq!(positions(&after_stop), [0, 3]);
        assert_eq!(after_stop[1].retry_count, 0);
        assert_eq!(after_stop[0].retry_count, 1);
        assert!(state.stats(now).connections.iter().all(|c| c.name != "a"), "a was released");
    }

    #[test]
    fn the_gate_holds_new_messages_until_a_checkpoint_is_durable() {
        let now = Instant::now();
        let limited = Settings { max_check_point_count: 4, min_check_point_count: 1, ..settings() };
        let mut state = group_with(limited, 10, now);
        let first = state.take("a", 10, now).expect("admitted");
        assert_eq!(first.len(), 4);
        assert!(state.gate_closed());
        assert!(!state.wants_checkpoint(now), "nothing done yet");
        state.ack("a", &ids(&first), now);
        assert!(state.wants_checkpoint(now));
        let checkpoint = state.begin_checkpoint(now).expect("something to write");
        assert!(state.take("a", 10, now).expect("admitted").is_empty(), "still closed while writing");
        state.end_checkpoint(Some(checkpoint));
        assert_eq!(state.take("a", 10, now).expect("admitted").len(), 4);
    }

    #[test]
    fn a_failed_checkpoint_is_tried_again() {
        let now = Instant::now();
        let eager = Settings { max_check_point_count: 2, min_check_point_count: 1, ..settings() };
        let mut state = group_with(eager, 2, now);
        let taken = state.take("a", 2, now).expect("admitted");
        state.ack("a", &ids(&taken), now);
        assert!(state.begin_checkpoint(now).is_some());
        state.end_checkpoint(None);
        assert!(state.wants_checkpoint(now));
        assert_eq!(state.durable_checkpoint().next, 0);
    }

    #[test]
    fn timed_checkpoints_need_the_minimum_count() {
        let now = Instant::now();
        let timed = Settings { min_check_point_count: 2, ..settings() };
        let after = timed.check_point_after;
        let mut state = group_with(timed, 3, now);
        let taken = state.take("a", 1, now).expect("admitted");
        state.ack("a", &ids(&taken), now);
        assert!(!state.wants_checkpoint(now + after), "one is below the minimum");
        let consumer_expiry = now + liveness(Duration::from_secs(10));
        assert_eq!(state.next_wake(), Some(consumer_expiry), "no checkpoint timer is armed");
        let taken = state.take("a", 1, now).expect("admitted");
        state.ack("a", &ids(&taken), now);
        assert!(!state.wants_checkpoint(now));
        assert!(state.wants_checkpoint(now + after));
        assert_eq!(state.next_wake(), Some(now + after));
    }

    #[test]
    fn pinned_keeps_each_stream_on_one_consumer() {
        let now = Instant::now();
        let pinned = Settings { strategy: Strategy::Pinned, ..settings() };
        let mut state = GroupState::new(pinned, 0, None, 0, now);
        assert!(state.take("a", 1, now).expect("admitted").is_empty());
        assert!(state.take("b", 1, now).expect("admitted").is_empty());
        let streams = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
        let messages = (0..60).map(|p| message(p, streams[p as usize % streams.len()])).collect();
        read(&mut state, messages, 60);
        let mut owner: HashMap<String, &str> = HashMap::new();
        for round in 0..40 {
            let consumer = if round % 2 == 0 { "a" } else { "b" };
            let taken = state.take(consumer, 3, now).expect("admitted");
            for delivered in &taken {
                let previous = owner.insert(delivered.message.pin.clone(), consumer);
                assert!(previous.is_none_or(|p| p == consumer), "{} moved", delivered.message.pin);
            }
            state.ack(consumer, &ids(&taken), now);
        }
        assert_eq!(state.snapshot().next, 60, "everything was delivered");
        assert!(owner.values().any(|c| *c == "a") && owner.values().any(|c| *c == "b"));
    }

    #[test]
    fn dispatch_to_single_serves_one_consumer_at_a_time() {
        let now = Instant::now();
        let single = Settings { strategy: Strategy::DispatchToSingle, ..settings() };
        let mut state = group_with(single, 5, now);
        assert_eq!(state.take("first", 1, now).expect("admitted").len(), 1);
        assert!(state.take("second", 5, now).expect("admitted").is_empty());
        let later = now + liveness(Duration::from_secs(10)) + Duration::from_secs(11);
        state.expire(later);
        // `first` held a message that timed out and then stopped asking.
        assert_eq!(state.take("second", 5, later).expect("admitted").len(), 5);
    }

    #[test]
    fn replayed_parked_messages_come_back_and_truncate_when_done() {
        let now = Instant::now();
        let mut state = GroupState::new(settings(), 0, None, 3, now);
        assert_eq!(state.request_replay(Some(4)), 2);
        assert_eq!(state.replay_read(), Some((3, 2)));
        let parked =
            |number: u64, position: u64| Message { origin: Origin::Parked(number), ..message(position, "s") };
        state.apply_replay(3, vec![parked(3, 10), parked(4, 11)], 5);
        assert_eq!(state.replay_read(), None);
        let taken = state.take("a", 5, now).expect("admitted");
        assert_eq!(positions(&taken), [10, 11]);
        assert_eq!(state.truncate_target(), None, "nothing done yet");
        state.ack("a", &ids(&taken)[..1], now);
        assert_eq!(state.truncate_target(), Some(4));
        state.ack("a", &ids(&taken)[1..], now);
        assert_eq!(state.truncate_target(), Some(5));
        state.truncated(5);
        assert_eq!(state.truncate_target(), None);
        assert_eq!(state.snapshot().next, 0, "replays never move the checkpoint");
    }

    #[test]
    fn changing_resolve_link_tos_rereads_what_was_not_delivered() {
        let now = Instant::now();
        let mut state = group_with(settings(), 6, now);
        let taken = state.take("a", 2, now).expect("admitted");
        state.update_settings(Settings { resolve_link_tos: true, ..settings() });
        let request = state.read_request().expect("room");
        assert_eq!(request.from, 2);
        assert!(state.apply_read(request, (2..6).map(|p| message(p, "s")).collect(), 6, true));
        state.ack("a", &ids(&taken), now);
        assert_eq!(positions(&state.take("a", 10, now).expect("admitted")), [2, 3, 4, 5]);
    }

    #[test]
    fn a_fresh_read_is_served_only_by_a_read_that_started_after_it_was_asked() {
        let now = Instant::now();
        let mut state = GroupState::new(settings(), 0, None, 0, now);
        let (before, asked) = state.read_tickets();
        assert!(!asked);
        let ticket = state.request_read().expect("the buffer has room");
        assert!(!state.served(before), "a read that started earlier serves nobody");
        assert!(!state.is_served(ticket));
        let (tickets, asked) = state.read_tickets();
        assert!(asked);
        assert!(state.served(tickets));
        assert!(state.is_served(ticket));

        let full = Settings { buffer_size: 2, read_batch_size: 1, live_buffer_size: 2, ..settings() };
        let mut state = group_with(full, 2, now);
        assert_eq!(state.request_read(), None, "a full buffer: reading cannot help");
    }

    #[test]
    fn the_buffer_limits_read_ahead() {
        let now = Instant::now();
        let small = Settings { buffer_size: 5, read_batch_size: 2, live_buffer_size: 3, ..settings() };
        let mut state = GroupState::new(small, 0, None, 0, now);
        let request = state.read_request().expect("room");
        assert_eq!(request.count, 2);
        assert!(state.apply_read(request, (0..2).map(|p| message(p, "s")).collect(), 2, false));
        let request = state.read_request().expect("room");
        assert!(state.apply_read(request, (2..4).map(|p| message(p, "s")).collect(), 4, false));
        assert_eq!(state.read_request().map(|r| r.count), Some(1));
        let request = state.read_request().expect("room");
        assert!(state.apply_read(request, vec![message(4, "s")], 5, true));
        assert_eq!(state.read_request(), None, "live: the live buffer (3) is full");
        let stale = ReadRequest { from: 0, count: 1, epoch: 0 };
        assert!(!state.apply_read(stale, vec![message(0, "s")], 1, true), "stale reads are dropped");
    }
}
