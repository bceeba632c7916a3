//! Managing persistent subscription groups over HTTP, and their
//! statistics: creating, updating and deleting groups with v5's statuses,
//! replaying parked messages, `info` and the listings.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};

use super::super::AppState;
use super::super::auth::authorize_task;
use super::super::base_url::RequestUrls;
use super::super::caching::{content_type, header_value};
use super::super::error::HttpError;
use super::super::negotiate;
use super::super::params::{self, Segments};
use super::super::read_errors::ReadRoute;
use super::check_names;
use crate::feed::{self, Urls};
use crate::security::Principal;
use crate::security::acl::Task;
use crate::subscriptions::names::parked_stream;
use crate::subscriptions::{GroupInfo, Settings};

/// The largest settings document accepted.
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

async fn read_settings(body: Body, is_all: bool) -> Result<Settings, HttpError> {
    let bytes = match Limited::new(body, MAX_SETTINGS_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(HttpError::payload_too_large(format!(
                "A settings document is at most {MAX_SETTINGS_BYTES} bytes."
            )));
        }
        Err(error) => {
            return Err(
                HttpError::bad_request("Could not read the request body.").with_detail(error.to_string())
            );
        }
    };
    Settings::parse(&bytes, is_all).map_err(|invalid| HttpError::bad_request(invalid.to_string()))
}

fn with_location(status: StatusCode, urls: &Urls, stream: &str, group: &str) -> Response {
    let mut response = status.into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&urls.subscription(stream, group)));
    response
}

/// `PUT`: creates a group (201 with its `Location`; 409 if it exists).
pub(super) async fn create(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, group)): Segments<(String, String)>,
    body: Body,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    check_names(&stream, &group)?;
    let settings = read_settings(body, stream == feed::ALL_STREAM).await?;
    state.subscriptions()?.create(&stream, &group, settings).await?;
    Ok(with_location(StatusCode::CREATED, &urls, &stream, &group))
}

/// `POST`: replaces a group's settings (200; 404 if it does not exist).
pub(super) async fn update(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, group)): Segments<(String, String)>,
    body: Body,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    check_names(&stream, &group)?;
    let settings = read_settings(body, stream == feed::ALL_STREAM).await?;
    state.subscriptions()?.update(&stream, &group, settings).await?;
    Ok(with_location(StatusCode::OK, &urls, &stream, &group))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Segments((stream, group)): Segments<(String, String)>,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    check_names(&stream, &group)?;
    state.subscriptions()?.delete(&stream, &group).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST .../replayParked`: hands every message parked so far back to the
/// group (they are delivered before new ones).
pub(super) async fn replay_parked(
    State(state): State<AppState>,
    principal: Principal,
    Segments((stream, group)): Segments<(String, String)>,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    check_names(&stream, &group)?;
    let replaying = state.subscriptions()?.replay_parked(&stream, &group).await?;
    Ok(json_response(&json!({ "result": "Success", "messagesToReplay": replaying })))
}

/// `GET .../info`: a group's statistics.
pub(super) async fn info(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, group)): Segments<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    let read = async {
        check_names(&stream, &group)?;
        let info = state.subscriptions()?.info(&stream, &group).await?;
        Ok::<_, HttpError>(json_response(&info_json(&urls, &info)))
    };
    read.await.map_err(|error| error.answering_read(&headers, None, STATISTICS))
}

/// `GET /subscriptions`: every group's statistics.
pub(super) async fn list_all(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    match state.subscriptions()?.list(None).await {
        Ok(infos) => Ok(list_response(&urls, &infos)),
        Err(error) => Err(HttpError::from(error).answering_read(&headers, None, LISTING)),
    }
}

/// `GET /subscriptions/{stream}`: the groups of one stream; 404 when it
/// has none (as v5).
pub(super) async fn list_stream(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageSubscriptions)?;
    let read = async {
        params::stream_name(&stream)?;
        let infos = state.subscriptions()?.list(Some(&stream)).await?;
        if infos.is_empty() {
            return Err(HttpError::not_found("The stream has no subscription groups."));
        }
        Ok(list_response(&urls, &infos))
    };
    read.await.map_err(|error| error.answering_read(&headers, None, LISTING))
}

/// How v5 answers a failed read of statistics: its JSON codec's rendering
/// of no statistics, which is nothing for one group and `[]` for a list.
const STATISTICS: ReadRoute = ReadRoute::Labelled { media_type: negotiate::JSON, nothing: "" };
const LISTING: ReadRoute = ReadRoute::Labelled { media_type: negotiate::JSON, nothing: "[]" };

fn list_response(urls: &Urls, infos: &[GroupInfo]) -> Response {
    json_response(&Value::Array(infos.iter().map(|info| info_json(urls, info)).collect()))
}

fn json_response(value: &Value) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(negotiate::JSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// v5's `SubscriptionInfo`, with its field names. Numbers are event
/// numbers, or positions for `$all` (whose `...Position` fields are in the
/// 32-hex-digit form of `$all`'s links); -1 means none.
fn info_json(urls: &Urls, info: &GroupInfo) -> Value {
    let is_all = info.stream == feed::ALL_STREAM;
    let number = |value: Option<u64>| value.map_or(json!(-1), |n| json!(n));
    let position = |value: Option<u64>| match value {
        None => json!(null),
        Some(p) if is_all => json!(feed::format_position(p)),
        Some(n) => json!(n.to_string()),
    };
    let subscription = urls.subscription(&info.stream, &info.group);
    let stats = &info.stats;
    let last_processed = stats.checkpoint.last_processed();
    let connections: Vec<Value> = stats
        .connections
        .iter()
        .map(|connection| {
            json!({
                "from": connection.name,
                "connectionName": connection.name,
                "username": "",
                "inFlightMessages": connection.in_flight,
                "totalItemsProcessed": connection.processed,
                "waitingRequests": connection.waiting,
                "idleMilliseconds": u64::try_from(connection.idle.as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    json!({
        "links": [
            { "href": format!("{subscription}/info"), "rel": "detail" },
            { "href": format!("{subscription}/replayParked"), "rel": "replayParked" },
        ],
        "config": info.settings.to_json(),
        "eventStreamId": info.stream,
        "groupName": info.group,
        "status": stats.status,
        "averageItemsPerSecond": (stats.rate * 100.0).round() / 100.0,
        "parkedMessageUri": urls.stream(&parked_stream(&info.stream, &info.group)),
        "getMessagesUri": format!("{subscription}/1"),
        "totalItemsProcessed": stats.processed_total,
        "lastProcessedEventNumber": number(last_processed),
        "lastKnownEventNumber": number(info.last_known),
        "lastCheckpointedEventPosition": position(last_processed),
        "lastKnownEventPosition": position(info.last_known),
        "readBufferCount": stats.buffered,
        "retryBufferCount": stats.retrying,
        "totalInFlightMessages": stats.in_flight,
        "outstandingMessagesCount": stats.outstanding,
        "parkedMessageCount": info.parked_count,
        "connectionCount": stats.connections.len(),
        "connections": connections,
    })
}
