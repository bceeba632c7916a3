//! Exports and imports of the sled store (see `crate::transfer` for the
//! file format and the commands).
//!
//! - An export reads the stream states and the head between two of the
//!   writer's batches ([`snapshot`]), so they are of one moment; then the
//!   entries of each stream below the number its state had then
//!   ([`export_entries`]), on the caller's task. Entries are immutable
//!   and only a scavenge removes them, so with no scavenge running (the
//!   server holds one off during a backup) what is read is exactly what
//!   the store held at the snapshot, however many appends, deletes and
//!   metadata changes follow it.
//! - An import runs in the writer ([`Importing::stage`]), a step per
//!   command, each one batch: records and links under their own keys (not
//!   in runs: reads take either), a log entry per position, the stream
//!   states, and each step's event ids as one segment of the id index,
//!   as a commit of appends adds them. `Begin` refuses a store that holds
//!   anything, before anything is written.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use uuid::Uuid;

use super::codec::{self, Entry, EventFields};
use super::entries::{stored_entry, visit_stored_values};
use super::id_index::IdOwners;
use super::keys;
use crate::store::rules::{READ_BYTES, not_empty_target};
use crate::store::{
    Direction, ExportSnapshot, Head, ImportItem, ImportStep, SpentId, StoreError, StoredEntry, StoredLink,
};

/// Every stream's state and `head`, read by the writer between batches.
/// The states are held in memory: a few dozen bytes a stream.
pub(super) fn snapshot(db: &sled::Db, head: Head) -> Result<ExportSnapshot, StoreError> {
    let mut streams = Vec::new();
    for item in db.scan_prefix([keys::STREAM]) {
        let (key, value) = item?;
        let name =
            keys::stream_name(&key).ok_or_else(|| StoreError::Corrupt("a stream key is not UTF-8".into()))?;
        let (state, _) = codec::decode_state(&value)?;
        streams.push((name.to_owned(), state));
    }
    Ok(ExportSnapshot { head, streams, hold: Default::default() })
}

/// See [`crate::store::Store::export_entries`].
pub(super) fn export_entries(
    db: &sled::Db,
    stream: &str,
    from: u64,
    below: u64,
    limit: usize,
) -> Result<Vec<StoredEntry>, StoreError> {
    let mut found = Vec::new();
    let Some(high) = below.checked_sub(1) else { return Ok(found) };
    if from > high {
        return Ok(found);
    }
    let mut bytes = 0usize;
    let mut names = codec::Names::default();
    visit_stored_values(db, stream, from, high, Direction::Forward, |first, value| {
        codec::decode_entries_within(value, first, from, high, &mut names, &mut |number, entry| {
            found.push(match entry {
                Entry::Event(event) => {
                    bytes += event.data.len() + event.metadata.len();
                    StoredEntry::Event(event)
                }
                Entry::Link { position, created_micros, number: target_number, stream: target_stream } => {
                    StoredEntry::Link(StoredLink {
                        stream: stream.to_owned(),
                        number,
                        target_position: position,
                        created_micros,
                        target_stream,
                        target_number,
                    })
                }
            });
            Ok(())
        })?;
        Ok(if found.len() >= limit || bytes >= READ_BYTES {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(found)
}

/// See [`crate::store::Store::export_spent_ids`]. The id index is keyed by
/// id, not by stream, so this is one scan of it, in key order, as
/// `IdFilter::fill` scans it (the order in which merges move ids, so none
/// is missed while they go on; one met twice is kept once), keeping the
/// ids whose entry is gone. `below` holds each stream's next number as of
/// the export's snapshot.
///
/// A scan of the whole index, with a lookup per id below its stream's
/// number: seconds on a store of millions of events, so it runs on a
/// blocking thread (see `PersistentStore::export_spent_ids`), never on a
/// thread that serves requests.
pub(super) fn export_spent_ids(
    db: &sled::Db,
    below: &HashMap<String, u64>,
) -> Result<Vec<SpentId>, StoreError> {
    let mut spent = Vec::new();
    let mut keep = |stream: &str, number: u64, id: Uuid| -> Result<(), StoreError> {
        if below.get(stream).is_some_and(|below| number < *below)
            && stored_entry(db, stream, number)?.is_none()
        {
            spent.push(SpentId { stream: stream.to_owned(), number, id });
        }
        Ok(())
    };
    for item in db.scan_prefix([keys::EVENT_ID]) {
        let (key, value) = item?;
        let id = key.get(1..).and_then(|bytes| Uuid::from_slice(bytes).ok());
        let id = id.ok_or_else(|| StoreError::Corrupt("an event id key is malformed".into()))?;
        let (stream, number) = codec::decode_event_ref(&value)?;
        keep(&stream, number, id)?;
    }
    for keyspace in [keys::ID_SEGMENT, keys::ID_RUN] {
        for value in db.scan_prefix([keyspace]).values() {
            let value = value?;
            let table = codec::decode_id_table(&value)?;
            for index in 0..table.len() {
                let (id, stream, number) = table.get(index)?;
                keep(stream, number, id)?;
            }
        }
    }
    spent.sort_unstable();
    spent.dedup();
    Ok(spent)
}

/// The writer's record of an import under way.
#[derive(Debug, Default)]
pub(super) struct Importing {
    /// `Begin` found the store empty; steps are taken until `Finish`.
    begun: bool,
}

/// What one import step staged into the writer's batch.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// The event ids it wrote, for the id index's segment.
    pub ids: IdOwners,
    pub bytes: u64,
    /// At `Finish`: the next position and the newest creation time.
    pub finished: Option<(u64, i64)>,
}

impl Importing {
    /// Stages `step` into `batch`, as commit `commit_seq` of a store at
    /// `head`. Refuses (staging nothing) an import into a store that holds
    /// anything, and steps of an import never begun.
    pub(super) fn stage(
        &mut self,
        db: &sled::Db,
        head: Head,
        step: ImportStep,
        commit_seq: u64,
        batch: &mut sled::Batch,
    ) -> Result<Staged, StoreError> {
        let mut staged = Staged::default();
        let mut put = |key: &[u8], value: Vec<u8>, staged: &mut Staged| {
            staged.bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
        };
        match step {
            ImportStep::Begin => {
                let holds_streams = db.scan_prefix([keys::STREAM]).next().transpose()?.is_some();
                if head.next_position > 0 || holds_streams {
                    return Err(not_empty_target());
                }
                self.begun = true;
            }
            _ if !self.begun => return Err(StoreError::Invalid("no import was begun".into())),
            ImportStep::Write(items) => {
                for item in items {
                    match item {
                        ImportItem::Stream { name, state } => {
                            put(&keys::stream(&name), codec::encode_state(&state, commit_seq), &mut staged);
                        }
                        ImportItem::Entry(StoredEntry::Event(event)) => {
                            let record = codec::encode_event(&EventFields {
                                stream: &event.stream,
                                number: event.number,
                                position: event.position,
                                id: &event.id,
                                event_type: &event.event_type,
                                created_micros: event.created_micros,
                                is_json: event.is_json,
                                metadata_is_json: event.metadata_is_json,
                                data: &event.data,
                                metadata: &event.metadata,
                            });
                            put(&keys::event(&event.stream, event.number), record, &mut staged);
                            let log_entry = codec::encode_log_entry(&event.stream, event.number, 1);
                            put(&keys::log(event.position), log_entry, &mut staged);
                            staged.ids.insert(event.id, (Arc::clone(&event.stream), event.number));
                        }
                        ImportItem::SpentId(spent) => {
                            staged.ids.insert(spent.id, (Arc::from(spent.stream.as_str()), spent.number));
                        }
                        ImportItem::Entry(StoredEntry::Link(link)) => {
                            let entry = codec::encode_link_entry(
                                link.target_position,
                                link.created_micros,
                                link.target_number,
                                &link.target_stream,
                            );
                            put(&keys::event(&link.stream, link.number), entry, &mut staged);
                        }
                    }
                }
            }
            ImportStep::Finish { next_position, last_created_micros } => {
                put(
                    &keys::counter(keys::NEXT_POSITION),
                    keys::u64_value(next_position).to_vec(),
                    &mut staged,
                );
                staged.finished = Some((next_position, last_created_micros));
                self.begun = false;
            }
        }
        put(&keys::counter(keys::COMMIT_SEQ), keys::u64_value(commit_seq).to_vec(), &mut staged);
        Ok(staged)
    }
}
