//! `/streams/{stream}` (and `$all`): the routes that append events, read
//! pages and single events (through `pages`, the read pipeline shared with
//! the metadata routes), delete streams, and redirect.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::ext::ReasonPhrase;
use uuid::Uuid;

use super::AppState;
use super::as_of;
use super::auth::{append_checked, authorize, authorize_append};
use super::base_url::RequestUrls;
use super::caching::{content_type, header_value};
use super::error::HttpError;
use super::events_body::{self, APPEND_TYPES, BodyKind, read_body};
use super::live;
use super::negotiate::{self, *};
use super::pages::{Reader, page_request, read_page, single_event};
use super::params::{self, Query, ReadQuery, Segments};
use super::read_errors::ReadRoute;
use super::ui;
use crate::feed::{self, PageRequest, PageStart, Urls};
use crate::security::Principal;
use crate::security::acl::{Access, DefaultAcls, SETTINGS_STREAM};
use crate::store::{AccessBasis, Append, Direction, ProposedEvent};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/streams/{stream}", get(head_page).post(append).delete(delete))
        .route("/streams/{stream}/", any(without_trailing_slash))
        .route("/streams/{stream}/incoming/{id}", post(append_incoming))
        .route("/streams/{stream}/{event}", get(event))
        .route("/streams/{stream}/{event}/{count}", get(backward_page))
        .route("/streams/{stream}/{event}/{direction}/{count}", get(directed_page))
}

/// `GET /streams/{stream}`: the head page (or Server-Sent Events).
async fn head_page(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let headers = live::detached_if_long_poll(headers);
    let read = async {
        params::stream_name(&stream)?;
        let media = negotiate::choose(&headers, query.format.as_deref(), FEED_TYPES)?;
        if opens_ui(media, &query) {
            return Ok(ui::entry_page_for(&headers));
        }
        if media == EVENT_STREAM {
            as_of::refuse_outside_pages(query.as_of.as_deref())?;
            let from = query.from.as_deref();
            let (state, principal, urls) = (state.clone(), principal.clone(), urls.clone());
            return live::server_sent_events(state, principal, urls, stream.clone(), &headers, from).await;
        }
        let request = PageRequest {
            start: PageStart::Head,
            direction: Direction::Backward,
            count: feed::DEFAULT_PAGE_SIZE,
        };
        let reader = Reader { state: &state, principal: &principal };
        stream_page(reader, &urls, &stream, request, &query, &headers, media).await
    };
    read.await.map_err(|error| error.answering_read(&headers, query.format.as_deref(), ReadRoute::Page))
}

/// `/streams/{stream}/{event}/{count}`: v5's short form of a backward page.
async fn backward_page(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, start, count)): Segments<(String, String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let reader = Reader { state: &state, principal: &principal };
    page(reader, &urls, &stream, [&start, "backward", &count], &query, &headers).await
}

/// `/streams/{stream}/{event}/{backward|forward}/{count}`.
async fn directed_page(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, start, direction, count)): Segments<(String, String, String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let headers = live::detached_if_long_poll(headers);
    let reader = Reader { state: &state, principal: &principal };
    page(reader, &urls, &stream, [&start, &direction, &count], &query, &headers).await
}

/// A page of a stream or of `$all`, named by its path segments: start,
/// direction and count.
async fn page(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    [start, direction, count]: [&str; 3],
    query: &ReadQuery,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        let request = page_request(stream, start, direction, count)?;
        let media = negotiate::choose(headers, query.format.as_deref(), PAGE_TYPES)?;
        if opens_ui(media, query) {
            return Ok(ui::entry_page_for(headers));
        }
        stream_page(reader, urls, stream, request, query, headers, media).await
    };
    read.await.map_err(|error| error.answering_read(headers, query.format.as_deref(), ReadRoute::Page))
}

/// Reads and renders a page of a stream or of `$all`, or, for a backward
/// page of a stream asked for as v5's description document, the document
/// in its place (v5 describes no forward page and not `$all`: there that
/// type is the JSON feed).
async fn stream_page(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    let describes = request.direction == Direction::Backward && stream != feed::ALL_STREAM;
    if media == STREAM_DESCRIPTION && describes {
        return Ok(description(urls, stream));
    }
    read_page(reader, urls, stream, request, query, headers, media).await
}

/// `GET /streams/{stream}/{event}`: one event, or the last one for `head`.
async fn event(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, event)): Segments<(String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        params::stream_name(&stream)?;
        if stream == feed::ALL_STREAM {
            return Err(HttpError::not_found(
                "$all is read by pages: /streams/$all/{position}/forward/{count}.",
            ));
        }
        let start = params::page_start(&event)?;
        as_of::refuse_outside_pages(query.as_of.as_deref())?;
        let media = negotiate::choose(&headers, query.format.as_deref(), EVENT_TYPES)?;
        if opens_ui(media, &query) {
            return Ok(ui::entry_page_for(&headers));
        }
        let resolve_links = params::resolve_link_tos(&headers)?;
        let reader = Reader { state: &state, principal: &principal };
        single_event(reader, &urls, &stream, start, resolve_links, &headers, media).await
    };
    let route = ReadRoute::Event(EVENT_TYPES);
    read.await.map_err(|error| error.answering_read(&headers, query.format.as_deref(), route))
}

/// Whether a browser asked for a page or an event: it gets the web UI
/// opened on it (feeds' links then work in a browser). `?format=html`
/// still gets the server's own HTML table, which needs no script.
fn opens_ui(media: &str, query: &ReadQuery) -> bool {
    media == HTML && query.format.is_none()
}

/// v5's description document, served when a client asks for it by name
/// (v5 also serves it, with a `406`, for `*/*`; eventfeed serves the feed).
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
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    if stream == SETTINGS_STREAM {
        // The one system stream written directly: the access defaults.
        params::stream_name(&stream)?;
    } else {
        params::user_stream(&stream)?;
    }
    let access = authorize_append(&state, &principal, &stream).await?;
    let request = AppendRequest { principal: &principal, access, incoming_id: None };
    append_to(&state, request, &urls, &stream, &headers, body).await
}

/// `POST /streams/{stream}/incoming/{id}`: a single-body append whose event
/// id is in the URL (where the `307` for id-less appends points).
async fn append_incoming(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, id)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    params::user_stream(&stream)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| HttpError::bad_request(format!("'{id}' is not a valid event id")))?;
    let access = authorize_append(&state, &principal, &stream).await?;
    let request = AppendRequest { principal: &principal, access, incoming_id: Some(id) };
    append_to(&state, request, &urls, &stream, &headers, body).await
}

/// Who appends, with what rules checked, and the event id of an incoming
/// URI.
struct AppendRequest<'a> {
    principal: &'a Principal,
    access: Option<AccessBasis>,
    incoming_id: Option<Uuid>,
}

async fn append_to(
    state: &AppState,
    request: AppendRequest<'_>,
    urls: &Urls,
    stream: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let AppendRequest { principal, access, incoming_id } = request;
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
    let settings = stream == SETTINGS_STREAM;
    if settings {
        for event in &events {
            DefaultAcls::from_settings(&event.data)
                .map_err(|problem| HttpError::bad_request(format!("Invalid settings: {problem}")))?;
        }
    }
    let append = Append { stream: stream.to_owned(), expected, events, access };
    let outcome = append_checked(state, principal, append).await?;
    if settings {
        state.security.reload_defaults().await;
    }
    let mut response = StatusCode::CREATED.into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&urls.event(stream, outcome.first_number)));
    Ok(response)
}

pub(super) fn check_event_sizes(events: &[ProposedEvent], max_event_bytes: usize) -> Result<(), HttpError> {
    match events.iter().find(|event| event.size() > max_event_bytes) {
        Some(event) => Err(HttpError::payload_too_large(format!(
            "Event {} has {} bytes of data and metadata; the limit is {max_event_bytes}, \
             set by --max-event-bytes (EVENTFEED_MAX_EVENT_BYTES).",
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
    // v5's body first; then what to do, for people (no v5 client reads it).
    let body = format!(
        "Forwarding to idempotent URI\nRepeat this POST, with the same body and headers, at {location} \
         (curl: -L). That URL names a new event id, so retrying it never writes the event twice.\n"
    );
    let mut response = (StatusCode::TEMPORARY_REDIRECT, body).into_response();
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
    principal: Principal,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    params::user_stream(&stream)?;
    let expected = params::expected_version(&headers)?;
    let hard = params::hard_delete(&headers)?;
    authorize(&state, &principal, Access::Delete, &stream).await?;
    state.store.delete(&stream, expected, hard).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(ReasonPhrase::from_static(b"Stream deleted"));
    Ok(response)
}
