//! Running the server: open the store, bind, serve, and shut down cleanly.
//!
//! - `connections`: the accept loop, the cap on open connections, and
//!   serving each with hyper.
//! - `timeouts`: the read timeouts of a connection and of a request body.
//! - `descriptors`: the open-file limit, and the share of it connections
//!   may take.
//! - `tls`: HTTPS, when given a certificate and key.
//!
//! Shutdown order matters. On the signal `/health/ready` turns `503`
//! ([`Shared::draining`]) and, after `--shutdown-drain-secs` of serving as
//! usual (none by default) while load balancers notice, the listener stops accepting and
//! every long-poll and SSE stream is told to answer or end at once (they
//! watch [`Shared::shutdown`]); open requests then get a grace period;
//! then persistent subscriptions stop, writing their final checkpoints;
//! finally the store is closed, which makes every acknowledged append
//! durable before the process exits. Once its last handle is dropped, the
//! store may ask for a last piece of work (see [`Store::after_release`]:
//! the sled store checkpoints itself when much was written, so that the
//! next start is quick); a second signal skips it.

mod connections;
mod descriptors;
mod identity;
mod timeouts;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use self::connections::ConnectionLimits;
use self::identity::Identity;
use self::timeouts::Timeouts;
pub use self::tls::TlsError;
use self::tls::TlsHandshake;
use crate::config::ServeConfig;
use crate::http::connection_slots::ConnectionSlots;
use crate::http::cors::Cors;
use crate::http::{AppState, Limits, Shared};
use crate::security::Security;
use crate::store::{self, AfterRelease, Store, StoreError};
use crate::subscriptions::owner::SubscriptionHost;

/// Why the server could not start or stopped badly.
#[derive(Debug)]
pub enum ServerError {
    Store(StoreError),
    Bind(SocketAddr, std::io::Error),
    Tls(TlsError),
    /// A `--cors-origin` that is not an origin.
    Cors(String),
    Serve(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(error) => write!(f, "store: {error}"),
            Self::Bind(address, error) => write!(f, "cannot listen on {address}: {error}"),
            Self::Tls(error) => error.fmt(f),
            Self::Cors(error) => f.write_str(error),
            Self::Serve(error) => write!(f, "serving failed: {error}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A server that is bound and ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    /// Closed at the end of [`Server::run`].
    store: Arc<dyn Store>,
    /// Stopped (final checkpoints written) before the store closes.
    subscriptions: Arc<SubscriptionHost>,
    shutdown: watch::Sender<bool>,
    /// Set at the shutdown signal, `drain` before `shutdown`: readiness
    /// fails while the server still serves (`--shutdown-drain-secs`).
    draining: watch::Sender<bool>,
    drain: Duration,
    grace: Duration,
    /// Between background scavenges; `None`: none.
    scavenge_interval: Option<Duration>,
    /// The cap on open connections and their timeouts.
    connections: ConnectionLimits,
    /// The handshake of HTTPS connections; `None`: plain HTTP.
    tls: Option<TlsHandshake>,
    /// Held while the server runs: its identity's lock.
    _identity: Identity,
}

impl Server {
    /// Opens the store and binds the listener.
    pub async fn bind(config: &ServeConfig) -> Result<Self, ServerError> {
        // Before the store: a mistyped path should not cost a store's start.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::handshake(cert, key).map_err(ServerError::Tls)?),
            (None, None) => None,
            _ => return Err(ServerError::Tls(TlsError::Incomplete)),
        };
        let cors = Cors::for_origins(&config.cors_origins).map_err(ServerError::Cors)?;
        let connections = connection_limits(config, descriptors::raise_open_file_limit());
        tracing::info!(data_dir = %config.data_dir.display(), "opening the store");
        let opening = std::time::Instant::now();
        let store = store::open(&config.store_config()).await.map_err(ServerError::Store)?;
        let opened_in = opening.elapsed();
        tracing::info!(
            data_dir = %config.data_dir.display(),
            durability = ?config.durability,
            next_position = store.notifier().next_position(),
            opened_in_ms = u64::try_from(opened_in.as_millis()).unwrap_or(u64::MAX),
            "store open"
        );

        let listener = listen(config.bind).map_err(|e| ServerError::Bind(config.bind, e))?;
        // After the bind, so a server that cannot listen starts no
        // subscription drivers.
        let address = config.advertise_url.clone().unwrap_or_else(|| advertised(&listener, config.bind));
        // Only a store that servers share has leases to hold, and wants a
        // lasting identity; the embedded store is this server's alone.
        let identity = if store.backend_name() == "postgres" {
            Identity::of(&config.data_dir)
        } else {
            Identity::fresh()
        };
        let subscriptions = SubscriptionHost::start(Arc::clone(&store), address, identity.id)
            .await
            .map_err(ServerError::Store)?;
        let security = Security::open(Arc::clone(&store), config.admin_password.as_deref())
            .await
            .map_err(ServerError::Store)?;
        warn_of_default_passwords(&security).await;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (draining, draining_rx) = watch::channel(false);
        let activity = crate::http::activity::Activity::start(&store, shutdown_rx.clone());
        let metrics = Arc::new(crate::http::metrics::Metrics::new(config.metrics));
        if config.metrics {
            store.notifier().observe_commits(Arc::clone(&metrics) as Arc<dyn store::CommitObserver>);
        }
        let state = AppState::new(Shared {
            store: Arc::clone(&store),
            limits: Arc::new(Limits {
                max_event_bytes: config.max_event_bytes,
                max_request_bytes: config.max_request_bytes,
                max_long_poll: Duration::from_secs(config.max_long_poll_secs),
                max_waiters: config.max_waiters,
            }),
            shutdown: shutdown_rx,
            draining: draining_rx,
            waiters: crate::http::live::Waiters::new(config.max_waiters),
            renders: Default::default(),
            subscription_host: Arc::clone(&subscriptions),
            security,
            stop_requested: Arc::default(),
            cors,
            activity,
            metrics,
            metrics_public: config.metrics_public,
            connections: Arc::new(ConnectionSlots::new(connections.max_connections)),
            page_cache: crate::http::page_cache::PageCache::new(
                config.page_cache_mb.saturating_mul(1024 * 1024),
            ),
        });
        Ok(Self {
            listener,
            state,
            store,
            subscriptions,
            shutdown,
            draining,
            drain: Duration::from_secs(config.shutdown_drain_secs),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            scavenge_interval: (config.scavenge_interval_secs > 0)
                .then(|| Duration::from_secs(config.scavenge_interval_secs)),
            connections,
            tls,
            _identity: identity,
        })
    }

    /// The address actually bound (the port, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `signal` resolves, then shuts down (see the module doc).
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let Self {
            listener,
            state,
            store,
            subscriptions,
            shutdown,
            draining,
            drain,
            grace,
            scavenge_interval,
            connections,
            tls,
            // Kept to the end: the identity stays this server's until it exits.
            _identity,
        } = self;
        // A store whose writes failed stops the server as a signal would,
        // and the exit is a failure: a restart recovers it (see
        // `stop_when_writes_fail`).
        let signal = {
            let store = Arc::clone(&store);
            let requested = Arc::clone(&state.stop_requested);
            async move {
                tokio::select! {
                    () = signal => {}
                    () = stop_when_writes_fail(store) => {}
                    () = requested.notified() => tracing::info!("shutdown requested through /admin/shutdown"),
                }
            }
        };
        let address = listener.local_addr().map_err(ServerError::Serve)?;
        match &tls {
            Some(tls) => {
                tracing::info!("eventfeed listening on https://{address}");
                tracing::info!(cert = %tls.cert.display(), "TLS on: HTTPS only");
            }
            None => {
                tracing::info!("eventfeed listening on http://{address}");
                tracing::info!("TLS off: plain HTTP");
            }
        }
        if tls::exposes_clear_text(address, tls.is_some()) {
            tracing::warn!(
                %address,
                "listening beyond loopback without TLS: credentials would cross the network in clear \
                 text; give --tls-cert and --tls-key, or put a proxy that terminates TLS in front"
            );
        }
        // A cap too low for the clients is something to find in the log.
        tracing::info!(
            max_connections = connections.max_connections,
            header_timeout_secs = connections.timeouts.header.as_secs(),
            body_timeout_secs = connections.timeouts.body.as_secs(),
            body_min_bytes_per_sec = connections.timeouts.body_min_rate,
            idle_timeout_secs = connections.timeouts.idle.as_secs(),
            "connection limits"
        );
        if let Some(interval) = scavenge_interval {
            let metrics = Arc::clone(&state.metrics);
            tokio::spawn(scavenge_periodically(
                Arc::clone(&store),
                metrics,
                interval,
                state.shutdown.clone(),
            ));
        }

        let mut stopping = state.shutdown.clone();
        let slots = Arc::clone(&state.connections);
        let app = crate::app(state);
        let serve = connections::serve(listener, app, connections, slots, tls, async move {
            signal.await;
            // Receivers live in AppState clones; a send error only means
            // none is left.
            let _ = draining.send(true);
            if !drain.is_zero() {
                tracing::info!(
                    drain_secs = drain.as_secs(),
                    "shutdown signal: /health/ready answers 503 while load balancers drain this node"
                );
                // A second signal cuts the drain short.
                tokio::select! {
                    () = tokio::time::sleep(drain) => {}
                    () = shutdown_signal() => {}
                }
            }
            tracing::info!("shutting down: no new connections; waking long-polls and SSE streams");
            // Receivers live in AppState clones; a send error only means
            // none is left.
            let _ = shutdown.send(true);
        });
        let grace_expired = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = serve => {}
            () = grace_expired => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still open after the grace period; closing them");
            }
        }

        let stopped_by_failure = store.writes_stopped();
        subscriptions.shutdown().await;
        // It holds the store too; release below waits for every holder.
        drop(subscriptions);
        store.close().await.map_err(ServerError::Store)?;
        tracing::info!("store flushed");
        let after_release = store.after_release();
        let released = release(store).await;
        if let Some(job) = after_release {
            if released {
                run_after_release(job).await;
            } else {
                tracing::info!(
                    skipped = job.what,
                    "the store is still in use; skipping the work after its release"
                );
            }
        }
        tracing::info!("bye");
        match stopped_by_failure {
            Some(reason) => Err(ServerError::Store(StoreError::CommitFailed(reason))),
            None => Ok(()),
        }
    }
}

/// Resolves once the store's writes failed for good. The server then stops:
/// the failed write's outcome is unknown, so what sled holds in memory can
/// no longer be trusted, and it takes no writes (and may refuse reads of
/// what that write touched) until it is opened again. A restart replays
/// only what is durable, exactly as after `kill -9`; PostgreSQL does the
/// same after a failed fsync. Run under a supervisor that restarts it
/// (the systemd unit in `deploy/` does); on a disk still full, the start
/// refuses until space returns, and the next one succeeds.
async fn stop_when_writes_fail(store: Arc<dyn Store>) {
    let mut head = Some(store.notifier().head());
    loop {
        if let Some(reason) = store.writes_stopped() {
            tracing::error!(%reason, "the store takes no more writes; stopping so that a restart recovers it");
            return;
        }
        // IMPORTANT: a failed commit moves no head, so a failure that
        // comes after the last move is seen by looking again, not by
        // waiting for a move alone (which may never come: a server stuck
        // up instead of restarting, as tests/disk_full.rs once saw).
        match head.as_mut() {
            Some(watch) => tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        head = None;
                    }
                }
                () = tokio::time::sleep(WRITES_RECHECK) => {}
            },
            None => tokio::time::sleep(WRITES_RECHECK).await,
        }
    }
}

/// How often [`stop_when_writes_fail`] looks again without a head move.
const WRITES_RECHECK: Duration = Duration::from_millis(250);

/// Runs the store's work after its release (see [`Store::after_release`])
/// on a thread of its own, unless a second signal asks to stop at once.
async fn run_after_release(job: AfterRelease) {
    let AfterRelease { what, run } = job;
    tracing::info!(what, "after closing the store; a second SIGINT or SIGTERM skips it, safely");
    let started = std::time::Instant::now();
    let (done, finished) = tokio::sync::oneshot::channel();
    // A thread of its own, not `spawn_blocking`: when a second signal
    // skips the work, the runtime must not wait for it at exit.
    let spawned = std::thread::Builder::new().name("eventfeed-after-close".into()).spawn(move || {
        let _ = done.send(run());
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, what, "could not start");
        return;
    }
    tokio::select! {
        result = finished => match result {
            Ok(Ok(())) => tracing::info!(
                what,
                took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "done"
            ),
            Ok(Err(error)) => tracing::warn!(%error, what, "failed"),
            Err(_) => tracing::warn!(what, "panicked"),
        },
        () = shutdown_signal() => tracing::warn!(what, "skipped"),
    }
}

/// Connections the kernel may hold for `accept`. The usual 128 overflows
/// when thousands of long-poll clients (re)connect at once, as they do
/// after a restart or a network blip: the kernel then drops handshakes and
/// clients wait for TCP's retransmission, a second or more. The kernel
/// caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and mio do for listeners: a restart can bind while
    // connections of the previous process linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The URL the other servers sharing the store reach this one at, when
/// `--advertise-url` does not say: the address bound (its port, when
/// bound to port 0). An unspecified address (0.0.0.0) reaches nothing from
/// elsewhere: loopback then, which serves servers on one machine; on
/// several, set `--advertise-url`.
fn advertised(listener: &TcpListener, bind: SocketAddr) -> String {
    let mut address = listener.local_addr().unwrap_or(bind);
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}")
}

/// How long [`Server::run`] waits for background tasks to let go of the
/// store before it returns anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Waits until this is the last handle on the store, then drops it, so that
/// when `run` returns the store's files are closed and unlocked and the
/// same directory can be opened again at once (by a test, or an embedding
/// program). Tasks that hold a handle (subscription drivers, a scheduled
/// scavenge, a request finishing) let go within moments of shutdown.
/// Returns whether it was the last handle (if not, the files stay open
/// until the others are dropped).
async fn release(store: Arc<dyn Store>) -> bool {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = Arc::strong_count(&store) == 1;
    if !last {
        tracing::debug!(holders = Arc::strong_count(&store) - 1, "store still referenced at exit");
    }
    // A store's last handle may block as it lets go (sled flushes and joins
    // its threads on drop): off the async runtime, and bounded. After a
    // failed write sled's last flush can block for good, and a process
    // that never exits holds the data directory's lock, so the supervisor's
    // restart fails too. Every acknowledged append is durable already
    // (`close` returned): giving up on the flush loses nothing. A thread of
    // its own, not `spawn_blocking`, which the runtime would wait for.
    let (dropped, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("eventfeed-release".into()).spawn(move || {
        drop(store);
        let _ = dropped.send(());
    });
    if spawned.is_ok() && tokio::time::timeout(RELEASE_FLUSH_WAIT, done).await.is_err() {
        tracing::warn!(
            waited_secs = RELEASE_FLUSH_WAIT.as_secs(),
            "the store's files did not close in time; exiting without it (every acknowledged append is durable)"
        );
        return false;
    }
    last
}

/// How long the store's last handle may take to close its files.
const RELEASE_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Starts a scavenge every `interval` until shutdown (the first one an
/// interval after start-up, not at once: a restart loop should not turn
/// into a scavenge loop).
async fn scavenge_periodically(
    store: Arc<dyn Store>,
    metrics: Arc<crate::http::metrics::Metrics>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        match store.start_scavenge().await {
            Ok(store::ScavengeStarted::Started(_)) => metrics.scavenge_started(),
            Ok(store::ScavengeStarted::AlreadyRunning(_)) => {}
            Err(error) => tracing::warn!(%error, "could not start the scheduled scavenge"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Registered here, not at the first poll: once the handlers are in,
    // SIGTERM and SIGINT never take the default action (exit at once) for
    // the rest of the process, so a signal that arrives while the server
    // is still starting shuts it down gracefully too.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = received(terminate) => {}
                () = received(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The cap on connections for the open-file limit in force (see
/// `descriptors`), and the timeouts, as configured.
fn connection_limits(config: &ServeConfig, open_file_limit: Option<u64>) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: descriptors::connection_cap(open_file_limit, config.max_connections),
        timeouts: Timeouts {
            header: Duration::from_secs(config.header_timeout_secs),
            body: Duration::from_secs(config.body_timeout_secs),
            body_min_rate: config.body_min_bytes_per_sec,
            idle: Duration::from_secs(config.idle_timeout_secs),
        },
    }
}

/// Logs a warning for every built-in account that still has v5's default
/// password: anyone who knows v5 knows it.
async fn warn_of_default_passwords(security: &Security) {
    match security.default_passwords().await {
        Ok(logins) => {
            for login in logins {
                tracing::warn!(
                    login,
                    "the account '{login}' still has the default password 'changeit': change it before \
                     this server is reachable by anyone else (docs/security.md)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not check the built-in accounts' passwords"),
    }
}
