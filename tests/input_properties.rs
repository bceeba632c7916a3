//! Random requests against the append and read routes of a server in this
//! process, over a real socket: random methods, paths, query strings,
//! headers (`Content-Type`, `Content-Encoding`, the `ES-*` headers,
//! `Accept`) and bodies (valid and broken events arrays, compressed or
//! not, random bytes). Whatever arrives, the server answers (no panic, no
//! dropped connection), never with a 5xx, and a request it refuses (any
//! answer but a 2xx) changes nothing: `$all`'s head and the target
//! stream's head read the same before and after. Every answer labelled
//! XML is empty or a well-formed XML document, also for the target's events whose
//! data XML cannot carry (a NUL) or that is JSON sent as bytes.
//!
//! Reproducible: a fixed seed and a fixed number of cases, so it runs in
//! seconds in every `cargo test`; a failure prints the request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::bodies::{any_events_body, json_value, sometimes_broken, valid_json_events, valid_xml_events};
use common::{ATOM_JSON, TestServer};
use percent_encoding::NON_ALPHANUMERIC;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};

/// Cases per run: enough to reach every route with every kind of body,
/// few enough to run in seconds.
const CASES: u32 = 256;

/// The stream most requests aim at (others go to random names).
const TARGET: &str = "prop-target";

#[derive(Debug, Clone)]
struct Probe {
    method: Method,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// Sent gzip-compressed, with `Content-Encoding: gzip`.
    gzipped: bool,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just(TARGET.to_owned()),
        1 => select(vec!["other", "$all", "$ce-prop", "$$prop-target", "%24all", "..", "a%2Fb"]).prop_map(str::to_owned),
        1 => proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(|bytes| percent_encoding::percent_encode(&bytes, NON_ALPHANUMERIC).to_string()),
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "head",
            "0",
            "1",
            "20",
            "-1",
            "4097",
            "backward",
            "forward",
            "x",
            "",
            "99999999999999999999"
        ])
        .prop_map(str::to_owned),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        proptest::collection::vec(any::<u8>(), 1..6).prop_map(|bytes| percent_encoding::percent_encode(
            &bytes,
            NON_ALPHANUMERIC
        )
        .to_string()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let name = select(vec!["embed", "format", "from", "Embed", "ids", "junk"]);
    let value = select(vec!["body", "rich", "content", "json", "xml", "atom", "yaml", "", "%00", "1"]);
    proptest::collection::vec((name, value), 0..3).prop_map(|pairs| {
        if pairs.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = pairs.iter().map(|(name, value)| format!("{name}={value}")).collect();
        format!("?{}", pairs.join("&"))
    })
}

/// Where a request goes: mostly the append routes for a `POST`, the read
/// routes for a `GET`, now and then anything anywhere.
fn target() -> impl Strategy<Value = (Method, String)> {
    let append_tail = prop_oneof![
        4 => Just(String::new()),
        1 => Just("/metadata".to_owned()),
        1 => prop_oneof![
            3 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
            1 => word(),
        ]
        .prop_map(|id| format!("/incoming/{id}")),
    ];
    let read_tail = prop_oneof![
        Just(String::new()),
        word().prop_map(|event| format!("/{event}")),
        (word(), word()).prop_map(|(event, count)| format!("/{event}/{count}")),
        (word(), word(), word())
            .prop_map(|(start, direction, count)| format!("/{start}/{direction}/{count}")),
        Just("/metadata".to_owned()),
        word().prop_map(|event| format!("/metadata/{event}")),
    ];
    let any_tail = prop_oneof![append_tail.clone(), read_tail.clone(), Just("/".to_owned())];
    let method = select(vec![Method::PUT, Method::DELETE, Method::HEAD, Method::POST, Method::GET]);
    let path = |tail: BoxedStrategy<String>| {
        (segment(), tail, query()).prop_map(|(stream, tail, query)| format!("/streams/{stream}{tail}{query}"))
    };
    prop_oneof![
        5 => path(append_tail.boxed()).prop_map(|path| (Method::POST, path)),
        4 => path(read_tail.boxed()).prop_map(|path| (Method::GET, path)),
        1 => (method, path(any_tail.boxed())),
    ]
}

fn header_value(choices: Vec<&'static str>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => select(choices).prop_map(|value| value.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A body and the `Content-Type` that says what it is (or another).
fn typed_body() -> impl Strategy<Value = (Vec<u8>, &'static str)> {
    let raw = proptest::collection::vec(any::<u8>(), 0..256);
    let json = json_value().prop_map(|value| value.to_string().into_bytes());
    let metadata =
        (select(vec!["$maxCount", "$maxAge", "$tb", "$cacheControl", "$acl", "owner"]), any::<i64>())
            .prop_map(|(key, value)| format!("{{\"{key}\":{value}}}").into_bytes());
    let json_events = valid_json_events().prop_map(|body| body.bytes);
    let xml_events = valid_xml_events().prop_map(|body| body.bytes);
    prop_oneof![
        3 => sometimes_broken(json_events).prop_map(|body| (body, "application/vnd.eventstore.events+json")),
        2 => sometimes_broken(xml_events).prop_map(|body| (body, "application/vnd.eventstore.events+xml")),
        2 => prop_oneof![json, metadata].prop_map(|body| (body, "application/json")),
        1 => raw.clone().prop_map(|body| (body, "application/octet-stream")),
        1 => (any_events_body(), select(vec!["text/xml", "application/xml", "text/plain", "application/json"])),
        1 => raw.prop_map(|body| (body, "")),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    // Another Content-Type than the body's, now and then.
    let content_type = header_value(vec![
        "application/vnd.eventstore.events+json",
        "application/json; charset=utf-8",
        "text/xml",
        "text/plain",
    ]);
    let encoding = header_value(vec!["gzip", "deflate", "br", "identity", "GZIP", "gzip, br"]);
    let expected = header_value(vec!["-2", "-1", "-4", "0", "3", "-3", "x", ""]);
    let event_id = prop_oneof![
        4 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ];
    let event_type = header_value(vec!["T", "$metadata", "", "a\tb"]);
    let accept = header_value(vec![
        "application/vnd.eventstore.atom+json",
        "application/atom+xml",
        "application/json",
        "text/xml",
        "application/xml",
        "application/vnd.eventstore.event+xml",
        "application/octet-stream",
        "text/html",
        "*/*",
        "image/png",
        "application/json;q=0.5, text/xml;q=0.9",
    ]);
    // Only refused long-polls: a valid one would wait for an append. (No
    // `text/event-stream` either: a stream of events never ends.)
    let long_poll = header_value(vec!["0", "-1", "x", ""]);
    let boolean = header_value(vec!["True", "False", "yes"]);
    let named = |name: &'static str, probability: f64, value: BoxedStrategy<Vec<u8>>| {
        proptest::option::weighted(probability, value).prop_map(move |value| value.map(|value| (name, value)))
    };
    (
        named("content-type", 0.1, content_type.boxed()),
        named("content-encoding", 0.2, encoding.boxed()),
        named("es-expectedversion", 0.3, expected.boxed()),
        named("es-eventid", 0.8, event_id.boxed()),
        named("es-eventtype", 0.8, event_type.boxed()),
        named("accept", 0.6, accept.boxed()),
        named("es-longpoll", 0.05, long_poll.boxed()),
        named("es-resolvelinktos", 0.2, boolean.boxed()),
        named("es-harddelete", 0.2, header_value(vec!["False", "no"]).boxed()),
        named("if-none-match", 0.2, header_value(vec!["\"0;1\"", "*", "W/\"x\""]).boxed()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j)| {
            [a, b, c, d, e, f, g, h, i, j].into_iter().flatten().collect()
        })
}

fn probe() -> impl Strategy<Value = Probe> {
    (target(), headers(), typed_body(), any::<bool>()).prop_map(
        |((method, path), mut headers, (body, content_type), gzipped)| {
            if !content_type.is_empty() && !headers.iter().any(|(name, _)| *name == "content-type") {
                headers.push(("content-type", content_type.as_bytes().to_vec()));
            }
            if gzipped {
                headers.retain(|(name, _)| *name != "content-encoding");
            }
            Probe { method, path, headers, gzipped, body }
        },
    )
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Heads {
    all: (u16, Option<String>),
    target: (u16, Option<String>),
}

async fn head_of(server: &TestServer, stream: &str) -> (u16, Option<String>) {
    let response = server.get(&format!("/streams/{stream}/head/backward/1"), ATOM_JSON).await;
    let etag = response.headers().get("etag").map(|value| value.to_str().unwrap().to_owned());
    (response.status().as_u16(), etag)
}

async fn heads(server: &TestServer) -> Heads {
    Heads { all: head_of(server, "$all").await, target: head_of(server, TARGET).await }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Whether a `Content-Type` says the body is XML.
fn is_xml(content_type: Option<&str>) -> bool {
    let media_type = content_type.and_then(|value| value.split(';').next()).unwrap_or_default().trim();
    media_type.ends_with("/xml") || media_type.ends_with("+xml")
}

async fn check(server: &TestServer, probe: &Probe) -> Result<(), TestCaseError> {
    let before = heads(server).await;
    let mut request = server.client.request(probe.method.clone(), server.url(&probe.path));
    for (name, value) in &probe.headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(HeaderName::from_static(name), value);
        }
    }
    let body = if probe.gzipped {
        request = request.header("content-encoding", "gzip");
        gzip(&probe.body)
    } else {
        probe.body.clone()
    };
    let response = request.body(body).send().await;
    let response = response.map_err(|error| TestCaseError::fail(format!("no answer: {error}")))?;
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|value| value.to_str().ok());
    let content_type = content_type.map(str::to_owned);
    // The whole answer arrives (a handler that panicked mid-body would cut it).
    let body = response.bytes().await;
    let body = body.map_err(|error| TestCaseError::fail(format!("a cut answer: {error}")))?;
    prop_assert!(status.as_u16() < 500, "a {status}");
    // An empty body is v5's "nothing" (metadata of a stream that has
    // none), which its clients expect as it is: see docs/v5-compatibility.md.
    if status.is_success() && !body.is_empty() && is_xml(content_type.as_deref()) {
        let text = std::str::from_utf8(&body);
        let checked = text
            .map_err(|error| error.to_string())
            .and_then(|text| eventfeed::xml::check_document(text).map_err(|problem| problem.to_string()));
        prop_assert!(checked.is_ok(), "a {} labelled {:?} is not XML: {:?}", status, content_type, checked);
    }
    if !status.is_success() {
        prop_assert_eq!(heads(server).await, before, "a {} changed the store", status);
    }
    Ok(())
}

#[test]
fn no_request_makes_the_server_fail_and_a_refused_one_changes_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        server.append_n(TARGET, 3).await;
        // Data the XML views must not pass on as it is: a NUL, and JSON
        // sent as raw bytes (events 3 and 4).
        for data in [&b"a\0b"[..], br#"{"a":1}"#] {
            let id = uuid::Uuid::new_v4().to_string();
            let response = server
                .client
                .post(server.url(&format!("/streams/{TARGET}")))
                .header("content-type", "application/octet-stream")
                .header("es-eventtype", "Raw")
                .header("es-eventid", id)
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
        server
    });
    let config = Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(25),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&probe(), |probe| runtime.block_on(check(&server, &probe)));
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let ping = runtime.block_on(server.get("/ping", "*/*"));
    assert_eq!(ping.status(), 200, "still serving");
}
