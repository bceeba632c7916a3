//! Feeds: the page model, the paging math, and the renderers (Atom XML,
//! JSON, HTML). Nothing here knows about HTTP; it turns what the store read
//! into a [`Feed`], and a feed into bytes.
//!
//! The invariant this module keeps for caching: everything on an immutable
//! page (links, `updated`, entries) derives from the events and the request,
//! never from the clock or the stream's current head, so the same page is
//! byte-identical whenever and wherever it is rendered.

pub mod atom;
pub mod competing;
pub mod event;
pub mod html;
pub mod json;
mod swar;
pub mod time;
mod urls;

pub(crate) use urls::PerStream;
pub use urls::{EventUrls, Urls};

use crate::store::{AllSlice, Direction, ReadEvent, StreamSlice};

/// The author of every feed and entry. v5 writes "EventStore"; clients never
/// look at it, but some test suites snapshot it, so it stays.
pub const AUTHOR: &str = "EventStore";

/// The page size when the request names none (v5's).
pub const DEFAULT_PAGE_SIZE: u64 = 20;

/// The largest page a request may ask for (v5's). Bounds the work and
/// memory of one uncached read.
pub const MAX_PAGE_SIZE: u64 = 4096;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    Head,
    Number(u64),
}

/// A request for one page of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub start: PageStart,
    pub direction: Direction,
    pub count: u64,
}

/// `?embed=`: how much of each event an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Embed {
    #[default]
    None,
    Content,
    Rich,
    Body,
    Pretty,
    TryHarder,
}

impl Embed {
    /// Parses the query value, case-insensitively; unknown values are `None`.
    pub fn parse(value: &str) -> Option<Self> {
        const NAMES: [(&str, Embed); 6] = [
            ("none", Embed::None),
            ("content", Embed::Content),
            ("rich", Embed::Rich),
            ("body", Embed::Body),
            ("pretty", Embed::Pretty),
            ("tryharder", Embed::TryHarder),
        ];
        NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(value)).map(|(_, embed)| *embed)
    }
}

/// How a response may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Can never change: cache for a year.
    Immutable,
    /// May change with the next append: revalidate with this version, which
    /// becomes the first half of the ETag.
    Live { version: String },
}

/// A link in a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub uri: String,
    pub relation: &'static str,
}

/// One page of a stream (or of `$all`), ready to render.
#[derive(Debug, Clone)]
pub struct Feed {
    pub title: String,
    pub id: String,
    /// The newest entry's time; `None` for an empty feed.
    pub updated_micros: Option<i64>,
    /// `None` for `$all`.
    pub stream_id: Option<String>,
    pub head_of_stream: bool,
    /// Backward feeds only.
    pub self_url: Option<String>,
    /// The ETag value shown in the body of a head page (set by the caller,
    /// who knows the negotiated media type).
    pub etag: Option<String>,
    pub links: Vec<Link>,
    /// Newest first, forward pages included.
    pub entries: Vec<ReadEvent>,
    pub freshness: Freshness,
    /// Whether the head page is being shown (for the body `eTag`).
    pub is_head: bool,
}

/// Builds the page `request` of `stream` from what the store read.
pub fn stream_feed(urls: &Urls, stream: &str, request: PageRequest, slice: StreamSlice) -> Feed {
    let view = slice.view;
    let last = view.last_number;
    let count = request.count.max(1);
    let page = |from: u64, direction: Direction| Link {
        uri: urls.page(stream, PageStart::Number(from), direction, count),
        relation: "",
    };
    let mut links = vec![
        Link { uri: urls.stream(stream), relation: "self" },
        Link { uri: urls.page(stream, PageStart::Head, Direction::Backward, count), relation: "first" },
    ];
    let (head_of_stream, freshness, self_url, is_head);

    match request.direction {
        Direction::Backward => {
            let (from, requested_head) = match request.start {
                PageStart::Head => (last, true),
                PageStart::Number(from) => (from, false),
            };
            // A read that stopped at its bytes (see `store::rules::READ_BYTES`)
            // holds fewer than it could: the page then leads on from the
            // lowest event it holds, not from `from - count`.
            let could_hold = from.saturating_sub(count - 1).max(view.first_visible);
            let lowest = slice.events.first().map(|event| event.original().number);
            let cut_at = lowest.filter(|lowest| *lowest > could_hold);
            // The page reaches the first visible event: nothing lies behind it.
            let reaches_start = cut_at.is_none() && from < view.first_visible.saturating_add(count);
            if !reaches_start {
                let next = cut_at.map_or_else(|| from - count, |lowest| lowest - 1);
                links.push(Link { relation: "last", ..page(0, Direction::Forward) });
                links.push(Link { relation: "next", ..page(next, Direction::Backward) });
            }
            links.push(Link {
                relation: "previous",
                ..page(from.min(last).saturating_add(1), Direction::Forward)
            });
            head_of_stream = requested_head;
            is_head = requested_head;
            freshness = if requested_head || from > last {
                Freshness::Live { version: last.to_string() }
            } else {
                Freshness::Immutable
            };
            self_url = Some(urls.stream(stream));
        }
        Direction::Forward => {
            let from = match request.start {
                PageStart::Head => last,
                PageStart::Number(from) => from,
            };
            // As going backward: a read cut at its bytes ends the page at
            // the highest event it holds.
            let could_hold = from.saturating_add(count - 1).min(last);
            let highest = slice.events.last().map(|event| event.original().number);
            let page_end = match highest {
                Some(highest) if highest < could_hold => highest,
                _ => from.saturating_add(count - 1),
            };
            let reaches_end = page_end >= last;
            if from >= 1 {
                links.push(Link { relation: "last", ..page(0, Direction::Forward) });
                links.push(Link { relation: "next", ..page(from - 1, Direction::Backward) });
            }
            // Real clients stop walking when `previous` disappears, so it is
            // absent exactly when the page is empty at the end of the stream.
            if !(reaches_end && slice.events.is_empty()) {
                // Jump over events hidden by retention rather than walking
                // page by page through an invisible range.
                let next_from = page_end.min(last).saturating_add(1).max(view.first_visible);
                links.push(Link { relation: "previous", ..page(next_from, Direction::Forward) });
            }
            head_of_stream = reaches_end;
            is_head = false;
            let full = last.saturating_add(1) >= from.saturating_add(count);
            freshness =
                if full { Freshness::Immutable } else { Freshness::Live { version: last.to_string() } };
            self_url = None;
        }
    }
    links.push(Link { uri: urls.metadata(stream), relation: "metadata" });

    let mut entries = slice.events;
    entries.reverse();
    Feed {
        title: format!("Event stream '{stream}'"),
        id: urls.stream(stream),
        updated_micros: entries.first().map(|e| e.original().created_micros),
        stream_id: Some(stream.to_owned()),
        head_of_stream,
        self_url,
        etag: None,
        links,
        entries,
        freshness,
        is_head,
    }
}

/// Whether two names read from the store are the same text: the same
/// allocation mostly (a read shares one copy of each name among its
/// events), which is a pointer comparison, not a `memcmp`.
pub(crate) fn same_name(a: &std::sync::Arc<str>, b: &std::sync::Arc<str>) -> bool {
    std::sync::Arc::ptr_eq(a, b) || a == b
}

/// Formats `number` in decimal into `buffer`, without going through `fmt`
/// (renderers do this for every entry).
pub(crate) fn decimal(number: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    let mut rest = number;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buffer[at..]).unwrap_or("0")
}

/// The name of the stream of every event.
pub const ALL_STREAM: &str = "$all";

/// A position in `$all` as v5 writes it: commit and prepare position, 16
/// hex digits each. eventfeed has one position per event, so both halves
/// are the same number.
pub fn format_position(position: u64) -> String {
    format!("{position:016X}{position:016X}")
}

/// Parses a position written by [`format_position`] (the commit half
/// counts; case-insensitive).
pub fn parse_position(text: &str) -> Option<u64> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&text[..16], 16).ok()
}

/// Builds a page of `$all` from what the store read. `start` is a
/// position; the links step by positions the read examined, so events
/// hidden by retention or deletion are skipped without breaking the walk.
pub fn all_feed(urls: &Urls, request: PageRequest, slice: AllSlice) -> Feed {
    let last = slice.next_position.checked_sub(1);
    let count = request.count.max(1);
    let page = |position: u64, direction: Direction, relation: &'static str| Link {
        uri: urls.all_page(PageStart::Number(position), direction, count),
        relation,
    };
    let mut links = vec![
        Link { uri: urls.stream(ALL_STREAM), relation: "self" },
        Link { uri: urls.all_page(PageStart::Head, Direction::Backward, count), relation: "first" },
    ];
    let (head_of_stream, freshness, self_url, is_head);
    let version = || format_position(last.unwrap_or(0));
    match request.direction {
        Direction::Backward => {
            let requested_head = request.start == PageStart::Head;
            let from = match request.start {
                PageStart::Head => last.unwrap_or(0),
                PageStart::Number(position) => position,
            };
            if let Some((lowest, _)) = slice.scanned.filter(|(lowest, _)| *lowest > 0) {
                links.push(page(0, Direction::Forward, "last"));
                links.push(page(lowest - 1, Direction::Backward, "next"));
            }
            let previous = last.map_or(0, |last| from.min(last) + 1);
            links.push(page(previous, Direction::Forward, "previous"));
            head_of_stream = requested_head;
            is_head = requested_head;
            freshness = match last {
                Some(last) if !requested_head && from <= last => Freshness::Immutable,
                _ => Freshness::Live { version: version() },
            };
            self_url = Some(urls.stream(ALL_STREAM));
        }
        Direction::Forward => {
            let from = match request.start {
                PageStart::Head => last.unwrap_or(0),
                PageStart::Number(position) => position,
            };
            if from >= 1 {
                links.push(page(0, Direction::Forward, "last"));
                links.push(page(from - 1, Direction::Backward, "next"));
            }
            let highest = slice.scanned.map(|(_, highest)| highest);
            let reaches_end = match (highest, last) {
                (Some(highest), Some(last)) => highest >= last,
                _ => true,
            };
            // Nothing examined means the page is past the end: no `previous`.
            if let Some(highest) = highest {
                links.push(page(highest + 1, Direction::Forward, "previous"));
            }
            head_of_stream = reaches_end;
            is_head = false;
            let full = slice.events.len() as u64 >= count || !reaches_end;
            freshness = if full { Freshness::Immutable } else { Freshness::Live { version: version() } };
            self_url = None;
        }
    }
    let mut entries: Vec<ReadEvent> =
        slice.events.into_iter().map(|event| ReadEvent { event, link: None }).collect();
    entries.reverse();
    Feed {
        title: "All events".to_owned(),
        id: urls.stream(ALL_STREAM),
        updated_micros: entries.first().map(|e| e.event.created_micros),
        stream_id: None,
        head_of_stream,
        self_url,
        etag: None,
        links,
        entries,
        freshness,
        is_head,
    }
}

/// The ETag of a live response: `{version};{hash}`, where the hash covers
/// the negotiated media type and anything else that changes the bytes
/// without changing the version (the stream's metadata, which decides what
/// is visible). Stable across restarts and nodes (FNV-1a, not a seeded hash).
pub fn etag_value(version: &str, media_type: &str, metadata_number: Option<u64>) -> String {
    let mut input = media_type.as_bytes().to_vec();
    if let Some(number) = metadata_number {
        input.extend_from_slice(b";meta=");
        input.extend_from_slice(number.to_string().as_bytes());
    }
    format!("{version};{}", crate::hash::fnv1a_32(&input))
}

/// An event of type `t` with no payload, at global position `number`
/// (tests).
#[cfg(test)]
pub(crate) fn test_event(stream: &str, number: u64) -> crate::store::RecordedEvent {
    crate::store::RecordedEvent {
        stream: stream.into(),
        number,
        position: number,
        id: uuid::Uuid::nil(),
        event_type: "t".into(),
        created_micros: 0,
        is_json: false,
        metadata_is_json: false,
        data: bytes::Bytes::new(),
        metadata: bytes::Bytes::new(),
    }
}

#[cfg(test)]
mod tests;
