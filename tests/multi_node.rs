//! Several eventfeed nodes on one PostgreSQL database (issue 31): every
//! node serves the same bytes under the same ETags, a reader on one node
//! is woken by an append on another, `$all` read while both nodes append
//! at full speed shows every acknowledged event once, in order, with no
//! gap; and Varnish with the shipped cluster VCL
//! (`deploy/varnish/eventfeed-cluster.vcl`) spreads requests over the
//! nodes and drains one that is shutting down without a failed request;
//! persistent subscriptions: consumers on both nodes compete for one
//! group's messages, and a node killed while its consumers hold messages
//! leaves them to be delivered again through the other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use common::subscriptions::{Api, messages_of};
use common::varnish::Varnish;
use common::{ATOM_JSON, BinaryServer, EVENTS_JSON, client};

/// Two nodes on a fresh database; `None` where PostgreSQL is missing
/// outside CI.
fn two_nodes(extra: &[&str]) -> Option<(Vec<tempfile::TempDir>, [BinaryServer; 2])> {
    let url = common::postgres::database()?;
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |dir: &tempfile::TempDir| {
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(extra);
        BinaryServer::start(&dir.path().join("data"), &args)
    };
    let nodes = [start(&dirs[0]), start(&dirs[1])];
    Some((dirs, nodes))
}

async fn append(client: &reqwest::Client, base: &str, stream: &str, data: Value) -> reqwest::Response {
    client
        .post(format!("{base}/streams/{stream}"))
        .header("content-type", EVENTS_JSON)
        .body(json!([{"eventId": Uuid::new_v4(), "eventType": "Noted", "data": data}]).to_string())
        .send()
        .await
        .unwrap()
}

/// Appends `count` events to `stream` in one request.
async fn append_many(client: &reqwest::Client, base: &str, stream: &str, count: usize) -> reqwest::Response {
    let events: Vec<Value> = (0..count)
        .map(|n| json!({"eventId": Uuid::new_v4(), "eventType": "Noted", "data": {"n": n}}))
        .collect();
    client
        .post(format!("{base}/streams/{stream}"))
        .header("content-type", EVENTS_JSON)
        .body(Value::from(events).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_serve_the_same_bytes_and_wake_each_others_readers() {
    let Some((_dirs, [a, b])) = two_nodes(&[]) else { return };
    let client = client();
    for n in 0..25 {
        let node = if n % 2 == 0 { &a.base } else { &b.base };
        assert_eq!(append(&client, node, "shared", json!({"n": n})).await.status(), 201);
    }
    // The same page from either node: same status, ETag, caching, body.
    for path in
        ["/streams/shared/0/forward/20", "/streams/shared", "/streams/shared/3", "/streams/$ce-shared"]
    {
        let mut seen = Vec::new();
        for base in [&a.base, &b.base] {
            let response =
                client.get(format!("{base}{path}")).header("accept", ATOM_JSON).send().await.unwrap();
            let headers = response.headers().clone();
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            let status = response.status();
            let body = response.text().await.unwrap().replace(base.as_str(), "BASE");
            seen.push((status, header("etag"), header("cache-control"), body));
        }
        assert_eq!(seen[0], seen[1], "{path} is the same on both nodes");
    }

    // A long-poll at the head on B is answered by an append on A.
    let waiting = {
        let (client, url) = (client.clone(), format!("{}/streams/shared/25/forward/20", b.base));
        tokio::spawn(async move {
            let response =
                client.get(url).header("accept", ATOM_JSON).header("es-longpoll", "10").send().await.unwrap();
            let page: Value = response.json().await.unwrap();
            (Instant::now(), page)
        })
    };
    common::wait_for_waiters(&client, &b.base, 1).await;
    let appended = append(&client, &a.base, "shared", json!({"n": 25})).await;
    assert_eq!(appended.status(), 201);
    let acknowledged = Instant::now();
    let (woken, page) = waiting.await.unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "the waiter on B got A's event");
    eprintln!(
        "cross-node long-poll answered {:?} after the 201",
        woken.saturating_duration_since(acknowledged)
    );

    // Server-Sent Events on B carry what A appends.
    let mut events = client
        .get(format!("{}/streams/shared?from=26", b.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(append(&client, &a.base, "shared", json!({"n": 26})).await.status(), 201);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("26@shared") {
        let chunk =
            tokio::time::timeout_at(deadline.into(), events.chunk()).await.expect("an SSE event in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the stream stays open")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_read_while_both_nodes_append_shows_every_acknowledged_event_once_in_order() {
    let Some((_dirs, [a, b])) = two_nodes(&[]) else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for index in 0..8 {
        let base = if index % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let (stop, appended) = (Arc::clone(&stop), Arc::clone(&appended));
        writers.push(tokio::spawn(async move {
            let client = client();
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response =
                    append(&client, &base, &format!("w-{index}"), json!({"i": acknowledged.len()})).await;
                assert_eq!(response.status(), 201);
                let location = response.headers()["location"].to_str().unwrap().to_owned();
                acknowledged.push(location.replace(&base, ""));
                appended.fetch_add(1, Ordering::Relaxed);
            }
            acknowledged
        }));
    }
    // The reader follows $all forwards on node A while the writers run,
    // as a projection would, long-polling at the head.
    let reader = {
        let (base, stop) = (a.base.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let client = client();
            let mut seen: Vec<(u64, String)> = Vec::new();
            let mut url = format!("{base}/streams/$all/00000000000000000000000000000000/forward/50");
            let mut quiet_after_stop = 0;
            loop {
                let page: Value = client
                    .get(format!("{url}?embed=body"))
                    .header("accept", ATOM_JSON)
                    .header("es-longpoll", "1")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let entries = page["entries"].as_array().unwrap();
                // Entries are newest first within a page.
                for entry in entries.iter().rev() {
                    let position = entry["id"].as_str().unwrap().to_owned();
                    let stream = entry["streamId"].as_str().unwrap().to_owned();
                    let number = entry["eventNumber"].as_u64().unwrap();
                    seen.push((number, format!("{stream}|{position}")));
                }
                if entries.is_empty() && stop.load(Ordering::Relaxed) {
                    quiet_after_stop += 1;
                    if quiet_after_stop >= 2 {
                        return seen;
                    }
                }
                let links = page["links"].as_array().unwrap();
                if let Some(previous) = links.iter().find(|link| link["relation"] == "previous") {
                    url = previous["uri"].as_str().unwrap().to_owned();
                }
            }
        })
    };
    // A count, not a time: a slow machine takes longer to get there (in
    // CI once, 82 appends in 4 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    while appended.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "only {} appends in 120 s", appended.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let seen = reader.await.unwrap();
    assert!(acknowledged.len() >= 200, "the writers ran ({} appends)", acknowledged.len());
    // Every acknowledged event, once, at its Location; in $all each
    // writer's stream reads 0, 1, 2, … in order: nothing skipped (a reader
    // that passed an event committed late under a lower position would
    // miss a number), nothing twice, nothing out of order.
    let user_events: Vec<&String> =
        seen.iter().map(|(_, key)| key).filter(|key| key.starts_with("w-")).collect();
    let mut numbers: HashMap<&str, Vec<u64>> = HashMap::new();
    for (number, key) in seen.iter().filter(|(_, key)| key.starts_with("w-")) {
        numbers.entry(key.split_once('|').unwrap().0).or_default().push(*number);
    }
    for (stream, numbers) in &numbers {
        assert!(numbers.iter().copied().eq(0..numbers.len() as u64), "{stream} in $all: {numbers:?}");
    }
    let located: HashSet<String> = user_events
        .iter()
        .map(|key| {
            let (stream, id) = key.split_once('|').unwrap();
            let number = id.rsplit('/').next().unwrap();
            format!("/streams/{stream}/{number}")
        })
        .collect();
    for location in &acknowledged {
        assert!(located.contains(location), "acknowledged {location} seen in $all");
    }
    assert_eq!(located.len(), acknowledged.len(), "nothing in $all that was not acknowledged");
    eprintln!("$all followed on node A: {} events from 8 writers on two nodes", user_events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn varnish_spreads_requests_over_the_nodes_and_drains_a_stopping_one() {
    let Some((_dirs, [mut a, b])) = two_nodes(&["--shutdown-drain-secs", "4"]) else { return };
    let varnish = Varnish::start_cluster([a.addr, b.addr]).await;
    let client = client();
    let through = |path: &str| varnish.url(path);

    // Appends through Varnish land on both nodes (round robin): each
    // node's own counter of appends moves.
    for n in 0..10 {
        let response = client
            .post(through("/streams/spread"))
            .header("content-type", EVENTS_JSON)
            .body(json!([{"eventId": Uuid::new_v4(), "eventType": "Spread", "data": {"n": n}}]).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    for node in [&a, &b] {
        let metrics = client.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let appended: f64 = metrics
            .lines()
            .filter(|line| line.starts_with("eventfeed_appends_total{") && line.contains("outcome=\"ok\""))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(appended >= 1.0, "node {} took some of the appends", node.base);
    }

    // Node A starts a graceful shutdown: its readiness fails, Varnish's
    // probe marks it sick and sends everything to B before A stops. Not
    // one request through Varnish fails meanwhile.
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());
    let mut failures = Vec::new();
    let mut requests = 0;
    while signalled.elapsed() < Duration::from_secs(7) {
        let response = client
            .post(through("/streams/spread"))
            .header("content-type", EVENTS_JSON)
            .body(json!([{"eventId": Uuid::new_v4(), "eventType": "Spread", "data": {}}]).to_string())
            .send()
            .await
            .unwrap();
        requests += 1;
        if response.status() != 201 {
            failures.push(response.status());
        }
        let read = client.get(through("/streams/spread/0")).header("accept", ATOM_JSON).send().await.unwrap();
        requests += 1;
        if read.status() != 200 {
            failures.push(read.status());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.child.try_wait().unwrap().is_some(), "node A has stopped after its drain");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed while node A drained: {failures:?}",
        failures.len()
    );
}

/// Takes and acknowledges messages of `stream`/`group` through `api` as
/// `consumer` until `enough` messages were taken by everyone together;
/// returns the positions it was handed.
async fn consume(
    api: Api,
    stream: &str,
    group: &str,
    consumer: String,
    taken: Arc<AtomicU64>,
    enough: u64,
) -> Vec<u64> {
    let mut positions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken.load(Ordering::Relaxed) < enough {
        assert!(Instant::now() < deadline, "{consumer}: the group was not drained in time");
        let response = api.get_messages(stream, group, &consumer, 10, Some(1)).await;
        if response.status() == 503 {
            // The subscriptions are moving between the nodes.
            assert!(response.headers().contains_key("retry-after"));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(response.status(), 200, "{consumer} takes messages");
        let feed: Value = response.json().await.unwrap();
        let messages = messages_of(&feed);
        if messages.is_empty() {
            continue;
        }
        taken.fetch_add(messages.len() as u64, Ordering::Relaxed);
        positions.extend(messages.iter().map(|message| message.position));
        api.ack_all(&feed).await;
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_on_both_nodes_compete_for_one_group_and_get_each_message_once() {
    let Some((_dirs, [a, b])) = two_nodes(&[]) else { return };
    let apis = [Api::of_binary(&a), Api::of_binary(&b)];
    // Created through B, which forwards it to the node that runs the
    // subscriptions (A, the first to start).
    apis[1].create("cares", "counts", json!({"startFrom": 0, "messageTimeoutMilliseconds": 60_000})).await;
    apis[0].append("cares", 400).await;
    let taken = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for index in 0..4 {
        let api = apis[index % 2].clone();
        let taken = Arc::clone(&taken);
        consumers.push(tokio::spawn(consume(
            api,
            "cares",
            "counts",
            format!("consumer-{index}"),
            taken,
            400,
        )));
    }
    let mut everything = Vec::new();
    let mut per_node = [0, 0];
    for (index, consumer) in consumers.into_iter().enumerate() {
        let positions = consumer.await.unwrap();
        per_node[index % 2] += positions.len();
        everything.extend(positions);
    }
    everything.sort_unstable();
    assert_eq!(
        everything,
        (0..400).collect::<Vec<u64>>(),
        "each of the 400 messages handed out exactly once"
    );
    assert!(per_node[0] > 0 && per_node[1] > 0, "consumers on both nodes got messages: {per_node:?}");
    // Both nodes tell the same group's story.
    let info = apis[1].info("cares", "counts").await;
    assert_eq!(info["totalItemsProcessed"], 400, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_leased_on_a_killed_node_are_redelivered_through_the_other() {
    let Some((_dirs, [mut a, b])) = two_nodes(&[]) else { return };
    let apis = [Api::of_binary(&a), Api::of_binary(&b)];
    apis[0].create("work", "workers", json!({"startFrom": 0, "messageTimeoutMilliseconds": 60_000})).await;
    apis[0].append("work", 50).await;
    // A consumer on B holds ten messages, leased by A (which runs the
    // subscriptions), when A dies.
    let (_, held) = apis[1].take("work", "workers", "worker-b", 10, None).await;
    assert_eq!(held.len(), 10);
    a.kill9();
    let killed = Instant::now();

    let taken = Arc::new(AtomicU64::new(0));
    let positions = consume(apis[1].clone(), "work", "workers", "worker-b2".into(), taken, 50).await;
    let took_over = killed.elapsed();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (0..50).collect::<Vec<u64>>(), "every message, the ten leased by the dead node too");
    for message in &held {
        assert!(positions.contains(&message.position), "leased message {} redelivered", message.position);
    }
    eprintln!(
        "the other node took the subscriptions over and drained the group {took_over:?} after the kill"
    );
}

/// Polls `check` until it holds, for at most `within`; how long it took.
async fn settles<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "not settled within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// A page node B keeps in memory is answered there without asking the
/// database even for the stream's state; yet a `$tb` and a hard delete
/// written through node A reach it with their commit's notification, long
/// before the listener's safety poll (5 s) would forget every state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_kept_on_one_node_follows_writes_made_through_the_other() {
    let Some((_dirs, [a, b])) = two_nodes(&[]) else { return };
    let client = client();
    assert_eq!(append_many(&client, &a.base, "kept", 25).await.status(), 201);
    let page = |base: &str| {
        let request = client.get(format!("{base}/streams/kept/0/forward/20")).header("accept", ATOM_JSON);
        let base = base.to_owned();
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap().replace(&base, "BASE"))
        }
    };
    let first = page(&b.base).await;
    assert_eq!(first.0, 200);

    // The scrape itself reads `$streams`' state (the stream count).
    let wanted = [
        "eventfeed_page_cache_hits_total ",
        "eventfeed_database_query_duration_seconds_count{query=\"stream_state\"} ",
    ];
    let [hits_before, reads_before] = common::counters(&client, &b.base, wanted).await;
    for _ in 0..20 {
        assert_eq!(page(&b.base).await, first);
    }
    let [hits_after, reads_after] = common::counters(&client, &b.base, wanted).await;
    assert_eq!(hits_after - hits_before, 20.0, "every read again was answered from memory");
    let reads = reads_after - reads_before;
    eprintln!("20 kept pages and a scrape read a stream's state {reads} times");
    assert!(reads <= 1.0, "20 kept pages and a scrape read a stream's state {reads} times");

    // `$tb` through A: B's page changes to A's.
    let metadata = client
        .post(format!("{}/streams/kept/metadata", a.base))
        .header("content-type", "application/json")
        .body(json!({"$tb": 5}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 201);
    let truncated = page(&a.base).await;
    assert_ne!(truncated, first);
    let took = settles(Duration::from_millis(1500), || {
        let (page, truncated) = (page(&b.base), &truncated);
        async move { page.await == *truncated }
    })
    .await;
    eprintln!("a $tb written through A reached B's kept page in {took:?}");

    // A hard delete through A: B answers 410.
    let deleted = client
        .delete(format!("{}/streams/kept", a.base))
        .header("es-harddelete", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let took = settles(Duration::from_millis(1500), || {
        let page = page(&b.base);
        async move { page.await.0 == 410 }
    })
    .await;
    eprintln!("a hard delete through A reached B's kept page in {took:?}");
}

/// A projection turned off and on again through one node (issue 30):
/// both nodes follow the database's projections from their next batch;
/// the build from the log runs while the other node appends, and ends
/// with every event of the category linked once, in position order,
/// numbered densely, as live maintenance would have linked it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_turned_on_through_one_node_is_built_while_the_other_appends() {
    let Some(url) = common::postgres::database() else { return };
    let cluster = common::postgres::cluster().unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |dir: &tempfile::TempDir, by_category: &str| {
        BinaryServer::start(
            &dir.path().join("data"),
            &["--store", &url, "--projection-by-category", by_category],
        )
    };
    let a = start(&dirs[0], "true");
    let mut b = start(&dirs[1], "true");
    let client = client();
    // More events than one step of a build links (5,000), through both.
    for batch in 0..60 {
        let node = if batch % 2 == 0 { &a.base } else { &b.base };
        let stream = format!("Order-{}", batch % 7);
        assert_eq!(append_many(&client, node, &stream, 200).await.status(), 201);
    }
    let linked = |stream: &str| {
        let sql = format!(
            "SELECT count(*) FROM link_runs, unnest(link_streams) AS target \
             WHERE stream = '$ce-Order' AND target = '{stream}'"
        );
        cluster.psql(&database, &sql).unwrap()
    };

    // Off through b: a, started with it on, no longer links either.
    b.terminate();
    let mut b = start(&dirs[1], "false");
    assert_eq!(append(&client, &a.base, "Order-late", json!({})).await.status(), 201);
    assert_eq!(linked("Order-late"), "0", "not linked while off");

    // On again through b, while a appends.
    b.terminate();
    let b = start(&dirs[1], "true");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (client, base, stop) = (client.clone(), a.base.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < 5_000 {
                assert_eq!(append(&client, &base, "Order-live", json!({})).await.status(), 201);
                written += 1;
            }
            written
        })
    };
    common::wait_for_projections(&client, &b.base).await;
    stop.store(true, Ordering::Relaxed);
    let written = appender.await.unwrap();
    common::wait_for_projections(&client, &a.base).await;
    // Linked live from now on, through either node.
    assert_eq!(append(&client, &a.base, "Order-live", json!({})).await.status(), 201);
    assert_eq!(append(&client, &b.base, "Order-live", json!({})).await.status(), 201);

    let expected = 60 * 200 + 1 + written + 2;
    assert_eq!(
        cluster.category_agreement(&database, "Order"),
        format!("{expected} {expected} {expected} {expected}")
    );
    assert_eq!(linked("Order-late"), "1");
    // The projection left on was linked live throughout.
    let noted = cluster
        .psql(&database, "SELECT sum(cardinality(positions)) FROM link_runs WHERE stream = '$et-Noted'")
        .unwrap();
    assert_eq!(noted, expected.to_string());
    // Both nodes serve the same head page of the rebuilt stream.
    let head = |base: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("{base}/streams/$ce-Order"))
                .header("accept", ATOM_JSON)
                .header("host", "eventfeed.test")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let (page_a, page_b) = (head(a.base.clone()).await, head(b.base.clone()).await);
    assert!(page_a == page_b, "the nodes' pages differ:\n{page_a}\n{page_b}");
    let page: Value = serde_json::from_str(&page_a).unwrap();
    assert_eq!(page["entries"][0]["title"], format!("{}@Order-live", written + 1));
    eprintln!("{written} appends through the other node while the build ran");
}
