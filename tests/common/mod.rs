//! Test helpers, one module per concern. Every test binary compiles this
//! folder as its `common` module; the names most tests use are re-exported
//! here.
//!
//! - [`backend`]: the store the servers run on, sled or PostgreSQL
//!   (`EVENTFEED_TEST_STORE`), and the tests that only sled can run.
//! - [`bodies`]: random events bodies, valid and broken, for the property
//!   suites.
//! - [`cache_chain`]: eventfeed behind a recording proxy behind an HTTP
//!   cache ([`cache_chain::CacheFront`]: Varnish or nginx).
//! - [`cache_scenarios`]: the caching guarantees both caches must give,
//!   written once for the varnish and nginx tests.
//! - [`server`]: servers on loopback ports ([`TestServer`] in process,
//!   [`BinaryServer`] the real binary).
//! - [`load`]: append load for the crash tests, and the check of what
//!   survived it.
//! - [`http`]: media types, the client, event bodies, headers, raw requests.
//! - [`admin`]: waiting for projections, waiters and scavenges.
//! - [`pages`]: walking a feed page by page.
//! - [`nginx`]: eventfeed behind a real nginx running the shipped
//!   `proxy_cache` configuration, through a recording proxy.
//! - [`postgres`]: a PostgreSQL cluster of the tests' own, a database per test.
//! - [`recording`]: the recording proxy the cache harnesses put in front
//!   of eventfeed.
//! - [`socket`]: a raw HTTP/1.1 client on one TCP connection.
//! - [`subscriptions`]: a client for persistent subscriptions.
//! - [`varnish`]: eventfeed behind a real Varnish, through a recording proxy.
//! - [`webdriver`]: a headless Chromium over WebDriver, for the web UI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod backend;
pub mod bodies;
pub mod cache_chain;
pub mod cache_scenarios;
pub mod http;
pub mod load;
pub mod nginx;
pub mod pages;
pub mod patroni;
pub mod postgres;
pub mod recording;
pub mod server;
pub mod socket;
pub mod subscriptions;
pub mod tmpfs;
pub mod varnish;
pub mod webdriver;

// Each test binary uses some of these, and a re-export it leaves unused
// would warn there.
#[allow(unused_imports)]
pub use admin::{
    counters, report, start_scavenge, wait_for, wait_for_projections, wait_for_waiters, wait_until,
};
#[allow(unused_imports)]
pub use http::{
    ADMIN_AUTHORIZATION, ATOM_JSON, ATOM_XML, EVENTS_JSON, anonymous_client, client, event, header,
    raise_open_file_limit, raw_status, reason,
};
#[allow(unused_imports)]
pub use pages::{link, read_all_events};
#[allow(unused_imports)]
pub use server::{BinaryServer, TestServer};
