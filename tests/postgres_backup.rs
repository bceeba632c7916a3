//! Backing up the PostgreSQL backend the way docs/operations.md says:
//! `pg_basebackup` of the cluster while eventfeed serves and appends to
//! it, a second cluster started from the backup, a second eventfeed on
//! that one; then every page that existed at the backup's point answers
//! the same on both (status, ETag, Cache-Control, body), and the restored
//! store holds a prefix of the log: everything acknowledged before the
//! backup began, nothing that was never written.
//!
//! The database is a fresh one in the tests' own cluster
//! (`common::postgres`); without PostgreSQL this test says `SKIPPED`,
//! unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use common::{ATOM_JSON, ATOM_XML, TestServer, event};

/// Every link is built on this host, so the two servers' bytes compare.
const HOST: &str = "eventfeed.test";

/// The page size the compared pages use.
const PAGE: u64 = 20;

/// What a GET answers: status, ETag, Cache-Control and body.
async fn answer(
    server: &TestServer,
    path: &str,
    accept: &str,
) -> (u16, Option<String>, Option<String>, String) {
    let response = server
        .client
        .get(server.url(path))
        .header("accept", accept)
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    let (status, etag, cache_control) = (response.status().as_u16(), header("etag"), header("cache-control"));
    (status, etag, cache_control, response.text().await.unwrap())
}

/// The last event number of `stream` as `server` has it.
async fn last_number(server: &TestServer, stream: &str) -> u64 {
    let head = server.get_json(&format!("/streams/{stream}/head/backward/1?embed=rich")).await;
    head["entries"][0]["eventNumber"].as_u64().expect("a stream with events")
}

/// The next position of `$all`: one past its newest event.
async fn next_position(server: &TestServer) -> u64 {
    server.get_json("/info").await["nextPosition"].as_u64().expect("/info has nextPosition")
}

/// A position in `$all` as eventfeed writes it in its links.
fn format_position(position: u64) -> String {
    format!("{position:016X}{position:016X}")
}

/// A history written before the backup: streams of several pages, a
/// partial page, metadata and both deletes.
async fn write_history(server: &TestServer) {
    server.append_n("Backup-1", 45).await;
    server.append_n("Backup-2", 7).await;
    let metadata = json!({ "$maxCount": 30, "owner": "backups" });
    assert_eq!(server.set_metadata("Backup-1", metadata).await.status(), 201);
    server.append_n("soft", 2).await;
    let soft = server.client.delete(server.url("/streams/soft")).send().await.unwrap();
    assert_eq!(soft.status(), 204);
    server.append_n("hard", 2).await;
    let hard = server.client.delete(server.url("/streams/hard")).header("es-harddelete", "true").send().await;
    assert_eq!(hard.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_taken_while_appending_serves_the_same_pages() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let original = Arc::new(TestServer::start_with(|config| config.store = url.clone()).await);
    write_history(&original).await;
    let acknowledged_before = next_position(&original).await;

    // Appends go on, one event at a time, for the whole backup.
    let appending = Arc::new(AtomicBool::new(true));
    let appended = Arc::new(AtomicU64::new(0));
    let appender = {
        let (server, appending, appended) =
            (Arc::clone(&original), Arc::clone(&appending), Arc::clone(&appended));
        tokio::spawn(async move {
            while appending.load(Ordering::Acquire) || appended.load(Ordering::Acquire) < 2 * PAGE {
                let n = appended.load(Ordering::Acquire);
                let body = Value::Array(vec![event("Appended", json!({ "n": n }))]);
                assert_eq!(server.post_events("live", &body).await.status(), 201);
                appended.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    while appended.load(Ordering::Acquire) < PAGE + 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backup = tokio::task::spawn_blocking(move || cluster.base_backup()).await.unwrap();
    appending.store(false, Ordering::Release);
    appender.await.unwrap();
    let data = backup.unwrap_or_else(|error| panic!("{error}"));

    let restored_cluster = tokio::task::spawn_blocking(move || common::postgres::Cluster::start_from(&data))
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{error}"));
    // The head the backup holds, read before a server opens it (a server
    // could write at start).
    let head = restored_cluster.psql(&database, "SELECT next_position FROM log_head").unwrap();
    let restored_next: u64 = head.parse().unwrap();
    let restored_url = restored_cluster.url(&database);
    let restored = TestServer::start_with(|config| config.store = restored_url).await;

    // A prefix of the log: all that was acknowledged before the backup,
    // and no more than was written.
    let original_next = next_position(&original).await;
    assert!(
        (acknowledged_before..=original_next).contains(&restored_next),
        "restored head {restored_next}: written before the backup {acknowledged_before}, in all {original_next}"
    );
    let live_restored = last_number(&restored, "live").await + 1;
    let live_original = appended.load(Ordering::Acquire);
    assert!(
        (PAGE + 5..=live_original).contains(&live_restored),
        "{live_restored} of {live_original} live events"
    );

    let mut paths: Vec<String> = [
        "/streams/Backup-1",
        "/streams/Backup-1/head/backward/20",
        "/streams/Backup-1/40/backward/20",
        "/streams/Backup-1/15/forward/20",
        "/streams/Backup-1/44",
        "/streams/Backup-1/3",
        "/streams/Backup-1/metadata",
        "/streams/Backup-2",
        "/streams/Backup-2/0/forward/20",
        "/streams/soft",
        "/streams/hard",
        "/streams/$ce-Backup/0/forward/20",
        "/streams/$streams/0/forward/4",
    ]
    .map(str::to_owned)
    .to_vec();
    // Every full page of what both hold, the live stream's and `$all`'s,
    // short of the restored end (a full page is immutable: the original's
    // later appends cannot change it; but one that reaches the end of the
    // stream says `headOfStream`), and each event of the live stream.
    for from in (0..live_restored - PAGE).step_by(PAGE as usize) {
        paths.push(format!("/streams/live/{from}/forward/{PAGE}"));
    }
    for number in 0..live_restored {
        paths.push(format!("/streams/live/{number}"));
    }
    for from in (0..restored_next.saturating_sub(PAGE)).step_by(PAGE as usize) {
        paths.push(format!("/streams/$all/{}/forward/{PAGE}", format_position(from)));
    }
    let mut compared = 0;
    for path in &paths {
        for accept in [ATOM_JSON, ATOM_XML] {
            let (on_original, on_restored) =
                (answer(&original, path, accept).await, answer(&restored, path, accept).await);
            assert_eq!(on_restored, on_original, "GET {path} ({accept})");
            compared += 1;
        }
    }
    assert!(compared >= 2 * (13 + 1 + PAGE + 2), "{compared}");
    // And the restored store takes appends where the backup ended.
    assert_eq!(restored.post_events("live", &json!([event("AfterRestore", json!({}))])).await.status(), 201);
    assert_eq!(last_number(&restored, "live").await, live_restored);
}
