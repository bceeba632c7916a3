//! One batch's staging: the facts the writer reads under the head lock
//! (the states of every stream the batch may touch, the numbers its ids
//! already have), each request checked against them and against what the
//! batch staged before it, and the rows the batch writes, one multi-row
//! statement per table. Checks are the shared rules
//! ([`rules::check_append`], [`rules::decide_parts`], [`rules::deleted`]);
//! what an append stages mirrors the reference store's write.

use std::collections::{HashMap, HashSet};

use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::links::LinkRuns;
use super::prepared::Prepared;
use super::{STATE_COLUMNS, db_error, schema::error_text, signed, state_from_row, unsigned};
use crate::store::projections::{Projections, STREAMS_STREAM};
use crate::store::rules::{self, Part, Parts, SetsMetadata};
use crate::store::{Append, AppendOutcome, StoreError, StreamState, metadata};

/// The states a batch reads, by name (`$1`).
pub(super) fn states_query() -> String {
    format!("SELECT {STATE_COLUMNS} FROM streams WHERE name = ANY($1)")
}

/// The numbers a batch's ids already have in their streams (`$1` the
/// streams, `$2` the ids, pairwise): one probe of the primary key per id.
/// Written as a lateral subquery so that its plan cannot be anything else
/// (the writer's session runs generic plans with sequential scans
/// disabled, see [`super::writer::Writer::new`]): a join would let the
/// planner choose a hash join over a full scan of `event_ids`, costed when
/// the table was small and kept while it grows.
pub(super) const IDS_QUERY: &str = "SELECT k.stream, k.id, i.number \
     FROM unnest($1::text[], $2::uuid[]) AS k(stream, id) \
     CROSS JOIN LATERAL (SELECT number FROM event_ids WHERE stream = k.stream AND id = k.id) i";

/// What a batch looks up under the head lock ([`Staging::lookups`]).
pub(super) struct Lookups {
    pub(super) names: Vec<String>,
    pub(super) id_streams: Vec<String>,
    pub(super) ids: Vec<Uuid>,
}

/// What one request asks and where its answer goes, while its batch runs.
pub(super) enum Request {
    Append(Vec<Append>, bool),
    Delete(String, crate::store::ExpectedVersion, bool),
}

/// One batch's view of the store: the states and ids it read, with what
/// it staged on top, and the rows it will write.
pub(super) struct Staging {
    projections: Projections,
    /// Every stream the batch may touch: its state, `None` if never written.
    states: HashMap<String, Option<StreamState>>,
    /// The states the batch changed, to write.
    changed: HashSet<String>,
    /// The number every id of the batch has in its stream, if any.
    ids: HashMap<(String, Uuid), u64>,
    pub(super) next_position: u64,
    /// Every event of the batch is created at this time.
    pub(super) created_micros: i64,
    events: EventRows,
    links: LinkRuns,
    new_ids: Vec<(String, Uuid, u64)>,
    /// Streams whose waiters the commit wakes.
    pub(super) touched: HashSet<String>,
}

/// The `events` rows a batch writes, column by column (for `unnest`).
#[derive(Default)]
struct EventRows {
    position: Vec<i64>,
    stream: Vec<String>,
    number: Vec<i64>,
    id: Vec<Uuid>,
    event_type: Vec<String>,
    is_json: Vec<bool>,
    metadata_is_json: Vec<bool>,
    data: Vec<bytes::Bytes>,
    metadata: Vec<bytes::Bytes>,
}

impl Staging {
    pub(super) fn new(projections: Projections, next_position: u64, created_micros: i64) -> Self {
        Self {
            projections,
            states: HashMap::new(),
            changed: HashSet::new(),
            ids: HashMap::new(),
            next_position,
            created_micros,
            events: EventRows::default(),
            links: LinkRuns::default(),
            new_ids: Vec::new(),
            touched: HashSet::new(),
        }
    }

    /// What the batch must read under the head lock: the streams whose
    /// states its requests may need, and each event id with its stream.
    pub(super) fn lookups(projections: Projections, requests: &[Request]) -> Lookups {
        let mut names = HashSet::new();
        let (mut id_streams, mut ids) = (Vec::new(), Vec::new());
        for request in requests {
            match request {
                Request::Append(appends, _) => {
                    for append in appends {
                        names_of(projections, append, &mut names);
                        for event in &append.events {
                            id_streams.push(append.stream.clone());
                            ids.push(event.id);
                        }
                    }
                }
                Request::Delete(stream, ..) => {
                    names.insert(stream.clone());
                }
            }
        }
        Lookups { names: names.into_iter().collect(), id_streams, ids }
    }

    /// Takes what the lookups found: rows of [`states_query`] and of
    /// [`IDS_QUERY`] for `lookups`.
    pub(super) fn load(&mut self, lookups: Lookups, states: Vec<Row>, numbers: Vec<Row>) {
        for row in states {
            self.states.insert(row.get(0), Some(state_from_row(&row, 0)));
        }
        for name in lookups.names {
            self.states.entry(name).or_insert(None);
        }
        for row in numbers {
            self.ids.insert((row.get(0), row.get(1)), unsigned(row.get(2)));
        }
    }

    /// A stream's state as the batch sees it now.
    fn state(&self, stream: &str) -> Result<StreamState, StoreError> {
        match self.states.get(stream) {
            Some(state) => Ok(state.clone().unwrap_or_default()),
            None => Err(StoreError::Io(format!("the writer did not read the state of '{stream}'"))),
        }
    }

    fn state_mut(&mut self, stream: &str) -> &mut StreamState {
        self.changed.insert(stream.to_owned());
        self.states.entry(stream.to_owned()).or_default().get_or_insert_with(StreamState::default)
    }

    fn check(&self, append: &Append) -> Result<Part<SetsMetadata>, StoreError> {
        rules::check_append(
            append,
            |stream| self.state(stream),
            || {
                Ok(append
                    .events
                    .iter()
                    .map(|event| self.ids.get(&(append.stream.clone(), event.id)).copied())
                    .collect())
            },
        )
    }

    pub(super) fn append(&mut self, append: &Append) -> Result<AppendOutcome, StoreError> {
        match self.check(append)? {
            Part::Repeat(outcome) => Ok(outcome),
            Part::Write(settings) => Ok(self.write_append(append, settings)),
        }
    }

    /// Every part or none (see [`rules::decide_parts`]).
    pub(super) fn append_all(&mut self, appends: &[Append]) -> Result<Vec<AppendOutcome>, StoreError> {
        rules::check_parts(appends)?;
        let parts = appends.iter().map(|append| self.check(append)).collect();
        match rules::decide_parts(appends, parts)? {
            Parts::Repeat(outcomes) => Ok(outcomes),
            Parts::PartlyRepeated(indexes) => {
                Err(rules::partly_repeated(appends, &indexes, |stream| self.state(stream)))
            }
            Parts::Write(settings) => Ok(appends
                .iter()
                .zip(settings)
                .map(|(append, settings)| self.write_append(append, settings))
                .collect()),
        }
    }

    pub(super) fn delete(
        &mut self,
        stream: &str,
        expected: crate::store::ExpectedVersion,
        hard: bool,
    ) -> Result<(), StoreError> {
        let state = rules::deleted(self.state(stream)?, expected, hard)?;
        *self.state_mut(stream) = state;
        self.touched.insert(stream.to_owned());
        Ok(())
    }

    /// Stages a checked append, as the reference store writes one; nothing
    /// here fails.
    fn write_append(&mut self, append: &Append, settings: SetsMetadata) -> AppendOutcome {
        let stream = append.stream.as_str();
        let first_number = self.state_mut(stream).next_number;
        let first_position = self.next_position;
        let is_new_stream = first_number == 0;
        for event in &append.events {
            let position = self.next_position;
            self.next_position += 1;
            let state = self.state_mut(stream);
            let number = state.next_number;
            state.next_number += 1;
            let rows = &mut self.events;
            rows.position.push(signed(position));
            rows.stream.push(stream.to_owned());
            rows.number.push(signed(number));
            rows.id.push(event.id);
            rows.event_type.push(event.event_type.clone());
            rows.is_json.push(event.is_json);
            rows.metadata_is_json.push(event.metadata_is_json);
            rows.data.push(event.data.clone());
            rows.metadata.push(event.metadata.clone());
            self.ids.insert((stream.to_owned(), event.id), number);
            self.new_ids.push((stream.to_owned(), event.id, number));
            let creates_stream = is_new_stream && number == 0;
            for link in
                self.projections.links(stream, &event.event_type, creates_stream).into_iter().flatten()
            {
                // A link neither stops at its system stream's tombstone nor
                // undoes its soft delete, as in the other stores.
                let name = link.name();
                let system = self.state_mut(&name);
                if system.next_number == 0 {
                    system.created_position = position;
                }
                let link_number = system.next_number;
                system.next_number += 1;
                self.links.push(
                    (&name, signed(link_number)),
                    signed(position),
                    self.created_micros,
                    (stream, signed(number)),
                );
                self.touched.insert(name);
            }
        }
        let state = self.state_mut(stream);
        if is_new_stream {
            state.created_position = first_position;
        }
        state.soft_deleted = false;
        let last_number = state.next_number - 1;
        self.touched.insert(stream.to_owned());
        if let Some((described, mut settings)) = settings {
            settings.metadata_number = Some(last_number);
            self.state_mut(&described).settings = settings;
            self.touched.insert(described);
        }
        AppendOutcome { first_number, last_number, position: Some(first_position), idempotent: false }
    }

    /// Writes what was staged: one statement per table, pipelined.
    pub(super) async fn write(&self, tx: &Client, prepared: &Prepared) -> Result<(), StoreError> {
        tokio::try_join!(
            self.write_events(tx, prepared),
            async { self.links.write(tx, prepared).await.map_err(write_error) },
            self.write_ids(tx, prepared),
            self.write_states(tx, prepared)
        )?;
        Ok(())
    }

    async fn write_events(&self, tx: &Client, prepared: &Prepared) -> Result<(), StoreError> {
        let rows = &self.events;
        if !rows.position.is_empty() {
            let data: Vec<&[u8]> = rows.data.iter().map(|data| &data[..]).collect();
            let metadata: Vec<&[u8]> = rows.metadata.iter().map(|metadata| &metadata[..]).collect();
            tx.execute(
                &prepared.get(tx, "INSERT INTO events (position, stream, number, id, event_type, created_micros, is_json, \
                 metadata_is_json, data, metadata) \
                 SELECT position, stream, number, id, event_type, $10, is_json, metadata_is_json, data, metadata \
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::bool[], \
                 $7::bool[], $8::bytea[], $9::bytea[]) \
                 AS t(position, stream, number, id, event_type, is_json, metadata_is_json, data, metadata)").await.map_err(write_error)?,
                &[
                    &rows.position,
                    &rows.stream,
                    &rows.number,
                    &rows.id,
                    &rows.event_type,
                    &rows.is_json,
                    &rows.metadata_is_json,
                    &data,
                    &metadata,
                    &self.created_micros,
                ],
            )
            .await
            .map_err(write_error)?;
        }
        Ok(())
    }

    async fn write_ids(&self, tx: &Client, prepared: &Prepared) -> Result<(), StoreError> {
        if !self.new_ids.is_empty() {
            let streams: Vec<&str> = self.new_ids.iter().map(|(stream, ..)| stream.as_str()).collect();
            let ids: Vec<Uuid> = self.new_ids.iter().map(|(_, id, _)| *id).collect();
            let numbers: Vec<i64> = self.new_ids.iter().map(|(.., number)| signed(*number)).collect();
            tx.execute(
                &prepared.get(tx, "INSERT INTO event_ids (stream, id, number) SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[])").await.map_err(write_error)?,
                &[&streams, &ids, &numbers],
            )
            .await
            .map_err(write_error)?;
        }
        Ok(())
    }

    async fn write_states(&self, tx: &Client, prepared: &Prepared) -> Result<(), StoreError> {
        let states: Vec<(&str, StreamState)> = self
            .changed
            .iter()
            .filter_map(|name| {
                self.states.get(name).and_then(Clone::clone).map(|state| (name.as_str(), state))
            })
            .collect();
        write_states(tx, prepared, &states).await
    }
}

/// Writes `states` (inserted, or updated where the stream has one) in one
/// statement.
pub(super) async fn write_states(
    tx: &Client,
    prepared: &Prepared,
    states: &[(&str, StreamState)],
) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let column =
        |get: fn(&StreamState) -> u64| states.iter().map(|(_, s)| signed(get(s))).collect::<Vec<_>>();
    let setting = |get: fn(&StreamState) -> Option<u64>| {
        states.iter().map(|(_, s)| get(s).map(signed)).collect::<Vec<Option<i64>>>()
    };
    let flag = |get: fn(&StreamState) -> bool| states.iter().map(|(_, s)| get(s)).collect::<Vec<_>>();
    let names: Vec<&str> = states.iter().map(|(name, _)| *name).collect();
    tx.execute(
        &prepared.get(tx, "INSERT INTO streams (name, next_number, created_position, deleted_before, soft_deleted, tombstoned, \
         max_count, max_age_secs, truncate_before, cache_control_secs, metadata_number, not_public) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bool[], $6::bool[], \
         $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bool[]) \
         ON CONFLICT (name) DO UPDATE SET next_number = EXCLUDED.next_number, \
         created_position = EXCLUDED.created_position, deleted_before = EXCLUDED.deleted_before, \
         soft_deleted = EXCLUDED.soft_deleted, tombstoned = EXCLUDED.tombstoned, \
         max_count = EXCLUDED.max_count, max_age_secs = EXCLUDED.max_age_secs, \
         truncate_before = EXCLUDED.truncate_before, cache_control_secs = EXCLUDED.cache_control_secs, \
         metadata_number = EXCLUDED.metadata_number, not_public = EXCLUDED.not_public").await.map_err(write_error)?,
        &[
            &names,
            &column(|s| s.next_number),
            &column(|s| s.created_position),
            &column(|s| s.deleted_before),
            &flag(|s| s.soft_deleted),
            &flag(|s| s.tombstoned),
            &setting(|s| s.settings.max_count),
            &setting(|s| s.settings.max_age_secs),
            &setting(|s| s.settings.truncate_before),
            &setting(|s| s.settings.cache_control_secs),
            &setting(|s| s.settings.metadata_number),
            &flag(|s| s.settings.not_public),
        ],
    )
    .await
    .map_err(write_error)?;
    Ok(())
}

/// The streams an append may read or change the state of.
fn names_of(projections: Projections, append: &Append, names: &mut HashSet<String>) {
    names.insert(append.stream.clone());
    if let Some(basis) = &append.access {
        names.insert(basis.stream.clone());
    }
    if let Some(described) = metadata::described_stream(&append.stream) {
        names.insert(described.to_owned());
    }
    for event in &append.events {
        // As if every event created its stream: `$streams` is then read
        // whenever it might be linked to.
        for link in projections.links(&append.stream, &event.event_type, true).into_iter().flatten() {
            names.insert(link.name());
        }
    }
    if projections.streams {
        names.insert(STREAMS_STREAM.to_owned());
    }
}

/// A write that failed. Refused by the database: with the head locked and
/// every state read under it, a key already taken means the store is not
/// what this writer believes, which it reports rather than guesses about.
/// Cut short by the database going away (a lost connection, or a backend
/// terminated because its postmaster died, `57P01`): the transaction did
/// not commit, and the request may be retried (`503`).
fn write_error(error: tokio_postgres::Error) -> StoreError {
    if super::errors::is_unavailable(&error) {
        db_error(error)
    } else {
        StoreError::Corrupt(format!("PostgreSQL refused a write: {}", error_text(&error)))
    }
}
