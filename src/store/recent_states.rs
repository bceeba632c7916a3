//! Recent stream states, kept in memory for the reads whose answer does not
//! depend on a stream's head: a page kept by the rendered-page cache only
//! needs to know that its stream still exists under the same metadata and
//! the same first visible event. Without this, each such hit would cost a
//! round trip to the database for a row that changes only with a write to
//! the stream, which would make the page cache pay little on PostgreSQL;
//! on sled, a lookup in its tree, about a microsecond of a kept page's
//! fifteen with 1,000 streams read at random (measured).
//!
//! Each backend's [`Notifier`](super::Notifier) holds one. A state is kept
//! only while the backend hears every commit (sled's writer is the only
//! one, so always; on PostgreSQL, while the listener is connected), and is
//! forgotten:
//! - when this node's writer commits a write to its stream, before any of
//!   that batch's requests is answered (so a client never reads, through
//!   the node that acknowledged its delete or metadata write, what it
//!   replaced);
//! - on PostgreSQL, when the notification of a commit of another node that
//!   touched it arrives (in any order: the publisher's ordering of heads
//!   plays no part), so another node's write reaches this node's kept
//!   pages after that notification's delay, milliseconds on a healthy
//!   database;
//! - all at once when a commit's outcome is unknown, when an import step
//!   commits, and on PostgreSQL when a notification cannot be read, when
//!   the listener reads the head (after every connection and every few
//!   seconds, which bounds the staleness even if a connection died
//!   unnoticed) and when its connection is lost.
//!
//! A state read from the store is kept only if nothing was forgotten from
//! its shard of names from before the read was sent until after it is
//! inserted: a commit that the read missed is forgotten after the read was
//! sent, so either that check sees it, or its forgetting comes after the
//! insertion and removes it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use quick_cache::sync::Cache;

use crate::store::StreamState;

/// The most states kept: about 200 bytes each with its name, so at most a
/// few MiB, and enough for every stream a busy read load touches.
const CAPACITY: usize = 65_536;

/// How many shards of names the forgetting is counted in: a read is kept
/// unless a write touched a name of its shard meanwhile, so under write
/// load most reads of other streams are still kept.
const SHARDS: usize = 1024;

#[derive(Debug)]
pub(crate) struct RecentStates {
    states: Cache<String, StreamState>,
    /// Per shard, how many times a name in it was forgotten.
    forgotten: Box<[AtomicU64]>,
    /// How many times everything was forgotten.
    everything: AtomicU64,
    /// Whether every commit is heard now (see the module doc).
    hearing: AtomicBool,
    hasher: RandomState,
}

/// What was forgotten before a read was sent: the read's state is kept
/// only if nothing more was since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    shard: usize,
    forgotten: u64,
    everything: u64,
}

impl Default for RecentStates {
    fn default() -> Self {
        Self {
            states: Cache::new(CAPACITY),
            forgotten: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            everything: AtomicU64::new(0),
            hearing: AtomicBool::new(false),
            hasher: RandomState::new(),
        }
    }
}

impl RecentStates {
    /// The state kept for `stream`, if any.
    pub(crate) fn get(&self, stream: &str) -> Option<StreamState> {
        if !self.hearing.load(Ordering::SeqCst) {
            return None;
        }
        self.states.get(stream)
    }

    /// To take before reading `stream`'s state from the store; `None`
    /// while commits may go unheard (nothing is kept then).
    pub(crate) fn stamp(&self, stream: &str) -> Option<Stamp> {
        if !self.hearing.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.now(self.shard(stream)))
    }

    /// Keeps `state`, read from the store after `stamp` was taken,
    /// unless a name of its shard was forgotten since.
    pub(crate) fn keep(&self, stream: &str, state: StreamState, stamp: Stamp) {
        if self.now(stamp.shard) != stamp {
            return;
        }
        self.states.insert(stream.to_owned(), state);
        // A forgetting between the check above and the insertion would
        // have missed the state inserted: look again.
        if self.now(stamp.shard) != stamp {
            self.states.remove(stream);
        }
    }

    /// Forgets what is kept of `streams`.
    pub(crate) fn forget<'a>(&self, streams: impl IntoIterator<Item = &'a str>) {
        for stream in streams {
            // Counted before the removal, so that a read inserting
            // meanwhile sees the count moved (see `keep`).
            self.forgotten[self.shard(stream)].fetch_add(1, Ordering::SeqCst);
            self.states.remove(stream);
            // A metadata stream's write changes its stream's settings.
            if let Some(described) = stream.strip_prefix("$$") {
                self.forgotten[self.shard(described)].fetch_add(1, Ordering::SeqCst);
                self.states.remove(described);
            }
        }
    }

    /// Forgets everything kept.
    pub(crate) fn forget_all(&self) {
        self.everything.fetch_add(1, Ordering::SeqCst);
        self.states.clear();
    }

    /// Says whether every commit is heard from now on; either way, what
    /// was kept is forgotten (commits may have gone unheard).
    pub(crate) fn set_hearing(&self, hearing: bool) {
        if !hearing {
            self.hearing.store(false, Ordering::SeqCst);
        }
        self.forget_all();
        if hearing {
            self.hearing.store(true, Ordering::SeqCst);
        }
    }

    fn now(&self, shard: usize) -> Stamp {
        Stamp {
            shard,
            forgotten: self.forgotten[shard].load(Ordering::SeqCst),
            everything: self.everything.load(Ordering::SeqCst),
        }
    }

    fn shard(&self, stream: &str) -> usize {
        (self.hasher.hash_one(stream) as usize) % SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(next_number: u64) -> StreamState {
        StreamState { next_number, ..StreamState::default() }
    }

    fn hearing() -> RecentStates {
        let states = RecentStates::default();
        states.set_hearing(true);
        states
    }

    #[test]
    fn nothing_is_kept_while_commits_may_go_unheard() {
        let states = RecentStates::default();
        assert_eq!(states.stamp("a"), None);
        let states = hearing();
        let stamp = states.stamp("a").unwrap();
        states.keep("a", state(1), stamp);
        assert_eq!(states.get("a"), Some(state(1)));
        states.set_hearing(false);
        assert_eq!(states.get("a"), None);
        states.set_hearing(true);
        assert_eq!(states.get("a"), None, "forgotten when hearing stopped");
    }

    #[test]
    fn a_read_that_a_write_overtook_is_not_kept() {
        let states = hearing();
        let stamp = states.stamp("a").unwrap();
        // The write's notification arrives while the read is under way.
        states.forget(["a"]);
        states.keep("a", state(1), stamp);
        assert_eq!(states.get("a"), None);
        let stamp = states.stamp("a").unwrap();
        states.forget_all();
        states.keep("a", state(1), stamp);
        assert_eq!(states.get("a"), None);
    }

    #[test]
    fn writes_forget_their_streams_and_metadata_writes_the_stream_described() {
        let states = hearing();
        for name in ["a", "b"] {
            let stamp = states.stamp(name).unwrap();
            states.keep(name, state(1), stamp);
        }
        states.forget(["$$a"]);
        assert_eq!(states.get("a"), None);
        assert_eq!(states.get("b"), Some(state(1)));
        states.forget(["b"]);
        assert_eq!(states.get("b"), None);
    }
}
