//! Building a system projection from the log, for a projection that was
//! turned on after events were written (or whose build was interrupted).
//!
//! A built projection must be exactly what live maintenance would have
//! produced, so a build first clears every stream of the projection, then
//! links the log in position order. Both run as steps inside the writer,
//! serialised with appends and a bounded amount of work each, so appends are
//! never stalled for long. The writer runs build steps before the appends of
//! the same batch; the step that reaches the writer's head switches the
//! projection to live maintenance, so the appends that follow in that batch
//! are linked live and none is linked twice or missed.
//!
//! A marker per projection records whether it is complete and maintained.
//! A projection turned off loses the marker, so turning it on again
//! rebuilds it: the events written meanwhile were never linked.

use std::collections::HashMap;

use super::entries::{log_spans, stored_entries};
use super::keys;
use super::staging::{LinkTarget, Staging};
use crate::store::projections::{Projection, Projections};
use crate::store::{StoreError, StreamState};

/// Marker values.
pub(crate) const MAINTAINED: &[u8] = b"maintained";
pub(crate) const INCOMPLETE: &[u8] = b"incomplete";

/// How many keys one step removes or how many log records it links. Big
/// enough that a build of millions of events takes few steps, small enough
/// that one step holds up appends for milliseconds, not seconds.
const STEP: usize = 10_000;

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Removing the projection's existing streams.
    Clearing,
    /// Linking log records from this position on.
    Linking { next: u64 },
}

/// What one step achieved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// The next log position to link (0 while clearing).
    pub next: u64,
    /// The head when the step ran.
    pub head: u64,
    pub done: bool,
}

/// Which projections to activate now and which to build, from the markers
/// and the configuration. Clears the marker of projections turned off.
/// With an empty log there is nothing to build: every configured projection
/// is maintained from the first append (a build, however short, would leave
/// the first appends unlinked for a moment).
pub(crate) fn plan(
    db: &sled::Db,
    configured: Projections,
    next_position: u64,
) -> Result<(Projections, Vec<Projection>), StoreError> {
    let mut active = Projections::NONE;
    let mut to_build = Vec::new();
    for projection in Projection::ALL {
        let marker_key = keys::projection_marker(projection.name());
        let maintained = db.get(&marker_key)?.is_some_and(|marker| &*marker == MAINTAINED);
        match (configured.is_enabled(projection), maintained) {
            (true, true) => active.set(projection, true),
            (true, false) if next_position == 0 => {
                db.insert(marker_key, MAINTAINED)?;
                active.set(projection, true);
            }
            (true, false) => to_build.push(projection),
            (false, true) => {
                db.insert(marker_key, INCOMPLETE)?;
            }
            (false, false) => {}
        }
    }
    Ok((active, to_build))
}

/// Runs one step of building `projection`, inside the writer's batch.
/// `phase` is the writer's record of where the build is.
pub(crate) fn step(
    projection: Projection,
    phase: &mut Phase,
    staging: &mut Staging<'_>,
) -> Result<Progress, StoreError> {
    let head = staging.next_position;
    let marker_key = keys::projection_marker(projection.name());
    match *phase {
        Phase::Clearing => {
            staging.insert(marker_key, INCOMPLETE);
            let (prefix, exact) = projection.stream_prefix();
            let index_prefix = if exact { keys::event_prefix(prefix) } else { keys::event_family(prefix) };
            let mut removed = 0;
            for key in staging.db().scan_prefix(&index_prefix).keys().take(STEP) {
                staging.remove(key?);
                removed += 1;
            }
            if removed < STEP {
                // The index is cleared by this step; the states go with it.
                if exact {
                    staging.remove(keys::stream(prefix));
                } else {
                    let states: Vec<sled::IVec> = staging
                        .db()
                        .scan_prefix(keys::stream_family(prefix))
                        .keys()
                        .collect::<Result<_, _>>()?;
                    for key in states {
                        staging.remove(key);
                    }
                }
                *phase = Phase::Linking { next: 0 };
            }
            Ok(Progress { next: 0, head, done: false })
        }
        Phase::Linking { next } => {
            let end = next.saturating_add(STEP as u64).min(head);
            let mut linked_to = next;
            if next < end {
                let mut events = Vec::new();
                for span in log_spans(staging.db(), next, end - 1, false)? {
                    let span = span?;
                    // Events scavenged since they were logged are absent:
                    // nothing to link.
                    for (number, entry) in
                        stored_entries(staging.db(), &span.stream, span.number, span.last_number())?
                    {
                        events.push(entry.into_event(&span.stream, number)?);
                    }
                }
                // Every system stream's state is read before anything is
                // staged, so a failing read leaves the batch untouched.
                let mut planned: Vec<(String, StreamState, Vec<LinkTarget<'_>>)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                for event in &events {
                    let target = LinkTarget {
                        position: event.position,
                        created_micros: event.created_micros,
                        number: event.number,
                        stream: &event.stream,
                    };
                    // Event 0 is the one that created its stream: numbering
                    // never restarts, so this matches the live path exactly.
                    for stream in
                        Projections::links_of(projection, &event.stream, &event.event_type, event.number == 0)
                    {
                        match index.get(&stream) {
                            Some(&at) => planned[at].2.push(target),
                            None => {
                                let state = staging.state(&stream)?;
                                index.insert(stream.clone(), planned.len());
                                planned.push((stream, state, vec![target]));
                            }
                        }
                    }
                }
                for (stream, state, targets) in planned {
                    staging.stage_links(&stream, state, &targets);
                }
                linked_to = end;
            }
            let done = linked_to >= head;
            if done {
                staging.insert(marker_key, MAINTAINED);
                staging.activate(projection);
            }
            *phase = Phase::Linking { next: linked_to };
            Ok(Progress { next: linked_to, head, done })
        }
    }
}
