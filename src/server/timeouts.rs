//! The read timeouts of a connection and of a request body: what keeps a
//! client that sends slowly, or not at all, from holding a socket for ever.
//!
//! They bound *reading requests*, never answering them: a long-poll or a
//! Server-Sent Events stream may be silent for minutes, and is. As far as
//! reading goes, a connection is always in one of three phases ([`Phase`]):
//!
//! - **idle**, no request being served and nothing of the next one read:
//!   closed after the idle timeout;
//! - **reading a head**, from its first byte (a new connection: from its
//!   accept) until hyper has parsed it: closed, without an answer, after
//!   the header timeout, however the bytes trickle in;
//! - **serving a request**, from its parsed head until its response body is
//!   done: no timeout on the connection. The request's body, if the handler
//!   reads one, has its own ([`TimedBody`]): a pause longer than the body
//!   timeout, or an average rate below the minimum, ends it, and the request
//!   is answered `408` and its connection closed.
//!
//! [`TimedIo`] wraps the socket and keeps the first two; it learns which
//! phase it is in from [`Activity`], which the request service updates.
//! A response the client stops reading (the socket's send buffer stays
//! full) is given the idle timeout too.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long reading a request may take (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's line and headers, from their first byte (a new
    /// connection's first request: from the accept).
    pub header: Duration,
    /// The longest pause in a request body.
    pub body: Duration,
    /// The least average rate of a request body, in bytes a second, after
    /// its first `body`: each byte received extends its allowance by
    /// `1 / body_min_rate` seconds. 0: no minimum.
    pub body_min_rate: u64,
    /// A connection with nothing to do, or whose client has stopped reading
    /// its response.
    pub idle: Duration,
}

/// What a connection's socket and its requests share: whether a request is
/// being served, and whether a body timed out.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests being served: from their parsed head until their response
    /// body is done or dropped. HTTP/1.1 serves one at a time.
    in_flight: AtomicUsize,
    /// Requests begun on this connection: a request can begin and end
    /// between two reads of the socket, which must still restart the idle
    /// clock.
    begun: AtomicU64,
    /// The connection's task, woken when the last request in flight ends:
    /// hyper only reads again when woken, and the idle clock must start.
    reader: AtomicWaker,
    /// Set when the body of the request being served timed out, so that
    /// it is answered `408` whatever its handler made of the error.
    body_timed_out: AtomicBool,
}

impl Activity {
    /// A request's head was parsed: it is being served until the returned
    /// guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.body_timed_out.store(false, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    pub(super) fn serving(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    pub(super) fn body_timed_out(&self) -> bool {
        self.body_timed_out.load(Ordering::Acquire)
    }
}

/// A request being served (see [`Activity::begin`]).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// Where a connection is, as far as reading it goes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    ReadingHead,
    Serving,
}

/// A socket with the connection's read timeouts (see the module doc).
#[derive(Debug)]
pub(super) struct TimedIo<S> {
    stream: S,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    phase: Phase,
    /// [`Activity::begun`] when the phase was last set.
    requests_seen: u64,
    /// When the idle or the header timeout runs out; not polled while a
    /// request is served.
    read_deadline: Pin<Box<Sleep>>,
    /// Created the first time a write has to wait for the client.
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Whether the last write waited: `write_deadline` then runs.
    write_waiting: bool,
}

impl<S> TimedIo<S> {
    /// A socket just accepted: its first request's head is due within the
    /// header timeout.
    pub(super) fn new(stream: S, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            stream,
            activity,
            timeouts,
            phase: Phase::ReadingHead,
            requests_seen: 0,
            read_deadline: Box::pin(tokio::time::sleep(timeouts.header)),
            write_deadline: None,
            write_waiting: false,
        }
    }

    /// Moves to the phase the requests say, starting its clock.
    fn follow_requests(&mut self) {
        let begun = self.activity.begun.load(Ordering::Acquire);
        if begun != self.requests_seen {
            self.requests_seen = begun;
            self.phase = Phase::Serving;
        }
        match (self.phase, self.activity.serving()) {
            (Phase::Serving, false) => {
                self.phase = Phase::Idle;
                self.read_deadline.as_mut().reset(Instant::now() + self.timeouts.idle);
            }
            (Phase::Idle | Phase::ReadingHead, true) => self.phase = Phase::Serving,
            _ => {}
        }
    }

    fn read_timed_out(&self) -> io::Error {
        let what = match self.phase {
            Phase::Idle => "idle connection",
            _ => "request headers not received in time",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Counts the time a write waits for the client to read.
    fn after_write<T>(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.write_waiting = false;
            return written;
        }
        let idle = self.timeouts.idle;
        let deadline = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if !self.write_waiting {
            self.write_waiting = true;
            deadline.as_mut().reset(Instant::now() + idle);
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.activity.reader.register(cx.waker());
        this.follow_requests();
        let timed = this.phase != Phase::Serving;
        // A head trickled a byte at a time is always ready to read: the
        // deadline must be checked before reading too, not only when
        // the socket has nothing.
        if timed && this.read_deadline.is_elapsed() {
            return Poll::Ready(Err(this.read_timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::ReadingHead;
                    this.read_deadline.as_mut().reset(Instant::now() + this.timeouts.header);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if timed && this.read_deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(this.read_timed_out()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    // Not counted as a write: a socket's flush is always ready, and would
    // restart the clock of a write that is still waiting.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body with the body timeout and minimum rate (see the module
/// doc). Its clock starts when the request's head is parsed, whenever the
/// handler starts reading.
#[derive(Debug)]
pub(super) struct TimedBody {
    body: Incoming,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    started: Instant,
    last_progress: Instant,
    received: u64,
    /// Created the first time the body has to wait for the client.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl TimedBody {
    pub(super) fn new(body: Incoming, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            body,
            activity,
            timeouts,
            started: now,
            last_progress: now,
            received: 0,
            deadline: None,
            timed_out: false,
        }
    }
}

/// When a body that started at `started`, last received a byte at
/// `last_progress` and has received `received` bytes in all is too slow:
/// after a pause of the body timeout, or once it has taken the body
/// timeout plus `received / body_min_rate` seconds.
fn body_deadline(timeouts: &Timeouts, started: Instant, last_progress: Instant, received: u64) -> Instant {
    let paused_too_long = last_progress + timeouts.body;
    if timeouts.body_min_rate == 0 {
        return paused_too_long;
    }
    // Milliseconds, in integers: a body never earns more than u64 allows.
    let earned = Duration::from_millis(received.saturating_mul(1000) / timeouts.body_min_rate);
    match started.checked_add(timeouts.body.saturating_add(earned)) {
        Some(too_slow) => paused_too_long.min(too_slow),
        None => paused_too_long,
    }
}

/// The error a too-slow body ends with; the request is answered `408`.
#[derive(Debug)]
pub(super) struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body paused too long or arrived below the minimum rate")
    }
}

impl std::error::Error for BodyTooSlow {}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    this.last_progress = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let due = body_deadline(&this.timeouts, this.started, this.last_progress, this.received);
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if deadline.deadline() != due {
                    deadline.as_mut().reset(due);
                }
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timed_out = true;
                this.activity.body_timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(body_secs: u64, body_min_rate: u64) -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(body_secs),
            body_min_rate,
            idle: Duration::from_secs(75),
        }
    }

    #[test]
    fn a_body_may_pause_for_the_body_timeout() {
        let start = Instant::now();
        let limits = timeouts(10, 0);
        assert_eq!(body_deadline(&limits, start, start, 0), start + Duration::from_secs(10));
        let later = start + Duration::from_secs(7);
        assert_eq!(body_deadline(&limits, start, later, 1 << 30), later + Duration::from_secs(10));
    }

    #[test]
    fn each_byte_earns_time_at_the_minimum_rate() {
        let start = Instant::now();
        let limits = timeouts(10, 1000);
        // 5,000 bytes have earned 5 s beyond the first 10.
        let now = start + Duration::from_secs(14);
        assert_eq!(body_deadline(&limits, start, now, 5000), start + Duration::from_secs(15));
        // Far ahead of the rate, a pause still ends it.
        assert_eq!(body_deadline(&limits, start, now, 1 << 20), now + Duration::from_secs(10));
        // An absurd count neither overflows nor panics.
        assert_eq!(body_deadline(&limits, start, now, u64::MAX), now + Duration::from_secs(10));
    }
}
