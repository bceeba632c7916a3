//! The rules of a write that every backend applies the same way, so they
//! are written once: what makes a request well-formed, what an
//! `ES-ExpectedVersion` compares against, when repeated event ids are an
//! idempotent retry, and which numbers a range read covers. Each backend
//! gathers the facts (a stream's state, the number each id has in it) its
//! own way and asks these functions.

use std::collections::HashSet;

use super::{
    Append, AppendOutcome, Direction, ExpectedVersion, RecordedEvent, StoreError, StreamRead, StreamSettings,
    StreamState, metadata,
};

/// Refuses an append that no state could accept: one without events, or
/// one that names an event id twice.
pub fn check_request(append: &Append) -> Result<(), StoreError> {
    if append.events.is_empty() {
        return Err(StoreError::Invalid("the request holds no events".into()));
    }
    let mut seen = HashSet::with_capacity(append.events.len());
    for event in &append.events {
        if !seen.insert(event.id) {
            return Err(StoreError::Invalid(format!("event id {} appears twice in one request", event.id)));
        }
    }
    Ok(())
}

/// Refuses an append whose access rules changed since it was allowed
/// (see [`Append::access`]). `own` is the state of the stream appended to;
/// `other` reads another's (a metadata stream's rules are its stream's).
pub fn check_access(
    append: &Append,
    own: &StreamState,
    other: impl FnOnce(&str) -> Result<StreamState, StoreError>,
) -> Result<(), StoreError> {
    let Some(basis) = &append.access else { return Ok(()) };
    let governing = if basis.stream == append.stream {
        own.settings.metadata_number
    } else {
        other(&basis.stream)?.settings.metadata_number
    };
    if governing == basis.metadata_number { Ok(()) } else { Err(StoreError::AccessChanged) }
}

/// The version an expected-version check compares against: the last event
/// number, or -1 when the stream does not exist (never written or deleted).
pub fn current_version(state: &StreamState) -> i64 {
    match state.last_number() {
        Some(last) if state.exists() => i64::try_from(last).unwrap_or(i64::MAX),
        _ => -1,
    }
}

/// Checks `ES-ExpectedVersion` against the stream's current version.
pub fn check_expected(expected: ExpectedVersion, current: i64) -> Result<(), StoreError> {
    let matches = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == -1,
        ExpectedVersion::StreamExists => current >= 0,
        ExpectedVersion::Exact(n) => i64::try_from(n).is_ok_and(|n| n == current),
    };
    if matches {
        return Ok(());
    }
    Err(StoreError::WrongExpectedVersion { current, detail: expectation_failed(expected, current) })
}

/// Says in words what `expected` asked for and what the stream is, so a
/// person reading the `400` knows what to change.
fn expectation_failed(expected: ExpectedVersion, current: i64) -> String {
    let asked = match expected {
        ExpectedVersion::Any => "-2: any version".to_owned(),
        ExpectedVersion::NoStream => "-1: the stream must not exist".to_owned(),
        ExpectedVersion::StreamExists => "-4: the stream must exist".to_owned(),
        ExpectedVersion::Exact(n) => format!("{n}: the stream's last event number must be {n}"),
    };
    let is = if current < 0 {
        "it does not exist".to_owned()
    } else {
        format!("it exists and its last event number is {current}")
    };
    format!("ES-ExpectedVersion {asked}, but {is}.")
}

/// The state a delete leaves, or why the stream cannot be deleted: a hard
/// delete tombstones it (even a stream that never existed, so that its
/// name can never be used, as v5 allows); a soft delete hides every event
/// so far and needs the stream to exist.
pub fn deleted(
    mut state: StreamState,
    expected: ExpectedVersion,
    hard: bool,
) -> Result<StreamState, StoreError> {
    if state.tombstoned {
        return Err(StoreError::StreamDeleted);
    }
    let current = current_version(&state);
    check_expected(expected, current)?;
    if hard {
        state.tombstoned = true;
    } else {
        if current == -1 {
            return Err(StoreError::StreamNotFound);
        }
        state.soft_deleted = true;
        state.deleted_before = state.next_number;
    }
    Ok(state)
}

/// Whether `append` repeats an earlier write to its stream, given the
/// number each of its ids was written as *in that stream* (`numbers`, in
/// the request's order; `None` for an id the stream never had). Event ids
/// are unique per stream, as in EventStore: the same id in another stream
/// is another event. The original outcome when every id was written to the
/// stream as one consecutive run in the same order; an error when only some
/// match; `None` when none was written to it before.
pub fn retry_outcome(
    append: &Append,
    current: i64,
    numbers: &[Option<u64>],
) -> Result<Option<AppendOutcome>, StoreError> {
    if numbers.iter().all(Option::is_none) {
        return Ok(None);
    }
    let Some(Some(first_number)) = numbers.first() else {
        return Err(partial_match(append, current, numbers));
    };
    let is_same_run = numbers.iter().enumerate().all(|(i, number)| *number == Some(first_number + i as u64));
    if !is_same_run {
        return Err(partial_match(append, current, numbers));
    }
    Ok(Some(AppendOutcome {
        first_number: *first_number,
        last_number: first_number + numbers.len() as u64 - 1,
        position: None,
        idempotent: true,
    }))
}

fn partial_match(append: &Append, current: i64, numbers: &[Option<u64>]) -> StoreError {
    let taken = append.events.iter().zip(numbers).find_map(|(event, number)| number.map(|n| (event.id, n)));
    let detail = match taken {
        Some((id, number)) => format!(
            "event id {id} was already written as event {number} of stream '{}', \
             and the request does not repeat that write exactly",
            append.stream
        ),
        None => "the request's event ids only partly match an earlier write".into(),
    };
    StoreError::WrongExpectedVersion { current, detail }
}

/// What a checked append sets besides its events: for an append to `$$s`,
/// `s` and the settings its last event gives it.
pub type SetsMetadata = Option<(String, StreamSettings)>;

/// Every check of one append against the state it meets, in the order
/// every backend applies them: a well-formed request, the tombstone, the
/// access rules, an idempotent retry, the expected version, the metadata
/// document. `state` reads a stream's state (the default for one never
/// written) and `numbers` the number each of the append's ids has in its
/// stream, in the request's order (see [`retry_outcome`]); each backend
/// answers them from its own storage, including what its batch so far
/// wrote. The original outcome if the append repeats an earlier write,
/// else what its write sets besides its events.
pub fn check_append(
    append: &Append,
    mut state: impl FnMut(&str) -> Result<StreamState, StoreError>,
    numbers: impl FnOnce() -> Result<Vec<Option<u64>>, StoreError>,
) -> Result<Part<SetsMetadata>, StoreError> {
    check_request(append)?;
    let own = state(&append.stream)?;
    if own.tombstoned {
        return Err(StoreError::StreamDeleted);
    }
    check_access(append, &own, &mut state)?;
    let current = current_version(&own);
    if let Some(outcome) = retry_outcome(append, current, &numbers()?)? {
        return Ok(Part::Repeat(outcome));
    }
    check_expected(append.expected, current)?;
    // The last event of an append to `$$s` is `s`'s metadata from now on.
    // Only it is checked, as the sled store does: earlier events of the
    // same append are stored as they are.
    let settings = match (metadata::described_stream(&append.stream), append.events.last()) {
        (Some(described), Some(event)) => Some((
            described.to_owned(),
            metadata::parse(&event.data).map_err(|error| StoreError::Invalid(error.to_string()))?,
        )),
        _ => None,
    };
    Ok(Part::Write(settings))
}

/// The most streams one multi-stream append may name.
pub const MAX_PARTS: usize = 100;

/// Refuses a multi-stream append that no state could accept: no parts,
/// more than [`MAX_PARTS`], a stream named twice (its parts would need an
/// order), or a part [`check_request`] refuses.
pub fn check_parts(appends: &[Append]) -> Result<(), StoreError> {
    if appends.is_empty() {
        return Err(StoreError::Invalid("the request names no streams".into()));
    }
    if appends.len() > MAX_PARTS {
        return Err(StoreError::Invalid(format!(
            "the request names {} streams; one append takes at most {MAX_PARTS}",
            appends.len()
        )));
    }
    let mut seen = HashSet::with_capacity(appends.len());
    for append in appends {
        if !seen.insert(append.stream.as_str()) {
            return Err(StoreError::Invalid(format!(
                "stream '{}' is named twice; give each stream one part with all its events",
                append.stream
            )));
        }
        check_request(append).map_err(|error| in_part(&append.stream, error))?;
    }
    Ok(())
}

/// What one part of a multi-stream append would do on its own.
#[derive(Debug)]
pub enum Part<T> {
    /// It repeats an earlier write: its original outcome.
    Repeat(AppendOutcome),
    /// It is new: what the backend needs to write it.
    Write(T),
}

/// What a multi-stream append comes to.
#[derive(Debug)]
pub enum Parts<T> {
    /// Every part repeats an earlier write: answer the original outcomes.
    Repeat(Vec<AppendOutcome>),
    /// Every part is new and holds: write them all.
    Write(Vec<T>),
    /// Some parts repeat earlier writes and others are new: a conflict on
    /// the repeated ones (their indexes), since a retry is all or nothing.
    PartlyRepeated(Vec<usize>),
}

/// Decides a multi-stream append from what each part would do alone, in
/// the request's order: every expected version that failed is reported
/// (a client fixes them all at once), else the first other refusal.
pub fn decide_parts<T>(
    appends: &[Append],
    parts: Vec<Result<Part<T>, StoreError>>,
) -> Result<Parts<T>, StoreError> {
    let mut conflicts = Vec::new();
    let mut refused = None;
    let (mut repeats, mut writes, mut repeated) = (Vec::new(), Vec::new(), Vec::new());
    for (index, (append, part)) in appends.iter().zip(parts).enumerate() {
        match part {
            Ok(Part::Repeat(outcome)) => {
                repeats.push(outcome);
                repeated.push(index);
            }
            Ok(Part::Write(plan)) => writes.push(plan),
            Err(StoreError::WrongExpectedVersion { current, .. }) => conflicts.push(super::Conflict {
                stream: append.stream.clone(),
                expected: append.expected,
                current,
            }),
            Err(error) => {
                refused.get_or_insert_with(|| in_part(&append.stream, error));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(StoreError::Conflicts(conflicts));
    }
    if let Some(error) = refused {
        return Err(error);
    }
    Ok(match (repeats.len(), writes.len()) {
        (_, 0) => Parts::Repeat(repeats),
        (0, _) => Parts::Write(writes),
        _ => Parts::PartlyRepeated(repeated),
    })
}

/// The conflict of a multi-stream append whose parts at `indexes` repeat
/// earlier writes while the others are new: each repeated part, with its
/// stream's current version (`state` reads a stream's state).
pub fn partly_repeated(
    appends: &[Append],
    indexes: &[usize],
    mut state: impl FnMut(&str) -> Result<StreamState, StoreError>,
) -> StoreError {
    let conflicts = indexes.iter().map(|&index| {
        let append = &appends[index];
        Ok(super::Conflict {
            stream: append.stream.clone(),
            expected: append.expected,
            current: current_version(&state(&append.stream)?),
        })
    });
    match conflicts.collect::<Result<Vec<_>, StoreError>>() {
        Ok(conflicts) => StoreError::Conflicts(conflicts),
        Err(error) => error,
    }
}

/// `error` of the part that writes to `stream`.
fn in_part(stream: &str, error: StoreError) -> StoreError {
    StoreError::InPart { stream: stream.to_owned(), error: Box::new(error) }
}

/// The most bytes of events (data plus metadata) one range read returns,
/// of a stream or of `$all`: it stops before the event that would pass
/// it, but returns at least one, whatever its size. A page holds what the
/// read returned, and its links lead on from the last event it holds, so a
/// client that follows them misses nothing.
///
/// It bounds the memory of one read, and of the page rendered from it
/// while a client takes it: pages are rendered whole, and 20 clients that
/// asked for a page of 40 events of 3 MB with `embed=pretty` and did not
/// read it held 2.6 GB until they went away. Now one page holds at most
/// this much event data, or one event (at most `--max-event-bytes`).
pub const READ_BYTES: usize = 4 * 1024 * 1024;

/// How many positions one `$all` read examines at most, whatever it finds,
/// so that a read across a long run of hidden events stops at the same
/// place on every backend.
pub const MAX_ALL_SCAN: u64 = 100_000;

/// A range read's count of bytes against [`READ_BYTES`].
#[derive(Debug, Default)]
pub struct ReadBytes {
    bytes: usize,
    events: usize,
}

impl ReadBytes {
    /// Whether `event` still fits the read, counting it if it does. The
    /// first event always fits.
    pub fn take(&mut self, event: &RecordedEvent) -> bool {
        self.take_size(event.data.len() + event.metadata.len())
    }

    /// [`Self::take`] for an event of `size` bytes (data plus metadata),
    /// for a backend that decides what a read returns before it fetches
    /// the events.
    pub fn take_size(&mut self, size: usize) -> bool {
        if self.events > 0 && self.bytes.saturating_add(size) > READ_BYTES {
            return false;
        }
        self.bytes = self.bytes.saturating_add(size);
        self.events += 1;
        true
    }
}

/// The numbers a range read covers in a stream whose last event is `last`,
/// before retention: `from` (the head when `None`) and up to `count - 1`
/// more in the read's direction. The caller clips it to what is visible.
pub fn read_range(read: &StreamRead, last: u64) -> (u64, u64) {
    let count = read.count.max(1);
    let from = read.from.unwrap_or(last);
    match read.direction {
        Direction::Forward => (from, from.saturating_add(count - 1)),
        Direction::Backward => (from.saturating_sub(count - 1), from),
    }
}

/// Why an import is refused by a store that holds anything: an export is
/// loaded only into an empty store, so that nothing of it mixes with what
/// was there.
pub fn not_empty_target() -> StoreError {
    StoreError::Invalid(
        "the target store is not empty (it holds streams or has used positions): an export is only imported into an empty store".into(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::store::ProposedEvent;

    fn append(stream: &str, count: usize) -> Append {
        let event = || ProposedEvent {
            id: Uuid::new_v4(),
            event_type: "Happened".into(),
            is_json: true,
            data: Bytes::from_static(b"{}"),
            metadata_is_json: false,
            metadata: Bytes::new(),
        };
        Append {
            stream: stream.into(),
            expected: ExpectedVersion::Any,
            events: (0..count).map(|_| event()).collect(),
            access: None,
        }
    }

    #[test]
    fn a_retry_is_the_same_ids_as_one_run_of_this_stream() {
        let request = append("s", 2);
        assert_eq!(retry_outcome(&request, 5, &[None, None]), Ok(None));
        let outcome = retry_outcome(&request, 5, &[Some(3), Some(4)]).unwrap().unwrap();
        assert_eq!((outcome.first_number, outcome.last_number, outcome.idempotent), (3, 4, true));
        for numbers in [[Some(3), None], [None, Some(4)], [Some(3), Some(5)], [Some(4), Some(3)]] {
            let refused = retry_outcome(&request, 5, &numbers);
            assert!(
                matches!(refused, Err(StoreError::WrongExpectedVersion { current: 5, .. })),
                "{numbers:?}"
            );
        }
    }

    #[test]
    fn read_ranges_go_from_the_start_in_the_direction_asked() {
        let read = |from, direction, count| StreamRead {
            stream: "s".into(),
            from,
            direction,
            count,
            resolve_links: false,
        };
        assert_eq!(read_range(&read(Some(10), Direction::Forward, 20), 99), (10, 29));
        assert_eq!(read_range(&read(Some(10), Direction::Backward, 20), 99), (0, 10));
        assert_eq!(read_range(&read(None, Direction::Backward, 20), 99), (80, 99));
        assert_eq!(read_range(&read(Some(3), Direction::Forward, 0), 99), (3, 3), "a count of 0 reads one");
    }

    #[test]
    fn expected_versions_compare_with_the_last_number_or_minus_one() {
        let written = StreamState { next_number: 3, ..StreamState::default() };
        let deleted = StreamState { soft_deleted: true, ..written.clone() };
        assert_eq!((current_version(&written), current_version(&deleted)), (2, -1));
        assert!(check_expected(ExpectedVersion::Exact(2), 2).is_ok());
        assert!(check_expected(ExpectedVersion::NoStream, -1).is_ok());
        assert!(check_expected(ExpectedVersion::StreamExists, -1).is_err());
        assert!(check_request(&append("s", 0)).is_err());
    }
}
