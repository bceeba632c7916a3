//! The background task of one group: everything that needs the store. It
//! reads the source ahead of the consumers, expires message timeouts,
//! appends parked messages, replays parked ones, and writes checkpoints.
//!
//! It never polls. It sleeps until one of: an append to the source (a
//! [`AppendWatch`](crate::store::AppendWatch), taken before the first read so
//! no append is missed), a kick from a request that changed the state, the
//! next deadline the state machine names, or the stop signal.
//!
//! IMPORTANT: the state lock is never held across an `.await`: each step
//! takes what it needs under the lock, does its I/O unlocked, and applies
//! the result under the lock again (reads carry an epoch so a stale one is
//! discarded).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::names::{is_bookkeeping, parked_stream};
use super::persist::{self, pin_of};
use super::state::{Message, Origin, ReadRequest, SourceStatus};
use super::{Group, Source, StopMode};
use crate::store::{AllRead, Direction, Store, StoreError, StreamRead, StreamView};

/// The first wait after a store failure; doubled up to [`MAX_BACKOFF`].
/// Short, because most failures are a busy disk or a brief restart.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between attempts while the store keeps failing: a
/// recovered store is noticed within seconds, a dead one is not hammered.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(group: Arc<Group>, store: Arc<dyn Store>) {
    let mut stop = group.stop.subscribe();
    let mut source_watch = store.notifier().watch(match &group.source {
        Source::Stream(name) => Some(name.as_str()),
        Source::All => None,
    });
    let mut driver = Driver { group: &group, store: &*store, source_changed: true, backoff: None };
    loop {
        if *stop.borrow() != StopMode::Run {
            break;
        }
        let busy = match driver.step().await {
            Ok(busy) => {
                driver.backoff = None;
                busy
            }
            Err(error) => {
                let backoff = driver.backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                tracing::warn!(stream = %group.stream, group = %group.name, %error, ?backoff, "subscription store operation failed; retrying");
                driver.backoff = Some(backoff);
                false
            }
        };
        if busy {
            tokio::task::yield_now().await;
            continue;
        }
        let (wake_at, wants_source) = {
            let state = group.lock();
            let wants_source =
                state.read_request().is_some() && state.is_caught_up() && !driver.source_changed;
            (state.next_wake(), wants_source)
        };
        let wake_at = match driver.backoff {
            Some(backoff) => Some(Instant::now() + backoff),
            None => wake_at,
        };
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = group.kick.notified(), if driver.backoff.is_none() => {}
            () = source_watch.changed(), if wants_source && driver.backoff.is_none() => {
                driver.source_changed = true;
            }
            () = sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {}
        }
    }
    if *stop.borrow() == StopMode::Shutdown {
        // A clean stop leaves a checkpoint as fresh as possible, so a
        // restart redelivers only what was in flight.
        if let Err(error) = driver.park().await {
            tracing::warn!(stream = %group.stream, group = %group.name, %error, "could not park messages at shutdown");
        }
        if let Err(error) = driver.checkpoint(true).await {
            tracing::warn!(stream = %group.stream, group = %group.name, %error, "could not write the final checkpoint");
        }
    }
}

struct Driver<'a> {
    group: &'a Group,
    store: &'a dyn Store,
    /// The source may have new events since the last read reached its end.
    source_changed: bool,
    /// Set after a store failure: wait this long before trying again.
    backoff: Option<Duration>,
}

impl Driver<'_> {
    /// One round of work; `true` when there is more to do at once.
    async fn step(&mut self) -> Result<bool, StoreError> {
        let now = Instant::now();
        if self.group.lock().expire(now) {
            self.group.bump();
        }
        self.park().await?;
        let replaying = self.replay().await?;
        let reading = self.read().await?;
        self.checkpoint(false).await?;
        self.truncate_parked().await?;
        Ok(replaying || reading)
    }

    /// Reads the next batch of the source if there is room and reason to:
    /// the group is behind, the source changed, or a request asked for a
    /// fresh read (which is answered even when nothing can be read).
    async fn read(&mut self) -> Result<bool, StoreError> {
        let (request, resolve_links, caught_up, (tickets, asked)) = {
            let state = self.group.lock();
            (
                state.read_request(),
                state.settings.resolve_link_tos,
                state.is_caught_up(),
                state.read_tickets(),
            )
        };
        let Some(request) = request else {
            self.serve(tickets);
            return Ok(false);
        };
        if caught_up && !self.source_changed && !asked {
            return Ok(false);
        }
        self.source_changed = false;
        let result = self.read_source(request, resolve_links).await;
        self.serve(tickets);
        result
    }

    /// Tells requests waiting for a fresh read that one completed.
    fn serve(&self, tickets: u64) {
        if self.group.lock().served(tickets) {
            self.group.bump();
        }
    }

    async fn read_source(&mut self, request: ReadRequest, resolve_links: bool) -> Result<bool, StoreError> {
        let read = match &self.group.source {
            Source::Stream(name) => read_stream(self.store, name, request, resolve_links).await,
            Source::All => read_all(self.store, request).await,
        };
        let read = match read {
            Ok(read) => read,
            Err(StoreError::StreamDeleted) => {
                self.group.lock().set_source_status(SourceStatus::Deleted);
                return Ok(false);
            }
            Err(error) => {
                self.source_changed = true;
                self.group.lock().set_source_status(SourceStatus::Failing(error.to_string()));
                return Err(error);
            }
        };
        let delivered_something = !read.messages.is_empty();
        let applied = self.group.lock().apply_read(request, read.messages, read.next_read, read.caught_up);
        if applied && delivered_something {
            self.group.bump();
        }
        Ok(!read.caught_up || !applied)
    }

    /// Appends messages waiting to be parked; they are done once durable.
    async fn park(&mut self) -> Result<(), StoreError> {
        let requests = self.group.lock().take_parking();
        if requests.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = requests.iter().map(|r| r.message.id).collect();
        match persist::park(self.store, &self.group.stream, &self.group.name, &requests).await {
            Ok(()) => {
                self.group.lock().parked(&ids, Instant::now());
                Ok(())
            }
            Err(error) => {
                self.group.lock().park_failed(&ids);
                Err(error)
            }
        }
    }

    /// Hands parked messages back, a batch at a time.
    async fn replay(&mut self) -> Result<bool, StoreError> {
        let (request, resolve_links) = {
            let state = self.group.lock();
            (state.replay_read(), state.settings.resolve_link_tos)
        };
        let Some((from, count)) = request else { return Ok(false) };
        let read = StreamRead {
            stream: parked_stream(&self.group.stream, &self.group.name),
            from: Some(from),
            direction: Direction::Forward,
            count: count as u64,
            resolve_links: false,
        };
        let (parked, next) = match self.store.read_stream(read).await {
            Ok(slice) => {
                let next = next_number(from, count as u64, &slice.view);
                (slice.events, next)
            }
            Err(StoreError::StreamNotFound) => (Vec::new(), u64::MAX),
            Err(error) => return Err(error),
        };
        let is_all = matches!(self.group.source, Source::All);
        let mut messages = Vec::with_capacity(parked.len());
        for entry in &parked {
            if let Some(message) = persist::resolve_parked(self.store, entry, resolve_links, is_all).await? {
                messages.push(message);
            }
        }
        let handed_back = !messages.is_empty();
        self.group.lock().apply_replay(from, messages, next);
        if handed_back {
            self.group.bump();
        }
        Ok(self.group.lock().replay_read().is_some())
    }

    /// Writes a checkpoint when the rules call for one (or `force`).
    async fn checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        let snapshot = {
            let mut state = self.group.lock();
            let now = Instant::now();
            if force || state.wants_checkpoint(now) { state.begin_checkpoint(now) } else { None }
        };
        let Some(checkpoint) = snapshot else { return Ok(()) };
        let is_all = matches!(self.group.source, Source::All);
        let written =
            persist::write_checkpoint(self.store, &self.group.stream, &self.group.name, &checkpoint, is_all)
                .await;
        let result = match written {
            Ok(()) => {
                self.group.lock().end_checkpoint(Some(checkpoint));
                Ok(())
            }
            Err(error) => {
                self.group.lock().end_checkpoint(None);
                Err(error)
            }
        };
        // A durable checkpoint may reopen the gate for waiting consumers.
        self.group.bump();
        result
    }

    /// Moves the parked stream's `$tb` past messages replayed and done.
    async fn truncate_parked(&mut self) -> Result<(), StoreError> {
        let Some(before) = self.group.lock().truncate_target() else { return Ok(()) };
        let parked = parked_stream(&self.group.stream, &self.group.name);
        persist::set_metadata(self.store, &parked, serde_json::json!({ "$tb": before })).await?;
        self.group.lock().truncated(before);
        Ok(())
    }
}

/// What one read of the source found.
struct SourceRead {
    messages: Vec<Message>,
    /// Where the next read starts: past everything this one examined.
    next_read: u64,
    /// Nothing more in the source right now.
    caught_up: bool,
}

/// Where a forward read of `count` numbers from `from` leaves off, given
/// the stream's view: past the range it covered, or at the first visible
/// event when the whole range was hidden (retention, soft delete).
fn next_number(from: u64, count: u64, view: &StreamView) -> u64 {
    let last = view.last_number;
    let covered_to = from.saturating_add(count.max(1) - 1);
    if from > last {
        from
    } else if covered_to < view.first_visible {
        view.first_visible
    } else {
        covered_to.min(last) + 1
    }
}

async fn read_stream(
    store: &dyn Store,
    stream: &str,
    request: ReadRequest,
    resolve_links: bool,
) -> Result<SourceRead, StoreError> {
    let read = StreamRead {
        stream: stream.to_owned(),
        from: Some(request.from),
        direction: Direction::Forward,
        count: request.count as u64,
        resolve_links,
    };
    let slice = match store.read_stream(read).await {
        Ok(slice) => slice,
        // Not written yet (or soft-deleted): wait for the first append.
        Err(StoreError::StreamNotFound) => {
            return Ok(SourceRead { messages: Vec::new(), next_read: request.from, caught_up: true });
        }
        Err(error) => return Err(error),
    };
    let next_read = next_number(request.from, request.count as u64, &slice.view);
    let messages = slice
        .events
        .into_iter()
        .map(|read| {
            let original = read.original();
            Message {
                id: original.id,
                position: original.number,
                pin: pin_of(&read),
                origin: Origin::Source,
                event: read,
            }
        })
        .collect();
    Ok(SourceRead { messages, next_read, caught_up: next_read > slice.view.last_number })
}

async fn read_all(store: &dyn Store, request: ReadRequest) -> Result<SourceRead, StoreError> {
    let read =
        AllRead { from: Some(request.from), direction: Direction::Forward, count: request.count as u64 };
    let slice = store.read_all(read).await?;
    // Nothing examined means nothing is stored from `from` to the head.
    let next_read = match slice.scanned {
        Some((_, highest)) => highest + 1,
        None => slice.next_position,
    }
    .max(request.from);
    let messages = slice
        .events
        .into_iter()
        .filter(|event| !is_bookkeeping(&event.stream))
        .map(|event| Message {
            id: event.id,
            position: event.position,
            pin: event.stream.to_string(),
            origin: Origin::Source,
            event: crate::store::ReadEvent { event, link: None },
        })
        .collect();
    Ok(SourceRead { messages, next_read, caught_up: next_read >= slice.next_position })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StreamSettings;

    fn view(last_number: u64, first_visible: u64) -> StreamView {
        StreamView { last_number, first_visible, settings: StreamSettings::default() }
    }

    #[test]
    fn reads_advance_past_what_they_covered_and_jump_hidden_ranges() {
        assert_eq!(next_number(0, 20, &view(99, 0)), 20);
        assert_eq!(next_number(90, 20, &view(99, 0)), 100);
        assert_eq!(next_number(100, 20, &view(99, 0)), 100, "past the end: stay");
        assert_eq!(next_number(0, 20, &view(99, 50)), 50, "a hidden range is jumped");
        assert_eq!(next_number(40, 20, &view(99, 50)), 60);
    }
}
