//! Multi-stream appends (`POST /streams`) and the uniqueness recipe they
//! make possible: an account and the reservation of its email are written
//! in one append, each stream with its own expected version, so a second
//! sign-up with the same email gets a synchronous `409` and writes
//! nothing, with no lock service or second database beside the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{BinaryServer, TestServer, client, read_all_events};
use reqwest::Client;
use serde_json::{Value, json};
use uuid::Uuid;

/// One part of a multi-stream append.
fn part(stream: &str, expected: i64, event_type: &str, id: Uuid, data: Value) -> Value {
    json!({
        "stream": stream,
        "expectedVersion": expected,
        "events": [{ "eventId": id, "eventType": event_type, "data": data }],
    })
}

/// A sign-up: the account and the reservation of its email, both new.
fn sign_up(account: &str, email: &str, ids: (Uuid, Uuid)) -> Value {
    json!([
        part(&format!("Account-{account}"), -1, "AccountCreated", ids.0, json!({ "email": email })),
        part(&format!("Email-{email}"), -1, "EmailReserved", ids.1, json!({ "account": account })),
    ])
}

async fn post(client: &Client, base: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
    let response = client
        .post(format!("{base}/streams"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Every event's data in a stream, parsed.
async fn datas(client: &Client, base: &str, stream: &str) -> Vec<Value> {
    read_all_events(client, base, stream)
        .await
        .iter()
        .map(|event| serde_json::from_str(event["data"].as_str().unwrap()).unwrap())
        .collect()
}

/// Every account and every reservation agree: each account's email is
/// reserved for it, and each email is reserved at most once.
async fn assert_consistent(client: &Client, base: &str, accounts: &[String], emails: &[String]) -> usize {
    let mut created = 0;
    for account in accounts {
        let events = datas(client, base, &format!("Account-{account}")).await;
        if let Some(first) = events.first() {
            created += 1;
            let email = first["email"].as_str().unwrap();
            let reserved = datas(client, base, &format!("Email-{email}")).await;
            assert_eq!(reserved.len(), 1, "{email} is reserved once");
            assert_eq!(reserved[0]["account"], account.as_str(), "and for the account that has it");
        }
    }
    for email in emails {
        let reserved = datas(client, base, &format!("Email-{email}")).await;
        for reservation in reserved {
            let account = reservation["account"].as_str().unwrap();
            let events = datas(client, base, &format!("Account-{account}")).await;
            assert_eq!(events.len(), 1, "no reservation without its account");
        }
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sign_ups_for_twenty_emails_make_exactly_twenty_accounts() {
    let server = TestServer::start().await;
    let emails: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
    let accounts: Vec<String> = (0..200).map(|_| Uuid::new_v4().simple().to_string()).collect();
    let (created, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (base, emails, accounts) = (server.base.clone(), emails.clone(), accounts.clone());
        let (created, refused) = (Arc::clone(&created), Arc::clone(&refused));
        tasks.push(tokio::spawn(async move {
            let client = client();
            for n in (task..200).step_by(8) {
                let body = sign_up(&accounts[n], &emails[n % 20], (Uuid::new_v4(), Uuid::new_v4()));
                let (status, answer) = post(&client, &base, &body).await.unwrap();
                match status {
                    201 => created.fetch_add(1, Ordering::Relaxed),
                    409 => {
                        let conflicts = answer["conflicts"].as_array().unwrap();
                        assert_eq!(conflicts.len(), 1, "only the email is taken: {answer}");
                        assert_eq!(conflicts[0]["stream"], format!("Email-{}", emails[n % 20]));
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("sign-up answered {other}: {answer}"),
                };
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!((created.load(Ordering::Relaxed), refused.load(Ordering::Relaxed)), (20, 180));
    let client = client();
    assert_eq!(assert_consistent(&client, &server.base, &accounts, &emails).await, 20);
    let accounts_seen = read_all_events(&client, &server.base, "$ce-Account").await;
    assert_eq!(accounts_seen.len(), 20, "no account of a refused sign-up, even in projections");
}

/// The same through `kill -9` in the middle: a sign-up whose answer was
/// lost is sent again, ids and all, after the restart; it is either the
/// original outcome (it was written) or written now, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_stay_unique_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let emails: Vec<String> = (0..20).map(|i| format!("crash{i}@example.com")).collect();
    let requests: Vec<(String, Value)> = (0..200)
        .map(|n| {
            let account = Uuid::new_v4().simple().to_string();
            let body = sign_up(&account, &emails[n % 20], (Uuid::new_v4(), Uuid::new_v4()));
            (account, body)
        })
        .collect();
    let client = client();
    let mut answered: HashMap<usize, u16> = HashMap::new();
    let kill_after = 60;
    for (n, (_, body)) in requests.iter().enumerate().take(kill_after) {
        answered.insert(n, post(&client, &server.base, body).await.unwrap().0);
    }
    // Killed with sign-ups in flight: their answers are lost.
    let in_flight: Vec<_> = (kill_after..kill_after + 8)
        .map(|n| {
            let (base, body) = (server.base.clone(), requests[n].1.clone());
            tokio::spawn(async move { post(&common::client(), &base, &body).await.ok() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.kill9();
    for task in in_flight {
        let _ = task.await;
    }

    let server = BinaryServer::start(&data_dir, &[]);
    for (n, (_, body)) in requests.iter().enumerate().skip(kill_after) {
        answered.insert(n, post(&client, &server.base, body).await.unwrap().0);
    }
    // Answers from before the crash still hold when repeated.
    for (n, (_, body)) in requests.iter().enumerate().take(kill_after) {
        assert_eq!(post(&client, &server.base, body).await.unwrap().0, answered[&n], "request {n} again");
    }
    let created = answered.values().filter(|status| **status == 201).count();
    assert_eq!(created, 20, "{answered:?}");
    assert!(answered.values().all(|status| [201, 409].contains(status)));
    let accounts: Vec<String> = requests.iter().map(|(account, _)| account.clone()).collect();
    assert_eq!(assert_consistent(&client, &server.base, &accounts, &emails).await, 20);
}

/// Changing an email reserves the new one and releases the old one in the
/// same append as the account's change; a released email is taken again by
/// stating the reservation stream's version. Of 50 concurrent changes of
/// one account, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_change_frees_the_old_address_and_one_of_fifty_changes_wins() {
    let server = TestServer::start().await;
    let client = client();
    let base = server.base.clone();
    let first = sign_up("a1", "old@example.com", (Uuid::new_v4(), Uuid::new_v4()));
    assert_eq!(post(&client, &base, &first).await.unwrap().0, 201);

    let change = |to: &str| {
        json!([
            part("Account-a1", 0, "EmailChanged", Uuid::new_v4(), json!({ "email": to })),
            part(&format!("Email-{to}"), -1, "EmailReserved", Uuid::new_v4(), json!({ "account": "a1" })),
            part("Email-old@example.com", 0, "EmailReleased", Uuid::new_v4(), json!({ "account": "a1" })),
        ])
    };
    let mut tasks = Vec::new();
    for n in 0..50 {
        let (base, body) = (base.clone(), change(&format!("new{n}@example.com")));
        tasks.push(tokio::spawn(async move { post(&common::client(), &base, &body).await.unwrap() }));
    }
    let mut winners = HashSet::new();
    for (n, task) in tasks.into_iter().enumerate() {
        let (status, answer) = task.await.unwrap();
        match status {
            201 => assert!(winners.insert(n)),
            409 => assert_eq!(answer["conflicts"][0]["stream"], "Account-a1", "{answer}"),
            other => panic!("{other}: {answer}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one change wins");
    let winner = *winners.iter().next().unwrap();
    for n in 0..50 {
        let reserved = read_all_events(&client, &base, &format!("Email-new{n}@example.com")).await;
        assert_eq!(reserved.len(), usize::from(n == winner), "only the winner's address is reserved");
    }

    // The old address is free again: a sign-up that states the released
    // reservation's version takes it; one that assumes it is new does not.
    let assumes_new = sign_up("b2", "old@example.com", (Uuid::new_v4(), Uuid::new_v4()));
    assert_eq!(post(&client, &base, &assumes_new).await.unwrap().0, 409);
    let takes_released = json!([
        part("Account-b2", -1, "AccountCreated", Uuid::new_v4(), json!({ "email": "old@example.com" })),
        part("Email-old@example.com", 1, "EmailReserved", Uuid::new_v4(), json!({ "account": "b2" })),
    ]);
    let (status, answer) = post(&client, &base, &takes_released).await.unwrap();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["streams"][1]["firstEventNumber"], 2);
}

/// The request's rules: every part as a single append's, plus one part
/// per stream; a bad request is a 400 naming the part and writes nothing.
#[tokio::test]
async fn malformed_multi_stream_appends_are_400_and_write_nothing() {
    let server = TestServer::start().await;
    let client = client();
    let one = |stream: &str| part(stream, -2, "E", Uuid::new_v4(), json!({}));
    for (body, says) in [
        (json!([one("a-1"), one("a-1")]), "named twice"),
        (json!([one("a-1"), one("$system")]), "'$system'"),
        (json!([one("a-1"), {"stream": "b-1", "events": []}]), "'b-1'"),
        (
            json!([one("a-1"), {"stream": "b-1", "expectedVersion": -3, "events": [{"eventId": Uuid::new_v4(), "eventType": "E", "data": {}}]}]),
            "expectedVersion",
        ),
        (json!([{"stream": "a-1", "events": [], "extra": 1}]), "unknown field"),
        (json!([]), "no streams"),
    ] {
        let response = client
            .post(server.url("/streams"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{body}: {text}");
    }
    let wrong_type = client.post(server.url("/streams")).header("content-type", "text/plain").body("[]");
    assert_eq!(wrong_type.send().await.unwrap().status(), 415);
    let all =
        client.get(server.url("/streams/$all")).header("accept", "application/json").send().await.unwrap();
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["entries"].as_array().map(Vec::len), Some(0), "nothing was written");
}
