//! Story 6, checking out the past (time-travel debugging). Proves solved
//! what a team needed to debug an incident: as version control checks out
//! code at a point in its history, read the log as it was at a point in
//! time and rebuild the state just before the incident, with one request
//! per page (`?asOf=`, a `$all` position or a time) instead of reading
//! everything and filtering on the client.
//!
//! Accounts take deposits and withdrawals while a projection follows
//! `$ce-Account` live; then a bad event (a withdrawal far below zero) is
//! appended, and more traffic after it. A projection rebuilt from pages
//! read as of the position just before the bad event (in `$all`'s hex form
//! and in decimal), and as of the time of the last event before it, equals
//! the live projection's state then; rebuilt from `$all` too; as of the
//! bad event's own position it differs by exactly that event. The pages'
//! links keep the bound; pages as of a settled bound are immutable, and
//! read twice through Varnish the second read is a hit. The edge cases
//! (bad bounds, streams that did not exist then or were deleted since,
//! unsettled bounds, long-polls, access checks) are the last test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::pages::{Walk, link};
use common::varnish::{Chain, is_cache_hit};
use common::{ATOM_JSON, ATOM_XML, TestServer, anonymous_client, client, header, reason};
use reqwest::Client;
use serde_json::{Value, json};

const ACCOUNTS: usize = 20;

/// Movements before the bad event, and after it.
const BEFORE: usize = 300;
const AFTER: usize = 100;

const IMMUTABLE: &str = "max-age=31536000, public";

type Balances = BTreeMap<String, i64>;

/// Movement `n`: a deposit, or every fourth a small withdrawal.
fn movement(n: usize) -> (String, Value) {
    let account = format!("Account-{}", n % ACCOUNTS);
    let (event_type, amount) = if n % 4 == 3 { ("Withdrawn", n % 7) } else { ("Deposited", 10 + n % 5) };
    let event =
        json!([{"eventId": uuid::Uuid::new_v4(), "eventType": event_type, "data": {"amount": amount}}]);
    (account, event)
}

/// The projection: each account's balance.
fn apply(balances: &mut Balances, entry: &Value) {
    let stream = entry["streamId"].as_str().unwrap();
    if !stream.starts_with("Account-") {
        return;
    }
    let data: Value = serde_json::from_str(entry["data"].as_str().unwrap()).unwrap();
    let amount = data["amount"].as_i64().unwrap();
    let balance = balances.entry(stream.to_owned()).or_insert(0);
    match entry["eventType"].as_str().unwrap() {
        "Deposited" => *balance += amount,
        "Withdrawn" => *balance -= amount,
        other => panic!("an unknown event type {other}"),
    }
}

async fn append(server: &TestServer, stream: &str, events: &Value) -> String {
    let response = server.post_events(stream, events).await;
    assert_eq!(response.status(), 201);
    header(&response, "location").unwrap()
}

/// The `$all` position of the event at `location` (its `ES-Position`).
async fn position_of(client: &Client, location: &str) -> u64 {
    let response = client.get(location).header("accept", "application/json").send().await.unwrap();
    let position = header(&response, "es-position").unwrap();
    u64::from_str_radix(&position[..16], 16).unwrap()
}

/// The projection rebuilt from `stream` read as of `as_of`: forward pages
/// from the start, following the links the pages carry, which must keep
/// the bound.
async fn rebuild_as_of(client: &Client, base: &str, stream: &str, as_of: &str) -> Balances {
    let start = format!("{base}/streams/{stream}/0/forward/20?asOf={as_of}");
    let start = if stream == "$all" { start.replace("/0/", &format!("/{}/", "0".repeat(32))) } else { start };
    let pages = Walk::forward(client, start).query("&embed=body").pages().await;
    for page in pages.iter() {
        assert!(page.url.contains("asOf="), "the links keep the bound: {}", page.url);
    }
    let mut balances = Balances::new();
    for entry in pages.entries() {
        apply(&mut balances, entry);
    }
    balances
}

#[tokio::test]
async fn a_projection_rebuilt_as_of_before_the_bad_event_equals_the_live_one_then() {
    let server = TestServer::start().await;
    let admin = client();
    for n in 0..BEFORE {
        let (account, events) = movement(n);
        append(&server, &account, &events).await;
    }
    // The projection following the category live, up to the bad event.
    let live_pages = Walk::forward(&admin, server.url("/streams/$ce-Account/0/forward/50"))
        .query("?embed=body")
        .pages()
        .await;
    let mut live = Balances::new();
    for entry in live_pages.entries() {
        apply(&mut live, entry);
    }
    assert_eq!(live.len(), ACCOUNTS);
    let last_before: Value = server.get_json("/streams/$ce-Account/head").await;
    // The bad event is created strictly after the last one before it.
    tokio::time::sleep(Duration::from_millis(5)).await;

    let bad =
        json!([{"eventId": uuid::Uuid::new_v4(), "eventType": "Withdrawn", "data": {"amount": 1_000_000}}]);
    let location = append(&server, "Account-7", &bad).await;
    for n in BEFORE..BEFORE + AFTER {
        let (account, events) = movement(n);
        append(&server, &account, &events).await;
    }
    let bad_position = position_of(&admin, &location).await;
    let just_before = bad_position - 1;
    let hex = format!("{just_before:016X}{just_before:016X}");
    let time = last_before["updated"].as_str().unwrap().to_owned();

    let base = &server.base;
    assert_eq!(rebuild_as_of(&admin, base, "$ce-Account", &hex).await, live, "as of {hex}");
    assert_eq!(rebuild_as_of(&admin, base, "$ce-Account", &just_before.to_string()).await, live);
    assert_eq!(rebuild_as_of(&admin, base, "$ce-Account", &time).await, live, "as of {time}");
    assert_eq!(rebuild_as_of(&admin, base, "$all", &hex).await, live, "from $all");
    // The live projection now has the bad event and what followed; as of
    // the bad event itself, exactly the bad event more.
    let now = rebuild_as_of(&admin, base, "$ce-Account", &format!("{}", u64::MAX)).await;
    assert_ne!(now, live);
    let mut with_bad = live.clone();
    *with_bad.get_mut("Account-7").unwrap() -= 1_000_000;
    assert_eq!(rebuild_as_of(&admin, base, "$ce-Account", &bad_position.to_string()).await, with_bad);

    // One account's stream as of then, walked backward from its head page
    // as of then: the events the live projection had seen, newest first.
    let seen: Vec<Value> =
        live_pages.entries().into_iter().filter(|e| e["streamId"] == "Account-7").cloned().collect();
    let head = format!("{base}/streams/Account-7/head/backward/4?asOf={hex}");
    let backward = Walk::backward(&admin, head).pages().await;
    assert!(backward.len() > 1, "several pages");
    let titles: Vec<String> = seen.iter().map(|e| format!("{}@Account-7", e["eventNumber"])).collect();
    assert_eq!(backward.titles(), titles);
    let first = &backward[0].body;
    assert_eq!(first["headOfStream"], true, "the head as of then");
    for relation in ["self", "first", "last", "next", "previous"] {
        assert!(link(first, relation).unwrap().contains(&format!("asOf={hex}")), "{relation}: {first:#}");
    }
    assert!(!link(first, "metadata").unwrap().contains("asOf"));
}

#[tokio::test]
async fn pages_as_of_a_settled_bound_are_immutable_and_cached() {
    let chain = Chain::start().await;
    let server = &chain.server;
    for n in 0..40 {
        let (account, events) = movement(n);
        append(server, &account, &events).await;
    }
    // Account-3 got movements 3 and 23: as of the position of its first
    // event it has that one only.
    let first_position = position_of(&client(), &server.url("/streams/Account-3/0")).await;
    for path in [
        format!("/streams/Account-3?asOf={first_position}"),
        format!("/streams/Account-3/0/forward/20?asOf={first_position}"),
    ] {
        let path = path.as_str();
        for accept in [ATOM_JSON, ATOM_XML] {
            let (status, first, body) = chain.get(path, &[("accept", accept)]).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(header(&first, "cache-control").as_deref(), Some(IMMUTABLE), "{path}");
            assert_eq!(header(&first, "etag"), None);
            assert!(!is_cache_hit(&first));
            let (_, second, again) = chain.get(path, &[("accept", accept)]).await;
            assert!(is_cache_hit(&second), "the second read is a hit: {second:?}");
            assert_eq!(again, body);
            if accept == ATOM_JSON {
                let page: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(common::pages::titles(page["entries"].as_array().unwrap()), ["0@Account-3"]);
            } else {
                assert!(body.contains("0@Account-3") && !body.contains("1@Account-3"), "{body}");
                assert!(body.contains(&format!("asOf={first_position}")), "Atom links keep it: {body}");
            }
        }
        assert_eq!(chain.backend_requests(path).len(), 2, "eventfeed was asked once per representation");
    }
}

/// What a read answers, for the edge cases.
async fn status(client: &Client, url: &str) -> (u16, Option<String>, Option<String>) {
    let response = client.get(url).header("accept", ATOM_JSON).send().await.unwrap();
    let (cache_control, etag) = (header(&response, "cache-control"), header(&response, "etag"));
    (response.status().as_u16(), cache_control, etag)
}

#[tokio::test]
async fn bounds_are_checked_and_pages_as_of_them_keep_the_rules_of_reads() {
    let server = TestServer::start().await;
    let (admin, anonymous) = (client(), anonymous_client());
    server.append_n("Other-1", 1).await;
    let first = append(
        &server,
        "Ledger-1",
        &json!([{"eventId": uuid::Uuid::new_v4(), "eventType": "Opened", "data": {}}]),
    )
    .await;
    let opened = position_of(&admin, &first).await;
    server.append_n("Ledger-1", 3).await;
    server.append_n("Ledger-2", 2).await;
    let url = |path: &str| server.url(path);

    // Bad bounds: 400, naming the value; on pages of every kind.
    for (path, bad) in [
        ("/streams/Ledger-1", "yesterday"),
        ("/streams/Ledger-1/0/forward/20", "2026-13-01T00:00:00Z"),
        ("/streams/$all", "-1"),
        ("/streams/$ce-Ledger", "0x10"),
        ("/streams/Ledger-1", "2026-11-01T12:00:00"),
    ] {
        let response =
            admin.get(url(&format!("{path}?asOf={bad}"))).header("accept", ATOM_JSON).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path} {bad}");
        assert_eq!(reason(response).await, format!("Invalid asOf argument: {bad}"));
    }
    assert_eq!(status(&admin, &url("/streams/Ledger-1?asOf=")).await.0, 400);
    // Routes that show no page refuse it rather than answer from the present.
    for path in ["/streams/Ledger-1/0", "/streams/Ledger-1/head", "/streams/Ledger-1/metadata"] {
        assert_eq!(status(&admin, &url(&format!("{path}?asOf=0"))).await.0, 400, "{path}");
    }

    // Before the stream's first event it did not exist; nor does one
    // never written, nor one deleted since (hard: 410, as now).
    assert_eq!(status(&admin, &url(&format!("/streams/Ledger-1?asOf={}", opened - 1))).await.0, 404);
    assert_eq!(status(&admin, &url(&format!("/streams/Ledger-1?asOf={opened}"))).await.0, 200);
    assert_eq!(status(&admin, &url("/streams/Ledger-1?asOf=1970-01-01T00:00:00Z")).await.0, 404);
    assert_eq!(status(&admin, &url(&format!("/streams/Nothing-1?asOf={opened}"))).await.0, 404);
    server.append_n("Gone-1", 1).await;
    server.append_n("Gone-2", 1).await;
    let gone = admin.delete(url("/streams/Gone-1")).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    let hard = admin.delete(url("/streams/Gone-2")).header("es-harddelete", "true").send().await.unwrap();
    assert_eq!(hard.status(), 204);
    assert_eq!(status(&admin, &url("/streams/Gone-1?asOf=1000000")).await.0, 404);
    assert_eq!(status(&admin, &url("/streams/Gone-2?asOf=1000000")).await.0, 410);

    // A bound not reached yet: the page is live, and its ETag is its own.
    let ahead = "/streams/Ledger-1?asOf=1000000";
    let (code, cache_control, etag) = status(&admin, &url(ahead)).await;
    assert_eq!(code, 200);
    assert_eq!(cache_control.as_deref(), Some("max-age=0, no-cache, must-revalidate"));
    let (_, _, live_etag) = status(&admin, &url("/streams/Ledger-1")).await;
    assert!(etag.is_some() && etag != live_etag, "{etag:?} vs {live_etag:?}");
    let response = admin
        .get(url(ahead))
        .header("accept", ATOM_JSON)
        .header("if-none-match", etag.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    // A time not reached yet, likewise; one in the past of this log is settled.
    let future = status(&admin, &url("/streams/Ledger-1?asOf=2999-01-01T00:00:00Z")).await;
    assert_eq!((future.0, future.1.as_deref()), (200, Some("max-age=0, no-cache, must-revalidate")));
    let page: Value = server.get_json(&format!("/streams/Ledger-1?asOf={opened}")).await;
    let past = page["updated"].as_str().unwrap().to_owned();
    let settled = status(&admin, &url(&format!("/streams/Ledger-1?asOf={past}"))).await;
    assert_eq!((settled.0, settled.1.as_deref()), (200, Some(IMMUTABLE)), "as of {past}");
    assert_eq!(
        status(&anonymous, &url(&format!("/streams/Ledger-1?asOf={opened}"))).await.1.as_deref(),
        Some(IMMUTABLE)
    );

    // Forward, backward and head pages as of a bound, of a stream, a
    // category and $all: only what was committed then, links keeping it.
    let at = format!("{:016X}{:016X}", opened + 2, opened + 2);
    let forward: Value = server.get_json(&format!("/streams/Ledger-1/0/forward/2?asOf={at}")).await;
    assert_eq!(common::pages::titles(forward["entries"].as_array().unwrap()), ["1@Ledger-1", "0@Ledger-1"]);
    assert_eq!(forward["headOfStream"], false);
    let onwards = link(&forward, "previous").unwrap();
    assert!(onwards.ends_with(&format!("/streams/Ledger-1/2/forward/2?asOf={at}")), "{onwards}");
    let last: Value =
        anonymous.get(&onwards).header("accept", ATOM_JSON).send().await.unwrap().json().await.unwrap();
    assert_eq!(common::pages::titles(last["entries"].as_array().unwrap()), ["2@Ledger-1"]);
    assert_eq!(last["headOfStream"], true);
    let end = link(&last, "previous").unwrap();
    let empty: Value =
        anonymous.get(&end).header("accept", ATOM_JSON).send().await.unwrap().json().await.unwrap();
    assert!(
        empty["entries"].as_array().unwrap().is_empty() && link(&empty, "previous").is_none(),
        "{empty:#}"
    );
    let category: Value = server.get_json(&format!("/streams/$ce-Ledger?asOf={at}")).await;
    assert_eq!(category["entries"].as_array().unwrap().len(), 3, "{category:#}");
    let all: Value = server.get_json(&format!("/streams/$all?asOf={at}&embed=rich")).await;
    assert!(all["entries"][0]["title"] == "2@Ledger-1", "{all:#}");
    assert!(link(&all, "previous").unwrap().contains(&format!("asOf={at}")), "{all:#}");
    let backward: Value = server.get_json(&format!("/streams/Ledger-1/9/backward/20?asOf={at}")).await;
    assert_eq!(
        common::pages::titles(backward["entries"].as_array().unwrap()),
        ["2@Ledger-1", "1@Ledger-1", "0@Ledger-1"]
    );
    // HEAD answers as GET does, without a body.
    let head = admin.head(url(&format!("/streams/Ledger-1?asOf={at}"))).send().await.unwrap();
    assert_eq!((head.status().as_u16(), header(&head, "cache-control").as_deref()), (200, Some(IMMUTABLE)));

    // A forward page as of a bound is never long-polled: it shows the past.
    let started = Instant::now();
    let polled = admin
        .get(url(&format!("/streams/Ledger-1/9/forward/20?asOf={}", u64::MAX)))
        .header("accept", ATOM_JSON)
        .header("es-longpoll", "30")
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(20), "answered without waiting");

    // Access: a denied read stays denied, and never says whether the
    // stream existed then.
    server.append_n("Secret-1", 2).await;
    let response = server.set_metadata("Secret-1", json!({"$acl": {"$r": "$admins"}})).await;
    assert_eq!(response.status(), 201);
    for bound in ["0".to_owned(), "1000000".to_owned(), opened.to_string()] {
        let path = url(&format!("/streams/Secret-1?asOf={bound}"));
        assert_eq!(status(&anonymous, &path).await.0, 401, "{bound}");
        assert_eq!(status(&anonymous, &url(&format!("/streams/$all?asOf={bound}"))).await.0, 401);
    }
    assert_eq!(status(&admin, &url("/streams/Secret-1?asOf=0")).await.0, 404);
    assert_eq!(
        status(&admin, &url("/streams/Secret-1?asOf=1000000")).await.1.as_deref(),
        Some("max-age=0, no-cache, must-revalidate, private")
    );
}
