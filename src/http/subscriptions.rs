//! `/subscriptions`: persistent subscriptions (competing consumers), section
//! 7 of the API reference, and where eventfeed goes past v5: `ES-LongPoll`
//! on the messages route, `$all` and system streams as sources, and a
//! consumer identity so the strategies mean something over HTTP.
//!
//! **Consumer identity.** A consumer names itself with the `ES-Consumer`
//! header (1 to [`MAX_CONSUMER_BYTES`] bytes, no control characters). Without
//! it, a consumer is the client's IP address, so processes on one machine
//! that send no header are one consumer; behind a proxy, every client is
//! the proxy's address, so send the header there.
//!
//! v5 clients sometimes put the query in the path, percent-encoded
//! (`/subscriptions/s/g/1%3Fembed=body`, v5's own `ack%3Fids=` links):
//! those forms are accepted too.
//!
//! This file serves the messages and their acks and nacks; managing the
//! groups and their statistics is in [`groups`].

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::percent_decode_str;
use tokio::time::{Instant, sleep_until};
use uuid::Uuid;

use super::AppState;
use super::auth::authorize;
use super::base_url::RequestUrls;
use super::caching::content_type;
use super::error::HttpError;
use super::live;
use super::negotiate::{self, COMPETING_JSON, COMPETING_XML};
use super::params::{self, EMBED_NAMES, Segments};
use super::read_errors::ReadRoute;
use crate::feed::{self, Embed, Urls, competing::competing_feed};
use crate::security::Principal;
use crate::security::acl::Access;
use crate::subscriptions::{Delivered, NackAction, SubscriptionError, names};

mod forward;
mod groups;

use self::groups::{create, delete, info, list_all, list_stream, replay_parked, update};

pub(super) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/subscriptions", get(list_all))
        .route("/subscriptions/{stream}", get(list_stream))
        .route("/subscriptions/{stream}/{group}", get(messages).put(create).post(update).delete(delete))
        .route("/subscriptions/{stream}/{group}/info", get(info))
        .route("/subscriptions/{stream}/{group}/replayParked", post(replay_parked))
        .route("/subscriptions/{stream}/{group}/ack", post(ack_many))
        .route("/subscriptions/{stream}/{group}/nack", post(nack_many))
        .route("/subscriptions/{stream}/{group}/ack/{id}", post(ack_one))
        .route("/subscriptions/{stream}/{group}/nack/{id}", post(nack_one))
        .route("/subscriptions/{stream}/{group}/{count}", get(messages_count).post(encoded_action))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), forward::to_owner))
}

/// The longest consumer name accepted, in bytes.
pub const MAX_CONSUMER_BYTES: usize = 256;

/// The most messages one request may take (v5's limit).
const MAX_MESSAGES: u64 = 100;

/// What the messages route offers, best first.
const COMPETING_TYPES: &[&str] = &[COMPETING_JSON, COMPETING_XML];

/// The consumer a request speaks for (see the module doc).
#[derive(Debug, Clone)]
struct Consumer(String);

impl<S: Send + Sync> FromRequestParts<S> for Consumer {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("es-consumer") {
            Some(value) => {
                let name = value.to_str().map(str::trim).unwrap_or("");
                if name.is_empty() || name.len() > MAX_CONSUMER_BYTES || name.chars().any(char::is_control) {
                    return Err(HttpError::bad_request("ES-Consumer header in wrong format.").with_detail(
                        format!("A consumer name is 1 to {MAX_CONSUMER_BYTES} bytes of text."),
                    ));
                }
                Ok(Self(name.to_owned()))
            }
            None => {
                let address = parts.extensions.get::<ConnectInfo<SocketAddr>>();
                Ok(Self(address.map_or_else(|| "anonymous".to_owned(), |info| info.0.ip().to_string())))
            }
        }
    }
}

impl From<SubscriptionError> for HttpError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::NotFound => {
                HttpError::not_found("No such subscription group. Create it with PUT first.")
            }
            SubscriptionError::AlreadyExists => HttpError::new(StatusCode::CONFLICT, "Conflict")
                .with_detail("The subscription group already exists; update it with POST."),
            SubscriptionError::Invalid(invalid) => HttpError::bad_request(invalid.to_string()),
            SubscriptionError::InvalidName(problem) => {
                HttpError::bad_request(problem).with_detail(names::group_name_rules())
            }
            SubscriptionError::GroupFull { retry_after } => {
                let seconds = retry_after.as_secs().max(1);
                HttpError::new(StatusCode::TOO_MANY_REQUESTS, "Maximum subscriber count reached")
                    .with_detail(
                        "The group has maxSubscriberCount active consumers; a consumer stops counting \
                         two message timeouts after its last request.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
            }
            SubscriptionError::Moved => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .with_detail(
                        "The persistent subscriptions are moving to another server of those sharing this \
                     store; retry in a moment.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from(1))
            }
            SubscriptionError::Store(error) => error.into(),
        }
    }
}

/// The query parameters these routes read, from the query string and from
/// a query percent-encoded into the last path segment.
#[derive(Debug, Default)]
struct SubscriptionQuery {
    embed: Option<String>,
    format: Option<String>,
    ids: Option<String>,
    action: Option<String>,
}

impl SubscriptionQuery {
    /// A parameter given twice (in the query, in the path, or in both) is
    /// `400`, as in every other query: which one counts would be a guess.
    fn parse(query: Option<&str>, from_segment: Option<&str>) -> Result<Self, HttpError> {
        let mut parsed = Self::default();
        for pair in [query, from_segment].into_iter().flatten().flat_map(|q| q.split('&')) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace('+', " ");
            let value = percent_decode_str(&value).decode_utf8_lossy().into_owned();
            let name = name.to_ascii_lowercase();
            let slot = match name.as_str() {
                "embed" => &mut parsed.embed,
                "format" => &mut parsed.format,
                "ids" => &mut parsed.ids,
                "action" => &mut parsed.action,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(HttpError::bad_request("Invalid query string")
                    .with_detail(format!("The parameter '{name}' is given twice.")));
            }
        }
        // As on every other route: a misspelt `embed` is not quietly `none`.
        if let Some(text) = parsed.embed.as_deref().filter(|text| Embed::parse(text).is_none()) {
            return Err(HttpError::bad_request(format!("unknown embed '{text}': use one of {EMBED_NAMES}")));
        }
        Ok(parsed)
    }

    /// [`SubscriptionQuery::parse`] for a read of messages: a refusal is
    /// answered as every failed read of the competing feed is.
    fn for_read(
        query: Option<&str>,
        from_segment: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, HttpError> {
        Self::parse(query, from_segment).map_err(|error| {
            let media_type = competing_media(headers, None).unwrap_or(COMPETING_JSON);
            error.answering_read(headers, None, ReadRoute::Labelled { media_type, nothing: "" })
        })
    }

    fn embed(&self) -> Embed {
        self.embed.as_deref().and_then(Embed::parse).unwrap_or_default()
    }
}

/// Splits a decoded path segment that carries a query (`1?embed=body`).
fn split_segment(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once('?') {
        Some((name, query)) => (name, Some(query)),
        None => (segment, None),
    }
}

fn check_names(stream: &str, group: &str) -> Result<(), HttpError> {
    params::stream_name(stream)?;
    if group.is_empty() {
        return Err(
            HttpError::bad_request("Invalid group name").with_detail("Group names must not be empty.")
        );
    }
    Ok(())
}

// ---- messages ----

async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    consumer: Consumer,
    Segments((stream, group)): Segments<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let headers = live::detached_if_long_poll(headers);
    authorize(&state, &principal, Access::Read, &stream).await?;
    let query = SubscriptionQuery::for_read(query.as_deref(), None, &headers)?;
    get_messages(&state, &urls, &consumer, &stream, &group, None, &query, &headers).await
}

async fn messages_count(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    consumer: Consumer,
    Segments((stream, group, count)): Segments<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let headers = live::detached_if_long_poll(headers);
    authorize(&state, &principal, Access::Read, &stream).await?;
    let (count, in_segment) = split_segment(&count);
    let query = SubscriptionQuery::for_read(query.as_deref(), in_segment, &headers)?;
    get_messages(&state, &urls, &consumer, &stream, &group, Some(count), &query, &headers).await
}

/// `GET /subscriptions/{stream}/{group}[/{count}]`: takes up to `count`
/// messages (default 1), waiting up to `ES-LongPoll` seconds for one.
#[allow(clippy::too_many_arguments)]
async fn get_messages(
    state: &AppState,
    urls: &Urls,
    consumer: &Consumer,
    stream: &str,
    group: &str,
    count: Option<&str>,
    query: &SubscriptionQuery,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        check_names(stream, group)?;
        let count = match count {
            None => 1,
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|count| {
                    (1..=MAX_MESSAGES).contains(count) && text.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "Message count must be an integer between 1 and {MAX_MESSAGES} 'count' ='{text}'"
                    ))
                })?,
        };
        let media = competing_media(headers, query.format.as_deref())?;
        let wait = params::long_poll(headers)?
            .map(|seconds| Duration::from_secs(seconds).min(state.limits.max_long_poll));
        let delivered = take_messages(state, stream, group, &consumer.0, count as usize, wait).await?;

        let messages = delivered.into_iter().map(|d| (d.message.id, d.message.event.clone())).collect();
        let competing = competing_feed(urls, stream, group, count, query.embed(), messages);
        let body = match media {
            COMPETING_XML => feed::atom::render_feed_with_entry_links(
                &competing.feed,
                urls,
                query.embed(),
                &competing.entry_links,
            ),
            _ => feed::json::render_feed_with_entry_links(
                &competing.feed,
                urls,
                query.embed(),
                &competing.entry_links,
            ),
        };
        let mut response = Response::new(Body::from(body));
        let response_headers = response.headers_mut();
        response_headers.insert(header::CONTENT_TYPE, content_type(media));
        // Every response hands out different messages: no cache may keep one.
        response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response_headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        Ok::<_, HttpError>(response)
    };
    let format = query.format.as_deref();
    // v5 labels a failure with the feed's type, over an empty body.
    let media_type = competing_media(headers, format).unwrap_or(COMPETING_JSON);
    let route = ReadRoute::Labelled { media_type, nothing: "" };
    read.await.map_err(|error| error.answering_read(headers, format, route))
}

/// The competing feed type: `?format=` first, then `Accept` (no `Accept`
/// or `*/*` gets JSON; a type naming neither is 406, as in v5).
fn competing_media(headers: &HeaderMap, format: Option<&str>) -> Result<&'static str, HttpError> {
    match format.map(str::to_ascii_lowercase).as_deref() {
        None => negotiate::choose(headers, None, COMPETING_TYPES),
        Some("json") => Ok(COMPETING_JSON),
        Some("xml" | "atom") => Ok(COMPETING_XML),
        Some(other) => {
            Err(HttpError::bad_request(format!("'{other}' is not a valid format. Use json or xml")))
        }
    }
}

/// Takes messages; with `wait`, a consumer with nothing to do waits until a
/// message is available to it, the time is up, or the server shuts down,
/// then answers with what it has (possibly nothing).
async fn take_messages(
    state: &AppState,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    wait: Option<Duration>,
) -> Result<Vec<Delivered>, HttpError> {
    let subscriptions = &state.subscriptions()?;
    // IMPORTANT: watch before taking, so a message that arrives between
    // the take and the wait wakes the wait.
    let mut changes = subscriptions.changes(stream, group)?;
    changes.borrow_and_update();
    let delivered = subscriptions.take_fresh(stream, group, consumer, count).await?;
    let Some(wait) = wait.filter(|_| delivered.is_empty()) else { return Ok(delivered) };

    // A waiting consumer is a waiter like any long-poll: it counts against
    // the server's cap (503 beyond it).
    let _permit = state.waiters.admit()?;
    // The consumer counts as connected for as long as it waits.
    let _waiting = subscriptions.waiting(stream, group, consumer)?;
    let deadline = Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    loop {
        if *shutdown.borrow_and_update() {
            return Ok(Vec::new());
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(SubscriptionError::NotFound.into());
                }
            }
            () = sleep_until(deadline) => return Ok(Vec::new()),
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(Vec::new());
                }
                continue;
            }
        }
        let delivered = subscriptions.take(stream, group, consumer, count)?;
        if !delivered.is_empty() {
            return Ok(delivered);
        }
    }
}

// ---- ack / nack ----

/// Parses message ids; v5's reason phrase for a bad one.
fn message_ids(text: Option<&str>) -> Result<Vec<Uuid>, HttpError> {
    let text = text.map(str::trim).filter(|text| !text.is_empty()).ok_or_else(|| {
        HttpError::bad_request("messageid should be a properly formed guid")
            .with_detail("Name the messages in the query: ?ids={id},{id}")
    })?;
    text.split(',')
        .map(|id| {
            Uuid::parse_str(id.trim()).map_err(|_| {
                HttpError::bad_request("messageid should be a properly formed guid")
                    .with_detail(format!("'{id}' is not a message id"))
            })
        })
        .collect()
}

/// `?action=`: `Retry` when absent.
fn nack_action(text: Option<&str>) -> Result<NackAction, HttpError> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(NackAction::Retry);
    };
    match text.to_ascii_lowercase().as_str() {
        "retry" => Ok(NackAction::Retry),
        "skip" => Ok(NackAction::Skip),
        "park" => Ok(NackAction::Park),
        "stop" => Ok(NackAction::Stop),
        _ => Err(HttpError::bad_request(format!("'{text}' is not a valid nack action"))
            .with_detail("Use Park, Retry, Skip or Stop.")),
    }
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

fn acknowledge(
    state: &AppState,
    consumer: &Consumer,
    stream: &str,
    group: &str,
    ids: &[Uuid],
    nack: Option<NackAction>,
) -> Result<Response, HttpError> {
    check_names(stream, group)?;
    match nack {
        None => state.subscriptions()?.ack(stream, group, &consumer.0, ids)?,
        Some(action) => state.subscriptions()?.nack(stream, group, &consumer.0, ids, action)?,
    }
    Ok(accepted())
}

async fn ack_one(
    State(state): State<AppState>,
    principal: Principal,
    consumer: Consumer,
    Segments((stream, group, id)): Segments<(String, String, String)>,
) -> Result<Response, HttpError> {
    authorize(&state, &principal, Access::Read, &stream).await?;
    let (id, _) = split_segment(&id);
    let ids = message_ids(Some(id))?;
    acknowledge(&state, &consumer, &stream, &group, &ids, None)
}

async fn nack_one(
    State(state): State<AppState>,
    principal: Principal,
    consumer: Consumer,
    Segments((stream, group, id)): Segments<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    authorize(&state, &principal, Access::Read, &stream).await?;
    let (id, in_segment) = split_segment(&id);
    let query = SubscriptionQuery::parse(query.as_deref(), in_segment)?;
    let ids = message_ids(Some(id))?;
    let action = nack_action(query.action.as_deref())?;
    acknowledge(&state, &consumer, &stream, &group, &ids, Some(action))
}

async fn ack_many(
    State(state): State<AppState>,
    principal: Principal,
    consumer: Consumer,
    Segments((stream, group)): Segments<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    authorize(&state, &principal, Access::Read, &stream).await?;
    let query = SubscriptionQuery::parse(query.as_deref(), None)?;
    let ids = message_ids(query.ids.as_deref())?;
    acknowledge(&state, &consumer, &stream, &group, &ids, None)
}

async fn nack_many(
    State(state): State<AppState>,
    principal: Principal,
    consumer: Consumer,
    Segments((stream, group)): Segments<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    authorize(&state, &principal, Access::Read, &stream).await?;
    let query = SubscriptionQuery::parse(query.as_deref(), None)?;
    let ids = message_ids(query.ids.as_deref())?;
    let action = nack_action(query.action.as_deref())?;
    acknowledge(&state, &consumer, &stream, &group, &ids, Some(action))
}

/// `POST /subscriptions/{s}/{g}/ack%3Fids=...` (and `nack`): the query
/// encoded into the path, as v5 wrote its own `ackAll` links.
async fn encoded_action(
    State(state): State<AppState>,
    principal: Principal,
    consumer: Consumer,
    Segments((stream, group, segment)): Segments<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    authorize(&state, &principal, Access::Read, &stream).await?;
    let (action, in_segment) = split_segment(&segment);
    let query = SubscriptionQuery::parse(query.as_deref(), in_segment)?;
    let nack = match action {
        "ack" => None,
        "nack" => Some(nack_action(query.action.as_deref())?),
        _ => return Err(HttpError::no_route()),
    };
    let ids = message_ids(query.ids.as_deref())?;
    acknowledge(&state, &consumer, &stream, &group, &ids, nack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_in_the_path_are_read_like_real_ones() {
        let (count, in_segment) = split_segment("5?embed=Body");
        assert_eq!(count, "5");
        let query = SubscriptionQuery::parse(Some("ids=a"), in_segment).expect("valid");
        assert_eq!(query.embed(), Embed::Body);
        assert_eq!(query.ids.as_deref(), Some("a"));
        assert!(SubscriptionQuery::parse(Some("embed=rich"), in_segment).is_err(), "given twice");
        assert!(SubscriptionQuery::parse(Some("ids=a&IDS=b"), None).is_err(), "given twice");
        let query = SubscriptionQuery::parse(Some("ids=a%2Cb&action=Park"), None).expect("valid");
        assert_eq!(query.ids.as_deref(), Some("a,b"));
        assert_eq!(nack_action(query.action.as_deref()).ok(), Some(NackAction::Park));
    }

    #[test]
    fn ids_and_actions_parse_strictly() {
        let id = Uuid::new_v4();
        assert_eq!(message_ids(Some(&format!("{id}, {id}"))).ok(), Some(vec![id, id]));
        for bad in [None, Some(""), Some("x"), Some(&format!("{id},"))] {
            let error = message_ids(bad).expect_err("bad ids");
            assert_eq!(error.reason, "messageid should be a properly formed guid");
        }
        assert_eq!(nack_action(None).ok(), Some(NackAction::Retry));
        assert_eq!(nack_action(Some("SKIP")).ok(), Some(NackAction::Skip));
        assert!(nack_action(Some("later")).is_err());
    }
}
