//! eventfeed behind a real Varnish running the shipped VCL
//! (`deploy/varnish/eventfeed.vcl`).
//!
//! Each test starts its own chain (`common::varnish::Chain`) on loopback
//! ports: client, varnishd, a recording proxy, eventfeed in-process.
//! Varnish's own headers say what the cache believes it did; the recording
//! proxy says what actually reached eventfeed. Both must agree for a test
//! to pass. The guarantees nginx gives too are written once, in
//! `common::cache_scenarios`; this file runs them against Varnish and adds
//! what only the VCL does.
//!
//! `varnishd` comes from Debian's `varnish` package (`tests/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cache_chain::fresh_stream;
use common::cache_scenarios as scenarios;
use common::pages::page_titles;
use common::varnish::{Chain, is_cache_hit};
use common::{ATOM_JSON, ATOM_XML, header};
use serde_json::json;

#[tokio::test]
async fn a_full_page_is_fetched_once_and_then_served_from_the_cache() {
    let chain = Chain::start().await;
    let page = scenarios::a_full_page_is_fetched_once_and_then_served_from_the_cache(&chain).await;

    // Another client's Accept for the same representation shares the copy
    // (Varnish normalises Accept).
    let (_, headers, body) = chain.get(&page.path, &[("accept", "application/atom+xml, */*;q=0.1")]).await;
    assert!(is_cache_hit(&headers), "a differently worded Accept for Atom is a hit: {headers:?}");
    assert_eq!(body, page.body);
    let accepts: Vec<_> =
        chain.backend_requests(&page.path).iter().map(|e| e.header("accept").unwrap_or_default()).collect();
    assert_eq!(accepts, [ATOM_XML, ATOM_JSON], "eventfeed saw one request per representation");
}

/// Clients that take gzip and clients that do not each get a stored copy
/// in their encoding: no hit is gunzipped, and eventfeed is asked once per
/// encoding, for exactly that encoding.
#[tokio::test]
async fn gzip_and_identity_clients_each_hit_their_own_copy() {
    let chain = Chain::start().await;
    let encodings = scenarios::gzip_and_identity_clients_each_hit_their_own_copy(&chain).await;
    assert!(
        chain.backend_requests(&encodings.path).iter().all(|e| e.header("x-eventfeed-identity").is_none()),
        "the marker stays in Varnish"
    );
}

#[tokio::test]
async fn the_head_page_is_never_served_stale() {
    let chain = Chain::start().await;
    scenarios::the_head_page_is_never_served_stale(&chain).await;
}

/// Varnish keeps the page and asks eventfeed whether it still holds:
/// eventfeed answers 304 and Varnish serves its copy. (The VCL gives the
/// copy a TTL of one millisecond, during which a read passes straight to
/// eventfeed instead; the scenario waits that out.)
#[tokio::test]
async fn the_head_page_revalidates_with_its_etag() {
    let chain = Chain::start().await;
    scenarios::the_head_page_revalidates_with_its_etag(&chain).await;
}

#[tokio::test]
async fn a_long_poll_through_varnish_wakes_on_append() {
    let chain = Chain::start().await;
    scenarios::a_long_poll_wakes_on_append(&chain).await;
}

#[tokio::test]
async fn server_sent_events_stream_through_varnish() {
    let chain = Chain::start().await;
    scenarios::server_sent_events_stream_through(&chain).await;
}

#[tokio::test]
async fn authenticated_readers_share_public_pages_but_nothing_else() {
    let chain = Chain::start().await;
    scenarios::authenticated_readers_share_public_pages(&chain).await;
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
        .post(chain.url(&format!("/streams/{truncated}/metadata")))
        .header("content-type", "application/json")
        .body(json!({"$tb": 20}).to_string());
    assert_eq!(send(metadata).await, 201);
    let (status, headers, _) = chain.get(&event_3(&truncated), &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 404, "event 3 is hidden now, and not served from the cache");
    assert!(!is_cache_hit(&headers));
    let (_, headers, body) = chain.get(&page(&truncated), &[("accept", ATOM_JSON)]).await;
    assert!(!is_cache_hit(&headers), "the page is fetched again");
    assert!(!page_titles(&body).contains(&format!("3@{truncated}")), "{body}");

    // Deleting through Varnish: the stream's pages and events go.
    assert_eq!(send(client.delete(chain.url(&format!("/streams/{deleted}")))).await, 204);
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
