//! A reference to an event by stream and number (the value of a legacy
//! event-id entry), and the log entry built on it, which names the events
//! of one append.

use super::LOG_RUN_V1;
use super::wire::Reader;
use crate::store::StoreError;

/// A reference to an event by stream and number: the value of an event-id
/// entry (which event took the id), and of a log entry for one position.
pub fn encode_event_ref(stream: &str, number: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + stream.len());
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(stream.as_bytes());
    out
}

pub fn decode_event_ref(value: &[u8]) -> Result<(String, u64), StoreError> {
    let mut reader = Reader::new(value);
    let number = reader.u64()?;
    let stream = std::str::from_utf8(reader.rest())
        .map_err(|_| StoreError::Corrupt("event reference names a non-UTF-8 stream".into()))?;
    Ok((stream.to_owned(), number))
}

/// The value of a log entry for `count` consecutive positions holding
/// events `number..number + count` of `stream` (what one append writes):
/// a lone position as an event reference, several as a run,
/// `u8 0xFF | u32 count | u64 number | stream`. A reference starts with the
/// top byte of an event number, which is 0xFF only for numbers above
/// `i64::MAX`, which no stream can reach (versions are signed 64-bit), so
/// the tag is never ambiguous.
pub fn encode_log_entry(stream: &str, number: u64, count: u64) -> Vec<u8> {
    if count == 1 {
        return encode_event_ref(stream, number);
    }
    let mut out = Vec::with_capacity(13 + stream.len());
    out.push(LOG_RUN_V1);
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(stream.as_bytes());
    out
}

/// Decodes a log entry: (stream, first event number, how many positions).
pub fn decode_log_entry(value: &[u8]) -> Result<(String, u64, u64), StoreError> {
    if value.first() != Some(&LOG_RUN_V1) {
        return decode_event_ref(value).map(|(stream, number)| (stream, number, 1));
    }
    let mut reader = Reader::new(&value[1..]);
    let count = reader.u32()?;
    let number = reader.u64()?;
    let stream = std::str::from_utf8(reader.rest())
        .map_err(|_| StoreError::Corrupt("log entry names a non-UTF-8 stream".into()))?;
    if count == 0 {
        return Err(StoreError::Corrupt("an empty run in the log".into()));
    }
    Ok((stream.to_owned(), number, u64::from(count)))
}
