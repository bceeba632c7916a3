//! `eventfeed backup` of a running server, `eventfeed verify`, and a server
//! started on the copy: taken while eight clients append without pause,
//! the backup verifies, and the copy holds exactly the log below its
//! recorded head position: every event acknowledged before the backup
//! began, none begun after it ended, the same bytes as the original for
//! every page below the head. Appends never stall for the backup beyond
//! its snapshot of the stream states: the test prints the longest append
//! latency with and without a backup running (a figure, not an assertion).
//! Only `$admins` may take one: anyone else gets 401 (as v5 answers every
//! denial), and nothing is written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ATOM_JSON, EVENTS_JSON, TestServer, anonymous_client, client, event};
use serde_json::{Value, json};

/// Clients appending at once.
const LOADERS: usize = 8;

/// Runs the binary with `args` off the test's threads (the servers the
/// tests start run on them); returns whether it succeeded and what it said
/// on standard error.
async fn eventfeed(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_eventfeed")).args(args).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
    .unwrap()
}

/// One acknowledged append: its stream and number, when it was sent and
/// when it was answered.
#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    number: u64,
    sent: Instant,
    answered: Instant,
}

/// Appends one event at a time to `Load-{n}` until told to stop.
async fn load(base: String, n: usize, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let client = client();
    let stream = format!("Load-{n}");
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Acquire) {
        let body = Value::Array(vec![event("Loaded", json!({ "i": i }))]).to_string();
        let sent = Instant::now();
        let response = client
            .post(format!("{base}/streams/{stream}"))
            .header("content-type", EVENTS_JSON)
            .body(body)
            .send()
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let number = location.rsplit('/').next().unwrap().parse().unwrap();
        acked.push(Acked { stream: stream.clone(), number, sent, answered });
        i += 1;
    }
    acked
}

/// The longest and the 99th-percentile latency of the appends `within`
/// selects, and how many there were.
fn max_latency(acked: &[Acked], within: impl Fn(&Acked) -> bool) -> (Duration, Duration, usize) {
    let mut latencies: Vec<Duration> =
        acked.iter().filter(|a| within(a)).map(|a| a.answered - a.sent).collect();
    latencies.sort_unstable();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
    (latencies.last().copied().unwrap_or_default(), p99, latencies.len())
}

fn token(position: u64) -> String {
    format!("{position:016X}{position:016X}")
}

/// A page's entries, read with a `Host` of its own so that the links in
/// them name no port.
async fn entries(base: &str, path: &str) -> Vec<Value> {
    let response = client()
        .get(format!("{base}{path}"))
        .header("accept", ATOM_JSON)
        .header("host", "h.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let page: Value = response.json().await.unwrap();
    page["entries"].as_array().unwrap().clone()
}

/// Every event of `stream`, oldest first, with its body.
async fn stream_events(base: &str, stream: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for from in (0..).step_by(100) {
        let mut page = entries(base, &format!("/streams/{stream}/{from}/forward/100?embed=body")).await;
        if page.is_empty() {
            return events;
        }
        page.reverse();
        events.extend(page);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_holds_exactly_the_log_below_its_head() {
    let mut server = TestServer::start().await;
    for n in 0..20 {
        server.append_n(&format!("Seed-{n}"), 30).await;
    }
    assert_eq!(server.set_metadata("Seed-1", json!({"$maxCount": 5})).await.status(), 201);
    assert_eq!(server.client.delete(server.url("/streams/Seed-2")).send().await.unwrap().status(), 204);

    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> =
        (0..LOADERS).map(|n| tokio::spawn(load(server.base.clone(), n, Arc::clone(&stop)))).collect();
    // A while without a backup, for the reference figure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let work = tempfile::tempdir().unwrap();
    let backup_dir = work.path().join("backup");
    let started = Instant::now();
    let dir = backup_dir.to_str().unwrap();
    let (ok, said) =
        eventfeed(&["backup", "--to", dir, "--server", &server.base, "--user", "admin:changeit"]).await;
    let ended = Instant::now();
    assert!(ok, "{said}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    for loader in loaders {
        acked.extend(loader.await.unwrap());
    }

    let (during, during_p99, during_count) =
        max_latency(&acked, |a| a.sent >= started && a.answered <= ended);
    let (before, before_p99, before_count) = max_latency(&acked, |a| a.answered < started);
    eprintln!(
        "backup took {:?}; append latency without a backup: max {before:?}, p99 {before_p99:?} ({before_count} appends); during it: max {during:?}, p99 {during_p99:?} ({during_count} appends)",
        ended - started
    );
    assert!(during_count > 0, "appends went on during the backup");

    let (ok, said) = eventfeed(&["verify", backup_dir.to_str().unwrap()]).await;
    assert!(ok && said.contains("backup verified"), "{said}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(backup_dir.join("manifest.json")).unwrap()).unwrap();
    let head = manifest["headPosition"].as_u64().unwrap();

    let mut copy = TestServer::start_with(|config| config.data_dir = backup_dir.join("store")).await;
    // Every acknowledged append before the backup began is in the copy,
    // none begun after it ended, and the copy's events are the original's.
    for n in 0..LOADERS {
        let stream = format!("Load-{n}");
        let copied = stream_events(&copy.base, &stream).await;
        let last_copied = copied.len() as i64 - 1;
        for a in acked.iter().filter(|a| a.stream == stream) {
            if a.answered < started {
                assert!(
                    a.number as i64 <= last_copied,
                    "{stream}/{} acknowledged before the backup",
                    a.number
                );
            }
            if a.sent > ended {
                assert!(a.number as i64 > last_copied, "{stream}/{} sent after the backup", a.number);
            }
        }
        let original = stream_events(&server.base, &stream).await;
        assert_eq!(copied[..], original[..copied.len()], "{stream}");
    }
    // `$all` below the head, page by page: the copy's entries are the
    // original's (forward pages list the newest first, so the original's
    // last page may have more at its start: those at or above the head).
    let mut total = 0;
    for start in (0..head).step_by(100) {
        let path = format!("/streams/$all/{}/forward/100?embed=body", token(start));
        let (copied, original) = (entries(&copy.base, &path).await, entries(&server.base, &path).await);
        if start + 100 <= head {
            assert_eq!(copied, original, "{path}");
        } else {
            assert_eq!(copied[..], original[original.len() - copied.len()..], "{path}");
        }
        total += copied.len();
    }
    assert!(total > 600, "{total} events below the head {head}");
    let beyond = format!("/streams/$all/{}/forward/20", token(head));
    assert!(entries(&copy.base, &beyond).await.is_empty(), "nothing at or above the head in the copy");
    // Pages the backup did not see change are the same bytes, ETags included.
    for path in ["/streams/Seed-0", "/streams/Seed-1", "/streams/Seed-3/0/forward/20", "/streams/$ce-Seed"] {
        let read = |base: String| async move {
            let response = client()
                .get(format!("{base}{path}"))
                .header("accept", ATOM_JSON)
                .header("host", "h.test")
                .send()
                .await
                .unwrap();
            let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            (response.status(), etag, response.text().await.unwrap())
        };
        assert_eq!(read(copy.base.clone()).await, read(server.base.clone()).await, "{path}");
    }
    assert_eq!(copy.get("/streams/Seed-2", ATOM_JSON).await.status(), 404, "the soft delete is kept");
    copy.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn only_admins_may_back_up_and_a_refusal_writes_nothing() {
    let server = TestServer::start().await;
    server.append_n("Order-1", 3).await;
    let user = json!({"loginName": "erin", "fullName": "Erin", "groups": ["$ops"], "password": "secret-1"});
    let created = server
        .client
        .post(server.url("/users/"))
        .header("content-type", "application/json")
        .body(user.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let anonymous = anonymous_client().get(server.url("/admin/export")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let erin = anonymous_client()
        .get(server.url("/admin/export"))
        .basic_auth("erin", Some("secret-1"))
        .send()
        .await
        .unwrap();
    // v5 answers every denial 401 (with the reason).
    assert_eq!(erin.status(), 401, "$ops may scavenge, but not export");
    assert!(erin.text().await.unwrap().contains("may not export"));
    let admin = client().get(server.url("/admin/export")).send().await.unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.headers()["content-type"], "application/x-ndjson");
    let text = admin.text().await.unwrap();
    assert!(text.starts_with("{\"t\":\"header\"") && text.contains("\"t\":\"end\""), "{text}");

    let work = tempfile::tempdir().unwrap();
    for (user, status) in [("erin:secret-1", "may not export"), ("admin:wrong", "401")] {
        let dir = work.path().join("denied");
        let (ok, said) =
            eventfeed(&["backup", "--to", dir.to_str().unwrap(), "--server", &server.base, "--user", user])
                .await;
        assert!(!ok && said.contains(status), "{said}");
        assert!(!dir.exists(), "nothing is written for a refused backup");
    }
    // Into a directory that holds something: refused, left alone.
    let full = work.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep"), "x").unwrap();
    let (ok, said) = eventfeed(&[
        "backup",
        "--to",
        full.to_str().unwrap(),
        "--server",
        &server.base,
        "--user",
        "admin:changeit",
    ])
    .await;
    assert!(!ok && said.contains("not empty"), "{said}");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    // A backup whose store was changed afterwards fails verification.
    let good = work.path().join("good");
    let (ok, said) = eventfeed(&[
        "backup",
        "--to",
        good.to_str().unwrap(),
        "--server",
        &server.base,
        "--user",
        "admin:changeit",
    ])
    .await;
    assert!(ok, "{said}");
    let (ok, said) = eventfeed(&["verify", good.to_str().unwrap()]).await;
    assert!(ok, "{said}");
    tamper(&good.join("store")).await;
    let (ok, said) = eventfeed(&["verify", good.to_str().unwrap()]).await;
    assert!(!ok && said.contains("does not hold what"), "{said}");
}

/// Appends to the store in `dir` behind the backup's back.
async fn tamper(dir: &Path) {
    let dir = dir.to_owned();
    let mut server = TestServer::start_with(|config| config.data_dir = dir).await;
    server.append_n("Order-1", 1).await;
    server.stop().await;
}

/// An export holds scavenges off until it is read, and its snapshot (the
/// only step appends wait for) is one scan of the stream states: the test
/// prints how long it took for 2,000 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_scavenges_off_and_its_snapshot_is_short() {
    use eventfeed::store::sled::SledStoreOptions;
    use eventfeed::store::{self, Append, ExpectedVersion, ProposedEvent, StoreConfig, StoreError};

    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&StoreConfig::Sled(SledStoreOptions::new(dir.path()))).await.unwrap();
    let appends = (0..2_000).map(|n| Append {
        stream: format!("Stream-{n}"),
        expected: ExpectedVersion::Any,
        events: vec![ProposedEvent {
            id: uuid::Uuid::new_v4(),
            event_type: "Tested".into(),
            is_json: true,
            data: bytes::Bytes::from_static(b"{}"),
            metadata_is_json: false,
            metadata: bytes::Bytes::new(),
        }],
        access: None,
    });
    let appends: Vec<Append> = appends.collect();
    for chunk in appends.chunks(100) {
        store.append_all(chunk.to_vec()).await.unwrap();
    }

    let asked = Instant::now();
    let snapshot = store.export_snapshot().await.unwrap();
    eprintln!("snapshot of {} streams: {:?}", snapshot.streams.len(), asked.elapsed());
    assert!(snapshot.streams.len() > 2_000, "the streams, and the projections' streams");
    assert!(
        matches!(store.start_scavenge().await, Err(StoreError::Busy(_))),
        "held off while an export reads"
    );
    drop(snapshot);
    assert!(store.start_scavenge().await.is_ok(), "and free to start once it is done");
    store.close().await.unwrap();
}
