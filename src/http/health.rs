//! `/health/live` and `/health/ready`: the probes of a load balancer or
//! Kubernetes. Anyone may call them (they say nothing a stranger could use
//! beyond whether the node takes traffic), they answer from memory without
//! touching the store, and they are never cached.
//!
//! - **live**: the process answers. Always `200` while it can answer at
//!   all; restarting a live node would not help it.
//! - **ready**: the node should get traffic. `503` from the start of a
//!   graceful shutdown (so a load balancer drains it before it stops: the
//!   server keeps serving for `--shutdown-drain-secs` first), once
//!   a failed commit stopped the store (the server is stopping), and while
//!   appends are refused because the disk is below `--min-free-mb` (reads
//!   still work, but a writer would get 507 here and should go elsewhere),
//!   and while the store's database is away (PostgreSQL: appends get 503
//!   until it is back, and ready turns 200 by itself then).
//!   The store is open whenever the server answers at all: it is opened
//!   before the server binds and closed after it stops answering.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/health/live", get(live)).route("/health/ready", get(ready))
}

async fn live() -> Response {
    respond(StatusCode::OK, &json!({ "status": "live" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match not_ready_because(&state) {
        None => respond(StatusCode::OK, &json!({ "status": "ready" })),
        Some(reason) => {
            respond(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "not ready", "reason": reason }))
        }
    }
}

/// Why the node should get no traffic now, if it should not.
fn not_ready_because(state: &AppState) -> Option<String> {
    if *state.draining.borrow() || *state.shutdown.borrow() {
        return Some("shutting down".to_owned());
    }
    if let Some(stopped) = state.store.writes_stopped() {
        return Some(format!("the store takes no writes: {stopped}"));
    }
    if let Some(unreachable) = state.store.unreachable() {
        return Some(format!("the store takes no writes for now: {unreachable}"));
    }
    match state.store.disk_space() {
        Some(disk) if disk.below_floor() => Some(format!(
            "the disk has {} bytes free, below the {} the store keeps (--min-free-mb): appends are refused",
            disk.free_bytes, disk.min_free_bytes
        )),
        _ => None,
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
