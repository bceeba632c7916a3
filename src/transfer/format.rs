//! The export format: NDJSON, one JSON object a line, each tagged by `t`.
//!
//! ```text
//! {"t":"header","format":"eventfeed-export","version":1,"source":"sled","head":1234,"streams":56,"h":"…"}
//! {"t":"stream","name":"Order-1","nextNumber":3,…,"h":"…"}      every stream's state, in name order,
//! {"t":"event","stream":"Order-1","number":0,"position":7,…}     each followed by its entries
//! {"t":"link","stream":"$ce-Order","number":0,"position":7,…}    in number order
//! {"t":"id","stream":"Order-1","number":2,"id":"…","h":"…"}          ids of events a scavenge removed
//! {"t":"end","streams":56,"events":1000,"links":2000,"ids":3,"blake2b":"…","h":"…"}
//! ```
//!
//! Every line ends with `"h"`, a hash chain: the first 8 bytes (hex) of
//! BLAKE2b-256 over the previous line's `h` and this line without its own
//! `h` (the line's JSON with the `,"h":"…"` removed). An edited, dropped or
//! reordered line breaks the chain at that line, so a reader names it.
//! The `end` line counts what came before it and holds the BLAKE2b-256 of
//! every byte before it; a file without it was cut short. Event data and
//! metadata are base64 (standard, padded): they are bytes, kept exactly.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use blake2::digest::consts::{U8, U32};
use blake2::{Blake2b, Digest};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{RecordedEvent, StoreError, StoredLink, StreamSettings, StreamState};

/// The `format` of the header line.
pub const FORMAT: &str = "eventfeed-export";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// The bytes a line's hash takes: `,"h":"` + 16 hex digits + `"}`.
const HASH_SUFFIX: usize = 6 + 16 + 2;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Line {
    Header {
        format: String,
        version: u32,
        /// The backend exported: `sled`, `postgres` or `memory`.
        source: String,
        /// The next position the source would have assigned.
        head: u64,
        /// How many stream lines follow.
        streams: u64,
    },
    Stream {
        name: String,
        next_number: u64,
        created_position: u64,
        deleted_before: u64,
        soft_deleted: bool,
        tombstoned: bool,
        max_count: Option<u64>,
        max_age_secs: Option<u64>,
        truncate_before: Option<u64>,
        cache_control_secs: Option<u64>,
        metadata_number: Option<u64>,
        not_public: bool,
    },
    Event {
        stream: String,
        number: u64,
        position: u64,
        id: Uuid,
        #[serde(rename = "type")]
        event_type: String,
        /// Microseconds since the Unix epoch, UTC.
        created: i64,
        is_json: bool,
        metadata_is_json: bool,
        data: String,
        metadata: String,
    },
    Link {
        stream: String,
        number: u64,
        /// The target's position (and the link's, as reads show it).
        position: u64,
        created: i64,
        target_stream: String,
        target_number: u64,
    },
    /// The id of an event a scavenge removed (still spent), after every
    /// stream.
    Id { stream: String, number: u64, id: Uuid },
    End {
        streams: u64,
        events: u64,
        links: u64,
        ids: u64,
        /// BLAKE2b-256 (hex) of every byte before this line.
        blake2b: String,
    },
}

impl Line {
    pub fn stream(name: &str, state: &StreamState) -> Self {
        let settings = &state.settings;
        Self::Stream {
            name: name.to_owned(),
            next_number: state.next_number,
            created_position: state.created_position,
            deleted_before: state.deleted_before,
            soft_deleted: state.soft_deleted,
            tombstoned: state.tombstoned,
            max_count: settings.max_count,
            max_age_secs: settings.max_age_secs,
            truncate_before: settings.truncate_before,
            cache_control_secs: settings.cache_control_secs,
            metadata_number: settings.metadata_number,
            not_public: settings.not_public,
        }
    }

    pub fn event(event: &RecordedEvent) -> Self {
        Self::Event {
            stream: event.stream.to_string(),
            number: event.number,
            position: event.position,
            id: event.id,
            event_type: event.event_type.to_string(),
            created: event.created_micros,
            is_json: event.is_json,
            metadata_is_json: event.metadata_is_json,
            data: BASE64.encode(&event.data),
            metadata: BASE64.encode(&event.metadata),
        }
    }

    pub fn link(link: &StoredLink) -> Self {
        Self::Link {
            stream: link.stream.clone(),
            number: link.number,
            position: link.target_position,
            created: link.created_micros,
            target_stream: link.target_stream.clone(),
            target_number: link.target_number,
        }
    }
}

/// A stream line's state.
pub fn state_of(line: &Line) -> Option<(String, StreamState)> {
    let Line::Stream {
        name,
        next_number,
        created_position,
        deleted_before,
        soft_deleted,
        tombstoned,
        max_count,
        max_age_secs,
        truncate_before,
        cache_control_secs,
        metadata_number,
        not_public,
    } = line
    else {
        return None;
    };
    let settings = StreamSettings {
        max_count: *max_count,
        max_age_secs: *max_age_secs,
        truncate_before: *truncate_before,
        cache_control_secs: *cache_control_secs,
        metadata_number: *metadata_number,
        not_public: *not_public,
    };
    let state = StreamState {
        next_number: *next_number,
        created_position: *created_position,
        deleted_before: *deleted_before,
        soft_deleted: *soft_deleted,
        tombstoned: *tombstoned,
        settings,
    };
    Some((name.clone(), state))
}

/// An event line's event; `Err` names what is wrong with its payload.
pub fn event_of(line: Line) -> Result<Option<RecordedEvent>, String> {
    let Line::Event {
        stream,
        number,
        position,
        id,
        event_type,
        created,
        is_json,
        metadata_is_json,
        data,
        metadata,
    } = line
    else {
        return Ok(None);
    };
    let decode =
        |field: &str, text: &str| BASE64.decode(text).map_err(|e| format!("its {field} is not base64: {e}"));
    Ok(Some(RecordedEvent {
        stream: stream.into(),
        number,
        position,
        id,
        event_type: event_type.into(),
        created_micros: created,
        is_json,
        metadata_is_json,
        data: decode("data", &data)?.into(),
        metadata: decode("metadata", &metadata)?.into(),
    }))
}

/// A link line's link.
pub fn link_of(line: Line) -> Option<StoredLink> {
    let Line::Link { stream, number, position, created, target_stream, target_number } = line else {
        return None;
    };
    Some(StoredLink {
        stream,
        number,
        target_position: position,
        created_micros: created,
        target_stream,
        target_number,
    })
}

/// What an export holds, counted as it is written or read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub streams: u64,
    pub events: u64,
    pub links: u64,
    pub ids: u64,
    /// Bytes of the file, the end line included.
    pub bytes: u64,
}

impl Counts {
    fn count(&mut self, line: &Line) {
        match line {
            Line::Stream { .. } => self.streams += 1,
            Line::Event { .. } => self.events += 1,
            Line::Link { .. } => self.links += 1,
            Line::Id { .. } => self.ids += 1,
            Line::Header { .. } | Line::End { .. } => {}
        }
    }
}

/// Why an export could not be written or read: with the line, when one
/// line is to blame.
#[derive(Debug)]
pub struct TransferError {
    pub line: Option<u64>,
    pub message: String,
}

impl TransferError {
    pub fn at(line: u64, message: impl Into<String>) -> Self {
        Self { line: Some(line), message: message.into() }
    }

    pub fn new(message: impl Into<String>) -> Self {
        Self { line: None, message: message.into() }
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TransferError {}

impl From<StoreError> for TransferError {
    fn from(error: StoreError) -> Self {
        Self::new(error.to_string())
    }
}

/// The hash chain and the file's checksum, as lines go by.
#[derive(Clone, Default)]
struct Hashes {
    chain: [u8; 8],
    file: Blake2b<U32>,
}

impl Hashes {
    /// The chain's next link for a line whose JSON, without `h`, is `body`.
    fn link(&self, body: &[u8]) -> [u8; 8] {
        let mut hasher = Blake2b::<U8>::new();
        hasher.update(self.chain);
        hasher.update(body);
        let mut link = [0u8; 8];
        link.copy_from_slice(&hasher.finalize());
        link
    }

    fn file_checksum(&self) -> String {
        hex(&self.file.clone().finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Writes lines, chaining their hashes, and the end line.
pub struct LineWriter<W: Write> {
    out: W,
    hashes: Hashes,
    pub counts: Counts,
}

impl<W: Write> std::fmt::Debug for LineWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter").field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, hashes: Hashes::default(), counts: Counts::default() }
    }

    pub fn write(&mut self, line: &Line) -> Result<(), TransferError> {
        let body =
            serde_json::to_vec(line).map_err(|e| TransferError::new(format!("cannot encode a line: {e}")))?;
        let link = self.hashes.link(&body);
        let mut text = body;
        text.pop();
        text.extend_from_slice(format!(",\"h\":\"{}\"}}\n", hex(&link)).as_bytes());
        self.out.write_all(&text).map_err(|e| TransferError::new(format!("cannot write the export: {e}")))?;
        self.hashes.chain = link;
        self.hashes.file.update(&text);
        self.counts.count(line);
        self.counts.bytes += text.len() as u64;
        Ok(())
    }

    /// Writes the end line and flushes; returns what was written, the
    /// checksum the end line holds, and the writer's output.
    pub fn finish(mut self) -> Result<(Counts, String, W), TransferError> {
        let Counts { streams, events, links, ids, .. } = self.counts;
        let checksum = self.hashes.file_checksum();
        self.write(&Line::End { streams, events, links, ids, blake2b: checksum.clone() })?;
        self.out.flush().map_err(|e| TransferError::new(format!("cannot write the export: {e}")))?;
        Ok((self.counts, checksum, self.out))
    }
}

impl LineWriter<Vec<u8>> {
    /// The bytes written and not yet taken.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Reads lines, checking the chain, and at the end line the counts and
/// the checksum.
pub struct LineReader<R: BufRead> {
    input: R,
    hashes: Hashes,
    /// The number of the last line read, from 1.
    pub line: u64,
    pub counts: Counts,
    /// The end line was read and checked.
    ended: bool,
    /// The checksum the end line holds, once it is read.
    pub checksum: String,
    buffer: Vec<u8>,
}

impl<R: BufRead> std::fmt::Debug for LineReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("line", &self.line)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> LineReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            hashes: Hashes::default(),
            line: 0,
            counts: Counts::default(),
            ended: false,
            checksum: String::new(),
            buffer: Vec::new(),
        }
    }

    /// The next line; `None` after the end line (and anything after it is
    /// refused). A file that ends without its end line is refused.
    pub fn next_line(&mut self) -> Result<Option<Line>, TransferError> {
        self.buffer.clear();
        let read = self
            .input
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| TransferError::at(self.line + 1, format!("cannot read: {e}")))?;
        if self.ended {
            return match read {
                0 => Ok(None),
                _ => Err(TransferError::at(self.line + 1, "there is more after the end line")),
            };
        }
        if read == 0 || self.buffer.last() != Some(&b'\n') {
            let at = if read == 0 { self.line } else { self.line + 1 };
            return Err(TransferError::at(
                at,
                "the export is cut short here: it has no end line (a truncated file)",
            ));
        }
        self.line += 1;
        let text = &self.buffer[..self.buffer.len() - 1];
        let corrupt = |why: &str| {
            TransferError::at(
                self.line,
                format!("the line is corrupt ({why}): the file was changed or damaged"),
            )
        };
        let split = text.len().checked_sub(HASH_SUFFIX).ok_or_else(|| corrupt("too short"))?;
        let (head, tail) = text.split_at(split);
        let hash = tail
            .strip_prefix(b",\"h\":\"")
            .and_then(|rest| rest.strip_suffix(b"\"}"))
            .ok_or_else(|| corrupt("no hash at its end"))?;
        let mut body = head.to_vec();
        body.push(b'}');
        if hash != hex(&self.hashes.link(&body)).as_bytes() {
            return Err(corrupt("its hash does not match it and the lines before"));
        }
        let line: Line =
            serde_json::from_slice(&body).map_err(|e| corrupt(&format!("not a line of this format: {e}")))?;
        if let Line::End { streams, events, links, ids, blake2b } = &line {
            let counted = (self.counts.streams, self.counts.events, self.counts.links, self.counts.ids);
            if (*streams, *events, *links, *ids) != counted {
                return Err(TransferError::at(
                    self.line,
                    format!(
                        "the end line counts {streams} streams, {events} events, {links} links and {ids} ids; the file holds {}, {}, {} and {}",
                        counted.0, counted.1, counted.2, counted.3
                    ),
                ));
            }
            if *blake2b != self.hashes.file_checksum() {
                return Err(TransferError::at(
                    self.line,
                    "the checksum of the file does not match its end line",
                ));
            }
            self.ended = true;
            self.checksum = blake2b.clone();
        }
        self.hashes.chain.copy_from_slice(&hex_bytes(hash));
        self.hashes.file.update(&self.buffer);
        self.counts.count(&line);
        self.counts.bytes += self.buffer.len() as u64;
        Ok(Some(line))
    }
}

/// The bytes of 16 hex digits (checked against the chain already).
fn hex_bytes(hex: &[u8]) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    for (index, pair) in hex.chunks(2).take(8).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        bytes[index] = (digit(pair[0]) << 4) | digit(pair[1]);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = LineWriter::new(&mut out);
        let header = Line::Header {
            format: FORMAT.into(),
            version: VERSION,
            source: "memory".into(),
            head: 1,
            streams: 1,
        };
        writer.write(&header).unwrap();
        writer.write(&Line::stream("a", &StreamState { next_number: 1, ..StreamState::default() })).unwrap();
        let event = RecordedEvent {
            stream: "a".into(),
            number: 0,
            position: 0,
            id: Uuid::nil(),
            event_type: "T".into(),
            created_micros: 5,
            is_json: false,
            metadata_is_json: false,
            data: bytes::Bytes::from_static(b"\xff\x00 not utf-8"),
            metadata: bytes::Bytes::new(),
        };
        writer.write(&Line::event(&event)).unwrap();
        writer.finish().unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Line>, TransferError> {
        let mut reader = LineReader::new(bytes);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line()? {
            lines.push(line);
        }
        Ok(lines)
    }

    #[test]
    fn lines_round_trip_with_their_bytes() {
        let lines = read_all(&sample()).unwrap();
        assert_eq!(lines.len(), 4);
        let event = event_of(lines[2].clone()).unwrap().unwrap();
        assert_eq!(&event.data[..], b"\xff\x00 not utf-8");
        assert!(matches!(lines[3], Line::End { events: 1, streams: 1, links: 0, ids: 0, .. }));
    }

    #[test]
    fn an_edited_line_is_named() {
        let text = String::from_utf8(sample()).unwrap();
        let edited = text.replacen("\"created\":5", "\"created\":6", 1);
        let error = read_all(edited.as_bytes()).unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        // A dropped line breaks the chain at the line after it.
        let dropped: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| l).collect();
        let error = read_all(format!("{}\n", dropped.join("\n")).as_bytes()).unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let text = sample();
        let cut = &text[..text.len() - 10];
        let error = read_all(cut).unwrap_err();
        assert!(error.message.contains("cut short"), "{error}");
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let error = read_all(&lines[..3].concat()).unwrap_err();
        assert!(error.message.contains("no end line"), "{error}");
        assert_eq!(error.line, Some(3));
    }
}
