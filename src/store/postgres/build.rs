//! The system projections on PostgreSQL: which ones every append links
//! (recorded on the head, so that every node links the same), and the
//! build from the log of one turned on after events were written.
//!
//! The head row carries both sets (migration 0004). Every batch locks the
//! head and reads them with the lock, so a change made by one node holds
//! for the next batch of every node: a server started with other
//! `--projection-*` options than the database's changes them for all.
//!
//! A build makes exactly what live maintenance would have made, as the
//! sled store's does: it clears the projections' streams, then links the
//! log in position order, in steps of [`STEP`]. Each step is one
//! transaction holding the head's lock, so it is serialised with every
//! node's batches and its progress is on the head: whichever node's
//! writer takes the next step (each writer takes steps while the head says
//! a build runs), the build goes on where it was, and a node that dies
//! mid-build loses nothing of it. The step that reaches the head moves
//! the projections to the maintained set in the same transaction, so the
//! next batch links live and no event is linked twice or missed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::links::{self, LinkRuns};
use super::prepared::Prepared;
use super::staging::{states_query, write_states};
use super::{CHANNEL, db_error, prefix_end, signed, state_from_row, unsigned};
use crate::store::projections::{Projection, Projections};
use crate::store::{Head, StoreError, StreamState};

/// How many log events one step links, or how many entries it removes.
/// One step holds every node's appends back while it runs: a few tens of
/// milliseconds at this size, and a million events take 200 steps.
const STEP: i64 = 5_000;

/// What the head says of the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Projected {
    /// Linked by every append.
    pub(super) maintained: Projections,
    /// Being built from the log.
    pub(super) building: Projections,
}

impl Projected {
    /// From the head's `projections` and `building` columns; `None` for
    /// the first while no server has recorded any.
    pub(super) fn from_columns(maintained: Option<&str>, building: &str) -> Result<Option<Self>, StoreError> {
        let Some(maintained) = maintained else { return Ok(None) };
        Ok(Some(Self { maintained: parse(maintained)?, building: parse(building)? }))
    }
}

/// Reads the head's record of projections ([`Projections::words`]).
pub(super) fn parse(text: &str) -> Result<Projections, StoreError> {
    Projections::from_words(text)
        .map_err(|word| StoreError::Corrupt(format!("the database names an unknown projection '{word}'")))
}

/// What the head should say once a server started with `configured`
/// meets `current`, and whether a build starts from the beginning (a
/// projection joined it). With an empty log nothing needs building.
fn plan(current: Option<Projected>, configured: Projections, empty_log: bool) -> (Projected, bool) {
    let Some(current) = current else {
        // The first server on this database (or one created before builds
        // existed, recorded nothing): what it was started with.
        return (Projected { maintained: configured, building: Projections::NONE }, false);
    };
    let mut next = current;
    let mut restart = false;
    for projection in Projection::ALL {
        let maintained = current.maintained.is_enabled(projection);
        let building = current.building.is_enabled(projection);
        match (configured.is_enabled(projection), maintained, building) {
            (true, false, false) if empty_log => next.maintained.set(projection, true),
            (true, false, false) => {
                next.building.set(projection, true);
                restart = true;
            }
            // Turned off: the streams stay as they are, no longer linked;
            // turned on again, they are cleared and built anew.
            (false, true, _) => next.maintained.set(projection, false),
            (false, _, true) => next.building.set(projection, false),
            _ => {}
        }
    }
    (next, restart)
}

/// At start: records the projections a server was started with as the
/// ones every node maintains from now on, starting the build of those
/// turned on, and returns what the head says then.
pub(super) async fn reconcile(client: &mut Client, configured: Projections) -> Result<Projected, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let row = tx
        .query_one("SELECT next_position, projections, building FROM log_head FOR UPDATE", &[])
        .await
        .map_err(db_error)?;
    let current = Projected::from_columns(row.get(1), row.get(2))?;
    let (next, restart) = plan(current, configured, row.get::<_, i64>(0) == 0);
    if Some(next) != current {
        tx.execute(
            "UPDATE log_head SET projections = $1, building = $2, \
             build_cleared = build_cleared AND NOT $3, build_next = CASE WHEN $3 THEN 0 ELSE build_next END",
            &[&next.maintained.words(), &next.building.words(), &restart],
        )
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    if let Some(current) = current.filter(|current| *current != next) {
        tracing::warn!(
            was = current.maintained.words(),
            now = next.maintained.words(),
            building = next.building.words(),
            "this server was started with other projections than the database had: \
             every server on this database follows them from its next batch"
        );
    }
    Ok(next)
}

/// What one step did.
#[derive(Debug, Clone)]
pub(super) struct Progress {
    /// What the head says after the step.
    pub(super) projected: Projected,
    /// The next log position to link (0 while clearing), and the head.
    pub(super) next: u64,
    pub(super) head: u64,
    /// The commit the step made, if it changed anything, with the streams
    /// whose states it changed (`None`: any stream, a step that cleared).
    pub(super) committed: Option<(Head, Option<Vec<String>>)>,
}

/// How often a build logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The log lines of the build a writer takes part in: when it started and
/// when it last said how far it got.
#[derive(Debug, Default)]
pub(super) struct BuildLog(Option<(Instant, Instant)>);

impl BuildLog {
    /// Logs a step's progress: the build's start and end, and where it is
    /// every [`PROGRESS_EVERY`].
    pub(super) fn record(&mut self, progress: &Progress) {
        let now = Instant::now();
        let building = progress.projected.building != Projections::NONE;
        match self.0 {
            None if building => {
                tracing::info!(
                    projections = progress.projected.building.words(),
                    "building projections from the log"
                );
                self.0 = Some((now, now));
            }
            Some((started, _)) if !building => {
                tracing::info!(
                    events = progress.head,
                    seconds = started.elapsed().as_secs_f64(),
                    "projections built; maintained live from now on"
                );
                self.0 = None;
            }
            Some((started, reported)) if now.duration_since(reported) >= PROGRESS_EVERY => {
                tracing::info!(
                    projections = progress.projected.building.words(),
                    linked = progress.next,
                    of = progress.head,
                    "building projections"
                );
                self.0 = Some((started, now));
            }
            _ => {}
        }
    }
}

/// Takes the next step of the build the head records, as one transaction
/// (the caller rolls back on an error). A step when no build runs changes
/// nothing.
pub(super) async fn step(client: &Client, prepared: &Prepared) -> Result<Progress, StoreError> {
    client.batch_execute("BEGIN").await.map_err(db_error)?;
    let row = client
        .query_one(
            "SELECT next_position, commit_seq, projections, building, build_cleared, build_next \
             FROM log_head FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_error)?;
    let (head, commit_seq) = (unsigned(row.get(0)), unsigned(row.get(1)));
    let projected = Projected::from_columns(row.get(2), row.get(3))?
        .ok_or_else(|| StoreError::Corrupt("the database records no projections".into()))?;
    let (cleared, next) = (row.get::<_, bool>(4), unsigned(row.get(5)));
    let mut progress = Progress { projected, next, head, committed: None };
    if projected.building == Projections::NONE {
        client.batch_execute("ROLLBACK").await.map_err(db_error)?;
        return Ok(progress);
    }
    let new_head = Head { next_position: head, commit_seq: commit_seq + 1 };
    let (touched, now_cleared) = if cleared {
        let (linked_to, touched) = link(client, prepared, projected.building, next, head).await?;
        progress.next = linked_to;
        if linked_to >= head {
            progress.projected = Projected {
                maintained: union(projected.maintained, projected.building),
                building: Projections::NONE,
            };
        }
        (Some(touched), true)
    } else {
        progress.next = 0;
        (None, clear(client, projected.building).await?)
    };
    // A finished build leaves the columns as a new one starts them.
    let finished = progress.projected.building == Projections::NONE;
    client
        .execute(
            "UPDATE log_head SET commit_seq = $1, projections = $2, building = $3, build_cleared = $4, build_next = $5",
            &[
                &signed(new_head.commit_seq),
                &progress.projected.maintained.words(),
                &progress.projected.building.words(),
                &(now_cleared && !finished),
                &signed(if finished { 0 } else { progress.next }),
            ],
        )
        .await
        .map_err(db_error)?;
    let payload = match &touched {
        Some(streams) => super::listen::payload(new_head, streams),
        None => super::listen::payload_every(new_head),
    };
    client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map_err(db_error)?;
    client.batch_execute("COMMIT").await.map_err(db_error)?;
    progress.committed = Some((new_head, touched));
    Ok(progress)
}

fn union(a: Projections, b: Projections) -> Projections {
    let mut both = a;
    for projection in Projection::ALL {
        if b.is_enabled(projection) {
            both.set(projection, true);
        }
    }
    both
}

/// Removes about [`STEP`] entries of the streams of `building`, stream by
/// stream in name order, each one's from its last number down; a stream's
/// state goes with its last entry. Whether they are all gone.
///
/// Every stream with entries has a state (the writer writes both in one
/// transaction), so the states say what is left: a stream's `next_number`
/// is lowered to where its clearing got, and each delete is a range of the
/// primary key that starts and ends among live entries. (Deleting the
/// first rows of the projection's range of names instead made every step
/// scan past the index entries of every row deleted before it, which
/// stay in the index until a vacuum: a clearing quadratic in the
/// projection's size.)
///
/// What is cleared is links (`link_runs`): the API appends to no stream
/// of a projection, and an event written to one (the store's own tests
/// do) stays in the log, as it did in `$all` when such streams' entries
/// were rows of their own.
async fn clear(client: &Client, building: Projections) -> Result<bool, StoreError> {
    let mut budget = STEP;
    for projection in Projection::ALL.into_iter().filter(|projection| building.is_enabled(*projection)) {
        let (low, high) = range(projection);
        while budget > 0 {
            let streams = client
                .query(
                    "SELECT name, next_number FROM streams WHERE name >= $1 AND name < $2 ORDER BY name LIMIT 1000",
                    &[&low, &high],
                )
                .await
                .map_err(db_error)?;
            if streams.is_empty() {
                break;
            }
            let mut whole: Vec<String> = Vec::new();
            let mut part = None;
            for row in &streams {
                let (name, next_number): (String, i64) = (row.get(0), row.get(1));
                if next_number <= budget {
                    budget -= next_number;
                    whole.push(name);
                } else {
                    part = Some((name, next_number - budget));
                    budget = 0;
                    break;
                }
            }
            if !whole.is_empty() {
                client
                    .execute("DELETE FROM link_runs WHERE stream = ANY($1)", &[&whole])
                    .await
                    .map_err(db_error)?;
                client
                    .execute("DELETE FROM streams WHERE name = ANY($1)", &[&whole])
                    .await
                    .map_err(db_error)?;
            }
            if let Some((name, down_to)) = part {
                client.execute(links::REMOVE_FROM.as_str(), &[&name, &down_to]).await.map_err(db_error)?;
                client
                    .execute("UPDATE streams SET next_number = $2 WHERE name = $1", &[&name, &down_to])
                    .await
                    .map_err(db_error)?;
            }
        }
        if budget == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The names of a projection's streams, as a range in byte order.
fn range(projection: Projection) -> (String, String) {
    let (prefix, exact) = projection.stream_prefix();
    // `$streams` alone: no name lies between it and itself followed by
    // U+0001 (PostgreSQL's text holds no NUL).
    let high = if exact { format!("{prefix}\u{1}") } else { prefix_end(prefix).unwrap_or_default() };
    (prefix.to_owned(), high)
}

/// Links the events from position `next` on, up to [`STEP`] of them and
/// not past `head`, into the streams of `building`, as the appends that
/// wrote them would have. Where it got to, and the streams it changed.
async fn link(
    client: &Client,
    prepared: &Prepared,
    building: Projections,
    next: u64,
    head: u64,
) -> Result<(u64, Vec<String>), StoreError> {
    let end = next.saturating_add(STEP as u64).min(head);
    // Events a scavenge removed since they were logged are absent: nothing
    // to link, as in the other stores.
    let events = client
        .query(
            "SELECT position, stream, number, event_type, created_micros FROM events \
             WHERE position >= $1 AND position < $2 ORDER BY position",
            &[&signed(next), &signed(end)],
        )
        .await
        .map_err(db_error)?;
    let mut names: Vec<String> = Vec::new();
    let mut links: Vec<(String, &tokio_postgres::Row)> = Vec::new();
    for event in &events {
        let (stream, number): (&str, i64) = (event.get(1), event.get(2));
        // Event 0 created its stream: numbering never restarts, so this is
        // what the append decided.
        for link in building.links(stream, event.get(3), number == 0).into_iter().flatten() {
            let name = link.name();
            if !names.contains(&name) {
                names.push(name.clone());
            }
            links.push((name, event));
        }
    }
    let mut states: HashMap<String, StreamState> = HashMap::new();
    if !names.is_empty() {
        let statement = prepared.get(client, &states_query()).await.map_err(db_error)?;
        for row in client.query(&statement, &[&names]).await.map_err(db_error)? {
            states.insert(row.get(0), state_from_row(&row, 0));
        }
    }
    let mut runs = LinkRuns::default();
    for (name, event) in &links {
        let position: i64 = event.get(0);
        let state = states.entry(name.clone()).or_default();
        if state.next_number == 0 {
            state.created_position = unsigned(position);
        }
        runs.push((name, signed(state.next_number)), position, event.get(4), (event.get(1), event.get(2)));
        state.next_number += 1;
    }
    if !runs.is_empty() {
        runs.write(client, prepared).await.map_err(db_error)?;
        let changed: Vec<(&str, StreamState)> = names
            .iter()
            .filter_map(|name| states.get(name).map(|state| (name.as_str(), state.clone())))
            .collect();
        write_states(client, prepared, &changed).await?;
    }
    Ok((end, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> Projections {
        parse(text).unwrap()
    }

    fn projected(maintained: &str, building: &str) -> Projected {
        Projected { maintained: set(maintained), building: set(building) }
    }

    #[test]
    fn projections_are_recorded_in_words() {
        assert_eq!(Projections::default().words(), "by-category,by-event-type,streams");
        assert_eq!(Projections::NONE.words(), "none");
        for words in ["none", "streams", "by-category,streams", "by-category,by-event-type,streams"] {
            assert_eq!(set(words).words(), words);
        }
        assert!(parse("by-category,by-nothing").is_err());
    }

    #[test]
    fn a_server_with_other_projections_changes_them_for_every_node() {
        let all = Projections::default();
        // The first server records what it was started with.
        assert_eq!(plan(None, all, false), (projected("by-category,by-event-type,streams", "none"), false));
        // The same: nothing changes.
        let current = projected("by-category,by-event-type,streams", "none");
        assert_eq!(plan(Some(current), all, false), (current, false));
        // Turned off: no longer maintained.
        let (next, restart) = plan(Some(current), set("streams"), false);
        assert_eq!((next, restart), (projected("streams", "none"), false));
        // Turned on after events were written: built, from the beginning.
        let (next, restart) = plan(Some(next), all, false);
        assert_eq!((next, restart), (projected("streams", "by-category,by-event-type"), true));
        // Turned on with an empty log: maintained at once.
        assert_eq!(
            plan(Some(projected("none", "none")), all, true),
            (projected("by-category,by-event-type,streams", "none"), false)
        );
        // A build that goes on keeps its progress; one turned off stops.
        let building = projected("streams", "by-category,by-event-type");
        assert_eq!(plan(Some(building), all, false), (building, false));
        assert_eq!(
            plan(Some(building), set("by-category,streams"), false),
            (projected("streams", "by-category"), false)
        );
    }

    #[test]
    fn a_projections_streams_are_one_range_of_names() {
        assert_eq!(range(Projection::ByCategory), ("$ce-".to_owned(), "$ce.".to_owned()));
        assert_eq!(range(Projection::Streams), ("$streams".to_owned(), "$streams\u{1}".to_owned()));
        for (projection, name) in [(Projection::ByEventType, "$et-Placed"), (Projection::Streams, "$streams")]
        {
            let (low, high) = range(projection);
            assert!(low.as_str() <= name && name < high.as_str(), "{name}");
        }
        let (low, high) = range(Projection::Streams);
        assert!(!(low.as_str() <= "$streams2" && "$streams2" < high.as_str()));
    }
}
