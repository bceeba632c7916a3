//! The wire as v5 speaks it on reads (issue 24): the status, reason phrase,
//! headers and body of every failed read, and every media type v5
//! negotiates on every read route. What v5 does is read from its source
//! (tag `oss-v5.0.12`); `docs/v5-compatibility.md` has the tables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ATOM_JSON, ATOM_XML, EVENTS_JSON, TestServer, event};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const JSON: &str = "application/json";
const TEXT_XML: &str = "text/xml";
const APPLICATION_XML: &str = "application/xml";
const EVENT_JSON: &str = "application/vnd.eventstore.event+json";
const EVENT_XML: &str = "application/vnd.eventstore.event+xml";
const EVENTS_XML: &str = "application/vnd.eventstore.events+xml";
const DESCRIPTION: &str = "application/vnd.eventstore.streamdesc+json";
const HTML: &str = "text/html";
const OCTET_STREAM: &str = "application/octet-stream";
const COMPETING_JSON: &str = "application/vnd.eventstore.competingatom+json";

/// Every type v5 negotiates on some read route.
const EVERY_TYPE: [&str; 12] = [
    EVENTS_JSON,
    EVENTS_XML,
    EVENT_JSON,
    EVENT_XML,
    ATOM_JSON,
    ATOM_XML,
    JSON,
    APPLICATION_XML,
    TEXT_XML,
    DESCRIPTION,
    HTML,
    OCTET_STREAM,
];

/// The types v5 serves pages as (all but raw bytes).
const PAGE_TYPES: [&str; 11] = [
    EVENTS_JSON,
    EVENTS_XML,
    EVENT_JSON,
    EVENT_XML,
    ATOM_JSON,
    ATOM_XML,
    JSON,
    APPLICATION_XML,
    TEXT_XML,
    DESCRIPTION,
    HTML,
];

/// The JSON types a single event is offered as: v5 answers `{}` for one
/// it does not find.
const EVENT_JSON_TYPES: [&str; 3] = [ATOM_JSON, JSON, EVENT_JSON];

/// The other types a single event is offered as: v5 answers nothing.
const EVENT_OTHER_TYPES: [&str; 5] = [ATOM_XML, TEXT_XML, APPLICATION_XML, EVENT_XML, OCTET_STREAM];

/// One whole answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// The media type of `Content-Type`, without parameters.
    fn media_type(&self) -> Option<&str> {
        self.header("content-type").map(|value| value.split(';').next().unwrap().trim())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("JSON expected: {}", self.text()))
    }

    /// v5's answer to a read that found nothing: the status, its reason
    /// phrase, `text/plain` and exactly `body`.
    fn assert_found_nothing(&self, status: u16, reason: &str, body: &str, what: &str) {
        assert_eq!((self.status, self.reason.as_str()), (status, reason), "{what}");
        assert_eq!(self.header("content-type"), Some("text/plain; charset=utf-8"), "{what}");
        assert_eq!(self.text(), body, "{what}");
    }

    /// v5's answer to a request it refuses before reading: the status and
    /// its reason phrase, no `Content-Type`, no body.
    fn assert_refused(&self, status: u16, reason: &str, what: &str) {
        assert_eq!((self.status, self.reason.as_str()), (status, reason), "{what}");
        assert_eq!(self.header("content-type"), None, "{what}");
        assert!(self.body.is_empty(), "{what}: {}", self.text());
    }
}

/// A stream's page or event asked for as `text/html` (no `?format=`)
/// opens the web UI on it (tests/feeds.rs, tests/ui.rs); what v5 served,
/// the server's own HTML page, is asked for with `?format=html`.
fn server_html(path: &str, accept: &str) -> String {
    let browser = accept == HTML || accept.starts_with("text/html,");
    if !browser || !path.starts_with("/streams/") || path.contains("format=") {
        return path.to_owned();
    }
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}format=html")
}

async fn read_with(server: &TestServer, path: &str, accept: &str, headers: &[(&str, &str)]) -> Answer {
    let response = server.get_with(&server_html(path, accept), accept, headers).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(phrase) => String::from_utf8_lossy(phrase.as_bytes()).into_owned(),
        None => response.status().canonical_reason().unwrap_or_default().to_owned(),
    };
    let body = response.bytes().await.unwrap().to_vec();
    Answer { status, reason, headers, body }
}

async fn read(server: &TestServer, path: &str, accept: &str) -> Answer {
    read_with(server, path, accept, &[]).await
}

async fn delete(server: &TestServer, stream: &str, hard: bool) {
    let response = server
        .client
        .delete(server.url(&format!("/streams/{stream}")))
        .header("es-harddelete", if hard { "true" } else { "false" })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "delete {stream}");
}

/// The page routes of a stream, as v5 registers them.
fn page_paths(stream: &str) -> [String; 5] {
    [
        format!("/streams/{stream}"),
        format!("/streams/{stream}/head/backward/20"),
        format!("/streams/{stream}/0/20"),
        format!("/streams/{stream}/0/forward/20"),
        format!("/streams/{stream}/metadata/head/backward/20"),
    ]
}

/// The single-event routes of a stream (v5 reads `/head` and metadata as
/// single events too).
fn event_paths(stream: &str) -> [String; 3] {
    [format!("/streams/{stream}/0"), format!("/streams/{stream}/head"), format!("/streams/{stream}/metadata")]
}

/// v5 answers a read of a stream that does not exist (a user stream, a
/// system stream, a metadata stream) with `404 Not Found` and an empty
/// body, whatever the page type.
#[tokio::test]
async fn a_missing_stream_is_an_empty_404_as_in_v5() {
    let server = TestServer::start().await;
    let mut paths = page_paths("Order-none").to_vec();
    for system in ["$ce-None", "$et-None", "$streams", "$settings"] {
        paths.extend([format!("/streams/{system}"), format!("/streams/{system}/0/forward/20")]);
    }
    for path in &paths {
        let client_types = PAGE_TYPES.into_iter().filter(|accept| ![DESCRIPTION, HTML].contains(accept));
        for accept in client_types.chain(["*/*"]) {
            let answer = read(&server, path, accept).await;
            answer.assert_found_nothing(404, "Not Found", "", &format!("{path} as {accept}"));
        }
    }
}

/// v5's storage reader answers a soft-deleted stream as one that does not
/// exist: `404 Not Found`, empty on pages, and on single events v5's
/// codec's value for "no event" (`{}` in JSON, nothing otherwise).
#[tokio::test]
async fn a_soft_deleted_stream_reads_as_an_empty_404_as_in_v5() {
    let server = TestServer::start().await;
    server.append_n("Order-soft", 2).await;
    delete(&server, "Order-soft", false).await;
    assert_reads_find_nothing(
        &server,
        &page_paths("Order-soft")[..4],
        &event_paths("Order-soft")[..2],
        404,
        "Not Found",
    )
    .await;
}

/// Every read of `pages` and `events` answers `status` and `reason`: empty
/// on pages, and on single events v5's codec's value for "no event".
async fn assert_reads_find_nothing(
    server: &TestServer,
    pages: &[String],
    events: &[String],
    status: u16,
    reason: &str,
) {
    for path in pages {
        for accept in [ATOM_JSON, JSON, ATOM_XML, EVENTS_JSON] {
            read(server, path, accept).await.assert_found_nothing(status, reason, "", path);
        }
    }
    for path in events {
        for (types, body) in [(&EVENT_JSON_TYPES[..], "{}"), (&EVENT_OTHER_TYPES[..], "")] {
            for accept in types {
                let answer = read(server, path, accept).await;
                answer.assert_found_nothing(status, reason, body, &format!("{path} as {accept}"));
            }
        }
    }
}

/// v5 answers every read of a hard-deleted stream (its metadata too) with
/// `410 Deleted`: empty on pages, v5's codec's value for "no event" on
/// single events.
#[tokio::test]
async fn a_hard_deleted_stream_is_410_deleted_with_v5s_bodies() {
    let server = TestServer::start().await;
    server.append_n("Order-hard", 2).await;
    delete(&server, "Order-hard", true).await;
    assert_reads_find_nothing(
        &server,
        &page_paths("Order-hard")[..4],
        &event_paths("Order-hard"),
        410,
        "Deleted",
    )
    .await;
}

/// A single event v5 does not find (past the end, in a missing stream, in
/// `$all`, or the target of a link whose event is gone) is `404 Not
/// Found`; v5's codec writes `{}` for the JSON types and nothing for the
/// others.
#[tokio::test]
async fn a_missing_event_is_404_with_v5s_value_for_no_event() {
    let server = TestServer::start().await;
    server.append_n("Order-1", 2).await;
    server.append_n("Gone-1", 1).await;
    delete(&server, "Gone-1", false).await;
    let paths =
        ["/streams/Order-1/9", "/streams/Order-none/0", "/streams/Order-none/head", "/streams/$all/0"]
            .into_iter()
            .chain(["/streams/$ce-Gone/0"]);
    for path in paths {
        for accept in EVENT_JSON_TYPES {
            let answer = read(&server, path, accept).await;
            answer.assert_found_nothing(404, "Not Found", "{}", &format!("{path} as {accept}"));
        }
        for accept in EVENT_OTHER_TYPES.into_iter().chain(["*/*"]) {
            let answer = read(&server, path, accept).await;
            answer.assert_found_nothing(404, "Not Found", "", &format!("{path} as {accept}"));
        }
    }
}

/// v5 reads metadata as the last event of `$${stream}`, and its storage
/// reader answers a stream that exists as having metadata to read: `200`
/// with its codec's value for "no event" (`{}` in JSON). A stream that
/// does not exist is `404`, still with `{}` in JSON.
#[tokio::test]
async fn metadata_of_a_stream_without_any_is_an_empty_200_and_of_a_missing_stream_404_as_in_v5() {
    let server = TestServer::start().await;
    server.append_n("Order-1", 1).await;
    for path in ["/streams/Order-1/metadata", "/streams/Order-1/metadata/head", "/streams/Order-1/metadata/3"]
    {
        for (accept, body) in
            [(JSON, "{}"), (ATOM_JSON, "{}"), (EVENT_JSON, "{}"), (ATOM_XML, ""), (TEXT_XML, "")]
        {
            let answer = read(&server, path, accept).await;
            assert_eq!(answer.status, 200, "{path} as {accept}");
            assert_eq!(answer.media_type(), Some(accept), "{path}");
            assert_eq!(answer.text(), body, "{path} as {accept}");
            assert_eq!(answer.header("cache-control"), Some("max-age=0, no-cache, must-revalidate"));
        }
    }
    for path in ["/streams/Order-none/metadata", "/streams/Order-none/metadata/head"] {
        read(&server, path, JSON).await.assert_found_nothing(404, "Not Found", "{}", path);
        read(&server, path, ATOM_XML).await.assert_found_nothing(404, "Not Found", "", path);
    }

    // Once written, the metadata is there; the empty answer revalidated.
    let before = read(&server, "/streams/Order-1/metadata", JSON).await;
    assert_eq!(server.set_metadata("Order-1", json!({"$maxCount": 5})).await.status(), 201);
    let etag = before.header("etag").unwrap();
    let after = read_with(&server, "/streams/Order-1/metadata", JSON, &[("if-none-match", etag)]).await;
    assert_eq!(after.status, 200, "the empty answer's ETag no longer matches");
    assert_eq!(after.json(), json!({"$maxCount": 5}));
}

/// v5 refuses a malformed read before reading: `400` with the message as
/// its reason phrase (`$all` words its own), `406 Requested URI is not
/// available in requested format`, `404` for a URL no route serves; no
/// `Content-Type` and no body.
#[tokio::test]
async fn refused_reads_are_bare_statuses_with_v5s_reason_phrases() {
    let server = TestServer::start().await;
    server.append_n("Order-1", 1).await;
    for (path, status, reason) in [
        ("/streams/Order-1/abc", 400, "'abc' is not valid event number"),
        ("/streams/Order-1/x/forward/20", 400, "'x' is not valid event number"),
        ("/streams/Order-1/0/forward/0", 400, "'0' is not valid count. Should be positive integer"),
        ("/streams/Order-1/head/backward/-3", 400, "'-3' is not valid count. Should be positive integer"),
        ("/streams/Order-1/metadata/x", 400, "'x' is not valid event number"),
        ("/streams/$all/12/forward/20", 400, "Invalid position argument: 12"),
        ("/streams/$all/head/backward/ten", 400, "Invalid count argument: ten"),
        ("/streams/Order-1/0/sideways/20", 404, "Not Found"),
        ("/nowhere", 404, "Not Found"),
    ] {
        read(&server, path, ATOM_JSON).await.assert_refused(status, reason, path);
    }
    for (path, header, reason) in [
        ("/streams/$ce-Order", ("es-resolvelinktos", "yes"), "ES-ResolveLinkTos header in wrong format."),
        ("/streams/Order-1/0/forward/20", ("es-longpoll", "soon"), "ES-LongPoll header in wrong format."),
    ] {
        read_with(&server, path, ATOM_JSON, &[header]).await.assert_refused(400, reason, path);
    }
    for (path, accept) in [
        ("/streams/Order-1", "image/png"),
        ("/streams/Order-1", OCTET_STREAM),
        ("/streams/Order-1/0", EVENTS_JSON),
        ("/streams/Order-1/0", DESCRIPTION),
        ("/streams/Order-1/metadata", EVENTS_XML),
    ] {
        let answer = read(&server, path, accept).await;
        answer.assert_refused(406, "Requested URI is not available in requested format", path);
    }
}

/// A long-poll on a stream that does not exist waits, then answers as the
/// read would: v5's empty `404`.
#[tokio::test]
async fn a_long_polled_missing_stream_is_an_empty_404_at_the_deadline() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let answer =
        read_with(&server, "/streams/Order-later/0/forward/20", ATOM_JSON, &[("es-longpoll", "1")]).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
    answer.assert_found_nothing(404, "Not Found", "", "long-poll");
}

/// v5's subscription reads: an unknown group's messages are `404` labelled
/// with the feed's type, its statistics `404` labelled JSON, both empty;
/// a stream without groups lists `[]` with its `404` (v5 serialises its
/// empty list).
#[tokio::test]
async fn subscription_reads_fail_with_v5s_bodies() {
    let server = TestServer::start().await;
    let answer = read(&server, "/subscriptions/Order-1/nobody", COMPETING_JSON).await;
    assert_eq!((answer.status, answer.reason.as_str()), (404, "Not Found"));
    assert_eq!(answer.media_type(), Some(COMPETING_JSON));
    assert_eq!(answer.text(), "");
    let answer = read(&server, "/subscriptions/Order-1/nobody/info", JSON).await;
    assert_eq!((answer.status, answer.media_type(), answer.text()), (404, Some(JSON), ""));
    let answer = read(&server, "/subscriptions/Order-1", JSON).await;
    assert_eq!((answer.status, answer.media_type(), answer.text()), (404, Some(JSON), "[]"));
    let answer = read(&server, "/subscriptions/Order-1/nobody/5", ATOM_JSON).await;
    answer.assert_refused(406, "Requested URI is not available in requested format", "messages as Atom");
}

/// Where eventfeed's explanation helps people it goes where v5 clients
/// never look: a browser (it asks for `text/html`) gets a page saying what
/// failed. Every failed read says `Vary` (unlike v5), so no cache hands
/// the page to a client or a client's answer to a browser.
#[tokio::test]
async fn browsers_get_the_explanation_on_a_page_and_failed_reads_vary_by_accept() {
    let server = TestServer::start().await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    // Without `?format=html` a browser gets the web UI, which reads the
    // stream itself and shows what failed.
    let ui = server.get("/streams/Order-none", browser).await;
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("/ui/app.js"));
    for (path, status, explained) in [
        ("/streams/Order-none", 404, "The stream does not exist."),
        ("/streams/Order-none/0", 404, "The stream does not exist."),
        ("/streams/Order-1/0/forward/5000", 400, "The largest page is 4096 events."),
        ("/nowhere", 404, "No resource lives at this URL."),
    ] {
        let answer = read(&server, path, browser).await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.media_type(), Some(HTML), "{path}");
        assert!(answer.text().contains(explained), "{path}: {}", answer.text());
        assert!(answer.header("vary").unwrap().contains("Accept"), "{path}");
        let answer = read(&server, path, ATOM_JSON).await;
        assert!(!answer.text().contains(explained), "{path}: a client gets v5's body");
        assert!(answer.header("vary").unwrap().contains("Accept"), "{path}");
    }
}

/// What a read route answers for a media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The feed as JSON, or as Atom XML.
    JsonFeed,
    AtomFeed,
    /// v5's description document.
    Description,
    /// One event: the Atom entry in JSON or XML, its data, the event
    /// object in JSON or XML, its data as XML, its bytes.
    JsonEntry,
    AtomEntry,
    Data,
    EventObject,
    EventXml,
    DataXml,
    Bytes,
    Html,
    /// `406`: v5 offers no such type there.
    NotAcceptable,
}

/// What v5 registers on each kind of read route, and answers with.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// A backward page of a stream: v5 describes the stream for its
    /// description type.
    DescribedPage,
    /// Any other page (forward, `$all`, a metadata stream's): v5 serves
    /// the JSON feed for its description type.
    Page,
    /// One event, `/head`, metadata.
    Event,
}

fn shape(route: Route, media_type: &str) -> Shape {
    match (route, media_type) {
        (Route::DescribedPage, DESCRIPTION) => Shape::Description,
        (Route::DescribedPage | Route::Page, ATOM_JSON | JSON | EVENT_JSON | EVENTS_JSON | DESCRIPTION) => {
            Shape::JsonFeed
        }
        (
            Route::DescribedPage | Route::Page,
            ATOM_XML | TEXT_XML | APPLICATION_XML | EVENT_XML | EVENTS_XML,
        ) => Shape::AtomFeed,
        (_, HTML) => Shape::Html,
        (Route::Event, ATOM_JSON) => Shape::JsonEntry,
        (Route::Event, ATOM_XML) => Shape::AtomEntry,
        (Route::Event, JSON) => Shape::Data,
        (Route::Event, EVENT_JSON) => Shape::EventObject,
        (Route::Event, EVENT_XML) => Shape::EventXml,
        (Route::Event, TEXT_XML | APPLICATION_XML) => Shape::DataXml,
        (Route::Event, OCTET_STREAM) => Shape::Bytes,
        _ => Shape::NotAcceptable,
    }
}

fn assert_shape(answer: &Answer, expected: Shape, data: &Value, what: &str) {
    if expected == Shape::NotAcceptable {
        answer.assert_refused(406, "Requested URI is not available in requested format", what);
        return;
    }
    assert_eq!(answer.status, 200, "{what}: {}", answer.text());
    let text = answer.text();
    match expected {
        Shape::JsonFeed => assert!(answer.json()["entries"].is_array(), "{what}: {text}"),
        Shape::AtomFeed => assert!(text.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"), "{what}"),
        Shape::Description => assert!(answer.json()["_links"]["stream"].is_object(), "{what}: {text}"),
        Shape::JsonEntry => assert_eq!(&answer.json()["content"]["data"], data, "{what}"),
        Shape::AtomEntry => assert!(text.contains("<entry xmlns=\"http://www.w3.org/2005/Atom\">"), "{what}"),
        Shape::Data | Shape::Bytes => assert_eq!(&answer.json(), data, "{what}"),
        Shape::EventObject => assert_eq!(&answer.json()["data"], data, "{what}"),
        Shape::EventXml => assert!(text.starts_with("<event><eventStreamId>"), "{what}: {text}"),
        Shape::DataXml => assert!(text.contains("<data>"), "{what}: {text}"),
        Shape::Html => assert!(text.starts_with("<!DOCTYPE html>"), "{what}: {text}"),
        Shape::NotAcceptable => unreachable!(),
    }
}

/// v5 serves every read route in every type it registers there, each
/// under its own `Content-Type`: pages for the event, events, Atom, JSON
/// and XML types and the description type, single events (`/head` and
/// metadata too) for the event, Atom, JSON, XML and raw types; a type
/// not registered on the route is `406`. Streams, system streams, `$all`
/// and metadata alike, each answer with `Vary: Accept`.
#[tokio::test]
async fn every_v5_media_type_is_served_on_every_read_route() {
    let server = TestServer::start().await;
    let data = json!({"total": 12});
    let events = json!([event("Placed", data.clone()), event("Placed", data.clone())]);
    assert_eq!(server.post_events("Order-1", &events).await.status(), 201);
    let metadata = json!({"$maxCount": 100});
    assert_eq!(server.set_metadata("Order-1", metadata.clone()).await.status(), 201);
    let mut routes: Vec<(String, Route, &Value)> = Vec::new();
    for stream in ["Order-1", "$ce-Order", "$et-Placed", "$streams"] {
        routes.extend([
            (format!("/streams/{stream}"), Route::DescribedPage, &data),
            (format!("/streams/{stream}/head/backward/20"), Route::DescribedPage, &data),
            (format!("/streams/{stream}/1/2"), Route::DescribedPage, &data),
            (format!("/streams/{stream}/0/forward/20"), Route::Page, &data),
            (format!("/streams/{stream}/0"), Route::Event, &data),
            (format!("/streams/{stream}/head"), Route::Event, &data),
        ]);
    }
    routes.extend([
        ("/streams/$all".to_owned(), Route::Page, &data),
        ("/streams/%24all/head/backward/20".to_owned(), Route::Page, &data),
        (format!("/streams/$all/{}/forward/20", "0".repeat(32)), Route::Page, &data),
        ("/streams/Order-1/metadata".to_owned(), Route::Event, &metadata),
        ("/streams/Order-1/metadata/head".to_owned(), Route::Event, &metadata),
        ("/streams/Order-1/metadata/0".to_owned(), Route::Event, &metadata),
        ("/streams/Order-1/metadata/head/backward/20".to_owned(), Route::Page, &metadata),
        ("/streams/Order-1/metadata/0/forward/20".to_owned(), Route::Page, &metadata),
    ]);
    for (path, route, data) in &routes {
        for media_type in EVERY_TYPE {
            let answer = read(&server, path, media_type).await;
            let what = format!("{path} as {media_type}");
            // $streams links to each stream's first event: its data is the
            // first event's, the same here.
            assert_shape(&answer, shape(*route, media_type), data, &what);
            if answer.status == 200 {
                assert_eq!(answer.media_type(), Some(media_type), "{what}");
                assert!(answer.header("vary").unwrap().starts_with("Accept"), "{what}");
            }
        }
    }
}

/// A missing `$settings` is a missing stream like any other: `404` for
/// every page type v5 registers (its description document is served for
/// any stream; a browser's `404` is a page), never `406`.
#[tokio::test]
async fn a_missing_settings_stream_is_404_for_every_page_type_not_406() {
    let server = TestServer::start().await;
    for media_type in PAGE_TYPES {
        let answer = read(&server, "/streams/$settings", media_type).await;
        match media_type {
            DESCRIPTION => assert_shape(&answer, Shape::Description, &Value::Null, "$settings described"),
            HTML => assert_eq!((answer.status, answer.media_type()), (404, Some(HTML)), "a page for people"),
            _ => answer.assert_found_nothing(404, "Not Found", "", media_type),
        }
    }
}

/// v5's ETag is the stream's version and a hash of the negotiated type, so
/// each type revalidates its own copy: a type's ETag gets `304` for that
/// type only.
#[tokio::test]
async fn etags_hash_the_negotiated_type_for_every_type() {
    let server = TestServer::start().await;
    server.append_n("Order-1", 3).await;
    let mut seen = std::collections::HashSet::new();
    for media_type in PAGE_TYPES.into_iter().filter(|media_type| *media_type != DESCRIPTION) {
        let answer = read(&server, "/streams/Order-1/0/forward/20", media_type).await;
        let etag = answer.header("etag").unwrap_or_else(|| panic!("{media_type} has an ETag")).to_owned();
        assert!(etag.starts_with("\"2;"), "{media_type}: {etag}");
        assert!(seen.insert(etag.clone()), "{media_type} shares {etag}");
        let revalidate = [("if-none-match", etag.as_str())];
        let again = read_with(&server, "/streams/Order-1/0/forward/20", media_type, &revalidate).await;
        assert_eq!(again.status, 304, "{media_type}");
        let other = if media_type == ATOM_XML { ATOM_JSON } else { ATOM_XML };
        let other = read_with(&server, "/streams/Order-1/0/forward/20", other, &revalidate).await;
        assert_eq!(other.status, 200, "{media_type}'s ETag does not match another type");
    }
}

/// `?format=` names a type as v5 maps it: `json` is `application/json`
/// (one event's data), `xml` is `text/xml`, `atom` and `atomxj` the Atom
/// types; `text` names a type no read offers.
#[tokio::test]
async fn format_names_types_as_v5_maps_them() {
    let server = TestServer::start().await;
    let data = json!({"total": 12});
    assert_eq!(server.post_events("Order-1", &json!([event("Placed", data.clone())])).await.status(), 201);
    for (format, shape) in [
        ("json", Shape::Data),
        ("xml", Shape::DataXml),
        ("atom", Shape::AtomEntry),
        ("atomxj", Shape::JsonEntry),
        ("text", Shape::NotAcceptable),
    ] {
        let answer = read(&server, &format!("/streams/Order-1/0?format={format}"), ATOM_XML).await;
        assert_shape(&answer, shape, &data, format);
    }
}
