//! Server-level resources: `/ping`, `/info`, `/openapi.json`, the words
//! of a `405`, and the answer for unknown routes.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::activity::SAMPLE_EVERY;
use super::error::HttpError;
use super::read_errors::ReadRoute;
use crate::feed::time::rfc3339;
use crate::store::ScavengeReport;
use crate::store::projections::{Projection, STREAMS_STREAM};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/ping", get(ping)).route("/info", get(info)).route("/openapi.json", get(openapi))
}

/// The OpenAPI 3.1 description of every route (`docs/openapi.json`, checked
/// by a validator in `tests/openapi.rs`), for client generators and API tools.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // It changes only with the binary: an hour in caches is plenty.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600, public"));
    response
}

/// v5's `/info` fields (clients read `esVersion` to learn which API to
/// expect; eventfeed speaks 5.0's), plus live figures for operators and
/// the web UI's dashboard: what v5 spread over `/info` and `/stats`, in
/// one answer (see docs/http-api.md for why there is no `/stats`).
///
/// Everyone may read it, as v5's: it holds counts and rates, never a
/// stream's name or an event. Every figure is a counter read or a value
/// the sampler keeps (see [`activity`](super::activity)) but the number of
/// streams, one key lookup.
async fn info(State(state): State<AppState>) -> Response {
    let notifier = state.store.notifier();
    let next_position = notifier.next_position();
    // The built-in accounts anyone who knows v5 can log in to.
    let default_passwords = state.security.default_passwords().await.unwrap_or_default();
    let activity = state.activity.snapshot(next_position);
    let body = serde_json::json!({
        "esVersion": "5.0.12",
        "state": "master",
        "projectionsMode": "System",
        "eventfeedVersion": env!("CARGO_PKG_VERSION"),
        "nextPosition": next_position,
        "events": next_position,
        "streams": stream_count(&state).await,
        "storeBytes": activity.store_bytes,
        "startedAt": rfc3339(activity.started_micros),
        "uptimeSeconds": activity.uptime.as_secs(),
        "activity": {
            "sampleSeconds": SAMPLE_EVERY.as_secs(),
            "appendedEvents": activity.appended_events,
            "readsServed": activity.reads_served,
            "appendedPerSecond": rounded(&activity.appended_per_second),
            "readsPerSecond": rounded(&activity.reads_per_second),
        },
        "scavenge": state.store.latest_scavenge().map(|report| scavenge(&report)),
        "waiters": state.waiters.in_use(state.limits.max_waiters),
        "maxWaiters": state.limits.max_waiters,
        "projectionsBuilding": state.store.projections_building(),
        "writes": writes(&state),
        "defaultPasswords": default_passwords,
        "disk": state.store.disk_space().map(|disk| serde_json::json!({
            "freeBytes": disk.free_bytes,
            "minFreeBytes": disk.min_free_bytes,
        })),
    });
    let mut response = body.to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The user streams ever created: the length of `$streams`, which links
/// each stream's first event (so deleted streams still count), read from
/// its state in one lookup whatever the number of streams. `None` while
/// that projection is still being built from the log, or on a store that
/// never had it (turned off later, the count stops where `$streams` did:
/// the store does not say which projections are on).
pub(super) async fn stream_count(state: &AppState) -> Option<u64> {
    if state.store.projections_building().contains(&Projection::Streams.name()) {
        return None;
    }
    match state.store.stream_state(STREAMS_STREAM).await {
        Ok(Some(stream)) => Some(stream.next_number),
        // No stream yet, or the projection is off: only an empty store has
        // no `$streams` while it is on.
        Ok(None) if state.store.notifier().next_position() == 0 => Some(0),
        _ => None,
    }
}

/// Rates to two decimals: the chart needs no more, and the answer stays
/// short.
fn rounded(rates: &[f64]) -> Vec<f64> {
    rates.iter().map(|rate| (rate * 100.0).round() / 100.0).collect()
}

/// The running or last scavenge, in the words of `/admin/scavenge/{id}`
/// (which has the rest, for those allowed to scavenge).
fn scavenge(report: &ScavengeReport) -> serde_json::Value {
    serde_json::json!({
        "scavengeId": report.scavenge_id,
        "status": report.status,
        "started": rfc3339(report.started_micros),
        "finished": report.finished_micros.map(rfc3339),
        "eventsRemoved": report.events_removed,
        "bytesBefore": report.bytes_before,
        "bytesAfter": report.bytes_after,
        "error": report.error,
    })
}

/// Whether the store takes appends now, and if not, why.
fn writes(state: &AppState) -> serde_json::Value {
    let unreachable = state.store.unreachable();
    let reason = match (state.store.writes_stopped(), state.store.disk_space()) {
        (Some(stopped), _) => Some(format!("{stopped}; the server is stopping, and a restart recovers it")),
        (None, _) if unreachable.is_some() => {
            unreachable.map(|why| format!("{why}; appends get 503 until it is back"))
        }
        (None, Some(disk)) if disk.below_floor() => Some(format!(
            "the disk has {} bytes free, below the {} the store keeps (--min-free-mb): appends get 507 until space is freed",
            disk.free_bytes, disk.min_free_bytes
        )),
        _ => None,
    };
    serde_json::json!({ "accepting": reason.is_none(), "reason": reason })
}

/// v5's liveness answer; clients call it to learn the server is up. A
/// store whose writes failed answers `503`: the server is stopping so that
/// a restart recovers it (a full disk does not count: reads go on, and
/// appends resume once space is freed; `/info` says so).
async fn ping(State(state): State<AppState>) -> Response {
    if let Some(reason) = state.store.writes_stopped() {
        return HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            .with_detail(reason)
            .into_response();
    }
    let mut response = r#"{"text":"Ping request successfully handled"}"#.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A `405` says which methods the URL answers, in words as well as in
/// `Allow` (axum sends `Allow` and no body; v5 has no body either).
pub(super) fn explain_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let text = format!("Method Not Allowed\nThis URL answers {}.\n", allow.replace(',', ", "));
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// A URL no route serves: v5's empty `404` (a page for a browser).
pub(super) async fn not_found(headers: HeaderMap) -> HttpError {
    HttpError::no_route().answering_read(&headers, None, ReadRoute::Page)
}
