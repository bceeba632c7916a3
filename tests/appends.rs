//! `POST /streams/{stream}`: every status code and header of section 1 of
//! the API reference, malformed input, idempotency and limits; and the
//! server's basics (`/ping`, request logs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ATOM_JSON, BinaryServer, EVENTS_JSON, TestServer, client, event, header, reason};
use reqwest::Response;
use serde_json::{Value, json};
use uuid::Uuid;

async fn post(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = server.client.post(server.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_events_array_is_created_with_the_location_of_its_first_event() {
    let server = TestServer::start().await;
    let response = server
        .post_events("Order-1", &json!([event("Placed", json!({"a": 1})), event("Paid", json!({"b": 2}))]))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location").unwrap(), server.url("/streams/Order-1/0"));
    assert!(response.text().await.unwrap().is_empty(), "201 has an empty body");

    let response = server.post_events("Order-1", &json!([event("Shipped", json!({}))])).await;
    assert_eq!(header(&response, "location").unwrap(), server.url("/streams/Order-1/2"));
}

#[tokio::test]
async fn every_single_body_kind_is_stored_and_read_back() {
    let server = TestServer::start().await;
    let cases: [(&str, &[u8], &str); 4] = [
        ("application/json", br#"{"total":12}"#, "application/json"),
        ("text/xml", b"<order><total>12</total></order>", "application/octet-stream"),
        ("application/xml", b"<order/>", "application/octet-stream"),
        ("application/octet-stream", b"\x00\x01\xff raw", "application/octet-stream"),
    ];
    for (number, (content_type, body, read_type)) in cases.iter().enumerate() {
        let id = Uuid::new_v4().to_string();
        let response = post(
            &server,
            "/streams/kinds",
            Some(content_type),
            &[("es-eventtype", "Kind"), ("es-eventid", &id)],
            body.to_vec(),
        )
        .await;
        assert_eq!(response.status(), 201, "{content_type}");
        assert_eq!(header(&response, "location").unwrap(), server.url(&format!("/streams/kinds/{number}")));

        let read = server.get(&format!("/streams/kinds/{number}"), "application/json").await;
        assert_eq!(read.status(), 200);
        assert_eq!(header(&read, "content-type").unwrap().split(';').next().unwrap(), *read_type);
        assert_eq!(&read.bytes().await.unwrap()[..], *body, "{content_type} round-trips byte for byte");

        let entry = server.get_json(&format!("/streams/kinds/{number}")).await;
        assert_eq!(entry["content"]["eventId"], id);
        assert_eq!(entry["content"]["eventType"], "Kind");
    }
    let entry = server.get_json("/streams/kinds/0").await;
    assert_eq!(entry["content"]["data"], json!({"total": 12}), "JSON data is embedded as JSON");
}

#[tokio::test]
async fn an_events_xml_array_is_accepted() {
    let server = TestServer::start().await;
    let id = Uuid::new_v4();
    let body = format!(
        "<Events><Event><EventId>{id}</EventId><EventType>Placed</EventType>\
         <Data><Order><Total>3</Total></Order></Data><Metadata>{{\"by\":\"x\"}}</Metadata></Event></Events>"
    );
    let response =
        post(&server, "/streams/xml-1", Some("application/vnd.eventstore.events+xml"), &[], body).await;
    assert_eq!(response.status(), 201);
    let entry = server.get("/streams/xml-1/0", "application/vnd.eventstore.event+json").await;
    let entry: Value = entry.json().await.unwrap();
    assert_eq!(entry["eventId"], id.to_string());
    assert_eq!(entry["data"], "<Order><Total>3</Total></Order>");
    assert_eq!(entry["metadata"], json!({"by": "x"}));
}

#[tokio::test]
async fn a_single_body_without_an_id_is_redirected_to_an_idempotent_uri() {
    let server = TestServer::start().await;
    let response =
        post(&server, "/streams/redirected", Some("application/json"), &[("es-eventtype", "T")], "{}").await;
    assert_eq!(response.status(), 307);
    let location = header(&response, "location").unwrap();
    let prefix = server.url("/streams/redirected/incoming/");
    assert!(location.starts_with(&prefix), "{location}");
    Uuid::parse_str(&location[prefix.len()..]).expect("the location names a fresh uuid");
    let body = response.text().await.unwrap();
    assert_eq!(body.lines().next(), Some("Forwarding to idempotent URI"), "v5's body comes first");

    // Following it appends; following it again is an idempotent retry.
    for _ in 0..2 {
        let response = server
            .client
            .post(&location)
            .header("content-type", "application/json")
            .header("es-eventtype", "T")
            .body("{\"x\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(header(&response, "location").unwrap(), server.url("/streams/redirected/0"));
    }
    let head = server.get_json("/streams/redirected").await;
    assert_eq!(head["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_incoming_route_takes_single_bodies_and_valid_ids_only() {
    let server = TestServer::start().await;
    let id = Uuid::new_v4();
    let array = json!([event("T", json!({}))]).to_string();
    let response = post(&server, &format!("/streams/s/incoming/{id}"), Some(EVENTS_JSON), &[], array).await;
    assert_eq!(response.status(), 415);
    let response = post(
        &server,
        "/streams/s/incoming/not-a-uuid",
        Some("application/json"),
        &[("es-eventtype", "T")],
        "{}",
    )
    .await;
    assert_eq!(response.status(), 400);
    let response =
        post(&server, &format!("/streams/s/incoming/{id}"), Some("application/json"), &[], "{}").await;
    assert_eq!(response.status(), 400, "the event type is still required");
}

#[tokio::test]
async fn missing_or_malformed_headers_are_400_with_v5_reasons() {
    let server = TestServer::start().await;
    let response = post(
        &server,
        "/streams/h",
        Some("application/json"),
        &[("es-eventid", &Uuid::new_v4().to_string())],
        "{}",
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        reason(response).await,
        "Must include an event type with the request either in body or as ES-EventType header."
    );

    let response = post(
        &server,
        "/streams/h",
        Some("application/json"),
        &[("es-eventtype", "T"), ("es-eventid", "123")],
        "{}",
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(reason(response).await, "ES-EventId header in wrong format.");

    for bad in ["-3", "-5", "abc", "1.0", ""] {
        let response = post(
            &server,
            "/streams/h",
            Some(EVENTS_JSON),
            &[("es-expectedversion", bad)],
            json!([event("T", json!({}))]).to_string(),
        )
        .await;
        assert_eq!(response.status(), 400, "{bad:?}");
        assert_eq!(reason(response).await, "ES-ExpectedVersion header in wrong format.");
    }
    assert_eq!(server.get("/streams/h", ATOM_JSON).await.status(), 404, "nothing was written");
}

#[tokio::test]
async fn malformed_bodies_are_400_and_write_nothing() {
    let server = TestServer::start().await;
    let id = Uuid::new_v4().to_string();
    let cases = [
        (json!([{"eventType": "T", "data": {}}]).to_string(), "Empty eventId provided."),
        (json!([{"eventId": "", "eventType": "T"}]).to_string(), "Empty eventId provided."),
        (json!([{"eventId": id, "data": {}}]).to_string(), "Empty eventType provided."),
        (json!([{"eventId": id, "eventType": "", "data": {}}]).to_string(), "Empty eventType provided."),
        (json!([{"eventId": "nope", "eventType": "T"}]).to_string(), "Invalid eventId provided."),
        ("[{\"eventId\":".to_owned(), "Write request body invalid."),
        ("{}".to_owned(), "Write request body invalid."),
        ("[]".to_owned(), "Write request body invalid."),
    ];
    for (body, expected) in cases {
        let response = post(&server, "/streams/bad", Some(EVENTS_JSON), &[], body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(reason(response).await, expected, "{body}");
    }
    let response = post(
        &server,
        "/streams/bad",
        Some("application/json"),
        &[("es-eventtype", "T"), ("es-eventid", &id)],
        "{not json",
    )
    .await;
    assert_eq!(response.status(), 400);
    let response =
        post(&server, "/streams/bad", Some("application/vnd.eventstore.events+xml"), &[], "<Events><Event>")
            .await;
    assert_eq!(response.status(), 400);
    assert_eq!(server.get("/streams/bad", ATOM_JSON).await.status(), 404, "nothing was written");
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let server = TestServer::start().await;
    // The third event is invalid: none of the three is written.
    let batch = json!([event("A", json!({})), event("B", json!({})), {"eventId": Uuid::new_v4().to_string(), "eventType": ""}]);
    assert_eq!(server.post_events("atomic", &batch).await.status(), 400);
    assert_eq!(server.get("/streams/atomic", ATOM_JSON).await.status(), 404);

    // A duplicate id inside one request is refused as a whole.
    let twice = event("A", json!({}));
    let batch = json!([twice.clone(), event("B", json!({})), twice]);
    assert_eq!(server.post_events("atomic", &batch).await.status(), 400);
    assert_eq!(server.get("/streams/atomic", ATOM_JSON).await.status(), 404);

    // A failed expected-version check writes none of the batch.
    server.append_n("atomic", 1).await;
    let response = server
        .client
        .post(server.url("/streams/atomic"))
        .header("content-type", EVENTS_JSON)
        .header("es-expectedversion", "7")
        .body(json!([event("A", json!({})), event("B", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let head = server.get_json("/streams/atomic").await;
    assert_eq!(head["entries"].as_array().unwrap().len(), 1);
}

async fn post_expecting(server: &TestServer, stream: &str, expected: &str) -> Response {
    server
        .client
        .post(server.url(&format!("/streams/{stream}")))
        .header("content-type", EVENTS_JSON)
        .header("es-expectedversion", expected)
        .body(json!([event("T", json!({}))]).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn expected_versions() {
    let server = TestServer::start().await;
    // -4: the stream must exist.
    let response = post_expecting(&server, "ev", "-4").await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "es-currentversion").as_deref(), Some("-1"));
    assert_eq!(reason(response).await, "Wrong expected EventNumber");
    // 0 on a missing stream: wrong.
    assert_eq!(post_expecting(&server, "ev", "0").await.status(), 400);
    // -1: the stream must not exist.
    assert_eq!(post_expecting(&server, "ev", "-1").await.status(), 201);
    let response = post_expecting(&server, "ev", "-1").await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "es-currentversion").as_deref(), Some("0"));
    // N: the last event number must be N.
    assert_eq!(post_expecting(&server, "ev", "0").await.status(), 201);
    let response = post_expecting(&server, "ev", "0").await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "es-currentversion").as_deref(), Some("1"));
    assert_eq!(post_expecting(&server, "ev", "1").await.status(), 201);
    // -4 now succeeds, -2 always does.
    assert_eq!(post_expecting(&server, "ev", "-4").await.status(), 201);
    assert_eq!(post_expecting(&server, "ev", "-2").await.status(), 201);
    let head = server.get_json("/streams/ev").await;
    assert_eq!(head["entries"][0]["title"], "4@ev");
}

#[tokio::test]
async fn repeated_ids_are_idempotent_and_partial_repeats_are_refused() {
    let server = TestServer::start().await;
    server.append_n("idem", 3).await;
    let batch = json!([event("A", json!({"x": 1})), event("B", json!({"x": 2}))]);
    let first = server.post_events("idem", &batch).await;
    assert_eq!(first.status(), 201);
    let location = header(&first, "location").unwrap();
    assert_eq!(location, server.url("/streams/idem/3"));
    server.append_n("idem", 1).await;

    // The same ids again, even after more events: the original Location.
    let again = server.post_events("idem", &batch).await;
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "location").unwrap(), location);
    // Also with an expected version that no longer matches.
    let response = server
        .client
        .post(server.url("/streams/idem"))
        .header("content-type", EVENTS_JSON)
        .header("es-expectedversion", "2")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location").unwrap(), location);

    // One old id and one new: a partial match is a wrong expected version.
    let partial = json!([batch[0].clone(), event("C", json!({}))]);
    let response = server.post_events("idem", &partial).await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "es-currentversion").as_deref(), Some("5"));
    // The same ids in another order are not the same write either.
    let reordered = json!([batch[1].clone(), batch[0].clone()]);
    assert_eq!(server.post_events("idem", &reordered).await.status(), 400);
    // An id used in another stream is a new event there: ids are unique
    // per stream, as in v5.
    let other = server.post_events("other", &json!([batch[0].clone()])).await;
    assert_eq!(other.status(), 201);
    assert_eq!(header(&other, "location").unwrap(), server.url("/streams/other/0"));

    let head = server.get_json("/streams/idem").await;
    assert_eq!(head["entries"].as_array().unwrap().len(), 6, "nothing was written twice");
}

#[tokio::test]
async fn idempotency_survives_a_restart() {
    let server = TestServer::start().await;
    let batch = json!([event("A", json!({})), event("B", json!({}))]);
    let first = server.post_events("durable-ids", &batch).await;
    let location = header(&first, "location").unwrap();
    assert!(location.ends_with("/streams/durable-ids/0"));
    // More ids, so that the restarted server takes a moment to load them.
    let batches: Vec<Value> =
        (0..20).map(|_| Value::Array((0..100).map(|i| event("C", json!({ "i": i }))).collect())).collect();
    for (index, more) in batches.iter().enumerate() {
        let response = server.post_events("durable-ids", more).await;
        assert_eq!(
            header(&response, "location").unwrap(),
            server.url(&format!("/streams/durable-ids/{}", 2 + index * 100))
        );
    }

    let server = server.restart().await;
    let again = server.post_events("durable-ids", &batch).await;
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "location").unwrap(), server.url("/streams/durable-ids/0"));
    // Later too: the server keeps the ids it holds in memory once it has
    // read them, and must still find every one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (index, more) in batches.iter().enumerate() {
        let retry = server.post_events("durable-ids", more).await;
        assert_eq!(retry.status(), 201);
        assert_eq!(
            header(&retry, "location").unwrap(),
            server.url(&format!("/streams/durable-ids/{}", 2 + index * 100))
        );
    }
    let old = batches[7][42].clone();
    let partial = json!([old.clone(), event("D", json!({}))]);
    assert_eq!(server.post_events("durable-ids", &partial).await.status(), 400, "a partial match");
    let elsewhere = server.post_events("elsewhere", &json!([old.clone()])).await;
    assert_eq!(
        header(&elsewhere, "location").unwrap(),
        server.url("/streams/elsewhere/0"),
        "a new event there"
    );
    let retried = server.post_events("elsewhere", &json!([old])).await;
    assert_eq!(header(&retried, "location").unwrap(), server.url("/streams/elsewhere/0"), "and its retry");
    let head = server.get_json("/streams/durable-ids").await;
    assert_eq!(head["entries"][0]["title"], "2001@durable-ids", "nothing was written twice");
}

#[tokio::test]
async fn events_over_the_size_limit_are_413() {
    let server = TestServer::start_with(|config| config.max_event_bytes = 1024).await;
    let big = "x".repeat(2000);
    let response = server.post_events("sized", &json!([event("T", json!({ "big": big }))])).await;
    assert_eq!(response.status(), 413);
    let response = post(
        &server,
        "/streams/sized",
        Some("application/octet-stream"),
        &[("es-eventtype", "T"), ("es-eventid", &Uuid::new_v4().to_string())],
        vec![0u8; 1025],
    )
    .await;
    assert_eq!(response.status(), 413);
    // Metadata counts too.
    let mut event_with_metadata = event("T", json!({"small": true}));
    event_with_metadata["metadata"] = json!({ "big": big });
    assert_eq!(server.post_events("sized", &json!([event_with_metadata])).await.status(), 413);
    assert_eq!(server.get("/streams/sized", ATOM_JSON).await.status(), 404);
    // At the limit is fine.
    let response = post(
        &server,
        "/streams/sized",
        Some("application/octet-stream"),
        &[("es-eventtype", "T"), ("es-eventid", &Uuid::new_v4().to_string())],
        vec![0u8; 1024],
    )
    .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn missing_or_unknown_content_types_are_415() {
    let server = TestServer::start().await;
    let body = json!([event("T", json!({}))]).to_string();
    assert_eq!(post(&server, "/streams/ct", None, &[], body.clone()).await.status(), 415);
    assert_eq!(post(&server, "/streams/ct", Some("text/plain"), &[], body.clone()).await.status(), 415);
    let response = post(
        &server,
        "/streams/ct",
        Some("application/vnd.eventstore.events+json; charset=utf-8"),
        &[],
        body,
    )
    .await;
    assert_eq!(response.status(), 201, "parameters on the media type are fine");
}

#[tokio::test]
async fn a_trailing_slash_redirects_to_the_stream() {
    let server = TestServer::start().await;
    let response = post(&server, "/streams/slash/", Some(EVENTS_JSON), &[], "[]").await;
    assert_eq!(response.status(), 307);
    assert_eq!(header(&response, "location").unwrap(), server.url("/streams/slash"));
    let response = server.get("/streams/slash/?embed=body", ATOM_JSON).await;
    assert_eq!(response.status(), 307);
    assert_eq!(header(&response, "location").unwrap(), server.url("/streams/slash?embed=body"));
}

#[tokio::test]
async fn system_and_invalid_stream_names_are_refused() {
    let server = TestServer::start().await;
    let body = json!([event("T", json!({}))]);
    for name in ["$all", "%24all", "$ce-Order", "$$meta", "$streams"] {
        let response = server.post_events(name, &body).await;
        assert_eq!(response.status(), 400, "{name}");
        assert!(reason(response).await.contains("reserved"), "{name}");
    }
    let long = "x".repeat(1025);
    for name in ["a%0Ab", "%00", long.as_str()] {
        let response = server.post_events(name, &body).await;
        assert_eq!(response.status(), 400, "{name}");
    }
    // `.` and `..` (also encoded) are normalised away by URL libraries, so
    // they are sent raw.
    for name in ["%2E", "%2E%2E", "%2e"] {
        let status = common::raw_status(
            server.addr,
            "POST",
            &format!("/streams/{name}"),
            &[("Content-Type", EVENTS_JSON)],
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 400, "{name}");
    }
    let response = server.post_events("bad%FFutf8", &body).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn names_that_need_encoding_round_trip() {
    let server = TestServer::start().await;
    for (name, encoded) in [
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("100%", "100%25"),
        ("me@host", "me%40host"),
        ("Bestellung-ü€", "Bestellung-%C3%BC%E2%82%AC"),
    ] {
        let response = server.post_events(encoded, &json!([event("T", json!({"name": name}))])).await;
        assert_eq!(response.status(), 201, "{name}");
        assert_eq!(header(&response, "location").unwrap(), server.url(&format!("/streams/{encoded}/0")));
        let page = server.get_json(&format!("/streams/{encoded}")).await;
        assert_eq!(page["streamId"], name);
        assert_eq!(page["id"], server.url(&format!("/streams/{encoded}")));
        let data = server.get(&format!("/streams/{encoded}/0"), "application/json").await;
        assert_eq!(data.json::<Value>().await.unwrap()["name"], name);
    }
}

#[tokio::test]
async fn single_events_and_ping() {
    let server = TestServer::start().await;
    server.append_n("single", 2).await;
    let data = server.get("/streams/single/1", "application/json").await;
    assert_eq!(data.status(), 200);
    assert_eq!(data.json::<Value>().await.unwrap(), json!({"n": 1}));
    let entry = server.get_json("/streams/single/1").await;
    assert_eq!(entry["title"], "1@single");
    assert_eq!(entry["content"]["eventNumber"], 1);
    assert_eq!(entry["content"]["eventStreamId"], "single");
    assert_eq!(entry["content"]["data"], json!({"n": 1}));
    assert_eq!(server.get("/streams/single/2", "application/json").await.status(), 404);
    assert_eq!(server.get("/streams/nothing/0", "application/json").await.status(), 404);
    let ping = server.get("/ping", "application/json").await;
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.json::<Value>().await.unwrap()["text"], "Ping request successfully handled");
}

/// Per-request logs (tower-http's, at DEBUG) are written when the log
/// filter asks for them; the layer that writes them is left out otherwise.
#[tokio::test]
async fn request_logs_follow_the_log_filter() {
    let client = client();
    for (filter, wanted) in [("info,tower_http=debug", true), ("info", false)] {
        let dir = tempfile::tempdir().unwrap();
        let server = BinaryServer::start(dir.path(), &["--log", filter]);
        let ping = client.get(server.url("/ping")).send().await.unwrap();
        assert_eq!(ping.status(), 200);
        // The line is written as the response goes out; the log is read by
        // another thread, so give it a moment (long when it must come).
        let wait = if wanted { Duration::from_secs(10) } else { Duration::from_millis(500) };
        let logged = server.logged("finished processing request", wait).await;
        assert_eq!(logged, wanted, "--log {filter}");
        if wanted {
            assert!(server.logged("uri=/ping", Duration::ZERO).await, "the line names the request");
        }
    }
}
