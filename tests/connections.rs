//! Connections: every one has read and idle timeouts, and all of them count
//! against a cap kept below the open-file limit, so slow or idle clients
//! can neither hold sockets for ever nor take the descriptors the store
//! needs. Raw sockets against the real binary, with timeouts of a second or
//! two; a long-poll or an SSE stream, idle on the response side, outlives
//! them all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::socket::RawSocket;
use common::{ATOM_JSON, BinaryServer, EVENTS_JSON, client, event, raise_open_file_limit};
use serde_json::json;

/// Every read timeout at a second: what most tests run with.
const ONE_SECOND_TIMEOUTS: &[&str] =
    &["--header-timeout-secs", "1", "--body-timeout-secs", "1", "--idle-timeout-secs", "1"];

/// Longest a test waits for the server to act on a timeout of a second or
/// two: generous, so a loaded machine does not fail it, and bounded, so a
/// server that never acts fails it instead of hanging.
const BOUND: Duration = Duration::from_secs(10);

/// Less than any timeout configured here: a connection closed sooner was
/// not closed by its timeout.
const NOT_BEFORE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(
        &dir.path().join("data"),
        &["--header-timeout-secs", "1", "--idle-timeout-secs", "60"],
    );

    // A new connection that never finishes its headers.
    let mut socket = RawSocket::connect(server.addr).await;
    socket.send(b"GET /ping HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    let sent = Instant::now();
    assert!(socket.closed_within(BOUND).await, "half-sent headers held the connection open");
    assert!(sent.elapsed() >= NOT_BEFORE, "closed after {:?}", sent.elapsed());

    // Headers trickled a byte at a time: each byte does not restart the clock.
    let mut socket = RawSocket::connect(server.addr).await;
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Slow: ".iter().chain([b'a'; 200].iter()) {
        if socket.send(&[*byte]).await.is_err() || socket.closed_within(Duration::from_millis(100)).await {
            closed = true;
            break;
        }
        assert!(started.elapsed() < BOUND, "trickled headers held the connection open");
    }
    assert!(closed, "trickled headers held the connection open");

    // On a kept-alive connection, the next request's headers have the same
    // deadline, although the idle timeout is a minute.
    let mut socket = RawSocket::connect(server.addr).await;
    socket.request("GET", "/ping", &[], "").await;
    assert_eq!(socket.response(BOUND).await.expect("pong").status, 200);
    socket.send(b"GET /ping HTTP/1.1\r\n").await.unwrap();
    assert!(socket.closed_within(BOUND).await, "a second request's half-sent headers held it open");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_cut_off_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), ONE_SECOND_TIMEOUTS);
    let body = json!([event("Cut", json!({ "n": 1 }))]).to_string();

    let mut socket = RawSocket::connect(server.addr).await;
    let head = format!(
        "POST /streams/cut HTTP/1.1\r\nHost: test\r\nContent-Type: {EVENTS_JSON}\r\nContent-Length: {}\r\n\r\n",
        body.len() + 100
    );
    socket.send(head.as_bytes()).await.unwrap();
    socket.send(body.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let response = socket.response(BOUND).await.expect("an answer before the close");
    assert_eq!(response.status, 408, "{}", response.text());
    assert!(sent.elapsed() >= NOT_BEFORE, "answered after {:?}", sent.elapsed());
    assert_eq!(response.header("connection"), Some("close"));
    assert!(socket.closed_within(BOUND).await, "the connection stayed open after 408");

    let read = client().get(server.url("/streams/cut")).header("accept", ATOM_JSON).send().await.unwrap();
    assert_eq!(read.status(), 404, "nothing of the cut request was written");
}

#[tokio::test]
async fn an_unterminated_chunked_body_is_cut_off_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), ONE_SECOND_TIMEOUTS);

    let mut socket = RawSocket::connect(server.addr).await;
    let head = format!(
        "POST /streams/chunked HTTP/1.1\r\nHost: test\r\nContent-Type: {EVENTS_JSON}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    socket.send(head.as_bytes()).await.unwrap();
    socket.send(b"5\r\n[{\"ev\r\n").await.unwrap();
    let response = socket.response(BOUND).await.expect("an answer before the close");
    assert_eq!(response.status, 408, "{}", response.text());
    assert!(socket.closed_within(BOUND).await, "the connection stayed open after 408");
}

#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(
        &dir.path().join("data"),
        &["--body-timeout-secs", "2", "--body-min-bytes-per-sec", "100"],
    );

    // Ten bytes a second, never pausing as long as the body timeout: only
    // the minimum rate can stop it, at about 2 s + received / 100 B/s.
    let mut socket = RawSocket::connect(server.addr).await;
    let head = format!(
        "POST /streams/slow HTTP/1.1\r\nHost: test\r\nContent-Type: {EVENTS_JSON}\r\nContent-Length: 10000\r\n\r\n"
    );
    socket.send(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut cut_off = false;
    while started.elapsed() < BOUND {
        if socket.send(b" ").await.is_err() {
            cut_off = true;
            break;
        }
        // A response (or the close) ends the trickle.
        if socket.closed_within(Duration::from_millis(100)).await {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a body at 10 B/s was still being read after {BOUND:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "cut off after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(
        &dir.path().join("data"),
        &["--idle-timeout-secs", "1", "--header-timeout-secs", "10"],
    );

    let mut socket = RawSocket::connect(server.addr).await;
    // Requests closer together than the idle timeout keep it open.
    for _ in 0..4 {
        socket.request("GET", "/ping", &[], "").await;
        assert_eq!(socket.response(BOUND).await.expect("pong").status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let idle_from = Instant::now();
    assert!(socket.closed_within(BOUND).await, "an idle keep-alive connection stayed open");
    assert!(idle_from.elapsed() >= NOT_BEFORE, "closed after {:?}", idle_from.elapsed());
}

#[tokio::test]
async fn a_long_poll_longer_than_the_idle_timeout_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), ONE_SECOND_TIMEOUTS);
    let http = client();
    let append = |stream: &'static str, kind: &'static str| {
        http.post(server.url(&format!("/streams/{stream}")))
            .header("content-type", EVENTS_JSON)
            .body(json!([event(kind, json!({}))]).to_string())
            .send()
    };
    assert_eq!(append("polled", "First").await.unwrap().status(), 201);

    let mut socket = RawSocket::connect(server.addr).await;
    let poll = [("Accept", ATOM_JSON), ("ES-LongPoll", "3")];
    // Nothing comes: the empty page at the deadline, three idle timeouts on.
    let asked = Instant::now();
    socket.request("GET", "/streams/polled/1/forward/20", &poll, "").await;
    let response = socket.response(BOUND).await.expect("the long-poll is answered");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(asked.elapsed() >= Duration::from_secs(2), "answered after {:?}", asked.elapsed());

    // On the same connection: an append two idle timeouts on wakes it.
    socket.request("GET", "/streams/polled/1/forward/20", &poll, "").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(append("polled", "Second").await.unwrap().status(), 201);
    let response = socket.response(BOUND).await.expect("the long-poll is answered");
    assert_eq!(response.status, 200);
    assert!(response.text().contains("Second"), "{}", response.text());
}

#[tokio::test]
async fn an_sse_stream_outlives_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), ONE_SECOND_TIMEOUTS);

    let mut socket = RawSocket::connect(server.addr).await;
    socket.request("GET", "/streams/watched", &[("Accept", "text/event-stream")], "").await;
    socket.read_until("text/event-stream", BOUND).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = client()
        .post(server.url("/streams/watched"))
        .header("content-type", EVENTS_JSON)
        .body(json!([event("Streamed", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    socket.read_until("Streamed", BOUND).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), ONE_SECOND_TIMEOUTS);
    // A page far larger than what the two sockets' buffers hold.
    let blob = "x".repeat(1 << 20);
    let events: Vec<_> = (0..20).map(|_| event("Large", json!({ "blob": blob }))).collect();
    let response = client()
        .post(server.url("/streams/large"))
        .header("content-type", EVENTS_JSON)
        .body(serde_json::Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let mut socket = RawSocket::connect(server.addr).await;
    socket.request("GET", "/streams/large/0/forward/20?embed=body", &[("Accept", ATOM_JSON)], "").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = socket.read_to_end(BOUND).await.expect("the server closes the connection");
    assert!(received < 20 << 20, "the whole page arrived ({received} bytes) although nobody read it for 3 s");
}

/// The open-file limit the flooded server runs with: a tenth of it, at
/// least 512, is kept for the store, so at most 512 connections are open.
const FLOODED_LIMIT: u64 = 1024;

/// More idle connections than the whole open-file limit.
const FLOOD: usize = 1100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_neither_starves_clients_nor_fails_the_store() {
    raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start_with_open_file_limit(
        &data_dir,
        FLOODED_LIMIT,
        &["--header-timeout-secs", "2", "--idle-timeout-secs", "60"],
    );
    assert!(
        server.logged("max_connections=512", Duration::from_secs(5)).await,
        "the cap is the open-file limit less what is kept for the store"
    );

    // A producer connected before the flood, as producers keep theirs.
    let mut producer = RawSocket::connect(server.addr).await;
    producer.request("GET", "/ping", &[], "").await;
    assert_eq!(producer.response(BOUND).await.expect("pong").status, 200);

    let mut idlers = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        idlers.push(RawSocket::connect(server.addr).await);
    }

    assert!(
        server.logged("too many connections open", BOUND).await,
        "the flood went past the cap, and the server says so"
    );

    // The store has the descriptors it needs: the append is durable.
    let body = json!([event("DuringTheFlood", json!({ "n": 1 }))]).to_string();
    producer.request("POST", "/streams/flooded", &[("Content-Type", EVENTS_JSON)], &body).await;
    let appended = producer.response(BOUND).await.expect("the append is answered");
    assert_eq!(appended.status, 201, "{}", appended.text());

    // A new client is answered at once, if only by a closed connection,
    // and served once the idlers have timed out.
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    if let Err(error) = quick.get(server.url("/ping")).send().await {
        assert!(!error.is_timeout(), "a new client waited instead of being refused: {error}");
    }
    let deadline = Instant::now() + BOUND;
    loop {
        let served = quick.get(server.url("/ping")).send().await.is_ok_and(|r| r.status() == 200);
        if served {
            break;
        }
        assert!(Instant::now() < deadline, "new clients still not served after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for idler in &mut idlers {
        assert!(idler.closed_within(BOUND).await, "an idle connection was never closed");
    }

    server.kill9();
    let server = BinaryServer::start(&data_dir, &[]);
    let read =
        client().get(server.url("/streams/flooded/0")).header("accept", ATOM_JSON).send().await.unwrap();
    assert_eq!(read.status(), 200, "the append acknowledged during the flood survived kill -9");
}

/// The value of sample `name` (no labels) in a `/metrics` text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_report_open_connections_the_cap_and_the_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        BinaryServer::start(&dir.path().join("data"), &["--max-connections", "3", "--metrics-public"]);
    let mut scraper = RawSocket::connect(server.addr).await;
    let mut scrape = async || {
        scraper.request("GET", "/metrics", &[], "").await;
        let scraped = scraper.response(BOUND).await.expect("a scrape is answered");
        assert_eq!(scraped.status, 200);
        let text = scraped.text();
        ["eventfeed_connections", "eventfeed_connections_max", "eventfeed_connections_refused_total"]
            .map(|name| sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}")))
    };
    assert_eq!(scrape().await, [1.0, 3.0, 0.0], "the scraper's own connection");

    let mut idlers = Vec::new();
    for _ in 0..2 {
        idlers.push(RawSocket::connect(server.addr).await);
    }
    // Accepted in the server's time: wait until both hold a slot.
    let deadline = Instant::now() + BOUND;
    while scrape().await[0] < 3.0 {
        assert!(Instant::now() < deadline, "two idle connections never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = Vec::new();
    for _ in 0..2 {
        refused.push(RawSocket::connect(server.addr).await);
    }
    for socket in &mut refused {
        assert!(socket.closed_within(BOUND).await, "a connection beyond the cap was kept open");
    }
    assert_eq!(scrape().await, [3.0, 3.0, 2.0]);

    drop(idlers);
    let deadline = Instant::now() + BOUND;
    while scrape().await[0] > 1.0 {
        assert!(Instant::now() < deadline, "closed connections still counted as open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
