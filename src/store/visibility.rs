//! Which events of a stream reads can see. Reads and the scavenger both ask
//! this one function, so the scavenger can never remove an event a read
//! would still show.

use super::StoreError;
use super::codec::{Entry, StreamState};
use super::sled_store::stored_entry;

/// The lowest event number reads can see, applying soft delete (`deleted
/// before`), `$tb`, `$maxCount` and `$maxAge`. `$maxAge` is found by binary
/// search over creation times, which never decrease along a stream. A
/// tombstoned stream shows nothing: its `next_number`.
pub fn first_visible(
    db: &sled::Db,
    stream: &str,
    state: &StreamState,
    now_micros: i64,
) -> Result<u64, StoreError> {
    if state.tombstoned {
        return Ok(state.next_number);
    }
    let settings = state.settings;
    let mut first = state.deleted_before;
    if let Some(truncate_before) = settings.truncate_before {
        first = first.max(truncate_before);
    }
    if let Some(max_count) = settings.max_count {
        first = first.max(state.next_number.saturating_sub(max_count));
    }
    if let Some(max_age) = settings.max_age_secs {
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        let cutoff = now_micros.saturating_sub(max_age);
        let (mut low, mut high) = (first, state.next_number);
        while low < high {
            let middle = low + (high - low) / 2;
            match created_at(db, stream, middle)? {
                Some(created) if created >= cutoff => high = middle,
                _ => low = middle + 1,
            }
        }
        first = low;
    }
    Ok(first.min(state.next_number))
}

/// When event `number` of `stream` was written; `None` if it is gone.
fn created_at(db: &sled::Db, stream: &str, number: u64) -> Result<Option<i64>, StoreError> {
    Ok(match stored_entry(db, stream, number)? {
        Some(Entry::Link { created_micros, .. }) => Some(created_micros),
        Some(Entry::Event(event)) => Some(event.created_micros),
        None => None,
    })
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
