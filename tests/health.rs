//! `/health/live` and `/health/ready`: anonymous, short JSON, never
//! cached; ready turns `503` at a shutdown signal while the server still
//! serves for `--shutdown-drain-secs`, so a load balancer drains it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::tmpfs::Tmpfs;
use common::{BinaryServer, TestServer, anonymous_client};

async fn probe(base: &str, path: &str) -> (u16, Value) {
    let response = anonymous_client().get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    assert_eq!(response.headers()["content-type"], "application/json", "{path}");
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_running_server_is_live_and_ready_to_anyone() {
    let server = TestServer::start().await;
    let (status, body) = probe(&server.base, "/health/live").await;
    assert_eq!((status, body), (200, serde_json::json!({ "status": "live" })));
    let (status, body) = probe(&server.base, "/health/ready").await;
    assert_eq!((status, body), (200, serde_json::json!({ "status": "ready" })));
}

/// The value of an unlabelled sample of the `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_disk_below_its_floor_makes_the_node_not_ready_until_space_returns() {
    if common::backend::sled_only("the free-space floor guards the embedded store's disk") {
        return;
    }
    let Some(disk) = Tmpfs::mount(64) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mut server =
        BinaryServer::start(&disk.path.join("data"), &["--min-free-mb", "16", "--metrics-public"]);
    let base = server.base.clone();
    assert_eq!(probe(&base, "/health/ready").await.0, 200);
    let metrics = |base: String| async move {
        anonymous_client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap()
    };
    let figures = metrics(base.clone()).await;
    assert_eq!(sample(&figures, "eventfeed_writes_accepting"), Some(1.0));
    assert_eq!(sample(&figures, "eventfeed_disk_min_free_bytes"), Some(16.0 * 1024.0 * 1024.0));

    // Fill the disk to within 8 MiB: below the floor, though not full.
    let filler = disk.path.join("filler");
    let free = sample(&figures, "eventfeed_disk_free_bytes").unwrap() as u64;
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a_u8; 1024 * 1024];
    for _ in 0..(free / (1024 * 1024)).saturating_sub(8) {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);

    let (status, body) = probe(&base, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("--min-free-mb"), "{body}");
    assert_eq!(probe(&base, "/health/live").await.0, 200);
    let figures = metrics(base.clone()).await;
    assert_eq!(sample(&figures, "eventfeed_writes_accepting"), Some(0.0));
    let free = sample(&figures, "eventfeed_disk_free_bytes").unwrap();
    assert!(free < sample(&figures, "eventfeed_disk_min_free_bytes").unwrap(), "{figures}");
    let refused = common::client()
        .post(format!("{base}/streams/full"))
        .header("content-type", common::EVENTS_JSON)
        .body(serde_json::json!([common::event("T", serde_json::json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 507);
    let figures = metrics(base.clone()).await;
    assert!(figures.contains("eventfeed_appends_total{outcome=\"refused\"} 1"), "{figures}");

    // Space returns: ready again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(probe(&base, "/health/ready").await.0, 200);
    assert_eq!(sample(&metrics(base.clone()).await, "eventfeed_writes_accepting"), Some(1.0));
    server.terminate();
}

#[tokio::test]
async fn ready_answers_503_from_the_shutdown_signal_while_the_server_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(&dir.path().join("data"), &["--shutdown-drain-secs", "3"]);
    let base = server.base.clone();
    assert_eq!(probe(&base, "/health/ready").await.0, 200);

    let signalled = Instant::now();
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Within moments of the signal, ready says no, with the reason...
    let body = loop {
        let (status, body) = probe(&base, "/health/ready").await;
        if status == 503 {
            break body;
        }
        assert!(signalled.elapsed() < Duration::from_secs(2), "ready still 200 after the signal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["reason"], "shutting down");
    // ...while the server still serves: live, and reads.
    assert_eq!(probe(&base, "/health/live").await.0, 200);
    let info = anonymous_client().get(format!("{base}/info")).send().await.unwrap();
    assert_eq!(info.status(), 200);
    // After the drain it stops, cleanly.
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(3), "the drain is served in full, stopped after {took:?}");
}

#[tokio::test]
async fn without_a_drain_the_listener_closes_at_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(&dir.path().join("data"), &[]);
    assert_eq!(probe(&server.base, "/health/ready").await.0, 200);
    let took = server.terminate();
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
}
