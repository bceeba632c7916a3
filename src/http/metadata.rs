//! `/streams/{stream}/metadata`: a stream's metadata document, and the
//! metadata stream `$${stream}` it is kept in, readable as a feed.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use uuid::Uuid;

use super::AppState;
use super::as_of;
use super::auth::{append_checked, authorize_append, authorize_read};
use super::base_url::RequestUrls;
use super::caching::{Caching, header_value, respond};
use super::error::HttpError;
use super::events_body::{EventsFormat, parse_events, read_body};
use super::negotiate::{
    self, APPLICATION_XML, ATOM_JSON, ATOM_XML, EVENT_JSON, EVENT_TYPES, EVENT_XML, EVENTS_JSON, HTML, JSON,
    OCTET_STREAM, PAGE_TYPES, TEXT_XML,
};
use super::pages::{Reader, find_event, page_request, read_error, read_page, render_found};
use super::params::{self, Query, ReadQuery, Segments};
use super::read_errors::ReadRoute;
use crate::feed::{self, Freshness, PageStart, Urls};
use crate::security::Principal;
use crate::store::metadata::{self, METADATA_EVENT_TYPE, metadata_stream};
use crate::store::{Append, ProposedEvent, StoreError, StreamSettings};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/streams/{stream}/metadata", get(read_metadata).post(write_metadata))
        .route("/streams/{stream}/metadata/{event}", get(metadata_event))
        .route("/streams/{stream}/metadata/{event}/{count}", get(backward_page))
        .route("/streams/{stream}/metadata/{event}/{direction}/{count}", get(directed_page))
}

/// What `GET /streams/{s}/metadata` offers: every type of a single event,
/// the document itself (`application/json`) first, so that a read without
/// `Accept` gets it (v5 offers the Atom entry first).
const METADATA_TYPES: &[&str] =
    &[JSON, ATOM_JSON, ATOM_XML, TEXT_XML, APPLICATION_XML, EVENT_JSON, EVENT_XML, OCTET_STREAM, HTML];

/// The stream whose metadata this is, checked.
fn described(stream: &str) -> Result<(), HttpError> {
    params::stream_name(stream)?;
    if stream.starts_with("$$") {
        return Err(HttpError::bad_request("Metadata streams have no metadata of their own."));
    }
    Ok(())
}

/// `GET /streams/{s}/metadata`: the latest metadata event, as a single
/// event of `$${s}` (`application/json`: the document itself).
async fn read_metadata(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        described(&stream)?;
        as_of::refuse_outside_pages(query.as_of.as_deref())?;
        let media = negotiate::choose(&headers, query.format.as_deref(), METADATA_TYPES)?;
        let reader = Reader { state: &state, principal: &principal };
        metadata_event_of(reader, &urls, &stream, PageStart::Head, &headers, media).await
    };
    let route = ReadRoute::Event(METADATA_TYPES);
    read.await.map_err(|error| error.answering_read(&headers, query.format.as_deref(), route))
}

/// `GET /streams/{s}/metadata/{n}` (or `head`): one metadata event.
async fn metadata_event(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream, event)): Segments<(String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        described(&stream)?;
        let start = params::page_start(&event)?;
        as_of::refuse_outside_pages(query.as_of.as_deref())?;
        let media = negotiate::choose(&headers, query.format.as_deref(), EVENT_TYPES)?;
        let reader = Reader { state: &state, principal: &principal };
        metadata_event_of(reader, &urls, &stream, start, &headers, media).await
    };
    let route = ReadRoute::Event(EVENT_TYPES);
    read.await.map_err(|error| error.answering_read(&headers, query.format.as_deref(), route))
}

/// One event of `$${stream}`. As in v5, a stream that exists always has
/// metadata to read: where no event is found, the answer is `200` with
/// what v5's codec writes for "no event" (`{}` in JSON), so clients read an
/// empty document. Only a stream that does not exist is `404`.
async fn metadata_event_of(
    reader: Reader<'_>,
    urls: &Urls,
    stream: &str,
    start: PageStart,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Response, HttpError> {
    let state = reader.state;
    let settings = authorize_read(state, reader.principal, &metadata_stream(stream), None).await?;
    let stream_state = state.store.stream_state(stream).await?;
    if stream_state.as_ref().is_some_and(|stream_state| stream_state.tombstoned) {
        return Err(read_error(StoreError::StreamDeleted));
    }
    let found = match find_event(state, &metadata_stream(stream), start, false).await {
        Ok(mut found) => {
            found.settings.not_public = settings.not_public;
            Some(found)
        }
        Err(StoreError::StreamNotFound) => None,
        Err(error) => return Err(read_error(error)),
    };
    if let Some(found) = &found {
        if let Some(read) = &found.read {
            return render_found(headers, urls, found, read, media);
        }
    }
    if stream_state.is_none() {
        return Err(HttpError::not_found("The stream does not exist."));
    }
    // Metadata may be written at any time: the answer revalidates against
    // the metadata stream's last number.
    let version = found.map_or_else(|| "-1".to_owned(), |found| found.last_number.to_string());
    let freshness = Freshness::Live { version };
    let settings = StreamSettings { not_public: settings.not_public, ..StreamSettings::default() };
    let caching = Caching { freshness: &freshness, settings: &settings };
    Ok(respond(headers, &caching, media, |_| match media {
        HTML => feed::html::render_notice(
            &format!("Metadata of '{stream}'"),
            "No metadata has been written for this stream.",
        ),
        _ => negotiate::no_event(media).as_bytes().to_vec(),
    }))
}

/// `POST /streams/{s}/metadata`: the raw JSON object (id from `ES-EventId`,
/// or generated — v5 would answer 400) or an events array. As in v5, only
/// an `ES-EventType` header other than `$metadata` is refused: the events
/// of an array keep the types they carry (clients that set ACLs post
/// `"eventType": "settings"`), and the last event of `$${s}`, whatever its
/// type, is the stream's metadata. Validated before it is written: a 400
/// names the bad key.
async fn write_metadata(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((stream,)): Segments<(String,)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    described(&stream)?;
    let expected = params::expected_version(&headers)?;
    let access = authorize_append(&state, &principal, &metadata_stream(&stream)).await?;
    let content_type = negotiate::content_type(&headers);
    let bytes = read_body(body, state.limits.max_request_bytes.min(state.limits.max_event_bytes)).await?;
    let wrong_type =
        || HttpError::bad_request("Bad Request. You should not include an event type for metadata.");
    let events = match content_type.as_deref() {
        Some(JSON) => {
            if params::event_type(&headers).is_some_and(|event_type| event_type != METADATA_EVENT_TYPE) {
                return Err(wrong_type());
            }
            let id = params::event_id(&headers)?.unwrap_or_else(Uuid::new_v4);
            vec![ProposedEvent {
                id,
                event_type: METADATA_EVENT_TYPE.to_owned(),
                is_json: true,
                data: bytes,
                metadata_is_json: false,
                metadata: Bytes::new(),
            }]
        }
        Some(EVENTS_JSON) => parse_events(EventsFormat::Json, &bytes)?,
        _ => return Err(HttpError::unsupported_media_type(&[JSON, EVENTS_JSON])),
    };
    for event in &events {
        metadata::parse(&event.data).map_err(|invalid| HttpError::bad_request(invalid.to_string()))?;
    }
    if state.store.stream_state(&stream).await?.is_some_and(|s| s.tombstoned) {
        return Err(StoreError::StreamDeleted.into());
    }
    let meta_stream = metadata_stream(&stream);
    let append = Append { stream: meta_stream.clone(), expected, events, access };
    let outcome = append_checked(&state, &principal, append).await?;
    let mut response = StatusCode::CREATED.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, header_value(&urls.event(&meta_stream, outcome.first_number)));
    Ok(response)
}

/// `/streams/{s}/metadata/{event}/{count}`: a backward page.
async fn backward_page(
    state: State<AppState>,
    principal: Principal,
    urls: RequestUrls,
    Segments((stream, start, count)): Segments<(String, String, String)>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    page(state, principal, urls, (stream, start, "backward".to_owned(), count), query, headers).await
}

/// `/streams/{s}/metadata/{event}/{backward|forward}/{count}`.
async fn directed_page(
    state: State<AppState>,
    principal: Principal,
    urls: RequestUrls,
    Segments(segments): Segments<(String, String, String, String)>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    page(state, principal, urls, segments, query, headers).await
}

/// A page of the metadata stream, like any stream's (long-poll included).
async fn page(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    (stream, start, direction, count): (String, String, String, String),
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let read = async {
        described(&stream)?;
        let meta_stream = metadata_stream(&stream);
        let request = page_request(&meta_stream, &start, &direction, &count)?;
        let media = negotiate::choose(&headers, query.format.as_deref(), PAGE_TYPES)?;
        let reader = Reader { state: &state, principal: &principal };
        read_page(reader, &urls, &meta_stream, request, &query, &headers, media).await
    };
    read.await.map_err(|error| error.answering_read(&headers, query.format.as_deref(), ReadRoute::Page))
}
