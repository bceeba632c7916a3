//! The caching guarantees Varnish and nginx must both give, written once
//! against a [`Chain`] with either in front ([`CacheFront`]). Each scenario
//! asserts what holds for both caches, and returns what a cache-specific
//! test goes on to check (headers the cache answered with, paths, bodies).
//! tests/varnish.rs and tests/nginx.rs call them, one `#[tokio::test]` a
//! scenario, and add what only their cache does.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::json;

use super::cache_chain::{CacheFront, Chain, fresh_stream};
use super::http::{ATOM_JSON, ATOM_XML, EVENTS_JSON, client, event, header};
use super::pages::page_titles;

/// Basic credentials as several real clients send them on every request
/// (`admin:changeit`, EventStore's default).
pub const BASIC_AUTH: &str = "Basic YWRtaW46Y2hhbmdlaXQ=";

/// `admin:wrong`.
pub const BASIC_AUTH_WRONG: &str = "Basic YWRtaW46d3Jvbmc=";

/// A full page, read as Atom.
pub struct FullPage {
    pub path: String,
    /// The Atom body eventfeed served and the cache kept.
    pub body: String,
}

/// A full page is fetched once per representation and then served from
/// the cache: each representation is its own copy (eventfeed's
/// `Vary: Accept`), and neither harms the other.
pub async fn a_full_page_is_fetched_once_and_then_served_from_the_cache<F: CacheFront>(
    chain: &Chain<F>,
) -> FullPage {
    let stream = fresh_stream("cached");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");

    let (status, first_headers, first_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&first_headers, "cache-control").as_deref(), Some("max-age=31536000, public"));
    F::assert_miss(&first_headers, "the first read is a miss");

    let (status, second_headers, second_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert!(F::is_cache_hit(&second_headers), "the second read is a hit: {second_headers:?}");
    assert_eq!(first_body, second_body);
    assert!(header(&second_headers, "x-accel-expires").is_none());

    // Another representation is another copy, fetched once, then served
    // from the cache too; the first is unharmed.
    let (_, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    F::assert_miss(&headers, "the JSON representation is another copy");
    assert_eq!(page_titles(&body).len(), 20);
    let (_, headers, again) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert!(F::is_cache_hit(&headers), "{headers:?}");
    assert_eq!(again, body);
    let (_, headers, again) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert!(F::is_cache_hit(&headers), "{headers:?}");
    assert_eq!(again, first_body);

    let fetched = chain.backend_requests(&path);
    let accepts: Vec<_> = fetched.iter().map(|e| e.header("accept").unwrap_or_default()).collect();
    assert_eq!(accepts, [ATOM_XML, ATOM_JSON], "eventfeed saw one request per representation");
    assert!(fetched.iter().all(|e| e.status == Some(200)));
    FullPage { path, body: first_body }
}

/// The page [`gzip_and_identity_clients_each_hit_their_own_copy`] read.
pub struct Encodings {
    pub path: String,
    /// The plain (identity) body.
    pub plain: String,
}

/// Clients that take gzip and clients that do not each get a stored copy
/// in their encoding: no hit is gunzipped, and eventfeed is asked once per
/// encoding, for exactly that encoding.
pub async fn gzip_and_identity_clients_each_hit_their_own_copy<F: CacheFront>(chain: &Chain<F>) -> Encodings {
    let stream = fresh_stream("encodings");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");
    let identity = [("accept", ATOM_XML)];
    let gzip = [("accept", ATOM_XML), ("accept-encoding", "gzip")];

    let (_, headers, plain) = chain.get(&path, &identity).await;
    F::assert_miss(&headers, "the first plain read");
    assert!(plain.starts_with("<?xml"), "{plain}");
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(F::is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(again, plain);

    let (_, headers, _) = chain.get(&path, &gzip).await;
    F::assert_miss(&headers, "the gzip copy is another entry");
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, _) = chain.get(&path, &gzip).await;
    assert!(F::is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(F::is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(again, plain, "the plain copy is still served as stored");

    let encodings: Vec<_> =
        chain.backend_requests(&path).iter().map(|e| e.header("accept-encoding")).collect();
    assert_eq!(encodings, [None, Some("gzip".to_owned())], "one fetch per encoding");
    Encodings { path, plain }
}

/// The head page is `no-cache`: after an append the next read shows it.
/// Returns the headers of that read.
pub async fn the_head_page_is_never_served_stale<F: CacheFront>(chain: &Chain<F>) -> HeaderMap {
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
    assert!(!F::is_cache_hit(&headers), "the kept copy was not served: {headers:?}");
    assert_eq!(page_titles(&body).first(), Some(&format!("3@{stream}")), "the append is visible at once");
    assert_eq!(chain.backend_requests(&path).len(), 2, "each read of the head asked eventfeed");
    headers
}

/// The cache keeps the head page and asks eventfeed whether it still holds
/// (`If-None-Match`): eventfeed answers 304 and the cache serves its copy;
/// a client that has the page gets 304; after an append the new page.
/// Returns the headers of the read the cache served after eventfeed's 304.
pub async fn the_head_page_revalidates_with_its_etag<F: CacheFront>(chain: &Chain<F>) -> HeaderMap {
    let stream = fresh_stream("etag");
    chain.server.append_n(&stream, 2).await;
    let path = format!("/streams/{stream}");
    // eventfeed weakens the ETag (W/) of gzip bodies; where the cache may
    // fetch those, either form revalidates.
    let compared = |etag: &str| {
        if F::MAY_WEAKEN_ETAGS { etag.trim_start_matches("W/").to_owned() } else { etag.to_owned() }
    };
    // Where the cache passes a just-fetched head page straight to
    // eventfeed for a moment, wait that out so the test sees the
    // revalidation.
    let past_the_pass = || async {
        if !F::PASS_AFTER_FETCH.is_zero() {
            tokio::time::sleep(F::PASS_AFTER_FETCH).await;
        }
    };

    let (status, fetched, first_body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    F::assert_miss(&fetched, "the first read of the head page");
    let etag = compared(&header(&fetched, "etag").expect("the head page has an ETag"));

    past_the_pass().await;
    let (status, revalidated, second_body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert_eq!(second_body, first_body);

    // A client that has the page gets 304 through the cache.
    past_the_pass().await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON), ("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag").map(|e| compared(&e)), Some(etag.clone()));

    let exchanges = chain.backend_requests(&path);
    assert_eq!(exchanges.len(), 3, "every read of a no-cache page asks eventfeed");
    assert_eq!(exchanges[0].header("if-none-match"), None);
    assert_eq!(exchanges[0].status, Some(200));
    for revalidation in &exchanges[1..] {
        let sent = revalidation
            .header("if-none-match")
            .unwrap_or_else(|| panic!("{} revalidates with If-None-Match", F::NAME));
        assert_eq!(compared(&sent), etag);
        assert_eq!(revalidation.status, Some(304), "eventfeed did not render the page again");
    }

    // After an append the old ETag no longer matches: the new page comes back.
    chain.server.append_n(&stream, 1).await;
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON), ("if-none-match", &etag)]).await;
    assert_eq!(status, 200);
    assert_ne!(header(&headers, "etag"), Some(etag));
    assert_eq!(page_titles(&body).first(), Some(&format!("2@{stream}")));
    assert_eq!(chain.backend_requests(&path).last().unwrap().status, Some(200));
    revalidated
}

/// The long-poll [`a_long_poll_wakes_on_append`] made.
pub struct LongPoll {
    pub path: String,
    /// The headers the cache answered it with.
    pub headers: HeaderMap,
}

/// A long-poll through the cache waits at eventfeed (`ES-LongPoll` reaches
/// it) and is woken by an append, not by its deadline.
pub async fn a_long_poll_wakes_on_append<F: CacheFront>(chain: &Chain<F>) -> LongPoll {
    let stream = fresh_stream("longpoll");
    chain.server.append_n(&stream, 1).await;
    let path = format!("/streams/{stream}/1/forward/20?embed=body");

    let url = chain.url(&path);
    let poller = tokio::spawn(async move {
        let started = Instant::now();
        let response =
            client().get(url).header("accept", ATOM_JSON).header("es-longpoll", "10").send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap(), started.elapsed())
    });
    // Append only once the long-poll waits at eventfeed.
    super::wait_for_waiters(&chain.server.client, &chain.server.base, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended = Instant::now();
    chain.server.append_n(&stream, 1).await;

    let (status, headers, body, waited) =
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
    LongPoll { path, headers }
}

/// An event appended while a server-sent event stream is open arrives
/// through the cache while the response is still open: the cache does not
/// buffer it. Returns the headers the stream was opened with.
pub async fn server_sent_events_stream_through<F: CacheFront>(chain: &Chain<F>) -> HeaderMap {
    let stream = fresh_stream("sse");
    chain.server.append_n(&stream, 1).await;

    let mut response = chain
        .server
        .client
        .get(chain.url(&format!("/streams/{stream}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(header(&headers, "content-type").unwrap().starts_with("text/event-stream"));

    super::wait_for_waiters(&chain.server.client, &chain.server.base, 1).await;
    let marker = format!("Marker{}", uuid::Uuid::new_v4().simple());
    let appended = chain.server.post_events(&stream, &json!([event(&marker, json!({"x": 1}))])).await;
    assert_eq!(appended.status(), 201);

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
    headers
}

/// A client sending credentials fills the cache with a public page and is
/// then served from it, as is an anonymous reader; the credentials reach
/// eventfeed. The head page is not `public`: two authenticated reads each
/// reach eventfeed. Returns the head page's path, whose exchanges the
/// cache-specific tests go on to check.
pub async fn authenticated_readers_share_public_pages<F: CacheFront>(chain: &Chain<F>) -> String {
    let stream = fresh_stream("auth");
    chain.server.append_n(&stream, 25).await;
    let full_page = format!("/streams/{stream}/0/forward/20");
    let auth = [("accept", ATOM_XML), ("authorization", BASIC_AUTH)];

    // A client sending credentials fills the cache with a public page...
    let (status, headers, body) = chain.get(&full_page, &auth).await;
    assert_eq!(status, 200);
    assert!(!F::is_cache_hit(&headers));
    // ...and is then served from it, as is an anonymous reader.
    let (status, headers, again) = chain.get(&full_page, &auth).await;
    assert_eq!(status, 200);
    assert!(F::is_cache_hit(&headers), "an authenticated read of a public page is a hit: {headers:?}");
    assert_eq!(again, body);
    let (_, headers, _) = chain.get(&full_page, &[("accept", ATOM_XML)]).await;
    assert!(F::is_cache_hit(&headers));
    let fetched = chain.backend_requests(&full_page);
    assert_eq!(fetched.len(), 1, "eventfeed saw the page once");
    assert_eq!(fetched[0].header("authorization").as_deref(), Some(BASIC_AUTH), "credentials are forwarded");

    // The head page is not `public`: an authenticated read always reaches
    // eventfeed, with the credentials, and so does the next one.
    let head = format!("/streams/{stream}");
    let head_auth = [("accept", ATOM_JSON), ("authorization", BASIC_AUTH)];
    for _ in 0..2 {
        let (status, headers, _) = chain.get(&head, &head_auth).await;
        assert_eq!(status, 200);
        F::assert_miss(&headers, "an authenticated read of the head page");
    }
    let fetched = chain.backend_requests(&head);
    assert_eq!(fetched.len(), 2);
    assert!(fetched.iter().all(|e| e.header("authorization").as_deref() == Some(BASIC_AUTH)));
    head
}

/// Pages of a stream only some may read are `private`: never kept, and
/// nobody else gets them from the cache.
pub async fn pages_only_some_may_read_are_never_cached<F: CacheFront>(chain: &Chain<F>) {
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
            F::assert_miss(&headers, &format!("{path}: a private page is never kept"));
        }
        // Nobody else gets it from the cache: anonymous and wrong
        // credentials reach eventfeed, which refuses them.
        let (status, headers, _) = chain.get(&path, &[("accept", ATOM_XML)]).await;
        assert_eq!(status, 401, "{path}");
        assert!(!F::is_cache_hit(&headers));
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

/// A 404 is not kept; an append goes through the cache (cookies stripped)
/// and links to the cache's address; a single event is then cached.
pub async fn errors_are_not_cached_and_writes_pass_through<F: CacheFront>(chain: &Chain<F>) {
    let stream = fresh_stream("later");
    let path = format!("/streams/{stream}/0");

    let (status, _, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 404);

    // The append goes through the cache and links to the cache's address.
    let response = chain
        .server
        .client
        .post(chain.url(&format!("/streams/{stream}")))
        .header("content-type", EVENTS_JSON)
        .header("cookie", "session=abc")
        .body(json!([event("Created", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = header(response.headers(), "location").unwrap();
    assert_eq!(location, chain.url(&path));
    let posted = chain.backend_requests(&format!("/streams/{stream}"));
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].method, "POST");
    assert_eq!(posted[0].header("cookie"), None, "cookies are stripped");

    // The event now exists; the earlier 404 was not kept.
    let (status, _, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    let (status, headers, _) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert!(F::is_cache_hit(&headers), "a single event is immutable and cached");
    let statuses: Vec<_> = chain.backend_requests(&path).iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(404), Some(200)]);
}
