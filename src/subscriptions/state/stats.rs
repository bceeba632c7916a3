//! What `info` shows of a group: its status, counts, connections and the
//! processing rate, measured by [`Meter`] without a clock of its own.

use std::time::Duration;

use tokio::time::Instant;

use super::{Checkpoint, GroupState, SourceStatus};

/// Messages processed per second, over the last whole second or more.
#[derive(Debug)]
pub(super) struct Meter {
    window_start: Instant,
    window_count: u64,
    rate: f64,
}

impl Meter {
    pub(super) fn new(now: Instant) -> Self {
        Self { window_start: now, window_count: 0, rate: 0.0 }
    }

    /// Counts one processed message.
    pub(super) fn record(&mut self, now: Instant) {
        self.roll(now);
        self.window_count += 1;
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            self.rate = self.window_count as f64 / elapsed.as_secs_f64();
            self.window_start = now;
            self.window_count = 0;
        }
    }
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
