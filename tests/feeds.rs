//! Reading streams as feeds: exact bytes, paging walks, immutability, cache
//! headers, negotiation, valid Atom, links behind proxies, CORS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::pages::{Walk, normalise_times};
use common::{ATOM_JSON, ATOM_XML, EVENTS_JSON, TestServer, link};
use quick_xml::events::Event;
use reqwest::Response;
use serde_json::{Value, json};

/// Every link in these tests is built on this host, so bytes do not depend
/// on the ephemeral port.
const HOST: &str = "eventfeed.test";

async fn get(server: &TestServer, path: &str, accept: &str) -> Response {
    server.client.get(server.url(path)).header("accept", accept).header("host", HOST).send().await.unwrap()
}

async fn body(server: &TestServer, path: &str, accept: &str) -> String {
    let response = get(server, path, accept).await;
    assert_eq!(response.status(), 200, "GET {path} ({accept})");
    response.text().await.unwrap()
}

/// The stream used for snapshots: fixed ids, every kind of payload.
async fn snapshot_stream(server: &TestServer) {
    let events = json!([
        {"eventId": "10000000-0000-4000-8000-000000000000", "eventType": "OrderPlaced",
         "data": {"customer": "c-1", "lines": [{"sku": "A", "qty": 2}]}, "metadata": {"correlationId": "k-1"}},
        {"eventId": "10000000-0000-4000-8000-000000000001", "eventType": "OrderNoted",
         "data": "a note, not JSON <&>"},
        {"eventId": "10000000-0000-4000-8000-000000000002", "eventType": "OrderPaid",
         "data": {"amount": 12.5}},
    ]);
    assert_eq!(server.post_events("Order-snap", &events).await.status(), 201);
    let xml = server
        .client
        .post(server.url("/streams/Order-snap"))
        .header("content-type", "text/xml")
        .header("es-eventtype", "OrderShipped")
        .header("es-eventid", "10000000-0000-4000-8000-000000000003")
        .body("<shipment carrier=\"x\"/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 201);
    let last = json!([{"eventId": "10000000-0000-4000-8000-000000000004", "eventType": "OrderClosed",
                       "data": {"closed": true}, "metadata": "plain metadata"}]);
    assert_eq!(server.post_events("Order-snap", &last).await.status(), 201);
}

/// Compares with `tests/snapshots/{name}`; `UPDATE_SNAPSHOTS=1` rewrites it.
/// A missing snapshot is a failure (they are committed).
fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    let actual = normalise_times(actual);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("snapshot {name} is missing; run with UPDATE_SNAPSHOTS=1 and review it"));
    assert_eq!(actual, expected, "snapshot {name} changed (UPDATE_SNAPSHOTS=1 to accept)");
}

#[tokio::test]
async fn snapshots_of_representative_pages() {
    let server = TestServer::start().await;
    snapshot_stream(&server).await;
    let cases = [
        ("head.xml", "/streams/Order-snap/head/backward/3", ATOM_XML),
        ("head.json", "/streams/Order-snap/head/backward/3", ATOM_JSON),
        ("middle.xml", "/streams/Order-snap/2/backward/2", ATOM_XML),
        ("middle.json", "/streams/Order-snap/2/backward/2", ATOM_JSON),
        ("forward-full.json", "/streams/Order-snap/0/forward/3", ATOM_JSON),
        ("empty-end.xml", "/streams/Order-snap/5/forward/3", ATOM_XML),
        ("empty-end.json", "/streams/Order-snap/5/forward/3", ATOM_JSON),
        ("embed-content.xml", "/streams/Order-snap/head/backward/5?embed=content", ATOM_XML),
        ("embed-content.json", "/streams/Order-snap/head/backward/5?embed=content", ATOM_JSON),
        ("embed-rich.json", "/streams/Order-snap/head/backward/5?embed=rich", ATOM_JSON),
        ("embed-body.json", "/streams/Order-snap/head/backward/5?embed=body", ATOM_JSON),
        ("embed-pretty.json", "/streams/Order-snap/head/backward/5?embed=pretty", ATOM_JSON),
        ("embed-tryharder.json", "/streams/Order-snap/head/backward/5?embed=tryharder", ATOM_JSON),
        ("event.json", "/streams/Order-snap/0", ATOM_JSON),
        ("event.xml", "/streams/Order-snap/0", ATOM_XML),
        ("event-object.json", "/streams/Order-snap/0", "application/vnd.eventstore.event+json"),
        ("event-data.xml", "/streams/Order-snap/0", "application/xml"),
    ];
    for (name, path, accept) in cases {
        assert_snapshot(&format!("feeds/{name}"), &body(&server, path, accept).await);
    }
}

/// Walks forward from the head page's `last` link along `previous` links.
async fn walk_forward(server: &TestServer, stream: &str, count: u64) -> Vec<u64> {
    let head: Value = get(server, &format!("/streams/{stream}/head/backward/{count}"), ATOM_JSON)
        .await
        .json()
        .await
        .unwrap();
    let last =
        link(&head, "last").unwrap_or_else(|| format!("http://{HOST}/streams/{stream}/0/forward/{count}"));
    let pages = Walk::forward(&server.client, last).host(HOST, &server.base).pages().await;
    for page in pages.iter() {
        assert!(page.entries().len() as u64 <= count);
    }
    assert_eq!(pages.last().unwrap().body["headOfStream"], true, "the walk ends at the head");
    pages.numbers()
}

/// Walks backward from the head along `next` links; newest first.
async fn walk_backward(server: &TestServer, stream: &str, count: u64) -> Vec<u64> {
    let head = format!("http://{HOST}/streams/{stream}/head/backward/{count}");
    let mut numbers = Walk::backward(&server.client, head).host(HOST, &server.base).pages().await.numbers();
    numbers.reverse();
    numbers
}

#[tokio::test]
async fn walking_a_thousand_events_both_ways_sees_each_once_in_order() {
    let server = TestServer::start().await;
    for _ in 0..10 {
        server.append_n("walk", 100).await;
    }
    let ascending: Vec<u64> = (0..1000).collect();
    let descending: Vec<u64> = (0..1000).rev().collect();
    for count in [1, 7, 20, 100, 999, 1000, 4096] {
        assert_eq!(walk_forward(&server, "walk", count).await, ascending, "forward by {count}");
        assert_eq!(walk_backward(&server, "walk", count).await, descending, "backward by {count}");
    }
}

#[tokio::test]
async fn full_pages_are_byte_identical_after_appends_and_a_restart() {
    let server = TestServer::start().await;
    server.append_n("frozen", 100).await;
    server.append_n("frozen", 45).await;
    let mut pages = Vec::new();
    for from in (0..140).step_by(20) {
        for (accept, embed) in [(ATOM_XML, ""), (ATOM_JSON, "?embed=body")] {
            let path = format!("/streams/frozen/{from}/forward/20{embed}");
            let response = get(&server, &path, accept).await;
            if response.headers()["cache-control"] == "max-age=31536000, public" {
                pages.push((path, accept, response.bytes().await.unwrap()));
            }
            let path = format!("/streams/frozen/{}/backward/20{embed}", from + 19);
            let response = get(&server, &path, accept).await;
            assert_eq!(response.headers()["cache-control"], "max-age=31536000, public", "{path}");
            pages.push((path, accept, response.bytes().await.unwrap()));
        }
    }
    assert_eq!(pages.len(), 28, "7 full forward and 7 backward pages, two representations each");
    server.append_n("frozen", 30).await;
    let server = server.restart().await;
    server.append_n("frozen", 5).await;
    for (path, accept, before) in pages {
        let after = get(&server, &path, accept).await.bytes().await.unwrap();
        assert_eq!(after, before, "{path} ({accept}) changed");
    }
}

fn cache_control(response: &Response) -> &str {
    response.headers()["cache-control"].to_str().unwrap()
}

fn etag(response: &Response) -> Option<String> {
    response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned())
}

const IMMUTABLE: &str = "max-age=31536000, public";
const REVALIDATE: &str = "max-age=0, no-cache, must-revalidate";
const IMMUTABLE_PRIVATE: &str = "max-age=31536000, private";
const REVALIDATE_PRIVATE: &str = "max-age=0, no-cache, must-revalidate, private";

#[tokio::test]
async fn cache_headers_for_every_route() {
    let server = TestServer::start().await;
    server.append_n("cached", 30).await;
    // (path, accept, cache-control, has etag)
    let cases = [
        ("/streams/cached", ATOM_XML, REVALIDATE, true),
        ("/streams/cached/head/backward/20", ATOM_JSON, REVALIDATE, true),
        ("/streams/cached/19/backward/20", ATOM_JSON, IMMUTABLE, false),
        ("/streams/cached/29/backward/20", ATOM_JSON, IMMUTABLE, false),
        ("/streams/cached/35/backward/20", ATOM_JSON, REVALIDATE, true),
        ("/streams/cached/0/forward/20", ATOM_JSON, IMMUTABLE, false),
        ("/streams/cached/10/forward/20", ATOM_JSON, IMMUTABLE, false),
        ("/streams/cached/11/forward/20", ATOM_JSON, REVALIDATE, true),
        ("/streams/cached/30/forward/20", ATOM_JSON, REVALIDATE, true),
        ("/streams/cached/3", "application/json", IMMUTABLE, false),
        ("/streams/cached/3", ATOM_JSON, IMMUTABLE, false),
        ("/streams/cached/head", ATOM_JSON, REVALIDATE, true),
        // Only $admins read $all: its answers are private.
        ("/streams/$all", ATOM_JSON, REVALIDATE_PRIVATE, true),
        ("/streams/$all/00000000000000050000000000000005/backward/5", ATOM_JSON, IMMUTABLE_PRIVATE, false),
        ("/streams/$all/00000000000000000000000000000000/forward/20", ATOM_JSON, IMMUTABLE_PRIVATE, false),
        ("/streams/$all/00000000000000140000000000000014/forward/20", ATOM_JSON, REVALIDATE_PRIVATE, true),
    ];
    for (path, accept, expected_cache, has_etag) in cases {
        let response = get(&server, path, accept).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(cache_control(&response), expected_cache, "{path}");
        assert_eq!(etag(&response).is_some(), has_etag, "{path}");
        let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
        assert_eq!(vary.len(), 1, "{path}: {vary:?}");
        let vary = vary[0].to_str().unwrap();
        let ours = "Accept, X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Port, X-Forwarded-Prefix";
        let ours = if expected_cache.contains("private") {
            format!("{ours}, Authorization")
        } else {
            ours.to_owned()
        };
        assert!(vary == ours || vary == format!("{ours}, Accept-Encoding"), "one Vary: {path}: {vary}");
    }
}

#[tokio::test]
async fn etags_revalidate_to_304_and_survive_restarts() {
    let server = TestServer::start().await;
    server.append_n("revalidated", 3).await;
    let first = get(&server, "/streams/revalidated", ATOM_JSON).await;
    let etag_value = etag(&first).unwrap();
    assert!(etag_value.starts_with("\"2;"), "{etag_value}");
    let page: Value = first.json().await.unwrap();
    assert_eq!(page["eTag"], etag_value.trim_matches('"'), "the head page shows its ETag");

    let conditional = server
        .client
        .get(server.url("/streams/revalidated"))
        .header("accept", ATOM_JSON)
        .header("if-none-match", &etag_value)
        .send()
        .await
        .unwrap();
    assert_eq!(conditional.status(), 304);
    assert_eq!(etag(&conditional).as_deref(), Some(etag_value.as_str()));
    assert_eq!(cache_control(&conditional), REVALIDATE);
    assert!(conditional.bytes().await.unwrap().is_empty(), "304 has an empty body");

    // Another representation has another ETag.
    let xml = get(&server, "/streams/revalidated", ATOM_XML).await;
    assert_ne!(etag(&xml).unwrap(), etag_value);

    // Malformed or other ETags are ignored: a full 200.
    for other in ["garbage", "\"1;1\"", "W/\"nope\""] {
        let response = server
            .client
            .get(server.url("/streams/revalidated"))
            .header("accept", ATOM_JSON)
            .header("if-none-match", other)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{other}");
    }

    let server = server.restart().await;
    let again = get(&server, "/streams/revalidated", ATOM_JSON).await;
    assert_eq!(etag(&again).unwrap(), etag_value, "the ETag survives a restart");
    server.append_n("revalidated", 1).await;
    let changed = get(&server, "/streams/revalidated", ATOM_JSON).await;
    assert_ne!(etag(&changed).unwrap(), etag_value);
}

/// gzip and identity bodies of a page differ, so the compressed one carries
/// the weak form of the ETag; `If-None-Match` matches either form, and a
/// 304 repeats the form the client sent.
#[tokio::test]
async fn compressed_pages_carry_the_weak_etag() {
    let server = TestServer::start().await;
    server.append_n("zipped", 30).await;
    let request = |path: &str, gzip: bool, if_none_match: Option<&str>| {
        let mut request = server.client.get(server.url(path)).header("accept", ATOM_XML);
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        request.send()
    };
    for path in ["/streams/zipped", "/streams/zipped/20/forward/20"] {
        let plain = request(path, false, None).await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let strong = etag(&plain).unwrap();
        assert!(strong.starts_with('"'), "{path}: {strong}");

        let zipped = request(path, true, None).await.unwrap();
        assert_eq!(zipped.status(), 200, "{path}");
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(etag(&zipped).unwrap(), format!("W/{strong}"), "{path}");
        let vary: Vec<String> = zipped
            .headers()
            .get_all("vary")
            .iter()
            .map(|value| value.to_str().unwrap().to_ascii_lowercase())
            .collect();
        let vary = vary.join(", ");
        assert!(vary.contains("accept-encoding") && vary.contains("accept,"), "{path}: {vary}");

        for (sent, gzip) in [(format!("W/{strong}"), true), (strong.clone(), false), (strong.clone(), true)] {
            let revalidated = request(path, gzip, Some(&sent)).await.unwrap();
            assert_eq!(revalidated.status(), 304, "{path} {sent}");
            assert_eq!(etag(&revalidated).unwrap(), sent, "{path}: the 304 repeats the client's form");
        }
    }
}

/// Checks RFC 4287's required elements with a plain XML reader: every feed
/// and entry has exactly one `id`, `title` and `updated`, an `author` (the
/// entry's or the feed's), and the feed has exactly one `rel="self"` link.
fn assert_rfc4287(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut counts: Vec<std::collections::HashMap<String, usize>> = Vec::new();
    let mut feed_has_author = false;
    loop {
        match reader.read_event().unwrap() {
            Event::Start(element) => {
                let name = String::from_utf8(element.local_name().into_inner().as_bytes().to_vec()).unwrap();
                if let Some(parent) = counts.last_mut() {
                    if stack.last().is_some_and(|p| p == "feed" || p == "entry") {
                        *parent.entry(name.clone()).or_default() += 1;
                    }
                }
                if name == "feed" || name == "entry" {
                    counts.push(Default::default());
                }
                stack.push(name);
            }
            Event::Empty(element) => {
                let name = String::from_utf8(element.local_name().into_inner().as_bytes().to_vec()).unwrap();
                if stack.last().is_some_and(|p| p == "feed") && name == "link" {
                    let is_self = element.attributes().any(|a| {
                        let a = a.unwrap();
                        a.key.local_name().into_inner() == "rel" && &*a.value == "self"
                    });
                    if is_self {
                        *counts.last_mut().unwrap().entry("self".into()).or_default() += 1;
                    }
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap();
                if name == "feed" || name == "entry" {
                    let seen = counts.pop().unwrap();
                    for required in ["id", "title", "updated"] {
                        assert_eq!(
                            seen.get(required),
                            Some(&1),
                            "{name} needs exactly one {required}: {xml}"
                        );
                    }
                    if name == "feed" {
                        assert_eq!(seen.get("self"), Some(&1), "a feed has one rel=self link");
                        feed_has_author = seen.contains_key("author");
                    } else {
                        assert!(seen.contains_key("author") || feed_has_author, "an entry needs an author");
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn every_feed_is_valid_atom() {
    let server = TestServer::start().await;
    snapshot_stream(&server).await;
    server.append_n("Order-2", 25).await;
    let paths = [
        "/streams/Order-snap",
        "/streams/Order-snap?embed=content",
        "/streams/Order-snap/0/forward/2",
        "/streams/Order-snap/9/forward/2",
        "/streams/Order-2/head/backward/20",
        "/streams/Order-2/4/backward/5",
        "/streams/$all",
        "/streams/$all/00000000000000000000000000000000/forward/10",
        "/streams/$ce-Order",
        "/streams/$et-Tested",
    ];
    for path in paths {
        let xml = body(&server, path, ATOM_XML).await;
        let feed =
            feed_rs::parser::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{path} is not a feed: {e}"));
        assert_eq!(feed.feed_type, feed_rs::model::FeedType::Atom, "{path}");
        assert!(!feed.id.is_empty());
        assert!(feed.links.iter().any(|l| l.rel.as_deref() == Some("self")));
        for entry in &feed.entries {
            assert!(!entry.id.is_empty() && entry.title.is_some() && entry.updated.is_some(), "{path}");
        }
        assert_rfc4287(&xml);
    }
    // A single entry document parses too.
    let entry = body(&server, "/streams/Order-snap/0", ATOM_XML).await;
    assert!(entry.contains("<entry xmlns=\"http://www.w3.org/2005/Atom\">"));
    assert_rfc4287(&format!(
        "<feed xmlns=\"http://www.w3.org/2005/Atom\"><id>x</id><title>t</title><updated>2000-01-01T00:00:00Z</updated><link href=\"x\" rel=\"self\"/>{}</feed>",
        entry.split("?>").nth(1).unwrap()
    ));
}

#[tokio::test]
async fn negotiation() {
    let server = TestServer::start().await;
    server.append_n("neg", 2).await;
    let content_type = |response: &Response| response.headers()["content-type"].to_str().unwrap().to_owned();

    for (accept, expected) in [
        ("", "application/atom+xml"),
        ("*/*", "application/atom+xml"),
        ("application/json", "application/json"),
        ("application/json, text/plain, */*", "application/json"),
        ("application/vnd.eventstore.atom+json", "application/vnd.eventstore.atom+json"),
        ("text/xml", "text/xml"),
        ("application/xml;q=0.5, application/json;q=0.9", "application/json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
        ("application/vnd.eventstore.streamdesc+json", "application/vnd.eventstore.streamdesc+json"),
    ] {
        let mut request = server.client.get(server.url("/streams/neg"));
        if !accept.is_empty() {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{accept}");
        assert!(content_type(&response).starts_with(expected), "{accept} → {}", content_type(&response));
    }
    // The same JSON feed; only the body's eTag differs (it covers the media type).
    let mut json_body: Value = get(&server, "/streams/neg", "application/json").await.json().await.unwrap();
    let mut atom_json_body: Value = get(&server, "/streams/neg", ATOM_JSON).await.json().await.unwrap();
    assert_ne!(json_body["eTag"], atom_json_body["eTag"]);
    json_body["eTag"] = Value::Null;
    atom_json_body["eTag"] = Value::Null;
    assert_eq!(json_body, atom_json_body, "application/json is the same JSON feed");

    let response = get(&server, "/streams/neg", "image/png").await;
    assert_eq!(response.status(), 406);

    // `?format=` names types as v5 maps them.
    let response = get(&server, "/streams/neg?format=json", "application/atom+xml").await;
    assert!(content_type(&response).starts_with("application/json"));
    let response = get(&server, "/streams/neg?format=atomxj", "application/atom+xml").await;
    assert!(content_type(&response).starts_with("application/vnd.eventstore.atom+json"));
    let response = get(&server, "/streams/neg?format=atom", "application/json").await;
    assert!(content_type(&response).starts_with("application/atom+xml"));
    let response = get(&server, "/streams/neg?format=xml", "application/json").await;
    assert!(content_type(&response).starts_with("text/xml"));
    let response = get(&server, "/streams/neg?format=yaml", "").await;
    assert_eq!(response.status(), 400);

    let description: Value = get(&server, "/streams/neg", "application/vnd.eventstore.streamdesc+json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(description["_links"]["stream"]["href"], format!("http://{HOST}/streams/neg"));

    // A browser gets the web UI opened on the stream, page or event it
    // asked for; `?format=html` still gets the server's own table.
    for path in ["/streams/neg", "/streams/neg/1", "/streams/neg/0/forward/2", "/streams/neg/1/20"] {
        let response = get(&server, path, "text/html,application/xhtml+xml,*/*;q=0.8").await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(content_type(&response).starts_with("text/html"), "{path}");
        assert!(
            response.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'")
        );
        assert!(response.headers()["vary"].to_str().unwrap().contains("Accept"), "{path}");
        assert!(response.text().await.unwrap().contains("/ui/app.js"), "{path}");
    }
    let html = body(&server, "/streams/neg?format=html", "text/html").await;
    assert!(html.contains("<a href=\"http://eventfeed.test/streams/neg/1\">1@neg</a>"), "{html}");
    assert!(
        html.contains("rel=\"previous\" href=\"http://eventfeed.test/streams/neg/2/forward/20\""),
        "{html}"
    );
    let event_html = body(&server, "/streams/neg/1?format=html", "text/html").await;
    assert!(event_html.contains("&quot;n&quot;: 1"), "{event_html}");
}

#[tokio::test]
async fn bad_numbers_and_counts_are_400_and_missing_things_404() {
    let server = TestServer::start().await;
    server.append_n("numbers", 3).await;
    for (path, reason) in [
        ("/streams/numbers/x/forward/20", "'x' is not valid event number"),
        ("/streams/numbers/-1/backward/20", "'-1' is not valid event number"),
        ("/streams/numbers/0/forward/0", "'0' is not valid count. Should be positive integer"),
        ("/streams/numbers/0/forward/4097", "'4097' is not valid count. Should be positive integer"),
        ("/streams/numbers/0/forward/ten", "'ten' is not valid count. Should be positive integer"),
        ("/streams/numbers/abc", "'abc' is not valid event number"),
        ("/streams/$all/12/forward/20", "Invalid position argument: 12"),
        ("/streams/$all/head/backward/0", "Invalid count argument: 0"),
    ] {
        let response = get(&server, path, ATOM_JSON).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(common::reason(response).await, reason, "{path}");
    }
    assert_eq!(get(&server, "/streams/none", ATOM_JSON).await.status(), 404);
    assert_eq!(get(&server, "/streams/none/0/forward/20", ATOM_JSON).await.status(), 404);
    assert_eq!(get(&server, "/streams/numbers/3", ATOM_JSON).await.status(), 404);
    assert_eq!(get(&server, "/nowhere", ATOM_JSON).await.status(), 404);
}

#[tokio::test]
async fn links_honour_forwarded_headers_and_encode_names() {
    let server = TestServer::start().await;
    let events = json!([common::event("T", json!({}))]);
    assert_eq!(server.post_events("a%20b%2Fc%25d%40%C3%A9", &events).await.status(), 201);
    let response = server
        .client
        .get(server.url("/streams/a%20b%2Fc%25d%40%C3%A9"))
        .header("accept", ATOM_JSON)
        .header("x-forwarded-host", "events.example.com")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "8443")
        .header("x-forwarded-prefix", "/store")
        .send()
        .await
        .unwrap();
    let page: Value = response.json().await.unwrap();
    let base = "https://events.example.com:8443/store/streams/a%20b%2Fc%25d%40%C3%A9";
    assert_eq!(page["id"], base);
    assert_eq!(page["streamId"], "a b/c%d@é");
    assert_eq!(link(&page, "first").unwrap(), format!("{base}/head/backward/20"));
    assert_eq!(link(&page, "metadata").unwrap(), format!("{base}/metadata"));
    assert_eq!(page["entries"][0]["id"], format!("{base}/0"));
    assert_eq!(page["entries"][0]["title"], "0@a b/c%d@é");

    // The encoded links work when followed.
    let previous =
        link(&page, "previous").unwrap().replace("https://events.example.com:8443/store", &server.base);
    assert_eq!(server.client.get(previous).header("accept", ATOM_JSON).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn cors_preflights_and_basic_auth() {
    let server = TestServer::start().await;
    server.append_n("cors", 1).await;
    let response = server
        .client
        .get(server.url("/streams/cors"))
        .header("origin", "https://app.example.com")
        .header("authorization", "Basic YWRtaW46Y2hhbmdlaXQ=")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "Basic auth is accepted (and ignored) without auth configured");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in ["location", "es-position", "es-currentversion"] {
        assert!(exposed.contains(header), "{exposed}");
    }
    let error = server.client.get(server.url("/streams/missing")).send().await.unwrap();
    assert_eq!(error.headers()["access-control-allow-origin"], "*", "errors carry CORS headers too");

    let preflight = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/streams/cors"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "es-expectedversion, content-type, es-longpoll")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in [
        "es-longpoll",
        "es-expectedversion",
        "es-eventid",
        "es-eventtype",
        "es-requiremaster",
        "es-harddelete",
        "es-resolvelinktos",
    ] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    assert!(!allowed.contains("authorization"), "no credentials cross origins by default (tests/cors.rs)");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    let authenticated_append = server
        .client
        .post(server.url("/streams/cors"))
        .header("authorization", "Basic YWRtaW46Y2hhbmdlaXQ=")
        .header("content-type", EVENTS_JSON)
        .body(json!([common::event("T", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(authenticated_append.status(), 201);
}

/// Writes keep eventfeed's explanation: v5's reason phrase, repeated with
/// the detail in a `text/plain` body (reads answer as v5: `v5_wire.rs`).
#[tokio::test]
async fn write_errors_are_reason_phrase_plus_text_body() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/streams/s"))
        .header("content-type", EVENTS_JSON)
        .header("es-expectedversion", "soon")
        .body(json!([common::event("T", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    if let Some(phrase) = response.extensions().get::<hyper::ext::ReasonPhrase>() {
        assert_eq!(phrase.as_bytes(), b"ES-ExpectedVersion header in wrong format.");
    }
    assert!(response.text().await.unwrap().starts_with("ES-ExpectedVersion header in wrong format."));
}

/// Does the same to a server that keeps rendered pages in memory and to one
/// that does not, and reads the same pages from both (twice from the first,
/// so the second read is answered from its page cache): every answer must
/// be the same, through appends, `$tb`, `$maxCount`, `$maxAge`, a soft
/// delete and a rewrite, a read `$acl` and a hard delete.
#[tokio::test]
async fn pages_kept_in_memory_answer_exactly_as_a_fresh_read() {
    let kept = TestServer::start().await;
    let read = TestServer::start_with(|config| config.page_cache_mb = 0).await;
    let servers = [&kept, &read];
    let stream = "Cached-1";
    let mut next = 0;
    let mut append = async |count: usize| {
        for server in servers {
            let events: Vec<Value> = (next..next + count)
                .map(|n| {
                    json!({"eventId": format!("20000000-0000-4000-8000-{n:012}"), "eventType": "Noted",
                                "data": {"n": n}})
                })
                .collect();
            assert_eq!(server.post_events(stream, &Value::Array(events)).await.status(), 201);
        }
        next += count;
    };
    let compare = async |step: &str| {
        for page in ["0/forward/20", "20/forward/20", "40/forward/20", "19/backward/20", "39/backward/20"] {
            for (accept, query) in [(ATOM_XML, ""), (ATOM_JSON, "?embed=body"), (ATOM_JSON, "")] {
                let path = format!("/streams/{stream}/{page}{query}");
                let mut answers = Vec::new();
                for server in [&kept, &kept, &read] {
                    let response = get(server, &path, accept).await;
                    let status = response.status();
                    let cache_control = common::header(&response, "cache-control");
                    let text = normalise_times(&response.text().await.unwrap());
                    answers.push((status, cache_control, text));
                }
                assert_eq!(answers[0], answers[1], "{step}: GET {path} ({accept}) read again");
                assert_eq!(
                    answers[0], answers[2],
                    "{step}: GET {path} ({accept}) with and without the cache"
                );
            }
        }
    };
    append(60).await;
    compare("60 events").await;
    let metrics = kept.client.get(kept.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let hits = metrics.lines().find_map(|line| line.strip_prefix("eventfeed_page_cache_hits_total "));
    assert!(hits.is_some_and(|hits| hits.parse::<u64>().unwrap() > 0), "no page was kept:\n{metrics}");

    for (step, metadata) in [
        ("$tb", json!({"$tb": 25})),
        ("$maxCount", json!({"$maxCount": 30})),
        ("$maxAge", json!({"$maxAge": 3600})),
        ("no retention", json!({})),
    ] {
        for server in servers {
            assert_eq!(server.set_metadata(stream, metadata.clone()).await.status(), 201);
        }
        compare(step).await;
        append(5).await;
        compare(&format!("{step}, 5 events later")).await;
    }

    // A soft delete, then the stream written again.
    for server in servers {
        let deleted = server.client.delete(server.url(&format!("/streams/{stream}"))).send().await.unwrap();
        assert_eq!(deleted.status(), 204);
    }
    compare("soft-deleted").await;
    append(25).await;
    compare("rewritten").await;

    // Reading restricted to $admins: the anonymous never get a kept page.
    for server in servers {
        let acl = json!({"$acl": {"$r": "$admins"}});
        assert_eq!(server.set_metadata(stream, acl).await.status(), 201);
    }
    compare("read by $admins only").await;
    let anonymous = common::anonymous_client();
    let denied = anonymous
        .get(kept.url(&format!("/streams/{stream}/0/forward/20")))
        .header("accept", ATOM_XML)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    for server in servers {
        let deleted = server
            .client
            .delete(server.url(&format!("/streams/{stream}")))
            .header("es-harddelete", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
    compare("hard-deleted").await;
}

/// A full page that ends at the last event says `headOfStream: true` until
/// the next append: it is kept until then, and not a moment longer.
#[tokio::test]
async fn a_full_page_at_the_head_is_kept_until_the_next_append() {
    let server = TestServer::start().await;
    server.append_n("Cached-2", 20).await;
    let path = "/streams/Cached-2/0/forward/20?embed=body";
    let first = body(&server, path, ATOM_JSON).await;
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["headOfStream"], true);
    let hits = || common::counters(&server.client, &server.base, ["eventfeed_page_cache_hits_total "]);
    let [before] = hits().await;
    assert_eq!(body(&server, path, ATOM_JSON).await, first);
    assert_eq!(hits().await, [before + 1.0], "read again from memory");
    server.append_n("Cached-2", 1).await;
    let second: Value = serde_json::from_str(&body(&server, path, ATOM_JSON).await).unwrap();
    assert_eq!(second["headOfStream"], false);
}
