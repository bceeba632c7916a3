//! What the writer is asked to do: the one channel every mutation of the
//! sled store goes through, from request handlers and from the background
//! threads alike.

use tokio::sync::oneshot;

use super::compact::CompactProgress;
use super::rebuild::Progress;
use super::scavenge;
use crate::store::metadata;
use crate::store::projections::Projection;
use crate::store::{Append, AppendOutcome, ExpectedVersion, ExportSnapshot, ImportStep, StoreError};

/// A request to the writer.
pub(super) enum Command {
    Append {
        append: Append,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    },
    /// A multi-stream append: every part or none.
    AppendAll {
        appends: Vec<Append>,
        reply: oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>,
    },
    Delete {
        stream: String,
        expected: ExpectedVersion,
        hard: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// One step of building a projection from the log (see [`rebuild`]).
    BuildProjection {
        projection: Projection,
        reply: oneshot::Sender<Result<Progress, StoreError>>,
    },
    /// One step of compacting the store into a new generation (see
    /// [`compact`]); the first step begins it.
    Compact {
        reply: oneshot::Sender<Result<CompactProgress, StoreError>>,
    },
    /// One step of a scavenge (see [`scavenge`]).
    Scavenge {
        cursor: scavenge::Cursor,
        reply: oneshot::Sender<Result<scavenge::StepOutcome, StoreError>>,
    },
    /// A tick, a few times a second: a writer that has had nothing else to
    /// do for a while maintains the id index (see [`Writer::upkeep`]).
    Upkeep,
    /// Every stream's state and the head, read between two batches (see
    /// [`super::transfer`]).
    Snapshot {
        reply: oneshot::Sender<Result<ExportSnapshot, StoreError>>,
    },
    /// One step of an import (see [`super::transfer`]).
    Import {
        step: ImportStep,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Flush everything and stop.
    Close {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { append, .. } => f.debug_struct("Append").field("append", append).finish(),
            Self::AppendAll { appends, .. } => f.debug_struct("AppendAll").field("appends", appends).finish(),
            Self::Delete { stream, expected, hard, .. } => f
                .debug_struct("Delete")
                .field("stream", stream)
                .field("expected", expected)
                .field("hard", hard)
                .finish(),
            Self::BuildProjection { projection, .. } => {
                f.debug_struct("BuildProjection").field("projection", projection).finish()
            }
            Self::Scavenge { cursor, .. } => f.debug_struct("Scavenge").field("cursor", cursor).finish(),
            Self::Compact { .. } => f.write_str("Compact"),
            Self::Upkeep => f.write_str("Upkeep"),
            Self::Snapshot { .. } => f.write_str("Snapshot"),
            Self::Import { .. } => f.write_str("Import"),
            Self::Close { .. } => f.write_str("Close"),
        }
    }
}

impl Command {
    /// Whether the writer runs it alone, between two batches.
    pub(super) fn is_transfer(&self) -> bool {
        matches!(self, Self::Snapshot { .. } | Self::Import { .. })
    }

    /// Whether the command may hide events already in `$all` (see
    /// `Notifier::hid_events`): anything but plain appends. A metadata
    /// write is an append to a `$$` stream.
    pub(super) fn may_hide_events(&self) -> bool {
        let describes = |append: &Append| metadata::described_stream(&append.stream).is_some();
        match self {
            Self::Append { append, .. } => describes(append),
            Self::AppendAll { appends, .. } => appends.iter().any(describes),
            Self::Upkeep | Self::Close { .. } | Self::Compact { .. } | Self::Snapshot { .. } => false,
            Self::Delete { .. }
            | Self::Scavenge { .. }
            | Self::BuildProjection { .. }
            | Self::Import { .. } => true,
        }
    }

    pub(super) fn payload_bytes(&self) -> usize {
        match self {
            Self::Append { append, .. } => append.events.iter().map(|e| e.size()).sum(),
            Self::AppendAll { appends, .. } => appends.iter().flat_map(|a| &a.events).map(|e| e.size()).sum(),
            _ => 0,
        }
    }
}
