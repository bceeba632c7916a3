//! The write-ahead log's files: a segment's header, its records, and the
//! zero-filled files segments are written into.
//!
//! A segment is a header, then records, then zeroes:
//! - header (24 bytes): the magic, the segment's number (u64 LE) and a
//!   random salt (u32 LE), then 4 bytes of zeroes;
//! - record: the payload's length (u32 LE), a CRC-32 of the payload seeded
//!   with the salt (u32 LE), then the payload: one operation after another,
//!   `1, key length (u32 LE), key, value length (u32 LE), value` for an
//!   insert and `0, key length (u32 LE), key` for a removal.
//!
//! A length of zero (the zeroes past the last record) or a checksum that
//! does not match (a torn write, or a record left from the file's earlier
//! use, seeded with another salt) ends the segment.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

const MAGIC: [u8; 8] = *b"efwal\0\0\x01";
pub(super) const HEADER_BYTES: u64 = 24;
/// The length and checksum in front of each record's payload.
pub(super) const RECORD_HEAD: usize = 8;

const INSERT: u8 = 1;
const REMOVE: u8 = 0;

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub number: u64,
    pub salt: u32,
}

impl Header {
    pub(super) fn new(number: u64) -> Self {
        Self { number, salt: Uuid::new_v4().as_u128() as u32 }
    }

    pub(super) fn encode(self) -> [u8; HEADER_BYTES as usize] {
        let mut bytes = [0; HEADER_BYTES as usize];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..16].copy_from_slice(&self.number.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.salt.to_le_bytes());
        bytes
    }

    /// The header at the start of `data`, if it is one (a recycled or
    /// half-made file has zeroes there).
    pub(super) fn decode(data: &[u8]) -> Option<Self> {
        if data.len() < HEADER_BYTES as usize || data[..8] != MAGIC {
            return None;
        }
        let number = u64::from_le_bytes(data[8..16].try_into().ok()?);
        let salt = u32::from_le_bytes(data[16..20].try_into().ok()?);
        Some(Self { number, salt })
    }
}

/// Appends an insert of `key` to a record being built.
pub(super) fn put_insert(log: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    log.reserve(9 + key.len() + value.len());
    log.push(INSERT);
    put_bytes(log, key);
    put_bytes(log, value);
}

/// Appends a removal of `key` to a record being built.
pub(super) fn put_remove(log: &mut Vec<u8>, key: &[u8]) {
    log.push(REMOVE);
    put_bytes(log, key);
}

fn put_bytes(log: &mut Vec<u8>, bytes: &[u8]) {
    log.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    log.extend_from_slice(bytes);
}

/// Fills in the length and checksum of a record built after
/// [`RECORD_HEAD`] bytes of room.
pub(super) fn seal(record: &mut [u8], salt: u32) {
    let payload = &record[RECORD_HEAD..];
    let mut crc = crc32fast::Hasher::new_with_initial(salt);
    crc.update(payload);
    let (len, crc) = (payload.len() as u32, crc.finalize());
    record[..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The payloads of the valid records of a segment's bytes, in order.
pub(super) fn records(data: &[u8], salt: u32) -> impl Iterator<Item = &[u8]> {
    let mut at = HEADER_BYTES as usize;
    std::iter::from_fn(move || {
        let head = data.get(at..at + RECORD_HEAD)?;
        let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
        let payload = data.get(at + RECORD_HEAD..(at + RECORD_HEAD).checked_add(len)?)?;
        let mut hasher = crc32fast::Hasher::new_with_initial(salt);
        hasher.update(payload);
        if len == 0 || hasher.finalize() != crc {
            return None;
        }
        at += RECORD_HEAD + len;
        Some(payload)
    })
}

/// The sled batch a record's payload describes, or `None` if it does not
/// parse (which a record whose checksum matched never does).
pub(super) fn decode(mut payload: &[u8]) -> Option<sled::Batch> {
    fn take<'a>(payload: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let bytes = payload.get(4..4 + len)?;
        *payload = &payload[4 + len..];
        Some(bytes)
    }
    let mut batch = sled::Batch::default();
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        let key = take(&mut payload)?;
        match tag {
            INSERT => batch.insert(key, take(&mut payload)?),
            REMOVE => batch.remove(key),
            _ => return None,
        }
    }
    Some(batch)
}

/// Creates a file of `bytes` zeroes in `dir`, synced with its directory
/// entry, for segments to be written into: writes into it then change no
/// file metadata, so their `fdatasync` is one flush of the data, as the
/// disk's fdatasync probe measures.
///
/// IMPORTANT: written a page at a time. The kernel caches a file in folios
/// as large as the writes that made them (ext4 on Linux 6.18), and a
/// record written into a 1 MiB folio dirties all of it: each `fdatasync`
/// then wrote 1 MiB, measured, for a record of 400 bytes.
pub(super) fn zero_filled(dir: &Path, bytes: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!("spare-{}.wal", Uuid::new_v4().simple()));
    let mut file = File::options().read(true).write(true).create_new(true).open(&path)?;
    let chunk = vec![0; 4096];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_data()?;
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

/// Makes a segment's records unreadable for good: its header zeroed and
/// synced. Done to a segment only once sled holds everything in it.
pub(super) fn invalidate(file: &File) -> io::Result<()> {
    file.write_all_at(&[0; HEADER_BYTES as usize], 0)?;
    file.sync_data()
}
