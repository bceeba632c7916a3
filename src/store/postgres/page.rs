//! A stream page (or a single event) in one statement: the stream's
//! state, its entries in the range the request names, their events'
//! payloads and, when links are resolved, their targets' states, all from
//! one query, which is a snapshot by itself, with no `BEGIN` or `COMMIT`.
//! One round trip and one statement for PostgreSQL to run, where the
//! transactional path of [`super::read`] takes five.
//!
//! The range is worked out in SQL from the request alone (`from` and
//! `count`, or the head's number from the same row of `streams`), before
//! retention: it holds every entry the read can return, and the rules of
//! [`super::read`] (retention, links, [`rules::READ_BYTES`]) then choose
//! among them in Rust, the same functions for both paths.
//!
//! Bytes: a row carries its event's data and metadata only while the
//! running size of the events counted so far, in the read's direction,
//! stays within [`rules::READ_BYTES`] (the first counted one always), as
//! [`rules::ReadBytes`] counts; so a read still holds at most its budget
//! of event data, however large the events it passes. Unresolved links
//! carry none (their events are made from the entry).
//!
//! This path answers `None` when it cannot answer alone, and the caller
//! takes the transactional path: a stream (or a link's target, when
//! resolved) with `$maxAge`, whose boundary needs the database's clock and
//! an index scan, or a page whose chosen events go past the payloads the
//! statement carried (possible only near [`rules::READ_BYTES`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use deadpool_postgres::ClientWrapper;

use super::read::{Entry, Names, assemble, event_from_row, plan, positions};
use super::{STATE_COLUMNS, db_error, links, signed, state_from_row};
use crate::store::retention::visible_bounds;
use crate::store::rules::{self, READ_BYTES};
use crate::store::{Direction, ReadEvent, StoreError, StreamRead, StreamSlice, StreamState, StreamView};

/// Where each part of a [`PAGE_QUERY`] row starts.
const ENTRY: usize = 12;
const FETCHED: usize = ENTRY + 7;
const EVENT: usize = FETCHED + 1;
const TARGET: usize = EVENT + 10;

/// The page statements: ascending and descending, each without and with
/// links resolved (index `2 * resolve + descending`), then for a stream
/// that holds no links, ascending and descending (index `4 + descending`,
/// see [`statement`]). Parameters: `$1`
/// the stream, `$2`/`$3` the lowest and highest number (`NULL` for the
/// head's, `$4` below it for the lowest), `$5` whether links are resolved,
/// `$6` the read's bytes. Its plan: the `streams` key, then one range
/// scan of `events (stream, number)`, whose rows are the stream's own
/// events, and one of `link_runs (stream, first_number)`
/// ([`links::entries_with_events_between`]) with a lookup of `events
/// (position)` per link, and of `streams` per link target when resolving
/// (kept out of the other two, where it cost every read a probe per
/// entry). No `ORDER BY` outside: the rows come in the
/// window's order, and are sorted again in Rust for a few microseconds
/// rather than by a sort node in the database.
static PAGE_QUERY: LazyLock<[String; 6]> = LazyLock::new(|| {
    [
        ("ASC", false, true),
        ("DESC", false, true),
        ("ASC", true, true),
        ("DESC", true, true),
        ("ASC", false, false),
        ("DESC", false, false),
    ]
    .map(|(order, resolve, with_links)| page_query(order, resolve, with_links))
});

/// The page statement for a read of `stream`. One that holds no links
/// ([`links::can_hold_links`]) reads its own events alone: no scan of
/// `link_runs`, no probe of link targets, which PostgreSQL would set up
/// on every read even where they find nothing (1,000 streams of 100
/// events, pages read from the database, by hand: 179-214 µs of
/// eventfeed's and PostgreSQL's CPU per page, against 275-302 with them).
fn statement(stream: &str, resolve_links: bool, direction: Direction) -> &'static str {
    let descending = usize::from(direction == Direction::Backward);
    if links::can_hold_links(stream) {
        &PAGE_QUERY[2 * usize::from(resolve_links) + descending]
    } else {
        &PAGE_QUERY[4 + descending]
    }
}

fn page_query(order: &str, resolve: bool, with_links: bool) -> String {
    let columns = |alias: &str| STATE_COLUMNS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>();
    let own = columns("s").join(", ");
    let (target, join): (String, String) = if resolve {
        // A probe of the primary key per link, whatever the plan: as a
        // join, the planner may choose a hash join over every row of
        // `streams`, a table that appends update in place and so grows
        // (after 20 s of appends, 857 µs per page against 330; by hand).
        // IMPORTANT: the `LIMIT` keeps it a probe. Without it PostgreSQL
        // pulls the subquery up into a plain join, and its generic plan
        // was that hash join, a scan of every stream for every page read
        // (1,003 streams: 0.15 of the statement's 0.26 ms; auto_explain).
        // The `IS NOT NULL` runs before the probe, once per row: a
        // stream's own events, which are no links, probe nothing.
        let probe = format!(
            " LEFT JOIN LATERAL (SELECT {STATE_COLUMNS} FROM streams \
             WHERE r.link_stream IS NOT NULL AND name = r.link_stream LIMIT 1) t ON true"
        );
        (format!(", {}", columns("t").join(", ")), probe)
    } else {
        (String::new(), String::new())
    };
    // `counted`: the bytes of the event this entry returns, as
    // `ReadBytes` counts them (an unresolved link's are its own, small,
    // and carry no payload); `running`: those of the entries up to it.
    let counted = "CASE WHEN e.link_stream IS NULL OR $5 \
                   THEN coalesce(octet_length(e.data) + octet_length(e.metadata), 0) ELSE 0 END";
    let (stream, low, high) = (
        "s.name",
        "coalesce($2::bigint, s.next_number - 1 - least($4::bigint, s.next_number))",
        "coalesce($3::bigint, s.next_number - 1)",
    );
    let entries = links::entries_between(with_links, stream, low, high);
    format!(
        "SELECT {own}, r.number, r.position, r.created_micros, r.link_stream, r.link_number, r.size, r.present, \
         r.fetched, r.event_position, r.event_stream, r.event_number, r.id, r.event_type, r.event_created, \
         r.is_json, r.metadata_is_json, CASE WHEN r.fetched THEN r.data END, \
         CASE WHEN r.fetched THEN r.metadata END{target} \
         FROM streams s LEFT JOIN LATERAL ( \
           SELECT w.*, w.present AND (w.link_stream IS NULL OR $5) \
                  AND (w.running = w.counted OR w.running <= $6::bigint) AS fetched \
           FROM ( \
             SELECT e.*, octet_length(e.data) + octet_length(e.metadata) AS size, \
                    e.event_position IS NOT NULL AS present, \
                    {counted} AS counted, sum({counted}) OVER (ORDER BY e.number {order}) AS running \
             FROM {entries} e \
           ) w \
         ) r ON true{join} \
         WHERE s.name = $1"
    )
}

/// What the page statement found.
struct Found {
    state: StreamState,
    /// The entries in the statement's range, in the read's direction.
    entries: Vec<Entry>,
    /// Per link target (when resolving), the lowest number a read sees.
    visible: HashMap<String, Option<u64>>,
    /// The payloads the statement carried, by position.
    payloads: HashMap<u64, crate::store::RecordedEvent>,
}

/// The stream's rows for `low..=high` (`None`: from the head, `below` under
/// it), or `None` when this path cannot answer.
async fn fetch(
    client: &ClientWrapper,
    stream: &str,
    (low, high, below): (Option<u64>, Option<u64>, u64),
    direction: Direction,
    resolve_links: bool,
) -> Result<Option<Found>, StoreError> {
    let statement =
        client.prepare_cached(statement(stream, resolve_links, direction)).await.map_err(db_error)?;
    let budget = i64::try_from(READ_BYTES).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[&stream, &low.map(signed), &high.map(signed), &signed(below), &resolve_links, &budget],
        )
        .await
        .map_err(db_error)?;
    let Some(first) = rows.first() else { return Err(StoreError::StreamNotFound) };
    let state = state_from_row(first, 0);
    if state.tombstoned {
        return Err(StoreError::StreamDeleted);
    }
    if !state.exists() {
        return Err(StoreError::StreamNotFound);
    }
    let (mut entries, mut visible, mut payloads) = (Vec::new(), HashMap::new(), HashMap::new());
    let mut names = Names::default();
    for row in rows.iter().filter(|row| row.get::<_, Option<i64>>(ENTRY).is_some()) {
        let entry = Entry::from_row(row, ENTRY);
        if let Some((target, _)) = entry.link.as_ref().filter(|_| resolve_links) {
            let first = match row.get::<_, Option<String>>(TARGET) {
                None => None,
                Some(_) => match state_from_row(row, TARGET) {
                    target if target.tombstoned || target.soft_deleted => None,
                    target => match visible_bounds(&target, 0) {
                        bounds if bounds.max_age_cutoff.is_some() => return Ok(None),
                        bounds => Some(bounds.first),
                    },
                },
            };
            visible.insert(target.clone(), first);
        }
        if row.get::<_, bool>(FETCHED) {
            let event = event_from_row(row, EVENT, &mut names);
            payloads.insert(event.position, event);
        }
        entries.push(entry);
    }
    match direction {
        Direction::Forward => entries.sort_unstable_by_key(|entry| entry.number),
        Direction::Backward => entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.number)),
    }
    Ok(Some(Found { state, entries, visible, payloads }))
}

impl Found {
    /// The stream's view, or `None` when `$maxAge` needs the clock.
    fn view(&self) -> Option<StreamView> {
        let bounds = visible_bounds(&self.state, 0);
        bounds.max_age_cutoff.is_none().then(|| StreamView {
            last_number: self.state.next_number.saturating_sub(1),
            first_visible: bounds.first,
            settings: self.state.settings,
        })
    }

    /// The entries `low..=high` returned as [`super::read`] returns them,
    /// or `None` when a chosen event's payload was not carried.
    fn events(
        mut self,
        stream: &str,
        (low, high): (u64, u64),
        direction: Direction,
        resolve_links: bool,
    ) -> Result<Option<Vec<(ReadEvent, bool)>>, StoreError> {
        self.entries.retain(|entry| (low..=high).contains(&entry.number));
        let planned = plan(stream, &self.entries, &self.visible, direction, resolve_links)?;
        if positions(&planned).iter().any(|position| !self.payloads.contains_key(position)) {
            return Ok(None);
        }
        assemble(planned, &self.payloads).map(Some)
    }
}

/// A stream page: in one statement when it can be, else in a snapshot's
/// several ([`super::read::read_stream`]).
pub(super) async fn stream(client: &mut ClientWrapper, read: &StreamRead) -> Result<StreamSlice, StoreError> {
    match read_stream(client, read).await? {
        Some(slice) => Ok(slice),
        None => super::read::read_stream(client, read).await,
    }
}

/// One event: in one statement when it can be, else in a snapshot's
/// several ([`super::read::read_event`]).
pub(super) async fn event(
    client: &mut ClientWrapper,
    stream: &str,
    number: u64,
    resolve_links: bool,
) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
    match read_event(client, stream, number, resolve_links).await? {
        Some(found) => Ok(found),
        None => super::read::read_event(client, stream, number, resolve_links).await,
    }
}

/// [`super::read::read_stream`] in one statement, or `None`.
async fn read_stream(client: &ClientWrapper, read: &StreamRead) -> Result<Option<StreamSlice>, StoreError> {
    let count = read.count.max(1);
    // The range of `rules::read_range` before the head is known: from the
    // head, forward it is the head alone and backward `count` up to it.
    let range = match (read.from, read.direction) {
        (Some(_), _) => {
            let (low, high) = rules::read_range(read, 0);
            (Some(low), Some(high), 0)
        }
        (None, Direction::Forward) => (None, None, 0),
        (None, Direction::Backward) => (None, None, count - 1),
    };
    let Some(found) = fetch(client, &read.stream, range, read.direction, read.resolve_links).await? else {
        return Ok(None);
    };
    let Some(view) = found.view() else { return Ok(None) };
    let (low, high) = rules::read_range(read, view.last_number);
    let (low, high) = (low.max(view.first_visible), high.min(view.last_number));
    if low > high {
        return Ok(Some(StreamSlice { view, events: Vec::new() }));
    }
    let events = found.events(&read.stream, (low, high), read.direction, read.resolve_links)?;
    Ok(events
        .map(|events| StreamSlice { view, events: events.into_iter().map(|(event, _)| event).collect() }))
}

/// [`super::read::read_event`] in one statement, or `None`.
async fn read_event(
    client: &ClientWrapper,
    stream: &str,
    number: u64,
    resolve_links: bool,
) -> Result<Option<(StreamView, Option<ReadEvent>)>, StoreError> {
    let range = (Some(number), Some(number), 0);
    let Some(found) = fetch(client, stream, range, Direction::Forward, resolve_links).await? else {
        return Ok(None);
    };
    let Some(view) = found.view() else { return Ok(None) };
    if number < view.first_visible {
        return Ok(Some((view, None)));
    }
    let Some(found) = found.events(stream, (number, number), Direction::Forward, resolve_links)? else {
        return Ok(None);
    };
    // v5: a resolved read of a link whose target is gone is a 404.
    let event = found
        .into_iter()
        .next()
        .filter(|(event, is_link)| !(*is_link && resolve_links && event.link.is_none()))
        .map(|(event, _)| event);
    Ok(Some((view, event)))
}
