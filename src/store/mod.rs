//! The store: streams of immutable events, a dense global log, permanent
//! idempotency, and the notifications live readers wait on.
//!
//! Everything above this module talks to the [`Store`] trait, opened by
//! [`open`], so another backend satisfies the same contract without
//! touching a handler. The values that cross the seam are in [`model`]; the
//! rules every backend shares are here too: the rules of a write
//! ([`rules`]), retention ([`retention`]),
//! metadata ([`metadata`]), the system projections ([`projections`]) and
//! how their links read ([`links`]), and the wake-ups ([`notify`]).
//! Backends:
//! - [`sled`](self::sled): the embedded store, the default. One writer
//!   thread owns every mutation and commits whatever requests are waiting
//!   as one atomic, durable batch (group commit).
//! - `postgres` (with the `postgres` feature): the same contract on a
//!   PostgreSQL database, for teams that run one; group commit is one
//!   transaction per batch.
//! - [`memory`]: the reference store, for tests: the contract written
//!   plainly, one mutex around plain collections. Nothing survives the
//!   process.
//!
//! Invariants every backend keeps (`tests/store_contract.rs` checks them on
//! each one):
//! - global positions and per-stream event numbers are dense and assigned in
//!   commit order by a single writer;
//! - an acknowledged append is durable to the degree the [`Durability`] mode
//!   promises, and a commit is visible entirely or not at all; a read never
//!   shows an append before it is acknowledged;
//! - a request that fails changes nothing;
//! - an event id, once written, is spent forever: appending it again to the
//!   same stream returns the original location (idempotent retry).

pub mod links;
#[cfg(feature = "test-support")]
pub mod memory;
pub mod metadata;
pub mod model;
pub mod notify;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod projections;
pub(crate) mod recent_states;
pub mod retention;
pub mod rules;
pub mod sled;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

#[cfg(feature = "test-support")]
use self::projections::Projections;
pub use model::*;
pub use notify::{AppendWatch, CommitFigures, CommitObserver, DatabaseQuery, Head, Notifier, StreamWatch};

/// Which backend to open, and its options.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded store in a data directory.
    Sled(self::sled::SledStoreOptions),
    /// A PostgreSQL database, by its connection string.
    Postgres(PostgresOptions),
    /// The reference store in memory, for tests: nothing is durable
    /// (with the `test-support` feature, which tests turn on).
    #[cfg(feature = "test-support")]
    Memory {
        /// The system projections maintained (all of them by default).
        projections: Projections,
    },
}

/// Opens (or creates) the store `config` names.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Sled(options) => {
            let options = options.clone();
            let store = tokio::task::spawn_blocking(move || self::sled::SledStore::open(options))
                .await
                .map_err(|e| StoreError::Io(format!("store open panicked: {e}")))??;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(options) => Ok(Arc::new(self::postgres::PgStore::open(options.clone()).await?)),
        #[cfg(not(feature = "postgres"))]
        StoreConfig::Postgres(_) => Err(StoreError::Invalid(
            "this eventfeed was built without PostgreSQL support (cargo feature `postgres`)".into(),
        )),
        #[cfg(feature = "test-support")]
        StoreConfig::Memory { projections } => Ok(Arc::new(memory::MemoryStore::new(*projections))),
    }
}

/// How to open a PostgreSQL store. Here rather than in the backend, so
/// that configuration parses whether or not the backend is built in.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq connection string: a `postgres://` URL or `key=value`
    /// pairs; multi-host strings are accepted.
    pub url: String,
    /// What an acknowledged append survives (see the backend's docs).
    pub durability: Durability,
    /// The system projections maintained.
    pub projections: self::projections::Projections,
    /// A PEM file of the CAs whose certificates the database's are checked
    /// against over TLS (`sslmode=require`); `None`: the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for PostgresOptions {
    /// Without the connection string, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("durability", &self.durability)
            .field("projections", &self.projections)
            .finish_non_exhaustive()
    }
}

/// The last event of `stream`; `None` when it has none (or does not exist).
pub async fn last_event(store: &dyn Store, stream: &str) -> Result<Option<ReadEvent>, StoreError> {
    match store.read_stream(StreamRead::last(stream)).await {
        Ok(mut slice) => Ok(slice.events.pop()),
        Err(StoreError::StreamNotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Work a backend wants done once it is closed and its last handle is
/// dropped (see [`Store::after_release`]).
pub struct AfterRelease {
    /// What it does, for the log.
    pub what: &'static str,
    /// Does it; blocking.
    pub run: Box<dyn FnOnce() -> Result<(), StoreError> + Send>,
}

impl fmt::Debug for AfterRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterRelease").field("what", &self.what).finish_non_exhaustive()
    }
}

/// The seam between the HTTP layer and storage.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Appends events to a stream, atomically and durably.
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError>;

    /// Appends to several streams at once: every part, each checked against
    /// its own expected version, in one atomic and durable commit with
    /// consecutive positions, or none (see [`rules::decide_parts`]). The
    /// outcomes are in the request's order.
    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Reads a range of a stream. Fails with [`StoreError::StreamNotFound`]
    /// or [`StoreError::StreamDeleted`] when there is nothing to read.
    async fn read_stream(&self, read: StreamRead) -> Result<StreamSlice, StoreError>;

    /// Reads a range of `$all`.
    async fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError>;

    /// Reads one event by number; `None` when the stream exists but the
    /// event does not (or is no longer visible).
    async fn read_event(
        &self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError>;

    /// Soft-deletes (numbering continues on the next append) or hard-deletes
    /// (tombstones, forever) a stream.
    async fn delete(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError>;

    /// The current state of a stream, `None` when it was never written.
    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError>;

    /// A stream's state as of a recent moment, for answers that do not
    /// depend on its head (pages kept in memory): it never misses this
    /// node's acknowledged writes, but may miss another node's for as long
    /// as their notification takes to arrive. A single node's store is
    /// always current. Kept in memory while the backend hears every commit
    /// (see `recent_states.rs`).
    async fn recent_stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        let states = self.notifier().recent_states();
        if let Some(state) = states.get(stream) {
            return Ok(Some(state));
        }
        let stamp = states.stamp(stream);
        let state = self.stream_state(stream).await?;
        if let (Some(stamp), Some(state)) = (stamp, &state) {
            states.keep(stream, state.clone(), stamp);
        }
        Ok(state)
    }

    /// A number that moves whenever a commit may hide events already
    /// written to `$all` (a metadata write, a delete, a scavenge), so that
    /// a full page of `$all` read under it, holding no event of a stream
    /// with `$maxCount` or `$maxAge` ([`AllSlice::may_expire`]), keeps its
    /// bytes for as long as the number stays. `None`: this backend cannot
    /// tell (the PostgreSQL store, where another node's commit would have
    /// to reach every node first), and `$all` pages are never kept.
    fn all_pages_epoch(&self) -> Option<u64> {
        None
    }

    /// Up to `limit` streams whose names start with `prefix`, in name
    /// (byte) order, each after `after` when given: a listing that pages by
    /// name, one range scan per page however many streams there are.
    /// Streams that were only ever soft- or hard-deleted are listed too,
    /// with their state saying so; names are those of every stream the
    /// store keeps a state for (system and metadata streams included).
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamState)>, StoreError>;

    /// The number of the metadata event that governs `stream` now (`None`:
    /// it has none), for access checks before a write. It may be that of a
    /// commit still in flight: a backend answers without waiting for it,
    /// so that checking an append never waits on the previous one's fsync.
    async fn metadata_number(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.stream_state(stream).await?.and_then(|state| state.settings.metadata_number))
    }

    /// Starts a scavenge in the background, unless one is running.
    async fn start_scavenge(&self) -> Result<ScavengeStarted, StoreError>;

    /// A scavenge's progress or result; `None` for an unknown id.
    async fn scavenge_report(&self, id: Uuid) -> Result<Option<ScavengeReport>, StoreError>;

    /// The scavenge running now, else the one started last (also by an
    /// earlier process); `None` when there never was one. Cheap: kept in
    /// memory, for status pages polled every few seconds.
    fn latest_scavenge(&self) -> Option<ScavengeReport> {
        None
    }

    /// The bytes the store's files take on disk; `None` for a store that
    /// has none. May walk a directory: call it off the async threads
    /// (`spawn_blocking`), and not on a request's path.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// The backend's name, as exports record their source: `sled`,
    /// `postgres`, `memory`.
    fn backend_name(&self) -> &'static str;

    /// Where live readers learn of new events.
    fn notifier(&self) -> &Notifier;

    /// Why the store takes no writes, when a failure stopped them: only a
    /// restart brings them back (health checks report it).
    fn writes_stopped(&self) -> Option<String> {
        self.notifier().writes_stopped()
    }

    /// Why the store cannot take writes for now, if it cannot: its
    /// database is away (PostgreSQL). Unlike [`Store::writes_stopped`] it
    /// passes by itself, without a restart, once the database is back.
    fn unreachable(&self) -> Option<String> {
        None
    }

    /// The free space of the store's disk and the floor it keeps, for a
    /// store on a disk (see `--min-free-mb`).
    fn disk_space(&self) -> Option<DiskSpace> {
        None
    }

    /// The connection pool of a database backend, read at scrape time;
    /// `None` for a store that has none.
    fn database_pool(&self) -> Option<PoolFigures> {
        None
    }

    /// The system projections still being built from the log.
    fn projections_building(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The head and every stream's state, for an export. This default
    /// reads the head, then pages through the states: exact for a store
    /// nothing writes to meanwhile (an offline export). A backend that
    /// can take both at one point between commits does (the sled store
    /// asks its writer), so an export of a running store is of one moment.
    async fn export_snapshot(&self) -> Result<ExportSnapshot, StoreError> {
        let building = self.projections_building();
        if !building.is_empty() {
            // Their streams are half built: an import would take them so.
            return Err(StoreError::Busy(format!(
                "projections are being built ({}); export once they are",
                building.join(", ")
            )));
        }
        let notifier = self.notifier();
        let head = Head { next_position: notifier.next_position(), commit_seq: notifier.commit_seq() };
        let mut streams: Vec<(String, StreamState)> = Vec::new();
        loop {
            let after = streams.last().map(|(name, _)| name.clone());
            let page = self.list_streams("", after.as_deref(), 1_000).await?;
            if page.is_empty() {
                break;
            }
            streams.extend(page);
        }
        Ok(ExportSnapshot { head, streams, hold: ScavengeHold::default() })
    }

    /// Up to about `limit` entries of `stream` as stored, numbered from
    /// `from` and below `below`, in number order: every record and link a
    /// scavenge has not removed, whether reads can see it or not (numbers
    /// removed are skipped). Fewer when they reach [`rules::READ_BYTES`]
    /// of event data; none when there are no more.
    async fn export_entries(
        &self,
        stream: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let _ = (stream, from, below, limit);
        Err(StoreError::Invalid("this store cannot be exported".into()))
    }

    /// The ids of the events a scavenge removed from the streams of
    /// `snapshot`, below their numbers there, by stream and number: they
    /// stay spent in a store loaded from the export. Held in memory (a few
    /// dozen bytes each).
    async fn export_spent_ids(&self, snapshot: &ExportSnapshot) -> Result<Vec<SpentId>, StoreError> {
        let _ = snapshot;
        Err(StoreError::Invalid("this store cannot be exported".into()))
    }

    /// Loads an export, step by step (see [`ImportStep`]): records keep
    /// their positions, numbers and creation times. Only into an empty
    /// store, and only one import at a time, with nothing else writing.
    async fn import(&self, step: ImportStep) -> Result<(), StoreError> {
        let _ = step;
        Err(StoreError::Invalid("this store cannot import".into()))
    }

    /// Makes everything acknowledged so far durable and stops accepting
    /// writes. Called once at shutdown.
    async fn close(&self) -> Result<(), StoreError>;

    /// Takes or renews the lease `name` for `claim.ttl` if it is free,
    /// expired or already the claimant's; otherwise says who holds it.
    /// Several servers share one store only on PostgreSQL; a store only
    /// one server can open (sled, memory) grants it for good.
    async fn lease(&self, name: &str, claim: &LeaseClaim) -> Result<Lease, StoreError> {
        let _ = (name, claim);
        Ok(Lease::Exclusive)
    }

    /// Gives lease `name` up if `holder` holds it, so another server can
    /// take it at once instead of after it expires.
    async fn release_lease(&self, name: &str, holder: Uuid) -> Result<(), StoreError> {
        let _ = (name, holder);
        Ok(())
    }

    /// Work to run after [`close`](Store::close), once the last handle on
    /// the store is dropped (so its files are free), for example to make the
    /// next open quick. `None`: nothing to do. Skipping it must be safe.
    fn after_release(&self) -> Option<AfterRelease> {
        None
    }
}
