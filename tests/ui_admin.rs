//! The web UI's persistent subscriptions and admin views (`#/subscriptions`,
//! `#/subscription/{s}/{g}`, `#/admin`) in a real browser, against the real
//! server, as `tests/ui.rs` drives the other views; skipped the same way
//! when Chromium or chromedriver is missing.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::subscriptions::Api;
use common::webdriver::Browser;
use common::{TestServer, anonymous_client};

/// Fills and sends the UI's login form, which the view shows for a 401.
async fn log_in(browser: &Browser, login: &str, password: &str) {
    browser.fill("#login-form [name=user]", login).await;
    browser.fill("#login-form [name=password]", password).await;
    browser.click("#login-form button").await;
}

/// Creates an account over the API, as the built-in administrator.
async fn create_user(server: &TestServer, login: &str, groups: &[&str]) {
    let user = json!({ "loginName": login, "groups": groups, "password": "a-password" });
    let response =
        server.client.post(server.url("/users/")).json(&user).send().await.expect("the server answers");
    assert_eq!(response.status(), 201, "create {login}");
}

/// The status of `GET /users/{login}` as that user, with `password`.
async fn own_account_status(server: &TestServer, login: &str, password: &str) -> u16 {
    let request =
        anonymous_client().get(server.url(&format!("/users/{login}"))).basic_auth(login, Some(password));
    request.send().await.expect("the server answers").status().as_u16()
}

/// A message parked by its consumer shows on the list (parked count) and
/// on the group's page (the parked event); the replay button hands it back
/// to the group (delivered again over the API) and shows the server's
/// answer; the page follows live until the parked count is 0.
#[tokio::test]
async fn a_parked_message_shows_and_the_replay_button_replays_it() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let settings = json!({ "maxRetryCount": 5, "minCheckPointCount": 1 });
    let (_, taken) = api.set_up_and_take("ui-parked", "workers", settings, 1, "worker", 1).await;
    let park = format!("/subscriptions/ui-parked/workers/nack/{}?action=park", taken[0].id);
    assert_eq!(api.post_path(&park, "worker").await.status(), 202);
    api.wait_for_info("ui-parked", "workers", "the park", |info| info["parkedMessageCount"] == 1).await;

    browser.open(&server.url("/#/subscriptions")).await;
    log_in(&browser, "admin", "changeit").await;
    let row = "#subscriptions tbody tr";
    assert_eq!(browser.text(&format!("{row} td")).await, "workers");
    assert_eq!(browser.text(&format!("{row} td[data-figure=parked]")).await, "1");
    let checkpoint = browser.text(&format!("{row} td[data-figure=checkpoint]")).await;
    assert!(checkpoint.ends_with(" / 0"), "last known: event 0; {checkpoint}");
    browser.screenshot("subscriptions").await;

    browser.click(&format!("{row} a[href='#/subscription/ui-parked/workers']")).await;
    assert_eq!(browser.text("#parked tbody tr td").await, "0@ui-parked");
    let reason = browser.text("#parked tbody tr td:nth-child(2)").await;
    assert_eq!(reason, "Parked by a consumer (nack with action Park)");
    assert_eq!(browser.text("#group-parked").await, "1");
    browser.screenshot("subscription").await;

    browser.click("#replay").await;
    let answer = browser.text("#replay-result").await;
    assert_eq!(answer, "Success: 1 parked message(s) to replay.");

    // Replayed: the group hands the same message out again.
    let (feed, again) = api.take("ui-parked", "workers", "worker", 5, Some(10)).await;
    assert_eq!(again, taken, "the parked message, with its id");
    api.ack_all(&feed).await;
    api.wait_for_info("ui-parked", "workers", "no parked message", |info| info["parkedMessageCount"] == 0)
        .await;
    // The page is live: it follows without a reload.
    browser.wait_for("document.querySelector('#group-parked')?.innerText === '0'").await;
    browser.wait_for("document.querySelector('#parked tbody')?.children.length === 0").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// The form creates a group with its settings (read back over the API);
/// its page edits them and deletes it after a confirmation naming it.
#[tokio::test]
async fn the_forms_create_edit_and_delete_a_group() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    let api = Api::of(&server);
    browser.open(&server.url("/#/subscriptions")).await;
    log_in(&browser, "admin", "changeit").await;
    browser.wait_for("document.querySelector('#subscriptions')").await;
    browser.fill("#group-form [name=stream]", "ui-orders").await;
    browser.fill("#group-form [name=group]", "billing").await;
    browser.fill("#group-form [name=maxRetryCount]", "3").await;
    browser.fill("#group-form [name=namedConsumerStrategy]", "DispatchToSingle").await;
    browser.click("#group-form button[type=submit]").await;
    assert_eq!(browser.text("#group-result").await, "Created billing on ui-orders.");

    let info = api.info("ui-orders", "billing").await;
    assert_eq!(info["config"]["maxRetryCount"], 3);
    assert_eq!(info["config"]["namedConsumerStrategy"], "DispatchToSingle");
    // The list shows it at once.
    browser
        .wait_for("document.querySelector(\"#subscriptions a[href='#/subscription/ui-orders/billing']\")")
        .await;

    browser.click("#subscriptions a[href='#/subscription/ui-orders/billing']").await;
    browser.fill("#settings-form [name=messageTimeoutMilliseconds]", "2500").await;
    browser.click("#settings-form button[type=submit]").await;
    assert_eq!(browser.text("#settings-result").await, "Settings saved.");
    let config = api.info("ui-orders", "billing").await["config"].clone();
    assert_eq!(config["messageTimeoutMilliseconds"], 2500);
    assert_eq!(config["maxRetryCount"], 3, "the other settings are kept");
    assert_eq!(config["namedConsumerStrategy"], "DispatchToSingle");

    browser.click("#delete").await;
    let confirmation = browser.text("#delete-confirm").await;
    assert!(confirmation.contains("“billing” on “ui-orders”"), "{confirmation}");
    assert_eq!(browser.text("#delete-confirmed").await, "Delete “billing”");
    browser.click("#delete-confirmed").await;
    browser.wait_for("location.hash === '#/subscriptions'").await;
    let info = server.client.get(server.url("/subscriptions/ui-orders/billing/info")).send().await.unwrap();
    assert_eq!(info.status(), 404);
    assert_eq!(browser.errors().await, Vec::<String>::new());

    // A group on `$all` opens like any other (its name is encoded in the address).
    api.create("$all", "ui-everything", json!({})).await;
    browser.click("#subscriptions a[href='#/subscription/%24all/ui-everything']").await;
    // The group's view renders once its first read answers: until then the
    // list's heading is still up.
    browser.wait_for("document.querySelector('#view h1')?.innerText === 'ui-everything on $all'").await;
    assert!(browser.text("#group-status").await.starts_with("Live"));
    browser.run("history.back()", json!([])).await;
    browser.wait_for("document.querySelector('#subscriptions')").await;

    // The list reads itself again while it is open, and stops once left.
    let reads =
        "performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/subscriptions')).length";
    let count = || async { browser.run(&format!("return {reads}"), json!([])).await.as_u64().unwrap() };
    let open = count().await;
    browser.wait_for(&format!("{reads} > {open}")).await;
    browser.run("location.hash = '#/append'", json!([])).await;
    browser.wait_for("document.querySelector('#append-form')").await;
    // A read under way when the view was left may still land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = count().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count().await, left, "no read of /subscriptions after leaving the view");
}

/// The scavenge button starts a scavenge and its report shows, followed
/// live; a user created through the form logs in over the API, and the
/// buttons disable, enable and reset the password of that user.
#[tokio::test]
async fn the_admin_view_scavenges_and_manages_users() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    server.append_n("ui-scavenged", 5).await;
    browser.open(&server.url("/#/admin")).await;
    log_in(&browser, "admin", "changeit").await;

    browser.click("#scavenge").await;
    browser.wait_for("document.querySelector('#scavenge-report')?.innerText.includes('completed')").await;
    let hash = browser.wait_for("location.hash.startsWith('#/admin/scavenge/') && location.hash").await;
    let id = hash.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let report: Value = server.get_json(&format!("/admin/scavenge/{id}")).await;
    assert_eq!(report["status"], "completed");
    assert!(browser.text("#scavenge-report").await.contains("Streams scanned"));

    browser.fill("#user-form [name=login]", "ui-bob").await;
    browser.fill("#user-form [name=fullName]", "Bob Builder").await;
    browser.fill("#user-form [name=groups]", "$ops, builders").await;
    browser.fill("#user-form [name=password]", "first-password").await;
    browser.click("#user-form button[type=submit]").await;
    assert_eq!(browser.text("#users-result").await, "Created ui-bob.");
    let bob = "#users tr[data-login='ui-bob']";
    assert_eq!(browser.text(&format!("{bob} td:nth-child(3)")).await, "$ops, builders");
    assert_eq!(own_account_status(&server, "ui-bob", "first-password").await, 200);
    browser.screenshot("admin").await;

    browser.click(&format!("{bob} button.toggle")).await;
    browser.wait_for("document.querySelector('#users-result')?.innerText === 'ui-bob: disabled.'").await;
    assert_eq!(browser.text(&format!("{bob} td:nth-child(4)")).await, "disabled");
    assert_eq!(own_account_status(&server, "ui-bob", "first-password").await, 401);
    browser.click(&format!("{bob} button.toggle")).await;
    browser.wait_for("document.querySelector('#users-result')?.innerText === 'ui-bob: enabled.'").await;
    assert_eq!(own_account_status(&server, "ui-bob", "first-password").await, 200);

    browser.click(&format!("{bob} summary")).await;
    browser.fill(&format!("{bob} [name=new-password]"), "second-password").await;
    browser.click(&format!("{bob} form.reset button")).await;
    browser
        .wait_for("document.querySelector('#users-result')?.innerText === 'ui-bob: password reset.'")
        .await;
    assert_eq!(own_account_status(&server, "ui-bob", "second-password").await, 200);
    assert_eq!(own_account_status(&server, "ui-bob", "first-password").await, 401);
    assert_eq!(browser.errors().await, Vec::<String>::new());
}

/// A logged-in user without the rights sees who may, not a login form or
/// a broken page: the server refuses with `401 Access denied` (v5's
/// answer), which the views tell apart from "log in".
#[tokio::test]
async fn views_opened_without_the_rights_say_who_may() {
    let Some(browser) = Browser::start().await else { return };
    let server = TestServer::start().await;
    create_user(&server, "ui-plain", &[]).await;
    create_user(&server, "ui-operator", &["$ops"]).await;
    Api::of(&server).create("ui-orders", "billing", json!({})).await;

    browser.open(&server.url("/#/subscriptions")).await;
    log_in(&browser, "ui-plain", "a-password").await;
    let refusal = browser.text("#view [role=alert]").await;
    assert!(refusal.starts_with("Only $admins and $ops may manage persistent subscriptions."), "{refusal}");
    assert!(refusal.contains("User 'ui-plain' may not"), "the server's words: {refusal}");
    browser.open(&server.url("/#/subscription/ui-orders/billing")).await;
    let refusal = browser.text("#view [role=alert]").await;
    assert!(refusal.starts_with("Only $admins and $ops may"), "{refusal}");

    browser.open(&server.url("/#/admin")).await;
    let refusal = browser.text("#users-section [role=alert]").await;
    assert!(refusal.starts_with("Only $admins may manage users."), "{refusal}");
    browser.click("#scavenge").await;
    let refusal = browser.text("#scavenge-result [role=alert]").await;
    assert!(refusal.starts_with("Only $admins and $ops may run scavenges."), "{refusal}");
    browser.screenshot("admin-refused").await;
    assert_eq!(browser.errors().await, Vec::<String>::new());

    // `$ops` may scavenge and manage groups, not users.
    browser.open(&server.url("/#/login")).await;
    browser.open(&server.url("/#/admin")).await;
    log_in(&browser, "ui-operator", "a-password").await;
    let refusal = browser.text("#users-section [role=alert]").await;
    assert!(refusal.starts_with("Only $admins may manage users."), "{refusal}");
    browser.click("#scavenge").await;
    browser.wait_for("document.querySelector('#scavenge-report')?.innerText.includes('completed')").await;
    browser.open(&server.url("/#/subscriptions")).await;
    assert_eq!(browser.text("#subscriptions tbody tr td").await, "billing");
    assert_eq!(browser.errors().await, Vec::<String>::new());
}
