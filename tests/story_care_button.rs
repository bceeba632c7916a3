//! Story 1, the Care button: competing readers instead of a shared "last
//! processed position". Proves solved what a team lived through with
//! EventStore's HTTP API: care and uncare clicks were stored in one stream,
//! `Cares`, and several read-side instances built page counts from it by
//! sharing a position row in a database, which cost a database trip and an
//! event-store trip per message, processed messages "usually more than
//! once", and gained nothing from more instances.
//!
//! Here four read-side instances share one persistent subscription on
//! `Cares` while clicks are still arriving: each takes 50 messages a
//! request with their bodies embedded, long-polls when there is nothing to
//! do and acknowledges a batch with one request (its `ackAll` link). Every
//! click is counted exactly once, the page counts equal the clicks, every
//! instance does part of the work, and the instances make at most one HTTP
//! request per ten events. (The instances are tasks with a connection pool
//! and an `ES-Consumer` name each: over HTTP the server cannot tell them
//! from processes. How throughput grows from one to four is a benchmark
//! figure, `bench/run stories`, not a test.)
//!
//! Through Varnish (`deploy/varnish/eventfeed.vcl`): an instance that takes
//! messages without bodies and fetches each event on its own gets a cache
//! miss the first time and a hit every time after, so a second group (a
//! rebuild) costs eventfeed no body fetch at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pages::link;
use common::subscriptions::COMPETING_JSON;
use common::varnish::{Chain, is_cache_hit};
use common::{EVENTS_JSON, TestServer, anonymous_client};
use reqwest::Client;
use serde_json::{Value, json};

/// The clicks of the story's proof.
const CLICKS: usize = 20_000;

/// Clicks a front end sends in one append (a short buffer of clicks).
const CLICKS_PER_APPEND: usize = 20;

/// Front ends appending at once.
const WRITERS: usize = 4;

/// Read-side instances sharing the group.
const INSTANCES: usize = 4;

/// Messages an instance takes a request: one request for 50 events, one
/// more to acknowledge them.
const TAKE: usize = 50;

/// Pages the clicks spread over.
const PAGES: usize = 37;

/// Longer than any batch can take to process here, so no lease times out
/// and every duplicate would be a bug (v5 would redeliver after a
/// timeout; that is the only duplicate at-least-once delivery allows).
const MESSAGE_TIMEOUT_MS: u64 = 60_000;

/// Click `n`: which page, and whether it is a care or an uncare. Every
/// third click takes a care back, so counts go down as well as up.
fn click(n: usize) -> (String, &'static str) {
    (format!("page-{}", n % PAGES), if n % 3 == 2 { "Uncared" } else { "Cared" })
}

/// What the instances build: a count per page.
fn expected_counts() -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for n in 0..CLICKS {
        let (page, kind) = click(n);
        *counts.entry(page).or_insert(0) += if kind == "Cared" { 1 } else { -1 };
    }
    counts
}

/// A front end: appends its share of the clicks, `CLICKS_PER_APPEND` at a
/// time.
async fn front_end(client: Client, base: String, writer: usize) {
    let mine: Vec<usize> = (0..CLICKS).filter(|n| n % WRITERS == writer).collect();
    for chunk in mine.chunks(CLICKS_PER_APPEND) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|&n| {
                let (page, kind) = click(n);
                json!({"eventId": uuid::Uuid::new_v4(), "eventType": kind,
                       "data": {"page": page, "user": format!("user-{}", n % 1000), "click": n}})
            })
            .collect();
        let response = client
            .post(format!("{base}/streams/Cares"))
            .header("content-type", EVENTS_JSON)
            .body(Value::Array(events).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "a click append");
    }
}

/// What all the instances share: which click each one handled (counted
/// across instances, so a duplicate is seen wherever it lands), and how
/// many distinct clicks were handled.
#[derive(Default)]
struct Ledger {
    handled: Mutex<HashMap<u64, u32>>,
    distinct: AtomicUsize,
}

/// What one instance did.
struct Instance {
    counts: BTreeMap<String, i64>,
    handled: usize,
    requests: usize,
}

/// A read-side instance as the team would write it with a persistent
/// subscription: take a batch with bodies (long-polling when idle), apply
/// it to its own page counts, acknowledge the batch.
async fn read_side_instance(base: String, name: String, ledger: Arc<Ledger>) -> Instance {
    let client = anonymous_client();
    let mut instance = Instance { counts: BTreeMap::new(), handled: 0, requests: 0 };
    let deadline = Instant::now() + Duration::from_secs(300);
    while ledger.distinct.load(Ordering::SeqCst) < CLICKS {
        assert!(Instant::now() < deadline, "{name}: the clicks were not all handled within 300 s");
        let response = client
            .get(format!("{base}/subscriptions/Cares/page-counts/{TAKE}?embed=body"))
            .header("accept", COMPETING_JSON)
            .header("es-consumer", &name)
            .header("es-longpoll", "1")
            .send()
            .await
            .unwrap();
        instance.requests += 1;
        assert_eq!(response.status(), 200, "{name} takes messages");
        let feed: Value = response.json().await.unwrap();
        let entries = feed["entries"].as_array().unwrap();
        if entries.is_empty() {
            continue;
        }
        for entry in entries {
            let data: Value =
                serde_json::from_str(entry["data"].as_str().expect("the body is embedded")).unwrap();
            let delta = match entry["eventType"].as_str().unwrap() {
                "Cared" => 1,
                "Uncared" => -1,
                other => panic!("{name}: an event of type {other} in Cares"),
            };
            *instance.counts.entry(data["page"].as_str().unwrap().to_owned()).or_insert(0) += delta;
            instance.handled += 1;
            let number = entry["eventNumber"].as_u64().unwrap();
            let times = {
                let mut handled = ledger.handled.lock().unwrap();
                let times = handled.entry(number).or_insert(0);
                *times += 1;
                *times
            };
            if times == 1 {
                ledger.distinct.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ack_all = link(&feed, "ackAll").expect("a batch has an ackAll link");
        let response = client.post(ack_all).header("es-consumer", &name).send().await.unwrap();
        instance.requests += 1;
        assert_eq!(response.status(), 202, "{name} acknowledges its batch");
    }
    instance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_read_side_instances_count_every_click_once_with_a_request_per_ten_events() {
    let server = TestServer::start().await;
    // Groups are managed by `$admins`; the instances and front ends need no
    // credentials (reading and writing a user stream).
    let created = server
        .client
        .put(server.url("/subscriptions/Cares/page-counts"))
        .header("content-type", "application/json")
        .body(json!({"startFrom": 0, "messageTimeoutMilliseconds": MESSAGE_TIMEOUT_MS}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // The instances start first and wait for work, as deployed ones do.
    let ledger = Arc::new(Ledger::default());
    let instances: Vec<_> = (0..INSTANCES)
        .map(|i| {
            tokio::spawn(read_side_instance(server.base.clone(), format!("counts-{i}"), Arc::clone(&ledger)))
        })
        .collect();
    let front_ends: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(front_end(anonymous_client(), server.base.clone(), w))).collect();
    for front_end in front_ends {
        front_end.await.unwrap();
    }
    let mut done = Vec::new();
    for instance in instances {
        done.push(instance.await.unwrap());
    }

    let handled = ledger.handled.lock().unwrap().clone();
    let duplicates: u32 = handled.values().map(|times| times - 1).sum();
    let requests: usize = done.iter().map(|i| i.requests).sum();
    let shares: Vec<usize> = done.iter().map(|i| i.handled).collect();
    eprintln!(
        "REPORT care button: {CLICKS} clicks, {} handled by {INSTANCES} instances ({shares:?}), \
         {duplicates} duplicates, {requests} requests ({:.3} per event)",
        shares.iter().sum::<usize>(),
        requests as f64 / CLICKS as f64
    );
    assert_eq!(handled.len(), CLICKS, "every click was handled");
    assert!(handled.keys().all(|&n| n < CLICKS as u64), "only the clicks' event numbers");
    assert_eq!(duplicates, 0, "no click handled twice: no lease timed out, so none may be redelivered");

    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for instance in &done {
        for (page, count) in &instance.counts {
            *counts.entry(page.clone()).or_insert(0) += count;
        }
    }
    assert_eq!(counts, expected_counts(), "the page counts the instances built equal the clicks");
    assert!(shares.iter().all(|&share| share > 0), "every instance took part of the work: {shares:?}");
    assert!(
        requests * 10 <= CLICKS,
        "at most one request per ten events (bodies embedded, one ack per batch): {requests} requests"
    );

    // The server agrees: everything processed, nothing in flight or parked.
    let info: Value = server.get_json("/subscriptions/Cares/page-counts/info").await;
    assert_eq!(info["totalInFlightMessages"], 0, "{info:#}");
    assert_eq!(info["parkedMessageCount"].as_u64().unwrap_or(0), 0, "{info:#}");
}

/// One take of a group through Varnish, without bodies; returns the feed.
async fn take_without_bodies(chain: &Chain, group: &str, consumer: &str) -> Value {
    let response = anonymous_client()
        .get(chain.url(&format!("/subscriptions/Cares/{group}/{TAKE}")))
        .header("accept", COMPETING_JSON)
        .header("es-consumer", consumer)
        .header("es-longpoll", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Drains `group` through Varnish as an instance that fetches each event's
/// body on its own (by the entry's `alternate` link, which names Varnish);
/// returns, per event path, whether Varnish answered from its cache.
async fn drain_fetching_bodies(chain: &Chain, group: &str, events: usize) -> BTreeMap<String, bool> {
    let client = anonymous_client();
    let mut fetched = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetched.len() < events {
        assert!(Instant::now() < deadline, "{group}: only {} of {events} events within 60 s", fetched.len());
        let feed = take_without_bodies(chain, group, "rebuilder").await;
        let entries = feed["entries"].as_array().unwrap();
        for entry in entries {
            assert!(entry.get("data").is_none(), "no body is embedded without ?embed=body");
            let url = link(entry, "alternate").unwrap();
            let response = client.get(&url).header("accept", "application/json").send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let hit = is_cache_hit(response.headers());
            let body: Value = response.json().await.unwrap();
            assert!(body["page"].as_str().unwrap().starts_with("page-"), "{body}");
            let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
            fetched.insert(format!("/{path}"), hit);
        }
        if let Some(ack_all) = link(&feed, "ackAll") {
            let response = client.post(ack_all).header("es-consumer", "rebuilder").send().await.unwrap();
            assert_eq!(response.status(), 202);
        }
    }
    fetched
}

#[tokio::test]
async fn bodies_fetched_one_by_one_through_varnish_are_hits_the_second_time() {
    const EVENTS: usize = 200;
    let chain = Chain::start().await;
    for group in ["page-counts", "page-counts-rebuild"] {
        // No lease may time out: a redelivered event would be fetched twice
        // in the first drain, and its second fetch is a hit.
        let created = chain
            .server
            .client
            .put(chain.server.url(&format!("/subscriptions/Cares/{group}")))
            .header("content-type", "application/json")
            .body(json!({"messageTimeoutMilliseconds": MESSAGE_TIMEOUT_MS}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    for first in (0..EVENTS).step_by(CLICKS_PER_APPEND) {
        let events: Vec<Value> = (first..first + CLICKS_PER_APPEND)
            .map(|n| {
                let (page, kind) = click(n);
                json!({"eventId": uuid::Uuid::new_v4(), "eventType": kind, "data": {"page": page, "click": n}})
            })
            .collect();
        assert_eq!(chain.server.post_events("Cares", &Value::Array(events)).await.status(), 201);
    }

    let first = drain_fetching_bodies(&chain, "page-counts", EVENTS).await;
    assert_eq!(first.len(), EVENTS);
    assert!(first.values().all(|hit| !hit), "the first fetch of each event is a miss");
    let second = drain_fetching_bodies(&chain, "page-counts-rebuild", EVENTS).await;
    assert_eq!(second.keys().collect::<Vec<_>>(), first.keys().collect::<Vec<_>>(), "the same events");
    let misses: Vec<_> = second.iter().filter(|(_, hit)| !**hit).map(|(path, _)| path).collect();
    assert!(misses.is_empty(), "every second fetch is a hit, but these were not: {misses:?}");
    for path in first.keys() {
        let reached: Vec<_> = chain.backend_requests(path);
        assert_eq!(reached.len(), 1, "eventfeed served {path} once, Varnish the rest: {reached:?}");
    }
    // The messages themselves are never cached: each take reached eventfeed.
    let takes = chain
        .backend_requests("/subscriptions/Cares/page-counts-rebuild/50")
        .into_iter()
        .filter(|exchange| exchange.method == "GET")
        .count();
    assert!(takes >= EVENTS / TAKE, "every take of messages reached eventfeed ({takes})");
}
