//! eventfeed behind a real nginx running the shipped `proxy_cache`
//! configuration (`deploy/nginx/eventfeed.conf`): the guarantees
//! tests/varnish.rs checks of the VCL, and the one nginx cannot give
//! (evicting a deleted stream), with the documented way around it.
//!
//! Each test starts its own chain (`common::nginx::Chain`) on loopback
//! ports: client, nginx (its cache and its relay), a recording proxy,
//! eventfeed in-process. nginx's `X-Cache-Status` says what the cache
//! believes it did; the recording proxy says what actually reached
//! eventfeed. Both must agree for a test to pass.
//!
//! `nginx` comes from Debian's `nginx` package (`tests/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::{Chain, SHIPPED_CACHE_DIR, cache_status, is_cache_hit};
use common::pages::page_titles;
use common::varnish::fresh_stream;
use common::{ATOM_JSON, ATOM_XML, client, event, header};
use serde_json::json;

/// Basic credentials as several real clients send them on every request
/// (`admin:changeit`, EventStore's default).
const BASIC_AUTH: &str = "Basic YWRtaW46Y2hhbmdlaXQ=";

/// `admin:wrong`.
const BASIC_AUTH_WRONG: &str = "Basic YWRtaW46d3Jvbmc=";

#[tokio::test]
async fn nginx_runs_unprivileged() {
    let chain = Chain::start().await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", chain.nginx.pid())).unwrap();
    let uid = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap();
    assert!(uid.split_whitespace().all(|id| id != "0"), "nginx's master runs as uid {uid}");
}

#[tokio::test]
async fn a_full_page_is_fetched_once_and_then_served_from_the_cache() {
    let chain = Chain::start().await;
    let stream = fresh_stream("cached");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");

    let (status, first_headers, first_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&first_headers, "cache-control").as_deref(), Some("max-age=31536000, public"));
    assert_eq!(cache_status(&first_headers).as_deref(), Some("MISS"), "{first_headers:?}");

    let (status, second_headers, second_body) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert_eq!(status, 200);
    assert!(is_cache_hit(&second_headers), "the second read is a hit: {second_headers:?}");
    assert_eq!(first_body, second_body);
    assert!(header(&second_headers, "x-accel-expires").is_none());

    // Another representation is another copy (eventfeed's Vary: Accept),
    // fetched once, then served from the cache too; the first is unharmed.
    let (_, headers, body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(cache_status(&headers).as_deref(), Some("MISS"), "the JSON representation is another copy");
    assert_eq!(page_titles(&body).len(), 20);
    let (_, headers, again) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(again, body);
    let (_, headers, again) = chain.get(&path, &[("accept", ATOM_XML)]).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(again, first_body);

    let fetched = chain.backend_requests(&path);
    let accepts: Vec<_> = fetched.iter().map(|e| e.header("accept").unwrap_or_default()).collect();
    assert_eq!(accepts, [ATOM_XML, ATOM_JSON], "eventfeed saw one request per representation");
    assert!(fetched.iter().all(|e| e.status == Some(200)));
}

/// Clients that take gzip and clients that do not each get a stored copy
/// in their encoding: eventfeed is asked once per encoding, for exactly
/// that encoding, and nginx never gunzips.
#[tokio::test]
async fn gzip_and_identity_clients_each_hit_their_own_copy() {
    let chain = Chain::start().await;
    let stream = fresh_stream("encodings");
    chain.server.append_n(&stream, 25).await;
    let path = format!("/streams/{stream}/0/forward/20");
    let identity = [("accept", ATOM_XML)];
    let gzip = [("accept", ATOM_XML), ("accept-encoding", "gzip")];

    let (_, headers, plain) = chain.get(&path, &identity).await;
    assert_eq!(cache_status(&headers).as_deref(), Some("MISS"));
    assert!(plain.starts_with("<?xml"), "{plain}");
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(again, plain);

    let (_, headers, _) = chain.get(&path, &gzip).await;
    assert_eq!(
        cache_status(&headers).as_deref(),
        Some("MISS"),
        "the gzip copy is another entry: {headers:?}"
    );
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, _) = chain.get(&path, &gzip).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding").as_deref(), Some("gzip"));
    let (_, headers, again) = chain.get(&path, &identity).await;
    assert!(is_cache_hit(&headers), "{headers:?}");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(again, plain, "the plain copy is still served as stored");

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
    assert_eq!(
        cache_status(&headers).as_deref(),
        Some("EXPIRED"),
        "the kept copy was not served: {headers:?}"
    );
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
    assert_eq!(cache_status(&headers).as_deref(), Some("MISS"));
    let etag = header(&headers, "etag").expect("the head page has an ETag");

    // nginx keeps the page (the relay's X-Accel-Expires) and asks eventfeed
    // whether it still holds: eventfeed answers 304 and nginx serves its
    // copy.
    let (status, headers, second_body) = chain.get(&path, &[("accept", ATOM_JSON)]).await;
    assert_eq!(status, 200);
    assert_eq!(cache_status(&headers).as_deref(), Some("REVALIDATED"), "{headers:?}");
    assert_eq!(header(&headers, "cache-control").as_deref(), Some("max-age=0, no-cache, must-revalidate"));
    assert_eq!(second_body, first_body);

    // A client that has the page gets 304 through nginx.
    let (status, headers, body) = chain.get(&path, &[("accept", ATOM_JSON), ("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(etag.clone()));

    let exchanges = chain.backend_requests(&path);
    assert_eq!(exchanges.len(), 3, "every read of a no-cache page asks eventfeed");
    assert_eq!(exchanges[0].header("if-none-match"), None);
    assert_eq!(exchanges[0].status, Some(200));
    for revalidation in &exchanges[1..] {
        let sent = revalidation.header("if-none-match").expect("nginx revalidates with If-None-Match");
        assert_eq!(sent, etag);
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
async fn a_long_poll_through_nginx_wakes_on_append_and_is_not_cached() {
    let chain = Chain::start().await;
    let stream = fresh_stream("longpoll");
    chain.server.append_n(&stream, 1).await;
    let path = format!("/streams/{stream}/1/forward/20?embed=body");

    let url = chain.nginx.url(&path);
    let poller = tokio::spawn(async move {
        let started = Instant::now();
        let response =
            client().get(url).header("accept", ATOM_JSON).header("es-longpoll", "10").send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap(), started.elapsed())
    });
    // Append only once the long-poll waits at eventfeed.
    common::wait_for_waiters(&chain.server.client, &chain.server.base, 1).await;
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
    assert_eq!(cache_status(&headers), None, "passed through, not looked up: {headers:?}");
    let sent = chain.backend_requests(&path);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("es-longpoll").as_deref(), Some("10"), "the header reaches eventfeed");

    // Its answer was not stored: the next long-poll reaches eventfeed too.
    let response = client()
        .get(chain.nginx.url(&path))
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
    let stream = fresh_stream("sse");
    chain.server.append_n(&stream, 1).await;

    let response = chain
        .server
        .client
        .get(chain.nginx.url(&format!("/streams/{stream}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").unwrap().starts_with("text/event-stream"));
    assert_eq!(cache_status(response.headers()), None, "passed through: {:?}", response.headers());

    // The event appended while the stream is open arrives through nginx
    // while the response is still open: nginx does not buffer it.
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

    // The head page is not `public`: fetched with credentials, it is not
    // kept, so every authenticated read reaches eventfeed in full, with
    // the credentials.
    let head = format!("/streams/{stream}");
    let head_auth = [("accept", ATOM_JSON), ("authorization", BASIC_AUTH)];
    for _ in 0..2 {
        let (status, headers, _) = chain.get(&head, &head_auth).await;
        assert_eq!(status, 200);
        assert_eq!(cache_status(&headers).as_deref(), Some("MISS"), "{headers:?}");
    }
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
            assert_eq!(
                cache_status(&headers).as_deref(),
                Some("MISS"),
                "{path}: a private page is never kept"
            );
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

    // The append goes through nginx and links to nginx's address.
    let response = chain
        .server
        .client
        .post(chain.nginx.url(&format!("/streams/{stream}")))
        .header("content-type", common::EVENTS_JSON)
        .header("cookie", "session=abc")
        .body(json!([event("Created", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = header(response.headers(), "location").unwrap();
    assert_eq!(location, chain.nginx.url(&path));
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
    let deleted_status = client.delete(chain.nginx.url(&format!("/streams/{deleted}"))).send().await.unwrap();
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
        .replace(SHIPPED_CACHE_DIR, &chain.nginx.cache_dir().display().to_string());
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
    let log = chain.nginx.error_log();
    assert!(!log.contains("[crit]") && !log.contains("[alert]"), "{log}");
}
