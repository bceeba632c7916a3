//! eventfeed behind a real Varnish running the shipped VCL
//! (`deploy/varnish/eventfeed.vcl`).
//!
//! Each test starts its own chain on loopback ports:
//!
//! ```text
//! client ──► varnishd ──► recording proxy ──► eventfeed (in-process)
//! ```
//!
//! Varnish's own headers (`X-Varnish` with two transaction ids on a hit,
//! `Age`) say what the cache believes it did; the recording proxy, a small
//! HTTP/1.1 relay, says what actually reached eventfeed: every request Varnish
//! sent (method, path, headers) and the status eventfeed answered. Both must
//! agree for a test to pass.
//!
//! `varnishd` comes from Debian's `varnish` package (`tests/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ATOM_JSON, ATOM_XML, TestServer, client, event};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longer than the one-millisecond TTL the VCL gives head pages.
const PAST_THE_MILLISECOND: Duration = Duration::from_millis(20);

/// Basic credentials as several real clients send them on every request
/// (`admin:changeit`, EventStore's default).
const BASIC_AUTH: &str = "Basic YWRtaW46Y2hhbmdlaXQ=";

// ---------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------

/// eventfeed, the recording proxy in front of it, and Varnish in front of
/// that. Dropping it stops all three.
struct Chain {
    server: TestServer,
    proxy: RecordingProxy,
    varnish: Varnish,
}

impl Chain {
    async fn start() -> Self {
        let server = TestServer::start().await;
        let proxy = RecordingProxy::start(server.addr).await;
        let varnish = Varnish::start(proxy.addr).await;
        Self { server, proxy, varnish }
    }

    /// GET through Varnish with extra headers; returns status, headers, body.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let mut request = self.server.client.get(self.varnish.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// What eventfeed received for `path` (query string included), in order.
    fn backend_requests(&self, path: &str) -> Vec<Exchange> {
        self.proxy.exchanges().into_iter().filter(|exchange| exchange.path == path).collect()
    }
}

/// Whether Varnish answered from its cache: on a hit `X-Varnish` carries two
/// transaction ids (this request's and the one that stored the object), and
/// `Age` is present.
fn is_cache_hit(headers: &HeaderMap) -> bool {
    let ids = header(headers, "x-varnish").unwrap_or_default();
    let age_present = header(headers, "age").is_some_and(|age| age.parse::<u64>().is_ok());
    ids.split_whitespace().count() == 2 && age_present
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// A stream name no other test uses.
fn fresh_stream(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn titles(page: &str) -> Vec<String> {
    let page: Value = serde_json::from_str(page).unwrap();
    page["entries"].as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap().to_owned()).collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_full_page_is_fetched_once_and_then_served_from_the_cache() {
    let chain = Chain::start().await;
    let stream = fresh_stream("cached");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");

    let (status, first_headers, first_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&first_headers, "cache-control").as_deref(), Some("max-age=31536000, public"));
    assert!(!is_cache_hit(&first_headers), "the first read is a miss: {first_headers:?}");

    let (status, second_headers, second_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert!(is_cache_hit(&second_headers), "the second read is a hit: {second_headers:?}");
    assert_eq!(first_body, second_body);

    // Another client's Accept for the same representation shares the copy
    // (Varnish normalises Accept), while another representation is fetched.
    let (_, headers, body) = chain.get(&path, &[("accept", "application/atom+xml, */*;q=0.1")]).await;
    assert!(is_cache_hit(&headers), "a differently worded Accept for Atom is a hit: {headers:?}");
    assert_eq!(body, first_body);
    let (_, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert!(!is_cache_hit(&headers), "the JSON representation is another object");
    assert_eq!(titles(&body).len(), 20);

    let fetched = chain.backend_requests(&path);
    let accepts: Vec<_> = fetched.iter().map(|e| e.header("accept").unwrap_or_default()).collect();
    assert_eq!(accepts, [ATOM_XML, ATOM_JSON], "eventfeed saw one request per representation");
    assert!(fetched.iter().all(|e| e.status == Some(200)));
}

/// Clients that take gzip and clients that do not each get a stored copy
/// in their encoding: no hit is gunzipped, and eventfeed is asked once per
/// encoding, for exactly that encoding.
#[tokio::test]
async fn gzip_and_identity_clients_each_hit_their_own_copy() {
    let chain = Chain::start().await;
    let stream = fresh_stream("encodings");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");
    let identity = [("accept", ATOM_XML)];
    let gzip = [("accept", ATOM_XML), ("accept-encoding", "gzip")];

    let (_, headers, plain) = chain.get(&path, &identity).await;
    assert!(!is_cache_hit(&headers));
    assert!(plain.starts_with("<?xml"), "{plain}");
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(again, plain);

    let (_, headers, _) = chain.get(&path, &gzip).await;
    assert!(!is_cache_hit(&headers), "the gzip copy is another object: {headers:?}");
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, _) = chain.get(&path, &gzip).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(again, plain, "the plain copy is still served as stored");

    let fetched = chain.backend_requests(&path);
    let encodings: Vec<_> = fetched.iter().map(|e| e.header("accept-encoding")).collect();
    assert_eq!(encodings, [None, Some("gzip".to_owned())], "one fetch per encoding");
    assert!(
        fetched.iter().all(|e| e.header("x-eventfeed-identity").is_none()),
        "the marker stays in Varnish"
    );
}

#[tokio::test]
async fn the_head_page_is_never_served_stale() {
    let chain = Chain::start().await;
    let stream = fresh_stream("head");
    chain.server.append_n(&stream, 3).await;
    let path = format!("/streams/{stream}");

    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control").as_deref(), Some("max-age=0, no-cache, must-revalidate"));
    assert_eq!(titles(&body), [format!("2@{stream}"), format!("1@{stream}"), format!("0@{stream}")]);

    chain.server.append_n(&stream, 1).await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert!(!is_cache_hit(&headers));
    assert_eq!(titles(&body).first(), Some(&format!("3@{stream}")), "the append is visible at once");
    assert_eq!(chain.backend_requests(&path).len(), 2, "each read of the head asked eventfeed");
}

#[tokio::test]
async fn the_head_page_revalidates_with_its_etag() {
    let chain = Chain::start().await;
    let stream = fresh_stream("etag");
    chain.server.append_n(&stream, 2).await;
    let path = format!("/streams/{stream}");

    let (status, headers, first_body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    // eventfeed weakens the ETag (W/) of gzip bodies; either form revalidates.
    let etag =
        header(&headers, "etag").expect("the head page has an ETag").trim_start_matches("W/").to_owned();

    // Varnish keeps the page and asks eventfeed whether it still holds:
    // eventfeed answers 304 and Varnish serves its copy. (The VCL gives the
    // copy a TTL of one millisecond, during which a read passes straight to
    // eventfeed instead; wait that out so the test sees the revalidation.)
    tokio::time::sleep(PAST_THE_MILLISECOND).await;
    let (status, _, second_body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert_eq!(second_body, first_body);

    // A client that has the page gets 304 through Varnish.
    tokio::time::sleep(PAST_THE_MILLISECOND).await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON), ("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag").map(|e| e.trim_start_matches("W/").to_owned()), Some(etag.clone()));

    let exchanges = chain.backend_requests(&path);
    assert_eq!(exchanges.len(), 3, "every read of a no-cache page asks eventfeed");
    assert_eq!(exchanges[0].header("if-none-match"), None);
    assert_eq!(exchanges[0].status, Some(200));
    for revalidation in &exchanges[1..] {
        let sent = revalidation.header("if-none-match").expect("Varnish revalidates with If-None-Match");
        assert_eq!(sent.trim_start_matches("W/"), etag);
        assert_eq!(revalidation.status, Some(304), "eventfeed did not render the page again");
    }

    // After an append the old ETag no longer matches: the new page comes back.
    chain.server.append_n(&stream, 1).await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON), ("if-none-match", &etag)]).await;
    assert_eq!(status, 200);
    assert_ne!(header(&headers, "etag"), Some(etag));
    assert_eq!(titles(&body).first(), Some(&format!("2@{stream}")));
    assert_eq!(chain.backend_requests(&path).last().unwrap().status, Some(200));
}

#[tokio::test]
async fn a_long_poll_through_varnish_wakes_on_append() {
    let chain = Chain::start().await;
    let stream = fresh_stream("longpoll");
    chain.server.append_n(&stream, 1).await;
    let path = format!("/streams/{stream}/1/forward/20?embed=body");

    let url = chain.varnish.url(&path);
    let poller = tokio::spawn(async move {
        let started = Instant::now();
        let response =
            client().get(url).header("accept", ATOM_JSON).header("es-longpoll", "10").send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap(), started.elapsed())
    });
    // Append only once the long-poll waits at eventfeed.
    common::wait_for_waiters(&chain.server.client, &chain.server.base, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended = Instant::now();
    chain.server.append_n(&stream, 1).await;

    let (status, body, waited) =
        tokio::time::timeout(Duration::from_secs(30), poller).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(titles(&body), [format!("1@{stream}")], "the long-poll answers with the new event");
    assert!(
        waited < Duration::from_secs(9) && appended.elapsed() < Duration::from_secs(9),
        "woken by the append, not by the 10 s deadline (waited {waited:?})"
    );
    let sent = chain.backend_requests(&path);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("es-longpoll").as_deref(), Some("10"), "the header reaches eventfeed");
}

#[tokio::test]
async fn server_sent_events_stream_through_varnish() {
    let chain = Chain::start().await;
    let stream = fresh_stream("sse");
    chain.server.append_n(&stream, 1).await;

    let response = chain
        .server
        .client
        .get(chain.varnish.url(&format!("/streams/{stream}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").unwrap().starts_with("text/event-stream"));

    // The event appended while the stream is open arrives through Varnish
    // while the response is still open: Varnish does not buffer it.
    common::wait_for_waiters(&chain.server.client, &chain.server.base, 1).await;
    let marker = format!("Marker{}", uuid::Uuid::new_v4().simple());
    let appended = chain.server.post_events(&stream, &json!([event(&marker, json!({"x": 1}))])).await;
    assert_eq!(appended.status(), 201);

    let mut response = response;
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !received.contains(&marker) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("the event did not arrive; received so far: {received:?}"))
            .unwrap()
            .expect("the event stream stays open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("id: 1") || received.contains("id:1"), "{received}");
}

#[tokio::test]
async fn authenticated_readers_share_public_pages_but_nothing_else() {
    let chain = Chain::start().await;
    let stream = fresh_stream("auth");
    chain.server.append_n(&stream, 25).await;
    let full_page = format!("/streams/{stream}/0/forward/20");
    let auth = [("accept", ATOM_XML), ("authorization", BASIC_AUTH)];

    // A client sending credentials fills the cache with a public page...
    let (status, headers, body) = chain.get(&full_page, &auth).await;
    assert_eq!(status, 200);
    assert!(!is_cache_hit(&headers));
    // ...and is then served from it, as is an anonymous reader.
    let (status, headers, again) = chain.get(&full_page, &auth).await;
    assert_eq!(status, 200);
    assert!(is_cache_hit(&headers), "an authenticated read of a public page is a hit: {headers:?}");
    assert_eq!(again, body);
    let (_, headers, _) = chain.get(&full_page, &[("accept", ATOM_XML)]).await;
    assert!(is_cache_hit(&headers));
    let fetched = chain.backend_requests(&full_page);
    assert_eq!(fetched.len(), 1, "eventfeed saw the page once");
    assert_eq!(fetched[0].header("authorization").as_deref(), Some(BASIC_AUTH), "credentials are forwarded");

    // The head page is not `public`: an authenticated read always reaches
    // eventfeed, with the credentials, and so does the next one.
    let head = format!("/streams/{stream}");
    let head_auth = [("accept", ATOM_JSON), ("authorization", BASIC_AUTH)];
    let (status, headers, _) = chain.get(&head, &head_auth).await;
    assert_eq!(status, 200);
    assert!(!is_cache_hit(&headers));
    let (status, headers, _) = chain.get(&head, &head_auth).await;
    assert_eq!(status, 200);
    assert!(!is_cache_hit(&headers));
    let fetched = chain.backend_requests(&head);
    assert_eq!(fetched.len(), 2);
    assert!(fetched.iter().all(|e| e.header("authorization").as_deref() == Some(BASIC_AUTH)));
}

#[tokio::test]
async fn errors_are_not_cached_and_writes_pass_through() {
    let chain = Chain::start().await;
    let stream = fresh_stream("later");
    let path = format!("/streams/{stream}/0");

    let (status, _, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 404);

    // The append goes through Varnish (a pass) and links to Varnish's address.
    let response = chain
        .server
        .client
        .post(chain.varnish.url(&format!("/streams/{stream}")))
        .header("content-type", common::EVENTS_JSON)
        .header("cookie", "session=abc")
        .body(json!([event("Created", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = header(response.headers(), "location").unwrap();
    assert_eq!(location, chain.varnish.url(&path));
    let posted = chain.backend_requests(&format!("/streams/{stream}"));
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].method, "POST");
    assert_eq!(posted[0].header("cookie"), None, "cookies are stripped");

    // The event now exists; the earlier 404 was not kept.
    let (status, _, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert!(is_cache_hit(&headers), "a single event is immutable and cached");
    let statuses: Vec<_> = chain.backend_requests(&path).iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(404), Some(200)]);
}

#[tokio::test]
async fn deletes_and_metadata_writes_through_varnish_evict_that_stream() {
    let chain = Chain::start().await;
    let (truncated, deleted, untouched) = (fresh_stream("tb"), fresh_stream("gone"), fresh_stream("kept"));
    let page = |stream: &str| format!("/streams/{stream}/0/forward/20");
    let event_3 = |stream: &str| format!("/streams/{stream}/3");
    for stream in [&truncated, &deleted, &untouched] {
        chain.server.append_n(stream, 25).await;
        for path in [page(stream), event_3(stream)] {
            chain.get(&path, &[("accept", ATOM_JSON)]).await;
            let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
            assert_eq!(status, 200);
            assert!(is_cache_hit(&headers), "{path} is cached before the change");
        }
    }
    let send =
        |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status().as_u16() };
    let client = &chain.server.client;

    // Hiding events 0-19 through Varnish: the cached copies that show them go.
    let metadata = client
        .post(chain.varnish.url(&format!("/streams/{truncated}/metadata")))
        .header("content-type", "application/json")
        .body(json!({"$tb": 20}).to_string());
    assert_eq!(send(metadata).await, 201);
    let (status, headers, _) = chain.get(&event_3(&truncated), &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 404, "event 3 is hidden now, and not served from the cache");
    assert!(!is_cache_hit(&headers));
    let (_, headers, body) = chain.get(&page(&truncated), &[("accept", ATOM_JSON)]).await;
    assert!(!is_cache_hit(&headers), "the page is fetched again");
    assert!(!titles(&body).contains(&format!("3@{truncated}")), "{body}");

    // Deleting through Varnish: the stream's pages and events go.
    assert_eq!(send(client.delete(chain.varnish.url(&format!("/streams/{deleted}")))).await, 204);
    for path in [page(&deleted), event_3(&deleted)] {
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
        assert_eq!(status, 404, "{path} after the delete");
        assert!(!is_cache_hit(&headers));
    }

    // Other streams keep their cached copies.
    for path in [page(&untouched), event_3(&untouched)] {
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
        assert_eq!(status, 200);
        assert!(is_cache_hit(&headers), "{path} is still cached");
        assert!(header(&headers, "x-eventfeed-stream").is_none(), "the internal tag is not delivered");
    }
}

// ---------------------------------------------------------------------------
// varnishd
// ---------------------------------------------------------------------------

/// The shipped VCL, pointed at a backend on this machine.
fn vcl_for(backend: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/eventfeed.vcl");
    let vcl = std::fs::read_to_string(&path).unwrap();
    let host = ".host = \"127.0.0.1\";";
    let port = ".port = \"2113\";";
    assert!(vcl.contains(host) && vcl.contains(port), "the VCL's backend is 127.0.0.1:2113");
    vcl.replacen(host, &format!(".host = \"{}\";", backend.ip()), 1).replacen(
        port,
        &format!(".port = \"{}\";", backend.port()),
        1,
    )
}

fn varnishd_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("varnishd"))
        .find(|candidate| candidate.is_file())
        .expect("varnishd is installed (Debian package `varnish`; tests/run installs it)")
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `varnishd` in the foreground with its own working directory, storage and
/// listening port; stopped when dropped.
struct Varnish {
    child: Child,
    addr: SocketAddr,
    /// The VCL, working directory and log; removed after varnishd stops.
    _dir: TempDir,
}

impl Varnish {
    async fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vcl = dir.path().join("eventfeed.vcl");
        std::fs::write(&vcl, vcl_for(backend)).unwrap();
        let log = dir.path().join("varnishd.log");
        // Another process may take the port between free_port() and
        // varnishd's bind: try a few.
        for attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let work = dir.path().join(format!("work{attempt}"));
            let mut child = spawn_varnishd(&work, &vcl, addr, &log);
            match wait_until_serving(&mut child, addr, &log).await {
                Ok(()) => return Self { child, addr, _dir: dir },
                Err(output) => {
                    stop(&mut child);
                    if !output.contains("Address already in use") {
                        panic!("varnishd did not start:\n{output}");
                    }
                }
            }
        }
        panic!("varnishd found no free port");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Waits until a request through Varnish reaches the backend and comes
/// back; on failure returns varnishd's output.
async fn wait_until_serving(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let output = || std::fs::read_to_string(log).unwrap_or_default();
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("varnishd exited with {status}: {}", output()));
        }
        let ping = client.get(format!("http://{addr}/ping")).timeout(Duration::from_secs(5)).send().await;
        if ping.is_ok_and(|response| response.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("varnishd did not answer within 60 s: {}", output()))
}

/// SIGTERM lets varnishd's manager stop its cache process; SIGKILL if it
/// lingers.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_varnishd(work: &Path, vcl: &Path, addr: SocketAddr, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(varnishd_path())
        .arg("-F") // foreground: this process owns it and stops it
        .args(["-j", "none"]) // no privilege separation: runs as whoever runs the tests, root or not
        .arg("-n")
        .arg(work)
        .arg("-a")
        .arg(addr.to_string())
        .arg("-f")
        .arg(vcl)
        .args(["-s", "malloc,64m", "-T", "none"])
        // A test needs few threads and little shared-memory log.
        .args(["-p", "thread_pools=1", "-p", "thread_pool_min=10", "-p", "vsl_space=4M"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("varnishd starts")
}

impl Drop for Varnish {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// The recording proxy
// ---------------------------------------------------------------------------

/// One request that reached eventfeed, and its answer.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    /// Path and query, as sent.
    path: String,
    /// Names in lower case, in the order sent.
    headers: Vec<(String, String)>,
    /// eventfeed's status; `None` while it has not answered.
    status: Option<u16>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// An HTTP/1.1 relay that records every exchange. It forwards bytes as they
/// come (so long-polls and event streams behave as without it) and parses
/// only what it needs to find where each message ends.
struct RecordingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    task: JoinHandle<()>,
}

impl RecordingProxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&task_log);
                tokio::spawn(async move {
                    // A connection ends when either side closes it; errors
                    // there are the end of a connection, not of the test.
                    let _ = relay_connection(client, backend, log).await;
                });
            }
        });
        Self { addr, log, task }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    client: TcpStream,
    backend: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(backend).await?;
    let (client_read, mut client_write) = client.into_split();
    let (upstream_read, mut upstream_write) = upstream.into_split();
    let mut client_read = BufReader::new(client_read);
    let mut upstream_read = BufReader::new(upstream_read);
    loop {
        let Some(request_head) = read_head(&mut client_read).await? else { return Ok(()) };
        let (request_line, headers) = parse_head(&request_head);
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        upstream_write.write_all(&request_head).await?;
        relay_body(&mut client_read, &mut upstream_write, &headers, true).await?;
        let index = {
            let mut log = log.lock().unwrap();
            log.push(Exchange { method: method.clone(), path, headers, status: None });
            log.len() - 1
        };

        let Some(response_head) = read_head(&mut upstream_read).await? else { return Ok(()) };
        let (status_line, response_headers) = parse_head(&response_head);
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        log.lock().unwrap()[index].status = Some(status);
        client_write.write_all(&response_head).await?;
        client_write.flush().await?;
        let bodiless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        if !bodiless && !relay_body(&mut upstream_read, &mut client_write, &response_headers, false).await? {
            return Ok(()); // the body ran to the end of the connection
        }
    }
}

/// Reads a message head (start line and headers, through the blank line);
/// `None` at a clean end of the connection.
async fn read_head(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let line_start = head.len();
        if reader.read_until(b'\n', &mut head).await? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        if head[line_start..] == *b"\r\n" || head[line_start..] == *b"\n" {
            return Ok(Some(head));
        }
    }
}

fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let start_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (start_line, headers)
}

/// Copies one message body, framed by `Content-Length` or chunked encoding,
/// flushing as it goes. Without either, a request has no body and a
/// response runs to the end of the connection: returns `false` then.
async fn relay_body(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    headers: &[(String, String)],
    is_request: bool,
) -> std::io::Result<bool> {
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
    if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            reader.read_until(b'\n', &mut size_line).await?;
            writer.write_all(&size_line).await?;
            let size_text = String::from_utf8_lossy(&size_line);
            let size_hex = size_text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, through the blank line.
                let trailers = read_head(reader).await?.unwrap_or_default();
                writer.write_all(&trailers).await?;
                writer.flush().await?;
                return Ok(true);
            }
            copy_exactly(reader, writer, size + 2).await?; // the data and its CRLF
            writer.flush().await?;
        }
    }
    if let Some(length) = value("content-length").and_then(|v| v.parse::<u64>().ok()) {
        copy_exactly(reader, writer, length).await?;
        writer.flush().await?;
        return Ok(true);
    }
    if is_request {
        return Ok(true);
    }
    tokio::io::copy(reader, writer).await?;
    writer.flush().await?;
    Ok(false)
}

async fn copy_exactly(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    length: u64,
) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(length), writer).await?;
    if copied < length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
