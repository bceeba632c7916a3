//! The read path: stream ranges, single events and `$all` ranges, with
//! links materialised (and, when asked, resolved) and retention applied.
//! Reads run on the caller's task; [`super::SledStore::read_durable`] wraps
//! each one so it never shows a batch before it is durable.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::codec::{self, Entry};
use super::entries::{
    LogSpan, first_visible, load_state, log_spans, span_capacity, stored_entries, stored_entry,
    visit_stored_values,
};
use super::keys;
use crate::store::links::link_event;
use crate::store::retention::{self, now_micros};
use crate::store::rules;
use crate::store::{
    AllRead, AllSlice, Direction, ReadEvent, RecordedEvent, StoreError, StreamRead, StreamSlice, StreamState,
    StreamView,
};

/// How many positions one `$all` read examines at most, whatever it finds.
/// Bounds the work of a read across a long run of hidden (deleted or
/// expired, not yet scavenged) events; the page then simply holds fewer.
const MAX_ALL_SCAN: usize = 100_000;

/// Which events of a stream a read can see.
#[derive(Debug, Clone, Copy)]
struct Visible {
    first: u64,
    /// The stream has `$maxCount` or `$maxAge`: its visible events may
    /// vanish with later appends or with time, without a metadata write.
    expiring: bool,
}

/// One read's access to the store: it memoises the stream states it loads
/// and remembers the newest commit among them (see
/// [`super::SledStore::read_durable`]).
pub(super) struct ReadContext {
    /// The generation this read uses from start to end, even if a
    /// compaction switches generations meanwhile.
    db: sled::Db,
    /// Per stream touched (link targets, `$all` entries): which events are
    /// visible, `None` when none is.
    visible: HashMap<String, Option<Visible>>,
    newest_commit: u64,
}

impl ReadContext {
    pub(super) fn new(db: sled::Db) -> Self {
        Self { db, visible: HashMap::new(), newest_commit: 0 }
    }

    /// The newest commit among the states this read used.
    pub(super) fn newest_commit(&self) -> u64 {
        self.newest_commit
    }

    fn db(&self) -> &sled::Db {
        &self.db
    }

    pub(super) fn state(&mut self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        let Some((state, commit_seq)) = load_state(&self.db, stream)? else { return Ok(None) };
        self.newest_commit = self.newest_commit.max(commit_seq);
        Ok(Some(state))
    }

    /// Streams by name from `prefix` (after `after`): one range scan of
    /// the stream states, which sled keeps in key (name) order.
    pub(super) fn list_streams(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamState)>, StoreError> {
        let scope = keys::stream(prefix);
        let start = match after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => keys::stream(after),
            _ => scope.clone(),
        };
        let mut found = Vec::new();
        for item in self.db.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&scope) || found.len() == limit {
                break;
            }
            let Some(name) = keys::stream_name(&key) else { continue };
            if after.is_some_and(|after| name == after) {
                continue;
            }
            let (state, commit_seq) = codec::decode_state(&value)?;
            self.newest_commit = self.newest_commit.max(commit_seq);
            found.push((name.to_owned(), state));
        }
        Ok(found)
    }

    /// The state of a readable stream, or why it cannot be read.
    fn readable_state(&mut self, stream: &str) -> Result<StreamState, StoreError> {
        match self.state(stream)? {
            Some(state) if state.tombstoned => Err(StoreError::StreamDeleted),
            Some(state) if state.exists() => Ok(state),
            _ => Err(StoreError::StreamNotFound),
        }
    }

    /// The stream's state as reads see it.
    fn view(&self, stream: &str, state: &StreamState) -> Result<StreamView, StoreError> {
        Ok(StreamView {
            last_number: state.next_number.saturating_sub(1),
            first_visible: first_visible(self.db(), stream, state, now_micros())?,
            settings: state.settings,
        })
    }

    /// Reads numbers `low..=high` of a stream, skipping scavenged records.
    /// Going backward, the highest numbers within [`rules::READ_BYTES`];
    /// going forward, the lowest. In ascending order either way.
    fn read_range(
        &mut self,
        stream: &str,
        (low, high): (u64, u64),
        direction: Direction,
        resolve_links: bool,
    ) -> Result<Vec<ReadEvent>, StoreError> {
        let mut events = Vec::with_capacity(span_capacity(low, high));
        let mut bytes = rules::ReadBytes::default();
        // The events of one stored value, ascending.
        let mut held = Vec::new();
        let mut names = codec::Names::default();
        // A handle of its own (a reference count): links are materialised
        // as they are decoded, which needs `self`.
        let db = self.db.clone();
        visit_stored_values(&db, stream, low, high, direction, |first, value| {
            if !codec::decode_events_within(&value, first, low, high, &mut names, &mut held)? {
                codec::decode_entries_within(value, first, low, high, &mut names, &mut |number, entry| {
                    held.push(self.materialise(stream, number, entry, resolve_links)?);
                    Ok(())
                })?;
            }
            if direction == Direction::Backward {
                held.reverse();
            }
            for event in held.drain(..) {
                if !bytes.take(&event.event) {
                    return Ok(ControlFlow::Break(()));
                }
                events.push(event);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if direction == Direction::Backward {
            events.reverse();
        }
        Ok(events)
    }

    /// Turns what is stored under an event key into what a read returns.
    fn materialise(
        &mut self,
        stream: &str,
        number: u64,
        entry: Entry,
        resolve_links: bool,
    ) -> Result<ReadEvent, StoreError> {
        match entry {
            Entry::Event(event) => Ok(ReadEvent { event, link: None }),
            Entry::Link { position, created_micros, number: target_number, stream: target } => {
                let link = link_event(stream, number, position, created_micros, target_number, &target);
                if resolve_links {
                    if let Some(event) = self.visible_event(&target, target_number)? {
                        return Ok(ReadEvent { event, link: Some(Box::new(link)) });
                    }
                }
                Ok(ReadEvent { event: link, link: None })
            }
        }
    }

    /// Event `number` of user stream `stream`, if it is still visible.
    fn visible_event(&mut self, stream: &str, number: u64) -> Result<Option<RecordedEvent>, StoreError> {
        if self.visible_from(stream)?.is_none_or(|visible| number < visible.first) {
            return Ok(None);
        }
        stored_entry(self.db(), stream, number)?.map(|entry| entry.into_event(stream, number)).transpose()
    }

    /// The events of a span of the log that reads can see, oldest first,
    /// and whether their stream expires events (see [`Visible`]).
    fn visible_events(&mut self, span: &LogSpan) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        let Some(visible) = self.visible_from(&span.stream)? else { return Ok((Vec::new(), false)) };
        let (low, high) = (visible.first.max(span.number), span.last_number());
        if low > high {
            return Ok((Vec::new(), false));
        }
        let events = stored_entries(self.db(), &span.stream, low, high)?
            .into_iter()
            .map(|(number, entry)| entry.into_event(&span.stream, number))
            .collect::<Result<_, _>>()?;
        Ok((events, visible.expiring))
    }

    /// Which events of `stream` reads can see (retention, soft delete), or
    /// `None` when none (deleted, tombstoned, missing). Memoised for the
    /// read.
    fn visible_from(&mut self, stream: &str) -> Result<Option<Visible>, StoreError> {
        if let Some(visible) = self.visible.get(stream) {
            return Ok(*visible);
        }
        let visible = match self.state(stream)? {
            Some(state) if !state.tombstoned && !state.soft_deleted => Some(Visible {
                first: self.view(stream, &state)?.first_visible,
                expiring: retention::expires_events(&state.settings),
            }),
            _ => None,
        };
        self.visible.insert(stream.to_owned(), visible);
        Ok(visible)
    }

    pub(super) fn read_stream(&mut self, read: &StreamRead) -> Result<StreamSlice, StoreError> {
        let state = self.readable_state(&read.stream)?;
        let view = self.view(&read.stream, &state)?;
        let Some(last) = state.last_number() else {
            return Ok(StreamSlice { view, events: Vec::new() });
        };
        let (low, high) = rules::read_range(read, last);
        let (low, high) = (low.max(view.first_visible), high.min(last));
        let events = if low > high {
            Vec::new()
        } else {
            self.read_range(&read.stream, (low, high), read.direction, read.resolve_links)?
        };
        Ok(StreamSlice { view, events })
    }

    pub(super) fn read_event(
        &mut self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        let state = self.readable_state(stream)?;
        let view = self.view(stream, &state)?;
        if number < view.first_visible || number >= state.next_number {
            return Ok((view, None));
        }
        let Some((_, entry)) = stored_entries(self.db(), stream, number, number)?.pop() else {
            return Ok((view, None));
        };
        let is_link = matches!(entry, Entry::Link { .. });
        let event = self.materialise(stream, number, entry, resolve_links)?;
        // v5: a resolved read of a link whose target is gone is a 404.
        let gone = is_link && resolve_links && event.link.is_none();
        Ok((view, (!gone).then_some(event)))
    }

    pub(super) fn read_all(&mut self, read: AllRead, next_position: u64) -> Result<AllSlice, StoreError> {
        let count = usize::try_from(read.count.max(1)).unwrap_or(usize::MAX);
        let mut events = Vec::with_capacity(count.min(4096));
        let mut scanned: Option<(u64, u64)> = None;
        let mut may_expire = false;
        // Only positions below `next_position` are acknowledged; a batch
        // being applied right now is not.
        let Some(last) = next_position.checked_sub(1) else {
            return Ok(AllSlice { next_position, scanned, events, may_expire });
        };
        let (low, high, backward) = match read.direction {
            Direction::Forward => {
                let from = read.from.unwrap_or(last);
                if from > last {
                    return Ok(AllSlice { next_position, scanned, events, may_expire });
                }
                (from, last, false)
            }
            Direction::Backward => (0, read.from.unwrap_or(last).min(last), true),
        };
        let mut budget = MAX_ALL_SCAN as u64;
        let mut bytes = rules::ReadBytes::default();
        'spans: for span in log_spans(self.db(), low, high, backward)? {
            if budget == 0 {
                break;
            }
            // Within the budget: a span's start going forward, its end
            // going backward.
            let span = span?.part(budget, backward);
            budget = budget.saturating_sub(span.count);
            let (mut found, expiring) = self.visible_events(&span)?;
            may_expire |= expiring && !found.is_empty();
            if backward {
                found.reverse();
            }
            for event in found {
                let position = event.position;
                if !bytes.take(&event) {
                    // Examined up to the event before this one.
                    let examined = if backward {
                        (position < span.last()).then(|| (position + 1, span.last()))
                    } else {
                        (position > span.position).then(|| (span.position, position - 1))
                    };
                    if let Some(examined) = examined {
                        widen(&mut scanned, examined);
                    }
                    break 'spans;
                }
                events.push(event);
                if events.len() >= count {
                    widen(
                        &mut scanned,
                        if backward { (position, span.last()) } else { (span.position, position) },
                    );
                    break 'spans;
                }
            }
            widen(&mut scanned, (span.position, span.last()));
        }
        if backward {
            events.reverse();
        }
        Ok(AllSlice { next_position, scanned, events, may_expire })
    }
}

/// Extends a read's range of examined positions.
fn widen(scanned: &mut Option<(u64, u64)>, (low, high): (u64, u64)) {
    *scanned = Some(match *scanned {
        None => (low, high),
        Some((lowest, highest)) => (lowest.min(low), highest.max(high)),
    });
}
