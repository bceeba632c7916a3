//! What the cache harnesses (`varnish`, `nginx`) share: eventfeed, the
//! recording proxy in front of it (`common::recording`), and an HTTP cache
//! in front of that ([`CacheFront`]), started together as a [`Chain`]:
//!
//! ```text
//! client ──► cache ──► recording proxy ──► eventfeed (in-process)
//! ```
//!
//! The cache's own headers say what it believes it did
//! ([`CacheFront::is_cache_hit`], [`CacheFront::assert_miss`]); the
//! recording proxy says what actually reached eventfeed
//! ([`Chain::backend_requests`]). The scenarios both caches must pass are
//! written once against this, in `common::cache_scenarios`.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;

pub use super::recording::Exchange;
use super::recording::RecordingProxy;
use super::server::TestServer;

/// An HTTP cache in front of eventfeed, as the chain and the shared
/// scenarios see it: where it listens, and how its headers say whether it
/// answered from its copy.
pub trait CacheFront: Sized {
    /// The cache's name, for messages.
    const NAME: &'static str;

    /// How long after fetching a head page the cache passes reads of it
    /// straight to eventfeed instead of revalidating its copy (Varnish's
    /// one-millisecond TTL, with a margin; zero for nginx).
    const PASS_AFTER_FETCH: Duration;

    /// Whether the cache may hand eventfeed's ETag on weakened (`W/`),
    /// as Varnish does when it fetches gzip for a client that did not ask
    /// for it.
    const MAY_WEAKEN_ETAGS: bool;

    /// The cache, started in front of `backend`.
    fn start(backend: SocketAddr) -> impl Future<Output = Self>;

    /// `path` (with its query) at the cache's address.
    fn url(&self, path: &str) -> String;

    /// Whether the cache answered from its copy without asking eventfeed.
    fn is_cache_hit(headers: &HeaderMap) -> bool;

    /// Asserts that the cache looked the request up, found no copy it could
    /// serve, and fetched the answer from eventfeed.
    fn assert_miss(headers: &HeaderMap, context: &str);
}

/// eventfeed, the recording proxy in front of it, and a cache in front of
/// that. Dropping it stops all three.
pub struct Chain<F> {
    pub server: TestServer,
    proxy: RecordingProxy,
    pub front: F,
}

impl<F: CacheFront> Chain<F> {
    pub async fn start() -> Self {
        Self::start_on(TestServer::start().await).await
    }

    /// The chain in front of a server started as the test needs it.
    pub async fn start_on(server: TestServer) -> Self {
        let proxy = RecordingProxy::start(server.addr).await;
        let front = F::start(proxy.addr).await;
        Self { server, proxy, front }
    }

    /// `path` at the cache's address.
    pub fn url(&self, path: &str) -> String {
        self.front.url(path)
    }

    /// GET through the cache with extra headers (no credentials unless they
    /// include them); returns status, headers, body.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let mut request = super::http::anonymous_client().get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// What eventfeed received for `path` (query string included), in order.
    pub fn backend_requests(&self, path: &str) -> Vec<Exchange> {
        self.proxy.exchanges().into_iter().filter(|exchange| exchange.path == path).collect()
    }
}

/// A stream name no other test uses.
pub fn fresh_stream(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
