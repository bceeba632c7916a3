//! Issue 32's bound on a graceful shutdown under load: with 10,000
//! long-polls open, `/health/ready` says `503` from the signal, every
//! waiter is answered, and the process exits within 2 s of its drain.
//! A test binary of its own: its 10,000 sockets and the server's work
//! answering them would starve the timing of tests running beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::BinaryServer;

/// How soon after its drain the server must have exited: the 2 s
/// for an optimised build (`cargo test --release --test shutdown`). The
/// suite's debug build runs the same code, tokio's and hyper's included,
/// many times slower: answering and closing the 10,000 connections took
/// 2.9 s of it on a 2-core machine busy with other builds (log: from
/// "shutting down" to "store flushed"), so it is held to 8 s, which still
/// fails a shutdown that waits for a waiter's own deadline (60 s).
const EXIT_BOUND: Duration =
    if cfg!(debug_assertions) { Duration::from_secs(8) } else { Duration::from_secs(2) };

/// The waiters are bare sockets with one request each, so the test
/// process holds 10,000 of them cheaply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_long_polls_drain_and_exit_within_two_seconds() {
    const WAITERS: usize = 10_000;
    const DRAIN: Duration = Duration::from_secs(1);
    common::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(&dir.path().join("data"), &["--shutdown-drain-secs", "1"]);
    let base = server.base.clone();
    let client = common::client();
    let seeded = client
        .post(format!("{base}/streams/quiet"))
        .header("content-type", common::EVENTS_JSON)
        .body(serde_json::json!([common::event("T", serde_json::json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 201);

    let request = "GET /streams/quiet/1/forward/20 HTTP/1.1\r\nHost: test\r\n\
        Accept: application/vnd.eventstore.atom+json\r\nES-LongPoll: 60\r\n\
        Authorization: Basic YWRtaW46Y2hhbmdlaXQ=\r\n\r\n";
    let mut waiters = Vec::with_capacity(WAITERS);
    for _ in 0..WAITERS {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes()).await.unwrap();
        waiters.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer).await;
            String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
        }));
    }
    common::wait_for_waiters(&client, &base, WAITERS as u64).await;

    // A probe connection opened before the signal, as a load balancer
    // keeps one: the listener closes with the drain, this one does not.
    let prober = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    assert_eq!(prober.get(format!("{base}/health/ready")).send().await.unwrap().status(), 200);
    let signalled = Instant::now();
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    loop {
        let status = prober.get(format!("{base}/health/ready")).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(signalled.elapsed() < DRAIN, "ready still {status} after the signal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        (exit, server)
    })
    .await
    .unwrap();
    let (exit, server) = exit;
    let took = signalled.elapsed();
    eprintln!("{WAITERS} long-polls: exited {took:?} after the signal ({DRAIN:?} of drain)");
    // How the shutdown went, as the server told it (a failure shows it).
    for line in server.last_logged(8) {
        eprintln!("  server: {line}");
    }
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    assert!(took <= DRAIN + EXIT_BOUND, "exited {took:?} after the signal, drain {DRAIN:?}");

    let mut answered = 0;
    for waiter in waiters {
        let status_line = waiter.await.unwrap();
        assert!(status_line.starts_with("HTTP/1.1 200"), "a waiter got {status_line:?}");
        answered += 1;
    }
    assert_eq!(answered, WAITERS);
}
