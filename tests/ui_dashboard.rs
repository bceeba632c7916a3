//! The web UI's dashboard in a real browser (headless Chromium over
//! WebDriver, as in tests/ui.rs): after appends it shows the head
//! position, the number of streams and of events that `GET /info` gives,
//! keeps them current while it is open, draws its rate chart, and stops
//! reading `/info` once another view opens. Skipped, with a message, when
//! Chromium or chromedriver is missing and `CI` is unset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};

use common::TestServer;
use common::webdriver::Browser;

async fn info(server: &TestServer) -> Value {
    server.client.get(server.url("/info")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_the_servers_figures_and_a_live_chart() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("dash-orders", 30).await;
    server.append_n("dash-payments", 12).await;
    let info = info(&server).await;

    browser.open(&server.url("/")).await;
    assert_eq!(browser.text("#head-position").await, info["nextPosition"].to_string());
    let shown = |id: &str| format!("document.getElementById('{id}')?.dataset.value");
    assert_eq!(browser.wait_for(&shown("stream-count")).await, "2");
    assert_eq!(browser.wait_for(&shown("event-count")).await, info["events"].to_string().as_str());
    assert_eq!(info["streams"], 2);

    // The chart is an SVG with one line per rate, built without markup.
    let lines =
        browser.wait_for("document.querySelectorAll('svg#rates-chart polyline.chart-line').length").await;
    assert_eq!(lines, 2);

    // Open, it keeps reading /info: an append shows without a reload.
    server.append_n("dash-refunds", 3).await;
    browser.wait_for(&format!("{} === '3'", shown("stream-count"))).await;
    let now = self::info(&server).await;
    browser
        .wait_for(&format!(
            "document.getElementById('head-position').innerText === '{}'",
            now["nextPosition"]
        ))
        .await;

    // Once the rates have two samples (10 s), the lines have segments.
    for n in 0..5 {
        server.get_json(&format!("/streams/dash-orders/{n}")).await;
    }
    let segment = |line: &str| {
        format!(
            "document.querySelector('svg#rates-chart polyline.{line}').getAttribute('points').includes(' ')"
        )
    };
    browser.wait_for(&segment("appends")).await;
    browser.wait_for(&segment("reads")).await;
    browser.screenshot("dashboard").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());

    // Another view stops the refresh: no more calls to /info once it opens.
    browser.run("window.location.hash = '#/append/dash-orders'", json!([])).await;
    browser.wait_for("document.querySelector('#append-form')").await;
    // (A call in flight as it opened may still land: give it a second.)
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let info_calls = "return performance.getEntriesByType('resource').filter((entry) => entry.name.endsWith('/info')).length";
    let calls_when_left = browser.run(info_calls, json!([])).await;
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert_eq!(browser.run(info_calls, json!([])).await, calls_when_left);
    assert!(browser.run("return !!document.querySelector('#append-form')", json!([])).await == true);
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// A warning an operator must act on is at the top, as an alert: here the
/// built-in accounts' default passwords.
#[tokio::test]
async fn the_dashboard_warns_of_default_passwords() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    let info = info(&server).await;
    assert!(!info["defaultPasswords"].as_array().unwrap().is_empty(), "{info}");
    browser.open(&server.url("/")).await;
    let warning = browser.text("#dashboard-warnings [role=alert]").await;
    assert!(warning.starts_with("Default password still set for"), "{warning}");
    assert_eq!(browser.errors().await, Vec::<String>::new());
}
