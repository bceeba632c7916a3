//! Append load for the crash tests, and the check of what survived it:
//! [`AppendLoad`] runs writers that append batches of [`BATCH`] events,
//! each to a stream and to its mirror (the same ids in two streams: ids
//! are unique per stream), and keeps every acknowledged batch;
//! [`check_survivors`] then reads the server back: every stream dense
//! from 0 and made of whole batches, every acknowledged event where its
//! `Location` said, and `$all` dense and holding each event once.
//!
//! A `503` (the store's database away) is retried with the same ids, as a
//! client should: if the first try stood after all, the retry is answered
//! with its original `Location`. A failed connection (the server killed)
//! ends the writer. Any other answer fails the test.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::http::{EVENTS_JSON, client};
use super::pages::{Walk, read_all_events};

/// Events per append.
pub const BATCH: usize = 5;

/// One acknowledged append: its stream, its first number (from its
/// `Location`) and its ids, in order.
#[derive(Debug, Clone)]
pub struct Acked {
    pub stream: String,
    pub first_number: u64,
    pub ids: Vec<String>,
}

/// Writers appending to one server until stopped (or until it dies).
#[derive(Debug)]
pub struct AppendLoad {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    /// The `503`s answered (and retried).
    unavailable: Arc<AtomicUsize>,
    writers: Vec<JoinHandle<Vec<Acked>>>,
}

impl AppendLoad {
    /// Starts `writers` writers against `base`. Half of them share one
    /// stream, so that batches of different writers interleave in it.
    pub fn start(base: &str, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let writers = (0..writers)
            .map(|writer| {
                let (base, stop) = (base.to_owned(), Arc::clone(&stop));
                let (acknowledged, unavailable) = (Arc::clone(&acknowledged), Arc::clone(&unavailable));
                tokio::spawn(async move { write(writer, &base, &stop, &acknowledged, &unavailable).await })
            })
            .collect();
        Self { stop, acknowledged, unavailable, writers }
    }

    /// How many appends were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// How many appends were answered `503` so far.
    pub fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Waits until `count` appends in all were acknowledged.
    pub async fn wait_for_acknowledged(&self, count: usize, limit: Duration) {
        let acknowledged = Arc::clone(&self.acknowledged);
        super::wait_until(&format!("{count} acknowledged appends"), limit, move || {
            acknowledged.load(Ordering::Relaxed) >= count
        })
        .await;
    }

    /// Stops the writers; every append they had acknowledged.
    pub async fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for writer in self.writers {
            acked.extend(writer.await.unwrap());
        }
        acked
    }
}

async fn write(
    writer: usize,
    base: &str,
    stop: &AtomicBool,
    acknowledged: &AtomicUsize,
    unavailable: &AtomicUsize,
) -> Vec<Acked> {
    let client = client();
    let mut acked = Vec::new();
    let mut round = 0;
    'load: while !stop.load(Ordering::Relaxed) {
        let stream = if writer % 2 == 0 { "crash-shared".to_owned() } else { format!("crash-{writer}") };
        let ids: Vec<String> = (0..BATCH).map(|_| Uuid::new_v4().to_string()).collect();
        let events: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"eventId": id, "eventType": "Crash", "data": {"writer": writer, "round": round, "i": i}}))
            .collect();
        let body = Value::Array(events).to_string();
        round += 1;
        for stream in [stream, format!("crash-mirror-{writer}")] {
            loop {
                let sent = client
                    .post(format!("{base}/streams/{stream}"))
                    .header("content-type", EVENTS_JSON)
                    .body(body.clone())
                    .send()
                    .await;
                // The server died mid-request: not acknowledged.
                let Ok(response) = sent else { break 'load };
                match response.status().as_u16() {
                    201 => {
                        let location = response.headers()["location"].to_str().unwrap().to_owned();
                        let first_number = location.rsplit('/').next().unwrap().parse().unwrap();
                        acked.push(Acked { stream, first_number, ids: ids.clone() });
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    503 => {
                        assert!(response.headers().contains_key("retry-after"), "a 503 says when to retry");
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break 'load;
                        }
                        // Sooner than Retry-After says, to meet the
                        // database's return early; the same ids.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    status => panic!("append to {stream}: {status} {}", response.text().await.unwrap()),
                }
            }
        }
    }
    acked
}

/// Reads the server at `base` back and checks that it holds exactly the
/// loads' streams, dense and in whole batches, every acknowledged event
/// where its `Location` said, and `$all` dense, holding each event once.
pub async fn check_survivors(base: &str, acked: &[Acked]) {
    let client = client();
    let streams: HashSet<&str> = acked.iter().map(|a| a.stream.as_str()).collect();
    let mut found: HashMap<(String, String), u64> = HashMap::new();
    let mut total_events = 0;
    for stream in &streams {
        let events = read_all_events(&client, base, stream).await;
        total_events += events.len();
        assert_eq!(events.len() % BATCH, 0, "{stream} holds whole batches only");
        for (expected_number, event) in events.iter().enumerate() {
            assert_eq!(event["eventNumber"], expected_number as u64, "{stream} is dense");
            let id = event["eventId"].as_str().unwrap().to_owned();
            assert_eq!(found.insert((id, stream.to_string()), expected_number as u64), None, "once");
        }
        for batch in events.chunks(BATCH) {
            let data: Vec<Value> =
                batch.iter().map(|e| serde_json::from_str(e["data"].as_str().unwrap()).unwrap()).collect();
            assert!(
                data.iter().all(|d| d["writer"] == data[0]["writer"] && d["round"] == data[0]["round"]),
                "a batch is contiguous and complete: {data:?}"
            );
        }
    }
    for batch in acked {
        for (offset, id) in batch.ids.iter().enumerate() {
            assert_eq!(
                found.get(&(id.clone(), batch.stream.clone())),
                Some(&(batch.first_number + offset as u64)),
                "acknowledged event {id} of {} is where its Location said",
                batch.stream
            );
        }
    }

    // $all: positions dense from 0 and holding exactly the streams' events.
    let start = format!("{base}/streams/$all/00000000000000000000000000000000/forward/250");
    let mut in_all = 0;
    for page in Walk::forward(&client, start).until_empty().pages().await.iter() {
        let entries = page.entries().len();
        in_all += entries;
        let Some(previous) = page.link("previous") else { break };
        let from = position_in(&page.url);
        let to = position_in(&previous);
        assert_eq!(to - from, entries as u64, "no position between {from} and {to} is missing");
    }
    assert_eq!(in_all, total_events, "$all holds every event once");
}

/// The position in a `$all` page's address.
fn position_in(url: &str) -> u64 {
    let segment = url.split('/').rev().nth(2).unwrap();
    u64::from_str_radix(&segment[..16], 16).unwrap()
}
