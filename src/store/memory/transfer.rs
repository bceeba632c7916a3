//! Exports and imports of the memory store: its entries as stored, and an
//! import that puts records back exactly where they were.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Data, Entry, Stream};
use crate::store::rules::{READ_BYTES, not_empty_target};
use crate::store::{ExportSnapshot, ImportItem, ImportStep, SpentId, StoreError, StoredEntry, StoredLink};

impl Data {
    pub(super) fn export_entries(
        &self,
        stream: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let Some(found) = self.streams.get(stream) else { return Ok(Vec::new()) };
        let mut entries = Vec::new();
        let mut bytes = 0;
        for number in from..below.min(found.state.next_number) {
            if entries.len() >= limit || bytes >= READ_BYTES {
                break;
            }
            let Some(entry) = found.entry(number) else { continue };
            entries.push(match entry {
                Entry::Event(event) => {
                    bytes += event.data.len() + event.metadata.len();
                    StoredEntry::Event(event.clone())
                }
                Entry::Link { position, created_micros, number: target_number, stream: target } => {
                    StoredEntry::Link(StoredLink {
                        stream: stream.to_owned(),
                        number,
                        target_position: *position,
                        created_micros: *created_micros,
                        target_stream: target.to_string(),
                        target_number: *target_number,
                    })
                }
            });
        }
        Ok(entries)
    }

    pub(super) fn export_spent_ids(&self, snapshot: &ExportSnapshot) -> Result<Vec<SpentId>, StoreError> {
        let below: HashMap<&str, u64> =
            snapshot.streams.iter().map(|(name, state)| (name.as_str(), state.next_number)).collect();
        let mut spent: Vec<SpentId> = (self.ids.iter())
            .filter(|((_, stream), number)| {
                below.get(stream.as_str()).is_some_and(|below| *number < below)
                    && self.streams.get(stream).is_some_and(|found| found.entry(**number).is_none())
            })
            .map(|((id, stream), number)| SpentId { stream: stream.clone(), number: *number, id: *id })
            .collect();
        spent.sort_unstable();
        Ok(spent)
    }

    pub(super) fn import(&mut self, step: ImportStep) -> Result<(), StoreError> {
        match step {
            ImportStep::Begin => {
                if !self.streams.is_empty() || !self.log.is_empty() {
                    return Err(not_empty_target());
                }
                self.importing = true;
            }
            _ if !self.importing => return Err(StoreError::Invalid("no import was begun".into())),
            ImportStep::Write(items) => {
                for item in items {
                    self.import_item(item)?;
                }
            }
            ImportStep::Finish { next_position, last_created_micros } => {
                let length = usize::try_from(next_position).map_err(|_| too_large())?;
                if self.log.len() > length {
                    return Err(StoreError::Invalid("an imported event lies beyond the head".into()));
                }
                self.log.resize(length, None);
                self.last_created_micros = last_created_micros;
                self.importing = false;
            }
        }
        Ok(())
    }

    fn import_item(&mut self, item: ImportItem) -> Result<(), StoreError> {
        match item {
            ImportItem::Stream { name, state } => {
                let length = usize::try_from(state.next_number).map_err(|_| too_large())?;
                self.streams.insert(name, Stream { entries: vec![None; length], state });
            }
            ImportItem::Entry(StoredEntry::Event(event)) => {
                let position = usize::try_from(event.position).map_err(|_| too_large())?;
                if self.log.len() <= position {
                    self.log.resize(position + 1, None);
                }
                self.log[position] = Some((Arc::clone(&event.stream), event.number));
                self.ids.insert((event.id, event.stream.to_string()), event.number);
                let stream = event.stream.to_string();
                let number = event.number;
                self.place(&stream, number, Entry::Event(event))?;
            }
            ImportItem::SpentId(spent) => {
                self.ids.insert((spent.id, spent.stream), spent.number);
            }
            ImportItem::Entry(StoredEntry::Link(link)) => {
                let entry = Entry::Link {
                    position: link.target_position,
                    created_micros: link.created_micros,
                    number: link.target_number,
                    stream: Arc::from(link.target_stream.as_str()),
                };
                self.place(&link.stream, link.number, entry)?;
            }
        }
        Ok(())
    }

    /// Puts `entry` at `number` of `stream`, whose state came first.
    fn place(&mut self, stream: &str, number: u64, entry: Entry) -> Result<(), StoreError> {
        let slot = (self.streams.get_mut(stream))
            .and_then(|found| usize::try_from(number).ok().and_then(|index| found.entries.get_mut(index)))
            .ok_or_else(|| {
                StoreError::Invalid(format!("entry {number} of '{stream}' is beyond its stream's state"))
            })?;
        *slot = Some(entry);
        Ok(())
    }
}

fn too_large() -> StoreError {
    StoreError::Invalid("a number too large for this machine".into())
}
