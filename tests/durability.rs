//! Nothing acknowledged is lost: crash safety of the real binary under
//! `kill -9`, exactly-one-winner expected-version races, and the checkpoint
//! a clean stop leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::backend::sled_only;
use common::load::{AppendLoad, check_survivors};
use common::{BinaryServer, EVENTS_JSON, TestServer, read_all_events};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let load = AppendLoad::start(&server.base, 16);
    // Killed mid-load: once a few hundred batches are in, however long a
    // slow disk takes to get there (a fixed sleep counted on its speed).
    load.wait_for_acknowledged(300, Duration::from_secs(60)).await;
    server.kill9();
    let acked = load.stop().await;
    assert!(acked.len() > 100, "the load ran (acknowledged {} batches)", acked.len());

    let server = BinaryServer::start(&data_dir, &[]);
    check_survivors(&server.base, &acked).await;
}

/// A lone append killed right after its `201`, with no later commit to
/// carry it to disk: the restart finds it. (With `--durability none`,
/// which answers before sled has written the commit, it is lost, and this
/// test fails at once.) Five rounds, each killing the server that
/// recovered the round before, so recovering a store that was itself just
/// recovered is covered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_killed_right_after_its_201_is_there_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let client = reqwest::Client::new();
    let mut written = Vec::new();
    for round in 0..5 {
        let mut server = BinaryServer::start(&data_dir, &[]);
        let found = read_all_events(&client, &server.base, "lone").await;
        let ids: Vec<&str> = found.iter().map(|event| event["eventId"].as_str().unwrap()).collect();
        assert_eq!(ids, written.iter().map(String::as_str).collect::<Vec<_>>(), "round {round}");
        let id = Uuid::new_v4().to_string();
        let response = client
            .post(format!("{}/streams/lone", server.base))
            .header("content-type", EVENTS_JSON)
            .body(json!([{"eventId": id, "eventType": "Lone", "data": {"round": round}}]).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        server.kill9();
        written.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_get_exactly_one_winner_per_version() {
    let server = Arc::new(TestServer::start().await);
    const TARGET: i64 = 300;
    let mut racers = Vec::new();
    for racer in 0..32 {
        let server = Arc::clone(&server);
        racers.push(tokio::spawn(async move {
            let mut expected: i64 = -1;
            let mut won = Vec::new();
            let mut losses = 0;
            while expected < TARGET - 1 {
                let body = json!([{"eventId": Uuid::new_v4().to_string(), "eventType": "Raced",
                                   "data": {"racer": racer, "expected": expected}}]);
                let response = server
                    .client
                    .post(server.url("/streams/race"))
                    .header("content-type", EVENTS_JSON)
                    .header("es-expectedversion", expected.to_string())
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    201 => {
                        expected += 1;
                        let location = response.headers()["location"].to_str().unwrap();
                        assert!(location.ends_with(&format!("/streams/race/{expected}")));
                        won.push(expected);
                    }
                    400 => {
                        let current: i64 =
                            response.headers()["es-currentversion"].to_str().unwrap().parse().unwrap();
                        assert!(
                            current > expected,
                            "a loser learns a newer version ({current} > {expected})"
                        );
                        expected = current;
                        losses += 1;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (racer, won, losses)
        }));
    }
    let mut winners: BTreeMap<i64, i64> = BTreeMap::new();
    let mut total_losses = 0;
    for racer in racers {
        let (racer, won, losses) = racer.await.unwrap();
        total_losses += losses;
        for number in won {
            assert!(winners.insert(number, racer).is_none(), "version {number} won twice");
        }
    }
    assert!(total_losses > 0, "the writers really raced");
    let events = read_all_events(&server.client, &server.base, "race").await;
    assert_eq!(events.len(), winners.len(), "one event per win");
    for (number, event) in events.iter().enumerate() {
        let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        assert_eq!(winners.get(&(number as i64)), Some(&data["racer"].as_i64().unwrap()), "event {number}");
        assert_eq!(
            data["expected"],
            number as i64 - 1,
            "event {number} was written expecting {}",
            number as i64 - 1
        );
    }
    assert!(winners.keys().copied().eq(0..events.len() as i64), "no gaps");
}

/// A data directory is used by one store at a time: a second open while the
/// first is live is refused with an error that says why, and once the first
/// is closed the directory opens again at once, over and over (sled lets go
/// of its lock a moment after its last handle; opening waits for that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_per_directory_and_reopening_at_once() {
    if sled_only("sled's lock on its data directory") {
        return;
    }
    use eventfeed::store::{self, StoreConfig, sled::SledStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let open = |path: std::path::PathBuf| async move {
        store::open(&StoreConfig::Sled(SledStoreOptions::new(path))).await
    };

    let first = open(data_dir.clone()).await.expect("first open");
    let refused = open(data_dir.clone()).await.expect_err("a second open while the first is live");
    assert!(refused.to_string().contains("another eventfeed"), "{refused}");
    first.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(first)).await.unwrap();

    for round in 0..20 {
        let store = open(data_dir.clone())
            .await
            .unwrap_or_else(|error| panic!("reopen {round} right after a close: {error}"));
        store.close().await.unwrap();
        tokio::task::spawn_blocking(move || drop(store)).await.unwrap();
    }
}

/// The id index gathers ids in memory and per-commit segments, sorts them
/// into runs every 8,192 and merges runs eight at a time: a retry is
/// recognised wherever its ids are by then, after a restart too, a partial
/// match is still refused, and the same ids in another stream are new
/// events there whose retries are recognised in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_recognised_after_the_id_index_sorts_and_merges_its_runs() {
    if sled_only("the sled store's id index; tests/store_contract.rs checks retries on PostgreSQL") {
        return;
    }
    use eventfeed::store::{
        self, Append, ExpectedVersion, ProposedEvent, Store, StoreConfig, StoreError, sled::SledStoreOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let open = |path: std::path::PathBuf| async move {
        store::open(&StoreConfig::Sled(SledStoreOptions::new(path))).await.unwrap()
    };
    let append = |stream: &str, ids: &[Uuid]| Append {
        stream: stream.to_owned(),
        expected: ExpectedVersion::Any,
        events: ids
            .iter()
            .map(|id| ProposedEvent {
                id: *id,
                event_type: "Counted".into(),
                is_json: true,
                data: bytes::Bytes::from_static(b"{}"),
                metadata_is_json: false,
                metadata: bytes::Bytes::new(),
            })
            .collect(),
        access: None,
    };

    // 160 appends of 500 random ids: nine runs, a merge of eight, and
    // more ids in segments.
    let store = open(data_dir.clone()).await;
    let mut written = Vec::new();
    for i in 0..160 {
        let stream = format!("ids-{}", i % 7);
        let ids: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
        let outcome = store.append(append(&stream, &ids)).await.unwrap();
        written.push((stream, ids, outcome));
    }
    let retry_all = |store: Arc<dyn Store>,
                     written: Vec<(String, Vec<Uuid>, eventfeed::store::AppendOutcome)>| async move {
        for (stream, ids, outcome) in written.iter().step_by(3) {
            let again = store.append(append(stream, ids)).await.unwrap();
            assert!(again.idempotent, "a retry of {stream} {}..", outcome.first_number);
            assert_eq!((again.first_number, again.last_number), (outcome.first_number, outcome.last_number));
        }
    };
    retry_all(Arc::clone(&store), written.clone()).await;
    store.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(store)).await.unwrap();

    let store = open(data_dir.clone()).await;
    retry_all(Arc::clone(&store), written.clone()).await;
    let (stream, ids, _) = &written[2];
    let mut partial = ids[..250].to_vec();
    partial.push(Uuid::new_v4());
    let refused = store.append(append(stream, &partial)).await.unwrap_err();
    assert!(matches!(refused, StoreError::WrongExpectedVersion { .. }), "{refused}");
    // Ids from a run, and from a segment, written again to another stream.
    for (at, (_, ids, _)) in [(100, &written[100]), (159, &written[159])] {
        let stream = format!("another-stream-{at}");
        let elsewhere = store.append(append(&stream, &ids[..3])).await.unwrap();
        assert_eq!((elsewhere.first_number, elsewhere.idempotent), (0, false), "{stream}");
        let again = store.append(append(&stream, &ids[..3])).await.unwrap();
        assert_eq!((again.first_number, again.idempotent), (0, true), "{stream}");
    }
    store.close().await.unwrap();
}

/// Read-your-writes for `$all`: by the time an append is acknowledged, the
/// head every `$all` read and every "start from now" starts from already
/// covers it. The writer used to move the head only after answering, so a
/// client quick enough read a head without its own event (seen in CI: a
/// persistent subscription started "from the last position" began one
/// event early). Many single-event appends, each checked the moment its
/// answer arrives, on both worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_append_is_already_behind_the_head() {
    if sled_only("opens a sled store directly; tests/store_contract.rs checks the head on every backend") {
        return;
    }
    use eventfeed::store::{
        self, Append, ExpectedVersion, ProposedEvent, StoreConfig, sled::SledStoreOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let mut options = SledStoreOptions::new(path);
    options.durability = eventfeed::store::Durability::None;
    let store = store::open(&StoreConfig::Sled(options)).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..1000 {
                    let append = Append {
                        stream: format!("head-{task}"),
                        expected: ExpectedVersion::Any,
                        events: vec![ProposedEvent {
                            id: Uuid::new_v4(),
                            event_type: "Counted".into(),
                            is_json: true,
                            data: bytes::Bytes::from_static(b"{}"),
                            metadata_is_json: false,
                            metadata: bytes::Bytes::new(),
                        }],
                        access: None,
                    };
                    let outcome = store.append(append).await.unwrap();
                    let position = outcome.position.unwrap();
                    let head = store.notifier().next_position();
                    assert!(head > position, "acknowledged at position {position}, head still {head}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    store.close().await.unwrap();
}

/// The newest snapshot sled has written in the store's generation
/// directory: the log position it covers (sled names it `snap.{position}`).
/// sled 0.34 writes one only when it opens a store, and replays the log
/// written after it at the next open.
fn newest_snapshot(data_dir: &std::path::Path) -> u64 {
    let generation = std::fs::read_to_string(data_dir.join("CURRENT")).unwrap();
    std::fs::read_dir(data_dir.join(generation.trim()))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .max()
        .unwrap_or(0)
}

/// Writes a little over 2 MiB: 40 appends of 5 events of 10 KiB.
async fn write_two_mib(server: &TestServer) {
    let blob = "x".repeat(10 * 1024);
    for append in 0..40 {
        let events: Vec<Value> = (0..5)
            .map(|n| common::event("Written", json!({ "append": append, "n": n, "blob": blob })))
            .collect();
        let response = server.post_events("checkpointed", &Value::Array(events)).await;
        assert_eq!(response.status(), 201);
    }
}

/// A clean stop after more than `checkpoint_after_mb` was written opens the
/// store once more, so that sled snapshots past everything written and the
/// next start does not replay it; below the threshold the stop leaves the
/// snapshot where the start put it. Either way every event is there after
/// a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_checkpoints_the_store_after_enough_writes() {
    if sled_only("sled's snapshots in its data directory") {
        return;
    }
    for (after_mb, checkpoints) in [(1, true), (64, false)] {
        let mut server = TestServer::start_with(|config| config.checkpoint_after_mb = after_mb).await;
        let at_start = newest_snapshot(server.data_dir());
        write_two_mib(&server).await;
        assert_eq!(newest_snapshot(server.data_dir()), at_start, "sled snapshots only when it opens a store");

        server.stop().await;
        let at_stop = newest_snapshot(server.data_dir());
        if checkpoints {
            assert!(at_stop > at_start, "threshold {after_mb} MiB: snapshot at {at_stop}, was {at_start}");
        } else {
            assert_eq!(at_stop, at_start, "threshold {after_mb} MiB: no checkpoint below it");
        }

        let server = server.restart().await;
        let events = read_all_events(&server.client, &server.base, "checkpointed").await;
        assert_eq!(events.len(), 200, "threshold {after_mb} MiB");
    }
}
