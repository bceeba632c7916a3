//! Which event ids the store certainly does not hold: a Bloom filter over
//! the permanent id index (see `id_index`), so that an append of new ids
//! (nearly every append) need not look each one up in sled.
//!
//! Looking an id up in the index's runs is a walk down sled's tree for each
//! run; for random ids (UUIDv4, what most clients send) every walk goes
//! somewhere else, and with one key per id the walks were a fifth of the
//! CPU of 20-event appends (profiled). The filter answers "not held" for
//! almost every new id from memory; "maybe held" (a held id, or one false
//! positive in a few hundred) still goes to the index, so a retry is found
//! exactly as before.
//!
//! Nothing is read at start-up: the filter starts empty and incomplete,
//! answering "maybe held" for everything, while a thread of its own adds
//! every id of the index. The writer adds each id it stages from the
//! moment the filter exists, so once the scan has passed every key that
//! was there before, the filter holds every id the store does. Ids are
//! never removed (a scavenged event's id stays spent), so the filter never
//! has to forget one.
//!
//! Memory: 16 bits per id it is sized for, at start-up half again the
//! events stored (3 MB per million events). When its newest part is full
//! the filter grows by a part twice the size of all the others.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use super::{StoreError, codec, keys};
use crate::hash::mix64;

/// Bits of filter per id it is sized for.
const BITS_PER_ID: u64 = 16;
/// The fewest ids a part is sized for.
const MIN_CAPACITY: u64 = 1 << 16;
/// Ids the start-up scan adds per taking of the lock.
const SCAN_CHUNK: usize = 4096;

#[derive(Debug)]
pub(crate) struct IdFilter {
    parts: Mutex<Vec<Part>>,
    /// Whether every id the index held when the filter was made was added.
    complete: AtomicBool,
}

/// One Bloom filter: each id sets four bits of one 64-bit word, so that
/// adding or testing an id touches one cache line.
#[derive(Debug)]
struct Part {
    words: Vec<u64>,
    capacity: u64,
    count: u64,
}

impl Part {
    fn new(capacity: u64) -> Self {
        let words = usize::try_from(capacity * BITS_PER_ID / 64).unwrap_or(usize::MAX);
        Self { words: vec![0; words], capacity, count: 0 }
    }

    /// The word an id's bits are in, and the bits.
    fn place(&self, hash: u64) -> (usize, u64) {
        // The high half picks the word (multiply and shift: no division),
        // the low half's first four 6-bit fields the bits.
        let word = ((hash >> 32) * self.words.len() as u64) >> 32;
        let mask = (0..4).fold(0, |mask, i| mask | 1 << ((hash >> (6 * i)) & 63));
        (word as usize, mask)
    }

    fn insert(&mut self, hash: u64) {
        let (word, mask) = self.place(hash);
        self.words[word] |= mask;
        self.count += 1;
    }

    fn may_hold(&self, hash: u64) -> bool {
        let (word, mask) = self.place(hash);
        self.words[word] & mask == mask
    }
}

impl IdFilter {
    /// An empty, incomplete filter sized for about `expected` ids.
    pub(crate) fn new(expected: u64) -> Self {
        let capacity = expected.saturating_add(expected / 2).max(MIN_CAPACITY);
        Self { parts: Mutex::new(vec![Part::new(capacity)]), complete: AtomicBool::new(false) }
    }

    /// Adds ids the store holds, or is about to, under one taking of the
    /// lock: the words they land in are cold, and independent loads in one
    /// loop wait for memory together instead of one after another.
    pub(crate) fn insert_all<'a>(&self, ids: impl IntoIterator<Item = &'a Uuid>) {
        let mut parts = self.parts();
        for id in ids {
            Self::insert_into(&mut parts, hash(id));
        }
    }

    fn insert_into(parts: &mut Vec<Part>, hash: u64) {
        if parts.last().is_none_or(|part| part.count >= part.capacity) {
            let total: u64 = parts.iter().map(|part| part.capacity).sum();
            parts.push(Part::new(total.saturating_mul(2).max(MIN_CAPACITY)));
        }
        if let Some(part) = parts.last_mut() {
            part.insert(hash);
        }
    }

    /// False only when the store certainly does not hold `id`.
    pub(crate) fn may_hold(&self, id: &Uuid) -> bool {
        self.may_hold_any([id])
    }

    /// False only when the store certainly holds none of `ids`: one taking
    /// of the lock for an append's ids (see [`IdFilter::insert_all`]).
    pub(crate) fn may_hold_any<'a>(&self, ids: impl IntoIterator<Item = &'a Uuid>) -> bool {
        if !self.complete.load(Ordering::Acquire) {
            return true;
        }
        let parts = self.parts();
        ids.into_iter().map(hash).any(|hash| parts.iter().any(|part| part.may_hold(hash)))
    }

    /// Adds every id of the index in `db`, then marks the filter complete.
    /// Returns early, leaving it incomplete, when `stop` is set.
    ///
    /// IMPORTANT: the keyspaces are read in key order (per-id keys of old
    /// layouts, segments, runs), the order in which the id index moves ids,
    /// so that the scan meets every id even while the index is merging.
    pub(crate) fn fill(&self, db: &sled::Db, stop: &AtomicBool) -> Result<(), StoreError> {
        let mut hashes = Vec::with_capacity(SCAN_CHUNK);
        for key in db.scan_prefix([keys::EVENT_ID]).keys() {
            let key = key?;
            let id = key.get(1..).and_then(|bytes| Uuid::from_slice(bytes).ok());
            let id = id.ok_or_else(|| StoreError::Corrupt("an event id key is malformed".into()))?;
            hashes.push(hash(&id));
            if hashes.len() >= SCAN_CHUNK && !self.add_scanned(&mut hashes, stop) {
                return Ok(());
            }
        }
        for keyspace in [keys::ID_SEGMENT, keys::ID_RUN] {
            for value in db.scan_prefix([keyspace]).values() {
                hashes.extend(codec::decode_id_table(&value?)?.ids().map(|id| hash(&id)));
                if hashes.len() >= SCAN_CHUNK && !self.add_scanned(&mut hashes, stop) {
                    return Ok(());
                }
            }
        }
        if self.add_scanned(&mut hashes, stop) {
            self.complete.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Adds ids the scan read, under one taking of the lock; false when
    /// the scan is to stop.
    fn add_scanned(&self, hashes: &mut Vec<u64>, stop: &AtomicBool) -> bool {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let mut parts = self.parts();
        for hash in hashes.drain(..) {
            Self::insert_into(&mut parts, hash);
        }
        true
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Vec<Part>> {
        // A panic elsewhere while holding the lock left whole words behind.
        self.parts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Mixes an id's 128 bits into 64: ordered ids (UUIDv7) differ only in a
/// few of their bits.
fn hash(id: &Uuid) -> u64 {
    let (high, low) = id.as_u64_pair();
    mix64(low ^ mix64(high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(n: u64) -> Uuid {
        Uuid::from_u64_pair(0x0190_0000_0000_7000 | (n >> 40), 0x8000_0000_0000_0000 | n)
    }

    #[test]
    fn an_incomplete_filter_holds_everything() {
        let filter = IdFilter::new(0);
        assert!(filter.may_hold(&Uuid::new_v4()));
    }

    #[test]
    fn every_added_id_is_held_and_few_others_are() {
        let db = sled::Config::new().temporary(true).open().expect("a temporary sled");
        let stored: Vec<Uuid> = (0..20_000).map(|_| Uuid::new_v4()).collect();
        for id in &stored {
            db.insert(keys::event_id(id), &b"x"[..]).expect("insert");
        }
        // Sized for far fewer ids than it gets: it grows.
        let filter = IdFilter::new(1000);
        let added: Vec<Uuid> = (0..300_000).map(ordered).collect();
        for ids in added.chunks(20) {
            filter.insert_all(ids);
        }
        assert!(filter.may_hold(&added[0]), "incomplete: everything may be held");
        filter.fill(&db, &AtomicBool::new(false)).expect("fill");
        assert!(filter.parts().len() > 1, "the filter grew");
        assert!(stored.iter().chain(&added).all(|id| filter.may_hold(id)), "no id is ever missed");
        let strangers = (0..100_000).map(|_| Uuid::new_v4()).filter(|id| filter.may_hold(id)).count();
        assert!(strangers < 2_000, "{strangers} of 100,000 new ids taken for held ones");
        // An append's ids checked together: held when any one is.
        let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).filter(|id| !filter.may_hold(id)).collect();
        assert!(!filter.may_hold_any(&new), "none of these is held");
        assert!(filter.may_hold_any(new.iter().chain([&added[12_345]])), "one held id is enough");
    }

    #[test]
    fn a_stopped_fill_leaves_the_filter_incomplete() {
        let db = sled::Config::new().temporary(true).open().expect("a temporary sled");
        db.insert(keys::event_id(&Uuid::new_v4()), &b"x"[..]).expect("insert");
        let filter = IdFilter::new(0);
        filter.fill(&db, &AtomicBool::new(true)).expect("fill");
        assert!(filter.may_hold(&Uuid::new_v4()));
    }
}
