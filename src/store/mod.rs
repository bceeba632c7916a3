//! The store: streams of immutable events, a dense global log, permanent
//! idempotency, and the notifications live readers wait on.
//!
//! The HTTP layer only talks to the [`Store`] trait, so a PostgreSQL store can
//! later satisfy the same contract without touching a handler. The embedded
//! implementation is [`SledStore`]: one writer task owns every mutation and
//! commits whatever appends are waiting as one atomic, durable batch (group
//! commit, see [`writer`]).
//!
//! Invariants every implementation keeps:
//! - global positions and per-stream event numbers are dense and assigned in
//!   commit order by a single writer;
//! - an acknowledged append is durable to the degree the [`Durability`] mode
//!   promises, and a batch is visible entirely or not at all;
//! - an event id, once written, is spent forever: appending it again to the
//!   same stream returns the original location (idempotent retry).

pub mod codec;
mod compact;
mod generation;
mod id_filter;
mod id_index;
pub mod keys;
pub mod metadata;
pub mod notify;
pub mod projections;
mod rebuild;
pub mod scavenge;
mod sled_store;
pub mod visibility;
mod writer;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub use codec::{StreamSettings, StreamState};
pub use notify::{AppendWatch, Head, Notifier, StreamWatch};
pub use sled_store::{SledStore, SledStoreOptions};

/// How hard the writer works to make an acknowledged batch survive failure.
///
/// Whatever the mode, a batch is atomic: after any crash it is either wholly
/// present or wholly absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// Before acknowledging, flush sled's buffers and `fdatasync` its data
    /// files. Survives a process crash (`kill -9`) **and** power loss or a
    /// kernel crash: the device cache is flushed, which sled's own flush
    /// (`sync_file_range`) does not do.
    #[default]
    Fsync,
    /// Before acknowledging, flush sled's buffers to the kernel with sled's
    /// own flush (`sync_file_range` on the log). Survives a process crash.
    /// On power loss, acknowledged batches still in the device's volatile
    /// cache can be lost; large values (sled blob files) can be lost even
    /// without a device cache because sled never syncs them.
    Flush,
    /// Acknowledge as soon as the batch is applied in memory; sled writes it
    /// out within about half a second in the background. A process crash or
    /// power loss loses the last few hundred milliseconds of acknowledged
    /// appends. For benchmarks and throwaway stores only.
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
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        Self::Io(error.to_string())
    }
}

/// The seam between the HTTP layer and storage.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Appends events to a stream, atomically and durably.
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError>;

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

    /// Starts a scavenge in the background, unless one is running.
    async fn start_scavenge(&self) -> Result<scavenge::ScavengeStarted, StoreError>;

    /// A scavenge's progress or result; `None` for an unknown id.
    async fn scavenge_report(&self, id: Uuid) -> Result<Option<scavenge::ScavengeReport>, StoreError>;

    /// Where live readers learn of new events.
    fn notifier(&self) -> &Notifier;

    /// The system projections still being built from the log.
    fn projections_building(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Makes everything acknowledged so far durable and stops accepting
    /// writes. Called once at shutdown.
    async fn close(&self) -> Result<(), StoreError>;
}
