//! `/subscriptions`: the names of the streams a group keeps. v5 names them
//! `$persistentsubscription-{stream}::{group}-checkpoint` and `-parked`,
//! which two groups could share (`dA` with group `y::h`, `dA::y` with
//! group `h`): one would resume from the other's checkpoint and replay the
//! other's parked messages. These tests hold that no two groups share a
//! stream, across `kill -9`; that a group name which would share one (or is
//! otherwise unusable) is refused; and that a group from before these rules,
//! written here straight into the store as an older eventfeed left it,
//! keeps its checkpoint and its parked messages.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use eventfeed::store::{self, Append, ExpectedVersion, ProposedEvent, Store};
use eventfeed::subscriptions::Settings;
use eventfeed::subscriptions::persist::{StoredGroup, write_config};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::backend;
use crate::common::subscriptions::{Api, ids};
use crate::common::{ATOM_JSON, BinaryServer, TestServer, raw_status, reason};

/// The names an older eventfeed gave the streams of group `y::h` on `dA`
/// (and that v5 gives the streams of group `h` on `dA::y`).
const OLD_CHECKPOINTS: &str = "$persistentsubscription-dA::y::h-checkpoint";
const OLD_PARKED: &str = "$persistentsubscription-dA::y::h-parked";

fn proposed(event_type: &str, is_json: bool, data: &str, metadata: &Value) -> ProposedEvent {
    let metadata = if metadata.is_null() { Bytes::new() } else { Bytes::from(metadata.to_string()) };
    ProposedEvent {
        id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        is_json,
        data: Bytes::from(data.to_owned()),
        metadata_is_json: !metadata.is_empty(),
        metadata,
    }
}

async fn append(store: &Arc<dyn Store>, stream: &str, events: Vec<ProposedEvent>) {
    let append = Append { stream: stream.to_owned(), expected: ExpectedVersion::Any, events, access: None };
    store.append(append).await.unwrap_or_else(|error| panic!("append to {stream}: {error}"));
}

/// A store as an eventfeed from before the rules on group names left it:
/// group `y::h` on `dA`, created with `settings` (its checkpoints capped at
/// one event, as creating a group did), then each of `appends` in turn.
async fn write_old_store(data_dir: &Path, settings: Value, appends: Vec<(&str, Vec<ProposedEvent>)>) {
    let store = store::open(&backend::store_config(data_dir)).await.unwrap();
    let settings = Settings::parse(settings.to_string().as_bytes(), false).unwrap();
    let capped = proposed("$metadata", true, &json!({ "$maxCount": 1 }).to_string(), &Value::Null);
    append(&store, &format!("$${OLD_CHECKPOINTS}"), vec![capped]).await;
    let group = StoredGroup { stream: "dA".into(), group: "y::h".into(), start_at: 0, settings };
    write_config(&*store, &[group]).await.unwrap();
    for (stream, events) in appends {
        append(&store, stream, events).await;
    }
    store.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(store)).await.unwrap();
}

fn numbers(messages: &[crate::common::subscriptions::Message]) -> Vec<(String, u64)> {
    messages.iter().map(|m| (m.stream.clone(), m.number)).collect()
}

/// `dA` with group `y::h` (from before the rules) and `dA::y` with group
/// `h` (created now) shared their streams under v5's names: what one
/// acknowledged or parked, the other lost after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_whose_v5_names_collide_keep_their_own_checkpoints_and_parked_messages_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let settings = json!({"minCheckPointCount": 1, "checkPointAfterMilliseconds": 100});
    write_old_store(&data_dir, settings.clone(), Vec::new()).await;
    let mut server = BinaryServer::start(&data_dir, &[]);
    let api = Api::of_binary(&server);
    api.create("dA::y", "h", settings).await;
    api.append("dA", 5).await;
    api.append("dA::y", 5).await;

    let (_, taken) = api.take("dA", "y::h", "c", 5, None).await;
    assert_eq!(taken.len(), 5);
    let park = api.post_path(&format!("/subscriptions/dA/y::h/nack/{}?action=Park", taken[0].id), "c").await;
    assert_eq!(park.status(), 202);
    let ack = api.post_path(&format!("/subscriptions/dA/y::h/ack?ids={}", ids(&taken[1..])), "c").await;
    assert_eq!(ack.status(), 202);
    api.wait_for_info("dA", "y::h", "the checkpoint and the park", |info| {
        info["lastProcessedEventNumber"] == 4 && info["parkedMessageCount"] == 1
    })
    .await;
    server.kill9();

    let server = BinaryServer::start(&data_dir, &[]);
    let api = Api::of_binary(&server);
    let other = api.info("dA::y", "h").await;
    assert_eq!(other["lastProcessedEventNumber"], -1, "nothing of y::h's checkpoint: {other:#}");
    assert_eq!(other["parkedMessageCount"], 0, "nothing of y::h's parked messages: {other:#}");
    assert_eq!(
        other["parkedMessageUri"],
        server.url("/streams/$persistentsubscription-dA%3A%3Ay%3A%3Ah-parked"),
        "a valid group keeps v5's name"
    );
    let mine = api.info("dA", "y::h").await;
    assert_ne!(mine["parkedMessageUri"], other["parkedMessageUri"]);
    let (_, every) = api.take("dA::y", "h", "c", 10, None).await;
    let expected: Vec<(String, u64)> = (0..5).map(|n| ("dA::y".to_owned(), n)).collect();
    assert_eq!(numbers(&every), expected, "the other group still gets every event");
    let response = api.post_path("/subscriptions/dA::y/h/replayParked", "c").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["messagesToReplay"], 0);
    let (_, nothing) = api.take("dA::y", "h", "c", 10, Some(1)).await;
    assert!(nothing.is_empty(), "replayParked hands over nothing of y::h's: {nothing:?}");

    assert_eq!(mine["lastProcessedEventNumber"], 4, "{mine:#}");
    assert_eq!(mine["parkedMessageCount"], 1, "{mine:#}");
    let response = api.post_path("/subscriptions/dA/y::h/replayParked", "c").await;
    assert_eq!(response.json::<Value>().await.unwrap()["messagesToReplay"], 1);
    let (_, replayed) = api.take("dA", "y::h", "c", 10, Some(5)).await;
    assert_eq!(replayed, taken[..1], "its own parked message, with its id");
}

/// A group from before the rules whose name breaks them: its checkpoint
/// and parked messages (those not yet replayed) move to its own names at
/// start, and the old names are free for the group that now owns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_from_before_the_rules_keeps_its_checkpoint_and_parked_messages_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let events =
        (0..10).map(|n| proposed("Tested", true, &json!({ "n": n }).to_string(), &Value::Null)).collect();
    let parked = |n: u64| {
        let metadata = json!({"reason": "parked by consumer", "eventStreamId": "dA", "eventNumber": n});
        proposed("$>", false, &format!("{n}@dA"), &metadata)
    };
    let checkpoint = proposed("$SubscriptionCheckpoint", true, "5", &Value::Null);
    // Event 1 was parked, replayed and done: the parked stream's `$tb` has
    // moved past it. Event 2 is still parked.
    let replayed = proposed("$metadata", true, &json!({ "$tb": 1 }).to_string(), &Value::Null);
    let settings = json!({"minCheckPointCount": 1, "checkPointAfterMilliseconds": 100});
    let old_parked_metadata = format!("$${OLD_PARKED}");
    write_old_store(
        &data_dir,
        settings.clone(),
        vec![
            ("dA", events),
            (OLD_CHECKPOINTS, vec![checkpoint]),
            (OLD_PARKED, vec![parked(1), parked(2)]),
            (&old_parked_metadata, vec![replayed]),
        ],
    )
    .await;

    let mut server = BinaryServer::start(&data_dir, &[]);
    let api = Api::of_binary(&server);
    let info = api.info("dA", "y::h").await;
    assert_eq!(info["lastProcessedEventNumber"], 5, "{info:#}");
    assert_eq!(info["parkedMessageCount"], 1, "{info:#}");
    let (feed, after) = api.take("dA", "y::h", "c", 10, None).await;
    let expected: Vec<(String, u64)> = (6..10).map(|n| ("dA".to_owned(), n)).collect();
    assert_eq!(numbers(&after), expected, "delivery resumes after the checkpoint");
    api.ack_all(&feed).await;
    let response = api.post_path("/subscriptions/dA/y::h/replayParked", "c").await;
    assert_eq!(response.json::<Value>().await.unwrap()["messagesToReplay"], 1);
    let (feed, replayed) = api.take("dA", "y::h", "c", 10, Some(5)).await;
    assert_eq!(numbers(&replayed), [("dA".to_owned(), 2)], "the parked message not yet replayed");
    api.ack_all(&feed).await;
    for old in [OLD_CHECKPOINTS, OLD_PARKED] {
        let response =
            api.client.get(api.url(&format!("/streams/{old}"))).header("accept", ATOM_JSON).send().await;
        assert_eq!(response.unwrap().status(), 404, "{old} is left to the group it names in v5");
    }
    api.create("dA::y", "h", settings).await;
    let other = api.info("dA::y", "h").await;
    assert_eq!(
        (other["lastProcessedEventNumber"].clone(), other["parkedMessageCount"].clone()),
        (json!(-1), json!(0))
    );
    api.wait_for_info("dA", "y::h", "the checkpoint", |info| {
        info["lastProcessedEventNumber"] == 9 && info["parkedMessageCount"] == 0
    })
    .await;
    server.kill9();

    let server = BinaryServer::start(&data_dir, &[]);
    let api = Api::of_binary(&server);
    let info = api.info("dA", "y::h").await;
    assert_eq!(info["lastProcessedEventNumber"], 9, "the moved checkpoint goes on: {info:#}");
    let (_, nothing) = api.take("dA", "y::h", "c", 10, Some(1)).await;
    assert!(nothing.is_empty(), "{nothing:?}");
}

/// Group names follow the rules of stream names (1 to 1024 bytes of UTF-8
/// without control characters, not `.` or `..`), and neither contain `::`
/// nor start with `:`, which would make a group's stream another's. A
/// refused name is a `400` that says why, and creates nothing.
#[tokio::test]
async fn unusable_group_names_are_refused_and_nothing_is_created() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    // A URL library would resolve these segments away: sent raw.
    for group in [".", "..", "%2E%2E"] {
        let status = raw_status(server.addr, "PUT", &format!("/subscriptions/s/{group}"), &[], "").await;
        assert_eq!(status, 400, "group {group:?}");
    }
    let too_long = "g".repeat(1025);
    for (group, problem) in
        [("y::h", "'::'"), (":h", "':'"), ("a%0Ab", "control characters"), (too_long.as_str(), "too long")]
    {
        let response = api.put_group("s", group, &json!({})).await;
        assert_eq!(response.status(), 400, "group {group:?}");
        let phrase = reason(response).await;
        assert!(phrase.contains(problem), "group {group:?}: {phrase}");
    }
    let groups: Value =
        server.client.get(server.url("/subscriptions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(groups, json!([]), "nothing was created");
    let config = server.get("/streams/$persistentSubscriptionConfig", ATOM_JSON).await;
    assert_eq!(config.status(), 404, "not even the config stream");

    // The longest, colons that are not `::` and do not lead, and text that
    // must be percent-encoded (`é/x%`).
    for group in ["g".repeat(1024).as_str(), "a:b", "b:", "%C3%A9%2Fx%25"] {
        let response = api.put_group("s", group, &json!({})).await;
        assert_eq!(response.status(), 201, "group {group:?}");
    }
}
