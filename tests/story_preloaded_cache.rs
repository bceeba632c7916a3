//! Story 3, the cache that preloads itself, and the audit log. Proves
//! solved what a front-end team needed from the event store: a local cache
//! built from events that never serves cold (at start it reads the category
//! from the beginning, then follows the head with long-polls, so it is
//! complete before it answers and current after), and the same streams
//! readable as an audit log by people with an ordinary feed reader.
//!
//! Here a cache process builds itself from `$ce-Product` (pages with
//! `embed=body`, following `previous` links), says it is ready only at the
//! head, and is then complete; while it long-polls, new events appended
//! one by one are each reflected, in order, and its state equals the
//! store's. How soon after its append each event is reflected is measured
//! and reported (the figure, p99, is `bench/run stories`'s; tests assert
//! no timings). Then Python's `feedparser`, the library feed readers are
//! built on (Debian `python3-feedparser`; `tests/run` installs it), reads
//! a product's stream as Atom over HTTP, newest first, with the right
//! titles, ids and dates. Without it the feed-reader test says `SKIPPED`
//! and passes, unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pages::link;
use common::{ATOM_JSON, EVENTS_JSON, TestServer, client};
use reqwest::Client;
use serde_json::{Value, json};
use tokio::sync::watch;

const PRODUCTS: usize = 200;

/// Events each product has before the cache starts.
const EVENTS_PER_PRODUCT: usize = 10;

/// Events appended one by one once the cache follows the head.
const LIVE_EVENTS: usize = 200;

/// A pause between two live appends, so each is a wake-up of its own
/// rather than one of a burst.
const LIVE_GAP: Duration = Duration::from_millis(5);

/// One product as the cache holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Product {
    name: String,
    price: i64,
    stock: i64,
}

fn product_event(product: usize, n: usize) -> Value {
    let (event_type, data) = match n {
        0 => ("ProductCreated", json!({"name": format!("Product {product}"), "price": 1000 + product})),
        n if n % 2 == 1 => ("StockChanged", json!({"stock": (product * 7 + n) % 50})),
        n => ("PriceChanged", json!({"price": 1000 + product + n})),
    };
    json!({"eventId": uuid::Uuid::new_v4(), "eventType": event_type, "data": data})
}

fn apply(product: &mut Product, event_type: &str, data: &Value) {
    match event_type {
        "ProductCreated" => {
            product.name = data["name"].as_str().unwrap().to_owned();
            product.price = data["price"].as_i64().unwrap();
        }
        "StockChanged" => product.stock = data["stock"].as_i64().unwrap(),
        "PriceChanged" => product.price = data["price"].as_i64().unwrap(),
        other => panic!("an unknown event type {other}"),
    }
}

/// What the cache shares with whoever asks it: the products, and when each
/// event (by id) was reflected.
#[derive(Default)]
struct Cache {
    products: BTreeMap<String, Product>,
    reflected: BTreeMap<String, Instant>,
    /// Event numbers of `$ce-Product` in the order applied.
    positions: Vec<u64>,
}

/// The cache process: from the start of the category, pages with bodies,
/// following `previous` links; at the head it says it is ready, and
/// long-polls the next page from then on. Runs until aborted.
async fn run_cache(base: String, cache: Arc<Mutex<Cache>>, ready: watch::Sender<bool>) {
    let client = client(); // `$ce-` streams are read by `$admins`
    let mut page = format!("{base}/streams/$ce-Product/0/forward/100");
    loop {
        let response = client
            .get(format!("{page}?embed=body"))
            .header("accept", ATOM_JSON)
            .header("es-longpoll", "10")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{page}");
        let feed: Value = response.json().await.unwrap();
        let entries = feed["entries"].as_array().unwrap();
        {
            let mut cache = cache.lock().unwrap();
            for entry in entries.iter().rev() {
                let data: Value = serde_json::from_str(entry["data"].as_str().unwrap()).unwrap();
                let product =
                    cache.products.entry(entry["streamId"].as_str().unwrap().to_owned()).or_default();
                apply(product, entry["eventType"].as_str().unwrap(), &data);
                cache.reflected.insert(entry["eventId"].as_str().unwrap().to_owned(), Instant::now());
                cache.positions.push(entry["positionEventNumber"].as_u64().unwrap());
            }
        }
        if feed["headOfStream"] == true && !*ready.borrow() {
            ready.send_replace(true);
        }
        if let Some(previous) = link(&feed, "previous") {
            page = previous;
        }
    }
}

async fn append(client: &Client, base: &str, stream: &str, events: Vec<Value>) {
    let response = client
        .post(format!("{base}/streams/{stream}"))
        .header("content-type", EVENTS_JSON)
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "append to {stream}");
}

/// The products as the store has them: every stream read from the start.
async fn store_state(server: &TestServer) -> BTreeMap<String, Product> {
    let mut products = BTreeMap::new();
    for product in 0..PRODUCTS {
        let stream = format!("Product-{product}");
        let mut state = Product::default();
        for event in common::read_all_events(&server.client, &server.base, &stream).await {
            let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
            apply(&mut state, event["eventType"].as_str().unwrap(), &data);
        }
        products.insert(stream, state);
    }
    products
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    sorted[((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_is_complete_when_ready_and_reflects_each_new_event() {
    let server = TestServer::start().await;
    let writer = client();
    for product in 0..PRODUCTS {
        let events = (0..EVENTS_PER_PRODUCT).map(|n| product_event(product, n)).collect();
        append(&writer, &server.base, &format!("Product-{product}"), events).await;
    }

    let cache = Arc::new(Mutex::new(Cache::default()));
    let (ready_sender, mut ready) = watch::channel(false);
    let process = tokio::spawn(run_cache(server.base.clone(), Arc::clone(&cache), ready_sender));
    tokio::time::timeout(Duration::from_secs(120), ready.wait_for(|ready| *ready))
        .await
        .expect("the cache reaches the head")
        .unwrap();
    // Never cold: the first state it serves is the whole category.
    let first_served = cache.lock().unwrap().products.clone();
    assert_eq!(first_served, store_state(&server).await, "complete when ready");

    // Live: one event at a time, each timed from just before its append.
    let mut sent = Vec::new();
    for n in 0..LIVE_EVENTS {
        let product = (n * 37) % PRODUCTS;
        let event = product_event(product, EVENTS_PER_PRODUCT + n);
        let id = event["eventId"].as_str().unwrap().to_owned();
        sent.push((id, Instant::now()));
        append(&writer, &server.base, &format!("Product-{product}"), vec![event]).await;
        tokio::time::sleep(LIVE_GAP).await;
    }
    common::wait_until("every live event reflected", Duration::from_secs(60), || {
        let cache = cache.lock().unwrap();
        sent.iter().all(|(id, _)| cache.reflected.contains_key(id))
    })
    .await;
    process.abort();
    let _ = process.await;

    let in_store = store_state(&server).await;
    let cache = cache.lock().unwrap();
    let mut latencies: Vec<Duration> =
        sent.iter().map(|(id, at)| cache.reflected[id].saturating_duration_since(*at)).collect();
    latencies.sort();
    eprintln!(
        "REPORT preloaded cache: {LIVE_EVENTS} live events reflected, after their append p50 {:?}, p99 {:?}, \
         max {:?} (debug build; bench/run stories measures the release build)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    let total = PRODUCTS * EVENTS_PER_PRODUCT + LIVE_EVENTS;
    assert_eq!(cache.positions, (0..total as u64).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(cache.products, in_store, "current after the live events");
}

/// A Python 3 that has feedparser: the one on `PATH`, else Debian's.
fn python_with_feedparser() -> Option<String> {
    ["python3", "/usr/bin/python3"].into_iter().map(str::to_owned).find(|python| {
        Command::new(python)
            .args(["-c", "import feedparser"])
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

/// Reads a feed with feedparser, as a feed reader does (its own HTTP
/// request and `Accept` header), and prints what a reader shows.
const READ_FEED: &str = r#"
import json, sys, feedparser
feed = feedparser.parse(sys.argv[1])
print(json.dumps({
    "status": feed.get("status"),
    "bozo": feed.bozo,
    "version": feed.version,
    "title": feed.feed.get("title"),
    "entries": [{"title": e.get("title"), "id": e.get("id"), "updated": e.get("updated"),
                 "parsed": list(e.updated_parsed)[:6] if e.get("updated_parsed") else None,
                 "link": e.get("link"), "summary": e.get("summary")} for e in feed.entries],
}))
"#;

#[tokio::test]
async fn a_feed_reader_reads_the_audit_log_newest_first() {
    let Some(python) = python_with_feedparser() else {
        let message =
            "feedparser is not installed (Debian: apt-get install python3-feedparser; tests/run installs it)";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    };
    let server = TestServer::start().await;
    let stream = "Product-42";
    let events = (0..EVENTS_PER_PRODUCT).map(|n| product_event(42, n)).collect();
    append(&server.client, &server.base, stream, events).await;

    let url = server.url(&format!("/streams/{stream}"));
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || Command::new(python).args(["-c", READ_FEED, &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "feedparser: {}", String::from_utf8_lossy(&output.stderr));
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read["status"], 200, "{read:#}");
    assert_eq!(read["bozo"], false, "a well-formed feed: {read:#}");
    assert_eq!(read["version"], "atom10", "{read:#}");
    assert_eq!(read["title"], format!("Event stream '{stream}'"), "{read:#}");

    // What the reader shows is what the store holds, newest first.
    let page = server.get_json(&format!("/streams/{stream}")).await;
    let expected = page["entries"].as_array().unwrap();
    let shown = read["entries"].as_array().unwrap();
    assert_eq!(shown.len(), EVENTS_PER_PRODUCT);
    assert_eq!(shown.len(), expected.len());
    for (index, (shown, expected)) in shown.iter().zip(expected).enumerate() {
        let number = EVENTS_PER_PRODUCT - 1 - index;
        assert_eq!(shown["title"], format!("{number}@{stream}"), "newest first");
        assert_eq!(shown["id"], expected["id"]);
        assert_eq!(shown["id"], server.url(&format!("/streams/{stream}/{number}")));
        assert_eq!(shown["updated"], expected["updated"]);
        assert_eq!(shown["summary"], expected["summary"], "the event type");
        // The date as a reader shows it: the event's time, to the second.
        let updated = expected["updated"].as_str().unwrap();
        let fields: Vec<i64> =
            updated[..19].split(|c: char| !c.is_ascii_digit()).map(|field| field.parse().unwrap()).collect();
        let parsed: Vec<i64> =
            shown["parsed"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(parsed, fields, "{updated} as feedparser read it");
    }
}
