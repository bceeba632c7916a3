//! Failover on a real Patroni cluster (issue 31): a primary and a
//! synchronous standby (tests/common/patroni.rs), two eventfeed nodes on
//! the multi-host connection string, eight clients appending through
//! both. The primary's machine dies (`kill -9` of its Patroni and its
//! postmaster); Patroni promotes the standby; the nodes find it by
//! themselves. Every acknowledged append must be readable afterwards, in
//! dense positions, and no append may be acknowledged while there is no
//! primary.
//!
//! Its own test target, so a developer can run it alone
//! (`cargo test --test failover`): it takes about half a minute, most of
//! it the leader key's time to live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use common::pages::Walk;
use common::{BinaryServer, EVENTS_JSON, client, patroni, read_all_events};

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// (stream, event id, event number) of every `201`.
    acknowledged: Vec<(String, String, u64)>,
    /// When each `201` arrived.
    acknowledged_at: Vec<Instant>,
    /// Every other answer, by status (0: no answer at all).
    refused: HashMap<u16, u64>,
    /// `503`s without a `Retry-After`.
    without_retry_after: u64,
    /// The bodies of answers neither `201` nor `503`, to say what they were.
    unexpected: Vec<String>,
}

fn cluster() -> Option<patroni::Patroni> {
    match patroni::start() {
        Ok(cluster) => Some(cluster),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: a Patroni cluster cannot be started: {why}");
            None
        }
        Err(why) => panic!("a Patroni cluster cannot be started: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_under_load_loses_no_acknowledged_append() {
    let Some(cluster) = cluster() else { return };
    let old_primary = cluster.primary().expect("a primary");
    let url = cluster.url();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<BinaryServer> =
        dirs.iter().map(|dir| BinaryServer::start(&dir.path().join("data"), &["--store", &url])).collect();
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for index in 0..8 {
        let base = bases[index % 2].clone();
        let (stop, total) = (Arc::clone(&stop), Arc::clone(&total));
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let stream = format!("load-{index}");
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                let id = Uuid::new_v4().to_string();
                let body = json!([{"eventId": id, "eventType": "Loaded", "data": {"client": index}}]);
                let sent = client
                    .post(format!("{base}/streams/{stream}"))
                    .header("content-type", EVENTS_JSON)
                    .basic_auth("admin", Some("changeit"))
                    .body(body.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => {
                        let location = response.headers()["location"].to_str().unwrap();
                        let number = location.rsplit('/').next().unwrap().parse().unwrap();
                        seen.acknowledged.push((stream.clone(), id, number));
                        seen.acknowledged_at.push(Instant::now());
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if status == 503 && response.headers().get("retry-after").is_none() {
                            seen.without_retry_after += 1;
                        }
                        *seen.refused.entry(status).or_default() += 1;
                        if status != 503 {
                            seen.unexpected
                                .push(format!("{status}: {}", response.text().await.unwrap_or_default()));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {
                        *seen.refused.entry(0).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            seen
        }));
    }

    common::wait_until("200 acknowledged appends", Duration::from_secs(60), || {
        total.load(Ordering::Relaxed) >= 200
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill_member(old_primary);
    let promoted = tokio::task::spawn_blocking(move || {
        cluster
            .wait(|cluster| cluster.primary().is_some_and(|p| p != old_primary), "promoted standby")
            .unwrap();
        cluster
    })
    .await
    .unwrap();
    let promoted_after = killed_at.elapsed();
    // Service resumes by itself: every client is acknowledged again.
    let before = total.load(Ordering::Relaxed);
    common::wait_until("appends acknowledged again after the promotion", Duration::from_secs(60), || {
        total.load(Ordering::Relaxed) >= before + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        seen.push(client.await.unwrap());
    }

    // The outage: the longest time without any acknowledgement.
    let mut times: Vec<Instant> = seen.iter().flat_map(|s| s.acknowledged_at.iter().copied()).collect();
    times.sort();
    let outage = times.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
    let mut refused: HashMap<u16, u64> = HashMap::new();
    for (status, count) in seen.iter().flat_map(|s| s.refused.iter()) {
        *refused.entry(*status).or_default() += count;
    }
    let acknowledged: Vec<&(String, String, u64)> = seen.iter().flat_map(|s| s.acknowledged.iter()).collect();
    eprintln!(
        "failover: primary killed, standby promoted after {promoted_after:?}; appends refused for {outage:?} \
         (longest gap between acknowledgements); {} acknowledged, refused by status (0: no answer): {refused:?}",
        acknowledged.len()
    );
    assert_eq!(seen.iter().map(|s| s.without_retry_after).sum::<u64>(), 0, "every 503 says Retry-After");
    assert!(
        refused.keys().all(|status| [0, 503].contains(status)),
        "while there is no primary appends are refused with 503 (or not answered): {refused:?} {:?}",
        seen.iter().flat_map(|s| s.unexpected.iter()).collect::<Vec<_>>()
    );

    // Every acknowledged append is readable, on both nodes, where its
    // Location said; the streams are dense.
    let client = client();
    for base in &bases {
        let mut found: HashMap<(String, String), u64> = HashMap::new();
        let streams: HashSet<&str> = acknowledged.iter().map(|(stream, _, _)| stream.as_str()).collect();
        for stream in streams {
            for (number, event) in read_all_events(&client, base, stream).await.iter().enumerate() {
                assert_eq!(event["eventNumber"], number as u64, "{stream} is dense on {base}");
                let id = event["eventId"].as_str().unwrap().to_owned();
                found.insert((stream.to_owned(), id), number as u64);
            }
        }
        for (stream, id, number) in &acknowledged {
            assert_eq!(
                found.get(&(stream.clone(), id.clone())),
                Some(number),
                "acknowledged {id} is {number}@{stream} on {base} after the failover"
            );
        }
        assert_all_is_dense(&client, base).await;
    }
    drop(promoted);
}

/// `$all` read forwards from the start: no position between two pages'
/// links is missing.
async fn assert_all_is_dense(client: &reqwest::Client, base: &str) {
    let start = format!("{base}/streams/$all/00000000000000000000000000000000/forward/250");
    let mut previous_end: Option<u64> = None;
    for page in Walk::forward(client, start).until_empty().pages().await.iter() {
        let from = position_in(&page.url);
        if let Some(end) = previous_end {
            assert_eq!(from, end, "$all pages follow on from each other");
        }
        let Some(previous) = page.link("previous") else { break };
        let to = position_in(&previous);
        assert_eq!(to - from, page.entries().len() as u64, "no position between {from} and {to} is missing");
        previous_end = Some(to);
    }
}

fn position_in(url: &str) -> u64 {
    let segment = url.split('/').rev().nth(2).unwrap();
    u64::from_str_radix(&segment[..16], 16).unwrap()
}
