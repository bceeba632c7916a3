//! The values that cross the store seam: what callers hand a [`Store`] and
//! what it hands back. Plain data, the same for every backend: nothing here
//! names a storage engine, and nothing here knows about HTTP.
//!
//! [`Store`]: super::Store

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How hard a store works to make an acknowledged append survive failure.
///
/// Whatever the mode, a commit is atomic: after any crash it is either
/// wholly present or wholly absent. Each backend says in its own module how
/// it keeps each promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Before acknowledging, the commit is on stable storage, the device's
    /// volatile cache flushed (`fdatasync`). Survives a process crash
    /// (`kill -9`) **and** power loss or a kernel crash.
    #[default]
    Fsync,
    /// Before acknowledging, the commit is handed to the operating system.
    /// Survives a process crash; on power loss, acknowledged commits still
    /// in the kernel's or the device's caches can be lost.
    Flush,
    /// Acknowledge as soon as the commit is applied in memory; it is written
    /// out within about half a second. A process crash or power loss loses
    /// the last few hundred milliseconds of acknowledged appends. For
    /// benchmarks and throwaway stores only.
    None,
}

/// `ES-ExpectedVersion`: what the writer checks before it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// `-2`: append whatever the stream's state.
    Any,
    /// `-1`: the stream must not exist (never written, or soft-deleted).
    NoStream,
    /// `-4`: the stream must exist.
    StreamExists,
    /// `N`: the stream's last event number must be exactly `N`.
    Exact(u64),
}

impl ExpectedVersion {
    /// Parses the wire form: an integer ≥ -4, of which -3 means nothing.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().parse::<i64>().ok()? {
            -2 => Some(Self::Any),
            -1 => Some(Self::NoStream),
            -4 => Some(Self::StreamExists),
            n => u64::try_from(n).ok().map(Self::Exact),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    /// The wire form: `-2`, `-1`, `-4` or the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("-2"),
            Self::NoStream => f.write_str("-1"),
            Self::StreamExists => f.write_str("-4"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// One event as a producer proposes it.
#[derive(Debug, Clone)]
pub struct ProposedEvent {
    pub id: Uuid,
    pub event_type: String,
    /// The data is a JSON document (an object or array, or any JSON value).
    pub is_json: bool,
    pub data: Bytes,
    pub metadata_is_json: bool,
    pub metadata: Bytes,
}

impl ProposedEvent {
    /// The size the event-size limit is checked against.
    pub fn size(&self) -> usize {
        self.data.len() + self.metadata.len()
    }
}

/// An append of one or more events to one stream, written all or nothing.
#[derive(Debug, Clone)]
pub struct Append {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<ProposedEvent>,
    /// The access rules the append was allowed by, when it was checked
    /// against a stream's `$acl`: it is written only if they still hold
    /// when the writer takes it, else it fails with
    /// [`StoreError::AccessChanged`] and nothing is written. `None`: not
    /// checked against rules (the server's own writes, `$admins`).
    pub access: Option<AccessBasis>,
}

/// The rules an append was allowed by: those of `stream` (the stream
/// appended to, or for a metadata stream `$$s`, `s`) as of its metadata
/// event `metadata_number` (`None`: it had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessBasis {
    pub stream: String,
    pub metadata_number: Option<u64>,
}

/// What an acknowledged append wrote (or, for a retry, had written before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub first_number: u64,
    pub last_number: u64,
    /// Global position of the first event; for a retry, of the original.
    pub position: Option<u64>,
    /// The events' ids were already written; nothing new was appended.
    pub idempotent: bool,
}

/// An event as it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Shared: the events of a page mostly have one stream and few types,
    /// and a read makes one copy of each name instead of one per event.
    pub stream: Arc<str>,
    pub number: u64,
    pub position: u64,
    pub id: Uuid,
    pub event_type: Arc<str>,
    /// Microseconds since the Unix epoch, UTC, assigned by the writer and
    /// never decreasing along the log.
    pub created_micros: i64,
    pub is_json: bool,
    pub metadata_is_json: bool,
    pub data: Bytes,
    pub metadata: Bytes,
}

/// The event type of link events in system streams.
pub const LINK_EVENT_TYPE: &str = "$>";

impl RecordedEvent {
    pub fn is_link(&self) -> bool {
        &*self.event_type == LINK_EVENT_TYPE
    }
}

/// An event as a read returns it. For link events (`$>` in system streams)
/// that were resolved, `event` is the target and `link` the link itself; for
/// everything else `link` is `None` and `event` is what is stored in the
/// stream that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    pub event: RecordedEvent,
    /// Boxed: pages move read events around by value, and a second
    /// record inline would double every move for the few that are links.
    pub link: Option<Box<RecordedEvent>>,
}

impl ReadEvent {
    /// The event as it sits in the stream that was read: the link when one
    /// was resolved, else the event.
    pub fn original(&self) -> &RecordedEvent {
        self.link.as_deref().unwrap_or(&self.event)
    }
}

/// The direction of a range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A range read of one stream. Numbers outside the stream are fine: the
/// slice simply holds fewer events.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub stream: String,
    /// Forward: the lowest number wanted. Backward: the highest. `None`:
    /// the stream's last event (the head).
    pub from: Option<u64>,
    pub direction: Direction,
    pub count: u64,
    pub resolve_links: bool,
}

impl StreamRead {
    /// The last event of `stream`, as stored (links not resolved).
    pub fn last(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            from: None,
            direction: Direction::Backward,
            count: 1,
            resolve_links: false,
        }
    }
}

/// The state of a stream as seen by a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamView {
    /// The last event number (visible or not).
    pub last_number: u64,
    /// The lowest number a read can still see (retention and soft delete).
    pub first_visible: u64,
    pub settings: StreamSettings,
}

/// The events of a [`StreamRead`], always in ascending event-number order.
#[derive(Debug, Clone)]
pub struct StreamSlice {
    pub view: StreamView,
    pub events: Vec<ReadEvent>,
}

/// A range read of `$all`, the whole log in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllRead {
    /// Forward: the lowest position wanted. Backward: the highest. `None`:
    /// the newest event.
    pub from: Option<u64>,
    pub direction: Direction,
    /// How many visible events to return at most.
    pub count: u64,
}

/// The events of an [`AllRead`], in ascending position order. Events that
/// retention or deletion hid from their stream are skipped, so a slice may
/// cover more positions than it holds events.
#[derive(Debug, Clone)]
pub struct AllSlice {
    /// The next position the writer will assign (one past the newest).
    pub next_position: u64,
    /// The lowest and highest position the read examined; `None` when it
    /// examined none (nothing in range).
    pub scanned: Option<(u64, u64)>,
    pub events: Vec<RecordedEvent>,
    /// An event here may vanish with appends or time (`$maxCount`, `$maxAge`; true if unknown).
    pub may_expire: bool,
}

/// A server's claim on a lease ([`Store::lease`](super::Store::lease)).
#[derive(Debug, Clone)]
pub struct LeaseClaim {
    /// The claiming server, for as long as it runs.
    pub holder: Uuid,
    /// Where other servers reach the holder (its advertised URL).
    pub address: String,
    /// How long the lease lasts unless renewed, by the store's clock.
    pub ttl: std::time::Duration,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The store is the claimant's alone (no other server can open it), so
    /// the lease is its for good: nothing to renew.
    Exclusive,
    /// The claimant holds the lease for the claim's time to live.
    Held,
    /// Another server holds it; it is reached at `address`.
    HeldBy { address: String },
}

/// A failure of the store. Nothing here knows about HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The expected version did not match, or the event ids only partly
    /// matched an earlier write. `current` is the stream's last event number,
    /// -1 when it does not exist.
    WrongExpectedVersion { current: i64, detail: String },
    /// The stream was hard-deleted.
    StreamDeleted,
    /// The stream does not exist or was soft-deleted.
    StreamNotFound,
    /// The request is malformed in a way only the store can see.
    Invalid(String),
    /// A stored record could not be decoded.
    Corrupt(String),
    /// The storage engine failed.
    Io(String),
    /// The store is shutting down or its writer stopped after a failure.
    Unavailable,
    /// The disk is too full to take the write; nothing was written. It
    /// goes through once space is freed.
    InsufficientStorage(String),
    /// The write could not be made durable, so whether it stands is
    /// unknown; the store takes no writes until it is restarted. A retry
    /// with the same event ids is safe: if the write stood, the retry is
    /// recognised and answered with its original outcome.
    CommitFailed(String),
    /// The store's database cannot be reached now (stopped, restarting,
    /// or out of connections); nothing was written. The store goes on and
    /// takes writes again by itself once the database is back.
    Unreachable(String),
    /// The connection to the database was lost while it committed the
    /// write, so whether it stands is unknown; the store goes on. A retry
    /// with the same event ids is safe: if the write stood, the retry is
    /// recognised and answered with its original outcome.
    OutcomeUnknown(String),
    /// Parts of a multi-stream append whose expected versions did not hold
    /// (every one of them), or that only repeat an earlier write while
    /// other parts are new; nothing was written.
    Conflicts(Vec<Conflict>),
    /// Another task holds what this one needs for now (a scavenge while
    /// an export reads the store, or the other way round); nothing was
    /// done. It goes through once that task ends.
    Busy(String),
    /// The stream's access rules changed between the check that allowed
    /// the append and its write; nothing was written. The caller checks
    /// again against the new rules.
    AccessChanged,
    /// One part of a multi-stream append was refused for another reason
    /// (its stream hard-deleted, its metadata malformed, …); nothing was
    /// written.
    InPart { stream: String, error: Box<StoreError> },
}

/// A part of a multi-stream append whose expected version did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub stream: String,
    pub expected: ExpectedVersion,
    /// The stream's last event number, -1 when it does not exist.
    pub current: i64,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongExpectedVersion { current, detail } => {
                write!(f, "wrong expected version (current {current}): {detail}")
            }
            Self::StreamDeleted => f.write_str("stream deleted"),
            Self::StreamNotFound => f.write_str("stream not found"),
            Self::Invalid(message) => write!(f, "invalid request: {message}"),
            Self::Corrupt(message) => write!(f, "corrupt store: {message}"),
            Self::Io(message) => write!(f, "storage failure: {message}"),
            Self::Unavailable => f.write_str("store unavailable"),
            Self::InsufficientStorage(message) => write!(f, "insufficient storage: {message}"),
            Self::CommitFailed(message) => write!(f, "the write could not be made durable: {message}"),
            Self::Unreachable(message) => write!(f, "the database cannot be reached: {message}"),
            Self::OutcomeUnknown(message) => write!(f, "the write's outcome is unknown: {message}"),
            Self::Conflicts(conflicts) => {
                f.write_str("expected versions did not hold:")?;
                for Conflict { stream, expected, current } in conflicts {
                    write!(f, " '{stream}' expected {expected}, is at {current};")?;
                }
                Ok(())
            }
            Self::Busy(message) => write!(f, "busy: {message}"),
            Self::AccessChanged => f.write_str("the stream's access rules changed while the write waited"),
            Self::InPart { stream, error } => write!(f, "stream '{stream}': {error}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Everything the store keeps about one stream besides its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The number the next event will get; the last event is `next_number - 1`.
    /// Numbering continues across a soft delete, so this never goes down.
    pub next_number: u64,
    /// Global position of the append that created the stream.
    pub created_position: u64,
    /// Events numbered below this were soft-deleted and are gone for good.
    pub deleted_before: u64,
    /// The stream was soft-deleted and has not been appended to since.
    pub soft_deleted: bool,
    /// The stream was hard-deleted: it can never be read or written again.
    pub tombstoned: bool,
    /// Retention and caching settings from the stream's metadata.
    pub settings: StreamSettings,
}

/// The parts of a stream's metadata that the store enforces on every read.
/// The raw metadata document itself lives in the `$${stream}` stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// `$maxCount`: only the newest N events are visible.
    pub max_count: Option<u64>,
    /// `$maxAge` in seconds: older events are invisible.
    pub max_age_secs: Option<u64>,
    /// `$tb`: events numbered below it are invisible.
    pub truncate_before: Option<u64>,
    /// `$cacheControl` in seconds for head-like responses.
    pub cache_control_secs: Option<u64>,
    /// The event number of the metadata event these settings came from, so
    /// that ETags change when the settings (and so the visible events) do.
    pub metadata_number: Option<u64>,
    /// The stream's `$acl` allows reading by everyone (`$r` absent or `$all`).
    /// Pages of streams that are not public are cached `private`.
    pub not_public: bool,
}

impl StreamState {
    /// The last event number, or `None` when nothing was ever written.
    pub fn last_number(&self) -> Option<u64> {
        self.next_number.checked_sub(1)
    }

    /// Whether the stream exists for reads and for expected-version checks.
    pub fn exists(&self) -> bool {
        self.next_number > 0 && !self.soft_deleted && !self.tombstoned
    }
}

/// The status of a scavenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScavengeStatus {
    Running,
    Completed,
    Failed,
    /// The server stopped (or died) while it ran; nothing readable was lost,
    /// and the next scavenge picks up what it left.
    Interrupted,
}

/// A scavenge's progress and result, kept in the store so it can be
/// looked up after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScavengeReport {
    pub scavenge_id: Uuid,
    pub status: ScavengeStatus,
    /// Microseconds since the Unix epoch.
    pub started_micros: i64,
    pub finished_micros: Option<i64>,
    pub streams_scanned: u64,
    pub events_removed: u64,
    pub links_removed: u64,
    /// Records the backend rewrote to return the space (the sled store
    /// copies its live keys into a new generation); 0 where space comes
    /// back without a rewrite.
    #[serde(default)]
    pub keys_copied: u64,
    /// The store's size on disk when it started and when it finished.
    pub bytes_before: u64,
    pub bytes_after: Option<u64>,
    pub error: Option<String>,
}

impl ScavengeReport {
    /// The report of a scavenge that starts now, on a store of
    /// `bytes_before` bytes: running, nothing done yet.
    pub fn starting(scavenge_id: Uuid, bytes_before: u64) -> Self {
        Self {
            scavenge_id,
            status: ScavengeStatus::Running,
            started_micros: super::retention::now_micros(),
            finished_micros: None,
            streams_scanned: 0,
            events_removed: 0,
            links_removed: 0,
            keys_copied: 0,
            bytes_before,
            bytes_after: None,
            error: None,
        }
    }
}

/// What asking for a scavenge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScavengeStarted {
    Started(Uuid),
    AlreadyRunning(Uuid),
}

/// The free space of a store's disk, and the floor below which the store
/// refuses appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

impl DiskSpace {
    /// Whether appends are refused for want of space right now.
    pub fn below_floor(&self) -> bool {
        self.free_bytes < self.min_free_bytes
    }
}

/// A database backend's connection pool right now (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Connections open and idle.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// What a store holds under one number of a stream, as an export carries
/// it: an event record, or (in a system stream) a link to one. Events no
/// read can see are included as long as a scavenge has not removed them,
/// so that a store rebuilt from an export holds exactly the same records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredEntry {
    Event(RecordedEvent),
    Link(StoredLink),
}

impl StoredEntry {
    /// The number it has in its stream.
    pub fn number(&self) -> u64 {
        match self {
            Self::Event(event) => event.number,
            Self::Link(link) => link.number,
        }
    }
}

/// Link `number` of system stream `stream`: it points at event
/// `target_number` of `target_stream`, at `target_position`, and has its
/// target's creation time (see [`super::links::link_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub stream: String,
    pub number: u64,
    pub target_position: u64,
    pub created_micros: i64,
    pub target_stream: String,
    pub target_number: u64,
}

/// Where an export starts: every stream's state and the head, as of one
/// point between commits, so that an export is of one moment of the store.
#[derive(Debug, Default)]
pub struct ExportSnapshot {
    pub head: super::Head,
    /// Every stream the store keeps a state for, in name (byte) order.
    pub streams: Vec<(String, StreamState)>,
    /// Keeps scavenges off until the export is read (dropped).
    pub hold: ScavengeHold,
}

/// While it lives, no scavenge starts: an export reads entries below the
/// numbers of its snapshot, which only a scavenge removes. Dropping it
/// lets scavenges start again.
#[derive(Default)]
pub struct ScavengeHold(pub Option<Box<dyn Send + Sync>>);

impl fmt::Debug for ScavengeHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "ScavengeHold(held)" } else { "ScavengeHold(none)" })
    }
}

/// One step of loading an export into an empty store (see
/// [`super::Store::import`]).
#[derive(Debug, Clone)]
pub enum ImportStep {
    /// Checks that the store is empty (no stream state, no position used)
    /// and starts the import; refused, with nothing written, otherwise.
    Begin,
    /// Writes streams' states and stored entries, as they were, positions
    /// and creation times included.
    Write(Vec<ImportItem>),
    /// Sets the head: the next position the store assigns (positions a
    /// scavenge removed stay unused), and the newest creation time.
    Finish { next_position: u64, last_created_micros: i64 },
}

/// What an import writes.
#[derive(Debug, Clone)]
pub enum ImportItem {
    Stream {
        name: String,
        state: StreamState,
    },
    Entry(StoredEntry),
    /// The id of an event a scavenge removed: still spent.
    SpentId(SpentId),
}

/// An event id written as event `number` of `stream`, whose event a
/// scavenge has removed: ids are spent forever, so an export carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpentId {
    pub stream: String,
    pub number: u64,
    pub id: Uuid,
}
