//! The PostgreSQL backend on its worst days, with the real binary where a
//! process is what fails:
//!
//! - a database lost while serving: appends answer `503` with
//!   `Retry-After` (never `201`), what Varnish holds is still served,
//!   `/health/ready` turns `503`, and all of it comes back by itself when
//!   the database does;
//! - the postmaster killed with `SIGKILL` under append load and started
//!   again on its data directory: every acknowledged append is there, `$all`
//!   dense, and the server (left running) appends again by itself;
//! - a start with a bad connection string, an unreachable database or a
//!   schema newer than the binary stops with a clear message and a
//!   non-zero exit;
//! - a commit whose connection is cut while PostgreSQL commits it is
//!   answered `503` (its outcome unknown), and its retry with the same ids
//!   is safe whether it stood or not;
//! - a database that stops answering without closing its connections (a
//!   partition, a frozen host) is a lost database within seconds, not at
//!   the system's TCP timeouts, and comes back by itself;
//! - persistent subscriptions and users live in the database: another
//!   server process with an empty data directory finds them.
//!
//! `kill -9` of eventfeed itself under load is tests/durability.rs's
//! `every_acknowledged_event_survives_kill_9`, which tests/run runs on
//! PostgreSQL too. The tests that stop or kill PostgreSQL do it to a
//! cluster of their own (`Cluster::dedicated`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{AppendLoad, check_survivors};
use common::postgres::Cluster;
use common::subscriptions::Api;
use common::varnish::{Chain, is_cache_hit};
use common::{ATOM_JSON, ATOM_XML, BinaryServer, TestServer, anonymous_client, client, event, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// How long the server may take to notice that the database is back: the
/// listener retries at most every 5 s.
const COMEBACK: Duration = Duration::from_secs(30);

/// `/health/ready`'s status.
async fn ready(base: &str) -> u16 {
    anonymous_client().get(format!("{base}/health/ready")).send().await.unwrap().status().as_u16()
}

/// Waits until `/health/ready` answers `status`.
async fn wait_for_ready(base: &str, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while ready(base).await != status {
        assert!(Instant::now() < deadline, "/health/ready did not turn {status} in {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends one event to `stream` at `base`; the response's status, its
/// `Retry-After` and its body.
async fn append(base: &str, stream: &str, body: &Value) -> (u16, Option<String>, String) {
    let response = client()
        .post(format!("{base}/streams/{stream}"))
        .header("content-type", common::EVENTS_JSON)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = header(response.headers(), "retry-after");
    (status, retry_after, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_keeps_cached_pages_and_comes_back_by_itself() {
    let Some(cluster) = Cluster::dedicated() else { return };
    let url = cluster.create_database();
    let server = TestServer::start_with(|config| config.store = url.clone()).await;
    let chain = Chain::start_on(server).await;
    let base = chain.server.base.clone();
    chain.server.append_n("kept", 25).await;
    // A full page, immutable: Varnish keeps it.
    let page = "/streams/kept/0/forward/20";
    let (status, _, cached) = chain.get(page, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert_eq!(ready(&base).await, 200);

    cluster.stop();
    let one = json!([event("Lost", json!({}))]);
    let (status, retry_after, text) = append(&base, "lost", &one).await;
    assert_eq!(status, 503, "an append without its database: {text}");
    assert!(retry_after.is_some_and(|seconds| seconds.parse::<u64>().is_ok()), "Retry-After in seconds");
    assert!(text.contains("database cannot be reached") && text.contains("nothing was written"), "{text}");
    wait_for_ready(&base, 503, Duration::from_secs(10)).await;
    let (status, headers, again) = chain.get(page, &[("accept", ATOM_XML)]).await;
    assert_eq!((status, again.as_str()), (200, cached.as_str()), "the cached page is served");
    assert!(is_cache_hit(&headers), "from the cache: {headers:?}");
    // The same request again, still without its database: still refused.
    let (status, _, _) = append(&base, "lost", &one).await;
    assert_eq!(status, 503);
    // What reaches the server itself needs the database: 503 too, and
    // says when to come back; the process is alive, and says why it is
    // not ready.
    let head = client().get(format!("{base}/streams/kept")).header("accept", ATOM_JSON).send().await.unwrap();
    assert_eq!(head.status(), 503, "an uncached read");
    assert!(head.headers().contains_key("retry-after"));
    let live = anonymous_client().get(format!("{base}/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let info: Value = client().get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["writes"]["accepting"], false, "{info}");
    let reason = info["writes"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("PostgreSQL database cannot be reached"), "{reason}");
    let metrics = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|line| line == "eventfeed_writes_accepting 0"), "{metrics}");

    cluster.start_again();
    wait_for_ready(&base, 200, COMEBACK).await;
    let (status, _, text) = append(&base, "lost", &one).await;
    assert_eq!(status, 201, "appends come back by themselves: {text}");
    let info: Value = client().get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["writes"]["accepting"], true, "{info}");
    let stream = chain.server.get_json("/streams/lost/0/forward/20").await;
    assert_eq!(stream["entries"].as_array().map(Vec::len), Some(1), "the refused tries wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postmaster_killed_under_load_loses_no_acknowledged_append() {
    let Some(cluster) = Cluster::dedicated() else { return };
    let url = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), &["--store", &url]);
    let load = AppendLoad::start(&server.base, 8);
    load.wait_for_acknowledged(200, Duration::from_secs(60)).await;

    cluster.kill9();
    let before = load.acknowledged();
    common::wait_until("503s while the database is away", Duration::from_secs(20), || load.unavailable() > 0)
        .await;
    wait_for_ready(&server.base, 503, Duration::from_secs(10)).await;
    // Nothing is acknowledged while it is away (an append in flight at the
    // kill may still have been answered just before).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = load.acknowledged();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load.acknowledged(), during, "no append is acknowledged without a database");

    cluster.start_again();
    // The server, left running, takes appends again by itself.
    load.wait_for_acknowledged(during.max(before) + 200, COMEBACK).await;
    wait_for_ready(&server.base, 200, COMEBACK).await;
    let acked = load.stop().await;
    check_survivors(&server.base, &acked).await;
}

/// Runs the binary to its exit (it must not start); its stderr.
fn start_fails(data_dir: &Path, store: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfeed"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--bind", "127.0.0.1:0"])
        .env("EVENTFEED_STORE", store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    // Past the connection timeout (10 s) with room to spare.
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on {store}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{store}: exits non-zero; stderr: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_connection_string_an_unreachable_database_or_a_newer_schema_stop_the_start() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let stderr = start_fails(&data_dir, "postgres://eventfeed@127.0.0.1:notaport/events");
    assert!(stderr.contains("not a PostgreSQL connection string"), "{stderr}");

    // A loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stderr = start_fails(&data_dir, &format!("postgres://eventfeed:secret@127.0.0.1:{port}/events"));
    assert!(stderr.contains("cannot connect to postgres 127.0.0.1 database events"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password is never shown: {stderr}");

    let url = cluster.create_database();
    let server = BinaryServer::start(&data_dir, &["--store", &url]);
    drop(server);
    let name = url.rsplit('/').next().unwrap();
    cluster.psql(name, "UPDATE schema_version SET version = version + 1").unwrap();
    let stderr = start_fails(&data_dir, &url);
    assert!(stderr.contains("newer than this eventfeed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_users_live_in_the_database_not_in_the_data_directory() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let first_dir = tempfile::tempdir().unwrap();
    let mut first = BinaryServer::start(&first_dir.path().join("data"), &["--store", &url]);
    let api = Api::of_binary(&first);
    let user = json!({ "loginName": "ops-1", "fullName": "Ops One", "groups": ["$ops"], "password": "pw-1" });
    let response = api
        .client
        .post(api.url("/users/"))
        .header("content-type", "application/json")
        .body(user.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // A group with a checkpoint past event 2 and event 3 parked.
    let settings = json!({"minCheckPointCount": 1});
    api.set_up("orders", "billing", settings, 6).await;
    let mut taken = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while taken.len() < 4 {
        assert!(Instant::now() < deadline, "four messages delivered, got {}", taken.len());
        let (_, more) = api.take("orders", "billing", "c", 4 - taken.len(), Some(1)).await;
        taken.extend(more);
    }
    let numbers: Vec<u64> = taken.iter().map(|message| message.number).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    for message in &taken[..3] {
        let response = api.post_path(&format!("/subscriptions/orders/billing/ack/{}", message.id), "c").await;
        assert_eq!(response.status(), 202);
    }
    let park = format!("/subscriptions/orders/billing/nack/{}?action=Park", taken[3].id);
    assert_eq!(api.post_path(&park, "c").await.status(), 202);
    api.wait_for_info("orders", "billing", "the park and the checkpoint", |info| {
        info["parkedMessageCount"] == 1 && info["lastProcessedEventNumber"] == 3
    })
    .await;
    first.terminate();

    // Another process, an empty data directory, the same database.
    let second_dir = tempfile::tempdir().unwrap();
    let second = BinaryServer::start(&second_dir.path().join("data"), &["--store", &url]);
    let api = Api::of_binary(&second);
    let info = api.info("orders", "billing").await;
    assert_eq!(info["lastProcessedEventNumber"], 3, "the checkpoint: {info:#}");
    assert_eq!(info["parkedMessageCount"], 1, "the parked message: {info:#}");
    let parked = client()
        .get(second.url("/streams/$persistentsubscription-orders::billing-parked/0"))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(parked.status(), 200);
    assert_eq!(parked.text().await.unwrap(), format!("{}@orders", taken[3].number));
    // Delivery goes on after the checkpoint: events 4 and 5.
    let (_, next) = api.take("orders", "billing", "d", 10, Some(5)).await;
    let numbers: Vec<u64> = next.iter().map(|message| message.number).collect();
    assert_eq!(numbers, [4, 5]);
    let as_user = anonymous_client()
        .get(second.url("/users/ops-1"))
        .basic_auth("ops-1", Some("pw-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 200, "the user logs in on the other server");
    let wrong = anonymous_client()
        .get(second.url("/users/ops-1"))
        .basic_auth("ops-1", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

/// A relay between eventfeed and PostgreSQL that cuts the writer's
/// connection at its next `COMMIT` when armed: after passing it on and
/// seeing PostgreSQL answer (the batch stands, the writer never hears
/// so), or before passing it on (the batch is rolled back).
struct CommitCutter {
    port: u16,
    /// `Some(pass_on)` while armed; taken by the cut.
    armed: Arc<Mutex<Option<bool>>>,
}

impl CommitCutter {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(Mutex::new(None));
        let arming = Arc::clone(&armed);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(("127.0.0.1", target)).await.unwrap();
                tokio::spawn(relay(client, upstream, Arc::clone(&arming)));
            }
        });
        Self { port, armed }
    }

    fn arm(&self, pass_on: bool) {
        *self.armed.lock().unwrap() = Some(pass_on);
    }
}

async fn relay(client: TcpStream, upstream: TcpStream, armed: Arc<Mutex<Option<bool>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (mut up, mut down) = (vec![0; 64 * 1024], vec![0; 64 * 1024]);
    // The startup message names the connection (`application_name`).
    let mut is_writer = false;
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                let chunk = &up[..n];
                is_writer |= contains(chunk, b"eventfeed-writer");
                if is_writer && contains(chunk, b"COMMIT\0") {
                    let cut = armed.lock().unwrap().take();
                    if let Some(pass_on) = cut {
                        if pass_on {
                            upstream_write.write_all(chunk).await.unwrap();
                            // PostgreSQL's answer: the commit is done.
                            let answer = upstream_read.read(&mut down);
                            let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
                        }
                        return;
                    }
                }
                if upstream_write.write_all(chunk).await.is_err() {
                    return;
                }
            }
            read = upstream_read.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if client_write.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A commit whose connection is lost while PostgreSQL commits it: eventfeed
/// cannot know whether it stands, so it answers neither `201` nor a
/// refusal, but `503` saying so; the retry with the same ids is answered
/// `201` with the first try's `Location` if it stood, and written if it
/// did not. Either way the event is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_off_is_neither_acknowledged_nor_refused_and_its_retry_is_safe() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let cutter = CommitCutter::start(cluster.port()).await;
    let through_cutter = format!("postgres://postgres@127.0.0.1:{}/{name}", cutter.port);
    let server = TestServer::start_with(|config| config.store = through_cutter).await;
    server.append_n("cut", 1).await;

    for (number, pass_on) in [(1, true), (2, false)] {
        let body = json!([event("Cut", json!({ "number": number }))]);
        cutter.arm(pass_on);
        let (status, retry_after, text) = append(&server.base, "cut", &body).await;
        assert_eq!(status, 503, "COMMIT passed on: {pass_on}: {text}");
        assert!(retry_after.is_some(), "Retry-After");
        assert!(text.contains("whether it stands is unknown"), "{text}");
        let committed = cluster.psql(&name, "SELECT count(*) FROM event_ids WHERE stream = 'cut'").unwrap();
        let expected = if pass_on { number + 1 } else { number };
        assert_eq!(committed, expected.to_string(), "the commit stood: {pass_on}");

        let response = server.post_events("cut", &body).await;
        assert_eq!(response.status(), 201, "the retry");
        let location = header(response.headers(), "location").unwrap();
        assert!(location.ends_with(&format!("/streams/cut/{number}")), "{location}");
    }
    let events = common::read_all_events(&server.client, &server.base, "cut").await;
    let numbers: Vec<u64> = events.iter().map(|event| event["eventNumber"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2], "each event once");
}

/// A relay between eventfeed and PostgreSQL that, while frozen, passes no
/// byte either way and closes nothing: what reaches it waits, as on a
/// network partition or a host that stopped. New connections are taken
/// and wait the same way.
struct Freezer {
    port: u16,
    frozen: watch::Sender<bool>,
}

impl Freezer {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, seen) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
                let ((client_read, client_write), (upstream_read, upstream_write)) =
                    (client.into_split(), upstream.into_split());
                tokio::spawn(pass(client_read, upstream_write, seen.clone()));
                tokio::spawn(pass(upstream_read, client_write, seen.clone()));
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

/// Passes what `from` sends on to `to`, holding it while frozen.
async fn pass(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let Ok(n @ 1..) = from.read(&mut buffer).await else { return };
        if frozen.wait_for(|frozen| !frozen).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A database that goes silent with every connection open: an append and
/// a read that need it answer `503` within seconds (the store's deadline
/// is 10 s; the system's TCP timeouts would take minutes), the append
/// saying nothing was written, and `/health/ready` says so; once the
/// database answers again everything comes back by itself, and the
/// append's retry with the same id is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_is_lost_within_seconds_and_comes_back() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let freezer = Freezer::start(cluster.port()).await;
    let through_freezer = format!("postgres://postgres@127.0.0.1:{}/{name}", freezer.port);
    let server = TestServer::start_with(|config| config.store = through_freezer).await;
    server.append_n("silent", 1).await;
    assert_eq!(ready(&server.base).await, 200);

    freezer.freeze(true);
    let body = json!([event("Silent", json!({}))]);
    let started = Instant::now();
    let (status, retry_after, text) = append(&server.base, "silent", &body).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "an append to a silent database: {text}");
    assert!(retry_after.is_some(), "Retry-After");
    assert!(text.contains("nothing was written"), "its COMMIT was never sent: {text}");
    assert!(waited < Duration::from_secs(25), "answered after {waited:?}");
    wait_for_ready(&server.base, 503, Duration::from_secs(5)).await;
    let started = Instant::now();
    let read =
        client().get(server.url("/streams/never-written")).header("accept", ATOM_JSON).send().await.unwrap();
    assert_eq!(read.status(), 503, "a read the database must answer");
    assert!(started.elapsed() < Duration::from_secs(25), "answered after {:?}", started.elapsed());

    freezer.freeze(false);
    wait_for_ready(&server.base, 200, COMEBACK).await;
    let (status, _, text) = append(&server.base, "silent", &body).await;
    assert_eq!(status, 201, "the retry: {text}");
    let events = common::read_all_events(&server.client, &server.base, "silent").await;
    assert_eq!(events.len(), 2, "the first event and the retried one, once: {events:?}");
    assert_eq!(cluster.psql(&name, "SELECT count(*) FROM event_ids WHERE stream = 'silent'").unwrap(), "2");
}
