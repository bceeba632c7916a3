//! Exports and imports of the PostgreSQL store: the entries of a stream as
//! stored (events joined to their payloads, links as they are), and an
//! import that loads each step with `COPY … FROM STDIN` (binary), one
//! transaction per step, then sets the head.
//!
//! An import is for an offline database: nothing else may write to it
//! meanwhile (other nodes stopped). `Begin` refuses a database that holds
//! a stream or has used a position, before anything is written.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::LazyLock;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::links::{LinkRuns, RUN};
use super::{db_error, signed, unsigned};
use crate::store::rules::{READ_BYTES, not_empty_target};
use crate::store::{ExportSnapshot, ImportItem, RecordedEvent, SpentId, StoreError, StoredEntry, StoredLink};

/// The first `$4` entries of `$1` numbered from `$2` and below `$3`, each
/// side of the union limited first, so that a chunk of a long stream
/// reads one chunk of each index, not the rest of the stream. Each side
/// gives the first `$4` of its own entries (or all): the events by their
/// index; the links from the first `$4 + 20` runs, since fewer than 20 of
/// the runs from `$2 - 20` on can end before `$2`, and every other one
/// gives at least one link.
static EXPORT_ENTRIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT * FROM ( \
           (SELECT number, position, created_micros, NULL::text, NULL::bigint, id, event_type, is_json, \
                   metadata_is_json, data, metadata \
            FROM events WHERE stream = $1 AND number >= $2::bigint AND number < $3::bigint ORDER BY number LIMIT $4) \
           UNION ALL \
           (SELECT r.first_number + u.i - 1, u.position, r.created_micros, u.link_stream, u.link_number, \
                   NULL::uuid, NULL::text, NULL::bool, NULL::bool, NULL::bytea, NULL::bytea \
            FROM (SELECT * FROM link_runs WHERE stream = $1 AND first_number > $2 - {RUN} AND first_number < $3 \
                  ORDER BY first_number LIMIT $4 + {RUN}) r \
            CROSS JOIN LATERAL unnest(r.positions, r.link_streams, r.link_numbers) \
                 WITH ORDINALITY AS u(position, link_stream, link_number, i) \
            WHERE r.first_number + u.i - 1 >= $2 AND r.first_number + u.i - 1 < $3) \
         ) s ORDER BY 1 LIMIT $4"
    )
});

/// See [`crate::store::Store::export_entries`]: one index range scan of
/// `events` by stream and one of `link_runs` ([`EXPORT_ENTRIES`]).
pub(super) async fn export_entries(
    client: &Client,
    stream: &str,
    from: u64,
    below: u64,
    limit: usize,
) -> Result<Vec<StoredEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(EXPORT_ENTRIES.as_str(), &[&stream, &signed(from), &signed(below), &limit])
        .await
        .map_err(db_error)?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for row in rows {
        if bytes >= READ_BYTES {
            break;
        }
        let number = unsigned(row.get(0));
        let position = unsigned(row.get(1));
        let created_micros: i64 = row.get(2);
        if let Some(target_stream) = row.get::<_, Option<String>>(3) {
            entries.push(StoredEntry::Link(StoredLink {
                stream: stream.to_owned(),
                number,
                target_position: position,
                created_micros,
                target_stream,
                target_number: unsigned(row.get::<_, Option<i64>>(4).unwrap_or_default()),
            }));
            continue;
        }
        let id = row.get::<_, Option<uuid::Uuid>>(5).ok_or_else(|| {
            StoreError::Corrupt(format!("entry {number} of '{stream}' has no event at position {position}"))
        })?;
        let data: Vec<u8> = row.get(9);
        let metadata: Vec<u8> = row.get(10);
        bytes += data.len() + metadata.len();
        entries.push(StoredEntry::Event(RecordedEvent {
            stream: stream.into(),
            number,
            position,
            id,
            event_type: row.get::<_, String>(6).into(),
            created_micros,
            is_json: row.get(7),
            metadata_is_json: row.get(8),
            data: data.into(),
            metadata: metadata.into(),
        }));
    }
    Ok(entries)
}

/// See [`crate::store::Store::export_spent_ids`]: the ids without an
/// entry left, one scan of `event_ids`.
pub(super) async fn export_spent_ids(
    client: &Client,
    snapshot: &ExportSnapshot,
) -> Result<Vec<SpentId>, StoreError> {
    let below: HashMap<&str, u64> =
        snapshot.streams.iter().map(|(name, state)| (name.as_str(), state.next_number)).collect();
    let rows = client
        .query(
            "SELECT i.stream, i.number, i.id FROM event_ids i WHERE NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.stream = i.stream AND e.number = i.number)",
            &[],
        )
        .await
        .map_err(db_error)?;
    let mut spent: Vec<SpentId> = (rows.iter())
        .map(|row| SpentId { stream: row.get(0), number: unsigned(row.get(1)), id: row.get(2) })
        .filter(|spent| below.get(spent.stream.as_str()).is_some_and(|below| spent.number < *below))
        .collect();
    spent.sort_unstable();
    Ok(spent)
}

/// Refuses a database that holds anything.
pub(super) async fn begin(client: &Client) -> Result<(), StoreError> {
    let row = client
        .query_one(
            "SELECT next_position, EXISTS (SELECT 1 FROM streams), EXISTS (SELECT 1 FROM events) FROM log_head",
            &[],
        )
        .await
        .map_err(db_error)?;
    let (next_position, streams, events): (i64, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if next_position > 0 || streams || events {
        return Err(not_empty_target());
    }
    Ok(())
}

/// Loads `items` in one transaction, a `COPY` per table.
pub(super) async fn write(client: &mut Client, items: Vec<ImportItem>) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let (mut streams, mut events, mut entries, mut spent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            ImportItem::Stream { name, state } => streams.push((name, state)),
            ImportItem::SpentId(id) => spent.push(id),
            ImportItem::Entry(StoredEntry::Event(event)) => events.push(event),
            ImportItem::Entry(StoredEntry::Link(link)) => entries.push(link),
        }
    }
    copy(
        &tx,
        "COPY streams (name, next_number, created_position, deleted_before, soft_deleted, tombstoned, \
         max_count, max_age_secs, truncate_before, cache_control_secs, metadata_number, not_public) \
         FROM STDIN (FORMAT binary)",
        &[
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BOOL,
            Type::BOOL,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BOOL,
        ],
        streams.iter().map(|(name, state)| {
            let settings = &state.settings;
            let optional = |value: Option<u64>| value.map(signed);
            let row: Vec<Box<dyn ToSql + Sync + Send>> = vec![
                Box::new(name.clone()),
                Box::new(signed(state.next_number)),
                Box::new(signed(state.created_position)),
                Box::new(signed(state.deleted_before)),
                Box::new(state.soft_deleted),
                Box::new(state.tombstoned),
                Box::new(optional(settings.max_count)),
                Box::new(optional(settings.max_age_secs)),
                Box::new(optional(settings.truncate_before)),
                Box::new(optional(settings.cache_control_secs)),
                Box::new(optional(settings.metadata_number)),
                Box::new(settings.not_public),
            ];
            row
        }),
    )
    .await?;
    copy(
        &tx,
        "COPY events (position, stream, number, id, event_type, created_micros, is_json, metadata_is_json, \
         data, metadata) FROM STDIN (FORMAT binary)",
        &[
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::UUID,
            Type::TEXT,
            Type::INT8,
            Type::BOOL,
            Type::BOOL,
            Type::BYTEA,
            Type::BYTEA,
        ],
        events.iter().map(|event| {
            let row: Vec<Box<dyn ToSql + Sync + Send>> = vec![
                Box::new(signed(event.position)),
                Box::new(event.stream.to_string()),
                Box::new(signed(event.number)),
                Box::new(event.id),
                Box::new(event.event_type.to_string()),
                Box::new(event.created_micros),
                Box::new(event.is_json),
                Box::new(event.metadata_is_json),
                Box::new(event.data.to_vec()),
                Box::new(event.metadata.to_vec()),
            ];
            row
        }),
    )
    .await?;
    let mut runs = LinkRuns::default();
    for link in &entries {
        runs.push(
            (&link.stream, signed(link.number)),
            signed(link.target_position),
            link.created_micros,
            (&link.target_stream, signed(link.target_number)),
        );
    }
    copy(
        &tx,
        "COPY link_runs (stream, first_number, created_micros, positions, link_streams, link_numbers) \
         FROM STDIN (FORMAT binary)",
        &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8_ARRAY, Type::TEXT_ARRAY, Type::INT8_ARRAY],
        runs.into_rows().map(|run| {
            let row: Vec<Box<dyn ToSql + Sync + Send>> = vec![
                Box::new(run.stream),
                Box::new(run.first_number),
                Box::new(run.created_micros),
                Box::new(run.positions),
                Box::new(run.link_streams),
                Box::new(run.link_numbers),
            ];
            row
        }),
    )
    .await?;
    copy(
        &tx,
        "COPY event_ids (stream, id, number) FROM STDIN (FORMAT binary)",
        &[Type::TEXT, Type::UUID, Type::INT8],
        events
            .iter()
            .map(|event| (event.stream.to_string(), event.id, event.number))
            .chain(spent.into_iter().map(|spent| (spent.stream, spent.id, spent.number)))
            .map(|(stream, id, number)| {
                let row: Vec<Box<dyn ToSql + Sync + Send>> =
                    vec![Box::new(stream), Box::new(id), Box::new(signed(number))];
                row
            }),
    )
    .await?;
    tx.commit().await.map_err(db_error)
}

/// Sets the head once every step is loaded.
pub(super) async fn finish(
    client: &Client,
    next_position: u64,
    last_created_micros: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE log_head SET next_position = $1, commit_seq = commit_seq + 1, last_created_micros = $2",
            &[&signed(next_position), &last_created_micros],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Streams `rows` into `statement`, a `COPY … FROM STDIN (FORMAT binary)`.
async fn copy(
    tx: &Transaction<'_>,
    statement: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<Box<dyn ToSql + Sync + Send>>>,
) -> Result<(), StoreError> {
    let sink = tx.copy_in(statement).await.map_err(db_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|value| &**value as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&values).await.map_err(db_error)?;
    }
    writer.finish().await.map_err(db_error)?;
    Ok(())
}
