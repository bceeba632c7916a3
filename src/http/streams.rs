//! `/streams/{stream}`: appending events, reading pages and single events,
//! and deleting streams.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::ext::ReasonPhrase;
use uuid::Uuid;

use super::base_url::RequestUrls;
use super::caching::{Caching, content_type, header_value, respond};
use super::error::HttpError;
use super::events_body::{self, APPEND_TYPES, BodyKind, read_body};
use super::live::{self, Rendered, Watched};
use super::negotiate::{self, *};
use super::params::{self, Query, ReadQuery, Segments};
use super::{AppState, all};
use crate::feed::{self, Feed, Freshness, PageRequest, PageStart, Urls};
use crate::store::{Append, Direction, ProposedEvent, ReadEvent, StoreError, StreamRead, StreamSettings};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/streams/{stream}", get(head_page).post(append).delete(delete))
        .route("/streams/{stream}/", any(without_trailing_slash))
        .route("/streams/{stream}/incoming/{id}", post(append_incoming))
        .route("/streams/{stream}/{event}", get(event))
        .route("/streams/{stream}/{event}/{count}", get(backward_page))
        .route("/streams/{stream}/{event}/{direction}/{count}", get(directed_page))
}

/// The types a page route offers (the stream route adds the description
/// document and Server-Sent Events).
pub(super) const PAGE_TYPES: &[&str] = &[ATOM_XML, ATOM_JSON, JSON, TEXT_XML, APPLICATION_XML, HTML];

async fn head_page(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    params::stream_name(&stream)?;
    let media = negotiate::choose(&headers, query.format.as_deref(), FEED_TYPES)?;
    if media == STREAM_DESCRIPTION {
        return Ok(description(&urls, &stream));
    }
    if media == EVENT_STREAM {
        return live::server_sent_events(state, urls, stream, &headers, query.from.as_deref()).await;
    }
    let request = PageRequest {
        start: PageStart::Head,
        direction: Direction::Backward,
        count: feed::DEFAULT_PAGE_SIZE,
    };
    read_page(&state, &urls, &stream, request, &query, &headers, media).await
}

/// `/streams/{stream}/{event}/{count}`: v5's short form of a backward page.
async fn backward_page(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream, start, count)): Segments<(String, String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let request = page_request(&stream, &start, "backward", &count)?;
    let media = negotiate::choose(&headers, query.format.as_deref(), PAGE_TYPES)?;
    read_page(&state, &urls, &stream, request, &query, &headers, media).await
}

/// `/streams/{stream}/{event}/{backward|forward}/{count}`.
async fn directed_page(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream, start, direction, count)): Segments<(String, String, String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let request = page_request(&stream, &start, &direction, &count)?;
    let media = negotiate::choose(&headers, query.format.as_deref(), PAGE_TYPES)?;
    read_page(&state, &urls, &stream, request, &query, &headers, media).await
}

/// Parses a page route's segments (`$all` takes positions, not numbers).
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
        _ => {
            return Err(HttpError::not_found(
                "Pages are /{event}/backward/{count} or /{event}/forward/{count}.",
            ));
        }
    };
    let start = if stream == feed::ALL_STREAM { all::page_start(start)? } else { params::page_start(start)? };
    Ok(PageRequest { start, direction, count: params::count(count)? })
}

/// Reads and renders one page of a stream or of `$all`; forward pages
/// honour `ES-LongPoll`.
pub(super) async fn read_page(
    state: &AppState,
    urls: &Urls,
    stream: &str,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    let is_all = stream == feed::ALL_STREAM;
    let read = || async {
        if is_all {
            all::page(state, urls, request, query, headers, media).await
        } else {
            page(state, urls, stream, request, query, headers, media).await
        }
    };
    if request.direction == Direction::Backward {
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
        })
    };
    live::long_poll(state, headers, watched, page, read).await
}

/// Reads and renders one page of a stream.
pub(super) async fn page(
    state: &AppState,
    urls: &Urls,
    stream: &str,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Rendered, HttpError> {
    let read = StreamRead {
        stream: stream.to_owned(),
        from: match request.start {
            PageStart::Head => None,
            PageStart::Number(number) => Some(number),
        },
        direction: request.direction,
        count: request.count,
        resolve_links: params::resolve_link_tos(headers)?,
    };
    let slice = state.store.read_stream(read).await.map_err(read_error)?;
    let settings = slice.view.settings;
    let feed = feed::stream_feed(urls, stream, request, slice);
    Ok(render_feed(headers, urls, feed, &settings, media, query.embed()))
}

/// Renders a feed in the negotiated representation with its cache headers.
pub(super) fn render_feed(
    headers: &HeaderMap,
    urls: &Urls,
    mut feed: Feed,
    settings: &StreamSettings,
    media: &'static str,
    embed: feed::Embed,
) -> Rendered {
    let freshness = feed.freshness.clone();
    let caching = Caching { freshness: &freshness, settings };
    let has_events = !feed.entries.is_empty();
    let response = respond(headers, &caching, media, |etag| {
        if feed.is_head {
            feed.etag = etag.map(str::to_owned);
        }
        match media {
            ATOM_JSON | JSON => feed::json::render_feed(&feed, urls, embed),
            HTML => feed::html::render_feed(&feed, urls),
            _ => feed::atom::render_feed(&feed, urls, embed),
        }
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

/// `GET /streams/{stream}/{event}`: one event, or the last one for `head`.
async fn event(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream, event)): Segments<(String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    params::stream_name(&stream)?;
    if stream == feed::ALL_STREAM {
        return Err(HttpError::not_found("$all is read by pages: /streams/$all/{position}/forward/{count}."));
    }
    let start = params::page_start(&event)?;
    let media = negotiate::choose(&headers, query.format.as_deref(), EVENT_TYPES)?;
    let resolve_links = params::resolve_link_tos(&headers)?;
    single_event(&state, &urls, &stream, start, resolve_links, &headers, media).await
}

/// Reads one event (`PageStart::Head`: the last) and renders it.
pub(super) async fn single_event(
    state: &AppState,
    urls: &Urls,
    stream: &str,
    start: PageStart,
    resolve_links: bool,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    let (freshness, settings, read) = match start {
        PageStart::Head => {
            let read = StreamRead {
                stream: stream.to_owned(),
                from: None,
                direction: Direction::Backward,
                count: 1,
                resolve_links,
            };
            let mut slice = state.store.read_stream(read).await.map_err(read_error)?;
            let version = slice.view.last_number.to_string();
            (Freshness::Live { version }, slice.view.settings, slice.events.pop())
        }
        PageStart::Number(number) => {
            let (view, read) =
                state.store.read_event(stream, number, resolve_links).await.map_err(read_error)?;
            (Freshness::Immutable, view.settings, read)
        }
    };
    let read = read.ok_or_else(|| HttpError::not_found("The event does not exist."))?;
    // A client asking for JSON data gets the bytes it stored; when they are
    // not JSON, the Content-Type says so instead of claiming JSON.
    let media = if media == JSON && !read.event.is_json { OCTET_STREAM } else { media };
    let caching = Caching { freshness: &freshness, settings: &settings };
    Ok(respond(headers, &caching, media, |_| render_event(&read, urls, media)))
}

fn render_event(read: &ReadEvent, urls: &Urls, media: &'static str) -> Vec<u8> {
    match media {
        ATOM_JSON => feed::json::render_entry(read, urls),
        EVENT_JSON => feed::json::render_event_object(read),
        JSON | OCTET_STREAM => read.event.data.to_vec(),
        TEXT_XML | APPLICATION_XML => feed::event::xml_payload(&read.event),
        HTML => feed::html::render_event(read, urls),
        _ => feed::atom::render_entry(read, urls),
    }
}

/// v5's description document, served when a client asks for it by name.
fn description(urls: &Urls, stream: &str) -> Response {
    let stream_url = urls.stream(stream);
    let document = serde_json::json!({
        "title": format!("Description document for '{stream}'"),
        "description": "The description document will be presented when no accept header is present or it was requested",
        "_links": {
            "self": { "href": stream_url, "supportedContentTypes": [STREAM_DESCRIPTION] },
            "stream": { "href": stream_url, "supportedContentTypes": [ATOM_XML, ATOM_JSON] },
        }
    });
    let mut response = Response::new(Body::from(document.to_string()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(STREAM_DESCRIPTION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600, public"));
    headers.insert(header::VARY, HeaderValue::from_static(super::caching::VARY));
    response
}

async fn append(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    params::user_stream(&stream)?;
    append_to(&state, &urls, &stream, &headers, body, None).await
}

/// `POST /streams/{stream}/incoming/{id}`: a single-body append whose event
/// id is in the URL (where the `307` for id-less appends points).
async fn append_incoming(
    State(state): State<AppState>,
    RequestUrls(urls): RequestUrls,
    Segments((stream, id)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    params::user_stream(&stream)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| HttpError::bad_request(format!("'{id}' is not a valid event id")))?;
    append_to(&state, &urls, &stream, &headers, body, Some(id)).await
}

async fn append_to(
    state: &AppState,
    urls: &Urls,
    stream: &str,
    headers: &HeaderMap,
    body: Body,
    incoming_id: Option<Uuid>,
) -> Result<Response, HttpError> {
    let expected = params::expected_version(headers)?;
    let kind = negotiate::content_type(headers)
        .and_then(|media_type| BodyKind::of(&media_type))
        .ok_or_else(|| HttpError::unsupported_media_type(APPEND_TYPES))?;
    let limits = &state.limits;
    let events = match kind {
        BodyKind::Events(format) => {
            if incoming_id.is_some() {
                return Err(HttpError::unsupported_media_type(&[
                    JSON,
                    TEXT_XML,
                    APPLICATION_XML,
                    OCTET_STREAM,
                ])
                .with_detail("An incoming URI takes one event's data, not an events array."));
            }
            let bytes = read_body(body, limits.max_request_bytes).await?;
            events_body::parse_events(format, &bytes)?
        }
        BodyKind::Single(format) => {
            let event_type = params::event_type(headers).ok_or_else(|| {
                HttpError::bad_request(
                    "Must include an event type with the request either in body or as ES-EventType header.",
                )
            })?;
            events_body::validate_event_type(event_type)?;
            let id = match incoming_id {
                Some(id) => id,
                None => match params::event_id(headers)? {
                    Some(id) => id,
                    None => return Ok(redirect_to_incoming(urls, stream)),
                },
            };
            let bytes = read_body(body, limits.max_request_bytes.min(limits.max_event_bytes)).await?;
            vec![events_body::single_event(format, id, event_type, bytes)?]
        }
    };
    check_event_sizes(&events, limits.max_event_bytes)?;
    let outcome = state.store.append(Append { stream: stream.to_owned(), expected, events }).await?;
    let mut response = StatusCode::CREATED.into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&urls.event(stream, outcome.first_number)));
    Ok(response)
}

fn check_event_sizes(events: &[ProposedEvent], max_event_bytes: usize) -> Result<(), HttpError> {
    match events.iter().find(|event| event.size() > max_event_bytes) {
        Some(event) => Err(HttpError::payload_too_large(format!(
            "Event {} has {} bytes of data and metadata; the limit is {max_event_bytes}.",
            event.id,
            event.size()
        ))),
        None => Ok(()),
    }
}

/// v5's answer to a single-body append without an event id: retry at a URI
/// that names a fresh id, so the retry (and any retry of it) is idempotent.
fn redirect_to_incoming(urls: &Urls, stream: &str) -> Response {
    let location = format!("{}/incoming/{}", urls.stream(stream), Uuid::new_v4());
    let mut response = (StatusCode::TEMPORARY_REDIRECT, "Forwarding to idempotent URI\n").into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&location));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// `/streams/{stream}/` → `307` to the same URL without the slash (307, so
/// a POST is repeated as a POST with its body).
async fn without_trailing_slash(RequestUrls(urls): RequestUrls, OriginalUri(uri): OriginalUri) -> Response {
    let path = uri.path().trim_end_matches('/');
    let location = match uri.query() {
        Some(query) => format!("{}{path}?{query}", urls.base()),
        None => format!("{}{path}", urls.base()),
    };
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&location));
    response
}

async fn delete(
    State(state): State<AppState>,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    params::user_stream(&stream)?;
    let expected = params::expected_version(&headers)?;
    let hard = params::hard_delete(&headers)?;
    state.store.delete(&stream, expected, hard).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(ReasonPhrase::from_static(b"Stream deleted"));
    Ok(response)
}
