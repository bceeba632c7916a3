//! The id index's tables (see `id_index`): each names its streams once,
//! then lists (id, stream index, event number) entries of fixed size, so
//! that a table sorted by id is searched in place.

use uuid::Uuid;

use super::wire::{Reader, put_short};
use super::{ID_ENTRY, ID_TABLE_V1};
use crate::store::StoreError;

/// Encodes an id table of `entries` (id, stream, event number), in the
/// order given.
pub fn encode_id_table<'s>(entries: impl IntoIterator<Item = (Uuid, &'s str, u64)>) -> Vec<u8> {
    let entries = entries.into_iter();
    let mut table = Vec::with_capacity(entries.size_hint().0 * ID_ENTRY);
    let mut streams: Vec<&str> = Vec::new();
    let mut indexes: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for (id, stream, number) in entries {
        let index = *indexes.entry(stream).or_insert_with(|| {
            streams.push(stream);
            (streams.len() - 1) as u32
        });
        table.extend_from_slice(id.as_bytes());
        table.extend_from_slice(&index.to_be_bytes());
        table.extend_from_slice(&number.to_be_bytes());
    }
    let names: usize = streams.iter().map(|s| 2 + s.len()).sum();
    let mut out = Vec::with_capacity(9 + names + table.len());
    out.push(ID_TABLE_V1);
    out.extend_from_slice(&(streams.len() as u32).to_be_bytes());
    for stream in streams {
        put_short(&mut out, stream.as_bytes());
    }
    out.extend_from_slice(&((table.len() / ID_ENTRY) as u32).to_be_bytes());
    out.extend_from_slice(&table);
    out
}

/// A decoded view of an id table.
#[derive(Debug)]
pub struct IdTable<'a> {
    streams: Vec<&'a str>,
    entries: &'a [u8],
}

pub fn decode_id_table(value: &[u8]) -> Result<IdTable<'_>, StoreError> {
    let mut reader = Reader::new(value);
    let version = reader.u8()?;
    if version != ID_TABLE_V1 {
        return Err(StoreError::Corrupt(format!("unknown id table version {version}")));
    }
    let stream_count = reader.u32()? as usize;
    let mut streams = Vec::with_capacity(stream_count.min(value.len() / 2));
    for _ in 0..stream_count {
        streams.push(reader.short_str()?);
    }
    let count = reader.u32()? as usize;
    let entries = reader.take(count.checked_mul(ID_ENTRY).ok_or_else(|| reader.short())?)?;
    Ok(IdTable { streams, entries })
}

impl<'a> IdTable<'a> {
    pub fn len(&self) -> usize {
        self.entries.len() / ID_ENTRY
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn id(&self, index: usize) -> Uuid {
        let at = index * ID_ENTRY;
        Uuid::from_slice(&self.entries[at..at + 16]).unwrap_or_default()
    }

    /// The table's streams, each once, in the order entries refer to them.
    pub fn streams(&self) -> &[&'a str] {
        &self.streams
    }

    /// Entry `index`: its id, the place of its stream in [`Self::streams`],
    /// and its event number.
    pub fn entry(&self, index: usize) -> Result<(Uuid, usize, u64), StoreError> {
        let entry = &self.entries[index * ID_ENTRY..(index + 1) * ID_ENTRY];
        let stream = u32::from_be_bytes(entry[16..20].try_into().unwrap_or_default()) as usize;
        if stream >= self.streams.len() {
            return Err(StoreError::Corrupt("an id table entry names a stream it lacks".into()));
        }
        let number = u64::from_be_bytes(entry[20..28].try_into().unwrap_or_default());
        Ok((self.id(index), stream, number))
    }

    /// Entry `index`: its id, stream and event number.
    pub fn get(&self, index: usize) -> Result<(Uuid, &'a str, u64), StoreError> {
        let (id, stream, number) = self.entry(index)?;
        Ok((id, self.streams[stream], number))
    }

    /// The number `id` was written as in `stream`, in a table sorted by
    /// id. An id written to several streams has an entry for each, side by
    /// side.
    pub fn number_in(&self, id: &Uuid, stream: &str) -> Result<Option<u64>, StoreError> {
        let first = self.partition_point(|entry| entry < *id);
        for index in (first..self.len()).take_while(|&index| self.id(index) == *id) {
            let (_, owner, number) = self.get(index)?;
            if owner == stream {
                return Ok(Some(number));
            }
        }
        Ok(None)
    }

    /// The first entry for which `before` is false, `before` being true of
    /// a prefix of the ids.
    fn partition_point(&self, before: impl Fn(Uuid) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = (low + high) / 2;
            if before(self.id(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        (0..self.len()).map(|index| self.id(index))
    }
}
