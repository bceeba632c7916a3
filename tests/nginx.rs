//! eventfeed behind a real nginx running the shipped `proxy_cache`
//! configuration (`deploy/nginx/eventfeed.conf`): the guarantees
//! tests/varnish.rs checks of the VCL, and the one nginx cannot give
//! (evicting a deleted stream), with the documented way around it.
//!
//! Each test starts its own chain (`common::nginx::Chain`) on loopback
//! ports: client, nginx (its cache and its relay), a recording proxy,
//! eventfeed in-process. nginx's `X-Cache-Status` says what the cache
//! believes it did; the recording proxy says what actually reached
//! eventfeed. Both must agree for a test to pass. The guarantees Varnish
//! gives too are written once, in `common::cache_scenarios`; this file runs
//! them against nginx and adds what is nginx's own.
//!
//! `nginx` comes from Debian's `nginx` package (`tests/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::cache_chain::fresh_stream;
use common::cache_scenarios::{self as scenarios, BASIC_AUTH, BASIC_AUTH_WRONG};
use common::nginx::{Chain, SHIPPED_CACHE_DIR, cache_status, is_cache_hit};
use common::{ATOM_JSON, ATOM_XML, client, header};

#[tokio::test]
async fn nginx_runs_unprivileged() {
    let chain = Chain::start().await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", chain.front.pid())).unwrap();
    let uid = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap();
    assert!(uid.split_whitespace().all(|id| id != "0"), "nginx's master runs as uid {uid}");
}

#[tokio::test]
async fn a_full_page_is_fetched_once_and_then_served_from_the_cache() {
    let chain = Chain::start().await;
    scenarios::a_full_page_is_fetched_once_and_then_served_from_the_cache(&chain).await;
}

/// Clients that take gzip and clients that do not each get a stored copy
/// in their encoding: eventfeed is asked once per encoding, for exactly
/// that encoding, and nginx never gunzips.
#[tokio::test]
async fn gzip_and_identity_clients_each_hit_their_own_copy() {
    let chain = Chain::start().await;
    let scenarios::Encodings { path, plain } =
        scenarios::gzip_and_identity_clients_each_hit_their_own_copy(&chain).await;

    // A client that takes gzip among others is sent gzip, and one that
    // refuses it (q=0) no gzip. (Each is a copy of its own: nginx keeps a
    // copy per wording of the headers eventfeed's Vary names.)
    let (_, headers, _) =
        chain.get(&path, &[("accept", ATOM_XML), ("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, body) = chain.get(&path, &[("accept", ATOM_XML), ("accept-encoding", "gzip;q=0")]).await;
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(body, plain);

    // eventfeed was asked for gzip or for nothing, never anything else.
    let fetched = chain.backend_requests(&path);
    let encodings: Vec<_> = fetched.iter().map(|e| e.header("accept-encoding")).collect();
    let gzip = Some("gzip".to_owned());
    assert_eq!(encodings, [None, gzip.clone(), gzip, None], "one fetch per encoding and wording");
}

#[tokio::test]
async fn the_head_page_is_never_served_stale() {
    let chain = Chain::start().await;
    let headers = scenarios::the_head_page_is_never_served_stale(&chain).await;
    assert_eq!(
        cache_status(&headers).as_deref(),
        Some("EXPIRED"),
        "the kept copy was not served: {headers:?}"
    );
}

/// nginx keeps the page (the relay's X-Accel-Expires) and asks eventfeed
/// whether it still holds: eventfeed answers 304 and nginx serves its
/// copy.
#[tokio::test]
async fn the_head_page_revalidates_with_its_etag() {
    let chain = Chain::start().await;
    let headers = scenarios::the_head_page_revalidates_with_its_etag(&chain).await;
    assert_eq!(cache_status(&headers).as_deref(), Some("REVALIDATED"), "{headers:?}");
    assert_eq!(header(&headers, "cache-control").as_deref(), Some("max-age=0, no-cache, must-revalidate"));
}

#[tokio::test]
async fn a_long_poll_through_nginx_wakes_on_append_and_is_not_cached() {
    let chain = Chain::start().await;
    let scenarios::LongPoll { path, headers } = scenarios::a_long_poll_wakes_on_append(&chain).await;
    assert_eq!(cache_status(&headers), None, "passed through, not looked up: {headers:?}");

    // Its answer was not stored: the next long-poll reaches eventfeed too.
    let response = client()
        .get(chain.url(&path))
        .header("accept", ATOM_JSON)
        .header("es-longpoll", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(chain.backend_requests(&path).len(), 2);
}

#[tokio::test]
async fn server_sent_events_stream_through_nginx() {
    let chain = Chain::start().await;
    let headers = scenarios::server_sent_events_stream_through(&chain).await;
    assert_eq!(cache_status(&headers), None, "passed through: {headers:?}");
}

#[tokio::test]
async fn authenticated_readers_share_public_pages_but_nothing_else() {
    let chain = Chain::start().await;
    // The head page, fetched with credentials, is not kept, so every
    // authenticated read reaches eventfeed in full, with the credentials.
    let head = scenarios::authenticated_readers_share_public_pages(&chain).await;
    let head_auth = [("accept", ATOM_JSON), ("authorization", BASIC_AUTH)];

    // Kept from an anonymous read, it is served to a reader with
    // credentials only after eventfeed's 304 for those credentials, and to
    // wrong credentials not at all.
    let (_, headers, _) = chain.get(&head, &[("accept", ATOM_JSON)]).await;
    assert_eq!(cache_status(&headers).as_deref(), Some("MISS"));
    let (status, headers, _) = chain.get(&head, &head_auth).await;
    assert_eq!(status, 200);
    assert_eq!(cache_status(&headers).as_deref(), Some("REVALIDATED"), "{headers:?}");
    let (status, _, _) =
        chain.get(&head, &[("accept", ATOM_JSON), ("authorization", BASIC_AUTH_WRONG)]).await;
    assert_eq!(status, 401, "a kept copy is no answer to wrong credentials");
    let fetched = chain.backend_requests(&head);
    let seen: Vec<_> = fetched
        .iter()
        .map(|e| (e.header("authorization").is_some(), e.header("if-none-match").is_some(), e.status))
        .collect();
    assert_eq!(
        seen,
        [
            (true, false, Some(200)),
            (true, false, Some(200)),
            (false, false, Some(200)),
            (true, true, Some(304)),
            (true, true, Some(401))
        ]
    );
}

#[tokio::test]
async fn pages_only_some_may_read_are_never_cached() {
    let chain = Chain::start().await;
    scenarios::pages_only_some_may_read_are_never_cached(&chain).await;
}

#[tokio::test]
async fn errors_are_not_cached_and_writes_pass_through() {
    let chain = Chain::start().await;
    scenarios::errors_are_not_cached_and_writes_pass_through(&chain).await;

    // Persistent subscriptions are never looked up in the cache.
    let (status, headers, _) = chain.get("/subscriptions", &[("accept", "application/json")]).await;
    assert_ne!(status, 0);
    assert_eq!(cache_status(&headers), None, "{headers:?}");
}

/// What the VCL does on a delete or a metadata write, open-source nginx
/// cannot: its cached immutable pages of the stream stay. The head page
/// shows the change at once, and the command docs/varnish.md gives removes
/// the stream's copies, and no other stream's.
#[tokio::test]
async fn deletes_through_nginx_leave_immutable_pages_until_the_documented_command_removes_them() {
    let chain = Chain::start().await;
    let (deleted, untouched) = (fresh_stream("gone"), fresh_stream("kept"));
    let page = |stream: &str| format!("/streams/{stream}/0/forward/20");
    let event_3 = |stream: &str| format!("/streams/{stream}/3");
    for stream in [&deleted, &untouched] {
        chain.server.append_n(stream, 25).await;
        for path in [page(stream), event_3(stream), format!("/streams/{stream}")] {
            chain.get(&path, &[("accept", ATOM_JSON)]).await;
        }
    }
    let client = &chain.server.client;
    let deleted_status = client.delete(chain.url(&format!("/streams/{deleted}"))).send().await.unwrap();
    assert_eq!(deleted_status.status(), 204);

    let (status, _, _) = chain.get(&format!("/streams/{deleted}"), &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 404, "the head page is asked of eventfeed, and shows the delete");
    for path in [page(&deleted), event_3(&deleted)] {
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
        assert_eq!(status, 200, "{path}: nginx cannot evict it");
        assert!(is_cache_hit(&headers), "{path}: {headers:?}");
    }

    // The documented command, as written, with this cache's directory and
    // without its `sudo` (the tests run as nginx's user, or as root).
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/varnish.md")).unwrap();
    let command = docs
        .lines()
        .find(|line| line.contains("grep ") && line.contains(SHIPPED_CACHE_DIR))
        .expect("docs/varnish.md gives the command that removes a stream's copies");
    let command = command
        .replace("sudo ", "")
        .replace(SHIPPED_CACHE_DIR, &chain.front.cache_dir().display().to_string());
    let output = Command::new("sh").arg("-c").arg(&command).env("stream", &deleted).output().unwrap();
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));

    for path in [page(&deleted), event_3(&deleted)] {
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
        assert_eq!(status, 404, "{path} after the command");
        assert!(!is_cache_hit(&headers));
    }
    for path in [page(&untouched), event_3(&untouched)] {
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
        assert_eq!(status, 200);
        assert!(is_cache_hit(&headers), "{path} is still cached");
    }
    let log = chain.front.error_log();
    assert!(!log.contains("[crit]") && !log.contains("[alert]"), "{log}");
}
