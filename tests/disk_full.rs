//! A full disk is a state, not a crash: on a real small filesystem (a
//! tmpfs), appends are refused with `507` before the disk fills and resume
//! by themselves when space returns; a start on a full disk refuses and
//! leaves the store as it was; what an earlier start left half-written
//! does not stop the next; and every acknowledged event survives all of it.
//!
//! Mounting needs root (as CI runs); elsewhere the test says it was
//! skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tmpfs::Tmpfs;
use common::{BinaryServer, EVENTS_JSON, client, read_all_events};
use reqwest::Client;
use serde_json::{Value, json};
use uuid::Uuid;

/// Fills the filesystem of `path` with a file there until it is full, or
/// until it holds `limit` bytes.
fn fill(path: &Path, limit: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut written = 0;
    while written < limit && file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.sync_all();
}

/// Every file of the store, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// Runs the server until it exits or logs that it listens: its exit
/// status and log when it exited on its own.
fn start_expecting_failure(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_eventfeed"), "serve", "--data-dir"])
        .arg(data_dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A server without the free-space floor, on a tmpfs of `megabytes`, and
/// its data directory; `None`, said, where this process may not mount.
fn floorless_on_tmpfs(megabytes: u64) -> Option<(Tmpfs, PathBuf, BinaryServer)> {
    let Some(disk) = Tmpfs::mount(megabytes) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    };
    let data_dir = disk.path.join("data");
    let server = BinaryServer::start(&data_dir, &["--min-free-mb", "0"]);
    Some((disk, data_dir, server))
}

/// Waits up to 30 s for a server that stops by itself: how it exited.
fn stopped_by_itself(server: &mut BinaryServer) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            return exit;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One acknowledged append.
struct Acked {
    first_number: u64,
    ids: Vec<String>,
}

/// Appends 8 events of 32 KiB to `stream` until the server answers
/// anything but 201 (or `most` appends went through): the acknowledged
/// appends, then the refusal's status, headers and body.
async fn append_until_not_created(
    client: &Client,
    server: &BinaryServer,
    stream: &str,
    most: usize,
) -> (Vec<Acked>, Option<(u16, reqwest::header::HeaderMap, String)>) {
    let mut acked = Vec::new();
    for _ in 0..most {
        let ids: Vec<String> = (0..8).map(|_| Uuid::new_v4().to_string()).collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|id| json!({"eventId": id, "eventType": "Filled", "data": {"pad": "x".repeat(32 * 1024)}}))
            .collect();
        let response = client
            .post(server.url(&format!("/streams/{stream}")))
            .header("content-type", EVENTS_JSON)
            .body(Value::Array(events).to_string())
            .send()
            .await
            .unwrap();
        if response.status() != 201 {
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            return (acked, Some((status, headers, response.text().await.unwrap())));
        }
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let first_number = location.rsplit('/').next().unwrap().parse().unwrap();
        acked.push(Acked { first_number, ids });
    }
    (acked, None)
}

/// Appends until the server refuses with 507, as it must before the disk
/// fills: the acknowledged appends.
async fn append_until_refused(
    client: &Client,
    server: &BinaryServer,
    stream: &str,
    most: usize,
) -> Vec<Acked> {
    let (acked, refusal) = append_until_not_created(client, server, stream, most).await;
    let Some((status, headers, body)) = refusal else { panic!("{most} appends and the disk never filled") };
    assert_eq!(status, 507, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("Insufficient Storage") && body.contains("--min-free-mb"), "{body}");
    acked
}

/// Every acknowledged event is in `stream`, where its Location said.
async fn assert_all_there(client: &Client, server: &BinaryServer, stream: &str, acked: &[Acked]) {
    let events = read_all_events(client, &server.base, stream).await;
    let expected: usize = acked.iter().map(|append| append.ids.len()).sum();
    assert_eq!(events.len(), expected, "{stream} holds every acknowledged event and nothing else");
    for append in acked {
        for (offset, id) in append.ids.iter().enumerate() {
            let event = &events[append.first_number as usize + offset];
            assert_eq!(event["eventId"], id.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_and_never_costs_an_acknowledged_event() {
    let Some(disk) = Tmpfs::mount(64) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data_dir = disk.path.join("data");
    let filler = disk.path.join("filler");
    fill(&filler, 24 * 1024 * 1024);
    let client = client();

    // Appends stop with 507 at the floor; reads go on.
    let floor: &[&str] = &["--min-free-mb", "8"];
    let mut server = BinaryServer::start(&data_dir, floor);
    let mut acked = append_until_refused(&client, &server, "disk", 2000).await;
    assert!(acked.len() > 10, "the disk took some appends ({})", acked.len());
    assert_all_there(&client, &server, "disk", &acked).await;
    let all = client.get(server.url("/streams/$all")).header("accept", "application/json").send().await;
    assert_eq!(all.unwrap().status(), 200);

    // Space returns: appends go through again, no restart.
    std::fs::remove_file(&filler).unwrap();
    let more = append_until_refused(&client, &server, "disk", 4000).await;
    assert!(!more.is_empty(), "appends resumed when space returned");
    acked.extend(more);

    // Full to the last byte: health says appends are refused, and why;
    // then killed.
    fill(&filler, u64::MAX);
    let info: Value = client.get(server.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["writes"]["accepting"], false, "{info}");
    assert!(info["writes"]["reason"].as_str().unwrap().contains("--min-free-mb"), "{info}");
    assert!(info["disk"]["freeBytes"].as_u64().unwrap() < 8 * 1024 * 1024, "{info}");
    assert_eq!(client.get(server.url("/ping")).send().await.unwrap().status(), 200, "reads go on");
    server.kill9();
    let before = files(&data_dir);

    // A start on the full disk refuses, says why, and changes nothing.
    let (started, log) = start_expecting_failure(&data_dir, &[]);
    assert!(!started, "a start on a full disk fails");
    assert!(log.contains("--min-free-mb"), "the refusal says what to do: {log}");
    assert_eq!(files(&data_dir), before, "the refused start left the store as it was");

    // Without the floor, the engine itself meets the full disk at open
    // (it writes a snapshot first): whatever it leaves half-written must
    // not stop the next start.
    let (started, _) = start_expecting_failure(&data_dir, &["--min-free-mb", "0"]);
    assert!(!started, "sled cannot open on a full disk");

    // Space returns: the filler goes, and the disk grows, since the
    // appends after the first refusal may have filled it to just above the
    // floor, which opening the store can then cross.
    std::fs::remove_file(&filler).unwrap();
    disk.resize(96);
    let server = BinaryServer::start(&data_dir, floor);
    assert_all_there(&client, &server, "disk", &acked).await;
    let info: Value = client.get(server.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["writes"], json!({"accepting": true, "reason": null}), "{info}");
    let response = client
        .post(server.url("/streams/disk"))
        .header("content-type", EVENTS_JSON)
        .body(json!([{"eventId": Uuid::new_v4(), "eventType": "Filled", "data": {}}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "appends work after the restart");
}

/// Without the floor, the disk fills under the engine: the append that
/// meets it gets `503` (its outcome unknown: retry with the same ids), the
/// server stops by itself with a failed exit, and a restart finds every
/// acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_anyway_costs_no_acknowledged_event_and_no_hang() {
    let Some((disk, data_dir, mut server)) = floorless_on_tmpfs(48) else { return };
    let client = client();
    let (calm, _) = append_until_not_created(&client, &server, "calm", 3).await;
    assert_eq!(calm.len(), 3);
    let (acked, refusal) = append_until_not_created(&client, &server, "disk", 4000).await;
    let (status, _, body) = refusal.expect("the disk filled");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("same event ids"), "the answer says what to do: {body}");

    // The server stops by itself, as after SIGTERM, and exits with a
    // failure, so that its supervisor restarts it: only a restart replays
    // what is durable and nothing else.
    let exit = stopped_by_itself(&mut server);
    assert!(!exit.success(), "a store failure is a failed exit ({exit:?})");

    // Space returns (the filesystem grows), and a restart finds every
    // acknowledged event.
    disk.resize(96);
    let server = BinaryServer::start(&data_dir, &["--min-free-mb", "0"]);
    assert_all_there(&client, &server, "calm", &calm).await;
    let events = read_all_events(&client, &server.base, "disk").await;
    for append in &acked {
        for (offset, id) in append.ids.iter().enumerate() {
            assert_eq!(events[append.first_number as usize + offset]["eventId"], id.as_str());
        }
    }
}

/// The bytes still free on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    let output = Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// An append of one event of `pad` bytes to each of `streams` and, if
/// `big` says so, one of a 512 KiB event to `big`: one request, so one
/// batch.
fn parts(streams: &[String], ids: &[Uuid], pad: usize, big: Option<(&str, Uuid)>) -> String {
    let event = |id: &Uuid| json!({"eventId": id, "eventType": "Part", "data": {"pad": "x".repeat(pad)}});
    let mut parts: Vec<Value> = streams
        .iter()
        .zip(ids)
        .map(|(stream, id)| json!({"stream": stream, "events": [event(id)]}))
        .collect();
    if let Some((stream, id)) = big {
        let event = json!({"eventId": id, "eventType": "Big", "data": {"pad": "x".repeat(512 * 1024)}});
        parts.push(json!({"stream": stream, "events": [event]}));
    }
    Value::Array(parts).to_string()
}

/// Without the floor, a batch of many keys meets the full disk at its one
/// big value. sled applies a batch's keys in no fixed order, so the keys it
/// applied before the big one would stay (and be written at its close):
/// states from a commit that never happened, which every read of those
/// streams would wait for in vain. The restart takes that part back: every
/// stream reads as before, at once, and the same request then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_full_disk_cut_short_is_taken_back_at_the_restart() {
    let Some((disk, data_dir, mut server)) = floorless_on_tmpfs(48) else { return };
    let client = client();
    let streams: Vec<String> = (0..40).map(|i| format!("part-{i}")).collect();
    let post = |server: &BinaryServer, body: String| {
        client
            .post(server.url("/streams"))
            .header("content-type", "application/json")
            .timeout(std::time::Duration::from_secs(20))
            .body(body)
            .send()
    };
    let first: Vec<Uuid> = streams.iter().map(|_| Uuid::new_v4()).collect();
    assert_eq!(post(&server, parts(&streams, &first, 0, None)).await.unwrap().status(), 201);

    // The disk fills until less than the big event is left.
    let filler = disk.path.join("filler");
    let leave = 1200 * 1024;
    let fill_bytes = free_bytes(&disk.path).saturating_sub(leave);
    std::fs::write(&filler, vec![0x5a_u8; fill_bytes as usize]).unwrap();
    let second: Vec<Uuid> = streams.iter().map(|_| Uuid::new_v4()).collect();
    let big = ("big", Uuid::new_v4());
    let request = parts(&streams, &second, 90 * 1024, Some(big));
    let response = post(&server, request.clone()).await.unwrap();
    assert_eq!(response.status(), 503, "{}", response.text().await.unwrap());
    stopped_by_itself(&mut server);

    std::fs::remove_file(&filler).unwrap();
    let server = BinaryServer::start(&data_dir, &["--min-free-mb", "0"]);
    for (stream, id) in streams.iter().zip(&first) {
        let read = client
            .get(server.url(&format!("/streams/{stream}/0/forward/20?embed=body")))
            .header("accept", "application/json")
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{stream} reads at once after the restart: {error}"));
        assert_eq!(read.status(), 200, "{stream}");
        let page: Value = read.json().await.unwrap();
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{stream} holds its first event and nothing of the failed batch");
        assert_eq!(entries[0]["eventId"], id.to_string());
    }
    let read = client.get(server.url("/streams/big")).timeout(std::time::Duration::from_secs(5)).send();
    assert_eq!(read.await.unwrap().status(), 404, "the big event's stream was never created");

    // Retried with the same ids, as the 503 asked: written once, in full.
    assert_eq!(post(&server, request).await.unwrap().status(), 201);
    for (stream, id) in streams.iter().zip(&second) {
        let events = read_all_events(&client, &server.base, stream).await;
        assert_eq!(events.len(), 2, "{stream}");
        assert_eq!(events[1]["eventId"], id.to_string());
    }
    assert_eq!(read_all_events(&client, &server.base, "big").await.len(), 1);
}
