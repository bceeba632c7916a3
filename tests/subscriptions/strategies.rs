//! `/subscriptions`: which consumer gets which message: the `Pinned` and
//! `DispatchToSingle` strategies, `maxSubscriberCount`, and consumers
//! without an `ES-Consumer` header.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::subscriptions::{Api, COMPETING_JSON};
use crate::common::{TestServer, event, header, reason};
use serde_json::json;

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
    let settings = json!({"namedConsumerStrategy": "DispatchToSingle"});
    let (_, first) = api.set_up_and_take("single-1", "g", settings, 6, "first", 2).await;
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
