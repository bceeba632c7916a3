//! Live reading: `ES-LongPoll` on forward reads, and Server-Sent Events.
//!
//! Both wait on the store's [`Notifier`](crate::store::Notifier): a watch is
//! taken *before* each read, so an append that lands between the read and
//! the wait wakes the waiter at once. Nothing polls, and an idle waiter
//! costs memory only. Every waiter holds a permit of [`Waiters`]; beyond the
//! configured number the server answers `503` with `Retry-After` instead of
//! running out of memory or file descriptors. Every waiter also watches the
//! shutdown signal and answers (long-poll) or ends (SSE) the moment the
//! server starts shutting down. Waiters that one append wakes together and
//! that ask for the same page share one rendering of it ([`SharedRenders`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::AppState;
use super::auth::authorize_read;
use super::error::HttpError;
use super::params;
use crate::feed::{self, ALL_STREAM, Embed, PageRequest, Urls};
use crate::security::Principal;
use crate::store::{AllRead, AppendWatch, Direction, Notifier, ReadEvent, StoreError, StreamRead};

/// How often an idle SSE stream sends a comment, so proxies and load
/// balancers do not close it as idle (most cut idle connections at 30-60 s).
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How many events an SSE stream reads from the store at a time.
const SSE_BATCH: u64 = 100;

/// The cap on concurrent long-poll waiters and SSE streams.
#[derive(Debug, Clone)]
pub struct Waiters {
    permits: Arc<Semaphore>,
}

impl Waiters {
    pub fn new(max_waiters: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_waiters)) }
    }

    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, HttpError> {
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many waiters")
                .with_detail("The server is holding as many long-polls and event streams as it is configured to; try again shortly.")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        })
    }

    /// Waiters holding a permit right now.
    pub fn in_use(&self, max_waiters: usize) -> usize {
        max_waiters.saturating_sub(self.permits.available_permits())
    }
}

/// What a read produced, and whether it carries events (a long-poll keeps
/// waiting while it does not).
#[derive(Debug)]
pub struct Rendered {
    pub response: Response,
    pub has_events: bool,
}

/// What a live reader waits on.
#[derive(Debug, Clone, Copy)]
pub enum Watched<'a> {
    Stream(&'a str),
    All,
}

impl Watched<'_> {
    /// The watch to take before a read, resolved by the next relevant append.
    fn watch(self, state: &AppState) -> AppendWatch {
        state.store.notifier().watch(match self {
            Watched::Stream(stream) => Some(stream),
            Watched::All => None,
        })
    }
}

/// The request's headers, their values copied out of the buffer the
/// connection read them into, when the request long-polls (`ES-LongPoll`);
/// as they are otherwise.
///
/// hyper parses a request's header values as slices of the connection's
/// read buffer, and while any of them is held it cannot reuse that buffer:
/// to watch the connection for its close during the wait, it allocates
/// another (8 KiB) for every waiting connection. With copies (a few hundred
/// bytes), the buffer the request came in is free again for that read. Call
/// it before the handler's first wait, on the handler's only copy of the
/// headers (axum's own request is dropped once extracted).
pub fn detached_if_long_poll(headers: HeaderMap) -> HeaderMap {
    if !headers.contains_key(params::ES_LONG_POLL) {
        return headers;
    }
    let mut copied = HeaderMap::with_capacity(headers.len());
    for (name, value) in &headers {
        // Valid already (hyper parsed it); kept as it was if not.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        copied.append(name.clone(), copy);
    }
    copied
}

/// Runs `read`; when the request asked for `ES-LongPoll` and the read found
/// nothing (an empty page, a missing stream, or a still-matching ETag),
/// waits for an append and reads again, until the deadline or shutdown,
/// when it answers with what the read gives then. `page` names what `read`
/// renders (asked for only when the request long-polls), so that the reads
/// after one wake can share a rendering.
pub async fn long_poll<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    watched: Watched<'_>,
    page: impl FnOnce() -> Option<PageKey>,
    read: F,
) -> Result<Response, HttpError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Rendered, HttpError>>,
{
    let Some(seconds) = params::long_poll(headers)? else {
        return read().await.map(|rendered| rendered.response);
    };
    let page = page();
    let deadline = Instant::now() + Duration::from_secs(seconds).min(state.limits.max_long_poll);
    let mut shutdown = state.shutdown.clone();
    let mut permit = None;
    // The head's commit sequence seen on the last wake by an append.
    let mut woken_at_commit = None;
    loop {
        let mut signal = watched.watch(state);
        let outcome = match (&page, woken_at_commit) {
            // Boxed, as `read`'s future is (see `pages::read_page`).
            (Some(page), Some(seen)) => {
                Box::pin(state.renders.read(page, seen, state.store.notifier(), &read)).await
            }
            _ => read().await,
        };
        let nothing_yet = match &outcome {
            Ok(rendered) => !rendered.has_events,
            Err(error) => error.status == StatusCode::NOT_FOUND,
        };
        if !nothing_yet || *shutdown.borrow() || Instant::now() >= deadline {
            return outcome.map(|rendered| rendered.response);
        }
        // IMPORTANT: the rendered answer is not kept while waiting (ten
        // thousand idle waiters would each hold a page); at the deadline
        // or shutdown the read is simply done again.
        drop(outcome);
        if permit.is_none() {
            permit = Some(state.waiters.admit()?);
        }
        woken_at_commit = None;
        tokio::select! {
            () = signal.changed() => {
                let notifier = state.store.notifier();
                state.metrics.woken(notifier.since_acknowledged());
                woken_at_commit = Some(notifier.commit_seq());
            }
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {
                // Every waiter answers at once now, most with the same
                // page: they share its rendering, as waiters woken by one
                // append do (ten thousand reads and renders would hold
                // the exit up by seconds on a small machine).
                woken_at_commit = Some(state.store.notifier().commit_seq());
            }
        }
    }
}

/// Everything the bytes of a page's answer depend on besides the store:
/// what is read, how it is rendered, the base of its links and the
/// validators the client sent. Two requests with equal keys get the same
/// answer from the same store. Whatever comes to change a page's answer
/// (per-reader access rules, say) must be added here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    pub stream: String,
    pub request: PageRequest,
    pub resolve_links: bool,
    pub media: &'static str,
    pub embed: Embed,
    pub base: String,
    pub if_none_match: Vec<HeaderValue>,
    /// The login of the reader (`None`: anonymous): access is checked per
    /// reader, so only the same reader's waiters share a rendering.
    pub reader: Option<String>,
}

/// Renderings that long-poll waiters woken together share.
///
/// An append to a stream that many readers long-poll wakes them all at
/// once, and they mostly ask for the same page: the first to read it
/// renders it, and the others asking for the same [`PageKey`] take its
/// bytes. A waiter takes a rendering only if its read started once the
/// head had reached the commit the waiter saw on waking (which includes
/// the append that woke it: the notifier moves the head before it wakes
/// anyone), so the rendering holds what a read of its own would. Kept
/// for a wake's worth of time, a few at most, pages with events only.
#[derive(Debug, Default)]
pub struct SharedRenders {
    kept: Mutex<VecDeque<SharedRender>>,
}

#[derive(Debug)]
struct SharedRender {
    page: PageKey,
    /// The head's commit sequence when the read behind it started.
    read_at_commit: u64,
    kept_at: Instant,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// How many renderings [`SharedRenders`] keeps at most, how long, and the
/// largest body it keeps (a page of 4,096 large events is not worth
/// holding; its waiters render their own).
const SHARED_RENDERS: usize = 16;
const SHARED_RENDER_LIFETIME: Duration = Duration::from_secs(1);
const MAX_SHARED_BODY: u64 = 1024 * 1024;

impl SharedRenders {
    /// Answers a waiter woken when the head was at `woken_at_commit`: with
    /// a rendering of `page` kept since, or by `read` (keeping what it
    /// renders when it holds events).
    async fn read<F, Fut>(
        &self,
        page: &PageKey,
        woken_at_commit: u64,
        notifier: &Notifier,
        read: &F,
    ) -> Result<Rendered, HttpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Rendered, HttpError>>,
    {
        if let Some(response) = self.find(page, woken_at_commit) {
            return Ok(Rendered { response, has_events: true });
        }
        let read_at_commit = notifier.commit_seq();
        let rendered = read().await?;
        if !rendered.has_events {
            return Ok(rendered);
        }
        let response = self.keep(page, read_at_commit, rendered.response).await;
        Ok(Rendered { response, has_events: true })
    }

    fn find(&self, page: &PageKey, woken_at_commit: u64) -> Option<Response> {
        let kept = self.lock();
        let shared = kept
            .iter()
            .rev()
            .find(|shared| shared.read_at_commit >= woken_at_commit && shared.page == *page)?;
        let mut response = Response::new(Body::from(shared.body.clone()));
        *response.status_mut() = shared.status;
        *response.headers_mut() = shared.headers.clone();
        Some(response)
    }

    /// Keeps a copy of `response` (when its body is small and whole) and
    /// gives it back.
    async fn keep(&self, page: &PageKey, read_at_commit: u64, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        if body.size_hint().exact().is_none_or(|size| size > MAX_SHARED_BODY) {
            return Response::from_parts(parts, body);
        }
        // A whole body of known size: collecting it does not wait.
        let Ok(bytes) = axum::body::to_bytes(body, MAX_SHARED_BODY as usize).await else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response();
        };
        {
            let mut kept = self.lock();
            kept.retain(|shared| shared.kept_at.elapsed() < SHARED_RENDER_LIFETIME && shared.page != *page);
            if kept.len() >= SHARED_RENDERS {
                kept.pop_front();
            }
            kept.push_back(SharedRender {
                page: page.clone(),
                read_at_commit,
                kept_at: Instant::now(),
                status: parts.status,
                headers: parts.headers.clone(),
                body: bytes.clone(),
            });
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SharedRender>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `GET /streams/{stream}` with `Accept: text/event-stream`: every event
/// appended from the starting point on, as it is appended. Each SSE `id` is
/// the event number (for `$all`, the position), so `EventSource` resumes
/// after the last one it saw by sending `Last-Event-ID`; `?from=N` starts at
/// `N`; otherwise the stream starts with the next append.
pub async fn server_sent_events(
    state: AppState,
    principal: Principal,
    urls: Urls,
    stream: String,
    headers: &HeaderMap,
    from: Option<&str>,
) -> Result<Response, HttpError> {
    let is_all = stream == ALL_STREAM;
    let settings = if is_all { None } else { state.store.stream_state(&stream).await?.map(|s| s.settings) };
    authorize_read(&state, &principal, &stream, settings).await?;
    let parse = |text: &str| -> Option<u64> {
        let text = text.trim();
        if is_all { feed::parse_position(text).or_else(|| text.parse().ok()) } else { text.parse().ok() }
    };
    let start = match (headers.get("last-event-id").and_then(|v| v.to_str().ok()), from) {
        (Some(last_seen), _) => Some(
            parse(last_seen)
                .ok_or_else(|| HttpError::bad_request("Last-Event-ID header in wrong format."))?
                .saturating_add(1),
        ),
        (None, Some(from)) => Some(
            parse(from)
                .ok_or_else(|| HttpError::bad_request(format!("'{from}' is not valid event number")))?,
        ),
        (None, None) => None,
    };
    let next = match start {
        Some(next) => next,
        None if is_all => state.store.notifier().next_position(),
        None => match state.store.stream_state(&stream).await? {
            Some(stream_state) if stream_state.tombstoned => return Err(StoreError::StreamDeleted.into()),
            Some(stream_state) => stream_state.next_number,
            None => 0,
        },
    };
    let permit = state.waiters.admit()?;
    let shutdown = state.shutdown.clone();
    let open = state.metrics.sse_opened();
    let feed = EventFeed {
        state,
        principal,
        denied: false,
        urls,
        stream,
        next,
        pending: VecDeque::new(),
        shutdown,
        _open: open,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(feed, EventFeed::next_event);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tell nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The state of one SSE response.
struct EventFeed {
    state: AppState,
    /// Whose access every read checks: a stream whose `$acl` stops
    /// allowing the reader ends.
    principal: Principal,
    /// The reader lost the right to read the stream: the response ends.
    denied: bool,
    urls: Urls,
    stream: String,
    /// The next event number (position, for `$all`) to send.
    next: u64,
    /// Events read but not yet sent.
    pending: VecDeque<Event>,
    shutdown: watch::Receiver<bool>,
    /// Held for the life of the response: an SSE stream is a waiter.
    _permit: OwnedSemaphorePermit,
    /// Counts the stream in `/metrics` for the life of the response.
    _open: super::metrics::OpenStream,
}

impl EventFeed {
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            let watched =
                if self.stream == ALL_STREAM { Watched::All } else { Watched::Stream(&self.stream) };
            let mut signal = watched.watch(&self.state);
            let read = self.read().await;
            if self.denied {
                return None;
            }
            match read {
                Ok(true) => continue,
                Ok(false) | Err(StoreError::StreamNotFound) => {}
                Err(StoreError::StreamDeleted) => return None,
                Err(error) => {
                    tracing::warn!(%error, stream = %self.stream, "event stream ended by a read failure");
                    return None;
                }
            }
            tokio::select! {
                () = signal.changed() => {
                    self.state.metrics.woken(self.state.store.notifier().since_acknowledged());
                }
                _ = self.shutdown.wait_for(|stopping| *stopping) => return None,
            }
        }
    }

    /// Reads the next batch into `pending`; `true` if it found events.
    async fn read(&mut self) -> Result<bool, StoreError> {
        let store = &self.state.store;
        if self.stream == ALL_STREAM {
            let read = AllRead { from: Some(self.next), direction: Direction::Forward, count: SSE_BATCH };
            let slice = store.read_all(read).await?;
            if let Some((_, highest)) = slice.scanned {
                self.next = highest + 1;
            }
            for event in slice.events {
                let id = feed::format_position(event.position);
                self.push(id, &ReadEvent { event, link: None });
            }
        } else {
            let read = StreamRead {
                stream: self.stream.clone(),
                from: Some(self.next),
                direction: Direction::Forward,
                count: SSE_BATCH,
                resolve_links: true,
            };
            let slice = store.read_stream(read).await?;
            let settings = Some(slice.view.settings);
            if authorize_read(&self.state, &self.principal, &self.stream, settings).await.is_err() {
                self.denied = true;
                return Ok(false);
            }
            // Skip over events that retention hides, so the stream moves on.
            self.next = self.next.max(slice.view.first_visible);
            for read in &slice.events {
                let number = read.original().number;
                self.next = number + 1;
                self.push(number.to_string(), read);
            }
        }
        Ok(!self.pending.is_empty())
    }

    fn push(&mut self, id: String, read: &ReadEvent) {
        let data = feed::json::render_entry_line(read, &self.urls, Embed::Body);
        self.pending.push_back(Event::default().id(id).data(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::PageStart;
    use crate::store::Head;

    #[test]
    fn a_long_poll_keeps_copies_of_its_headers_and_other_reads_the_headers() {
        // As hyper parses them: slices of the buffer the request was read into.
        let buffer = Bytes::from_static(b"15 W/\"a\" W/\"b\" Basic YWRtaW46Y2hhbmdlaXQ=");
        let value = |range: std::ops::Range<usize>| {
            HeaderValue::from_maybe_shared(buffer.slice(range)).expect("a header value")
        };
        let mut headers = HeaderMap::new();
        headers.insert(params::ES_LONG_POLL, value(0..2));
        headers.append(header::IF_NONE_MATCH, value(3..8));
        headers.append(header::IF_NONE_MATCH, value(9..14));
        let mut credentials = value(15..41);
        credentials.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, credentials);
        let in_buffer = |value: &HeaderValue| buffer.as_ptr_range().contains(&value.as_bytes().as_ptr());

        let copied = detached_if_long_poll(headers.clone());
        assert_eq!(copied, headers);
        assert!(copied.values().all(|value| !in_buffer(value)), "{copied:?}");
        assert!(copied[header::AUTHORIZATION].is_sensitive());
        let tags: Vec<_> = copied.get_all(header::IF_NONE_MATCH).iter().collect();
        assert_eq!(tags, ["W/\"a\"", "W/\"b\""]);

        headers.remove(params::ES_LONG_POLL);
        let read = detached_if_long_poll(headers);
        assert!(read.values().all(in_buffer), "a read that does not wait keeps the parsed values");
    }

    fn page(stream: &str) -> PageKey {
        PageKey {
            stream: stream.to_owned(),
            request: PageRequest { start: PageStart::Number(1), direction: Direction::Forward, count: 20 },
            resolve_links: true,
            media: "application/atom+xml",
            embed: Embed::None,
            base: "http://h".to_owned(),
            if_none_match: Vec::new(),
            reader: None,
        }
    }

    fn rendered(body: &'static str) -> Result<Rendered, HttpError> {
        let mut response = Response::new(Body::from(body));
        response.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"1;x\""));
        Ok(Rendered { response, has_events: true })
    }

    async fn body_of(rendered: Rendered) -> (String, HeaderMap) {
        let (parts, body) = rendered.response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (String::from_utf8(bytes.to_vec()).unwrap(), parts.headers)
    }

    #[tokio::test]
    async fn a_waiter_shares_only_a_rendering_read_since_its_wake_of_the_same_page() {
        let renders = SharedRenders::default();
        let notifier = Notifier::new(Head { next_position: 1, commit_seq: 5 });
        let first = renders.read(&page("s"), 5, &notifier, &|| async { rendered("first") }).await.unwrap();
        assert_eq!(body_of(first).await.0, "first");

        // Woken by the same commit, same page: the same bytes and headers.
        let shared = renders.read(&page("s"), 5, &notifier, &|| async { rendered("again") }).await.unwrap();
        let (body, headers) = body_of(shared).await;
        assert_eq!(body, "first");
        assert_eq!(headers[header::ETAG], "\"1;x\"");

        // Another page, or a wake by a later commit: a read of its own.
        let other = renders.read(&page("t"), 5, &notifier, &|| async { rendered("other") }).await.unwrap();
        assert_eq!(body_of(other).await.0, "other");
        let later = renders.read(&page("s"), 6, &notifier, &|| async { rendered("later") }).await.unwrap();
        assert_eq!(body_of(later).await.0, "later");
    }

    #[tokio::test]
    async fn pages_without_events_are_not_shared() {
        let renders = SharedRenders::default();
        let notifier = Notifier::new(Head { next_position: 1, commit_seq: 5 });
        let empty =
            || async { Ok(Rendered { response: Response::new(Body::from("empty")), has_events: false }) };
        assert!(!renders.read(&page("s"), 5, &notifier, &empty).await.unwrap().has_events);
        let full = renders.read(&page("s"), 5, &notifier, &|| async { rendered("full") }).await.unwrap();
        assert_eq!(body_of(full).await.0, "full");
    }
}
