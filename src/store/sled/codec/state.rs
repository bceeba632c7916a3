//! A stream's state (its next number, deletion and settings), stamped with
//! the commit that wrote it.

use super::STATE_V1;
use super::wire::Reader;
use crate::store::{StoreError, StreamSettings, StreamState};

/// A stream's state as stored, stamped with `commit_seq`, the sequence
/// number of the batch that writes it. Readers that find it above the
/// published (durable) sequence wait for that batch to become durable
/// before using it, so a read never shows an append that was not yet
/// acknowledged (and could vanish in a crash after a cache stored it as
/// immutable).
pub fn encode_state(state: &StreamState, commit_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(STATE_V1);
    out.push(u8::from(state.soft_deleted) | (u8::from(state.tombstoned) << 1));
    out.extend_from_slice(&state.next_number.to_be_bytes());
    out.extend_from_slice(&state.created_position.to_be_bytes());
    out.extend_from_slice(&state.deleted_before.to_be_bytes());
    out.extend_from_slice(&commit_seq.to_be_bytes());
    let settings = &state.settings;
    let optional = [
        settings.max_count,
        settings.max_age_secs,
        settings.truncate_before,
        settings.cache_control_secs,
        settings.metadata_number,
    ];
    let mut present = 0u8;
    for (bit, value) in optional.iter().enumerate() {
        if value.is_some() {
            present |= 1 << bit;
        }
    }
    if settings.not_public {
        present |= 1 << 7;
    }
    out.push(present);
    for value in optional.into_iter().flatten() {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// A stored state and the commit sequence number it was stamped with.
pub fn decode_state(record: &[u8]) -> Result<(StreamState, u64), StoreError> {
    let mut reader = Reader::new(record);
    let version = reader.u8()?;
    if version != STATE_V1 {
        return Err(StoreError::Corrupt(format!("stream state has unknown version {version}")));
    }
    let flags = reader.u8()?;
    let next_number = reader.u64()?;
    let created_position = reader.u64()?;
    let deleted_before = reader.u64()?;
    let commit_seq = reader.u64()?;
    let present = reader.u8()?;
    let mut optional = [None; 5];
    for (bit, slot) in optional.iter_mut().enumerate() {
        if present & (1 << bit) != 0 {
            *slot = Some(reader.u64()?);
        }
    }
    let [max_count, max_age_secs, truncate_before, cache_control_secs, metadata_number] = optional;
    let state = StreamState {
        next_number,
        created_position,
        deleted_before,
        soft_deleted: flags & 0b01 != 0,
        tombstoned: flags & 0b10 != 0,
        settings: StreamSettings {
            max_count,
            max_age_secs,
            truncate_before,
            cache_control_secs,
            metadata_number,
            not_public: present & (1 << 7) != 0,
        },
    };
    Ok((state, commit_seq))
}
