//! A store written by an older release opens in this one and keeps every
//! promise. The fixture in `tests/fixtures/` was written through the HTTP
//! API by the release before event ids became unique per stream (layout 5),
//! with the script beside it: 9,000 events in 90 appends to `bulk-0`..`bulk-2`
//! (enough for the id index to sort the oldest 8,200 ids into a run and keep
//! the rest in segments), then two events in `order-1`. Event `n`'s id ends
//! in `n` as 12 hex digits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{BinaryServer, EVENTS_JSON, client, read_all_events};
use reqwest::Client;
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layout-5-store.tar.xz");

/// The fixture's id of event `n`.
fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The body of an append of events `first..first + count`, as the fixture
/// script wrote it.
fn batch(first: u64, count: u64) -> String {
    let events: Vec<Value> = (first..first + count)
        .map(|n| json!({"eventId": id(n), "eventType": "Happened", "data": {"n": n}}))
        .collect();
    Value::Array(events).to_string()
}

/// Posts `body` to `stream`: the status and the Location, if any.
async fn post(client: &Client, server: &BinaryServer, stream: &str, body: String) -> (u16, Option<String>) {
    let response = client
        .post(server.url(&format!("/streams/{stream}")))
        .header("content-type", EVENTS_JSON)
        .body(body)
        .send()
        .await
        .unwrap();
    let location = response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
    (response.status().as_u16(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_5_store_opens_and_keeps_its_ids_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Command::new("tar").arg("-xJf").arg(FIXTURE).arg("-C").arg(dir.path()).status();
    assert!(unpacked.expect("tar runs").success(), "the fixture unpacks (tar with xz)");
    let data_dir = dir.path().join("store");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let client = client();

    // Every event is there, where it was written.
    for stream in ["bulk-0", "bulk-1", "bulk-2"] {
        let events = read_all_events(&client, &server.base, stream).await;
        assert_eq!(events.len(), 3000, "{stream}");
    }
    let bulk2 = read_all_events(&client, &server.base, "bulk-2").await;
    assert_eq!(bulk2[2900]["eventId"], id(8901), "append 89 is events 2900.. of bulk-2");

    // Retries of old writes are recognised, from the index's run (the
    // first append), its segments (the last bulk append) and the newest.
    for (stream, first, count, location) in [
        ("bulk-0", 1, 100, "/streams/bulk-0/0"),
        ("bulk-2", 8901, 100, "/streams/bulk-2/2900"),
        ("order-1", 100_001, 2, "/streams/order-1/0"),
    ] {
        let answer = post(&client, &server, stream, batch(first, count)).await;
        assert_eq!(answer, (201, Some(server.url(location))), "a retry of {stream} from {first}");
    }
    // A partial match is still a wrong expected version.
    assert_eq!(post(&client, &server, "bulk-0", batch(50, 100)).await.0, 400);

    // The same ids in other streams are new events there, retried in turn.
    for (stream, first, count) in [("customer-1", 100_001, 2), ("audit", 1, 100), ("audit", 8901, 100)] {
        let (status, location) = post(&client, &server, stream, batch(first, count)).await;
        assert_eq!(status, 201, "{stream} from {first}");
        let again = post(&client, &server, stream, batch(first, count)).await;
        assert_eq!(again, (201, location), "a retry of {stream} from {first}");
    }
    let audit = read_all_events(&client, &server.base, "audit").await;
    assert_eq!((audit.len(), audit[100]["eventId"].as_str()), (200, Some(id(8901).as_str())));

    // Through a `kill -9` and a restart: all of it, once.
    server.kill9();
    let server = BinaryServer::start(&data_dir, &[]);
    assert_eq!(read_all_events(&client, &server.base, "customer-1").await.len(), 2);
    assert_eq!(read_all_events(&client, &server.base, "audit").await.len(), 200);
    assert_eq!(read_all_events(&client, &server.base, "order-1").await.len(), 2);
    let answer = post(&client, &server, "customer-1", batch(100_001, 2)).await;
    assert_eq!(answer, (201, Some(server.url("/streams/customer-1/0"))));
}
