//! Taking back a batch that sled applied only in part.
//!
//! sled makes a batch atomic by sealing it once every key is in: it applies
//! the keys one at a time, in no fixed order (a hash map's), and seals the
//! batch last. A key that fails on the way (a value big enough for a blob
//! file of its own, on a full disk) leaves the keys applied before it in
//! place and the batch unsealed, and sled's flusher or its close then
//! writes them like any others. The next open would find part of a batch
//! that was never acknowledged: a stream's state from a commit whose
//! counters were never written, say, which every read of that stream then
//! waits for in vain.
//!
//! So a batch goes to sled between two writes of one key: before it, its
//! undo record (what the keys it writes held, see [`Undo`]); after it, the
//! record's removal. The three are logged in that order and sled's
//! recovery keeps a prefix of its log, so an open that finds a record finds
//! at most a part of its batch, never a later one. [`repair`] then puts back
//! what the record holds, clears the ranges it names, and removes it. A
//! batch whose record is found was never acknowledged: acknowledgements wait
//! for the flush that makes the removal durable.
//!
//! The two writes are not free, and it is a full disk that makes writes
//! fail, so the writer adds them only while the disk is near full (see
//! `space::needs_undo`).
//!
//! The keys a batch only removes are not in its record: they are what
//! nothing reads any more (events a scavenge drops, the id index's garbage,
//! the streams a projection build clears and then builds again). A caller
//! whose removal takes away something still read records it
//! ([`Undo::restore`]).

use super::codec::{self, UndoRecord};
use super::keys;
use crate::store::{StoreError, StreamState};

/// What the keys of one batch held before it.
#[derive(Debug, Default)]
pub(crate) struct Undo(UndoRecord);

impl Undo {
    /// `stream`'s state was `held` before the batch (`None`: it had none):
    /// the batch writes its state and fills its numbers past the last.
    pub(crate) fn stream(&mut self, stream: &str, held: Option<&StreamState>, committed: u64) {
        let held = held.map(|state| codec::encode_state(state, committed));
        self.0.streams.push((stream.to_owned(), held));
    }

    /// `key` held `prior` before the batch (`None`: nothing).
    pub(crate) fn restore(&mut self, key: impl Into<Vec<u8>>, prior: Option<&[u8]>) {
        self.0.restore.push((key.into(), prior.map(<[u8]>::to_vec)));
    }

    /// The batch writes keys in `start..end`, which held nothing before it.
    pub(crate) fn clear(&mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.0.clear.push((start.into(), end.into()));
    }

    /// Adds what `other` holds.
    pub(crate) fn append(&mut self, other: Undo) {
        self.0.streams.extend(other.0.streams);
        self.0.restore.extend(other.0.restore);
        self.0.clear.extend(other.0.clear);
    }

    /// The stored record, or `None` if there is nothing to take back.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let empty = self.0.streams.is_empty() && self.0.restore.is_empty() && self.0.clear.is_empty();
        (!empty).then(|| codec::encode_undo(&self.0))
    }
}

/// Applies `batch` between its undo record and the record's removal (see
/// the module notes); with no record, the batch alone.
pub(crate) fn apply(db: &sled::Db, record: Option<&[u8]>, batch: sled::Batch) -> Result<(), StoreError> {
    let Some(record) = record else {
        db.apply_batch(batch)?;
        return Ok(());
    };
    let tree = db.open_tree(keys::UNDO_TREE)?;
    tree.insert(keys::UNDO, record)?;
    db.apply_batch(batch)?;
    tree.remove(keys::UNDO)?;
    Ok(())
}

/// Takes back the batch an earlier process applied only in part, if there
/// is one; at open, before anything reads the store. Returns whether it did.
pub(crate) fn repair(db: &sled::Db) -> Result<bool, StoreError> {
    let tree = db.open_tree(keys::UNDO_TREE)?;
    let Some(stored) = tree.get(keys::UNDO)? else { return Ok(false) };
    let mut record = codec::decode_undo(&stored)?;
    for (stream, state) in std::mem::take(&mut record.streams) {
        let from = match &state {
            Some(state) => codec::decode_state(state)?.0.next_number,
            None => 0,
        };
        record.clear.push((keys::event(&stream, from), keys::event_end(&stream)));
        record.restore.push((keys::stream(&stream), state));
    }
    let mut batch = sled::Batch::default();
    let mut cleared = 0usize;
    for (start, end) in &record.clear {
        if start >= end {
            continue;
        }
        for found in db.range(start.as_slice()..end.as_slice()).keys() {
            batch.remove(found?);
            cleared += 1;
        }
    }
    // After the clears: a key both in a range and restored gets its value.
    for (key, prior) in &record.restore {
        match prior {
            Some(value) => batch.insert(key.as_slice(), value.as_slice()),
            None => batch.remove(key.as_slice()),
        }
    }
    // IMPORTANT: durable before the record goes. An open that stops in
    // between finds the record again, and taking the batch back twice
    // leaves the store as once.
    db.apply_batch(batch)?;
    db.flush()?;
    tree.remove(keys::UNDO)?;
    db.flush()?;
    tracing::warn!(
        restored = record.restore.len(),
        cleared,
        "took back what the last run wrote of a batch it never finished; that batch was never acknowledged"
    );
    Ok(true)
}
