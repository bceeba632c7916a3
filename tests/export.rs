//! `eventfeed export` and `eventfeed import` through the real binary: a
//! store built over HTTP with every kind of history (users, metadata,
//! `$maxCount` and `$tb`, soft and hard deletes, a scavenge, a persistent
//! subscription with a checkpoint and a parked message) is exported,
//! imported into sled, into PostgreSQL, exported from there and imported
//! into sled again; every page read from the copies (stream pages both
//! ways, `$all` both ways, `$ce-`/`$et-`/`$streams`, metadata, single
//! events, in JSON and XML) has the original's status, ETag, cache header
//! and bytes, timestamps included. Refusals: a non-empty target, an
//! edited or truncated file, a store a server holds open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::subscriptions::Api;
use common::{ATOM_JSON, ATOM_XML, TestServer, client, wait_for};
use serde_json::{Value, json};

/// Pages are read with this `Host`, so that their links do not depend on
/// the port.
const HOST: &str = "eventfeed.test";

/// Runs the binary with `args`; returns whether it succeeded and what it
/// said on standard error.
fn eventfeed(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_eventfeed")).args(args).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Exports the sled store in `dir` to `file`, asserting success.
fn export_sled(dir: &Path, file: &Path) {
    let (ok, said) = eventfeed(&["export", "--data-dir", path_str(dir), "--to", path_str(file)]);
    assert!(ok, "export of {}: {said}", dir.display());
}

fn import_sled(file: &Path, dir: &Path) -> (bool, String) {
    eventfeed(&["import", "--from", path_str(file), "--data-dir", path_str(dir)])
}

/// A history with something of everything an export must carry.
async fn build_history(server: &TestServer) {
    let users = json!({"loginName": "erin", "fullName": "Erin", "groups": ["team"], "password": "secret-1"});
    let response = server
        .client
        .post(server.url("/users/"))
        .header("content-type", "application/json")
        .body(users.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = |n: u32| format!("30000000-0000-4000-8000-{n:012}");
    let mixed = json!([
        {"eventId": id(1), "eventType": "Placed", "data": {"customer": "c-1"}, "metadata": {"k": 1}},
        {"eventId": id(2), "eventType": "Noted", "data": "not JSON <&>"},
        {"eventId": id(3), "eventType": "Paid", "data": {"amount": 12.5}, "metadata": "plain"},
    ]);
    assert_eq!(server.post_events("Order-1", &mixed).await.status(), 201);
    server.append_n("Order-1", 27).await;
    server.append_n("Order-2", 5).await;
    server.append_n("Order-3", 5).await;
    server.append_n("Invoice-1", 10).await;
    server.append_n("Invoice-2", 8).await;
    assert_eq!(server.set_metadata("Invoice-1", json!({"$maxCount": 3})).await.status(), 201);
    assert_eq!(server.set_metadata("Invoice-2", json!({"$tb": 4, "custom": "kept"})).await.status(), 201);
    let soft = server.client.delete(server.url("/streams/Order-2")).send().await.unwrap();
    assert_eq!(soft.status(), 204);
    let hard = server
        .client
        .delete(server.url("/streams/Order-3"))
        .header("es-harddelete", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(hard.status(), 204);

    // A persistent subscription with a checkpoint and a parked message.
    let api = Api::of(server);
    let settings = json!({"maxRetryCount": 5, "minCheckPointCount": 1, "maxCheckPointCount": 1});
    api.set_up("Task-1", "g", settings, 5).await;
    let mut taken = 0;
    while taken < 5 {
        let (_, more) = api.take("Task-1", "g", "a", 5 - taken, Some(1)).await;
        for message in more {
            taken += 1;
            let action = if taken == 5 { "nack" } else { "ack" };
            let path = format!("/subscriptions/Task-1/g/{action}/{}?action=park", message.id);
            assert_eq!(api.post_path(&path, "a").await.status(), 202, "{path}");
        }
    }
    api.wait_for_info("Task-1", "g", "the park", |info| info["parkedMessageCount"] == 1).await;
    let checkpoint = "/streams/$persistentsubscription-Task-1::g-checkpoint";
    for _ in 0..400 {
        if server.get(checkpoint, ATOM_JSON).await.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(server.get(checkpoint, ATOM_JSON).await.status(), 200, "a checkpoint was written");

    // A scavenge leaves gaps in `$all` and in the streams.
    let scavenge = common::start_scavenge(&server.client, &server.base).await;
    wait_for(&server.client, &server.base, &scavenge, |report| report["status"] == "completed").await;
    // After it: the soft-deleted stream comes back, numbering on.
    server.append_n("Order-2", 2).await;
    server.append_n("Order-1", 3).await;
}

/// What a page read answered.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    etag: Option<String>,
    cache_control: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn read(base: &str, path: &str, accept: &str) -> Answer {
    let response = client()
        .get(format!("{base}{path}"))
        .header("accept", accept)
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (etag, cache_control, content_type) =
        (header("etag"), header("cache-control"), header("content-type"));
    Answer {
        status: response.status().as_u16(),
        etag,
        cache_control,
        content_type,
        body: response.text().await.unwrap(),
    }
}

/// The paths a JSON page links to by its paging relations.
fn paging_links(body: &str) -> Vec<String> {
    let Ok(page) = serde_json::from_str::<Value>(body) else { return Vec::new() };
    let prefix = format!("http://{HOST}");
    (page["links"].as_array().into_iter().flatten())
        .filter(|link| {
            ["first", "last", "next", "previous"].contains(&link["relation"].as_str().unwrap_or(""))
        })
        .filter_map(|link| link["uri"].as_str()?.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Every page reachable from the seeds by paging links (at most `limit`),
/// each in JSON, and the seeds in XML too.
async fn crawl(base: &str, seeds: &[&str], limit: usize) -> BTreeMap<(String, &'static str), Answer> {
    let mut answers = BTreeMap::new();
    let mut queue: VecDeque<String> = seeds.iter().map(|seed| (*seed).to_owned()).collect();
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        let answer = read(base, &path, ATOM_JSON).await;
        for next in paging_links(&answer.body) {
            if seen.len() < limit && seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
        answers.insert((path, ATOM_JSON), answer);
    }
    for seed in seeds {
        answers.insert(((*seed).to_owned(), ATOM_XML), read(base, seed, ATOM_XML).await);
    }
    answers
}

const SEEDS: &[&str] = &[
    "/streams/$all",
    "/streams/$all/0/forward/7",
    "/streams/Order-1",
    "/streams/Order-1/0/forward/20",
    "/streams/Order-1/25/backward/20",
    "/streams/Order-1/0",
    "/streams/Order-1/2",
    "/streams/Order-1/metadata",
    "/streams/Order-2",
    "/streams/Order-2/0",
    "/streams/Order-3",
    "/streams/Invoice-1",
    "/streams/Invoice-1/0",
    "/streams/Invoice-1/9",
    "/streams/Invoice-1/metadata",
    "/streams/Invoice-2",
    "/streams/Invoice-2/metadata",
    "/streams/$ce-Order",
    "/streams/$ce-Order?embed=body",
    "/streams/$ce-Order/0",
    "/streams/$ce-Invoice",
    "/streams/$et-Tested",
    "/streams/$et-Placed",
    "/streams/$streams",
    "/streams/$users",
    "/streams/$user-erin",
    "/streams/$persistentSubscriptionConfig",
    "/streams/$persistentsubscription-Task-1::g-checkpoint",
    "/streams/$persistentsubscription-Task-1::g-parked",
    "/streams/$$Invoice-1",
    "/users/",
    "/users/erin",
];

/// Every answer of `copy` is the original's.
async fn assert_same_pages(
    original: &BTreeMap<(String, &'static str), Answer>,
    copy: &TestServer,
    what: &str,
) {
    let mut compared = 0;
    for ((path, accept), expected) in original {
        let answer = read(&copy.base, path, accept).await;
        assert_eq!(&answer, expected, "{what}: GET {path} ({accept})");
        compared += 1;
    }
    eprintln!("{what}: {compared} answers identical");
}

async fn start_on(dir: &Path) -> TestServer {
    let dir = dir.to_owned();
    TestServer::start_with(|config| config.data_dir = dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_round_trips_through_sled_and_postgres_with_identical_pages() {
    let work = tempfile::tempdir().unwrap();
    let original_dir = work.path().join("original");
    let mut original = start_on(&original_dir).await;
    build_history(&original).await;

    // A store a server holds open is refused, and left alone.
    let exported = work.path().join("original.ndjson");
    let (ok, said) =
        eventfeed(&["export", "--data-dir", path_str(&original_dir), "--to", path_str(&exported)]);
    assert!(!ok && said.contains("in use"), "{said}");
    original.stop().await;

    export_sled(&original_dir, &exported);
    let text = std::fs::read_to_string(&exported).unwrap();
    let spent = text.lines().filter(|line| line.starts_with("{\"t\":\"id\"")).count();
    assert!(spent >= 7 + 5 + 5, "the ids of the events the scavenge removed are carried: {spent}");
    let sled_copy = work.path().join("sled-copy");
    let (ok, said) = import_sled(&exported, &sled_copy);
    assert!(ok, "{said}");
    assert!(said.contains("counts and checksum verified"), "{said}");

    let original = start_on(&original_dir).await;
    let pages = crawl(&original.base, SEEDS, 400).await;
    assert!(pages.len() > 60, "{} pages", pages.len());
    assert!(pages.values().any(|answer| answer.status == 410), "the tombstone is among the pages");
    let mut sled_server = start_on(&sled_copy).await;
    assert_same_pages(&pages, &sled_server, "sled → sled").await;
    sled_server.stop().await;

    // An export of the copy is the original's export, byte for byte.
    let again = work.path().join("again.ndjson");
    export_sled(&sled_copy, &again);
    assert_eq!(std::fs::read(&exported).unwrap(), std::fs::read(&again).unwrap());

    let Some(url) = common::postgres::database() else { return };
    let (ok, said) = eventfeed(&["import", "--from", path_str(&exported), "--store", &url]);
    assert!(ok, "{said}");
    let postgres = TestServer::start_with(|config| config.store = url.clone()).await;
    assert_same_pages(&pages, &postgres, "sled → PostgreSQL").await;
    drop(postgres);
    let from_postgres = work.path().join("postgres.ndjson");
    let (ok, said) = eventfeed(&["export", "--store", &url, "--to", path_str(&from_postgres)]);
    assert!(ok, "{said}");
    // The same records, but for the header's source (and so every hash).
    let records = |file: &PathBuf| -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap();
        text.lines().skip(1).map(|line| line[..line.rfind(",\"h\":").unwrap()].to_owned()).collect()
    };
    let (from_sled, from_pg) = (records(&exported), records(&from_postgres));
    assert_eq!(from_sled[..from_sled.len() - 1], from_pg[..from_pg.len() - 1]);
    let back = work.path().join("back-to-sled");
    let (ok, said) = import_sled(&from_postgres, &back);
    assert!(ok, "{said}");
    let back_server = start_on(&back).await;
    assert_same_pages(&pages, &back_server, "sled → PostgreSQL → sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem_and_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    let source_dir = work.path().join("source");
    let mut source = start_on(&source_dir).await;
    source.append_n("Order-1", 30).await;
    source.append_n("Order-2", 3).await;
    source.stop().await;
    let exported = work.path().join("source.ndjson");
    export_sled(&source_dir, &exported);

    // Into a store that holds anything: refused, and it is left as it was.
    let target = work.path().join("target");
    let mut server = start_on(&target).await;
    server.append_n("Other-1", 2).await;
    server.stop().await;
    let before = work.path().join("before.ndjson");
    export_sled(&target, &before);
    let (ok, said) = import_sled(&exported, &target);
    assert!(!ok && said.contains("not empty"), "{said}");
    let after = work.path().join("after.ndjson");
    export_sled(&target, &after);
    assert_eq!(std::fs::read(&before).unwrap(), std::fs::read(&after).unwrap());
    // Into PostgreSQL likewise.
    if let Some(url) = common::postgres::database() {
        let (ok, said) = eventfeed(&["import", "--from", path_str(&before), "--store", &url]);
        assert!(ok, "{said}");
        let (ok, said) = eventfeed(&["import", "--from", path_str(&exported), "--store", &url]);
        assert!(!ok && said.contains("not empty"), "{said}");
        let (ok, said) = eventfeed(&["export", "--store", &url, "--to", path_str(&after)]);
        assert!(ok, "{said}");
        let text = std::fs::read_to_string(&after).unwrap();
        assert!(!text.contains("Order-1") && text.contains("Other-1"), "nothing of the refused import");
    }

    // An edited line: named, and nothing created.
    let text = std::fs::read_to_string(&exported).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (index, line) = lines.iter().enumerate().find(|(_, line)| line.contains("\"number\":7,")).unwrap();
    let created = line.split("\"created\":").nth(1).unwrap().split(',').next().unwrap();
    let edited_line = line.replace(&format!("\"created\":{created}"), &format!("\"created\":{}", 1));
    let mut edited: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    edited[index] = edited_line;
    let edited_file = work.path().join("edited.ndjson");
    std::fs::write(&edited_file, edited.join("\n") + "\n").unwrap();
    let fresh = work.path().join("fresh");
    let (ok, said) = import_sled(&edited_file, &fresh);
    assert!(!ok && said.contains(&format!("line {}", index + 1)) && said.contains("corrupt"), "{said}");
    assert!(!fresh.exists(), "nothing is created for a file that fails its check");

    // A truncated file: the last line it has is named.
    let truncated = work.path().join("truncated.ndjson");
    std::fs::write(&truncated, lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    let (ok, said) = import_sled(&truncated, &fresh);
    assert!(
        !ok && said.contains("no end line") && said.contains(&format!("line {}", lines.len() - 3)),
        "{said}"
    );
    assert!(!fresh.exists());

    // A file cut in the middle of a line.
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let (ok, said) = import_sled(&truncated, &fresh);
    assert!(!ok && said.contains("cut short"), "{said}");

    // Through a pipe: standard output to standard input, checked as it loads.
    let piped = work.path().join("piped");
    let bin = env!("CARGO_BIN_EXE_eventfeed");
    let script = format!(
        "'{bin}' export --data-dir '{}' | '{bin}' import --from - --data-dir '{}'",
        source_dir.display(),
        piped.display()
    );
    let output = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let again = work.path().join("piped.ndjson");
    export_sled(&piped, &again);
    assert_eq!(std::fs::read(&exported).unwrap(), std::fs::read(&again).unwrap());

    // No store where an export looks.
    let (ok, said) =
        eventfeed(&["export", "--data-dir", path_str(&work.path().join("nothing")), "--to", "-"]);
    assert!(!ok && said.contains("no eventfeed store"), "{said}");
}
