//! The web UI in a real browser: headless Chromium driven over WebDriver
//! against the real server. Skipped, with a message, when Chromium or
//! chromedriver is missing and `CI` is unset (tests/run installs them).

mod common;

use serde_json::json;

use common::webdriver::Browser;
use common::{TestServer, event, wait_for_waiters};

/// The dashboard shows the head position; a stream's address opened in
/// the browser lands on its view; paging follows the feed's links and
/// back returns; an event shows its data; no view logs an error.
#[tokio::test]
async fn a_browser_reads_the_dashboard_streams_pages_and_events() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("ui-orders", 45).await;
    let info = server.client.get(server.url("/info")).send().await.unwrap();
    let head_position = info.json::<serde_json::Value>().await.unwrap()["nextPosition"].to_string();

    browser.open(&server.url("/")).await;
    assert_eq!(browser.text("#head-position").await, head_position.trim_matches('"'));
    browser.screenshot("dashboard").await;

    browser.open(&server.url("/streams/ui-orders")).await;
    browser.wait_for("location.hash === '#/stream/ui-orders'").await;
    assert_eq!(browser.text("#events tbody tr td").await, "44");
    let rows = browser.wait_for("document.querySelectorAll('#events tbody tr').length").await;
    assert_eq!(rows, 20);
    browser.screenshot("stream").await;

    browser.click("#pager a[rel=next]").await;
    browser.wait_for("document.querySelector('#events tbody tr td')?.innerText === '24'").await;
    browser.run("history.back()", json!([])).await;
    browser.wait_for("document.querySelector('#events tbody tr td')?.innerText === '44'").await;

    browser.click("#events tbody tr a").await;
    browser.wait_for("location.hash === '#/event/ui-orders/44'").await;
    let data: serde_json::Value = serde_json::from_str(&browser.text("#event-data").await).unwrap();
    assert_eq!(data, json!({ "n": 44 }));
    let view = browser.text("#view").await;
    assert!(!view.contains("null") && !view.contains("undefined"), "{view}");
    browser.screenshot("event").await;

    // A page's address (a feed's link) opens that page.
    browser.open(&server.url("/streams/ui-orders/10/forward/5")).await;
    browser.wait_for("document.querySelector('#events tbody tr td')?.innerText === '14'").await;

    browser.open(&server.url("/#/streams")).await;
    browser.wait_for("document.querySelector('#login-form, #streams')").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The append form writes an event any client then reads over the API; a
/// failed read shows its error.
#[tokio::test]
async fn the_append_form_writes_an_event() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    browser.open(&server.url("/#/append/ui-appended")).await;
    browser.fill("#append-form [name=type]", "Typed").await;
    browser.fill("#append-form [name=data]", r#"{"from": "the form"}"#).await;
    browser.click("#append-form button").await;
    assert!(browser.text("#append-result").await.starts_with("Appended"));
    browser.screenshot("append").await;

    let entry = server.get_json("/streams/ui-appended/0").await;
    assert_eq!(entry["content"]["eventType"], "Typed");
    assert_eq!(entry["content"]["data"], json!({ "from": "the form" }));
    assert_eq!(browser.errors().await, Vec::<String>::new());

    // A stream that does not exist says so, rather than a blank page (the
    // console logs the 404 the browser saw).
    browser.open(&server.url("/streams/ui-nothing")).await;
    assert!(browser.text("#view [role=alert]").await.starts_with("404"));
    let errors = browser.errors().await;
    assert!(errors.iter().all(|error| error.contains("status of 404")), "{errors:?}");
}

/// A stream only admins may read asks for a login (the UI's own form, not
/// the browser's dialog), and the right credentials show it.
#[tokio::test]
async fn a_restricted_stream_asks_for_a_login() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    let appended = server.post_events("ui-secret", &json!([event("Hidden", json!({ "secret": 1 }))])).await;
    assert_eq!(appended.status(), 201);
    let restricted = server.set_metadata("ui-secret", json!({ "$acl": { "$r": "$admins" } })).await;
    assert_eq!(restricted.status(), 201);

    browser.open(&server.url("/streams/ui-secret")).await;
    browser.fill("#login-form [name=user]", "admin").await;
    browser.screenshot("login").await;
    browser.fill("#login-form [name=password]", "changeit").await;
    browser.click("#login-form button").await;
    assert_eq!(browser.text("#events tbody tr td:nth-child(2)").await, "Hidden");
    // The login holds for the tab: the streams list (admins only) shows.
    browser.open(&server.url("/#/streams")).await;
    browser
        .wait_for("[...document.querySelectorAll('#streams a')].some((a) => a.innerText === 'ui-secret')")
        .await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The UI's files: the entry page at `/`, modules at `/ui/{file}`, each
/// `no-cache` with a strong ETag (not fingerprinted), a strict CSP, no
/// framing, gzip when asked; an unknown file is a 404. Needs no browser.
#[tokio::test]
async fn the_ui_files_are_served_with_their_headers() {
    let server = TestServer::start().await;
    for (path, content_type) in
        [("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")]
    {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let etag = headers["etag"].to_str().unwrap();
        assert!(etag.starts_with("\"ui-"), "{etag}");
        let again = server.client.get(server.url(path)).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        let gzipped =
            server.client.get(server.url(path)).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(gzipped.headers()["content-encoding"], "gzip", "{path}");
        let weak = gzipped.headers()["etag"].to_str().unwrap().to_owned();
        let revalidated = server
            .client
            .get(server.url(path))
            .header("accept-encoding", "gzip")
            .header("if-none-match", &weak)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304, "{path}: {weak}");
    }
    let missing = server.client.get(server.url("/ui/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// The live tail shows an event another client appends, within seconds.
#[tokio::test]
async fn the_live_tail_shows_new_events() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("ui-live", 1).await;
    browser.open(&server.url("/#/tail/ui-live")).await;
    // The tail starts with the next append: wait until it listens.
    wait_for_waiters(&server.client, &server.base, 1).await;
    let appended = server.post_events("ui-live", &json!([event("Arrived", json!({ "n": 1 }))])).await;
    assert_eq!(appended.status(), 201);
    assert_eq!(browser.text("#tail tbody tr td:nth-child(3)").await, "Arrived");
    assert_eq!(browser.text("#tail tbody tr td").await, "1");
    browser.screenshot("tail").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The entry page preloads every module of `static/` (so a browser fetches
/// them at once instead of one import level after another), and nothing
/// else: a module added without its preload, or a preload left behind by
/// a renamed module (a `404` in the console), fails here.
#[tokio::test]
async fn the_entry_page_preloads_every_module() {
    let server = TestServer::start().await;
    let page = server.client.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    let mut preloaded: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("<link rel=\"modulepreload\" href=\"/ui/"))
        .filter_map(|rest| rest.strip_suffix("\">"))
        .collect();
    preloaded.sort_unstable();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut modules: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".js") && name != "app.js")
        .collect();
    modules.sort_unstable();
    assert_eq!(preloaded, modules);
    for module in preloaded {
        let response = server.client.get(server.url(&format!("/ui/{module}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{module}");
    }
}
