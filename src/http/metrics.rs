//! The figures `GET /metrics` reports (the route is `scrape`'s), in the
//! Prometheus text format (version 0.0.4), encoded by `prometheus-client`
//! (docs/operations.md lists every metric).
//!
//! Two kinds of figure, so that nothing is counted twice:
//! - **Recorded** as things happen, in [`Metrics`]: appends by outcome,
//!   requests by route template and status class, request latency, `304`s,
//!   commits (batch sizes and durations, reported by the store's writer
//!   through the notifier's [`CommitObserver`]) and scavenges started.
//!   Each is an atomic add, plus the read lock `prometheus-client` takes to
//!   find a labelled series (and the lock a histogram takes to observe).
//! - **Read at scrape time** from state the server keeps anyway (the
//!   [`Scrape`] collector): the head position, the stream count and store
//!   size `/info` reports, the disk and its floor, waiters, the reads
//!   `activity` counts, the credential cache, the last scavenge and every
//!   persistent-subscription group's figures. Requests pay nothing for
//!   these. Those are `scrape`'s.
//!
//! Routes are labelled by their template (axum's `MatchedPath`, e.g.
//! `/streams/{stream}`), never by a raw path, so the number of series stays
//! bounded whatever the stream names; unknown URLs share `unmatched`.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::{AppendOutcome, CommitFigures, CommitObserver, DatabaseQuery, StoreError};

/// What became of an append request (one single-stream or multi-stream
/// `POST`), the `outcome` label of the append counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// Written.
    Ok,
    /// Its event ids were written before: answered as the original was,
    /// nothing new written (an idempotent retry).
    Duplicate,
    /// The expected version did not hold (`409` or v5's `400`).
    WrongExpectedVersion,
    /// The principal may not write the stream (`401`).
    Denied,
    /// The disk is below its floor (`507`): nothing written, goes through
    /// once space returns.
    Refused,
    /// Anything else that failed (a bad request, a failed commit).
    Error,
}

impl AppendResult {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::WrongExpectedVersion => "wrong_expected_version",
            Self::Denied => "denied",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }

    /// The outcome of a store append's result.
    pub fn of<T>(result: &Result<T, StoreError>, idempotent: impl Fn(&T) -> bool) -> Self {
        match result {
            Ok(outcome) if idempotent(outcome) => Self::Duplicate,
            Ok(_) => Self::Ok,
            Err(StoreError::WrongExpectedVersion { .. } | StoreError::Conflicts(_)) => {
                Self::WrongExpectedVersion
            }
            Err(StoreError::InsufficientStorage(_)) => Self::Refused,
            Err(_) => Self::Error,
        }
    }

    /// The outcome of a single append's result.
    pub fn of_append(result: &Result<AppendOutcome, StoreError>) -> Self {
        Self::of(result, |outcome| outcome.idempotent)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The `route` label: the route's template as axum matched it, or
/// `unmatched`. Holds axum's own `MatchedPath` (an `Arc<str>`), so that
/// labelling a request copies no string.
#[derive(Debug, Clone)]
pub(super) enum Route {
    Matched(MatchedPath),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueryLabels {
    query: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: &'static str,
}

/// The figures recorded as things happen (see the module doc), registered
/// once in a registry of their own.
#[derive(Debug)]
pub struct Metrics {
    /// `false` (`--metrics false`): nothing is recorded per request and
    /// `/metrics` answers `404`.
    enabled: bool,
    registry: Registry,
    appends: Family<OutcomeLabels, Counter>,
    appended_events: Family<OutcomeLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    not_modified: Counter,
    commits: Counter,
    commit_events: Histogram,
    commit_appends: Histogram,
    commit_duration: Histogram,
    scavenges_started: Counter,
    sse_streams: Gauge,
    /// From a commit's acknowledgement to a long-poll or SSE stream
    /// waiting on it being woken.
    wakeup: Histogram,
    /// A database backend's queries, by [`DatabaseQuery`]; no series (so
    /// nothing in the text) on a store without a database.
    database_query_duration: Family<QueryLabels, Histogram>,
}

/// Request latency buckets: 100 µs to about 6 s, ×2.5 each (a cached head
/// page takes tens of µs, an fsynced append about a millisecond; long-polls
/// fall in the last ones or beyond).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.5, 12)
}

impl Metrics {
    pub fn new(enabled: bool) -> Self {
        let mut registry = Registry::with_prefix("eventfeed");
        let appends = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "appends",
            "Append requests (single- and multi-stream), by outcome: ok, duplicate (an idempotent retry), \
             wrong_expected_version, denied, refused (the disk below its floor, 507), error",
            appends.clone(),
        );
        let appended_events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "append_events",
            "Events in append requests, by the request's outcome (outcome=\"ok\": events written)",
            appended_events.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status class",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival until its response's head is ready (a long-poll's wait included), \
             by route template and method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let not_modified = Counter::default();
        registry.register(
            "http_not_modified",
            "Responses 304 Not Modified (a conditional read whose ETag still held)",
            not_modified.clone(),
        );
        let commits = Counter::default();
        registry.register("commits", "Store commits that wrote something (group commits)", commits.clone());
        let commit_events = Histogram::new(exponential_buckets(1.0, 4.0, 9));
        registry.register(
            "commit_events",
            "Events written by one commit (group commit)",
            commit_events.clone(),
        );
        let commit_appends = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_appends",
            "Append requests answered by one commit (group commit)",
            commit_appends.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register_with_unit(
            "commit_duration",
            "Time to make one commit durable: the batch applied, flushed and (durability fsync) fdatasynced",
            Unit::Seconds,
            commit_duration.clone(),
        );
        let scavenges_started = Counter::default();
        registry.register(
            "scavenges_started",
            "Scavenges started (by POST /admin/scavenge or --scavenge-interval-secs)",
            scavenges_started.clone(),
        );
        let sse_streams = Gauge::default();
        registry.register(
            "sse_streams",
            "Server-Sent Events streams open (each also counts in eventfeed_waiters)",
            sse_streams.clone(),
        );
        // 10 µs to about 1.8 s, ×3 each: a waiter on this node wakes in
        // microseconds; one woken by another node's commit through the
        // database's notifications, in milliseconds.
        let wakeup = Histogram::new(exponential_buckets(0.00001, 3.0, 12));
        registry.register_with_unit(
            "wakeup",
            "Time from a commit's acknowledgement until a long-poll or SSE stream waiting on it is woken \
             (each waiter woken once per wake)",
            Unit::Seconds,
            wakeup.clone(),
        );
        let database_query_duration =
            Family::<QueryLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "database_query_duration",
            "PostgreSQL backend: time of each read (one snapshot's queries) and write transaction, once it \
             held a connection, by query: read_stream, read_all, read_event, stream_state, list_streams, \
             write_transaction",
            Unit::Seconds,
            database_query_duration.clone(),
        );
        Self {
            enabled,
            registry,
            appends,
            appended_events,
            requests,
            request_duration,
            not_modified,
            commits,
            commit_events,
            commit_appends,
            commit_duration,
            scavenges_started,
            sse_streams,
            wakeup,
            database_query_duration,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Writes the recorded figures in the Prometheus text format.
    pub(super) fn encode(&self, text: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(text, &self.registry)
    }

    /// Counts one append request of `events` events.
    pub fn append(&self, result: AppendResult, events: usize) {
        if !self.enabled {
            return;
        }
        let labels = OutcomeLabels { outcome: result.label() };
        self.appends.get_or_create(&labels).inc();
        self.appended_events.get_or_create(&labels).inc_by(events as u64);
    }

    /// Counts an SSE stream open for as long as the guard lives (the
    /// response's stream holds it, so a client that goes drops it).
    pub fn sse_opened(&self) -> OpenStream {
        self.sse_streams.inc();
        OpenStream(self.sse_streams.clone())
    }

    /// A long-poll or SSE stream woke `since_acknowledged` after the
    /// newest commit was acknowledged.
    pub fn woken(&self, since_acknowledged: Duration) {
        if self.enabled {
            self.wakeup.observe(since_acknowledged.as_secs_f64());
        }
    }

    pub fn scavenge_started(&self) {
        self.scavenges_started.inc();
    }

    pub(super) fn request(&self, route: Route, method: &'static str, status: StatusCode, took: Duration) {
        if status == StatusCode::NOT_MODIFIED {
            self.not_modified.inc();
        }
        let labels = RouteLabels { route, method };
        self.request_duration.get_or_create(&labels).observe(took.as_secs_f64());
        let RouteLabels { route, method } = labels;
        self.requests.get_or_create(&RequestLabels { route, method, status: status_class(status) }).inc();
    }
}

/// One open SSE stream, counted in `eventfeed_sse_streams` until dropped.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl CommitObserver for Metrics {
    fn committed(&self, figures: CommitFigures) {
        if !self.enabled {
            return;
        }
        self.commits.inc();
        self.commit_events.observe(figures.events as f64);
        self.commit_appends.observe(figures.appends as f64);
        self.commit_duration.observe(figures.duration.as_secs_f64());
    }

    fn queried(&self, query: DatabaseQuery, took: Duration) {
        if self.enabled {
            let labels = QueryLabels { query: query.label() };
            self.database_query_duration.get_or_create(&labels).observe(took.as_secs_f64());
        }
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The `method` label: the methods the API answers, the rest as `other`
/// (a client may send any token, and each would be a series).
pub(super) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(idempotent: bool) -> AppendOutcome {
        AppendOutcome { first_number: 0, last_number: 0, position: Some(0), idempotent }
    }

    #[test]
    fn append_results_map_to_their_outcome_labels() {
        let cases: [(Result<AppendOutcome, StoreError>, &str); 6] = [
            (Ok(outcome(false)), "ok"),
            (Ok(outcome(true)), "duplicate"),
            (
                Err(StoreError::WrongExpectedVersion { current: 3, detail: String::new() }),
                "wrong_expected_version",
            ),
            (Err(StoreError::Conflicts(Vec::new())), "wrong_expected_version"),
            (Err(StoreError::InsufficientStorage("full".into())), "refused"),
            (Err(StoreError::Unavailable), "error"),
        ];
        for (result, label) in cases {
            assert_eq!(AppendResult::of_append(&result).label(), label, "{result:?}");
        }
    }

    #[test]
    fn statuses_are_labelled_by_class_and_methods_from_a_fixed_set() {
        assert_eq!(status_class(StatusCode::NOT_MODIFIED), "3xx");
        assert_eq!(status_class(StatusCode::INSUFFICIENT_STORAGE), "5xx");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn nothing_is_recorded_when_metrics_are_off() {
        let metrics = Metrics::new(false);
        metrics.append(AppendResult::Ok, 3);
        metrics.committed(CommitFigures { appends: 1, events: 3, duration: Duration::from_millis(1) });
        let mut text = String::new();
        metrics.encode(&mut text).unwrap();
        assert!(!text.contains("outcome=\"ok\""), "{text}");
        assert!(text.contains("eventfeed_commits_total 0"), "{text}");
    }
}
