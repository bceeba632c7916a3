//! Browsing in the web UI, in a real browser (headless Chromium over
//! WebDriver, as tests/ui.rs): an event's JSON tree and its place in
//! `$all`, `$ce-` and `$et-`; text and binary payloads; a stream's
//! metadata edited and the stream deleted; the streams filtered by prefix;
//! the live tail of a stream that needs a login, paused and resumed; the
//! keyboard. Also `GET /streams?prefix=`, the listing the filter reads.

mod common;

use serde_json::{Value, json};

use common::webdriver::Browser;
use common::{EVENTS_JSON, TestServer, anonymous_client, event, wait_for_waiters};

/// An event shows its data as a tree, and opens `$all`, `$ce-` and `$et-`
/// at itself: the first row of each is the event.
#[tokio::test]
async fn an_event_opens_at_its_place_in_all_and_the_projections() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("shop-1", 30).await;
    let nested = json!({ "order": { "lines": [{ "sku": "A", "qty": 2 }], "paid": true, "note": null } });
    let appended = server.post_events("shop-2", &json!([event("Placed", nested.clone())])).await;
    assert_eq!(appended.status(), 201);
    server.append_n("shop-1", 30).await;
    // `$all` is for admins.
    browser.open(&server.url("/#/login")).await;
    browser.fill("#login-form [name=user]", "admin").await;
    browser.fill("#login-form [name=password]", "changeit").await;
    browser.click("#login-form button").await;

    browser.open(&server.url("/#/event/shop-2/0")).await;
    browser.wait_for("document.querySelector('#event-data-tree')").await;
    // Deeper levels start collapsed: their text is in the page, not shown.
    let tree = browser.run("return document.querySelector('#event-data-tree').textContent", json!([])).await;
    let tree = tree.as_str().unwrap();
    assert!(tree.contains("\"sku\"") && tree.contains("\"A\"") && tree.contains("true"), "{tree}");
    let raw = browser.run("return document.querySelector('#event-data').textContent", json!([])).await;
    let raw: Value = serde_json::from_str(raw.as_str().unwrap()).unwrap();
    assert_eq!(raw, nested);
    browser.screenshot("event-tree").await;

    let single = server.get("/streams/shop-2/0", common::ATOM_JSON).await;
    let position = single.headers()["es-position"].to_str().unwrap().to_owned();
    assert_eq!(position.len(), 32, "{position}");

    for (link, stream) in [("#in-all", "$all"), ("#in-ce", "$ce-shop"), ("#in-et", "$et-Placed")] {
        browser.open(&server.url("/#/event/shop-2/0")).await;
        browser.click(&format!(".places {link}")).await;
        let hash = format!("#/stream/{}/", stream.replace('$', "%24"));
        browser
            .wait_for(&format!(
                "location.hash.startsWith({hash:?}) && document.querySelector('#events tbody tr')"
            ))
            .await;
        let first_row = browser.text("#events tbody tr").await;
        assert!(first_row.contains("shop-2") && first_row.contains("Placed"), "{stream}: {first_row}");
    }
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// Non-JSON data shows as text, bytes that are not UTF-8 as a hex dump.
#[tokio::test]
async fn text_and_binary_payloads_are_shown_as_they_are() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    for (stream, body) in
        [("raw-text", b"plain words, not JSON".to_vec()), ("raw-bytes", vec![0, 159, 146, 150, 255])]
    {
        let response = server
            .client
            .post(server.url(&format!("/streams/{stream}")))
            .header("content-type", "application/octet-stream")
            .header("es-eventtype", "Raw")
            .header("es-eventid", uuid::Uuid::new_v4().to_string())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{stream}");
    }
    browser.open(&server.url("/#/event/raw-text/0")).await;
    assert_eq!(browser.text("#event-data").await, "plain words, not JSON");
    browser.open(&server.url("/#/event/raw-bytes/0")).await;
    // Only the hash changed: wait for the view to show the new event.
    let dump = browser.wait_for("document.querySelector('#event-data')?.innerText.startsWith('0000') && document.querySelector('#event-data').innerText").await;
    assert!(dump.as_str().unwrap().starts_with("00000000  00 9f 92 96 ff"), "{dump}");
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// Metadata edited in the UI is the stream's metadata over the API; the
/// delete button waits for the stream's name, and then deletes it.
#[tokio::test]
async fn metadata_is_edited_and_a_stream_deleted_from_its_page() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("kept", 3).await;
    let restricted = server.set_metadata("kept", json!({ "$acl": { "$w": "$admins" } })).await;
    assert_eq!(restricted.status(), 201);
    browser.open(&server.url("/#/login")).await;
    browser.fill("#login-form [name=user]", "admin").await;
    browser.fill("#login-form [name=password]", "changeit").await;
    browser.click("#login-form button").await;

    browser.open(&server.url("/#/stream/kept")).await;
    assert!(browser.text("#acl").await.contains("$admins"));
    browser.fill("#metadata-form textarea", r#"{"$maxCount": 2, "$acl": {"$w": "$admins"}}"#).await;
    browser.click("#metadata-form button").await;
    assert_eq!(browser.text("#metadata-result").await, "Metadata saved.");
    let metadata: Value =
        server.get("/streams/kept/metadata", "application/json").await.json().await.unwrap();
    assert_eq!(metadata["$maxCount"], 2);
    browser.screenshot("stream-metadata").await;

    let disabled = "document.querySelector('#delete-form button').disabled";
    assert_eq!(browser.run(&format!("return {disabled}"), json!([])).await, true);
    browser.fill("#delete-form [name=confirm]", "kep").await;
    assert_eq!(browser.run(&format!("return {disabled}"), json!([])).await, true);
    browser.fill("#delete-form [name=confirm]", "kept").await;
    assert_eq!(browser.run(&format!("return {disabled}"), json!([])).await, false);
    browser.click("#delete-form button").await;
    assert!(browser.text("#delete-result").await.contains("deleted"));
    let gone = server.get("/streams/kept", common::ATOM_JSON).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The streams view filters by prefix (name order, paged by name) and
/// lists the newest first without one.
#[tokio::test]
async fn streams_are_filtered_by_prefix() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    for stream in ["Order-2", "Order-1", "Invoice-1", "Order-3"] {
        server.append_n(stream, 1).await;
    }
    browser.open(&server.url("/#/login")).await;
    browser.fill("#login-form [name=user]", "admin").await;
    browser.fill("#login-form [name=password]", "changeit").await;
    browser.click("#login-form button").await;
    browser.open(&server.url("/#/streams")).await;
    assert_eq!(browser.text("#streams tbody tr td").await, "Order-3");
    browser.fill("#stream-filter", "Order-").await;
    browser.click("#streams-filter button").await;
    browser.wait_for("location.hash === '#/streams/prefix/Order-'").await;
    let names = browser
        .wait_for("[...document.querySelectorAll('#streams tbody tr td:first-child')].map((td) => td.innerText).join(',') || null")
        .await;
    assert_eq!(names, "Order-1,Order-2,Order-3");
    browser.screenshot("streams-filter").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The tail of a stream only admins may read works once logged in (it
/// reads Server-Sent Events with the login); paused, it counts but does
/// not draw; resumed, it draws the newest.
#[tokio::test]
async fn a_restricted_stream_is_tailed_and_paused() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("secret-tail", 1).await;
    let restricted = server.set_metadata("secret-tail", json!({ "$acl": { "$r": "$admins" } })).await;
    assert_eq!(restricted.status(), 201);
    browser.open(&server.url("/#/tail/secret-tail")).await;
    browser.fill("#login-form [name=user]", "admin").await;
    browser.fill("#login-form [name=password]", "changeit").await;
    browser.click("#login-form button").await;
    wait_for_waiters(&server.client, &server.base, 1).await;
    let appended = server.post_events("secret-tail", &json!([event("Seen", json!({}))])).await;
    assert_eq!(appended.status(), 201);
    assert_eq!(browser.text("#tail tbody tr td:nth-child(3)").await, "Seen");

    browser.click("#tail-pause").await;
    let appended = server.post_events("secret-tail", &json!([event("WhilePaused", json!({}))])).await;
    assert_eq!(appended.status(), 201);
    browser.wait_for("window.tailStats.received === 2").await;
    assert_eq!(browser.run("return document.querySelectorAll('#tail tbody tr').length", json!([])).await, 1);
    browser.click("#tail-pause").await;
    assert_eq!(browser.text("#tail tbody tr td:nth-child(3)").await, "WhilePaused");
    browser.screenshot("tail-paused").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// `j` selects a row and Enter opens it; `n` follows the pager; `?`
/// shows the keys.
#[tokio::test]
async fn the_keyboard_moves_through_pages_and_rows() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("keys", 45).await;
    browser.open(&server.url("/#/stream/keys")).await;
    browser.wait_for("document.querySelector('#events tbody tr td')?.innerText === '44'").await;
    browser.press("n").await;
    browser.wait_for("document.querySelector('#events tbody tr td')?.innerText === '24'").await;
    browser.press("jj\u{E007}").await;
    browser.wait_for("location.hash === '#/event/keys/23'").await;
    browser.press("?").await;
    assert!(browser.text("#help").await.contains("next / previous page"));
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// `GET /streams?prefix=`: names in order, paged by the last one, admins
/// only, a bad count refused.
#[tokio::test]
async fn streams_are_listed_by_prefix_over_the_api() {
    let server = TestServer::start().await;
    for stream in ["cat-b", "cat-a", "dog-a", "cat-c"] {
        let body = json!([event("E", json!({}))]).to_string();
        let response = server
            .client
            .post(server.url(&format!("/streams/{stream}")))
            .header("content-type", EVENTS_JSON)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let first = server.get_json("/streams?prefix=cat-&count=2").await;
    let names: Vec<_> = first["streams"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("cat-a"), json!("cat-b")]);
    assert_eq!(first["streams"][0]["lastEventNumber"], 0);
    let next = first["next"].as_str().unwrap();
    assert_eq!(next, "/streams?prefix=cat%2D&after=cat%2Db&count=2");
    let second = server.get_json(next).await;
    let names: Vec<_> = second["streams"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("cat-c")]);
    assert_eq!(second["next"], Value::Null);

    let anonymous = anonymous_client().get(server.url("/streams?prefix=cat-")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let too_many = server.client.get(server.url("/streams?count=5000")).send().await.unwrap();
    assert_eq!(too_many.status(), 400);
}
