//! Subscription requests on a server that does not run the persistent
//! subscriptions (several servers share one PostgreSQL database, and one
//! of them runs every group: `subscriptions::owner`) go to the one that
//! does, unchanged: its answer, streamed back, is the answer. Consumers
//! may so call any server and still compete for one group's messages.
//!
//! What the forwarding server adds: `ES-Consumer`, when the client sent
//! none, set to the client's address, which is what the owner would have
//! named the consumer itself; and [`FORWARDED`], so that a request never
//! travels twice (a server that receives a forwarded request it cannot
//! serve answers `503` rather than forwarding it on). Who may ask is
//! decided by the owner, from the request's own `Authorization`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::{AppState, HttpError};
use crate::subscriptions::SubscriptionError;
use crate::subscriptions::owner::Role;

/// Marks a request one server forwarded to another.
pub const FORWARDED: &str = "x-eventfeed-forwarded";

/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The subscription routes' layer: serve here, forward, or say `503`.
pub(super) async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.subscription_host.role() {
        Role::Owner(_) => next.run(request).await,
        Role::Elsewhere(address) if !request.headers().contains_key(FORWARDED) => {
            forward(&address, request).await
        }
        Role::Elsewhere(_) | Role::Unknown => HttpError::from(SubscriptionError::Moved).into_response(),
    }
}

async fn forward(address: &str, mut request: Request) -> Response {
    let Some(authority) = address.strip_prefix("http://").map(str::to_owned) else {
        return unreachable(address, "not an http:// address");
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let headers = request.headers_mut();
    if !headers.contains_key("es-consumer") {
        if let Some(Ok(value)) = peer.map(|ip| HeaderValue::from_str(&ip.to_string())) {
            headers.insert("es-consumer", value);
        }
    }
    headers.insert(FORWARDED, HeaderValue::from_static("1"));
    // This hop's connection is not the next one's.
    headers.remove(header::CONNECTION);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return unreachable(address, &error.to_string()),
        Err(_) => return unreachable(address, "connecting timed out"),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(parts) => parts,
        Err(error) => return unreachable(address, &error.to_string()),
    };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a forwarded subscription request's connection ended");
        }
    });
    match sender.send_request(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => unreachable(address, &error.to_string()),
    }
}

/// The owner cannot be reached: `503`, to be retried. Its lease expires
/// unless it renews it, and then another server takes the groups over.
fn unreachable(address: &str, why: &str) -> Response {
    tracing::warn!(owner = %address, %why, "could not forward a subscription request");
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        .with_detail(format!(
            "The server that runs the persistent subscriptions ({address}) cannot be reached; \
             retry in a moment."
        ))
        .with_header(header::RETRY_AFTER, HeaderValue::from(1))
        .into_response()
}
