//! The one page-read pipeline, shared by every feed route: pages of a
//! stream, of `$all` and of a metadata stream, and single events. The
//! routes (`streams`, `metadata`) check names and negotiate the media
//! type; this module parses the page segments, reads the store, builds the
//! feed and renders it with its cache headers. Forward pages go through
//! `live` for `ES-LongPoll`.
//!
//! `$all` (also `/streams/%24all`) is every event in commit order, paged by
//! global position (32 hex digits) instead of event number. It is read
//! here like any stream, and never written.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::as_of::{self, AsOf};
use super::auth::authorize_read;
use super::caching::{Caching, respond};
use super::error::HttpError;
use super::live::{self, Rendered, Watched};
use super::negotiate::{
    self, APPLICATION_XML, ATOM_JSON, EVENT_JSON, EVENT_XML, HTML, JSON, OCTET_STREAM, TEXT_XML,
};
use super::page_cache::{AllPageKey, PageCache, PageKey};
use super::params::{self, ReadQuery};
use crate::feed::{self, Feed, Freshness, PageRequest, PageStart, Urls};
use crate::security::Principal;
use crate::store::{AllRead, Direction, ReadEvent, StoreError, StreamRead, StreamSettings, retention};

/// Who reads: the application, and the principal the request speaks for,
/// whose access every read checks.
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
}

/// Parses a page route's segments (`$all` takes positions, not numbers,
/// and words its refusals as v5 does there).
pub(super) fn page_request(
    stream: &str,
    start: &str,
    direction: &str,
    count: &str,
) -> Result<PageRequest, HttpError> {
    params::stream_name(stream)?;
    let direction = match direction {
        "backward" => Direction::Backward,
        "forward" => Direction::Forward,
        // v5 has no such route.
        _ => return Err(HttpError::no_route()),
    };
    if stream != feed::ALL_STREAM {
        return Ok(PageRequest {
            start: params::page_start(start)?,
            direction,
            count: params::count(count)?,
        });
    }
    let count = params::count(count).map_err(|mut error| {
        error.reason = format!("Invalid count argument: {count}");
        error
    })?;
    Ok(PageRequest { start: all_page_start(start)?, direction, count })
}

/// `{position}` of an `$all` page route: `head` or 32 hex digits.
fn all_page_start(text: &str) -> Result<PageStart, HttpError> {
    if text.eq_ignore_ascii_case("head") {
        return Ok(PageStart::Head);
    }
    feed::parse_position(text).map(PageStart::Number).ok_or_else(|| {
        HttpError::bad_request(format!("Invalid position argument: {text}"))
            .with_detail("Positions in $all are 32 hex digits, as in the links of its pages, or 'head'.")
    })
}

/// Reads and renders one page of a stream or of `$all`; forward pages
/// honour `ES-LongPoll`.
pub(super) async fn read_page(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    reader.state.activity.read_served();
    let is_all = stream == feed::ALL_STREAM;
    let as_of = match &query.as_of {
        Some(text) => Some(Box::pin(as_of::resolve(reader.state, text)).await?),
        None => None,
    };
    let as_of = as_of.as_ref();
    // Boxed: a long-poll waits with this future's space in its own, for
    // as long as it waits; boxed, the read's space is freed once it is done.
    let read = || {
        Box::pin(async move {
            if is_all {
                all_page(reader, urls, request, query, headers, media, as_of).await
            } else {
                stream_page(reader, urls, stream, request, query, headers, media, as_of).await
            }
        })
    };
    // A page as of a bound is not followed live: it shows the past.
    if request.direction == Direction::Backward || as_of.is_some() {
        return read().await.map(|rendered| rendered.response);
    }
    let watched = if is_all { Watched::All } else { Watched::Stream(stream) };
    // A malformed ES-ResolveLinkTos fails the read itself; nothing to share.
    // Only a long-poll needs the key (built lazily: most reads are not).
    let page = || {
        params::resolve_link_tos(headers).ok().map(|resolve_links| live::PageKey {
            stream: stream.to_owned(),
            request,
            resolve_links,
            media,
            embed: query.embed(),
            base: urls.base().to_owned(),
            if_none_match: headers.get_all(header::IF_NONE_MATCH).iter().cloned().collect(),
            reader: reader.principal.login().map(str::to_owned),
        })
    };
    live::long_poll(reader.state, headers, watched, page, read).await
}

/// Reads and renders one page of a stream, as of a bound if given.
#[allow(clippy::too_many_arguments)]
async fn stream_page(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
    as_of: Option<&AsOf>,
) -> Result<Rendered, HttpError> {
    let resolve_links = params::resolve_link_tos(headers)?;
    let cache_key = (as_of.is_none() && media != HTML && reader.state.page_cache.enabled())
        .then(|| PageKey { base: urls.base(), stream, request, media, embed: query.embed(), resolve_links });
    if let Some(key) = &cache_key
        && let Some(kept) = kept_page(reader, key, headers).await?
    {
        return Ok(kept);
    }
    let bounded = match as_of {
        Some(as_of) => {
            let last = last_number_then(reader, stream, as_of).await?;
            Some((last, as_of::stream_range(request, last)))
        }
        None => None,
    };
    let (from, count) = match (&bounded, request.start) {
        (Some((_, (start, count, _))), _) => (Some(*start), *count),
        (None, PageStart::Head) => (None, request.count),
        (None, PageStart::Number(number)) => (Some(number), request.count),
    };
    let read =
        StreamRead { stream: stream.to_owned(), from, direction: request.direction, count, resolve_links };
    let mut slice = match reader.state.store.read_stream(read).await {
        Ok(slice) => slice,
        Err(error) => {
            // Who may not read the stream learns nothing of it either.
            authorize_read(reader.state, reader.principal, stream, None).await?;
            return Err(read_error(error));
        }
    };
    let settings = authorize_read(reader.state, reader.principal, stream, Some(slice.view.settings)).await?;
    if let Some((last, (_, _, keep))) = &bounded {
        as_of::bound_stream_slice(&mut slice, keep, *last);
    }
    let (first_visible, last) = (slice.view.first_visible, Some(slice.view.last_number));
    let mut feed = feed::stream_feed(urls, stream, request, slice);
    if let Some(as_of) = as_of {
        as_of::settle(&mut feed, as_of);
    }
    let keep =
        cache_key.and_then(|key| reader.state.page_cache.key_for(&key, &settings, first_visible, last));
    let keep = keep.filter(|_| can_be_kept(&feed)).map(|key| (&reader.state.page_cache, key));
    Ok(render_feed(headers, urls, feed, &settings, media, query.embed(), keep))
}

/// The page kept in memory for this read, when there is one: the stream's
/// state is looked up (and the reader's access checked) first, so a deleted
/// stream or a metadata write since the page was kept is never answered
/// from it (on PostgreSQL, once the write's notification has reached this
/// node: see `Store::recent_stream_state`). `None`: read the page.
async fn kept_page(
    reader: Reader<'_>,
    key: &PageKey<'_>,
    headers: &HeaderMap,
) -> Result<Option<Rendered>, HttpError> {
    let state = match reader.state.store.recent_stream_state(key.stream).await {
        Ok(Some(state)) if state.exists() => state,
        // Missing, deleted or failing: the read itself answers.
        _ => return Ok(None),
    };
    let settings = authorize_read(reader.state, reader.principal, key.stream, Some(state.settings)).await?;
    let first_visible = retention::visible_bounds(&state, 0).first;
    let last = state.next_number.checked_sub(1);
    let Some(page) = reader.state.page_cache.get(key, &settings, first_visible, last) else {
        return Ok(None);
    };
    let caching = Caching { freshness: &Freshness::Immutable, settings: &settings };
    Ok(Some(Rendered { response: respond(headers, &caching, key.media, |_| page), has_events: true }))
}

/// Whether a page just read can never change but by a metadata write or,
/// at the head, an append (the rest is in the key: see `page_cache`):
/// immutable, and with no resolved link (its target may be deleted).
fn can_be_kept(feed: &Feed) -> bool {
    feed.freshness == Freshness::Immutable
        && !feed.entries.is_empty()
        && feed.entries.iter().all(|entry| entry.link.is_none())
}

/// The stream's last event number as of the bound; `404` when no event of
/// it visible now had been committed by then (after the access check, so
/// that the answer tells only a reader whether the stream exists).
async fn last_number_then(reader: Reader<'_>, stream: &str, as_of: &AsOf) -> Result<u64, HttpError> {
    let found = match reader.state.store.read_stream(StreamRead::last(stream)).await {
        Ok(last) => as_of::last_number(reader.state, stream, as_of.end, &last).await,
        Err(error) => Err(error),
    };
    match found {
        Ok(Some(last)) => Ok(last),
        Ok(None) => {
            authorize_read(reader.state, reader.principal, stream, None).await?;
            Err(read_error(StoreError::StreamNotFound))
        }
        Err(error) => {
            authorize_read(reader.state, reader.principal, stream, None).await?;
            Err(read_error(error))
        }
    }
}

/// Reads and renders one page of `$all`, as of a bound if given.
async fn all_page(
    reader: Reader<'_>,
    urls: &Urls,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
    as_of: Option<&AsOf>,
) -> Result<Rendered, HttpError> {
    let read = match as_of {
        Some(as_of) => as_of::all_read(request, as_of.end),
        None => AllRead {
            from: match request.start {
                PageStart::Head => None,
                PageStart::Number(position) => Some(position),
            },
            direction: request.direction,
            count: request.count,
        },
    };
    let settings = authorize_read(reader.state, reader.principal, feed::ALL_STREAM, None).await?;
    let cache = &reader.state.page_cache;
    // IMPORTANT: the epoch is taken before the read, so that a page read
    // across a hiding commit is kept under the epoch before it, which no
    // read after the commit asks for (see `Notifier::hid_events`).
    let kept = (as_of.is_none() && media != HTML && cache.enabled())
        .then(|| reader.state.store.all_pages_epoch())
        .flatten()
        .map(|epoch| (AllPageKey { base: urls.base(), request, media, embed: query.embed() }, epoch));
    if let Some((key, epoch)) = &kept
        && let Some(page) = cache.get_all(key, *epoch)
    {
        let caching = Caching { freshness: &Freshness::Immutable, settings: &settings };
        return Ok(Rendered { response: respond(headers, &caching, media, |_| page), has_events: true });
    }
    let mut slice = reader.state.store.read_all(read).await?;
    let may_expire = slice.may_expire;
    if let Some(as_of) = as_of {
        as_of::bound_all_slice(&mut slice, as_of.end);
    }
    let mut feed = feed::all_feed(urls, request, slice);
    if let Some(as_of) = as_of {
        as_of::settle(&mut feed, as_of);
    }
    // A full page at the head says so (`headOfStream`) until the next append.
    let keep = kept
        .filter(|_| !may_expire && !feed.head_of_stream && can_be_kept(&feed))
        .and_then(|(key, epoch)| cache.all_key_for(&key, epoch))
        .map(|key| (cache, key));
    Ok(render_feed(headers, urls, feed, &settings, media, query.embed(), keep))
}

/// Renders a feed in the negotiated representation with its cache headers,
/// and keeps it in the page cache under the key given.
fn render_feed(
    headers: &HeaderMap,
    urls: &Urls,
    mut feed: Feed,
    settings: &StreamSettings,
    media: &'static str,
    embed: feed::Embed,
    keep: Option<(&PageCache, Vec<u8>)>,
) -> Rendered {
    let freshness = feed.freshness.clone();
    let caching = Caching { freshness: &freshness, settings };
    let has_events = !feed.entries.is_empty();
    let response = respond(headers, &caching, media, |etag| {
        if feed.is_head {
            feed.etag = etag.map(str::to_owned);
        }
        let page = Bytes::from(match media {
            HTML => feed::html::render_feed(&feed, urls),
            _ if negotiate::is_json(media) => feed::json::render_feed(&feed, urls, embed),
            _ => feed::atom::render_feed(&feed, urls, embed),
        });
        if let Some((cache, key)) = keep {
            cache.insert(key, page.clone());
        }
        page
    });
    // A 304 tells the client nothing new: a long-poll keeps waiting.
    let has_events = has_events && response.status() != StatusCode::NOT_MODIFIED;
    Rendered { response, has_events }
}

/// Read failures: a hard-deleted stream reads as `410 Deleted` (appends
/// say "Stream deleted"; v5 words them differently).
pub(super) fn read_error(error: StoreError) -> HttpError {
    match error {
        StoreError::StreamDeleted => {
            HttpError::new(StatusCode::GONE, "Deleted").with_detail("The stream was hard-deleted.")
        }
        other => other.into(),
    }
}

/// One event looked up by number, or the last one (`PageStart::Head`).
pub(super) struct FoundEvent {
    /// The event; `None` when the stream exists but the event does not (or
    /// is no longer visible).
    pub read: Option<ReadEvent>,
    /// The stream's last event number when it was read.
    pub last_number: u64,
    /// How the event's answer may be cached: a numbered event never
    /// changes, the last one does with the next append.
    pub freshness: Freshness,
    pub settings: StreamSettings,
}

/// Looks one event up; the store's error when the stream cannot be read.
pub(super) async fn find_event(
    state: &AppState,
    stream: &str,
    start: PageStart,
    resolve_links: bool,
) -> Result<FoundEvent, StoreError> {
    match start {
        PageStart::Head => {
            let read = StreamRead {
                stream: stream.to_owned(),
                from: None,
                direction: Direction::Backward,
                count: 1,
                resolve_links,
            };
            let mut slice = state.store.read_stream(read).await?;
            let last_number = slice.view.last_number;
            Ok(FoundEvent {
                read: slice.events.pop(),
                last_number,
                freshness: Freshness::Live { version: last_number.to_string() },
                settings: slice.view.settings,
            })
        }
        PageStart::Number(number) => {
            let (view, read) = state.store.read_event(stream, number, resolve_links).await?;
            let (last_number, settings) = (view.last_number, view.settings);
            Ok(FoundEvent { read, last_number, freshness: Freshness::Immutable, settings })
        }
    }
}

/// Reads one event (`PageStart::Head`: the last) and renders it.
pub(super) async fn single_event(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    start: PageStart,
    resolve_links: bool,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    let (state, principal) = (reader.state, reader.principal);
    state.activity.read_served();
    let mut found = match find_event(state, stream, start, resolve_links).await {
        Ok(found) => found,
        Err(error) => {
            authorize_read(state, principal, stream, None).await?;
            return Err(read_error(error));
        }
    };
    found.settings = authorize_read(state, principal, stream, Some(found.settings)).await?;
    let read = found.read.as_ref().ok_or_else(|| HttpError::not_found("The event does not exist."))?;
    render_found(headers, urls, &found, read, media)
}

/// The answer for an event found, in the negotiated representation; `406`
/// for an XML view of data that XML cannot carry.
pub(super) fn render_found(
    headers: &HeaderMap,
    urls: &Urls,
    found: &FoundEvent,
    read: &ReadEvent,
    media: &'static str,
) -> Result<Response, HttpError> {
    // A client asking for JSON data gets the bytes it stored; when they are
    // not JSON, the Content-Type says so instead of claiming JSON.
    let media = if media == JSON && !read.event.is_json { OCTET_STREAM } else { media };
    // Rendered before the ETag is compared, since whether an XML view
    // exists decides between 406 and an answer; a 304 (only `/head` has an
    // ETag) drops one event's body.
    let body = render_event(read, urls, media).ok_or_else(|| {
        HttpError::not_acceptable(&[OCTET_STREAM]).with_detail(
            "This event cannot be shown as XML: it holds characters XML 1.0 cannot carry (or bytes that \
             are not UTF-8). Read it as application/octet-stream or as JSON.",
        )
    })?;
    let caching = Caching { freshness: &found.freshness, settings: &found.settings };
    let mut response = respond(headers, &caching, media, |_| body);
    // Where the event (a link's target, when resolved) sits in `$all`: the
    // web UI opens `$all`, `$ce-` and `$et-` at it. Immutable, like the
    // event, so caches may keep it with the body.
    let position = HeaderValue::from_str(&feed::format_position(read.event.position));
    response.headers_mut().insert(ES_POSITION, position.expect("hex digits are a valid header value"));
    Ok(response)
}

/// The `$all` position of a single event read.
const ES_POSITION: HeaderName = HeaderName::from_static("es-position");

/// One event's body in the negotiated representation (`None`: see
/// [`feed::event::xml_payload`]).
fn render_event(read: &ReadEvent, urls: &Urls, media: &'static str) -> Option<Vec<u8>> {
    Some(match media {
        ATOM_JSON => feed::json::render_entry(read, urls),
        EVENT_JSON => feed::json::render_event_object(read),
        EVENT_XML => feed::event::xml_event(&read.event)?,
        JSON | OCTET_STREAM => read.event.data.to_vec(),
        TEXT_XML | APPLICATION_XML => feed::event::xml_payload(&read.event)?,
        HTML => feed::html::render_event(read, urls),
        _ => feed::atom::render_entry(read, urls),
    })
}
