//! A client for `/subscriptions` (persistent subscriptions): [`Api`]
//! creates groups, appends, takes messages from the competing feed and
//! acknowledges them, reads a group's info; [`Message`] is one message of
//! that feed as a consumer sees it.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::{Client, Response};
use serde_json::{Value, json};

use super::http::{EVENTS_JSON, client, event};
use super::pages::{link, read_all_events};
use super::server::{BinaryServer, TestServer};

pub const COMPETING_JSON: &str = "application/vnd.eventstore.competingatom+json";
pub const COMPETING_XML: &str = "application/vnd.eventstore.competingatom+xml";

/// One message of a competing feed, as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// From the entry's `ack` link.
    pub id: String,
    /// The event's stream and number (`streamId`, `eventNumber`).
    pub stream: String,
    pub number: u64,
    /// Where it sits in the subscribed stream (`positionEventNumber`).
    pub position: u64,
}

/// A client for one server.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
}

impl Api {
    pub fn of(server: &TestServer) -> Self {
        Self { client: server.client.clone(), base: server.base.clone() }
    }

    /// For the real binary, with a client of its own.
    pub fn of_binary(server: &BinaryServer) -> Self {
        Self { client: client(), base: server.base.clone() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn put_group(&self, stream: &str, group: &str, settings: &Value) -> Response {
        self.client
            .put(self.url(&format!("/subscriptions/{stream}/{group}")))
            .header("content-type", "application/json")
            .body(settings.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn create(&self, stream: &str, group: &str, settings: Value) {
        let response = self.put_group(stream, group, &settings).await;
        assert_eq!(response.status(), 201, "create {stream}/{group}: {}", response.text().await.unwrap());
    }

    /// The set-up most tests start with: `group` on `stream`, created with
    /// `settings`, and `events` events appended to `stream`.
    pub async fn set_up(&self, stream: &str, group: &str, settings: Value, events: usize) {
        self.create(stream, group, settings).await;
        self.append(stream, events).await;
    }

    /// [`Api::set_up`], then a first take of up to `count` messages by
    /// `consumer`; returns the feed and its messages.
    pub async fn set_up_and_take(
        &self,
        stream: &str,
        group: &str,
        settings: Value,
        events: usize,
        consumer: &str,
        count: usize,
    ) -> (Value, Vec<Message>) {
        self.set_up(stream, group, settings, events).await;
        self.take(stream, group, consumer, count, None).await
    }

    /// Appends `count` events of type `Tested` with data `{"n": i}`.
    pub async fn append(&self, stream: &str, count: usize) {
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

    pub async fn get_messages(
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
    pub async fn take(
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

    pub async fn post(&self, url: &str) -> Response {
        self.client.post(url).send().await.unwrap()
    }

    pub async fn post_path(&self, path: &str, consumer: &str) -> Response {
        self.client.post(self.url(path)).header("es-consumer", consumer).send().await.unwrap()
    }

    pub async fn ack_all(&self, feed: &Value) {
        let url = link(feed, "ackAll").expect("an ackAll link");
        let response = self.post(&url).await;
        assert_eq!(response.status(), 202);
    }

    pub async fn info(&self, stream: &str, group: &str) -> Value {
        let response =
            self.client.get(self.url(&format!("/subscriptions/{stream}/{group}/info"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls `info` until `check` holds (statistics settle asynchronously).
    pub async fn wait_for_info(
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
    pub async fn read_stream(&self, stream: &str) -> Vec<Value> {
        read_all_events(&self.client, &self.base, stream).await
    }
}

pub fn messages_of(feed: &Value) -> Vec<Message> {
    let mut messages: Vec<Message> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let ack = link(entry, "ack").expect("every entry has an ack link");
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

pub fn ids(messages: &[Message]) -> String {
    messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(",")
}
