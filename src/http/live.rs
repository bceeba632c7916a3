//! Live reading: `ES-LongPoll` on forward reads, and Server-Sent Events.
//!
//! Both wait on the store's [`Notifier`](crate::store::Notifier): a watch is
//! taken *before* each read, so an append that lands between the read and
//! the wait wakes the waiter at once. Nothing polls, and an idle waiter
//! costs memory only. Every waiter holds a permit of [`Waiters`]; beyond the
//! configured number the server answers `503` with `Retry-After` instead of
//! running out of memory or file descriptors. Every waiter also watches the
//! shutdown signal and answers (long-poll) or ends (SSE) the moment the
//! server starts shutting down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::AppState;
use super::error::HttpError;
use super::params;
use crate::feed::{self, ALL_STREAM, Embed, Urls};
use crate::store::{AllRead, AppendWatch, Direction, ReadEvent, StoreError, StreamRead};

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

/// Runs `read`; when the request asked for `ES-LongPoll` and the read found
/// nothing (an empty page, a missing stream, or a still-matching ETag),
/// waits for an append and reads again, until the deadline or shutdown,
/// when it answers with what the read gives then.
pub async fn long_poll<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    watched: Watched<'_>,
    read: F,
) -> Result<Response, HttpError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Rendered, HttpError>>,
{
    let Some(seconds) = params::long_poll(headers)? else {
        return read().await.map(|rendered| rendered.response);
    };
    let deadline = Instant::now() + Duration::from_secs(seconds).min(state.limits.max_long_poll);
    let mut shutdown = state.shutdown.clone();
    let mut permit = None;
    loop {
        let mut signal = watched.watch(state);
        let outcome = read().await;
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
        tokio::select! {
            () = signal.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    }
}

/// `GET /streams/{stream}` with `Accept: text/event-stream`: every event
/// appended from the starting point on, as it is appended. Each SSE `id` is
/// the event number (for `$all`, the position), so `EventSource` resumes
/// after the last one it saw by sending `Last-Event-ID`; `?from=N` starts at
/// `N`; otherwise the stream starts with the next append.
pub async fn server_sent_events(
    state: AppState,
    urls: Urls,
    stream: String,
    headers: &HeaderMap,
    from: Option<&str>,
) -> Result<Response, HttpError> {
    let is_all = stream == ALL_STREAM;
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
    let feed = EventFeed { state, urls, stream, next, pending: VecDeque::new(), shutdown, _permit: permit };
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
    urls: Urls,
    stream: String,
    /// The next event number (position, for `$all`) to send.
    next: u64,
    /// Events read but not yet sent.
    pending: VecDeque<Event>,
    shutdown: watch::Receiver<bool>,
    /// Held for the life of the response: an SSE stream is a waiter.
    _permit: OwnedSemaphorePermit,
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
            match self.read().await {
                Ok(true) => continue,
                Ok(false) | Err(StoreError::StreamNotFound) => {}
                Err(StoreError::StreamDeleted) => return None,
                Err(error) => {
                    tracing::warn!(%error, stream = %self.stream, "event stream ended by a read failure");
                    return None;
                }
            }
            tokio::select! {
                () = signal.changed() => {}
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
