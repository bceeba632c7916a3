//! eventfeed behind a real Varnish running the shipped VCL
//! (`deploy/varnish/eventfeed.vcl`).
//!
//! Each test starts its own chain (`common::varnish::Chain`) on loopback
//! ports: client, varnishd, a recording proxy, eventfeed in-process.
//! Varnish's own headers say what the cache believes it did; the recording
//! proxy says what actually reached eventfeed. Both must agree for a test
//! to pass.
//!
//! `varnishd` comes from Debian's `varnish` package (`tests/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::pages::page_titles;
use common::varnish::{Chain, fresh_stream, is_cache_hit};
use common::{ATOM_JSON, ATOM_XML, client, event, header};
use serde_json::json;

/// Longer than the one-millisecond TTL the VCL gives head pages.
const PAST_THE_MILLISECOND: Duration = Duration::from_millis(20);

/// Basic credentials as several real clients send them on every request
/// (`admin:changeit`, EventStore's default).
const BASIC_AUTH: &str = "Basic YWRtaW46Y2hhbmdlaXQ=";

/// `admin:wrong`.
const BASIC_AUTH_WRONG: &str = "Basic YWRtaW46d3Jvbmc=";

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
    assert_eq!(page_titles(&body).len(), 20);

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
    assert_eq!(page_titles(&body), [format!("2@{stream}"), format!("1@{stream}"), format!("0@{stream}")]);

    chain.server.append_n(&stream, 1).await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert!(!is_cache_hit(&headers));
    assert_eq!(page_titles(&body).first(), Some(&format!("3@{stream}")), "the append is visible at once");
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
    assert_eq!(page_titles(&body).first(), Some(&format!("2@{stream}")));
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
    assert_eq!(page_titles(&body), [format!("1@{stream}")], "the long-poll answers with the new event");
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
async fn pages_only_some_may_read_are_never_cached() {
    let chain = Chain::start().await;
    let stream = fresh_stream("private");
    chain.server.append_n(&stream, 25).await;
    let user = json!({ "loginName": "reader", "password": "pw", "groups": [] });
    let created = chain.server.client.post(chain.server.url("/users/")).json(&user).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let acl = json!({ "$acl": { "$r": "reader" } });
    assert_eq!(chain.server.set_metadata(&stream, acl).await.status(), 201);
    // reader:pw
    let reader = [("accept", ATOM_XML), ("authorization", "Basic cmVhZGVyOnB3")];
    for path in [
        format!("/streams/{stream}/0/forward/20"),
        format!("/streams/{stream}/3"),
        format!("/streams/{stream}"),
    ] {
        for _ in 0..2 {
            let (status, headers, _) = chain.get(&path, &reader).await;
            assert_eq!(status, 200, "{path}");
            assert!(header(&headers, "cache-control").unwrap().contains("private"), "{path}: {headers:?}");
            assert!(!is_cache_hit(&headers), "{path}: a private page is never a hit");
        }
        // Nobody else gets it from the cache: anonymous and wrong
        // credentials reach eventfeed, which refuses them.
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_XML)]).await;
        assert_eq!(status, 401, "{path}");
        assert!(!is_cache_hit(&headers));
        let (status, _, _) =
            chain.get(&path, &[("accept", ATOM_XML), ("authorization", BASIC_AUTH_WRONG)]).await;
        assert_eq!(status, 401, "{path}");
        let statuses: Vec<_> = chain.backend_requests(&path).iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [Some(200), Some(200), Some(401), Some(401)],
            "{path}: every read reached eventfeed"
        );
    }
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
    assert!(!page_titles(&body).contains(&format!("3@{truncated}")), "{body}");

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
