//! `GET /info`'s figures for operators and the web UI's dashboard: the
//! counts (streams, events, reads, appends) are exact, they move with
//! appends and reads, the rates and the store's size follow within a
//! sample or two, and the last scavenge is reported, also after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{
    ATOM_JSON, TestServer, anonymous_client, event, start_scavenge, wait_for, wait_for_projections,
};

async fn info(server: &TestServer) -> Value {
    let response = anonymous_client().get(server.url("/info")).send().await.unwrap();
    assert_eq!(response.status(), 200, "everyone may read /info");
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

/// Reads `/info` until `done` holds; the sampler takes one sample every
/// 5 s, so a few samples' time is generous.
async fn info_when(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = info(server).await;
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "/info never showed {what}: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a number: {value}"))
}

#[tokio::test]
async fn the_counts_are_exact_and_move_with_appends_and_reads() {
    let server = TestServer::start().await;
    wait_for_projections(&server.client, &server.base).await;
    let before = info(&server).await;
    assert_eq!(before["streams"], 0);
    assert_eq!(before["events"], before["nextPosition"]);
    assert_eq!(before["activity"]["readsServed"], 0);
    assert!(before["scavenge"].is_null(), "{before}");
    assert!(before["startedAt"].as_str().unwrap().ends_with('Z'));
    assert!(before["uptimeSeconds"].as_u64().is_some());

    server.append_n("info-a", 5).await;
    server.append_n("info-b", 10).await;
    server.append_n("info-a", 6).await;
    server.append_n("info-c", 1).await;
    let after_appends = info(&server).await;
    assert_eq!(after_appends["streams"], 3, "user streams, from $streams");
    assert_eq!(number(&after_appends["events"]), number(&before["events"]) + 22);
    assert_eq!(after_appends["events"], after_appends["nextPosition"]);
    let appended = &after_appends["activity"]["appendedEvents"];
    assert_eq!(number(appended), number(&before["activity"]["appendedEvents"]) + 22);

    // Pages and single events count as reads, for anyone; /info does not.
    for path in
        ["/streams/info-a", "/streams/info-a/0", "/streams/info-b/0/forward/5", "/streams/info-c/head"]
    {
        let response =
            anonymous_client().get(server.url(path)).header("accept", ATOM_JSON).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let after_reads = info(&server).await;
    assert_eq!(after_reads["activity"]["readsServed"], 4);
    assert_eq!(after_reads["streams"], 3);

    // The sampler turns the counts into rates, and measures the store.
    let sampled = info_when(&server, "rates", |info| {
        let rates = |name: &str| {
            info["activity"][name].as_array().unwrap().iter().any(|rate| rate.as_f64() > Some(0.0))
        };
        rates("appendedPerSecond") && rates("readsPerSecond") && info["storeBytes"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(sampled["activity"]["sampleSeconds"], 5);
    let appended: f64 =
        sampled["activity"]["appendedPerSecond"].as_array().unwrap().iter().filter_map(Value::as_f64).sum();
    // Each rate is events per second over one interval of 5 s or a little
    // more (a busy machine delays a sample; it never hastens one).
    assert!(appended * 5.0 <= 22.5 && appended * 5.0 >= 11.0, "{sampled}");
}

#[tokio::test]
async fn the_last_scavenge_is_reported_also_after_a_restart() {
    let server = TestServer::start().await;
    server.append_n("info-scavenged", 3).await;
    let id = start_scavenge(&server.client, &server.base).await;
    wait_for(&server.client, &server.base, &id, |report| report["status"] != "running").await;
    let scavenge = info(&server).await["scavenge"].clone();
    assert_eq!(scavenge["scavengeId"], id.as_str());
    assert_eq!(scavenge["status"], "completed");
    assert!(scavenge["finished"].is_string() && scavenge["bytesAfter"].is_u64(), "{scavenge}");

    let server = server.restart().await;
    let info = info(&server).await;
    assert_eq!(info["scavenge"]["scavengeId"], id.as_str());
    assert_eq!(info["streams"], 1);
    assert_eq!(info["activity"]["appendedEvents"], 0, "counted since this start");
    assert_eq!(info["activity"]["readsServed"], 0);
}

#[tokio::test]
async fn without_the_streams_projection_the_stream_count_is_unknown() {
    let server = TestServer::start_with(|config| config.projection_streams = false).await;
    let response = server.post_events("info-unlisted", &json!([event("Tested", json!({}))])).await;
    assert_eq!(response.status(), 201);
    let info = info(&server).await;
    assert!(info["streams"].is_null(), "{info}");
    assert!(number(&info["events"]) >= 1);
}
