//! Which event ids the store certainly does not hold: a Bloom filter over
//! the permanent id index (see `id_index`), so that an append of new ids
//! (nearly every append) need not look each one up in sled.
//!
//! Looking an id up in the index's runs is a walk down sled's tree for each
//! run; for random ids (UUIDv4, what most clients send) every walk goes
//! somewhere else, and with one key per id the walks were a fifth of the
//! CPU of 20-event appends (profiled). The filter answers "not held" for
//! almost every new id from memory; "maybe held" (a held id, or a false
//! positive) still goes to the index, so a retry is found exactly as before.
//!
//! Nothing is read at start-up: the filter starts empty and incomplete,
//! answering "maybe held" for everything, while a thread of its own adds
//! every id of the index. The writer adds each id it stages from the
//! moment the filter exists, so once the scan has passed every key that
//! was there before, the filter holds every id the store does. Ids are
//! never removed (a scavenged event's id stays spent), so the filter never
//! has to forget one.
//!
//! Memory: 24 bits per id it is sized for, at start-up half again the
//! events stored (4.5 MB per million events). When its newest part is full
//! the filter grows by a part twice the size of all the others.
//!
//! False positives: an id is tested against every part, so their rates
//! add up. Each part is a split-block filter: an id sets one bit in each of
//! the eight words of one cache line. Measured on random ids, with 4
//! million held (5 parts): 0.035 % of new ids taken for held ones. The first
//! layout, four bits of one word at 16 bits per id, took 2.3 % there, so
//! that a third of all 20-event appends looked some id up in every run of
//! the index: 16 % of the writer's time in a profile of 16 clients
//! appending 20 events each, 2.1 % of the server's once this layout cut
//! the lookups.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use super::{StoreError, codec, keys};
use crate::hash::mix64;

/// Bits of filter per id it is sized for.
const BITS_PER_ID: u64 = 24;
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

/// One Bloom filter of blocks: each id sets one bit in each word of one
/// block, so that adding or testing an id touches one cache line.
#[derive(Debug)]
struct Part {
    blocks: Vec<Block>,
    capacity: u64,
    count: u64,
}

/// A cache line of filter.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

/// The bits of one id: its block, and a bit of each of the block's words.
struct Place {
    block: usize,
    masks: [u64; 8],
}

impl Part {
    fn new(capacity: u64) -> Self {
        let bits = capacity.saturating_mul(BITS_PER_ID);
        let blocks = usize::try_from(bits.div_ceil(512)).unwrap_or(usize::MAX);
        Self { blocks: vec![Block::default(); blocks], capacity, count: 0 }
    }

    /// Where an id's bits are. The high half of its hash picks the block
    /// (multiply and shift: no division); a second mix of the hash gives
    /// each word's bit six bits of its own.
    fn place(&self, hash: u64) -> Place {
        let block = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let bits = mix64(hash);
        Place { block: block as usize, masks: std::array::from_fn(|word| 1 << ((bits >> (6 * word)) & 63)) }
    }

    fn insert(&mut self, hash: u64) {
        let Place { block, masks } = self.place(hash);
        for (word, mask) in self.blocks[block].0.iter_mut().zip(masks) {
            *word |= mask;
        }
        self.count += 1;
    }

    fn may_hold(&self, hash: u64) -> bool {
        let Place { block, masks } = self.place(hash);
        self.blocks[block].0.iter().zip(masks).all(|(word, mask)| word & mask == mask)
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
        assert!(strangers < 100, "{strangers} of 100,000 new ids taken for held ones");
        // An append's ids checked together: held when any one is.
        let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).filter(|id| !filter.may_hold(id)).collect();
        assert!(!filter.may_hold_any(&new), "none of these is held");
        assert!(filter.may_hold_any(new.iter().chain([&added[12_345]])), "one held id is enough");
    }

    /// Every part is tested, so their false positives add up: the rate
    /// must stay low once the filter has grown parts for a million ids.
    #[test]
    fn false_positives_stay_rare_as_the_filter_grows() {
        let filter = IdFilter::new(0);
        filter.complete.store(true, Ordering::Release);
        let mut held = 0u64;
        for target in [100_000, 1_000_000] {
            while held < target {
                let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
                filter.insert_all(&ids);
                held += 20;
            }
            let strangers = (0..200_000).map(|_| Uuid::new_v4()).filter(|id| filter.may_hold(id)).count();
            eprintln!(
                "{held} ids held in {} parts: {strangers} of 200,000 new ids taken for held ones",
                filter.parts().len()
            );
            assert!(strangers < 200, "{strangers} of 200,000 new ids taken for held ones with {held} held");
        }
        assert!(filter.parts().len() >= 4, "the filter grew parts");
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
