//! Accepting and serving connections: the accept loop, the cap on open
//! connections, and each connection's task.
//!
//! The server serves HTTP/1.1 with hyper itself rather than through
//! `axum::serve`, which sets no timeouts and cannot be given any: every
//! socket is wrapped in [`TimedIo`] and every request body in [`TimedBody`]
//! (see `timeouts`). The rest is what `axum::serve` did: `TCP_NODELAY`,
//! the peer's address as [`ConnectInfo`], and graceful shutdown. With TLS
//! on (see `tls`), each connection's task does the handshake before hyper
//! reads a request, within the header timeout, and marks each request
//! [`ServedOverTls`] so that its links say `https`.
//!
//! A connection takes a slot of the cap from its accept until its socket is
//! closed. With none free, a new connection is closed as soon as it is
//! accepted: the client learns at once, instead of waiting in the
//! listener's backlog behind idle sockets, and the descriptor is back
//! before the next accept. The cap is what keeps descriptors for the store
//! (see `descriptors`): only a refused connection, between its accept and
//! its close, holds one beyond it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::timeouts::{Activity, InFlight, TimedBody, TimedIo, Timeouts};
use super::tls::TlsHandshake;
use crate::http::HttpError;
use crate::http::base_url::ServedOverTls;
use crate::http::connection_slots::ConnectionSlots;

/// How long the accept loop pauses after an error that is not about one
/// connection (`EMFILE`, `ENFILE`, `ENOBUFS`): such an error repeats at
/// once, and retrying without a pause would spin a core while the
/// condition lasts. Short, because while it lasts nobody is accepted.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning this often about refused connections or accept
/// errors, each with the count since the last: a flood of connections
/// must not become a flood of log lines.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What the accept loop needs to know.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// The most connections open at once.
    pub max_connections: usize,
    pub timeouts: Timeouts,
}

/// Serves `app` on every connection `listener` accepts until `stop`
/// resolves; then accepts no more, closes idle connections, lets the
/// others finish their requests, and returns when every connection is
/// closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    slots: Arc<ConnectionSlots>,
    tls: Option<TlsHandshake>,
    stop: impl Future<Output = ()>,
) {
    // Every connection's task holds a receiver: the sender's `closed`
    // says when the last one has ended.
    let (stopping, stopping_seen) = watch::channel(false);
    let connection = Http1::new(app, limits.timeouts, tls);
    let mut refused = Warnings::default();
    let mut failed = Warnings::default();
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        match accepted {
            Ok((socket, peer)) => match slots.take() {
                Some(slot) => {
                    tokio::spawn(connection.clone().serve(socket, peer, slot, stopping_seen.clone()));
                }
                None => {
                    drop(socket);
                    if let Some(refused) = refused.due() {
                        tracing::warn!(
                            refused,
                            max_connections = limits.max_connections,
                            "too many connections open; closing new ones at once"
                        );
                    }
                }
            },
            Err(error) if is_about_one_connection(&error) => {}
            Err(error) => {
                if let Some(errors) = failed.due() {
                    tracing::warn!(%error, errors, "cannot accept connections; pausing between attempts");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(listener);
    drop(stopping_seen);
    // A send error only means no connection is left.
    let _ = stopping.send(true);
    stopping.closed().await;
}

/// Errors of `accept` that concern only the connection being accepted
/// (the client gave up), as hyper and axum tell them apart: the next
/// accept may succeed at once.
fn is_about_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Counts occurrences and says when one is due to be logged (see
/// [`WARNING_INTERVAL`]).
#[derive(Debug, Default)]
struct Warnings {
    since_last: u64,
    last: Option<Instant>,
}

impl Warnings {
    /// Counts one; returns the count to log, if a warning is due.
    fn due(&mut self) -> Option<u64> {
        self.since_last += 1;
        if self.last.is_some_and(|last| last.elapsed() < WARNING_INTERVAL) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since_last))
    }
}

/// Serves one connection: the TLS handshake if on, then hyper's HTTP/1.1
/// with the timeouts.
#[derive(Debug, Clone)]
struct Http1 {
    app: Router,
    timeouts: Timeouts,
    builder: hyper::server::conn::http1::Builder,
    /// The handshake of HTTPS connections; `None`: plain HTTP.
    tls: Option<TlsHandshake>,
}

impl Http1 {
    fn new(app: Router, timeouts: Timeouts, tls: Option<TlsHandshake>) -> Self {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header timeout is `TimedIo`'s: hyper's own restarts when a
        // response ends, so it would also close idle keep-alive
        // connections, long before proxies expect it.
        builder.header_read_timeout(None);
        Self { app, timeouts, builder, tls }
    }

    async fn serve(
        self,
        socket: TcpStream,
        peer: SocketAddr,
        _slot: OwnedSemaphorePermit,
        mut stopping: watch::Receiver<bool>,
    ) {
        // Responses are written whole; Nagle would only add latency.
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let Some(tls) = self.tls.clone() else {
            return self.serve_http(socket, peer, stopping).await;
        };
        // A client that connects and says nothing, or trickles its hello,
        // must not hold a slot: the handshake gets the header timeout
        // (hyper's reading of the first request then gets its own), and
        // shutdown does not wait for it.
        let handshake = tokio::time::timeout(self.timeouts.header, tls.accept(socket));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake not done in time");
                    return;
                }
            },
            _ = stopping.wait_for(|stopping| *stopping) => return,
        };
        // Boxed: a TLS stream makes this future some kilobytes larger,
        // and every plain connection's task would be allocated that large.
        Box::pin(self.serve_http(stream, peer, stopping)).await;
    }

    /// Serves HTTP/1.1 on `stream`, a socket or a TLS stream over one.
    async fn serve_http<S>(self, stream: S, peer: SocketAddr, mut stopping: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&activity), self.timeouts));
        let Self { app, timeouts, builder, tls } = self;
        let connection = Connection { peer, over_tls: tls.is_some() };
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request| {
            serve_request(app.clone(), request, connection, Arc::clone(&requests), timeouts)
        });
        let mut connection = pin!(builder.serve_connection(io, service));
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, %peer, "connection ended");
                }
                return;
            }
            _ = stopping.wait_for(|stopping| *stopping) => {}
        }
        // Shutting down. A connection between requests, or still sending
        // one's head, is closed at once; one serving a request finishes it.
        if !activity.serving() {
            return;
        }
        connection.as_mut().graceful_shutdown();
        if let Err(error) = connection.await {
            tracing::debug!(%error, %peer, "connection ended");
        }
    }
}

/// What the application learns of a request's connection.
#[derive(Debug, Clone, Copy)]
struct Connection {
    peer: SocketAddr,
    over_tls: bool,
}

/// Serves one request of a connection: the application, with the body
/// timed, what it needs of the connection at hand, and the request counted
/// as being served until its response body is done.
async fn serve_request(
    app: Router,
    request: Request<Incoming>,
    connection: Connection,
    activity: Arc<Activity>,
    timeouts: Timeouts,
) -> Result<Response<Served>, Infallible> {
    let in_flight = activity.begin();
    let (mut parts, body) = request.into_parts();
    // The peer address is the default identity of subscription consumers
    // (see `http::subscriptions`).
    parts.extensions.insert(ConnectInfo(connection.peer));
    if connection.over_tls {
        parts.extensions.insert(ServedOverTls);
    }
    let body = if body.is_end_stream() {
        Body::new(body)
    } else {
        Body::new(TimedBody::new(body, Arc::clone(&activity), timeouts))
    };
    let response = match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if activity.body_timed_out() { request_timeout(&response) } else { response };
    Ok(response.map(|body| Served { body, _in_flight: in_flight }))
}

/// The answer to a request whose body was too slow, whatever its handler
/// made of the error it read, keeping the handler's CORS headers so a
/// browser can read it (and `nosniff`, as on every response); the
/// connection closes after it, since the rest of the body is still on its
/// way.
fn request_timeout(handled: &Response<Body>) -> Response<Body> {
    let mut response = HttpError::new(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
        .with_detail("The request body paused too long, or arrived too slowly.")
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response();
    for (name, value) in handled.headers() {
        if name.as_str().starts_with("access-control-") || name == header::X_CONTENT_TYPE_OPTIONS {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// A response body that keeps its request counted as being served until
/// hyper is done with it: an SSE stream or a large page being written is
/// not idle.
#[derive(Debug)]
struct Served {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Served {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
