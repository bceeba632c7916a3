//! Which events of a stream reads can see: the one retention rule every
//! backend applies. Reads and scavenging both ask [`first_visible`], so a
//! scavenge can never remove an event a read would still show, and two
//! backends holding the same events show the same ones.

use super::{StoreError, StreamSettings, StreamState};

/// The lowest event number reads can see, applying soft delete (`deleted
/// before`), `$tb`, `$maxCount` and `$maxAge`. A tombstoned stream shows
/// nothing: its `next_number`.
///
/// `$maxAge` is found by binary search over creation times, which never
/// decrease along a stream; `created_at(number)` tells when event `number`
/// was written, `None` when it is gone (scavenged), which counts as too old.
pub fn first_visible(
    state: &StreamState,
    now_micros: i64,
    mut created_at: impl FnMut(u64) -> Result<Option<i64>, StoreError>,
) -> Result<u64, StoreError> {
    let bounds = visible_bounds(state, now_micros);
    let Some(cutoff) = bounds.max_age_cutoff else { return Ok(bounds.first) };
    let (mut low, mut high) = (bounds.first, state.next_number);
    while low < high {
        let middle = low + (high - low) / 2;
        match created_at(middle)? {
            Some(created) if created >= cutoff => high = middle,
            _ => low = middle + 1,
        }
    }
    Ok(low.min(state.next_number))
}

/// [`first_visible`] in two parts, for a backend that finds the `$maxAge`
/// boundary its own way (the PostgreSQL store asks one index query): the
/// lowest number every rule but `$maxAge` leaves visible, and the creation
/// time an event must have reached to be visible, when `$maxAge` is set.
/// With a cutoff, the first visible number is the lowest number at or
/// above `first` of an event created at or after it, or `next_number`
/// when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisibleBounds {
    pub first: u64,
    pub max_age_cutoff: Option<i64>,
}

/// See [`VisibleBounds`].
pub fn visible_bounds(state: &StreamState, now_micros: i64) -> VisibleBounds {
    if state.tombstoned {
        return VisibleBounds { first: state.next_number, max_age_cutoff: None };
    }
    let settings = state.settings;
    let mut first = state.deleted_before;
    if let Some(truncate_before) = settings.truncate_before {
        first = first.max(truncate_before);
    }
    if let Some(max_count) = settings.max_count {
        first = first.max(state.next_number.saturating_sub(max_count));
    }
    let first = first.min(state.next_number);
    let max_age_cutoff = settings.max_age_secs.filter(|_| first < state.next_number).map(|max_age| {
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        now_micros.saturating_sub(max_age)
    });
    VisibleBounds { first, max_age_cutoff }
}

/// Whether `settings` hide events without a metadata write: `$maxCount`
/// with later appends, `$maxAge` with time.
pub fn expires_events(settings: &StreamSettings) -> bool {
    settings.max_count.is_some() || settings.max_age_secs.is_some()
}

/// Microseconds since the Unix epoch, now: the clock creation times and
/// `$maxAge` are measured by.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StreamSettings;

    fn state(next_number: u64, settings: StreamSettings) -> StreamState {
        StreamState { next_number, settings, ..StreamState::default() }
    }

    /// Event `n` was written at second `n`.
    fn at_second(number: u64) -> Result<Option<i64>, StoreError> {
        Ok(Some(number as i64 * 1_000_000))
    }

    #[test]
    fn the_strictest_rule_wins() {
        let settings = StreamSettings { max_count: Some(3), truncate_before: Some(5), ..Default::default() };
        assert_eq!(first_visible(&state(10, settings), 0, at_second).unwrap(), 7);
        let settings = StreamSettings { max_count: Some(8), truncate_before: Some(5), ..Default::default() };
        assert_eq!(first_visible(&state(10, settings), 0, at_second).unwrap(), 5);
        let soft_deleted = StreamState { deleted_before: 9, ..state(10, settings) };
        assert_eq!(first_visible(&soft_deleted, 0, at_second).unwrap(), 9);
    }

    #[test]
    fn max_age_finds_the_first_young_enough_event() {
        let settings = StreamSettings { max_age_secs: Some(3), ..Default::default() };
        // Now is second 10: events of second 7 and later are visible.
        assert_eq!(first_visible(&state(10, settings), 10_000_000, at_second).unwrap(), 7);
        // Gone (scavenged) events count as too old.
        let gone_below_8 = |n: u64| if n < 8 { Ok(None) } else { at_second(n) };
        assert_eq!(first_visible(&state(10, settings), 10_000_000, gone_below_8).unwrap(), 8);
    }

    #[test]
    fn a_tombstone_or_a_truncation_past_the_end_shows_nothing() {
        let tombstoned = StreamState { tombstoned: true, ..state(4, StreamSettings::default()) };
        assert_eq!(first_visible(&tombstoned, 0, at_second).unwrap(), 4);
        let settings = StreamSettings { truncate_before: Some(100), ..Default::default() };
        assert_eq!(first_visible(&state(4, settings), 0, at_second).unwrap(), 4);
    }
}
