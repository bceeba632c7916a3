//! `GET /metrics`: the server's figures in the Prometheus text format
//! (version 0.0.4), encoded by `prometheus-client`, for a Prometheus
//! scraper (docs/operations.md lists every metric).
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
//!   these.
//!
//! Routes are labelled by their template (axum's `MatchedPath`, e.g.
//! `/streams/{stream}`), never by a raw path, so the number of series stays
//! bounded whatever the stream names; unknown URLs share `unmatched`.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use super::auth::authorize_task;
use super::error::HttpError;
use crate::security::acl::Task;
use crate::security::{CredentialCacheFigures, Principal};
use crate::store::{AppendOutcome, CommitFigures, CommitObserver, DiskSpace, ScavengeReport, StoreError};
use crate::subscriptions::GroupInfo;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
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
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
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

    pub fn scavenge_started(&self) {
        self.scavenges_started.inc();
    }

    fn request(&self, route: String, method: &'static str, status: StatusCode, took: Duration) {
        if status == StatusCode::NOT_MODIFIED {
            self.not_modified.inc();
        }
        let labels = RouteLabels { route, method };
        self.request_duration.get_or_create(&labels).observe(took.as_secs_f64());
        let RouteLabels { route, method } = labels;
        self.requests.get_or_create(&RequestLabels { route, method, status: status_class(status) }).inc();
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
fn method_label(method: &Method) -> &'static str {
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

/// The layer that counts and times every request (installed by
/// `http::router` only when metrics are on).
pub(super) async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.request(route, method, response.status(), started.elapsed());
    response
}

/// `GET /metrics`: `$admins` and `$ops`, or anyone with `--metrics-public`.
/// Never cached: every scrape is a new reading.
async fn metrics(State(state): State<AppState>, principal: Principal) -> Result<Response, HttpError> {
    if !state.metrics.enabled {
        return Err(HttpError::no_route());
    }
    if !state.metrics_public {
        authorize_task(&principal, Task::ReadMetrics)?;
    }
    let scrape = Scrape::read(&state).await;
    let mut scraped = Registry::with_prefix("eventfeed");
    scraped.register_collector(Box::new(scrape));
    let mut body = String::with_capacity(16 * 1024);
    let encoded = prometheus_client::encoding::prometheus_text::encode(&mut body, &state.metrics.registry)
        .and_then(|()| prometheus_client::encoding::prometheus_text::encode(&mut body, &scraped));
    if encoded.is_err() {
        return Err(HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            .with_detail("The metrics could not be encoded."));
    }
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What a scrape reads from the server's state (see the module doc).
#[derive(Debug)]
struct Scrape {
    next_position: u64,
    streams: Option<u64>,
    store_bytes: Option<u64>,
    disk: Option<DiskSpace>,
    writes_accepting: bool,
    reads_served: u64,
    uptime: Duration,
    waiters: usize,
    max_waiters: usize,
    credentials: CredentialCacheFigures,
    scavenge: Option<ScavengeReport>,
    groups: Vec<GroupInfo>,
}

impl Scrape {
    async fn read(state: &AppState) -> Self {
        let next_position = state.store.notifier().next_position();
        let activity = state.activity.snapshot(next_position);
        let disk = state.store.disk_space();
        let writes_accepting =
            state.store.writes_stopped().is_none() && !disk.as_ref().is_some_and(DiskSpace::below_floor);
        // A failed listing leaves the groups out of this scrape, rather
        // than failing the whole of it.
        let groups = state.subscriptions.list(None).await.unwrap_or_default();
        Self {
            next_position,
            streams: super::system::stream_count(state).await,
            store_bytes: activity.store_bytes,
            disk,
            writes_accepting,
            reads_served: activity.reads_served,
            uptime: activity.uptime,
            waiters: state.waiters.in_use(state.limits.max_waiters),
            max_waiters: state.limits.max_waiters,
            credentials: state.security.credential_cache(),
            scavenge: state.store.latest_scavenge(),
            groups,
        }
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Fmt {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

type Fmt = Result<(), std::fmt::Error>;

/// Saturating: a gauge is an `i64`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A per-group gauge: its name, help and how to read it.
type GroupGauge = (&'static str, &'static str, fn(&GroupInfo) -> u64);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    stream: String,
    group: String,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Fmt {
        let e = &mut encoder;
        gauge(
            e,
            "head_position",
            "The log's next global position: events ever appended",
            None,
            signed(self.next_position),
        )?;
        if let Some(streams) = self.streams {
            gauge(e, "streams", "User streams ever created (the length of $streams)", None, signed(streams))?;
        }
        if let Some(bytes) = self.store_bytes {
            gauge(
                e,
                "store",
                "The store's files on disk (measured every 5 s)",
                Some(&Unit::Bytes),
                signed(bytes),
            )?;
        }
        if let Some(disk) = &self.disk {
            gauge(
                e,
                "disk_free",
                "Free space on the store's disk",
                Some(&Unit::Bytes),
                signed(disk.free_bytes),
            )?;
            gauge(
                e,
                "disk_min_free",
                "The free space the store keeps (--min-free-mb): appends get 507 below it",
                Some(&Unit::Bytes),
                signed(disk.min_free_bytes),
            )?;
        }
        gauge(
            e,
            "writes_accepting",
            "1 while the store takes appends; 0 below the disk floor or after a failed commit",
            None,
            i64::from(self.writes_accepting),
        )?;
        counter(e, "reads", "Page and event reads answered", self.reads_served)?;
        gauge(e, "uptime", "Since the server started", Some(&Unit::Seconds), signed(self.uptime.as_secs()))?;
        gauge(e, "waiters", "Long-polls and SSE streams open", None, signed(self.waiters as u64))?;
        gauge(
            e,
            "waiters_max",
            "The cap on long-polls and SSE streams (--max-waiters); 503 beyond",
            None,
            signed(self.max_waiters as u64),
        )?;
        counter(
            e,
            "credential_cache_hits",
            "Basic credentials found verified in the cache",
            self.credentials.hits,
        )?;
        counter(
            e,
            "credential_cache_misses",
            "Basic credentials not in the cache (verified with argon2id, or refused)",
            self.credentials.misses,
        )?;
        gauge(
            e,
            "credential_cache_entries",
            "Verified credentials held in the cache",
            None,
            signed(self.credentials.entries as u64),
        )?;
        let running = self.scavenge.as_ref().is_some_and(|report| report.finished_micros.is_none());
        gauge(e, "scavenge_running", "1 while a scavenge runs", None, i64::from(running))?;
        if let Some(report) = &self.scavenge {
            gauge(
                e,
                "scavenge_last_events_removed",
                "Events the running or last scavenge removed",
                None,
                signed(report.events_removed),
            )?;
            if let Some(after) = report.bytes_after {
                let before = report.bytes_before;
                gauge(
                    e,
                    "scavenge_last_reclaimed",
                    "Disk space the last scavenge gave back",
                    Some(&Unit::Bytes),
                    signed(before.saturating_sub(after)),
                )?;
            }
        }
        self.encode_groups(e)
    }
}

impl Scrape {
    /// Per persistent-subscription group, labelled by its stream and name
    /// (as many series as groups, which operators create).
    fn encode_groups(&self, encoder: &mut DescriptorEncoder<'_>) -> Fmt {
        if self.groups.is_empty() {
            return Ok(());
        }
        let labels =
            |info: &GroupInfo| GroupLabels { stream: info.stream.clone(), group: info.group.clone() };
        let lag = |info: &GroupInfo| {
            let end = info.last_known.map_or(0, |last| last + 1);
            end.saturating_sub(info.stats.checkpoint.next)
        };
        let gauges: [GroupGauge; 3] = [
            ("subscription_in_flight", "Messages handed to consumers and not yet acked or nacked", |info| {
                info.stats.in_flight as u64
            }),
            ("subscription_parked", "Parked messages not yet replayed", |info| info.parked_count),
            ("subscription_buffered", "Messages read from the source, waiting for a consumer", |info| {
                info.stats.buffered as u64
            }),
        ];
        let metric = encoder.encode_descriptor(
            "subscription_checkpoint_lag",
            "Events of the source after the group's checkpoint",
            None,
            ConstGauge::new(0i64).metric_type(),
        );
        let mut metric = metric?;
        for info in &self.groups {
            ConstGauge::new(signed(lag(info))).encode(metric.encode_family(&labels(info))?)?;
        }
        for (name, help, value) in gauges {
            let mut metric =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for info in &self.groups {
                ConstGauge::new(signed(value(info))).encode(metric.encode_family(&labels(info))?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "subscription_processed",
            "Messages acked or parked by the group's consumers since the server started",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for info in &self.groups {
            ConstCounter::new(info.stats.processed_total).encode(metric.encode_family(&labels(info))?)?;
        }
        Ok(())
    }
}
