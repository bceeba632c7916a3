//! `/subscriptions`: the competing messages feed of a persistent
//! subscription: its shape in JSON and XML, negotiation and validation, v5
//! clients' quirks, what category and `$all` sources deliver, long-polling,
//! and idle groups and waiting consumers costing no CPU.

use std::time::{Duration, Instant};

use crate::common::subscriptions::{Api, COMPETING_JSON, COMPETING_XML, ids, messages_of};
use crate::common::{ATOM_JSON, BinaryServer, TestServer, header, link, reason};
use serde_json::{Value, json};

// ---- the messages feed ----

#[tokio::test]
async fn the_competing_feed_has_v5s_shape_in_json_and_xml() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let (feed, messages) = api.set_up_and_take("feed-1", "g", json!({}), 3, "c", 2).await;
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
    api.set_up("compat-1", "g", json!({}), 3).await;
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
    let api = Api::of_binary(&server);
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
