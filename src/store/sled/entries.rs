//! Raw access to what sled holds for a stream and for the log: the lowest
//! layer of the sled store above its keys and codec. Readers, staging, the
//! projection builder and the scavenger all read through these functions.

use std::ops::ControlFlow;

use bytes::Bytes;

use super::codec::{self, Entry};
use super::keys;
use crate::store::{Direction, StoreError, StreamState, retention};

/// A stream's state as stored, with the commit sequence number of the batch
/// that last wrote it (see [`codec::decode_state`]); `None` when the
/// stream was never written.
pub(crate) fn load_state(db: &sled::Db, stream: &str) -> Result<Option<(StreamState, u64)>, StoreError> {
    match db.get(keys::stream(stream))? {
        Some(bytes) => codec::decode_state(&bytes).map(Some),
        None => Ok(None),
    }
}

/// The lowest event number of `stream` reads can see: the shared rule
/// ([`retention::first_visible`]) over this store's creation times.
pub(crate) fn first_visible(
    db: &sled::Db,
    stream: &str,
    state: &StreamState,
    now_micros: i64,
) -> Result<u64, StoreError> {
    retention::first_visible(state, now_micros, |number| {
        Ok(match stored_entry(db, stream, number)? {
            Some(Entry::Link { created_micros, .. }) => Some(created_micros),
            Some(Entry::Event(event)) => Some(event.created_micros),
            None => None,
        })
    })
}

/// The creation time of the newest event in the log, 0 when it is empty.
pub(crate) fn newest_created_micros(db: &sled::Db) -> Result<i64, StoreError> {
    Ok(match db.get_lt([keys::LOG + 1])? {
        Some((key, value)) if keys::log_position(&key).is_some() => {
            let span = LogSpan::decode(&key, &value)?;
            match stored_entry(db, &span.stream, span.last_number())? {
                Some(Entry::Event(event)) => event.created_micros,
                Some(Entry::Link { created_micros, .. }) => created_micros,
                None => 0,
            }
        }
        _ => 0,
    })
}

/// What is stored for numbers `low..=high` of `stream`, in order, with each
/// entry's number; scavenged numbers are simply absent. Entries written
/// together are stored in runs under the key of a run's first entry, so the
/// page starts with the value that holds `low`, if one does, and continues
/// with the keys after it.
///
/// A point lookup comes first: each sled iterator starts by copying the
/// leaf it starts in, and a page inside one run, or one that starts on a
/// key and ends in the value under it, needs no iterator at all. (Walking
/// up from `low`, then down from it for the run that holds it, took twice
/// the iterators; walking down from `high` alone is slower still, since
/// sled's reverse steps cost more.)
pub(crate) fn stored_entries(
    db: &sled::Db,
    stream: &str,
    low: u64,
    high: u64,
) -> Result<Vec<(u64, Entry)>, StoreError> {
    let mut found = Vec::with_capacity(span_capacity(low, high));
    let mut names = codec::Names::default();
    visit_stored_values(db, stream, low, high, Direction::Forward, |first, value| {
        codec::decode_entries_within(value, first, low, high, &mut names, &mut |number, entry| {
            found.push((number, entry));
            Ok(())
        })?;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(found)
}

/// Room for the entries `low..=high`, up to a page's most.
pub(crate) fn span_capacity(low: u64, high: u64) -> usize {
    usize::try_from(high.saturating_sub(low).saturating_add(1)).unwrap_or(usize::MAX).min(4096)
}

/// Hands each value that holds numbers `low..=high` of `stream` to
/// `found` with the number of its key (see [`stored_entries`]): lowest
/// first going forward, highest first going backward, until `found` says
/// to stop.
pub(crate) fn visit_stored_values(
    db: &sled::Db,
    stream: &str,
    low: u64,
    high: u64,
    direction: Direction,
    mut found: impl FnMut(u64, Bytes) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    if direction == Direction::Backward {
        let mut reached_low = false;
        for item in db.range(keys::event(stream, low)..=keys::event(stream, high)).rev() {
            let (key, value) = item?;
            let number = event_key_number(&key)?;
            reached_low = number == low;
            if found(number, codec::shared(value))?.is_break() {
                return Ok(());
            }
        }
        // A run that starts below `low` may hold it.
        if !reached_low {
            if let Some((first, value)) = value_holding(db, stream, low)? {
                // The last value either way.
                let _ = found(first, codec::shared(value))?;
            }
        }
        return Ok(());
    }
    // The lowest number whose key the range below still has to visit.
    let mut rest = low;
    if let Some((first, value)) = value_holding(db, stream, low)? {
        rest = first.saturating_add(codec::entry_count(&value)?).max(low);
        if found(first, codec::shared(value))?.is_break() {
            return Ok(());
        }
    }
    if rest <= high {
        for item in db.range(keys::event(stream, rest)..=keys::event(stream, high)) {
            let (key, value) = item?;
            if found(event_key_number(&key)?, codec::shared(value))?.is_break() {
                break;
            }
        }
    }
    Ok(())
}

/// What is stored for number `number` of `stream`: an entry of its own, or
/// one item of the run that holds it (only that item is decoded). `None`
/// when it was never written or has been scavenged.
pub(crate) fn stored_entry(db: &sled::Db, stream: &str, number: u64) -> Result<Option<Entry>, StoreError> {
    match value_holding(db, stream, number)? {
        Some((first, value)) => codec::decode_entry_at(codec::shared(value), first, number),
        None => Ok(None),
    }
}

/// The value stored under the greatest key of `stream` at or below
/// `number`, with that key's number: the value holding `number` if any
/// does (its own entry, or a run that starts below it), else an entry that
/// ends below it. A key of its own is a point lookup; only a miss looks
/// down with an iterator (which starts by copying a leaf).
fn value_holding(db: &sled::Db, stream: &str, number: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
    let key = keys::event(stream, number);
    if let Some(value) = db.get(&key)? {
        return Ok(Some((number, value)));
    }
    if number == 0 {
        return Ok(None);
    }
    match db.range(keys::event_prefix(stream)..key).next_back() {
        Some(item) => {
            let (key, value) = item?;
            Ok(Some((event_key_number(&key)?, value)))
        }
        None => Ok(None),
    }
}

/// Consecutive positions of the log that hold consecutive events of one
/// stream: what one log entry records, or the part of it a read asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSpan {
    pub position: u64,
    pub stream: String,
    pub number: u64,
    pub count: u64,
}

impl LogSpan {
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let position =
            keys::log_position(key).ok_or_else(|| StoreError::Corrupt("log key is malformed".into()))?;
        let (stream, number, count) = codec::decode_log_entry(value)?;
        Ok(Self { position, stream, number, count })
    }

    /// The last position it covers.
    pub fn last(&self) -> u64 {
        self.position + (self.count - 1)
    }

    /// The number of the event at its last position.
    pub fn last_number(&self) -> u64 {
        self.number + (self.count - 1)
    }

    /// Its first `count` positions, or its last when `from_end`.
    pub(crate) fn part(self, count: u64, from_end: bool) -> Self {
        let count = count.min(self.count);
        let skip = if from_end { self.count - count } else { 0 };
        Self { position: self.position + skip, number: self.number + skip, count, stream: self.stream }
    }

    /// Its part within positions `low..=high`, if any.
    pub fn clip(self, low: u64, high: u64) -> Option<Self> {
        let (start, end) = (self.position.max(low), self.last().min(high));
        (start <= end).then(|| Self {
            number: self.number + (start - self.position),
            position: start,
            count: end - start + 1,
            stream: self.stream,
        })
    }
}

/// The log between positions `low` and `high` (inclusive) as spans clipped
/// to that range, in position order or, `backward`, in reverse. The log
/// stores the positions one append wrote as one entry under the first, so
/// the range starts with the entry that holds `low`, if it starts below.
pub(crate) fn log_spans(
    db: &sled::Db,
    low: u64,
    high: u64,
    backward: bool,
) -> Result<Box<dyn Iterator<Item = Result<LogSpan, StoreError>>>, StoreError> {
    let before = match db.range(keys::log(0)..keys::log(low)).next_back() {
        Some(item) => {
            let (key, value) = item?;
            LogSpan::decode(&key, &value)?.clip(low, high)
        }
        None => None,
    };
    let within = db.range(keys::log(low)..=keys::log(high)).map(move |item| {
        let (key, value) = item?;
        Ok(LogSpan::decode(&key, &value)?.clip(low, high))
    });
    let within = within.filter_map(Result::transpose);
    Ok(if backward {
        Box::new(within.rev().chain(before.map(Ok)))
    } else {
        Box::new(before.map(Ok).into_iter().chain(within))
    })
}

fn event_key_number(key: &[u8]) -> Result<u64, StoreError> {
    keys::event_number(key).ok_or_else(|| StoreError::Corrupt("event key is malformed".into()))
}
