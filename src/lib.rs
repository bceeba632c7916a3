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
//! - [`store`]: the `Store` seam and the values that cross it, the rules
//!   every backend shares (retention, metadata, projections, wake-ups), and
//!   the backends: [`store::sled`], the embedded default, and a reference
//!   store in memory for tests.
//! - [`subscriptions`]: persistent subscriptions (competing consumers): the
//!   group state machine, strategies, checkpoints and parking.
//! - [`security`]: users, credentials and access control lists, as v5
//!   defined them; `http::auth` applies them to requests.
//! - [`transfer`]: moving a store: `export`, `import` (NDJSON, either
//!   backend), and the online `backup` and `verify` built on them.
//! - [`hash`]: stable hashes for ETags and derived ids.
//! - [`json`]: JSON as the server takes it in (no key given twice).
//! - [`xml`]: XML 1.0's characters and names, and a walk through a
//!   document that refuses what is not well-formed.
//!
//! Start at [`app`], the whole HTTP application, which tests and the binary
//! share; `ARCHITECTURE.md` follows an append and a page read through
//! these modules.

pub mod config;
pub mod feed;
pub mod hash;
pub mod http;
pub mod json;
pub mod security;
pub mod server;
pub mod store;
pub mod subscriptions;
pub mod transfer;
pub mod xml;

pub use http::{AppState, Limits};

/// The HTTP application for `state`: what the binary serves and tests call.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}
