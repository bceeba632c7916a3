//! `GET /metrics`: what [`Metrics`](super::metrics::Metrics) recorded, and
//! the figures read at scrape time from state the server keeps anyway
//! ([`Scrape`], a `prometheus-client` collector): the head position, the
//! stream count and store size `/info` reports, the disk and its floor,
//! waiters, open connections and their cap, the reads `activity` counts, the credential cache, the last
//! scavenge and every persistent-subscription group's figures. Requests
//! pay nothing for these.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use super::auth::authorize_task;
use super::error::HttpError;
use super::page_cache::PageCacheFigures;
use crate::security::acl::Task;
use crate::security::{CredentialCacheFigures, Principal};
use crate::store::{DiskSpace, PoolFigures, ScavengeReport};
use crate::subscriptions::GroupInfo;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// `GET /metrics`: `$admins` and `$ops`, or anyone with `--metrics-public`.
/// Never cached: every scrape is a new reading.
async fn metrics(State(state): State<AppState>, principal: Principal) -> Result<Response, HttpError> {
    if !state.metrics.enabled() {
        return Err(HttpError::no_route());
    }
    if !state.metrics_public {
        authorize_task(&principal, Task::ReadMetrics)?;
    }
    let scrape = Scrape::read(&state).await;
    let mut scraped = Registry::with_prefix("eventfeed");
    scraped.register_collector(Box::new(scrape));
    let mut body = String::with_capacity(16 * 1024);
    let encoded = state
        .metrics
        .encode(&mut body)
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
    connections: usize,
    max_connections: usize,
    refused_connections: u64,
    credentials: CredentialCacheFigures,
    pages: PageCacheFigures,
    scavenge: Option<ScavengeReport>,
    groups: Vec<GroupInfo>,
    /// A database backend's connection pool; `None` on sled.
    pool: Option<PoolFigures>,
}

impl Scrape {
    async fn read(state: &AppState) -> Self {
        let next_position = state.store.notifier().next_position();
        let activity = state.activity.snapshot(next_position);
        let disk = state.store.disk_space();
        let writes_accepting = state.store.writes_stopped().is_none()
            && state.store.unreachable().is_none()
            && !disk.as_ref().is_some_and(DiskSpace::below_floor);
        // A failed listing leaves the groups out of this scrape, rather
        // than failing the whole of it.
        let groups = match state.subscription_host.local() {
            Some(subscriptions) => subscriptions.list(None).await.unwrap_or_default(),
            // Another server runs them, and reports them.
            None => Vec::new(),
        };
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
            connections: state.connections.open(),
            max_connections: state.connections.max(),
            refused_connections: state.connections.refused(),
            credentials: state.security.credential_cache(),
            pages: state.page_cache.figures(),
            scavenge: state.store.latest_scavenge(),
            groups,
            pool: state.store.database_pool(),
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
        gauge(
            e,
            "connections",
            "Connections open (each holds a slot of the cap)",
            None,
            signed(self.connections as u64),
        )?;
        gauge(
            e,
            "connections_max",
            "The cap on open connections (--max-connections, or what the open-file limit allows)",
            None,
            signed(self.max_connections as u64),
        )?;
        counter(
            e,
            "connections_refused",
            "Connections closed at once because every slot of the cap was taken",
            self.refused_connections,
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
        counter(e, "page_cache_hits", "Page reads answered from the page cache", self.pages.hits)?;
        counter(
            e,
            "page_cache_misses",
            "Page reads that could have been answered from the page cache but were read",
            self.pages.misses,
        )?;
        gauge(
            e,
            "page_cache_pages",
            "Rendered pages held in the page cache",
            None,
            signed(self.pages.pages),
        )?;
        gauge(e, "page_cache", "Bytes held in the page cache", Some(&Unit::Bytes), signed(self.pages.bytes))?;
        gauge(
            e,
            "page_cache_capacity",
            "The page cache's bound (--page-cache-mb)",
            Some(&Unit::Bytes),
            signed(self.pages.capacity_bytes),
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
        if let Some(pool) = &self.pool {
            let in_use = pool.size.saturating_sub(pool.available);
            let pool_gauges = [
                (
                    "database_pool_max",
                    "PostgreSQL backend: the most connections reads may hold",
                    pool.max_size,
                ),
                ("database_pool_open", "PostgreSQL backend: read connections open", pool.size),
                ("database_pool_in_use", "PostgreSQL backend: read connections held by a read now", in_use),
                ("database_pool_waiting", "PostgreSQL backend: reads waiting for a connection", pool.waiting),
            ];
            for (name, help, value) in pool_gauges {
                gauge(e, name, help, None, signed(value as u64))?;
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
            "Messages acked, skipped or parked (once in the parked stream) since the server started",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for info in &self.groups {
            ConstCounter::new(info.stats.processed_total).encode(metric.encode_family(&labels(info))?)?;
        }
        Ok(())
    }
}
