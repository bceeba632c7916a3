//! Scavenging: reclaiming the space of events no read can see any more —
//! events beyond `$maxCount`, older than `$maxAge`, before `$tb`, and the
//! events of soft- and hard-deleted streams — and of their index entries.
//!
//! A scavenge walks every stream in key order, in steps run inside the
//! writer. Each step decides visibility from the current state with the
//! same function reads use ([`crate::store::retention::first_visible`]) and
//! removes a bounded number of invisible index entries and log records as
//! one atomic batch. Entries written together are stored as runs (records,
//! links, log positions); the invisible part of a run is always its start,
//! since visibility is a lower bound on numbers, and a run it cuts keeps its
//! visible tail under the tail's first key. So:
//! - it never removes an event a read can still see, even if metadata
//!   changes while it runs (steps are serialised with appends);
//! - it can be killed at any point: every step is all or nothing, and what
//!   is left is simply found again by the next scavenge;
//! - appends are held up for one bounded step at a time, never for the
//!   whole scavenge.
//!
//! Kept on purpose: stream states (a tombstone must stay so the name stays
//! dead; a soft-deleted stream's numbering continues) and the event-id index
//! (an event id is spent forever, so idempotency stays permanent).

use std::collections::HashSet;

use super::codec::{self, Entry};
use super::entries::first_visible;
use super::keys;
use super::staging::Staging;
use crate::store::StoreError;
use crate::store::retention::now_micros;

/// The most keys one step removes. Removals go into the writer's batch, so
/// the appends that share it wait for them: a few milliseconds' worth.
const STEP_REMOVALS: usize = 1_000;
/// The most streams one step examines (each costs a state read, and with
/// `$maxAge` a binary search).
const STEP_STREAMS: usize = 500;
/// A step stops examining streams after this long, whatever it found.
pub(crate) const STEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(3);

/// Where a scavenge has got to: the stream it is in (or will start after)
/// and the first event number of it not yet examined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub stream: Option<String>,
    pub next_number: u64,
}

/// What one step did, and where the next starts (`None`: finished).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepOutcome {
    pub next: Option<Cursor>,
    pub streams: u64,
    pub events_removed: u64,
    pub links_removed: u64,
}

/// Runs one step from `cursor`, inside the writer's batch.
pub(crate) fn step(staging: &mut Staging<'_>, cursor: &Cursor) -> Result<StepOutcome, StoreError> {
    let now = now_micros();
    let mut outcome = StepOutcome::default();
    let mut removals = 0usize;
    let start = match &cursor.stream {
        Some(stream) => keys::stream(stream),
        None => vec![keys::STREAM],
    };
    let streams: Vec<sled::IVec> = staging
        .db()
        .range(start..)
        .keys()
        .take_while(|key| key.as_ref().map_or(true, |key| key.first() == Some(&keys::STREAM)))
        .take(STEP_STREAMS)
        .collect::<Result<_, _>>()?;
    let examined_all = streams.len() < STEP_STREAMS;

    let started = std::time::Instant::now();
    // Log entries this step already trimmed: the batch is not readable
    // before it commits, so the same entry would otherwise be trimmed twice.
    let mut trimmed = HashSet::new();
    for key in &streams {
        let Some(stream) = keys::stream_name(key) else { continue };
        if outcome.streams > 0 && started.elapsed() >= STEP_BUDGET {
            // Out of time: the next step starts at this stream.
            outcome.next = Some(Cursor { stream: Some(stream.to_owned()), next_number: 0 });
            return Ok(outcome);
        }
        let from = match &cursor.stream {
            Some(current) if current == stream => cursor.next_number,
            _ => 0,
        };
        outcome.streams += 1;
        let state = staging.state(stream)?;
        let first_visible = first_visible(staging.db(), stream, &state, now)?;
        if first_visible <= from {
            continue;
        }
        let range = keys::event(stream, from)..keys::event(stream, first_visible);
        let entries: Vec<(sled::IVec, sled::IVec)> =
            staging.db().range(range).take(STEP_REMOVALS - removals).collect::<Result<_, _>>()?;
        for (index_key, value) in entries {
            let first = keys::event_number(&index_key)
                .ok_or_else(|| StoreError::Corrupt("event key is malformed".into()))?;
            let count = codec::entry_count(&value)?;
            // The entry's hidden prefix goes; a run that reaches a visible
            // number keeps its visible tail, under the tail's first number.
            let hidden = (first_visible - first).min(count);
            let value = codec::shared(value);
            if codec::is_link_entry(&value) {
                outcome.links_removed += hidden;
            } else {
                // The events' log entries go with them (a link's target
                // position belongs to the target).
                for entry in codec::decode_entries(value.clone())?.iter().take(hidden as usize) {
                    if let Entry::Event(event) = entry {
                        trim_log(staging, &mut trimmed, event.position, first_visible)?;
                    }
                }
                outcome.events_removed += hidden;
                removals += hidden as usize;
            }
            staging.remove(index_key);
            if hidden < count {
                staging
                    .insert(keys::event(stream, first + hidden), codec::run_tail(&value, hidden as usize)?);
            }
            removals += 1;
            if removals >= STEP_REMOVALS {
                outcome.next = Some(Cursor { stream: Some(stream.to_owned()), next_number: first + 1 });
                return Ok(outcome);
            }
        }
    }
    if !examined_all {
        // Resume after the last stream examined (its name plus a NUL sorts
        // right after it and before any longer name).
        let last = streams.last().and_then(|key| keys::stream_name(key)).map(|name| format!("{name}\0"));
        outcome.next = Some(Cursor { stream: last, next_number: 0 });
    }
    Ok(outcome)
}

/// Drops the log's record of the event at `position`, which is hidden (its
/// stream's events below `first_visible` are). A log entry covers
/// consecutive events of one stream, so its hidden events are a prefix of
/// it: they all go now, and a visible tail stays under its first position.
fn trim_log(
    staging: &mut Staging<'_>,
    trimmed: &mut HashSet<u64>,
    position: u64,
    first_visible: u64,
) -> Result<(), StoreError> {
    let Some(item) = staging.db().range(keys::log(0)..=keys::log(position)).next_back() else {
        return Ok(());
    };
    let (key, value) = item?;
    let Some(start) = keys::log_position(&key) else { return Ok(()) };
    let (stream, number, count) = codec::decode_log_entry(&value)?;
    // A tail left by an earlier step no longer covers `position`; the entry
    // found is then another's.
    if position >= start + count || trimmed.contains(&start) {
        return Ok(());
    }
    trimmed.insert(start);
    let hidden = first_visible.saturating_sub(number).min(count);
    // The entry's visible tail is still read, from this key until the
    // batch writes it under its own.
    staging.remove_restorable(key, &value);
    if hidden < count {
        let tail = codec::encode_log_entry(&stream, number + hidden, count - hidden);
        staging.insert(&keys::log(start + hidden)[..], tail);
    }
    Ok(())
}

/// The bytes of every file under `path`.
pub(crate) fn directory_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}
