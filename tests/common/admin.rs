//! Waiting on the server's background work: projections and waiters as
//! `/info` reports them, scavenges through `/admin/scavenge`, and
//! [`wait_until`] for anything a test can observe itself.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

/// Waits (up to 60 s) until no projection is being built.
pub async fn wait_for_projections(client: &Client, base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info: Value = client.get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
        if info["projectionsBuilding"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections still building: {}",
            info["projectionsBuilding"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `done` every 10 ms until it holds; fails the test, naming `what`,
/// if it does not within `limit`.
pub async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 30 s) until the server reports at least `count` waiters
/// (long-polls and SSE streams), so a test acts only once they all wait.
pub async fn wait_for_waiters(client: &Client, base: &str, count: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info: Value = client.get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
        if info["waiters"].as_u64().unwrap() >= count {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "only {} of {count} waiters arrived", info["waiters"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a scavenge; returns its id.
pub async fn start_scavenge(client: &Client, base: &str) -> String {
    let response = client.post(format!("{base}/admin/scavenge")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["scavengeId"].as_str().unwrap().to_owned()
}

/// A scavenge's report.
pub async fn report(client: &Client, base: &str, id: &str) -> Value {
    client.get(format!("{base}/admin/scavenge/{id}")).send().await.unwrap().json().await.unwrap()
}

/// Polls a scavenge's report until `until` holds (at most ten minutes).
pub async fn wait_for(client: &Client, base: &str, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let report = report(client, base, id).await;
        if until(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "scavenge did not get there: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The values of counters in a node's `/metrics`, from one scrape (0 for
/// one absent).
pub async fn counters<const N: usize>(client: &Client, base: &str, line_starts: [&str; N]) -> [f64; N] {
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    line_starts.map(|start| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(start))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    })
}
