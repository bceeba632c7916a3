//! `/subscriptions`: persistent subscriptions (competing consumers), section
//! 7 of the API reference and what eventfeed adds: exactly-once sharing
//! between consumers, redelivery, parking and replay, every nack action,
//! crash recovery of the real binary, long-polling, strategies, `$all` and
//! system-stream sources, statistics, and every error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ATOM_JSON, BinaryServer, EVENTS_JSON, TestServer, client, event, header, reason};
use reqwest::{Client, Response};
use serde_json::{Value, json};

const COMPETING_JSON: &str = "application/vnd.eventstore.competingatom+json";
const COMPETING_XML: &str = "application/vnd.eventstore.competingatom+xml";

/// One message of a competing feed, as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Message {
    /// From the entry's `ack` link.
    id: String,
    /// The event's stream and number (`streamId`, `eventNumber`).
    stream: String,
    number: u64,
    /// Where it sits in the subscribed stream (`positionEventNumber`).
    position: u64,
}

/// A client for one server.
#[derive(Clone)]
struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn of(server: &TestServer) -> Self {
        Self { client: server.client.clone(), base: server.base.clone() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn put_group(&self, stream: &str, group: &str, settings: &Value) -> Response {
        self.client
            .put(self.url(&format!("/subscriptions/{stream}/{group}")))
            .header("content-type", "application/json")
            .body(settings.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn create(&self, stream: &str, group: &str, settings: Value) {
        let response = self.put_group(stream, group, &settings).await;
        assert_eq!(response.status(), 201, "create {stream}/{group}: {}", response.text().await.unwrap());
    }

    /// Appends `count` events of type `Tested` with data `{"n": i}`.
    async fn append(&self, stream: &str, count: usize) {
        for chunk_start in (0..count).step_by(500) {
            let events: Vec<Value> = (chunk_start..count.min(chunk_start + 500))
                .map(|n| event("Tested", json!({ "n": n })))
                .collect();
            let response = self
                .client
                .post(self.url(&format!("/streams/{stream}")))
                .header("content-type", EVENTS_JSON)
                .body(Value::Array(events).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "append to {stream}");
        }
    }

    async fn get_messages(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        long_poll: Option<u64>,
    ) -> Response {
        let mut request = self
            .client
            .get(self.url(&format!("/subscriptions/{stream}/{group}/{count}?embed=body")))
            .header("accept", COMPETING_JSON)
            .header("es-consumer", consumer);
        if let Some(seconds) = long_poll {
            request = request.header("es-longpoll", seconds.to_string());
        }
        request.send().await.unwrap()
    }

    /// Takes up to `count` messages; returns the feed and its messages in
    /// the order they were handed out.
    async fn take(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        long_poll: Option<u64>,
    ) -> (Value, Vec<Message>) {
        let response = self.get_messages(stream, group, consumer, count, long_poll).await;
        assert_eq!(response.status(), 200, "take from {stream}/{group}");
        let feed: Value = response.json().await.unwrap();
        let messages = messages_of(&feed);
        (feed, messages)
    }

    async fn post(&self, url: &str) -> Response {
        self.client.post(url).send().await.unwrap()
    }

    async fn post_path(&self, path: &str, consumer: &str) -> Response {
        self.client.post(self.url(path)).header("es-consumer", consumer).send().await.unwrap()
    }

    async fn ack_all(&self, feed: &Value) {
        let url = link(feed, "ackAll").expect("an ackAll link");
        let response = self.post(&url).await;
        assert_eq!(response.status(), 202);
    }

    async fn info(&self, stream: &str, group: &str) -> Value {
        let response =
            self.client.get(self.url(&format!("/subscriptions/{stream}/{group}/info"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls `info` until `check` holds (statistics settle asynchronously).
    async fn wait_for_info(
        &self,
        stream: &str,
        group: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = self.info(stream, group).await;
            if check(&info) {
                return info;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {info:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of a stream, oldest first, resolved or not.
    async fn read_stream(&self, stream: &str) -> Vec<Value> {
        common::read_all_events(&self.client, &self.base, stream).await
    }
}

fn link(feed: &Value, relation: &str) -> Option<String> {
    common::link(feed, relation)
}

fn messages_of(feed: &Value) -> Vec<Message> {
    let mut messages: Vec<Message> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let ack = entry["links"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "ack")
                .map(|l| l["uri"].as_str().unwrap().to_owned())
                .expect("every entry has an ack link");
            Message {
                id: ack.rsplit('/').next().unwrap().to_owned(),
                stream: entry["streamId"].as_str().unwrap_or_default().to_owned(),
                number: entry["eventNumber"].as_u64().unwrap_or(u64::MAX),
                position: entry["positionEventNumber"].as_u64().unwrap_or(u64::MAX),
            }
        })
        .collect();
    messages.reverse();
    messages
}

fn ids(messages: &[Message]) -> String {
    messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(",")
}

// ---- managing groups ----

#[tokio::test]
async fn groups_are_created_updated_and_deleted_with_v5s_statuses() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let response = api.put_group("orders", "billing", &json!({})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location").unwrap(), server.url("/subscriptions/orders/billing"));
    let again = api.put_group("orders", "billing", &json!({})).await;
    assert_eq!(again.status(), 409);

    let defaults = api.info("orders", "billing").await["config"].clone();
    assert_eq!(
        defaults,
        json!({
            "resolveLinktos": false, "startFrom": 0, "messageTimeoutMilliseconds": 10000,
            "extraStatistics": false, "maxRetryCount": 10, "liveBufferSize": 500, "bufferSize": 500,
            "readBatchSize": 20, "preferRoundRobin": true, "checkPointAfterMilliseconds": 1000,
            "minCheckPointCount": 10, "maxCheckPointCount": 500, "maxSubscriberCount": 10,
            "namedConsumerStrategy": "RoundRobin"
        }),
        "section 7's defaults"
    );

    let update = |group: &'static str, settings: Value| {
        let api = api.clone();
        async move {
            api.client
                .post(api.url(&format!("/subscriptions/orders/{group}")))
                .header("content-type", "application/json")
                .body(settings.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let response =
        update("billing", json!({"messageTimeoutMilliseconds": 2500, "namedConsumerStrategy": "Pinned"}))
            .await;
    assert_eq!(response.status(), 200);
    let config = api.info("orders", "billing").await["config"].clone();
    assert_eq!(config["messageTimeoutMilliseconds"], 2500);
    assert_eq!(config["namedConsumerStrategy"], "Pinned");
    assert_eq!(update("nobody", json!({})).await.status(), 404);

    let delete = |group: &'static str| {
        let api = api.clone();
        async move { api.client.delete(api.url(&format!("/subscriptions/orders/{group}"))).send().await.unwrap() }
    };
    assert_eq!(delete("billing").await.status(), 200);
    assert_eq!(delete("billing").await.status(), 404);
    let gone = api.get_messages("orders", "billing", "c", 1, None).await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_setting() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let cases = [
        (json!({"bufferSize": 0}), "bufferSize"),
        (json!({"liveBufferSize": -1}), "liveBufferSize"),
        (json!({"readBatchSize": 0}), "readBatchSize"),
        (json!({"bufferSize": 20, "readBatchSize": 20}), "bufferSize"),
        (json!({"messageTimeoutMilliseconds": "soon"}), "messageTimeoutMilliseconds"),
        (json!({"maxRetryCount": 1.5}), "maxRetryCount"),
        (json!({"namedConsumerStrategy": "Random"}), "namedConsumerStrategy"),
        (json!({"minCheckPointCount": 20, "maxCheckPointCount": 10}), "minCheckPointCount"),
        (json!({"startFrom": -5}), "startFrom"),
        (json!({"resolveLinkTos": "yes"}), "resolveLinktos"),
        (json!({"messageTimeout": 10}), "messageTimeout"),
    ];
    for (settings, setting) in cases {
        let response = api.put_group("s", "g", &settings).await;
        assert_eq!(response.status(), 400, "{settings}");
        let phrase = reason(response).await;
        assert!(phrase.contains(&format!("'{setting}'")), "{settings}: {phrase}");
    }
    let response = api
        .client
        .put(api.url("/subscriptions/s/g"))
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // v5 clients send `resolveLinkTos` (capital T): keys match regardless of case.
    api.create("s", "g", json!({"resolveLinkTos": true, "preferRoundRobin": false})).await;
    let config = api.info("s", "g").await["config"].clone();
    assert_eq!(config["resolveLinktos"], true);
    assert_eq!(config["namedConsumerStrategy"], "DispatchToSingle");
}

/// The real binary, stopped with SIGTERM and started again: groups, their
/// settings and checkpoints come back. (A real restart, not one inside the
/// test process, where sled's background threads may still hold the
/// previous store's lock for a moment.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_settings_and_checkpoints_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let api = Api { client: client(), base: server.base.clone() };
    api.create("restart-1", "g", json!({"maxRetryCount": 3, "namedConsumerStrategy": "Pinned"})).await;
    api.append("restart-1", 10).await;
    let (feed, acked) = api.take("restart-1", "g", "c", 5, None).await;
    assert_eq!(acked.len(), 5);
    api.ack_all(&feed).await;
    let (_, unacked) = api.take("restart-1", "g", "c", 2, None).await;
    assert_eq!(unacked.iter().map(|m| m.number).collect::<Vec<_>>(), [5, 6]);
    server.terminate();

    let server = BinaryServer::start(&data_dir, &[]);
    let api = Api { client: client(), base: server.base.clone() };
    let info = api.info("restart-1", "g").await;
    assert_eq!(info["config"]["maxRetryCount"], 3);
    assert_eq!(info["config"]["namedConsumerStrategy"], "Pinned");
    assert_eq!(info["lastProcessedEventNumber"], 4, "a clean stop checkpoints what was acked");
    let (_, after) = api.take("restart-1", "g", "c", 10, None).await;
    assert_eq!(
        after.iter().map(|m| m.number).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9],
        "only what was in flight comes again"
    );
}

// ---- the messages feed ----

#[tokio::test]
async fn the_competing_feed_has_v5s_shape_in_json_and_xml() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("feed-1", "g", json!({})).await;
    api.append("feed-1", 3).await;

    let (feed, messages) = api.take("feed-1", "g", "c", 2, None).await;
    assert_eq!(feed["title"], "Messages for 'feed-1/g'");
    assert_eq!(feed["id"], server.url("/subscriptions/feed-1/g"));
    let relations: Vec<&str> =
        feed["links"].as_array().unwrap().iter().map(|l| l["relation"].as_str().unwrap()).collect();
    assert_eq!(relations, ["ackAll", "nackAll", "previous", "self"]);
    assert_eq!(
        link(&feed, "ackAll").unwrap(),
        server.url(&format!("/subscriptions/feed-1/g/ack?ids={}", ids(&messages)))
    );
    assert_eq!(
        link(&feed, "nackAll").unwrap(),
        server.url(&format!("/subscriptions/feed-1/g/nack?ids={}", ids(&messages)))
    );
    assert_eq!(link(&feed, "previous").unwrap(), server.url("/subscriptions/feed-1/g/2?embed=body"));
    let entries = feed["entries"].as_array().unwrap();
    assert_eq!(entries[0]["eventNumber"], 1, "newest first");
    assert_eq!(entries[0]["title"], "1@feed-1");
    assert_eq!(entries[0]["data"], r#"{"n":1}"#, "embed=body gives data as a JSON string");
    let entry_links: Vec<&str> =
        entries[0]["links"].as_array().unwrap().iter().map(|l| l["relation"].as_str().unwrap()).collect();
    assert_eq!(entry_links, ["edit", "alternate", "ack", "nack"]);
    assert_eq!(
        entries[0]["links"][2]["uri"],
        server.url(&format!("/subscriptions/feed-1/g/ack/{}", messages[1].id))
    );
    assert_eq!(messages[0].id, entries[1]["eventId"].as_str().unwrap(), "the message id is the event id");

    let response = server
        .client
        .get(server.url("/subscriptions/feed-1/g"))
        .header("accept", COMPETING_XML)
        .header("es-consumer", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").unwrap().starts_with(COMPETING_XML));
    assert_eq!(header(&response, "cache-control").unwrap(), "no-store");
    let xml = response.text().await.unwrap();
    let parsed = feed_rs::parser::parse(xml.as_bytes()).expect("a valid Atom feed");
    assert_eq!(parsed.entries.len(), 1, "the default count is 1");
    assert!(xml.contains(r#"rel="ackAll""#) && xml.contains(r#"rel="ack""#) && xml.contains(r#"rel="nack""#));

    let empty = server.get("/subscriptions/feed-1/g", COMPETING_JSON).await;
    let empty: Value = empty.json().await.unwrap();
    assert!(empty["entries"].as_array().unwrap().is_empty());
    assert!(link(&empty, "ackAll").is_none(), "no ackAll without messages");
}

#[tokio::test]
async fn a_take_right_after_an_append_sees_the_event() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("fresh-1", "g", json!({})).await;
    // The group reads its source in the background; a request that finds
    // fewer messages than it asked for first lets it catch up with what was
    // acknowledged before. Two appends a round: the first one's wake-up
    // usually has the group reading it while the second is acknowledged, so
    // the take meets a buffer holding some but not all of what it must see.
    for round in 0..300 {
        api.append("fresh-1", 1).await;
        api.append("fresh-1", 1).await;
        let (feed, messages) = api.take("fresh-1", "g", "c", 5, None).await;
        let numbers: Vec<u64> = messages.iter().map(|m| m.number).collect();
        assert_eq!(numbers, [2 * round, 2 * round + 1], "round {round}");
        api.ack_all(&feed).await;
    }
}

#[tokio::test]
async fn the_messages_route_negotiates_and_validates() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("neg-1", "g", json!({})).await;
    let response = server.get("/subscriptions/neg-1/g", ATOM_JSON).await;
    assert_eq!(response.status(), 406);
    let response = server.get("/subscriptions/neg-1/g", "application/atom+xml").await;
    assert_eq!(response.status(), 406);
    let response = server.get("/subscriptions/neg-1/g", "*/*").await;
    assert_eq!(response.status(), 200, "curl's default gets JSON");
    assert!(header(&response, "content-type").unwrap().starts_with(COMPETING_JSON));
    for bad in ["0", "101", "x", "-1"] {
        let response = server.get(&format!("/subscriptions/neg-1/g/{bad}"), COMPETING_JSON).await;
        assert_eq!(response.status(), 400, "count {bad}");
        assert!(reason(response).await.starts_with("Message count must be an integer between 1 and 100"));
    }
    for bad in ["0", "-1", "soon"] {
        let response = server
            .client
            .get(server.url("/subscriptions/neg-1/g"))
            .header("accept", COMPETING_JSON)
            .header("es-longpoll", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(reason(response).await, "ES-LongPoll header in wrong format.");
    }
    let response = server
        .client
        .get(server.url("/subscriptions/neg-1/g"))
        .header("accept", COMPETING_JSON)
        .header("es-consumer", "x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server.get("/subscriptions/neg-1/nobody", COMPETING_JSON).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn v5_clients_that_encode_the_query_into_the_path_still_work() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("compat-1", "g", json!({})).await;
    api.append("compat-1", 3).await;
    // geteventstore-promise puts `?embed=` in the path, where it is escaped.
    let response = server.get("/subscriptions/compat-1/g/2%3Fembed=Body", COMPETING_JSON).await;
    assert_eq!(response.status(), 200);
    let feed: Value = response.json().await.unwrap();
    let messages = messages_of(&feed);
    assert_eq!(messages.len(), 2);
    assert!(feed["entries"][0]["data"].is_string(), "embed=Body was applied");
    // v5's own ackAll links read `ack%3Fids=`.
    let response =
        api.post(&server.url(&format!("/subscriptions/compat-1/g/ack%3Fids={}", ids(&messages)))).await;
    assert_eq!(response.status(), 202);
    let (_, rest) = api.take("compat-1", "g", "c", 10, None).await;
    assert_eq!(rest.iter().map(|m| m.number).collect::<Vec<_>>(), [2]);
}

// ---- acknowledgements ----

#[tokio::test]
async fn acks_and_nacks_answer_202_and_refuse_bad_ids() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("ack-1", "g", json!({})).await;
    api.append("ack-1", 2).await;
    let (_, messages) = api.take("ack-1", "g", "c", 2, None).await;
    let response = api.post_path(&format!("/subscriptions/ack-1/g/ack/{}", messages[0].id), "c").await;
    assert_eq!(response.status(), 202);
    let response = api.post_path(&format!("/subscriptions/ack-1/g/ack?ids={}", messages[1].id), "c").await;
    assert_eq!(response.status(), 202);
    let response = api.post_path(&format!("/subscriptions/ack-1/g/ack/{}", messages[1].id), "c").await;
    assert_eq!(response.status(), 202, "acking twice is harmless");

    for path in [
        "/subscriptions/ack-1/g/ack/not-a-guid",
        "/subscriptions/ack-1/g/nack/not-a-guid",
        "/subscriptions/ack-1/g/ack?ids=",
        "/subscriptions/ack-1/g/ack",
        "/subscriptions/ack-1/g/nack?ids=abc,def",
    ] {
        let response = api.post_path(path, "c").await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(reason(response).await, "messageid should be a properly formed guid", "{path}");
    }
    let response =
        api.post_path(&format!("/subscriptions/ack-1/g/nack/{}?action=Later", messages[0].id), "c").await;
    assert_eq!(response.status(), 400);
    let response = api.post_path(&format!("/subscriptions/ack-1/nobody/ack/{}", messages[0].id), "c").await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn four_consumers_share_ten_thousand_events_each_acked_exactly_once() {
    const EVENTS: usize = 10_000;
    let server = TestServer::start().await;
    let api = Api::of(&server);
    // A checkpoint once one message is done: with the default of ten, the
    // last few acks may be fewer than ten past the last checkpoint, which
    // (as in v5) then waits for more work and never reaches the end.
    api.create("work-1", "g", json!({"minCheckPointCount": 1})).await;
    api.append("work-1", EVENTS).await;

    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for consumer in 0..4 {
        let api = api.clone();
        let acked_total = Arc::clone(&acked_total);
        consumers.push(tokio::spawn(async move {
            let name = format!("consumer-{consumer}");
            let mut acked = Vec::new();
            while acked_total.load(Ordering::SeqCst) < EVENTS {
                let (feed, messages) = api.take("work-1", "g", &name, 20, Some(1)).await;
                if messages.is_empty() {
                    continue;
                }
                api.ack_all(&feed).await;
                acked_total.fetch_add(messages.len(), Ordering::SeqCst);
                acked.extend(messages.iter().map(|m| m.number));
            }
            (name, acked)
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for consumer in consumers {
        let (name, acked) = consumer.await.unwrap();
        assert!(!acked.is_empty(), "{name} got work");
        total += acked.len();
        for number in acked {
            assert!(seen.insert(number), "event {number} acked twice");
        }
    }
    assert_eq!(total, EVENTS, "every event acked exactly once");
    assert_eq!(seen, (0..EVENTS as u64).collect::<HashSet<_>>(), "none lost");
    let info = api
        .wait_for_info("work-1", "g", "the final checkpoint", |info| {
            info["lastProcessedEventNumber"] == EVENTS as u64 - 1
        })
        .await;
    assert_eq!(info["totalInFlightMessages"], 0);
    assert_eq!(info["totalItemsProcessed"], EVENTS as u64);

    // Checkpoints are capped at one event for readers.
    let checkpoints = api.read_stream("$persistentsubscription-work-1::g-checkpoint").await;
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert_eq!(checkpoints[0]["eventType"], "$SubscriptionCheckpoint");
    assert_eq!(checkpoints[0]["data"], (EVENTS - 1).to_string());
}

#[tokio::test]
async fn an_unacked_message_is_redelivered_after_the_timeout() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("timeout-1", "g", json!({"messageTimeoutMilliseconds": 500})).await;
    api.append("timeout-1", 1).await;
    // Before the take that starts the message's timeout, so that however
    // slow the requests in between, the redelivery is at least 500 ms on.
    let started = Instant::now();
    let (_, first) = api.take("timeout-1", "g", "a", 1, None).await;
    assert_eq!(first.len(), 1);
    let (_, nothing) = api.take("timeout-1", "g", "b", 1, None).await;
    assert!(nothing.is_empty(), "in flight: nobody else gets it");

    let (feed, again) = api.take("timeout-1", "g", "b", 1, Some(10)).await;
    assert_eq!(again, first, "the same message, to whoever asks");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(8), "soon after the timeout");
    api.ack_all(&feed).await;
    let (_, done) = api.take("timeout-1", "g", "b", 1, Some(1)).await;
    assert!(done.is_empty(), "acked: never again");
}

#[tokio::test]
async fn a_message_is_parked_after_max_retries_and_replay_parked_brings_it_back() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create(
        "park-1",
        "g",
        json!({"messageTimeoutMilliseconds": 300, "maxRetryCount": 1, "minCheckPointCount": 1}),
    )
    .await;
    api.append("park-1", 1).await;
    let (_, first) = api.take("park-1", "g", "a", 1, None).await;
    assert_eq!(first[0].number, 0);
    // The first delivery and one retry time out; then it is parked.
    let (_, retried) = api.take("park-1", "g", "a", 1, Some(5)).await;
    assert_eq!(retried, first);
    let info = api
        .wait_for_info("park-1", "g", "the message to be parked", |info| info["parkedMessageCount"] == 1)
        .await;
    assert_eq!(info["parkedMessageUri"], server.url("/streams/$persistentsubscription-park-1%3A%3Ag-parked"));
    let parked =
        server.get("/streams/$persistentsubscription-park-1::g-parked/0", "application/octet-stream").await;
    assert_eq!(parked.status(), 200);
    assert_eq!(parked.text().await.unwrap(), "0@park-1", "a link to the parked event");
    let parked_entry = server.get_json("/streams/$persistentsubscription-park-1::g-parked/0").await;
    assert_eq!(parked_entry["summary"], "$>");

    // The group moves on: event 1 comes next, and the checkpoint passes 0.
    api.append("park-1", 1).await;
    let (feed, next) = api.take("park-1", "g", "a", 5, Some(5)).await;
    assert_eq!(next.iter().map(|m| m.number).collect::<Vec<_>>(), [1]);
    api.ack_all(&feed).await;

    let response = api.post_path("/subscriptions/park-1/g/replayParked", "a").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messagesToReplay"], 1);
    let (feed, replayed) = api.take("park-1", "g", "a", 5, Some(5)).await;
    assert_eq!(replayed, first, "the parked message, with its id");
    api.ack_all(&feed).await;
    api.wait_for_info("park-1", "g", "the parked stream to be emptied", |info| {
        info["parkedMessageCount"] == 0
    })
    .await;
    let info = api
        .wait_for_info("park-1", "g", "the checkpoint", |info| info["lastProcessedEventNumber"] == 1)
        .await;
    assert_eq!(info["totalInFlightMessages"], 0);
    let (_, nothing) = api.take("park-1", "g", "a", 5, None).await;
    assert!(nothing.is_empty());
}

#[tokio::test]
async fn each_nack_action_does_what_it_says() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("nack-1", "g", json!({"maxRetryCount": 5, "minCheckPointCount": 1})).await;
    api.append("nack-1", 5).await;
    let (_, taken) = api.take("nack-1", "g", "a", 5, None).await;
    let [retry, skip, park, stop, kept] = [0, 1, 2, 3, 4].map(|i| taken[i].clone());

    let nack = |path: String| {
        let api = api.clone();
        async move { api.post_path(&path, "a").await.status() }
    };
    assert_eq!(nack(format!("/subscriptions/nack-1/g/nack/{}", retry.id)).await, 202, "Retry is the default");
    assert_eq!(nack(format!("/subscriptions/nack-1/g/nack/{}?action=Skip", skip.id)).await, 202);
    assert_eq!(nack(format!("/subscriptions/nack-1/g/nack?ids={}&action=park", park.id)).await, 202);

    // Retry: delivered again at once, to anyone.
    let (feed, again) = api.take("nack-1", "g", "b", 5, None).await;
    assert_eq!(again, std::slice::from_ref(&retry));
    api.ack_all(&feed).await;
    // Park: in the parked stream.
    api.wait_for_info("nack-1", "g", "the park", |info| info["parkedMessageCount"] == 1).await;
    let parked =
        server.get("/streams/$persistentsubscription-nack-1::g-parked/0", "application/octet-stream").await;
    assert_eq!(parked.text().await.unwrap(), format!("{}@nack-1", park.number));

    // Stop: the nacked message and everything else `a` holds come back,
    // and `a` no longer counts as connected.
    let info = api.info("nack-1", "g").await;
    assert!(info["connections"].as_array().unwrap().iter().any(|c| c["connectionName"] == "a"));
    assert_eq!(nack(format!("/subscriptions/nack-1/g/nack/{}?action=Stop", stop.id)).await, 202);
    let info = api.info("nack-1", "g").await;
    assert!(!info["connections"].as_array().unwrap().iter().any(|c| c["connectionName"] == "a"), "{info:#}");
    let (feed, back) = api.take("nack-1", "g", "b", 5, None).await;
    assert_eq!(back, [stop, kept], "Skip never comes back");
    api.ack_all(&feed).await;
    let info = api
        .wait_for_info("nack-1", "g", "the checkpoint", |info| info["lastProcessedEventNumber"] == 4)
        .await;
    assert_eq!(info["totalInFlightMessages"], 0);
}

// ---- crash recovery ----

/// Consumers that take 20 at a time and ack each batch, recording every
/// message they received and how many they acked, until `stop` or an error.
async fn run_consumers(
    api: &Api,
    stream: &'static str,
    group: &'static str,
    received: Arc<Mutex<Vec<Message>>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|consumer| {
            let api = api.clone();
            let received = Arc::clone(&received);
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let name = format!("consumer-{consumer}");
                while !stop.load(Ordering::SeqCst) {
                    let Ok(response) = api
                        .client
                        .get(api.url(&format!("/subscriptions/{stream}/{group}/20?embed=rich")))
                        .header("accept", COMPETING_JSON)
                        .header("es-consumer", &name)
                        .header("es-longpoll", "1")
                        .send()
                        .await
                    else {
                        return;
                    };
                    let Ok(feed) = response.json::<Value>().await else { return };
                    let messages = messages_of(&feed);
                    if messages.is_empty() {
                        continue;
                    }
                    received.lock().unwrap().extend(messages.iter().cloned());
                    let Some(ack_all) = link(&feed, "ackAll") else { return };
                    match api.client.post(&ack_all).send().await {
                        Ok(response) if response.status() == 202 => {
                            acked.fetch_add(messages.len(), Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_delivery_resumes_at_the_checkpoint_and_redeliveries_are_bounded() {
    const EVENTS: usize = 3_000;
    const MAX_CHECKPOINT_COUNT: usize = 100;
    // Each consumer holds at most one batch of 20 at a time.
    const IN_FLIGHT: usize = 4 * 20;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let api = Api { client: client(), base: server.base.clone() };
    api.create(
        "crash-1",
        "g",
        json!({"maxCheckPointCount": MAX_CHECKPOINT_COUNT, "minCheckPointCount": 10, "checkPointAfterMilliseconds": 500}),
    )
    .await;
    api.append("crash-1", EVENTS).await;

    let before = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers =
        run_consumers(&api, "crash-1", "g", Arc::clone(&before), Arc::clone(&acked), Arc::clone(&stop)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < EVENTS / 3 {
        assert!(Instant::now() < deadline, "the consumers made progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.unwrap();
    }
    let before: Vec<Message> = before.lock().unwrap().clone();
    let acked_before = acked.load(Ordering::SeqCst);
    assert!(acked_before < EVENTS, "killed while consumers were active");

    let server = BinaryServer::start(&data_dir, &[]);
    let api = Api { client: client(), base: server.base.clone() };
    let after = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = run_consumers(
        &api,
        "crash-1",
        "g",
        Arc::clone(&after),
        Arc::new(AtomicUsize::new(0)),
        Arc::clone(&stop),
    )
    .await;
    let received_before: HashSet<u64> = before.iter().map(|m| m.number).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<u64> =
            after.lock().unwrap().iter().map(|m| m.number).chain(received_before.iter().copied()).collect();
        if seen.len() == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every event is delivered after the restart ({} of {EVENTS})",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.unwrap();
    }
    let after: Vec<Message> = after.lock().unwrap().clone();
    let all: BTreeSet<u64> = before.iter().chain(&after).map(|m| m.number).collect();
    assert_eq!(all, (0..EVENTS as u64).collect::<BTreeSet<_>>(), "no event skipped");
    let redelivered = after.iter().filter(|m| received_before.contains(&m.number)).count();
    eprintln!("acked before the crash: {acked_before}; redelivered after it: {redelivered}");
    assert!(
        redelivered <= IN_FLIGHT + MAX_CHECKPOINT_COUNT,
        "redeliveries ({redelivered}) are bounded by in flight ({IN_FLIGHT}) + maxCheckPointCount ({MAX_CHECKPOINT_COUNT}); \
         {acked_before} were acked before the crash"
    );
    let after_numbers: Vec<u64> = after.iter().map(|m| m.number).collect();
    let unique: HashSet<u64> = after_numbers.iter().copied().collect();
    assert_eq!(unique.len(), after_numbers.len(), "no duplicates after the restart");
}

// ---- long-polling ----

#[tokio::test]
async fn a_waiting_consumer_gets_a_message_appended_200_ms_later() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("live-1", "g", json!({})).await;
    let appender = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            api.append("live-1", 1).await;
        })
    };
    let started = Instant::now();
    let (_, messages) = api.take("live-1", "g", "c", 5, Some(30)).await;
    let waited = started.elapsed();
    appender.await.unwrap();
    assert_eq!(messages.len(), 1, "the long-poll answers with the new message");
    assert!(waited >= Duration::from_millis(150), "it waited for it ({waited:?})");
    assert!(waited < Duration::from_secs(10), "and did not wait for the timeout ({waited:?})");
}

#[tokio::test]
async fn a_long_poll_with_nothing_to_do_answers_empty_when_time_is_up_or_the_server_stops() {
    let mut server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("idle-1", "g", json!({})).await;
    let started = Instant::now();
    let (feed, messages) = api.take("idle-1", "g", "c", 1, Some(1)).await;
    assert!(messages.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited ({:?})", started.elapsed());
    assert!(link(&feed, "previous").is_some());

    let waiting = {
        let api = api.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = api.get_messages("idle-1", "g", "c", 1, Some(120)).await;
            (response.status(), started.elapsed())
        })
    };
    let info = api
        .wait_for_info("idle-1", "g", "the consumer waiting", |info| {
            info["connections"][0]["waitingRequests"] == 1
        })
        .await;
    assert_eq!(info["connectionCount"], 1, "a waiting consumer counts as connected");
    server.stop().await;
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(waited < Duration::from_secs(10), "shutdown ended the wait ({waited:?})");
}

// ---- strategies and consumers ----

#[tokio::test]
async fn pinned_keeps_every_event_of_a_stream_on_one_consumer() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("$ce-pin", "g", json!({"namedConsumerStrategy": "Pinned", "resolveLinktos": true})).await;
    // Both consumers join before there is work, so the streams are shared
    // between them from the start.
    for consumer in ["a", "b"] {
        let (_, nothing) = api.take("$ce-pin", "g", consumer, 1, None).await;
        assert!(nothing.is_empty());
    }
    for round in 0..5 {
        for stream in 0..8 {
            let response = server
                .post_events(&format!("pin-{stream}"), &json!([event("T", json!({"round": round}))]))
                .await;
            assert_eq!(response.status(), 201);
        }
    }
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered < 40 {
        assert!(Instant::now() < deadline, "all 40 delivered ({delivered})");
        for consumer in ["a", "b"] {
            let (feed, messages) = api.take("$ce-pin", "g", consumer, 3, None).await;
            for message in &messages {
                assert!(message.stream.starts_with("pin-"), "links are resolved: {message:?}");
                let previous = owner.insert(message.stream.clone(), consumer);
                assert!(previous.is_none_or(|p| p == consumer), "{} went to two consumers", message.stream);
            }
            delivered += messages.len();
            if !messages.is_empty() {
                api.ack_all(&feed).await;
            }
        }
    }
    assert_eq!(owner.len(), 8);
    assert!(owner.values().any(|c| *c == "a") && owner.values().any(|c| *c == "b"), "{owner:?}");
}

#[tokio::test]
async fn dispatch_to_single_serves_the_first_consumer_only() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("single-1", "g", json!({"namedConsumerStrategy": "DispatchToSingle"})).await;
    api.append("single-1", 6).await;
    let (_, first) = api.take("single-1", "g", "first", 2, None).await;
    assert_eq!(first.len(), 2);
    let (_, standby) = api.take("single-1", "g", "standby", 2, None).await;
    assert!(standby.is_empty(), "the standby gets nothing while the first is active");
    let (_, more) = api.take("single-1", "g", "first", 10, None).await;
    assert_eq!(more.len(), 4);
}

#[tokio::test]
async fn max_subscriber_count_refuses_new_consumers_with_429() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("full-1", "g", json!({"maxSubscriberCount": 2})).await;
    for consumer in ["a", "b"] {
        assert_eq!(api.get_messages("full-1", "g", consumer, 1, None).await.status(), 200);
    }
    let refused = api.get_messages("full-1", "g", "c", 1, None).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(reason(refused).await, "Maximum subscriber count reached");
    assert_eq!(api.get_messages("full-1", "g", "a", 1, None).await.status(), 200, "members stay welcome");
    let info = api.info("full-1", "g").await;
    assert_eq!(info["connectionCount"], 2);
}

#[tokio::test]
async fn without_a_consumer_header_a_consumer_is_its_address() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("anon-1", "g", json!({})).await;
    let response = server.get("/subscriptions/anon-1/g", COMPETING_JSON).await;
    assert_eq!(response.status(), 200);
    let info = api.info("anon-1", "g").await;
    assert_eq!(info["connections"][0]["connectionName"], "127.0.0.1");
}

// ---- sources ----

#[tokio::test]
async fn a_category_stream_delivers_links_or_resolved_events() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("$ce-cat", "links", json!({})).await;
    api.create("$ce-cat", "resolved", json!({"resolveLinktos": true, "minCheckPointCount": 1})).await;
    api.append("cat-1", 2).await;
    api.append("cat-2", 1).await;

    let (_, links) = api.take("$ce-cat", "links", "c", 10, None).await;
    assert_eq!(links.len(), 3);
    assert!(links.iter().all(|m| m.stream == "$ce-cat"), "{links:?}");
    let (feed, resolved) = api.take("$ce-cat", "resolved", "c", 10, None).await;
    let targets: Vec<(String, u64, u64)> =
        resolved.iter().map(|m| (m.stream.clone(), m.number, m.position)).collect();
    assert_eq!(targets, [("cat-1".into(), 0, 0), ("cat-1".into(), 1, 1), ("cat-2".into(), 0, 2)]);
    assert_eq!(feed["entries"][0]["summary"], "$>", "a resolved link is still shown as one");
    // Message ids are the links' (as in v5): acking by them works.
    api.ack_all(&feed).await;
    api.wait_for_info("$ce-cat", "resolved", "the checkpoint", |info| info["lastProcessedEventNumber"] == 2)
        .await;
}

#[tokio::test]
async fn an_all_group_sees_every_user_event_from_a_position_but_not_its_own_bookkeeping() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.append("before-1", 2).await;
    // The position of the last event so far, from the head page's ETag.
    let head = server.get("/streams/$all", "application/vnd.eventstore.atom+json").await;
    let etag = header(&head, "etag").unwrap();
    let position = etag.trim_matches('"').split(';').next().unwrap().to_owned();
    assert_eq!(position.len(), 32);

    api.create("$all", "from-position", json!({"startFrom": position})).await;
    api.create(
        "$all",
        "from-now",
        json!({"startFrom": -1, "minCheckPointCount": 1, "checkPointAfterMilliseconds": 100}),
    )
    .await;
    api.append("after-1", 2).await;

    let (_, from_position) = api.take("$all", "from-position", "c", 100, None).await;
    let streams: Vec<(String, u64)> = from_position.iter().map(|m| (m.stream.clone(), m.number)).collect();
    assert_eq!(streams[0], ("before-1".into(), 1), "starts at the position given");
    assert!(streams.contains(&("after-1".into(), 1)));
    assert!(
        streams.iter().all(|(stream, _)| !stream.contains("persistentsubscription")
            && !stream.contains("persistentSubscriptionConfig")),
        "no bookkeeping: {streams:?}"
    );

    let (feed, from_now) = api.take("$all", "from-now", "c", 100, None).await;
    let user: Vec<(String, u64)> =
        from_now.iter().map(|m| (m.stream.clone(), m.number)).filter(|(s, _)| !s.starts_with('$')).collect();
    assert_eq!(user, [("after-1".into(), 0), ("after-1".into(), 1)], "from now: only what came after");
    let start = api.info("$all", "from-now").await["lastCheckpointedEventPosition"].clone();
    assert_eq!(start.as_str().unwrap().len(), 32, "an $all position: {start}");
    api.ack_all(&feed).await;
    api.wait_for_info("$all", "from-now", "a checkpoint", |info| {
        info["lastCheckpointedEventPosition"] != start
    })
    .await;
    // Its own checkpoints are in $all but never delivered to it.
    let (_, after_checkpoint) = api.take("$all", "from-now", "c", 100, Some(1)).await;
    assert!(after_checkpoint.is_empty(), "{after_checkpoint:?}");
}

// ---- statistics ----

#[tokio::test]
async fn listings_and_info_carry_the_references_fields() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    api.create("stats-1", "a", json!({})).await;
    api.create("stats-1", "b", json!({})).await;
    api.create("stats-2", "a", json!({})).await;
    api.append("stats-1", 3).await;
    let (_, taken) = api.take("stats-1", "a", "worker", 2, None).await;
    assert_eq!(taken.len(), 2);

    let all: Value =
        server.client.get(server.url("/subscriptions")).send().await.unwrap().json().await.unwrap();
    let names: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (g["eventStreamId"].as_str().unwrap().to_owned(), g["groupName"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        names,
        [("stats-1".into(), "a".into()), ("stats-1".into(), "b".into()), ("stats-2".into(), "a".into())]
    );
    let one_stream: Value =
        server.client.get(server.url("/subscriptions/stats-1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one_stream.as_array().unwrap().len(), 2);
    let none = server.client.get(server.url("/subscriptions/nothing-here")).send().await.unwrap();
    assert_eq!(none.status(), 404);

    let info = api
        .wait_for_info("stats-1", "a", "the source's last event", |info| info["lastKnownEventNumber"] == 2)
        .await;
    for field in [
        "eventStreamId",
        "groupName",
        "status",
        "lastProcessedEventNumber",
        "lastKnownEventNumber",
        "connectionCount",
        "totalInFlightMessages",
        "parkedMessageUri",
        "getMessagesUri",
        "config",
        "parkedMessageCount",
        "averageItemsPerSecond",
        "totalItemsProcessed",
        "connections",
        "links",
    ] {
        assert!(!info[field].is_null(), "info has {field}: {info:#}");
    }
    assert_eq!(info["totalInFlightMessages"], 2);
    assert_eq!(info["connectionCount"], 1);
    assert_eq!(info["connections"][0]["connectionName"], "worker");
    assert_eq!(info["connections"][0]["inFlightMessages"], 2);
    assert_eq!(info["lastProcessedEventNumber"], -1, "nothing checkpointed yet");
    assert_eq!(info["getMessagesUri"], server.url("/subscriptions/stats-1/a/1"));
    assert_eq!(info["parkedMessageCount"], 0);
    assert!(["Live", "Behind"].contains(&info["status"].as_str().unwrap()));
}

// ---- no polling ----

/// CPU time (user + system) of a process, in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from `state`.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_and_waiting_consumers_cost_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("data"), &[]);
    let api = Api { client: client(), base: server.base.clone() };
    api.create("idle-cpu", "g", json!({})).await;
    api.create("$all", "everything", json!({})).await;
    api.append("idle-cpu", 5).await;
    // Fewer acks than minCheckPointCount (no timed checkpoint is due), one
    // message in flight, and a consumer waiting in a long-poll.
    let (feed, messages) = api.take("idle-cpu", "g", "a", 4, None).await;
    assert_eq!(messages.len(), 4);
    api.ack_all(&feed).await;
    let (_, held) = api.take("idle-cpu", "g", "a", 1, None).await;
    assert_eq!(held.len(), 1);
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.take("idle-cpu", "g", "b", 1, Some(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = cpu_ticks(server.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(server.child.id()) - before;
    // A busy loop burns ~200 ticks in 2 s; waiting burns none.
    assert!(used < 40, "the idle server used {used} clock ticks of CPU in 2 s");
    waiting.abort();
}
