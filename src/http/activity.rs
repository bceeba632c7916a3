//! What the server has been doing lately, for `GET /info` (and the web
//! UI's dashboard): reads served and events appended since it started,
//! their rates over the last ten minutes, its uptime and the store's size
//! on disk.
//!
//! The request paths pay one relaxed atomic increment per read answered
//! ([`Activity::read_served`]); appends pay nothing, since the log's next
//! position already counts every event written. A background task takes a
//! sample of both every [`SAMPLE_EVERY`] and measures the store's size,
//! which walks its directory and so is never done for a request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::Store;
use crate::store::retention::now_micros;

/// How often the counters are sampled (and the store's size measured):
/// often enough for a chart that moves while one watches, rarely enough
/// that the task costs nothing measurable.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The samples kept: ten minutes of rates, plus the one they start from.
const SAMPLES_KEPT: usize = 121;

/// The counters and their recent samples, shared by every request.
#[derive(Debug)]
pub struct Activity {
    /// When the server started, for its uptime.
    started: Instant,
    started_micros: i64,
    /// The log's next position when the server started: the events
    /// appended since are the difference to the current one.
    first_position: u64,
    /// Page and event reads answered since the start.
    reads: AtomicU64,
    /// The store's size on disk as last measured; `u64::MAX` until then
    /// (or for a store without files).
    store_bytes: AtomicU64,
    /// Oldest first; at most [`SAMPLES_KEPT`].
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    next_position: u64,
    reads: u64,
}

/// The figures `/info` shows, as of one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub started_micros: i64,
    pub uptime: Duration,
    pub appended_events: u64,
    pub reads_served: u64,
    pub store_bytes: Option<u64>,
    /// Events appended per second in each interval between samples,
    /// oldest first.
    pub appended_per_second: Vec<f64>,
    /// Reads served per second, likewise.
    pub reads_per_second: Vec<f64>,
}

impl Activity {
    /// Starts counting, and the sampling task, which ends with `shutdown`
    /// or once the server's state is dropped. It holds the store only
    /// weakly, so it never keeps a closed store's files open.
    pub fn start(store: &Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let next_position = store.notifier().next_position();
        let now = Instant::now();
        let activity = Arc::new(Self {
            started: now,
            started_micros: now_micros(),
            first_position: next_position,
            reads: AtomicU64::new(0),
            store_bytes: AtomicU64::new(u64::MAX),
            samples: Mutex::new(VecDeque::from([Sample { at: now, next_position, reads: 0 }])),
        });
        let (weak_activity, weak_store) = (Arc::downgrade(&activity), Arc::downgrade(store));
        tokio::spawn(async move {
            // The size at once; the first sample one interval after the
            // one taken here.
            if !measure(&weak_activity, &weak_store).await {
                return;
            }
            let first = tokio::time::Instant::now() + SAMPLE_EVERY;
            let mut ticks = tokio::time::interval_at(first, SAMPLE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() || !sample(&weak_activity, &weak_store).await {
                    return;
                }
            }
        });
        activity
    }

    /// Counts one read answered. On every page and event read: one relaxed
    /// increment, nothing else.
    pub fn read_served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now, given the log's next position.
    pub fn snapshot(&self, next_position: u64) -> Snapshot {
        let samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let per_second = |count: fn(&Sample) -> u64| -> Vec<f64> {
            let pairs = samples.iter().zip(samples.iter().skip(1));
            pairs
                .map(|(before, after)| {
                    let seconds = after.at.duration_since(before.at).as_secs_f64();
                    let delta = count(after).saturating_sub(count(before));
                    if seconds > 0.0 { delta as f64 / seconds } else { 0.0 }
                })
                .collect()
        };
        let store_bytes = self.store_bytes.load(Ordering::Relaxed);
        Snapshot {
            started_micros: self.started_micros,
            uptime: self.started.elapsed(),
            appended_events: next_position.saturating_sub(self.first_position),
            reads_served: self.reads.load(Ordering::Relaxed),
            store_bytes: (store_bytes != u64::MAX).then_some(store_bytes),
            appended_per_second: per_second(|sample| sample.next_position),
            reads_per_second: per_second(|sample| sample.reads),
        }
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Takes one sample, then measures the store; `false` once the server is
/// gone.
async fn sample(activity: &Weak<Activity>, store: &Weak<dyn Store>) -> bool {
    {
        let (Some(activity), Some(store)) = (activity.upgrade(), store.upgrade()) else { return false };
        activity.push(Sample {
            at: Instant::now(),
            next_position: store.notifier().next_position(),
            reads: activity.reads.load(Ordering::Relaxed),
        });
    }
    measure(activity, store).await
}

/// Measures the store's size on disk, off the async threads; `false` once
/// the server is gone.
async fn measure(activity: &Weak<Activity>, store: &Weak<dyn Store>) -> bool {
    let (Some(activity), Some(store)) = (activity.upgrade(), store.upgrade()) else { return false };
    if let Ok(Some(bytes)) = tokio::task::spawn_blocking(move || store.size_on_disk()).await {
        activity.store_bytes.store(bytes, Ordering::Relaxed);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(samples: &[(u64, u64, u64)]) -> Activity {
        let start = Instant::now();
        let samples = samples
            .iter()
            .map(|&(seconds, next_position, reads)| Sample {
                at: start + Duration::from_secs(seconds),
                next_position,
                reads,
            })
            .collect();
        Activity {
            started: start,
            started_micros: 0,
            first_position: 10,
            reads: AtomicU64::new(70),
            store_bytes: AtomicU64::new(u64::MAX),
            samples: Mutex::new(samples),
        }
    }

    #[test]
    fn rates_are_per_second_between_samples_oldest_first() {
        let activity = activity(&[(0, 10, 0), (5, 60, 0), (10, 60, 50)]);
        let snapshot = activity.snapshot(75);
        assert_eq!(snapshot.appended_per_second, vec![10.0, 0.0]);
        assert_eq!(snapshot.reads_per_second, vec![0.0, 10.0]);
        assert_eq!(snapshot.appended_events, 65);
        assert_eq!(snapshot.reads_served, 70);
        assert_eq!(snapshot.store_bytes, None);
    }

    #[test]
    fn only_the_last_ten_minutes_are_kept() {
        let activity = activity(&[(0, 10, 0)]);
        let start = activity.samples.lock().unwrap()[0].at;
        for n in 1..=200 {
            activity.push(Sample { at: start + Duration::from_secs(n), next_position: 10 + n, reads: 0 });
        }
        let snapshot = activity.snapshot(210);
        assert_eq!(snapshot.appended_per_second.len(), SAMPLES_KEPT - 1);
        assert!(snapshot.appended_per_second.iter().all(|rate| (*rate - 1.0).abs() < 1e-9));
    }
}
