//! The consumers of one group and who may take which message.
//!
//! Over HTTP a consumer has no connection, so it is a name the client
//! chooses (the HTTP layer supplies a default). A consumer is *active* while
//! it has a request open (a long-poll), holds messages in flight, or was
//! seen within the liveness window (see [`liveness`]). Only active
//! consumers count towards `maxSubscriberCount` and the connection count,
//! and only they take part in `DispatchToSingle` and `Pinned`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::settings::Strategy;

/// How long after its last request a consumer still counts as connected:
/// two message timeouts, so that a consumer that takes a batch and works
/// on it for almost the whole timeout is never mistaken for a gone one.
pub fn liveness(message_timeout: Duration) -> Duration {
    message_timeout.saturating_mul(2)
}

#[derive(Debug, Clone)]
pub struct Consumer {
    /// When it (re)joined; `DispatchToSingle` picks the earliest.
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Requests open right now (long-polls).
    pub waiting: u32,
    pub in_flight: u32,
    /// Messages it acknowledged (for `info`).
    pub processed: u64,
}

/// Refused: the group already has `maxSubscriberCount` active consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupFull {
    /// When the consumer seen least recently stops counting, if nothing
    /// changes.
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
pub struct Consumers {
    map: HashMap<String, Consumer>,
    /// For `Pinned`: the consumer each source stream is pinned to while it
    /// has messages in flight there, and how many. A stream stays with the
    /// consumer working on it even if the set of consumers changes, so its
    /// messages are never processed concurrently by two consumers.
    pins: HashMap<String, (String, u32)>,
}

impl Consumers {
    fn is_active(consumer: &Consumer, now: Instant, liveness: Duration) -> bool {
        consumer.waiting > 0 || consumer.in_flight > 0 || now.duration_since(consumer.last_seen) < liveness
    }

    /// Records a request from `name`, admitting it if the group has room.
    pub fn touch(
        &mut self,
        name: &str,
        now: Instant,
        liveness: Duration,
        max: usize,
    ) -> Result<(), GroupFull> {
        if let Some(consumer) = self.map.get_mut(name) {
            if !Self::is_active(consumer, now, liveness) {
                consumer.first_seen = now;
            }
            consumer.last_seen = now;
            return Ok(());
        }
        self.sweep(now, liveness);
        if max > 0 && self.map.len() >= max {
            let oldest = self
                .map
                .values()
                .filter(|c| c.waiting == 0 && c.in_flight == 0)
                .map(|c| (c.last_seen + liveness).saturating_duration_since(now))
                .min()
                .unwrap_or(liveness);
            return Err(GroupFull { retry_after: oldest.max(Duration::from_secs(1)) });
        }
        let consumer = Consumer { first_seen: now, last_seen: now, waiting: 0, in_flight: 0, processed: 0 };
        self.map.insert(name.to_owned(), consumer);
        Ok(())
    }

    /// Records a request from `name` if it is known (acks do not admit).
    pub fn refresh(&mut self, name: &str, now: Instant) {
        if let Some(consumer) = self.map.get_mut(name) {
            consumer.last_seen = now;
        }
    }

    /// Drops consumers that are no longer active.
    pub fn sweep(&mut self, now: Instant, liveness: Duration) -> bool {
        let before = self.map.len();
        self.map.retain(|_, consumer| Self::is_active(consumer, now, liveness));
        self.map.len() != before
    }

    /// Forgets a consumer at once (a nack with `Stop`).
    pub fn remove(&mut self, name: &str) {
        self.map.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<&Consumer> {
        self.map.get(name)
    }

    pub fn begin_wait(&mut self, name: &str) {
        if let Some(consumer) = self.map.get_mut(name) {
            consumer.waiting += 1;
        }
    }

    pub fn end_wait(&mut self, name: &str, now: Instant) {
        if let Some(consumer) = self.map.get_mut(name) {
            consumer.waiting = consumer.waiting.saturating_sub(1);
            consumer.last_seen = now;
        }
    }

    /// A message of source stream `pin` was handed to `name`.
    pub fn delivered(&mut self, name: &str, pin: &str) {
        if let Some(consumer) = self.map.get_mut(name) {
            consumer.in_flight += 1;
        }
        let entry = self.pins.entry(pin.to_owned()).or_insert_with(|| (name.to_owned(), 0));
        if entry.0 == name {
            entry.1 += 1;
        }
    }

    /// A message `name` held is no longer in flight; `processed` when it
    /// was acknowledged.
    pub fn released(&mut self, name: &str, pin: &str, processed: bool) {
        if let Some(consumer) = self.map.get_mut(name) {
            consumer.in_flight = consumer.in_flight.saturating_sub(1);
            if processed {
                consumer.processed += 1;
            }
        }
        if let Some((owner, count)) = self.pins.get_mut(pin) {
            if owner == name {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.pins.remove(pin);
                }
            }
        }
    }

    /// The names of the active consumers, sorted (for stable decisions).
    pub fn active(&self, now: Instant, liveness: Duration) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .map
            .iter()
            .filter(|(_, consumer)| Self::is_active(consumer, now, liveness))
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// For `DispatchToSingle`: the active consumer that joined first.
    pub fn single(&self, now: Instant, liveness: Duration) -> Option<&str> {
        self.map
            .iter()
            .filter(|(_, consumer)| Self::is_active(consumer, now, liveness))
            .min_by(|(a_name, a), (b_name, b)| a.first_seen.cmp(&b.first_seen).then(a_name.cmp(b_name)))
            .map(|(name, _)| name.as_str())
    }

    /// For `Pinned`: the consumer messages of source stream `pin` go to.
    pub fn owner<'a>(&'a self, pin: &str, active: &[&'a str]) -> Option<&'a str> {
        if let Some((owner, _)) = self.pins.get(pin) {
            return Some(owner.as_str());
        }
        rendezvous(pin, active)
    }

    /// When the next active consumer stops being active if nothing happens
    /// (so that waiting consumers can take over its work).
    pub fn next_expiry(&self, liveness: Duration) -> Option<Instant> {
        self.map
            .values()
            .filter(|consumer| consumer.waiting == 0 && consumer.in_flight == 0)
            .map(|consumer| consumer.last_seen + liveness)
            .min()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Consumer)> {
        self.map.iter()
    }

    /// Whether `name` may take a message of source stream `pin` under
    /// `strategy`; `single` and `active` are computed once per request.
    pub fn may_take(&self, strategy: Strategy, name: &str, pin: &str, active: &[&str]) -> bool {
        match strategy {
            // DispatchToSingle is decided once per request, before any scan.
            Strategy::RoundRobin | Strategy::DispatchToSingle => true,
            Strategy::Pinned => self.owner(pin, active) == Some(name),
        }
    }
}

/// Rendezvous (highest random weight) hashing: each stream goes to the
/// consumer with the highest score for it. When a consumer joins or leaves,
/// only the streams it wins or held move. Stable across restarts and nodes.
pub fn rendezvous<'a>(pin: &str, consumers: &[&'a str]) -> Option<&'a str> {
    let pin_hash = crate::hash::fnv1a_64(pin.as_bytes());
    consumers.iter().copied().max_by_key(|consumer| {
        let score = crate::hash::mix64(pin_hash ^ crate::hash::fnv1a_64(consumer.as_bytes()).rotate_left(29));
        (score, *consumer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_streams_and_moves_few_when_a_consumer_joins() {
        let two = ["a", "b"];
        let three = ["a", "b", "c"];
        let streams: Vec<String> = (0..1000).map(|i| format!("Order-{i}")).collect();
        let on_a = streams.iter().filter(|s| rendezvous(s, &two) == Some("a")).count();
        assert!((350..650).contains(&on_a), "{on_a} of 1000 on a");
        let moved = streams.iter().filter(|s| rendezvous(s, &two) != rendezvous(s, &three)).count();
        let to_c = streams.iter().filter(|s| rendezvous(s, &three) == Some("c")).count();
        assert_eq!(moved, to_c, "only streams won by the newcomer move");
        assert!((200..470).contains(&to_c), "{to_c} of 1000 moved");
    }

    #[test]
    fn the_group_admits_up_to_the_maximum_and_forgets_the_gone() {
        let liveness = Duration::from_secs(10);
        let start = Instant::now();
        let mut consumers = Consumers::default();
        assert!(consumers.touch("a", start, liveness, 2).is_ok());
        assert!(consumers.touch("b", start, liveness, 2).is_ok());
        let full = consumers.touch("c", start, liveness, 2).expect_err("full");
        assert_eq!(full.retry_after, liveness);
        assert!(consumers.touch("a", start + Duration::from_secs(1), liveness, 2).is_ok(), "known ones stay");
        let later = start + Duration::from_secs(11);
        assert!(consumers.touch("c", later, liveness, 2).is_ok(), "b expired, a too");
        assert_eq!(consumers.active(later, liveness), ["c"]);
    }

    #[test]
    fn dispatch_to_single_picks_the_longest_active_and_fails_over() {
        let liveness = Duration::from_secs(10);
        let start = Instant::now();
        let mut consumers = Consumers::default();
        consumers.touch("late", start + Duration::from_secs(1), liveness, 0).ok();
        consumers.touch("early", start, liveness, 0).ok();
        assert_eq!(consumers.single(start + Duration::from_secs(2), liveness), Some("early"));
        consumers.touch("late", start + Duration::from_secs(9), liveness, 0).ok();
        assert_eq!(consumers.single(start + Duration::from_secs(12), liveness), Some("late"));
    }

    #[test]
    fn a_pinned_stream_stays_with_its_consumer_while_it_has_messages_in_flight() {
        let liveness = Duration::from_secs(10);
        let now = Instant::now();
        let mut consumers = Consumers::default();
        consumers.touch("a", now, liveness, 0).ok();
        consumers.delivered("a", "Order-1");
        consumers.touch("b", now, liveness, 0).ok();
        let active = ["a", "b"];
        assert_eq!(consumers.owner("Order-1", &active), Some("a"));
        consumers.released("a", "Order-1", true);
        assert_eq!(consumers.owner("Order-1", &active), rendezvous("Order-1", &active));
        assert_eq!(consumers.get("a").map(|c| c.processed), Some(1));
    }
}
