//! `?asOf=`: a page as it was at a past moment of the log, a `$all`
//! position or a time (RFC 3339), for checking out the past the way version
//! control checks out a commit. Pages of streams, of `$ce-`/`$et-` and other
//! system streams, of metadata streams and of `$all` take it.
//!
//! The bound is turned into `end`, one past the last `$all` position it
//! includes, and a page read as of it is the page the server would have
//! served when the log ended there: the same events, numbers and paging
//! math (the stream's last event is its last one below `end`), and links
//! that keep the bound. Positions are dense and assigned in commit order,
//! and creation times never decrease along the log, so a time is the
//! position of the last event created at or before it.
//!
//! What it shows is what the store holds now, bounded: the past is not
//! resurrected. Events deleted or hidden by retention since stay hidden
//! (deletion is often an obligation), so a stream with no event left below
//! the bound, or deleted since, reads as `404` (`410` when hard-deleted).
//!
//! Once the bound is settled, no commit can ever fall under it, and every
//! page read as of it is served as immutable. Like a full page of a live
//! stream, a cached copy goes on showing an event deleted since, until
//! the cache drops it (the shipped Varnish rules ban a stream's pages on a
//! delete, these included). Until then the page is live, with an ETag of
//! its own. Nothing here runs for a read without `asOf`.

use std::ops::RangeInclusive;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::error::HttpError;
use crate::feed::{self, Feed, Freshness, PageRequest, PageStart};
use crate::store::{AllRead, AllSlice, Direction, StoreError, StreamRead, StreamSlice};

/// A bound as written in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// The last `$all` position included.
    Position(u64),
    /// The latest creation time included, in microseconds since the Unix
    /// epoch (the store's clock; finer fractions are cut).
    Time(i64),
}

/// A bound resolved against the log.
#[derive(Debug, Clone)]
pub(super) struct AsOf {
    /// One past the last position included (0: nothing).
    pub end: u64,
    /// No commit from now on can fall under the bound: pages are immutable.
    pub settled: bool,
    /// The query parameter as the links carry it (`asOf=…`).
    query: String,
}

/// What a link's query may carry unescaped: RFC 3986's unreserved
/// characters and `:`, so that times stay readable; `+` (a space in a
/// query) is escaped.
const QUERY_VALUE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':');

/// `?asOf=` on a route that shows no page: refused rather than ignored,
/// since an answer from the present would be mistaken for the past.
pub(super) fn refuse_outside_pages(as_of: Option<&str>) -> Result<(), HttpError> {
    match as_of {
        None => Ok(()),
        Some(_) => Err(HttpError::bad_request("asOf applies to pages only").with_detail(
            "Read a page as of a bound, e.g. /streams/{stream}?asOf=… for its head page then; single \
             events, metadata documents and event streams are not read as of a bound.",
        )),
    }
}

/// Parses `?asOf=` and resolves it against the log: one read of the
/// newest event, and for a time a binary search of `$all`.
pub(super) async fn resolve(state: &AppState, text: &str) -> Result<AsOf, HttpError> {
    let bound = parse(text).ok_or_else(|| {
        HttpError::bad_request(format!("Invalid asOf argument: {text}")).with_detail(
            "asOf is a position in $all (32 hex digits, as in its links, or a decimal number) or an \
             RFC 3339 time such as 2026-11-01T12:00:00Z (a '+' in an offset is sent as %2B).",
        )
    })?;
    let newest = AllRead { from: None, direction: Direction::Backward, count: 1 };
    let newest = state.store.read_all(newest).await?;
    let query = format!("asOf={}", percent_encoding::utf8_percent_encode(text, QUERY_VALUE));
    let (end, settled) = match bound {
        Bound::Position(position) => {
            let end = position.saturating_add(1);
            // Every position below `end` is assigned, and what is visible
            // is durable (the store shows nothing before).
            (end, end <= newest.next_position)
        }
        Bound::Time(micros) => match newest.events.last() {
            // Every later commit is created at or after the newest event.
            Some(event) if event.created_micros > micros => {
                (end_at_time(state, micros, newest.next_position).await?, true)
            }
            // A quiet log: commits still to come could fall under the time.
            _ => (newest.next_position, false),
        },
    };
    Ok(AsOf { end, settled, query })
}

/// `text` as a bound: 32 hex digits (an `$all` position as its links write
/// it), a decimal position, or an RFC 3339 time. 32 digits are always the
/// hex form: no decimal position needs that many (`u64` has 20).
fn parse(text: &str) -> Option<Bound> {
    if let Some(position) = feed::parse_position(text) {
        return Some(Bound::Position(position));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Bound::Position);
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let micros = time.unix_timestamp_nanos().div_euclid(1_000);
    // RFC 3339's years (0000-9999) are well inside i64 microseconds.
    i64::try_from(micros).ok().map(Bound::Time)
}

/// One past the last position whose event was created at or before
/// `micros`: a binary search of `$all` (creation times never decrease
/// along it), one read of one event per step. Events hidden since are
/// skipped by the reads; where one sits makes no difference to the pages,
/// which cannot show it.
async fn end_at_time(state: &AppState, micros: i64, next_position: u64) -> Result<u64, StoreError> {
    let (mut low, mut high, mut end) = (0, next_position, 0);
    while low < high {
        let middle = low + (high - low) / 2;
        let read = AllRead { from: Some(middle), direction: Direction::Forward, count: 1 };
        match state.store.read_all(read).await?.events.first() {
            Some(event) if event.position < high && event.created_micros <= micros => {
                end = event.position + 1;
                low = event.position + 1;
            }
            _ => high = middle,
        }
    }
    Ok(end)
}

/// The last event number of a stream below `end`, given what a read of
/// its last event saw; `None` when no event of it visible now was
/// committed by then. A binary search over the visible numbers (positions
/// grow with numbers along a stream), one read of one event per step, and
/// none when the stream's last event is already below the bound.
///
/// Entries of system streams are links, and a link has its target's
/// position: it is written in the same commit as its target and has no
/// position of its own in `$all`. So a `$ce-` page as of a bound holds the
/// links to exactly the events `$all` holds as of it.
pub(super) async fn last_number(
    state: &AppState,
    stream: &str,
    end: u64,
    last: &StreamSlice,
) -> Result<Option<u64>, StoreError> {
    let view = last.view;
    if let Some(event) = last.events.last().filter(|read| read.original().position < end) {
        return Ok(Some(event.original().number));
    }
    let (mut low, mut high, mut found) = (view.first_visible, view.last_number.saturating_add(1), None);
    while low < high {
        let middle = low + (high - low) / 2;
        let read = StreamRead {
            stream: stream.to_owned(),
            from: Some(middle),
            direction: Direction::Forward,
            count: 1,
            resolve_links: false,
        };
        match state.store.read_stream(read).await?.events.first().map(|read| read.original()) {
            Some(event) if event.number < high && event.position < end => {
                found = Some(event.number);
                low = event.number + 1;
            }
            _ => high = middle,
        }
    }
    Ok(found)
}

/// The store read behind a stream page whose last event then was `last`:
/// where it starts, how many events, and which numbers the page keeps (the
/// page's own range, cut at `last`).
pub(super) fn stream_range(request: PageRequest, last: u64) -> (u64, u64, RangeInclusive<u64>) {
    let count = request.count.max(1);
    match (request.start, request.direction) {
        (PageStart::Head, Direction::Backward) => (last, count, last.saturating_sub(count - 1)..=last),
        (PageStart::Head, Direction::Forward) => (last, 1, last..=last),
        (PageStart::Number(from), Direction::Backward) => {
            // A page from past the end then: only its part up to `last`.
            let start = from.min(last);
            let count = count.saturating_sub(from - start).max(1);
            (start, count, from.saturating_sub(request.count.max(1) - 1)..=last)
        }
        (PageStart::Number(from), Direction::Forward) => {
            let count = count.min(last.saturating_sub(from).saturating_add(1)).max(1);
            (from, count, from..=last)
        }
    }
}

/// A stream's slice as it was when its last event was `last`.
pub(super) fn bound_stream_slice(slice: &mut StreamSlice, keep: &RangeInclusive<u64>, last: u64) {
    slice.events.retain(|read| keep.contains(&read.original().number));
    slice.view.last_number = last;
}

/// The read of `$all` behind a page as of `end`: pages from past the end
/// then start at its last position.
pub(super) fn all_read(request: PageRequest, end: u64) -> AllRead {
    let last = end.saturating_sub(1);
    let from = match (request.start, request.direction) {
        (PageStart::Head, _) => last,
        (PageStart::Number(from), Direction::Backward) => from.min(last),
        (PageStart::Number(from), Direction::Forward) => from,
    };
    AllRead { from: Some(from), direction: request.direction, count: request.count }
}

/// `$all`'s slice as it was when the log ended at `end`.
pub(super) fn bound_all_slice(slice: &mut AllSlice, end: u64) {
    slice.events.retain(|event| event.position < end);
    slice.next_position = slice.next_position.min(end);
    slice.scanned = slice.scanned.filter(|(low, _)| *low < end).map(|(low, high)| (low, high.min(end - 1)));
}

/// A page as of a settled bound can never change. Before that, the page
/// is as fresh as the paging math says, and a live one's ETag names the
/// bound, so it never matches the unbounded page's. Links keep the bound
/// (entries' links need not: an event never changes).
pub(super) fn settle(feed: &mut Feed, as_of: &AsOf) {
    if as_of.settled {
        feed.freshness = Freshness::Immutable;
    } else if let Freshness::Live { version } = &mut feed.freshness {
        version.push_str(&format!("@{}", as_of.end));
    }
    for link in &mut feed.links {
        if matches!(link.relation, "self" | "first" | "last" | "next" | "previous") {
            keep_bound(&mut link.uri, as_of);
        }
    }
    if let Some(url) = &mut feed.self_url {
        keep_bound(url, as_of);
    }
}

fn keep_bound(uri: &mut String, as_of: &AsOf) {
    uri.push(if uri.contains('?') { '&' } else { '?' });
    uri.push_str(&as_of.query);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Option<i64> {
        match parse(text) {
            Some(Bound::Time(micros)) => Some(micros),
            _ => None,
        }
    }

    #[test]
    fn positions_parse_as_in_links_or_in_decimal() {
        assert_eq!(parse("0000000000000010000000000000000F"), Some(Bound::Position(16)));
        assert_eq!(parse("000000000000001a000000000000001A"), Some(Bound::Position(26)));
        assert_eq!(parse("0"), Some(Bound::Position(0)));
        assert_eq!(parse("18446744073709551615"), Some(Bound::Position(u64::MAX)));
        for bad in ["", "-1", "+1", "1.5", "18446744073709551616", "0x10", "000000000000001G000000000000001G"]
        {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_parse_to_microseconds_since_the_epoch() {
        assert_eq!(time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(time("2026-11-01T12:00:00Z"), Some(1_793_534_400_000_000));
        assert_eq!(time("2026-11-01T12:00:00.25Z"), Some(1_793_534_400_250_000));
        assert_eq!(time("2026-11-01t12:00:00z"), Some(1_793_534_400_000_000));
        assert_eq!(time("2026-11-01T13:00:00+01:00"), Some(1_793_534_400_000_000));
        assert_eq!(time("2026-11-01T11:30:00-00:30"), Some(1_793_534_400_000_000));
        assert_eq!(time("2000-02-29T00:00:00.123456Z"), Some(951_782_400_123_456));
        // Finer than the store's clock: cut, never rounded up past an event.
        assert_eq!(time("2000-02-29T00:00:00.1234569Z"), Some(951_782_400_123_456));
        assert_eq!(time("1969-12-31T23:59:59.9999995Z"), Some(-1));
        for bad in [
            "2026-11-01",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-01T12:00:00",
            "2026-11-01T12:00:00.Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T12:00:00 01:00",
            "yesterday",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    fn request(start: PageStart, direction: Direction, count: u64) -> PageRequest {
        PageRequest { start, direction, count }
    }

    #[test]
    fn a_stream_page_reads_only_its_range_up_to_the_last_event_then() {
        use Direction::{Backward, Forward};
        use PageStart::{Head, Number};
        assert_eq!(stream_range(request(Head, Backward, 20), 30), (30, 20, 11..=30));
        assert_eq!(stream_range(request(Head, Backward, 20), 3), (3, 20, 0..=3));
        assert_eq!(stream_range(request(Number(25), Backward, 20), 30), (25, 20, 6..=30));
        // From past the end then: the page's part below it, or nothing.
        assert_eq!(stream_range(request(Number(35), Backward, 20), 30), (30, 15, 16..=30));
        let (_, _, keep) = stream_range(request(Number(60), Backward, 20), 30);
        assert!(keep.is_empty());
        assert_eq!(stream_range(request(Number(0), Forward, 20), 30), (0, 20, 0..=30));
        assert_eq!(stream_range(request(Number(20), Forward, 20), 30), (20, 11, 20..=30));
        let (_, count, keep) = stream_range(request(Number(31), Forward, 20), 30);
        assert_eq!(count, 1);
        assert!(keep.is_empty());
    }

    #[test]
    fn links_keep_the_bound_readably() {
        let as_of = AsOf {
            end: 8,
            settled: true,
            query: format!(
                "asOf={}",
                percent_encoding::utf8_percent_encode("2026-11-01T13:00:00+01:00", QUERY_VALUE)
            ),
        };
        let mut uri = "http://h/streams/a/0/forward/20".to_owned();
        keep_bound(&mut uri, &as_of);
        assert_eq!(uri, "http://h/streams/a/0/forward/20?asOf=2026-11-01T13:00:00%2B01:00");
    }
}
