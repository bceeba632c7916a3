//! The input rules every request body and parameter is held to (issue 25),
//! and the promise that every representation is well-formed, over real
//! sockets: request `Content-Encoding`s decoded or refused, the XML events
//! format parsed as XML 1.0 (and CDATA kept), no character XML cannot carry
//! in an XML answer, no key given twice, and the numeric metadata within
//! its range. A refused request writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{ATOM_JSON, ATOM_XML, EVENTS_JSON, TestServer, event, header, reason};
use quick_xml::Reader;
use quick_xml::events::Event;
use reqwest::Response;
use serde_json::{Value, json};
use uuid::Uuid;

const EVENTS_XML: &str = "application/vnd.eventstore.events+xml";
const EVENT_JSON: &str = "application/vnd.eventstore.event+json";
const EVENT_XML: &str = "application/vnd.eventstore.event+xml";
const OCTET_STREAM: &str = "application/octet-stream";

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = server.client.post(server.url(path)).header("content-type", content_type).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A single raw event (`application/octet-stream`) with its id and type.
async fn post_raw(server: &TestServer, stream: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let id = Uuid::new_v4().to_string();
    let mut all = vec![("es-eventtype", "Raw"), ("es-eventid", id.as_str())];
    all.extend_from_slice(headers);
    post(server, &format!("/streams/{stream}"), OCTET_STREAM, &all, body).await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The stream's events, oldest first, as event objects (404: none).
async fn stored(server: &TestServer, stream: &str) -> Option<Vec<Value>> {
    let response = server.get(&format!("/streams/{stream}/0/forward/100?embed=body"), ATOM_JSON).await;
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let mut events = page["entries"].as_array().unwrap().clone();
    events.reverse();
    Some(events)
}

/// Whether `text` is one well-formed XML document: one root element,
/// every tag closed, and nothing but markup quick-xml accepts.
fn well_formed(text: &str) -> bool {
    let mut reader = Reader::from_str(text);
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match reader.read_event() {
            Err(_) => return false,
            Ok(Event::Eof) => return depth == 0 && roots == 1,
            Ok(Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Text(text)) if depth == 0 && !text.trim().is_empty() => return false,
            Ok(Event::GeneralRef(_) | Event::CData(_)) if depth == 0 => return false,
            Ok(_) => {}
        }
    }
}

fn has_xml_illegal_characters(text: &str) -> bool {
    text.chars().any(
        |c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'),
    )
}

// ---- Content-Encoding ----

#[tokio::test]
async fn gzip_and_deflate_bodies_are_decoded_and_stored_decoded() {
    let server = TestServer::start().await;
    let raw = b"raw bytes, sent compressed".to_vec();
    for (coding, encoded) in [("gzip", gzip(&raw)), ("deflate", deflate(&raw)), ("identity", raw.clone())] {
        let response = post_raw(&server, "encoded", &[("content-encoding", coding)], encoded).await;
        assert_eq!(response.status(), 201, "{coding}");
    }
    let events = json!([event("Placed", json!({"total": 3}))]);
    let response = post(
        &server,
        "/streams/encoded",
        EVENTS_JSON,
        &[("content-encoding", "GZIP")],
        gzip(events.to_string().as_bytes()),
    )
    .await;
    assert_eq!(response.status(), 201, "codings are case-insensitive");

    for number in 0..3 {
        let read = server.get(&format!("/streams/encoded/{number}"), OCTET_STREAM).await;
        assert_eq!(&read.bytes().await.unwrap()[..], &raw[..], "event {number} is stored decoded");
    }
    let placed: Value = server.get("/streams/encoded/3", "application/json").await.json().await.unwrap();
    assert_eq!(placed, json!({"total": 3}));
}

#[tokio::test]
async fn an_encoding_eventfeed_does_not_decode_is_415_naming_those_it_does() {
    let server = TestServer::start().await;
    for coding in ["br", "zstd", "compress", "gzip, gzip", "x-unknown"] {
        let response = post_raw(&server, "refused", &[("content-encoding", coding)], b"body".to_vec()).await;
        assert_eq!(response.status(), 415, "{coding}");
        let accepted = header(&response, "accept-encoding").expect("415 names the codings accepted");
        assert!(accepted.contains("gzip"), "{accepted}");
        assert!(response.text().await.unwrap().contains("gzip"), "the body says which codings work");
    }
    assert_eq!(stored(&server, "refused").await, None, "nothing was written");
    // A read has no body to decode: the header is irrelevant there.
    assert_eq!(
        server.get_with("/streams/refused", ATOM_JSON, &[("content-encoding", "br")]).await.status(),
        404
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_413_and_a_corrupt_body_400_and_neither_writes() {
    let server = TestServer::start_with(|config| {
        config.max_event_bytes = 1024 * 1024;
        config.max_request_bytes = 2 * 1024 * 1024;
    })
    .await;
    // 64 MiB of zeros in about 64 KiB: small on the wire, far over both
    // limits once decoded.
    let bomb = gzip(&vec![0; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let response = post_raw(&server, "bombed", &[("content-encoding", "gzip")], bomb.clone()).await;
    assert_eq!(response.status(), 413, "{}", response.text().await.unwrap());
    let response = post(&server, "/streams/bombed", EVENTS_JSON, &[("content-encoding", "gzip")], bomb).await;
    assert_eq!(response.status(), 413);

    let mut corrupt = gzip(b"[{\"eventId\":\"x\"}]");
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    corrupt.truncate(corrupt.len() - 4);
    let response = post_raw(&server, "bombed", &[("content-encoding", "gzip")], corrupt).await;
    assert_eq!(response.status(), 400);
    assert_eq!(stored(&server, "bombed").await, None, "nothing was written");
}

// ---- the XML events format ----

fn xml_event(id: Uuid, inner: &str) -> String {
    format!("<Event><EventId>{id}</EventId><EventType>T</EventType>{inner}</Event>")
}

#[tokio::test]
async fn xml_events_that_are_not_well_formed_are_400_and_write_nothing() {
    let server = TestServer::start().await;
    let id = Uuid::new_v4();
    let ok = xml_event(id, "<Data>x</Data>");
    let in_event = |inner: &str| format!("<Events>{}</Events>", xml_event(id, inner)).into_bytes();
    let two_ids = format!(
        "<Events><Event><EventId>{id}</EventId><EventId>{id}</EventId><EventType>T</EventType></Event></Events>"
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("junk after the root", format!("<Events>{ok}</Events>junk").into_bytes()),
        ("a second root", format!("<Events>{ok}</Events><Events/>").into_bytes()),
        ("a raw NUL", in_event("<Data>a\u{0}b</Data>")),
        ("&#0;", in_event("<Data>a&#0;b</Data>")),
        ("&#x1;", in_event("<Data>a&#x1;b</Data>")),
        ("a raw U+FFFF", in_event("<Data>a\u{ffff}b</Data>")),
        ("an undefined entity", in_event("<Data>&nbsp;</Data>")),
        (
            "an entity a DTD defines",
            format!(
                "<!DOCTYPE Events [<!ENTITY e \"x\">]><Events>{}</Events>",
                xml_event(id, "<Data>&e;</Data>")
            )
            .into_bytes(),
        ),
        ("two EventIds", two_ids.into_bytes()),
        ("two Data", in_event("<Data>a</Data><data>b</data>")),
        ("an unclosed root", format!("<Events>{ok}").into_bytes()),
        ("an unclosed element in Data", in_event("<Data><a></Data>")),
        ("a mismatched end tag", in_event("<Data><a></b></Data>")),
        ("text beside the events", format!("<Events>stray{ok}</Events>").into_bytes()),
        ("an unknown element", in_event("<Colour>red</Colour>")),
        ("an attribute given twice", in_event("<Data><a b=\"1\" b=\"2\"/></Data>")),
        ("a bad element name", in_event("<Data><1a/></Data>")),
        ("not UTF-8", b"<Events>\xe9</Events>".to_vec()),
    ];
    for (what, body) in cases {
        let response = post(&server, "/streams/xml-bad", EVENTS_XML, &[], body).await;
        assert_eq!(response.status(), 400, "{what}");
        assert!(!response.text().await.unwrap().is_empty(), "{what}: the body says why");
    }
    assert_eq!(stored(&server, "xml-bad").await, None, "nothing was written");
}

#[tokio::test]
async fn cdata_is_kept_as_text_exactly() {
    let server = TestServer::start().await;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Events>\n{}\n{}\n{}\n{}\n</Events>\n",
        xml_event(ids[0], "<Data><![CDATA[<b>bold</b> & more]]></Data>"),
        xml_event(ids[1], "<Data>a <![CDATA[<b>]]> c &amp; d</Data>"),
        xml_event(
            ids[2],
            "<Data> <![CDATA[x]]><![CDATA[y]]> </Data><Metadata><![CDATA[{\"by\":\"x\"}]]></Metadata>"
        ),
        xml_event(ids[3], "<Data><![CDATA[  spaced  ]]></Data>"),
    );
    let response = post(&server, "/streams/cdata", EVENTS_XML, &[], body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let read = |number: u64| {
        let server = &server;
        async move {
            let object: Value =
                server.get(&format!("/streams/cdata/{number}"), EVENT_JSON).await.json().await.unwrap();
            object
        }
    };
    assert_eq!(read(0).await["data"], "<b>bold</b> & more");
    assert_eq!(read(1).await["data"], "a <b> c & d");
    let third = read(2).await;
    assert_eq!(third["data"], "xy");
    assert_eq!(third["metadata"], json!({"by": "x"}), "CDATA holding JSON is JSON");
    assert_eq!(read(3).await["data"], "  spaced  ", "CDATA is never trimmed");
}

// ---- XML answers ----

#[tokio::test]
async fn a_character_xml_cannot_carry_never_reaches_an_xml_answer() {
    let server = TestServer::start().await;
    assert_eq!(post_raw(&server, "nul", &[], b"a\0b\x01c".to_vec()).await.status(), 201);
    let events = json!([event("Json", json!({"text": "x\u{0}y", "ok": 1}))]);
    assert_eq!(server.post_events("nul", &events).await.status(), 201);

    for number in 0..2 {
        for accept in ["text/xml", "application/xml", EVENT_XML] {
            let response = server.get(&format!("/streams/nul/{number}"), accept).await;
            assert_eq!(response.status(), 406, "event {number} as {accept}");
            assert!(!response.bytes().await.unwrap().contains(&0), "event {number} as {accept}");
        }
        // The Atom entry replaces what XML cannot carry.
        let entry = server.get(&format!("/streams/nul/{number}"), ATOM_XML).await;
        assert_eq!(entry.status(), 200);
        let text = entry.text().await.unwrap();
        assert!(!has_xml_illegal_characters(&text) && well_formed(&text), "{text:?}");
        // The bytes stay readable as they were stored.
        assert_eq!(server.get(&format!("/streams/nul/{number}"), OCTET_STREAM).await.status(), 200);
    }
    let page = server.get("/streams/nul/head/backward/20?embed=content", ATOM_XML).await;
    let text = page.text().await.unwrap();
    assert!(!has_xml_illegal_characters(&text) && well_formed(&text), "{text:?}");
    feed_rs::parser::parse(text.as_bytes()).expect("a valid Atom page");
}

#[tokio::test]
async fn the_xml_view_of_an_event_is_always_an_xml_document() {
    let server = TestServer::start().await;
    // Raw bytes that happen to be JSON, plain text, JSON whose root is an
    // array, and a JSON document with names XML cannot take as they are.
    assert_eq!(post_raw(&server, "views", &[], br#"{"a":1}"#.to_vec()).await.status(), 201);
    assert_eq!(post_raw(&server, "views", &[], b"plain & <text>".to_vec()).await.status(), 201);
    let events = json!([
        event("List", json!([1, [2, 3], {"b": "c"}])),
        event("Names", json!({"1st": 1, "a b": 2, "\u{aa}x": 3, "x\u{b2}": 4, "ns:name": 5})),
    ]);
    assert_eq!(server.post_events("views", &events).await.status(), 201);
    for number in 0..4 {
        for accept in ["text/xml", "application/xml"] {
            let response = server.get(&format!("/streams/views/{number}"), accept).await;
            assert_eq!(response.status(), 200, "event {number} as {accept}");
            assert!(header(&response, "content-type").unwrap().starts_with(accept));
            let text = response.text().await.unwrap();
            assert!(well_formed(&text), "event {number} as {accept}: {text}");
            assert!(text.contains("<data>"), "event {number} as {accept}: {text}");
        }
    }
    let text = server.get("/streams/views/0", "text/xml").await.text().await.unwrap();
    assert!(text.ends_with("<data>{&quot;a&quot;:1}</data>"), "raw bytes are the text of <data>: {text}");
    let text = server.get("/streams/views/3", "text/xml").await.text().await.unwrap();
    for element in ["<_st>1</_st>", "<a_b>2</a_b>", "<_x>3</_x>", "<x_>4</x_>", "<ns_name>5</ns_name>"] {
        assert!(text.contains(element), "names are made XML names: {text}");
    }
    let text = server.get("/streams/views/2", "text/xml").await.text().await.unwrap();
    assert!(
        text.ends_with(
            "<data><data>1</data><data><data>2</data><data>3</data></data><data><b>c</b></data></data>"
        ),
        "an array repeats its element, nested arrays wrapped as Json.NET writes them: {text}"
    );
}

// ---- keys given twice ----

#[tokio::test]
async fn a_key_given_twice_in_metadata_is_400_naming_it() {
    let server = TestServer::start().await;
    server.append_n("dup-meta", 1).await;
    let response = post(
        &server,
        "/streams/dup-meta/metadata",
        "application/json",
        &[],
        r#"{"$maxCount":1,"$maxCount":1000}"#,
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(reason(response).await.contains("$maxCount"));
    let array = format!(
        r#"[{{"eventId":"{}","eventType":"$metadata","data":{{"owner":"a","owner":"b"}}}}]"#,
        Uuid::new_v4()
    );
    let response = post(&server, "/streams/dup-meta/metadata", EVENTS_JSON, &[], array).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("owner"));
    let metadata = server.get("/streams/dup-meta/metadata", "application/json").await;
    assert_eq!(metadata.json::<Value>().await.unwrap(), json!({}), "nothing was written");
}

#[tokio::test]
async fn a_setting_given_twice_is_400_naming_it() {
    let server = TestServer::start().await;
    for body in [r#"{"bufferSize":100,"bufferSize":200}"#, r#"{"bufferSize":100,"BufferSize":200}"#] {
        let response = server
            .client
            .put(server.url("/subscriptions/dup-settings/g"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.text().await.unwrap().to_lowercase().contains("buffersize"), "{body}");
    }
    let info = server.get("/subscriptions/dup-settings/g/info", "application/json").await;
    assert_eq!(info.status(), 404, "no group was created");
}

#[tokio::test]
async fn a_key_given_twice_in_an_events_array_or_a_json_body_is_400_naming_it() {
    let server = TestServer::start().await;
    let id = Uuid::new_v4();
    let cases = [
        (format!(r#"[{{"eventId":"{id}","eventType":"T","data":{{"total":1,"total":2}}}}]"#), "total"),
        (format!(r#"[{{"eventId":"{id}","eventType":"T","data":{{}},"note":1,"note":2}}]"#), "note"),
        (format!(r#"[{{"eventId":"{id}","eventType":"T","data":"{{\"k\":1,\"k\":2}}"}}]"#), "k"),
        (
            format!(r#"[{{"eventId":"{id}","eventType":"T","metadata":{{"m":{{"deep":1,"deep":2}}}}}}]"#),
            "deep",
        ),
    ];
    for (body, key) in cases {
        let response = post(&server, "/streams/dup-events", EVENTS_JSON, &[], body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.text().await.unwrap().contains(key), "{body} names {key}");
    }
    let id = id.to_string();
    let headers = [("es-eventtype", "T"), ("es-eventid", id.as_str())];
    let response =
        post(&server, "/streams/dup-events", "application/json", &headers, r#"{"a":1,"a":2}"#).await;
    assert_eq!(response.status(), 400);
    assert_eq!(stored(&server, "dup-events").await, None, "nothing was written");
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_400_everywhere() {
    let server = TestServer::start().await;
    server.append_n("dup-query", 1).await;
    let page = server.get("/streams/dup-query?embed=body&embed=rich", ATOM_JSON).await;
    assert_eq!(page.status(), 400, "as before: a read's query");
    let api = common::subscriptions::Api::of(&server);
    api.create("dup-query", "g", json!({})).await;
    let competing = common::subscriptions::COMPETING_JSON;
    let messages = server.get("/subscriptions/dup-query/g/1?embed=body&embed=rich", competing).await;
    assert_eq!(messages.status(), 400, "a subscription read's query");
    let ack = server
        .client
        .post(server.url(&format!(
            "/subscriptions/dup-query/g/ack?ids={}&ids={}",
            Uuid::new_v4(),
            Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 400, "an ack's query");
}

// ---- numeric metadata ----

#[tokio::test]
async fn numeric_metadata_stays_within_its_documented_range() {
    let server = TestServer::start().await;
    server.append_n("ranges", 1).await;
    for document in [
        json!({"$cacheControl": u64::MAX}),
        json!({"$cacheControl": 31_536_001}),
        json!({"$maxCount": 1u64 << 63}),
        json!({"$tb": 1u64 << 63}),
        json!({"$maxAge": u64::MAX}),
    ] {
        let response = server.set_metadata("ranges", document.clone()).await;
        assert_eq!(response.status(), 400, "{document}");
        let key = document.as_object().unwrap().keys().next().unwrap().clone();
        assert!(reason(response).await.contains(&key), "{document}");
    }
    let head = server.get("/streams/ranges/head", ATOM_JSON).await;
    assert_eq!(header(&head, "cache-control").unwrap(), "max-age=0, no-cache, must-revalidate");

    // The largest of each is accepted: a year of caching, and v5's
    // soft-delete `$tb` (long.MaxValue), which clients copy back.
    let document = json!({"$cacheControl": 31_536_000, "$maxCount": i64::MAX});
    assert_eq!(server.set_metadata("ranges", document).await.status(), 201);
    assert_eq!(server.set_metadata("ranges-tb", json!({"$tb": i64::MAX})).await.status(), 201);
    let head = server.get("/streams/ranges/head/backward/20", ATOM_JSON).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "cache-control").unwrap(), "max-age=31536000, public");
}
