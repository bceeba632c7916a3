//! `/subscriptions`: managing persistent subscription groups (section 7 of
//! the API reference): creating, updating and deleting them with v5's
//! statuses, validating their settings, keeping groups, settings and
//! checkpoints across a restart of the real binary, and the listings and
//! `info` statistics.

use crate::common::subscriptions::Api;
use crate::common::{BinaryServer, TestServer, header, reason};
use serde_json::{Value, json};

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
    let api = Api::of_binary(&server);
    let settings = json!({"maxRetryCount": 3, "namedConsumerStrategy": "Pinned"});
    let (feed, acked) = api.set_up_and_take("restart-1", "g", settings, 10, "c", 5).await;
    assert_eq!(acked.len(), 5);
    api.ack_all(&feed).await;
    let (_, unacked) = api.take("restart-1", "g", "c", 2, None).await;
    assert_eq!(unacked.iter().map(|m| m.number).collect::<Vec<_>>(), [5, 6]);
    server.terminate();

    let server = BinaryServer::start(&data_dir, &[]);
    let api = Api::of_binary(&server);
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
