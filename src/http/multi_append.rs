//! `POST /streams`: one append to several streams, all or nothing, each
//! part with its own expected version. EventStore never had it; eventfeed's
//! writer commits many requests in one batch anyway, so one request's parts
//! are simply one batch's appends that stand or fall together. The recipe
//! it enables (a synchronous uniqueness check without a second store) is in
//! the README.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::auth::{authorize_append, write_checked};
use super::base_url::RequestUrls;
use super::error::HttpError;
use super::events_body::{self, EventsFormat, read_body};
use super::metrics::AppendResult;
use super::negotiate::{self, JSON};
use super::{AppState, params, streams};
use crate::security::Principal;
use crate::store::{Append, AppendOutcome, Conflict, ExpectedVersion, StoreError};

/// Its own media type, besides `application/json`.
pub const MULTI_APPEND: &str = "application/vnd.eventfeed.multi-append+json";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/streams", post(append_all))
}

/// One part of the request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PartBody {
    stream: String,
    /// `-2` (any, the default), `-1` (no stream), `-4` (exists) or the
    /// stream's last event number.
    #[serde(default)]
    expected_version: Option<i64>,
    /// An events array, as `POST /streams/{s}` takes it.
    events: Box<RawValue>,
}

async fn append_all(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let is_json = negotiate::content_type(&headers)
        .is_some_and(|media_type| media_type == JSON || media_type == MULTI_APPEND);
    if !is_json {
        return Err(HttpError::unsupported_media_type(&[JSON, MULTI_APPEND]));
    }
    let bytes = read_body(body, state.limits.max_request_bytes).await?;
    let appends = parse(&bytes, state.limits.max_event_bytes)?;
    let streams: Vec<String> = appends.iter().map(|append| append.stream.clone()).collect();
    // Every part is checked before anything is written: one denied part
    // refuses all.
    let mut appends = appends;
    for append in &mut appends {
        append.access = authorize_append(&state, &principal, &append.stream).await?;
    }
    let events = appends.iter().map(|append| append.events.len()).sum();
    let written = write_checked(&state, &principal, appends, |appends| state.store.append_all(appends));
    let written = written.await?;
    let result = AppendResult::of(&written, |outcomes| outcomes.iter().all(|outcome| outcome.idempotent));
    state.metrics.append(result, events);
    let outcomes = match written {
        Ok(outcomes) => outcomes,
        Err(StoreError::Conflicts(conflicts)) => return Ok(conflict(&conflicts)),
        Err(error) => return Err(error.into()),
    };
    let parts: Vec<_> = streams
        .iter()
        .zip(&outcomes)
        .map(|(stream, outcome)| {
            json!({
                "stream": stream,
                "firstEventNumber": outcome.first_number,
                "lastEventNumber": outcome.last_number,
                "location": urls.event(stream, outcome.first_number),
            })
        })
        .collect();
    let mut body = json!({ "streams": parts });
    if let Some(positions) = positions(&outcomes) {
        body["positions"] = json!({ "first": positions.0, "last": positions.1 });
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

/// The request's parts, each checked as a single append's would be.
fn parse(bytes: &[u8], max_event_bytes: usize) -> Result<Vec<Append>, HttpError> {
    let parts: Vec<PartBody> = serde_json::from_slice(bytes).map_err(|error| {
        HttpError::bad_request("Write request body invalid.").with_detail(format!(
            "Send a JSON array of {{\"stream\", \"expectedVersion\", \"events\"}} objects: {error}"
        ))
    })?;
    parts
        .into_iter()
        .map(|part| {
            let in_part = |error: HttpError| {
                let detail = error.detail.clone().unwrap_or_default();
                error.with_detail(format!("Stream '{}': {detail}", part.stream))
            };
            params::user_stream(&part.stream).map_err(in_part)?;
            let expected = match part.expected_version {
                None => ExpectedVersion::Any,
                Some(number) => ExpectedVersion::parse(&number.to_string()).ok_or_else(|| {
                    in_part(HttpError::bad_request("expectedVersion in wrong format.").with_detail(
                        "Use -2 (any), -1 (the stream must not exist), -4 (it must exist) or its last event number.",
                    ))
                })?,
            };
            let events = events_body::parse_events(EventsFormat::Json, part.events.get().as_bytes())
                .map_err(in_part)?;
            streams::check_event_sizes(&events, max_event_bytes).map_err(in_part)?;
            Ok(Append { stream: part.stream, expected, events, access: None })
        })
        .collect()
}

/// The first and last positions a write took: consecutive, since one
/// commit wrote them all. `None` for a repeated request.
fn positions(outcomes: &[AppendOutcome]) -> Option<(u64, u64)> {
    let first = outcomes.iter().filter_map(|outcome| outcome.position).min()?;
    let events: u64 = outcomes.iter().map(|outcome| outcome.last_number - outcome.first_number + 1).sum();
    Some((first, first + events - 1))
}

/// `409 Conflict`, naming every part whose expected version did not hold.
fn conflict(conflicts: &[Conflict]) -> Response {
    let parts: Vec<_> = conflicts
        .iter()
        .map(|Conflict { stream, expected, current }| {
            json!({
                "stream": stream,
                "expectedVersion": expected.to_string().parse::<i64>().unwrap_or(-2),
                "currentVersion": current,
            })
        })
        .collect();
    let body = json!({
        "error": "Expected versions did not hold; nothing was written.",
        "conflicts": parts,
    });
    json_response(StatusCode::CONFLICT, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
