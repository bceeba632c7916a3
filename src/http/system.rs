//! Server-level resources: `/ping`, and the answer for unknown routes.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::HttpError;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/ping", get(ping))
}

/// v5's liveness answer; clients call it to learn the server is up.
async fn ping() -> Response {
    let mut response = r#"{"text":"Ping request successfully handled"}"#.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "Not Found").with_detail("No resource lives at this URL.")
}
