//! A page holds a bounded amount of event data (`store::rules::READ_BYTES`,
//! or one event when a single one is larger), so a client that asks for
//! pages of big events and never reads them costs the server that much per
//! connection, not the whole page; and a client that follows the links
//! still gets every event, once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::pages::Walk;
use common::{BinaryServer, EVENTS_JSON, TestServer, client};
use serde_json::{Value, json};
use uuid::Uuid;

/// `count` events of about `bytes` of JSON data each, in `stream`.
async fn append_big(client: &reqwest::Client, base: &str, stream: &str, count: usize, bytes: usize) {
    for n in 0..count {
        let body = json!([{"eventId": Uuid::new_v4(), "eventType": "Big", "data": {"n": n, "pad": "x".repeat(bytes)}}]);
        let response = client
            .post(format!("{base}/streams/{stream}"))
            .header("content-type", EVENTS_JSON)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

/// The `n` of each event a walk read, oldest first.
fn numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| {
            serde_json::from_str::<Value>(event["data"].as_str().unwrap()).unwrap()["n"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_big_events_hold_a_few_and_their_links_lead_to_every_one() {
    let server = TestServer::start().await;
    let client = client();
    // 30 events of 700 KB: a page of 20 holds five of them.
    append_big(&client, &server.base, "big", 30, 700 * 1024).await;
    let all: Vec<u64> = (0..30).collect();

    let forward =
        Walk::forward(&client, server.url("/streams/big/0/forward/20")).query("?embed=body").pages().await;
    assert_eq!(numbers(&forward.events()), all, "forward, every event once");
    assert!(forward.len() >= 6, "pages cut at their bytes: {} pages", forward.len());

    let backward = Walk::backward(&client, server.url("/streams/big")).query("?embed=body").pages().await;
    assert_eq!(numbers(&backward.events()), all, "backward, every event once");

    // `$all` too: its pages step by the positions they examined.
    let all_pages =
        Walk::forward(&client, server.url("/streams/$all/00000000000000000000000000000000/forward/20"))
            .query("?embed=body")
            .until_empty()
            .pages()
            .await;
    assert_eq!(numbers(&all_pages.events()), all);
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The CPU time the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command (in parentheses): utime and stime are
    // the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The most CPU an idle server uses in a second, in clock ticks (10 ms
/// each): its background work wakes it 50 times a second (the writer's
/// upkeep ticks, sled's flusher), which a debug build is charged about a
/// tick a second for, some seconds two (measured); rendering and writing
/// the pages below takes over a hundred.
const IDLE_TICKS_PER_SECOND: u64 = 3;

/// Waits until the process has used no more than an idle server's CPU for
/// a second (at most 120 s).
async fn wait_until_idle(pid: u32) {
    let mut last = cpu_ticks(pid);
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_ticks(pid);
        if now - last <= IDLE_TICKS_PER_SECOND {
            return;
        }
        last = now;
    }
    panic!("the server kept working for two minutes");
}

/// The fault found: 20 clients asking for a page of 40 events of 3 MB with
/// `embed=pretty`, and reading nothing, took the server from 251 MB to
/// 2.6 GB until they went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_hold_a_bounded_page_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), &["--durability", "none"]);
    let client = client();
    append_big(&client, &server.base, "huge", 40, 3 * 1024 * 1024).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id();
    let before = rss(pid);

    // Twenty different pages (identical requests at once share one render).
    let idle: Vec<TcpStream> = (0..20)
        .map(|client| {
            let mut socket = TcpStream::connect(server.addr).unwrap();
            write!(
                socket,
                "GET /streams/huge/0/forward/{}?embed=pretty HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.eventstore.atom+json\r\n\r\n",
                40 - client
            )
            .unwrap();
            socket
        })
        .collect();
    // Until every page is rendered and written as far as the sockets take.
    wait_until_idle(pid).await;
    let held = rss(pid).saturating_sub(before);
    drop(idle);
    // A page holds one 3 MB event now (two would pass the read's bytes);
    // rendered, with the socket buffers, some 10 MB a client at most.
    assert!(held < 400 * 1024 * 1024, "20 idle clients hold {} MB", held / (1024 * 1024));
}
