//! The HTTP layer: one module per resource, each with its own `router()`,
//! merged here, with every layer applied in one place ([`router`]). Only
//! this module knows about headers and status codes.
//!
//! The resources share a few modules below them: `pages` is the one
//! page-read pipeline (stream, `$all` and metadata pages, single events;
//! `as_of` reads its pages as of a past `$all` position or time),
//! `live` the long-polls and Server-Sent Events, `activity` the counters
//! and rates `/info` reports, `events_body` reading and
//! parsing request bodies (`encoding` decodes them first), and
//! `negotiate`, `params`, `caching`,
//! `base_url`, `error` and `read_errors` (a failed read answered as v5
//! answers it) the pieces every handler uses; `cors` says which other
//! sites' pages may call the server; `auth` turns credentials into a
//! principal and checks it (`challenge` words the 401s to the web UI's own
//! calls); `metrics` records what `scrape` serves at `/metrics` (and
//! times every request), `health`
//! the load balancer's probes; `ui` serves the web UI's files
//! (and its entry page to a browser asking for a stream, the one piece of
//! it `streams` uses). Resource modules
//! import shared ones, never each other; only this file names them, to
//! merge their routers.

pub mod activity;
mod admin;
mod as_of;
mod auth;
pub mod base_url;
pub mod caching;
mod challenge;
pub mod client;
pub mod connection_slots;
pub mod cors;
mod encoding;
pub mod error;
pub mod events_body;
mod export;
mod health;
pub mod live;
mod metadata;
pub mod metrics;
mod multi_append;
pub mod negotiate;
pub mod page_cache;
mod pages;
mod params;
mod read_errors;
mod scrape;
mod stream_list;
mod streams;
mod subscriptions;
mod system;
mod track_requests;
mod ui;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::store::Store;

pub use error::HttpError;

/// Limits that protect the server from oversized or overlong requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Data plus metadata of one event, in bytes (`413` beyond).
    pub max_event_bytes: usize,
    /// One request body, in bytes (`413` beyond).
    pub max_request_bytes: usize,
    /// The longest `ES-LongPoll` wait honoured; longer requests are capped.
    pub max_long_poll: Duration,
    /// Concurrent long-poll waiters and SSE streams; `503` beyond.
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 4 * 1024 * 1024,
            max_request_bytes: 64 * 1024 * 1024,
            max_long_poll: Duration::from_secs(300),
            max_waiters: 50_000,
        }
    }
}

/// What every handler can reach. One `Arc`, because axum clones the state
/// for every request: cloning (and dropping) five handles instead cost 2%
/// of an uncached page read (profiled).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    /// Flips to `true` when the server starts shutting down; long-polls and
    /// SSE streams answer or end at once when it does.
    pub shutdown: watch::Receiver<bool>,
    /// Flips to `true` as soon as a shutdown signal arrives, before
    /// `shutdown` (which waits for `--shutdown-drain-secs`): from then on
    /// `/health/ready` answers `503`, so load balancers drain the node.
    pub draining: watch::Receiver<bool>,
    /// The cap on concurrent long-polls and SSE streams.
    pub waiters: live::Waiters,
    /// Pages rendered for long-polls woken together, shared among them.
    pub renders: live::SharedRenders,
    /// Where the persistent subscription groups (competing consumers)
    /// run: here, or on the server this one forwards to.
    pub subscription_host: Arc<crate::subscriptions::owner::SubscriptionHost>,
    /// Users, credentials and access rules.
    pub security: Arc<crate::security::Security>,
    /// Notified by `POST /admin/shutdown`: the server stops as on a signal.
    pub stop_requested: Arc<tokio::sync::Notify>,
    /// Which other sites' pages may call the server, and whether with
    /// credentials (`--cors-origin`).
    pub cors: cors::Cors,
    /// Reads served and events appended lately, for `/info`.
    pub activity: Arc<activity::Activity>,
    /// What `/metrics` reports that is recorded as it happens.
    pub metrics: Arc<metrics::Metrics>,
    /// Anyone may read `/metrics` (`--metrics-public`).
    pub metrics_public: bool,
    /// The cap on open connections, which the accept loop keeps.
    pub connections: Arc<connection_slots::ConnectionSlots>,
    /// Rendered pages that can no longer change (`--page-cache-mb`).
    pub page_cache: page_cache::PageCache,
}

impl Shared {
    /// The persistent subscriptions, when they run on this server; `503`
    /// (with `Retry-After`) while they move between servers.
    pub fn subscriptions(&self) -> Result<Arc<crate::subscriptions::Subscriptions>, HttpError> {
        self.subscription_host.local().ok_or_else(|| crate::subscriptions::SubscriptionError::Moved.into())
    }
}

/// The whole HTTP application.
///
/// The layers that need nothing of the route wrap the router once, as one
/// tower stack: `Router::layer` wraps every route apart, boxing each
/// layer's service and future, which cost every request an allocation and
/// a dynamic call per layer. Only the request metrics, which read the
/// route's template (`MatchedPath`), are a layer of the routes.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(streams::router())
        .merge(multi_append::router())
        .merge(stream_list::router())
        .merge(metadata::router())
        .merge(admin::router())
        .merge(subscriptions::router(&state))
        .merge(export::router())
        .merge(system::router())
        .merge(scrape::router())
        .merge(health::router())
        .merge(users::router())
        .merge(ui::router())
        .fallback(system::not_found);
    // tower-http's request logs, wanted only when debugging: a layer of
    // the routes, inside the metrics.
    let routes = if request_logs_wanted() { routes.layer(TraceLayer::new_for_http()) } else { routes };
    let routes = if state.metrics.enabled() {
        routes.layer(track_requests::TrackRequestsLayer { metrics: Arc::clone(&state.metrics) })
    } else {
        routes
    };
    let (cors, listed_origins) = cors::layers(&state.cors);
    let tidy_listed =
        listed_origins.map(|origins| axum::middleware::from_fn_with_state(origins, cors::tidy_listed));
    let limit = state.limits.max_request_bytes;
    let routes = routes.with_state(state);
    // Outermost first. IMPORTANT: axum adds `Allow` to a 405 in the
    // router, so the words that repeat it are outside it, and `nosniff`
    // outside them, to be on every response.
    let stack = ServiceBuilder::new()
        .layer(nosniff())
        .layer(MapResponseLayer::new(system::explain_method_not_allowed))
        .option_layer(tidy_listed)
        .layer(cors)
        .layer(MapResponseLayer::new(finish_encoded))
        .layer(compression())
        .layer(encoding::DecodeBodiesLayer { encoded_limit: limit })
        .layer(challenge::UiChallengeLayer)
        .service(routes);
    // A router again, the type the server and embedding programs take; its
    // one route-less fallback costs one boxed call.
    Router::new().fallback_service(stack)
}

/// A response as the compression leaves it: its ETag weak when encoded
/// (see [`caching::weak_etag_when_encoded`]), its body an axum body again
/// for the layers outside.
fn finish_encoded<B>(response: axum::http::Response<B>) -> axum::http::Response<Body>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    caching::weak_etag_when_encoded(response).map(Body::new)
}

/// `X-Content-Type-Options: nosniff` on every response: browsers then take
/// a body for its `Content-Type` and nothing else, so an event whose data
/// looks like HTML or script, served as JSON or text, never runs as such.
fn nosniff() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
}

/// Whether the log filter lets tower-http's per-request logs through
/// (method, URI, status and latency at DEBUG, e.g. `--log
/// info,tower_http=debug`), decided once when the application is built:
/// the layer that writes them cost 8% of an uncached page read even with
/// its logs filtered out (measured), so it is left out when they would be.
/// Failed requests are logged by [`HttpError`] either way.
fn request_logs_wanted() -> bool {
    tracing::enabled!(target: "tower_http::trace::on_response", tracing::Level::DEBUG)
}

/// gzip for clients that ask for it (`Accept-Encoding`), with
/// `Vary: Accept-Encoding`, so caches store the compressed page once and
/// serve it to every client that accepts gzip. Feeds compress 5-10×.
///
/// Only gzip: it is the coding HTTP caches handle natively (Varnish stores
/// gzip and gunzips for the rare client without it), while brotli would add
/// a large dependency for a small gain behind a cache. Server-Sent Events
/// and tiny bodies are left alone (tower-http's default predicate).
fn compression() -> CompressionLayer {
    CompressionLayer::new().gzip(true)
}
