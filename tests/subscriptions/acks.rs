//! `/subscriptions`: acknowledgements: acks and nacks and every nack
//! action, exactly-once sharing between consumers, redelivery after the
//! message timeout, parking and replay, and crash recovery of the real
//! binary (delivery resumes at the checkpoint).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::subscriptions::{Api, COMPETING_JSON, Message, messages_of};
use crate::common::{BinaryServer, TestServer, link, reason};
use serde_json::{Value, json};

// ---- acknowledgements ----

#[tokio::test]
async fn acks_and_nacks_answer_202_and_refuse_bad_ids() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let (_, messages) = api.set_up_and_take("ack-1", "g", json!({}), 2, "c", 2).await;
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
    api.set_up("work-1", "g", json!({"minCheckPointCount": 1}), EVENTS).await;

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
    api.set_up("timeout-1", "g", json!({"messageTimeoutMilliseconds": 500}), 1).await;
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
    let settings = json!({"messageTimeoutMilliseconds": 300, "maxRetryCount": 1, "minCheckPointCount": 1});
    let (_, first) = api.set_up_and_take("park-1", "g", settings, 1, "a", 1).await;
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
    let settings = json!({"maxRetryCount": 5, "minCheckPointCount": 1});
    let (_, taken) = api.set_up_and_take("nack-1", "g", settings, 5, "a", 5).await;
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
    let api = Api::of_binary(&server);
    let settings = json!({"maxCheckPointCount": MAX_CHECKPOINT_COUNT, "minCheckPointCount": 10, "checkPointAfterMilliseconds": 500});
    api.set_up("crash-1", "g", settings, EVENTS).await;

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
    let api = Api::of_binary(&server);
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
