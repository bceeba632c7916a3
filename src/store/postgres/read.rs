//! The read path: stream pages, single events and `$all`, each in one
//! read-only snapshot (`REPEATABLE READ`), so a read sees whole commits
//! and the head that goes with them.
//!
//! A stream page or a single event is first asked of [`super::page`], in
//! one statement; this module's path serves what that one cannot answer
//! alone (`$maxAge`, the bytes near their limit) and `$all`.
//!
//! Every read here is two steps: an index range scan that returns no payload
//! (a stream's entries by number, or `events` by position) with
//! each event's size, from which the read decides what it returns (the
//! retention rule, links resolved or not, [`rules::READ_BYTES`]); then one
//! query for the payloads of exactly those events. So a read holds at
//! most its budget of event data, however large the events it passes.
//!
//! Every statement is prepared once per pooled connection (deadpool keeps
//! each connection's), so each query of a read is one round trip, parsed
//! and planned once per connection rather than on every read.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::{IsolationLevel, Row, Statement};

use super::{STATE_COLUMNS, db_error, links, signed, state_from_row, unsigned};
use crate::store::links::link_event;
use crate::store::retention::visible_bounds;
use crate::store::rules::{self, MAX_ALL_SCAN, ReadBytes};
use crate::store::{
    AllRead, AllSlice, Direction, ReadEvent, RecordedEvent, StoreError, StreamRead, StreamSlice, StreamState,
    StreamView,
};

/// How many positions of `$all` one query examines: a page of 20 visible
/// events usually needs one query, and a long run of hidden ones a few.
const ALL_CHUNK: i64 = 1_000;

/// Opens a read-only snapshot.
async fn snapshot(client: &mut ClientWrapper) -> Result<Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)
}

/// `sql`, prepared on the read's connection the first time it runs there.
async fn prepared(tx: &Transaction<'_>, sql: &str) -> Result<Statement, StoreError> {
    tx.prepare_cached(sql).await.map_err(db_error)
}

pub(super) async fn read_stream(
    client: &mut ClientWrapper,
    read: &StreamRead,
) -> Result<StreamSlice, StoreError> {
    let tx = snapshot(client).await?;
    let mut reader = Reader::new(&tx);
    let state = reader.readable(&read.stream).await?;
    let view = reader.view(&read.stream, &state).await?;
    let mut events = Vec::new();
    if let Some(last) = state.last_number() {
        let (low, high) = rules::read_range(read, last);
        let (low, high) = (low.max(view.first_visible), high.min(last));
        if low <= high {
            events = reader.entries(&read.stream, low, high, read.direction, read.resolve_links).await?;
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(StreamSlice { view, events: events.into_iter().map(|(event, _)| event).collect() })
}

pub(super) async fn read_event(
    client: &mut ClientWrapper,
    stream: &str,
    number: u64,
    resolve_links: bool,
) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
    let tx = snapshot(client).await?;
    let mut reader = Reader::new(&tx);
    let state = reader.readable(stream).await?;
    let view = reader.view(stream, &state).await?;
    let mut event = None;
    if number >= view.first_visible {
        let found = reader.entries(stream, number, number, Direction::Forward, resolve_links).await?;
        // v5: a resolved read of a link whose target is gone is a 404.
        event = found
            .into_iter()
            .next()
            .filter(|(event, is_link)| !(*is_link && resolve_links && event.link.is_none()))
            .map(|(event, _)| event);
    }
    tx.commit().await.map_err(db_error)?;
    Ok((view, event))
}

pub(super) async fn read_all(client: &mut ClientWrapper, read: AllRead) -> Result<AllSlice, StoreError> {
    let tx = snapshot(client).await?;
    let mut reader = Reader::new(&tx);
    let head = prepared(&tx, "SELECT next_position FROM log_head").await?;
    let row = tx.query_one(&head, &[]).await.map_err(db_error)?;
    let next_position = unsigned(row.get(0));
    let mut scanned: Option<(u64, u64)> = None;
    let Some(last) = next_position.checked_sub(1) else {
        return Ok(AllSlice { next_position, scanned, events: Vec::new(), may_expire: true });
    };
    let (mut from, forward) = match read.direction {
        Direction::Forward => (read.from.unwrap_or(last), true),
        Direction::Backward => (read.from.unwrap_or(last).min(last), false),
    };
    if forward && from > last {
        return Ok(AllSlice { next_position, scanned, events: Vec::new(), may_expire: true });
    }
    let count = usize::try_from(read.count.max(1)).unwrap_or(usize::MAX);
    let (mut budget, mut bytes, mut chosen) = (MAX_ALL_SCAN, ReadBytes::default(), Vec::new());
    'chunks: loop {
        let rows = if forward {
            let scan = prepared(
                &tx,
                "SELECT position, stream, number, octet_length(data) + octet_length(metadata) FROM events \
                 WHERE position >= $1 AND position < $2 ORDER BY position LIMIT $3",
            )
            .await?;
            tx.query(&scan, &[&signed(from), &signed(next_position), &ALL_CHUNK]).await
        } else {
            let scan = prepared(
                &tx,
                "SELECT position, stream, number, octet_length(data) + octet_length(metadata) FROM events \
                 WHERE position <= $1 ORDER BY position DESC LIMIT $2",
            )
            .await?;
            tx.query(&scan, &[&signed(from), &ALL_CHUNK]).await
        }
        .map_err(db_error)?;
        let names: Vec<String> = rows.iter().map(|row| row.get(1)).collect();
        reader.load_visibility(&names).await?;
        let complete = rows.len() < ALL_CHUNK as usize;
        for row in &rows {
            if budget == 0 {
                break 'chunks;
            }
            budget -= 1;
            let (position, stream, number) =
                (unsigned(row.get(0)), row.get::<_, &str>(1), unsigned(row.get(2)));
            let visible = reader.visible.get(stream).copied().flatten().is_some_and(|first| number >= first);
            if visible && !bytes.take_size(size(row, 3)) {
                // Not examined: the next read starts here.
                break 'chunks;
            }
            scanned = Some(match scanned {
                None => (position, position),
                Some((low, high)) => (low.min(position), high.max(position)),
            });
            if visible {
                chosen.push(position);
                if chosen.len() >= count {
                    break 'chunks;
                }
            }
            from = if forward { position + 1 } else { position.wrapping_sub(1) };
        }
        if complete || (!forward && from == u64::MAX) {
            break;
        }
    }
    chosen.sort_unstable();
    let mut payloads = payloads(&tx, &chosen).await?;
    let events = chosen
        .iter()
        .map(|position| {
            payloads
                .remove(position)
                .ok_or_else(|| StoreError::Corrupt(format!("position {position} vanished")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await.map_err(db_error)?;
    Ok(AllSlice { next_position, scanned, events, may_expire: true })
}

/// An event's size (data plus metadata) from column `index`.
fn size(row: &Row, index: usize) -> usize {
    row.get::<_, Option<i32>>(index).and_then(|size| usize::try_from(size).ok()).unwrap_or(0)
}

/// The events at `positions`, by position.
async fn payloads(
    tx: &Transaction<'_>,
    positions: &[u64],
) -> Result<HashMap<u64, RecordedEvent>, StoreError> {
    if positions.is_empty() {
        return Ok(HashMap::new());
    }
    let positions: Vec<i64> = positions.iter().copied().map(signed).collect();
    let statement = prepared(
        tx,
        "SELECT position, stream, number, id, event_type, created_micros, is_json, metadata_is_json, data, \
         metadata FROM events WHERE position = ANY($1)",
    )
    .await?;
    let rows = tx.query(&statement, &[&positions]).await.map_err(db_error)?;
    let mut names = Names::default();
    Ok(rows
        .iter()
        .map(|row| {
            let event = event_from_row(row, 0, &mut names);
            (event.position, event)
        })
        .collect())
}

/// One copy of each stream and type name of a read: a page mostly has
/// one stream and few types.
#[derive(Default)]
pub(super) struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn shared(&mut self, name: String) -> Arc<str> {
        self.0.entry(name).or_insert_with_key(|name| Arc::from(name.as_str())).clone()
    }
}

/// The event in columns `offset..offset + 10` of `row`: position, stream,
/// number, id, event_type, created_micros, is_json, metadata_is_json,
/// data, metadata.
pub(super) fn event_from_row(row: &Row, offset: usize, names: &mut Names) -> RecordedEvent {
    RecordedEvent {
        position: unsigned(row.get(offset)),
        stream: names.shared(row.get(offset + 1)),
        number: unsigned(row.get(offset + 2)),
        id: row.get(offset + 3),
        event_type: names.shared(row.get(offset + 4)),
        created_micros: row.get(offset + 5),
        is_json: row.get(offset + 6),
        metadata_is_json: row.get(offset + 7),
        data: Bytes::from(row.get::<_, Vec<u8>>(offset + 8)),
        metadata: Bytes::from(row.get::<_, Vec<u8>>(offset + 9)),
    }
}

/// One read's look at stream states, in its snapshot.
struct Reader<'a> {
    tx: &'a Transaction<'a>,
    /// The database's clock, read once when `$maxAge` first needs it.
    now_micros: Option<i64>,
    /// Per stream the read touched, the lowest number it can see; `None`
    /// when it can see none (deleted, tombstoned, never written).
    visible: HashMap<String, Option<u64>>,
}

/// What one entry of a stream comes to, before its payload is fetched.
pub(super) enum Planned {
    /// The event at this position (the stream's own, or a link's target).
    Event { position: u64, link: Option<RecordedEvent> },
    /// A link shown as a `$>` event.
    Link(RecordedEvent),
}

impl<'a> Reader<'a> {
    fn new(tx: &'a Transaction<'a>) -> Self {
        Self { tx, now_micros: None, visible: HashMap::new() }
    }

    async fn state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        let query = format!("SELECT {STATE_COLUMNS} FROM streams WHERE name = $1");
        let row = self.tx.query_opt(&prepared(self.tx, &query).await?, &[&stream]).await.map_err(db_error)?;
        Ok(row.as_ref().map(|row| state_from_row(row, 0)))
    }

    /// The state of a stream a read may read, or why it may not.
    async fn readable(&self, stream: &str) -> Result<StreamState, StoreError> {
        match self.state(stream).await? {
            Some(state) if state.tombstoned => Err(StoreError::StreamDeleted),
            Some(state) if state.exists() => Ok(state),
            _ => Err(StoreError::StreamNotFound),
        }
    }

    async fn view(&mut self, stream: &str, state: &StreamState) -> Result<StreamView, StoreError> {
        Ok(StreamView {
            last_number: state.next_number.saturating_sub(1),
            first_visible: self.first_visible(stream, state).await?,
            settings: state.settings,
        })
    }

    /// The shared retention rule, its `$maxAge` boundary found by one
    /// index range scan.
    async fn first_visible(&mut self, stream: &str, state: &StreamState) -> Result<u64, StoreError> {
        let now = match self.now_micros {
            Some(now) => now,
            None if state.settings.max_age_secs.is_none() => 0,
            None => {
                let clock =
                    prepared(self.tx, "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint")
                        .await?;
                let row = self.tx.query_one(&clock, &[]).await.map_err(db_error)?;
                *self.now_micros.insert(row.get(0))
            }
        };
        let bounds = visible_bounds(state, now);
        let Some(cutoff) = bounds.max_age_cutoff else { return Ok(bounds.first) };
        let boundary = prepared(self.tx, &links::MAX_AGE_BOUNDARY).await?;
        let row = self
            .tx
            .query_one(&boundary, &[&stream, &signed(bounds.first), &cutoff])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, Option<i64>>(0).map_or(state.next_number, unsigned).min(state.next_number))
    }

    /// Works out [`Reader::visible`] for every stream of `names` not yet
    /// known, reading their states in one query.
    async fn load_visibility(&mut self, names: &[String]) -> Result<(), StoreError> {
        let mut unknown: Vec<&str> =
            names.iter().map(String::as_str).filter(|name| !self.visible.contains_key(*name)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let query = format!("SELECT {STATE_COLUMNS} FROM streams WHERE name = ANY($1)");
        let rows = self.tx.query(&prepared(self.tx, &query).await?, &[&unknown]).await.map_err(db_error)?;
        for row in rows {
            let (name, state): (String, StreamState) = (row.get(0), state_from_row(&row, 0));
            let first = if state.tombstoned || state.soft_deleted {
                None
            } else {
                Some(self.first_visible(&name, &state).await?)
            };
            self.visible.insert(name, first);
        }
        for name in unknown {
            self.visible.entry(name.to_owned()).or_insert(None);
        }
        Ok(())
    }

    /// The entries `low..=high` of `stream` as a read returns them, in
    /// ascending order, within the read's bytes (kept from the start of
    /// the read's direction); each with whether it is a link entry.
    async fn entries(
        &mut self,
        stream: &str,
        low: u64,
        high: u64,
        direction: Direction,
        resolve_links: bool,
    ) -> Result<Vec<(ReadEvent, bool)>, StoreError> {
        let order = if direction == Direction::Forward { "ASC" } else { "DESC" };
        let query = format!(
            "SELECT e.number, e.position, e.created_micros, e.link_stream, e.link_number, \
             octet_length(e.data) + octet_length(e.metadata), e.event_position IS NOT NULL \
             FROM {} e ORDER BY e.number {order}",
            links::entries_between(links::can_hold_links(stream), "$1", "$2", "$3")
        );
        let statement = prepared(self.tx, &query).await?;
        let rows =
            self.tx.query(&statement, &[&stream, &signed(low), &signed(high)]).await.map_err(db_error)?;
        let entries: Vec<Entry> = rows.iter().map(|row| Entry::from_row(row, 0)).collect();
        if resolve_links {
            let targets: Vec<String> = entries
                .iter()
                .filter_map(|entry| entry.link.as_ref().map(|(target, _)| target.clone()))
                .collect();
            self.load_visibility(&targets).await?;
        }
        let planned = plan(stream, &entries, &self.visible, direction, resolve_links)?;
        let found = payloads(self.tx, &positions(&planned)).await?;
        assemble(planned, &found)
    }
}

/// One entry of a stream as its range scan finds it, before any payload.
pub(super) struct Entry {
    pub(super) number: u64,
    /// The event's position: the stream's own, or a link's target's.
    pub(super) position: u64,
    created_micros: i64,
    /// A link's target stream and number.
    pub(super) link: Option<(String, u64)>,
    /// The size (data plus metadata) of the event at `position`.
    size: usize,
    /// Whether an event is at `position` (a link's target may be gone).
    present: bool,
}

impl Entry {
    /// The entry in columns `offset..offset + 7` of `row`: number,
    /// position, created_micros, link_stream, link_number, size, present.
    pub(super) fn from_row(row: &Row, offset: usize) -> Self {
        let link = row
            .get::<_, Option<String>>(offset + 3)
            .map(|target| (target, unsigned(row.get::<_, Option<i64>>(offset + 4).unwrap_or_default())));
        Self {
            number: unsigned(row.get(offset)),
            position: unsigned(row.get(offset + 1)),
            created_micros: row.get(offset + 2),
            link,
            size: size(row, offset + 5),
            present: row.get(offset + 6),
        }
    }
}

/// What a read returns of `entries` (in the read's direction), within
/// its bytes (kept from the start of the read's direction), in ascending
/// order; `visible` holds the lowest visible number of every link target
/// when links are resolved.
pub(super) fn plan(
    stream: &str,
    entries: &[Entry],
    visible: &HashMap<String, Option<u64>>,
    direction: Direction,
    resolve_links: bool,
) -> Result<Vec<Planned>, StoreError> {
    let mut bytes = ReadBytes::default();
    let mut planned = Vec::with_capacity(entries.len());
    for entry in entries {
        let (number, position, present) = (entry.number, entry.position, entry.present);
        let link = entry.link.as_ref().map(|(target, target_number)| {
            let link = link_event(stream, number, position, entry.created_micros, *target_number, target);
            let visible = visible.get(target).copied().flatten().is_some_and(|first| *target_number >= first);
            (link, resolve_links && present && visible)
        });
        let (plan, size) = match link {
            None if !present => {
                return Err(StoreError::Corrupt(format!("event {number}@{stream} has no record")));
            }
            None => (Planned::Event { position, link: None }, entry.size),
            Some((link, true)) => (Planned::Event { position, link: Some(link) }, entry.size),
            Some((link, false)) => {
                let size = link.data.len();
                (Planned::Link(link), size)
            }
        };
        if !bytes.take_size(size) {
            break;
        }
        planned.push(plan);
    }
    if direction == Direction::Backward {
        planned.reverse();
    }
    Ok(planned)
}

/// The positions whose payloads `planned` needs.
pub(super) fn positions(planned: &[Planned]) -> Vec<u64> {
    planned
        .iter()
        .filter_map(|plan| match plan {
            Planned::Event { position, .. } => Some(*position),
            Planned::Link(_) => None,
        })
        .collect()
}

/// `planned` with the payloads `found`; each with whether it is a link
/// entry.
pub(super) fn assemble(
    planned: Vec<Planned>,
    found: &HashMap<u64, RecordedEvent>,
) -> Result<Vec<(ReadEvent, bool)>, StoreError> {
    planned
        .into_iter()
        .map(|plan| match plan {
            Planned::Link(link) => Ok((ReadEvent { event: link, link: None }, true)),
            Planned::Event { position, link } => {
                let event = found
                    .get(&position)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt(format!("position {position} vanished")))?;
                let is_link = link.is_some();
                Ok((ReadEvent { event, link: link.map(Box::new) }, is_link))
            }
        })
        .collect()
}
