//! Errors that say what to do: each message a person reads when a request
//! is refused, one test per message. Status codes, v5's reason phrases and
//! v5's bodies stay as they are (tests/v5_wire.rs pins them); what these
//! check is the explanation eventfeed adds where v5 leaves room for one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, event, header, reason};
use serde_json::json;

#[tokio::test]
async fn an_unknown_embed_is_a_400_naming_the_valid_ones() {
    let server = TestServer::start().await;
    server.post_events("Order-1", &json!([event("Placed", json!({}))])).await;
    let response = server.client.get(server.url("/streams/Order-1?embed=bodyy")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let phrase = reason(response).await;
    assert!(phrase.contains("'bodyy'"), "{phrase}");
    assert!(phrase.contains("none, content, rich, body, pretty, tryharder"), "{phrase}");
    // Any case of a valid name still reads.
    let response = server.client.get(server.url("/streams/Order-1?embed=Body")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The competing-consumer routes too.
    let created =
        server.client.put(server.url("/subscriptions/Order-1/g")).json(&json!({})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let response = server
        .client
        .get(server.url("/subscriptions/Order-1/g/1?embed=bodyy"))
        .header("accept", "application/vnd.eventstore.competingatom+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let phrase = reason(response).await;
    assert!(phrase.contains("'bodyy'") && phrase.contains("tryharder"), "{phrase}");
}

async fn append_expecting(server: &TestServer, stream: &str, expected: &str) -> (u16, String) {
    let response = server
        .client
        .post(server.url(&format!("/streams/{stream}")))
        .header("content-type", "application/vnd.eventstore.events+json")
        .header("es-expectedversion", expected)
        .body(json!([event("Placed", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_failed_expectation_says_in_words_what_the_stream_must_be() {
    let server = TestServer::start().await;
    let (status, body) = append_expecting(&server, "Order-1", "-4").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("Wrong expected EventNumber\n"), "{body}");
    assert!(body.contains("the stream must exist, but it does not exist"), "{body}");

    assert_eq!(append_expecting(&server, "Order-1", "-1").await.0, 201);
    let (status, body) = append_expecting(&server, "Order-1", "-1").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("the stream must not exist, but it exists and its last event number is 0"),
        "{body}"
    );

    let (_, body) = append_expecting(&server, "Order-1", "5").await;
    assert!(body.contains("the stream's last event number must be 5, but it exists"), "{body}");
}

#[tokio::test]
async fn a_bad_expected_version_lists_the_valid_forms() {
    let server = TestServer::start().await;
    let (status, body) = append_expecting(&server, "Order-1", "any").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("ES-ExpectedVersion header in wrong format.\n"), "{body}");
    for form in ["-2 (any version)", "-1 (the stream must not exist)", "-4 (the stream must exist)", "N (the"]
    {
        assert!(body.contains(form), "{form}: {body}");
    }
}

#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    let server = TestServer::start().await;
    let response = server.client.put(server.url("/streams/Order-1")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow").as_deref(), Some("GET,HEAD,POST,DELETE"));
    let body = response.text().await.unwrap();
    assert_eq!(body, "Method Not Allowed\nThis URL answers GET, HEAD, POST, DELETE.\n");
}

#[tokio::test]
async fn a_redirect_for_a_missing_event_id_says_to_repeat_the_post() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/streams/Order-1"))
        .header("content-type", "application/json")
        .header("es-eventtype", "Placed")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = header(&response, "location").unwrap();
    let body = response.text().await.unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("Forwarding to idempotent URI"));
    let advice = lines.next().unwrap();
    assert!(
        advice.starts_with(&format!("Repeat this POST, with the same body and headers, at {location}")),
        "{advice}"
    );
}

#[tokio::test]
async fn a_compressed_answer_has_one_vary_header() {
    let server = TestServer::start().await;
    server.post_events("Order-1", &json!([event("Placed", json!({"padding": "x".repeat(2000)}))])).await;
    for path in ["/streams/Order-1", "/streams/Order-1/0", "/streams/missing"] {
        let response =
            server.client.get(server.url(path)).header("accept-encoding", "gzip").send().await.unwrap();
        let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
        assert_eq!(vary.len(), 1, "{path}: {vary:?}");
        let vary = vary[0].to_str().unwrap();
        assert!(vary.starts_with("Accept, X-Forwarded-Host"), "{path}: {vary}");
        if response.headers().contains_key("content-encoding") {
            assert!(vary.ends_with(", Accept-Encoding"), "{path}: {vary}");
        }
    }
}

#[tokio::test]
async fn an_oversized_event_names_the_option_that_sets_the_limit() {
    let server = TestServer::start_with(|config| config.max_event_bytes = 1024).await;
    let response =
        server.post_events("Order-1", &json!([event("Placed", json!({"big": "x".repeat(2000)}))])).await;
    assert_eq!(response.status(), 413);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("Payload Too Large\n"), "{body}");
    assert!(
        body.contains("the limit is 1024, set by --max-event-bytes (EVENTFEED_MAX_EVENT_BYTES)"),
        "{body}"
    );
    // One event as a plain body, larger than the limit: the body's limit.
    let response = server
        .client
        .post(server.url("/streams/Order-1"))
        .header("content-type", "application/json")
        .header("es-eventtype", "Placed")
        .header("es-eventid", "7b0a5c1e-1d2e-4f3a-8b4c-5d6e7f8a9b0c")
        .body(json!({"big": "x".repeat(2000)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body = response.text().await.unwrap();
    assert!(body.contains("--max-event-bytes") && body.contains("--max-request-bytes"), "{body}");
}
