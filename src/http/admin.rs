//! `/admin`: operations on the server itself: scavenging, and stopping.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::auth::authorize_task;
use super::base_url::RequestUrls;
use super::caching::header_value;
use super::error::HttpError;
use super::params::Segments;
use crate::feed::time::rfc3339;
use crate::security::Principal;
use crate::security::acl::Task;
use crate::store::{ScavengeReport, ScavengeStarted};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/scavenge", post(start_scavenge))
        .route("/admin/scavenge/{id}", get(scavenge_report))
        .route("/admin/shutdown", post(shutdown))
}

/// Starts a scavenge: `202` with its `Location`. If one is already running,
/// `409` with the running one's `Location` (scavenges do not run twice at
/// once: they would only fight over the same work).
async fn start_scavenge(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::Scavenge)?;
    let (status, id) = match state.store.start_scavenge().await? {
        ScavengeStarted::Started(id) => {
            state.metrics.scavenge_started();
            (StatusCode::ACCEPTED, id)
        }
        ScavengeStarted::AlreadyRunning(id) => (StatusCode::CONFLICT, id),
    };
    let location = urls.absolute(&format!("/admin/scavenge/{id}"));
    let body = json!({
        "scavengeId": id,
        "scavengeLocation": location,
        "status": if status == StatusCode::ACCEPTED { "started" } else { "alreadyRunning" },
    });
    let mut response = (status, json_body(&body)).into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&location));
    Ok(response)
}

/// v5's `POST /admin/shutdown`: answers, then stops the server as SIGTERM
/// would (open requests finish, the store is flushed). Under a supervisor
/// that restarts it (the systemd unit does), this is a restart.
async fn shutdown(State(state): State<AppState>, principal: Principal) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::Shutdown)?;
    tracing::info!(by = principal.login().unwrap_or("?"), "shutdown requested");
    state.stop_requested.notify_one();
    Ok((StatusCode::OK, "Shutting down\n").into_response())
}

/// A scavenge's progress (while it runs) or result.
async fn scavenge_report(
    State(state): State<AppState>,
    principal: Principal,
    Segments((id,)): Segments<(String,)>,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::Scavenge)?;
    let id =
        Uuid::parse_str(&id).map_err(|_| HttpError::bad_request(format!("'{id}' is not a scavenge id")))?;
    let report = state
        .store
        .scavenge_report(id)
        .await?
        .ok_or_else(|| HttpError::not_found("No scavenge has this id."))?;
    Ok(json_body(&render(&report)).into_response())
}

fn render(report: &ScavengeReport) -> serde_json::Value {
    json!({
        "scavengeId": report.scavenge_id,
        "status": report.status,
        "started": rfc3339(report.started_micros),
        "finished": report.finished_micros.map(rfc3339),
        "streamsScanned": report.streams_scanned,
        "eventsRemoved": report.events_removed,
        "linksRemoved": report.links_removed,
        "keysCopied": report.keys_copied,
        "bytesBefore": report.bytes_before,
        "bytesAfter": report.bytes_after,
        "error": report.error,
    })
}

/// A JSON body that no cache may keep (it describes work in progress).
fn json_body(value: &serde_json::Value) -> Response {
    let mut response = value.to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
