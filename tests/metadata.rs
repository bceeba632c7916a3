//! Stream metadata, retention on reads, and deletion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::pages::Walk;
use common::{ATOM_JSON, EVENTS_JSON, TestServer, event, link};
use reqwest::Response;
use serde_json::{Value, json};

/// The event numbers every read path shows: a forward walk from the head
/// page's `last` link, a backward walk from the head, and the head page.
async fn visible(server: &TestServer, stream: &str) -> Vec<u64> {
    let head_path = format!("/streams/{stream}/head/backward/3");
    let head: Value = server.get(&head_path, ATOM_JSON).await.json().await.unwrap();
    let last = link(&head, "last").unwrap_or_else(|| server.url(&format!("/streams/{stream}/0/forward/3")));
    let forward = Walk::forward(&server.client, last).max_pages(1000).pages().await.numbers();
    let backward =
        Walk::backward(&server.client, server.url(&head_path)).max_pages(1000).pages().await.numbers();
    assert_eq!(forward, backward, "{stream}: both walks agree");
    forward
}

async fn status(server: &TestServer, path: &str) -> u16 {
    server.get(path, ATOM_JSON).await.status().as_u16()
}

#[tokio::test]
async fn max_count_hides_all_but_the_newest() {
    let server = TestServer::start().await;
    server.append_n("counted", 10).await;
    let before = server.get("/streams/counted", ATOM_JSON).await.headers()["etag"].clone();
    assert_eq!(server.set_metadata("counted", json!({"$maxCount": 3})).await.status(), 201);
    assert_eq!(visible(&server, "counted").await, [7, 8, 9]);
    assert_eq!(status(&server, "/streams/counted/6").await, 404);
    assert_eq!(status(&server, "/streams/counted/7").await, 200);
    let after = server.get("/streams/counted", ATOM_JSON).await.headers()["etag"].clone();
    assert_ne!(before, after, "the ETag changes with the metadata, though the last event did not");
    // New events push older ones out at once.
    server.append_n("counted", 2).await;
    assert_eq!(visible(&server, "counted").await, [9, 10, 11]);
    // A forward page inside the hidden range jumps over it.
    let page: Value = server.get("/streams/counted/0/forward/3", ATOM_JSON).await.json().await.unwrap();
    assert!(page["entries"].as_array().unwrap().is_empty());
    assert!(link(&page, "previous").unwrap().ends_with("/streams/counted/9/forward/3"));
}

#[tokio::test]
async fn max_age_hides_old_events() {
    let server = TestServer::start().await;
    server.append_n("aged", 3).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    server.append_n("aged", 2).await;
    assert_eq!(server.set_metadata("aged", json!({"$maxAge": 2})).await.status(), 201);
    assert_eq!(visible(&server, "aged").await, [3, 4]);
    assert_eq!(status(&server, "/streams/aged/2").await, 404);
}

#[tokio::test]
async fn truncate_before_and_combinations() {
    let server = TestServer::start().await;
    server.append_n("truncated", 10).await;
    assert_eq!(server.set_metadata("truncated", json!({"$tb": 4})).await.status(), 201);
    assert_eq!(visible(&server, "truncated").await, [4, 5, 6, 7, 8, 9]);
    // The strictest rule wins.
    server.set_metadata("truncated", json!({"$tb": 4, "$maxCount": 3})).await;
    assert_eq!(visible(&server, "truncated").await, [7, 8, 9]);
    server.set_metadata("truncated", json!({"$tb": 8, "$maxCount": 5})).await;
    assert_eq!(visible(&server, "truncated").await, [8, 9]);
    // Replacing the metadata replaces the rules: everything is back.
    server.set_metadata("truncated", json!({})).await;
    assert_eq!(visible(&server, "truncated").await, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn cache_control_applies_to_head_like_responses_only() {
    let server = TestServer::start().await;
    server.append_n("cc", 30).await;
    server.set_metadata("cc", json!({"$cacheControl": 15})).await;
    for path in ["/streams/cc", "/streams/cc/head", "/streams/cc/25/forward/20"] {
        let response = server.get(path, ATOM_JSON).await;
        assert_eq!(response.headers()["cache-control"], "max-age=15, public", "{path}");
        assert!(response.headers().contains_key("etag"));
    }
    for path in ["/streams/cc/0/forward/20", "/streams/cc/3"] {
        let response = server.get(path, ATOM_JSON).await;
        assert_eq!(response.headers()["cache-control"], "max-age=31536000, public", "{path}");
    }
    // A read ACL without $all makes pages private.
    server.set_metadata("cc", json!({"$acl": {"$r": "ops"}})).await;
    let response = server.get("/streams/cc/0/forward/20", ATOM_JSON).await;
    assert_eq!(response.headers()["cache-control"], "max-age=31536000, private");
}

#[tokio::test]
async fn hidden_events_are_raw_links_in_system_streams_and_absent_from_all() {
    let server = TestServer::start().await;
    server.append_n("Kept-1", 4).await;
    server.set_metadata("Kept-1", json!({"$maxCount": 1})).await;
    let category: Value = server.get("/streams/$ce-Kept", ATOM_JSON).await.json().await.unwrap();
    let titles: Vec<&str> =
        category["entries"].as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["3@Kept-1", "2@$ce-Kept", "1@$ce-Kept", "0@$ce-Kept"]);
    assert_eq!(status(&server, "/streams/$ce-Kept/1").await, 404);
    let all: Value = server.get("/streams/$all", ATOM_JSON).await.json().await.unwrap();
    let titles: Vec<&str> =
        all["entries"].as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["0@$$Kept-1", "3@Kept-1"], "$all shows the metadata event and the one visible event");
}

#[tokio::test]
async fn system_streams_take_metadata_too() {
    let server = TestServer::start().await;
    for n in 0..5 {
        server.append_n(&format!("Sys-{n}"), 1).await;
    }
    assert_eq!(server.set_metadata("$ce-Sys", json!({"$maxCount": 2})).await.status(), 201);
    let page: Value = server.get("/streams/$ce-Sys", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let stored: Value =
        server.get("/streams/$ce-Sys/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(stored, json!({"$maxCount": 2}));
}

#[tokio::test]
async fn invalid_metadata_is_400_naming_the_key_and_changes_nothing() {
    let server = TestServer::start().await;
    server.append_n("validated", 3).await;
    server.set_metadata("validated", json!({"$maxCount": 2, "owner": "team-a"})).await;
    for (document, key) in [
        (json!({"$maxCount": 0}), "$maxCount"),
        (json!({"$maxCount": "5"}), "$maxCount"),
        (json!({"$maxAge": -1}), "$maxAge"),
        (json!({"$tb": 1.5}), "$tb"),
        (json!({"$cacheControl": 0}), "$cacheControl"),
        (json!({"$acl": {"$r": 7}}), "$acl.$r"),
        (json!({"$acl": "everyone"}), "$acl"),
        (json!({"$tmp": "yes"}), "$tmp"),
    ] {
        let response = server.set_metadata("validated", document.clone()).await;
        assert_eq!(response.status(), 400, "{document}");
        let text = response.text().await.unwrap();
        assert!(text.lines().next().unwrap().contains(&format!("'{key}'")), "{document}: {text}");
    }
    let response = server
        .client
        .post(server.url("/streams/validated/metadata"))
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let stored: Value =
        server.get("/streams/validated/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(
        stored,
        json!({"$maxCount": 2, "owner": "team-a"}),
        "unknown keys are kept; bad writes changed nothing"
    );
    assert_eq!(visible(&server, "validated").await, [1, 2]);
}

#[tokio::test]
async fn metadata_writes_reads_and_its_feed() {
    let server = TestServer::start().await;
    let empty: Value = server.get("/streams/meta/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(empty, json!({}), "no metadata yet: an empty object");

    // A raw object without ES-EventId gets an id (v5 would answer 400).
    let response = server.set_metadata("meta", json!({"$maxCount": 50})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], server.url("/streams/meta/metadata/0").as_str());
    // The events array form, with the right event type.
    let array = json!([{"eventId": uuid::Uuid::new_v4().to_string(), "eventType": "$metadata", "data": {"$maxCount": 60}}]);
    let response = server
        .client
        .post(server.url("/streams/meta/metadata"))
        .header("content-type", EVENTS_JSON)
        .body(array.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], server.url("/streams/meta/metadata/1").as_str());
    // An ES-EventType header other than $metadata is refused (v5); an
    // events array keeps its own types (see the test below).
    let response = server
        .client
        .post(server.url("/streams/meta/metadata"))
        .header("content-type", "application/json")
        .header("es-eventtype", "Other")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap().lines().next().unwrap(),
        "Bad Request. You should not include an event type for metadata."
    );

    let latest: Value = server.get("/streams/meta/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(latest, json!({"$maxCount": 60}));
    let entry: Value = server.get("/streams/meta/metadata", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(entry["title"], "1@$$meta");
    assert_eq!(entry["content"]["eventType"], "$metadata");
    // The metadata stream is a feed like any other, under its stream.
    let feed: Value =
        server.get("/streams/meta/metadata/0/forward/20", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(feed["id"], server.url("/streams/meta/metadata"));
    assert_eq!(feed["entries"].as_array().unwrap().len(), 2);
    assert_eq!(status(&server, "/streams/meta/metadata/0").await, 200);
    assert_eq!(status(&server, "/streams/%24%24meta").await, 200);
    // Expected versions apply to the metadata stream.
    let response = server
        .client
        .post(server.url("/streams/meta/metadata"))
        .header("content-type", "application/json")
        .header("es-expectedversion", "0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["es-currentversion"], "1");
}

async fn delete(server: &TestServer, stream: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = server.client.delete(server.url(&format!("/streams/{stream}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn soft_delete_then_recreate_continues_numbering() {
    let server = TestServer::start().await;
    server.append_n("soft", 3).await;
    let response = delete(&server, "soft", &[("es-expectedversion", "1")]).await;
    assert_eq!(response.status(), 400, "wrong expected version");
    assert_eq!(response.headers()["es-currentversion"], "2");
    let response = delete(&server, "soft", &[("es-expectedversion", "2")]).await;
    assert_eq!(response.status(), 204);
    for path in ["/streams/soft", "/streams/soft/0", "/streams/soft/head", "/streams/soft/0/forward/20"] {
        assert_eq!(status(&server, path).await, 404, "{path}");
    }
    assert_eq!(delete(&server, "soft", &[]).await.status(), 404, "already deleted");

    // It no longer exists for expected versions either.
    let response = server
        .client
        .post(server.url("/streams/soft"))
        .header("content-type", EVENTS_JSON)
        .header("es-expectedversion", "-1")
        .body(json!([event("Again", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], server.url("/streams/soft/3").as_str(), "numbering continues");
    assert_eq!(visible(&server, "soft").await, [3]);
    assert_eq!(status(&server, "/streams/soft/1").await, 404, "the old events stay deleted");
}

#[tokio::test]
async fn hard_delete_is_forever() {
    let server = TestServer::start().await;
    server.append_n("hard", 2).await;
    let response = delete(&server, "hard", &[("es-harddelete", "maybe")]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap().lines().next().unwrap(),
        "ES-HardDelete header in wrong format."
    );
    assert_eq!(delete(&server, "hard", &[("es-harddelete", "True")]).await.status(), 204);

    let server = server.restart().await;
    for path in [
        "/streams/hard",
        "/streams/hard/0",
        "/streams/hard/head",
        "/streams/hard/0/forward/20",
        "/streams/hard/metadata",
    ] {
        let response = server.get(path, ATOM_JSON).await;
        assert_eq!(response.status(), 410, "{path}");
        assert_eq!(common::reason(response).await, "Deleted");
    }
    let response = server.post_events("hard", &json!([event("T", json!({}))])).await;
    assert_eq!(response.status(), 410);
    assert_eq!(response.text().await.unwrap().lines().next().unwrap(), "Stream deleted");
    assert_eq!(delete(&server, "hard", &[]).await.status(), 410);
    assert_eq!(delete(&server, "hard", &[("es-harddelete", "true")]).await.status(), 410);
    assert_eq!(server.set_metadata("hard", json!({})).await.status(), 410);
    // A stream that never existed can be tombstoned, so its name is never used.
    assert_eq!(delete(&server, "never", &[("es-harddelete", "true")]).await.status(), 204);
    assert_eq!(server.post_events("never", &json!([event("T", json!({}))])).await.status(), 410);
}

#[tokio::test]
async fn ids_of_deleted_events_stay_spent() {
    let server = TestServer::start().await;
    let batch = json!([event("T", json!({"first": true}))]);
    assert_eq!(server.post_events("spent", &batch).await.status(), 201);
    assert_eq!(delete(&server, "spent", &[]).await.status(), 204);
    // Re-sending the deleted event's id is a retry of the original write:
    // 201 with the original Location, and nothing is written.
    let again = server.post_events("spent", &batch).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"], server.url("/streams/spent/0").as_str());
    assert_eq!(status(&server, "/streams/spent").await, 404, "the stream stays deleted");
}

/// v5: `POST /streams/{s}/metadata` with an events array keeps each
/// event's `eventType`, and the last event of `$${s}` is the stream's
/// metadata whatever its type. Clients that set ACLs post
/// `{"eventType": "settings", "data": {"$acl": ...}}` and expect it to take
/// effect: here a `$maxCount` hides old events and a read ACL makes the
/// stream's pages private.
#[tokio::test]
async fn a_metadata_events_array_keeps_its_event_type_and_takes_effect() {
    let server = TestServer::start().await;
    server.append_n("settings-typed", 5).await;
    let settings = json!([{
        "eventId": uuid::Uuid::new_v4().to_string(),
        "eventType": "settings",
        "data": {"$maxCount": 2, "$acl": {"$r": "$admins"}}
    }]);
    let response = server
        .client
        .post(server.url("/streams/settings-typed/metadata"))
        .header("content-type", EVENTS_JSON)
        .body(settings.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], server.url("/streams/settings-typed/metadata/0").as_str());

    let document: Value =
        server.get("/streams/settings-typed/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(document, json!({"$maxCount": 2, "$acl": {"$r": "$admins"}}));
    let entry: Value = server.get("/streams/settings-typed/metadata", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(entry["content"]["eventType"], "settings", "the event keeps the type it was posted with");
    assert_eq!(visible(&server, "settings-typed").await, vec![3, 4], "$maxCount took effect");
    let response = server.get("/streams/settings-typed", ATOM_JSON).await;
    let cache_control = response.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache_control.ends_with(", private"), "the $acl took effect: {cache_control}");

    // Still validated: a bad value in an array of any type is a 400 that
    // names the key, and changes nothing.
    let bad = json!([{"eventId": uuid::Uuid::new_v4().to_string(), "eventType": "settings", "data": {"$maxCount": 0}}]);
    let response = server
        .client
        .post(server.url("/streams/settings-typed/metadata"))
        .header("content-type", EVENTS_JSON)
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(visible(&server, "settings-typed").await, vec![3, 4]);
}
