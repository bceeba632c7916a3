//! A batch's undo record: what the keys it writes held before it, so that a
//! batch sled applied only in part can be taken back (see `sled::undo`).

use super::UNDO_V1;
use super::wire::{Reader, put_long, put_short};
use crate::store::StoreError;

/// The undo of one batch, as stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UndoRecord {
    /// The streams whose state the batch changes, with the state each had
    /// (`None`: none), stored as a state is. The batch writes their state
    /// keys and fills their numbers past the last they had.
    pub streams: Vec<(String, Option<Vec<u8>>)>,
    /// Other keys the batch overwrites or adds one by one, with the value each
    /// held before it (`None`: absent).
    pub restore: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Key ranges, `start..end`, that held nothing before the batch filled
    /// them: the log past its head, a stream's numbers past its last.
    pub clear: Vec<(Vec<u8>, Vec<u8>)>,
}

/// ```text
/// u8 version | u32 count | count × (u16 len | stream | u8 held | [u32 len | state])
///            | u32 count | count × (u32 len | key | u8 held | [u32 len | value])
///            | u32 count | count × (u32 len | start | u32 len | end)
/// ```
pub fn encode_undo(record: &UndoRecord) -> Vec<u8> {
    let streams: usize =
        record.streams.iter().map(|(name, state)| 7 + name.len() + state.as_ref().map_or(0, Vec::len)).sum();
    let restored: usize =
        record.restore.iter().map(|(key, value)| 9 + key.len() + value.as_ref().map_or(0, Vec::len)).sum();
    let cleared: usize = record.clear.iter().map(|(start, end)| 8 + start.len() + end.len()).sum();
    let mut out = Vec::with_capacity(13 + streams + restored + cleared);
    out.push(UNDO_V1);
    out.extend_from_slice(&(record.streams.len() as u32).to_be_bytes());
    for (name, state) in &record.streams {
        put_short(&mut out, name.as_bytes());
        put_held(&mut out, state.as_deref());
    }
    out.extend_from_slice(&(record.restore.len() as u32).to_be_bytes());
    for (key, value) in &record.restore {
        put_long(&mut out, key);
        put_held(&mut out, value.as_deref());
    }
    out.extend_from_slice(&(record.clear.len() as u32).to_be_bytes());
    for (start, end) in &record.clear {
        put_long(&mut out, start);
        put_long(&mut out, end);
    }
    out
}

fn put_held(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => {
            out.push(1);
            put_long(out, value);
        }
        None => out.push(0),
    }
}

fn held(reader: &mut Reader<'_>) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(match reader.u8()? {
        0 => None,
        _ => Some(reader.long_bytes()?.to_vec()),
    })
}

pub fn decode_undo(bytes: &[u8]) -> Result<UndoRecord, StoreError> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != UNDO_V1 {
        return Err(StoreError::Corrupt(format!("undo record version {version} is unknown")));
    }
    let mut record = UndoRecord::default();
    for _ in 0..reader.u32()? {
        let name = reader.short_str()?.to_owned();
        record.streams.push((name, held(&mut reader)?));
    }
    for _ in 0..reader.u32()? {
        let key = reader.long_bytes()?.to_vec();
        record.restore.push((key, held(&mut reader)?));
    }
    for _ in 0..reader.u32()? {
        let start = reader.long_bytes()?.to_vec();
        record.clear.push((start, reader.long_bytes()?.to_vec()));
    }
    if reader.remaining() != 0 {
        return Err(StoreError::Corrupt("undo record has trailing bytes".into()));
    }
    Ok(record)
}
