//! # eventfeed
//!
//! An HTTP event store. Producers append immutable events to named streams;
//! anyone reads them back as paged Atom or JSON feeds that HTTP caches can
//! keep for a year. It speaks the EventStore v5 HTTP (AtomPub) API.
//!
//! ## Layout
//!
//! - [`config`]: command-line options (each also an environment variable).
//! - [`server`]: binds, serves with graceful shutdown, flushes the store.
//! - [`http`]: one module per resource, negotiation, caching headers, errors.
//!   The only place that knows about HTTP.
//! - [`feed`]: the page model and paging math; Atom, JSON and HTML renderers.
//! - [`store`]: the `Store` seam, the sled implementation, its keys and record
//!   codec, the group-commit writer, and the notifier live readers wait on;
//!   and a reference store in memory that tests hold every backend to.
//! - [`subscriptions`]: persistent subscriptions (competing consumers): the
//!   group state machine, strategies, checkpoints and parking.
//! - [`hash`]: stable hashes for ETags and derived ids.
//!
//! Start at [`app`], the whole HTTP application, which tests and the binary
//! share.

pub mod config;
pub mod feed;
pub mod hash;
pub mod http;
pub mod server;
pub mod store;
pub mod subscriptions;

pub use http::{AppState, Limits};

/// The HTTP application for `state`: what the binary serves and tests call.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}
