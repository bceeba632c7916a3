//! Every key the sled store writes is built here, and only here.
//!
//! All keyspaces live in one sled tree, separated by a leading keyspace byte.
//! One tree per keyspace would read more simply; we use one tree because sled
//! 0.34 applies a `Batch` atomically only within a single tree, and every
//! append must write its log record, index entries, id entries, stream state
//! and counters as one atomic unit. Multi-tree transactions would also be
//! atomic, but they are markedly slower and have had correctness bugs in 0.34.
//!
//! The one key kept elsewhere is a batch's undo record (see `undo`): in a
//! tree of its own, [`UNDO_TREE`], under [`UNDO`], written before a batch
//! and removed after it, so that nothing that walks the main tree (a
//! compaction's copy, an export) ever meets it. It is outside the batch
//! anyway, and sled's log, which orders it against the batch, is one for
//! all trees.
//!
//! Numbers are big-endian so that sled's byte order is numeric order, which
//! makes range scans over positions and event numbers correct.
//!
//! Stream names never contain a NUL byte (names with control characters are
//! rejected at the edge), so `name ‖ 0x00 ‖ number` cannot collide between a
//! stream and another stream whose name extends it.

use uuid::Uuid;

/// The global log, in commit order: position → (event number, stream), a
/// pointer to the event's record; or, for the consecutive positions one
/// append wrote, first position → (count, first number, stream), one key
/// for the whole append (see `codec::encode_log_entry`).
pub const LOG: u8 = 0x01;
/// Stream state: stream name → [`super::codec::StreamState`].
pub const STREAM: u8 = 0x02;
/// Events by stream: stream name ‖ 0x00 ‖ event number → the event record
/// or a run of records starting at that number (user streams), a link entry
/// or a run of links (system streams); see `codec`. Keyed by stream, not by
/// position, so a page of a stream is one contiguous range scan: sled does a
/// 20-key range in an eighth of the time of 20 scattered point reads
/// (measured), and stream pages are what readers read most.
pub const EVENT: u8 = 0x03;
/// Permanent idempotency index of layout 4 and earlier, one key per id:
/// event id → event number ‖ stream name. Read, never written (see
/// `id_index`, which replaced it).
pub const EVENT_ID: u8 = 0x04;
/// Small named counters (next global position, format version).
pub const COUNTER: u8 = 0x05;
/// Persistent subscription groups and their checkpoints.
pub const SUBSCRIPTION: u8 = 0x06;
/// Scavenge progress records.
pub const SCAVENGE: u8 = 0x07;
/// The event ids one commit wrote: commit sequence → id table (see
/// `id_index`).
pub const ID_SEGMENT: u8 = 0x08;
/// Sorted runs of event ids: run ‖ first id of a chunk → id table.
pub const ID_RUN: u8 = 0x09;

/// The next global position to assign. Stored rather than derived from the
/// last log key, because scavenging may delete the newest record and
/// positions must never be reused (cached `$all` pages depend on them).
pub const NEXT_POSITION: &[u8] = b"next_position";
/// The sequence number of the last committed batch.
pub const COMMIT_SEQ: &[u8] = b"commit_seq";
/// The on-disk layout version of this store.
pub const LAYOUT_VERSION: &[u8] = b"layout_version";
/// The id index's manifest: its live runs, and what is left to remove.
pub const ID_INDEX: &[u8] = b"id_index";

/// The tree of the undo record, and its key.
pub const UNDO_TREE: &[u8] = b"undo";
pub const UNDO: &[u8] = b"batch";

/// A key of `keyspace` for a number: the keyspace byte, then the number.
fn numbered(keyspace: u8, number: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = keyspace;
    key[1..].copy_from_slice(&number.to_be_bytes());
    key
}

/// Decodes the number from a key made by [`numbered`] for `keyspace`.
fn number_in(keyspace: u8, key: &[u8]) -> Option<u64> {
    match key {
        [first, rest @ ..] if *first == keyspace => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

pub fn log(position: u64) -> [u8; 9] {
    numbered(LOG, position)
}

/// Decodes the position from a key made by [`log`].
pub fn log_position(key: &[u8]) -> Option<u64> {
    number_in(LOG, key)
}

pub fn stream(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(STREAM);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Decodes the stream name from a key made by [`stream`].
pub fn stream_name(key: &[u8]) -> Option<&str> {
    match key {
        [STREAM, rest @ ..] => std::str::from_utf8(rest).ok(),
        _ => None,
    }
}

/// The prefix shared by every index entry of one stream.
pub fn event_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + name.len() + 8);
    key.push(EVENT);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub fn event(name: &str, number: u64) -> Vec<u8> {
    let mut key = event_prefix(name);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The first key after every index entry of `name`: the end of the range
/// of its entries.
pub fn event_end(name: &str) -> Vec<u8> {
    let mut key = event_prefix(name);
    if let Some(separator) = key.last_mut() {
        *separator = 1;
    }
    key
}

/// Decodes the event number from a key made by [`event`].
pub fn event_number(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

/// The prefix of every index entry of every stream whose name starts with
/// `name_prefix` (a family of system streams, such as `$ce-`).
pub fn event_family(name_prefix: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name_prefix.len());
    key.push(EVENT);
    key.extend_from_slice(name_prefix.as_bytes());
    key
}

/// The prefix of the state keys of every stream whose name starts with
/// `name_prefix`.
pub fn stream_family(name_prefix: &str) -> Vec<u8> {
    stream(name_prefix)
}

/// Whether a system projection is complete and maintained.
pub fn projection_marker(name: &str) -> Vec<u8> {
    counter(format!("projection:{name}").as_bytes())
}

pub fn event_id(id: &Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = EVENT_ID;
    key[1..].copy_from_slice(id.as_bytes());
    key
}

pub fn id_segment(commit_seq: u64) -> [u8; 9] {
    numbered(ID_SEGMENT, commit_seq)
}

/// Decodes the commit sequence from a key made by [`id_segment`].
pub fn id_segment_seq(key: &[u8]) -> Option<u64> {
    number_in(ID_SEGMENT, key)
}

/// The prefix of every chunk of one run of the id index.
pub fn id_run(run: u64) -> [u8; 9] {
    numbered(ID_RUN, run)
}

/// The key of the chunk of `run` whose first id is `first`.
pub fn id_run_chunk(run: u64, first: &Uuid) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[..9].copy_from_slice(&id_run(run));
    key[9..].copy_from_slice(first.as_bytes());
    key
}

pub fn counter(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(COUNTER);
    key.extend_from_slice(name);
    key
}

/// A persistent subscription group's record: stream ‖ 0x00 ‖ group.
pub fn subscription(stream: &str, group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + stream.len() + group.len());
    key.push(SUBSCRIPTION);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

pub fn scavenge(id: &Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = SCAVENGE;
    key[1..].copy_from_slice(id.as_bytes());
    key
}

/// Encodes a position or number as a stored value.
pub fn u64_value(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub fn decode_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_round_trip_and_sort_numerically() {
        let positions = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        for pair in positions.windows(2) {
            assert!(log(pair[0]) < log(pair[1]), "{} before {}", pair[0], pair[1]);
        }
        for position in positions {
            assert_eq!(log_position(&log(position)), Some(position));
        }
    }

    #[test]
    fn event_keys_sort_by_number_within_a_stream() {
        let a = event("order-1", 9);
        let b = event("order-1", 10);
        let c = event("order-1", 256);
        assert!(a < b && b < c);
        assert_eq!(event_number(&c), Some(256));
        assert!(c.starts_with(&event_prefix("order-1")));
        assert!(event("order-1", u64::MAX) < event_end("order-1"));
        assert!(event_end("order-1") <= event_prefix("order-1a"), "a longer name starts after");
    }

    #[test]
    fn a_stream_prefix_never_covers_a_longer_stream_name() {
        // "a" ‖ 0 must not be a prefix of any "ab" key: the NUL separator
        // sorts before every byte a valid name can contain.
        let short = event_prefix("a");
        let long = event("ab", 0);
        assert!(!long.starts_with(&short));
        assert!(event("a", u64::MAX) < long);
    }

    #[test]
    fn keyspaces_do_not_overlap() {
        let keys: Vec<Vec<u8>> = vec![
            log(0).to_vec(),
            log(u64::MAX).to_vec(),
            stream("x"),
            event("x", 0),
            event_id(&Uuid::nil()).to_vec(),
            counter(NEXT_POSITION),
            subscription("x", "g"),
            scavenge(&Uuid::nil()).to_vec(),
            id_segment(u64::MAX).to_vec(),
            id_run_chunk(0, &Uuid::nil()).to_vec(),
        ];
        for window in keys.windows(2) {
            assert!(window[0] < window[1]);
        }
        assert_eq!(stream_name(&stream("Order-1")), Some("Order-1"));
    }

    #[test]
    fn id_index_keys_sort_by_run_then_id() {
        let low = Uuid::from_u128(1);
        let high = Uuid::from_u128(u128::MAX);
        assert!(id_run_chunk(1, &low) < id_run_chunk(1, &high));
        assert!(id_run_chunk(1, &high) < id_run_chunk(2, &low));
        assert!(id_run_chunk(1, &high)[..] < id_run(2)[..]);
        assert!(id_run_chunk(1, &low).starts_with(&id_run(1)));
        assert!(id_segment(255) < id_segment(256));
        assert_eq!(id_segment_seq(&id_segment(256)), Some(256));
    }
}
