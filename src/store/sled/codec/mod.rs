//! Binary encodings of the values the sled store keeps: event records and
//! links, stream state, log entries and id tables. Each starts with a version
//! byte so the format can evolve; a reader refuses versions it does not know
//! rather than misreading them.
//!
//! Layout of an event record (version 1), all integers big-endian:
//!
//! ```text
//! u8 version | u8 flags | u64 number | u64 position | i64 created (µs since epoch)
//! [16] id | u16 len | stream | u16 len | type | u32 len | data | u32 len | metadata
//! ```
//!
//! The value under an event key is a record, a run of records (user
//! streams), a link entry, or a run of links (system streams), told apart by
//! the first byte. A run holds the consecutive entries one batch added to
//! one stream, under the key of the first: a 20-event append stores its 20
//! records with one sled write instead of 20, and links them into `$ce-…`
//! with one more (sled's cost is per key written, about the same for a small
//! value as for a few kilobytes, and its leaves split every 16 keys).
//!
//! ```text
//! link:        u8 0x81 | u64 position | i64 created | u64 number | stream
//! link run:    u8 0x82 | u32 count | count × (u64 position | i64 created | u64 number | u16 len | stream)
//! record run:  u8 0x83 | u32 count | count × u32 end | records
//! ```
//!
//! A record run's table holds where each record ends, counted from the
//! first record, so that a read takes the records it wants without walking
//! the others.
//!
//! The id index (see `id_index`) stores ids as id tables, each naming its
//! streams once; a run's tables are sorted by id:
//!
//! ```text
//! id table:    u8 1 | u32 streams | streams × (u16 len | stream)
//!              | u32 count | count × ([16] id | u32 stream index | u64 number)
//! ```
//!
//! The files, one format each, from the bottom up:
//! - [`wire`]: the cursor and length-prefixed fields every format is built of;
//! - [`record`]: one event record, and [`Names`], shared between the records
//!   of a page;
//! - [`entry`]: the value under an event key (a record, a link, or a run of
//!   either) and reads of the entries within a range of numbers;
//! - [`state`]: a stream's state;
//! - [`event_ref`]: a reference to an event by stream and number (a legacy
//!   event-id entry) and the log entry built on it;
//! - [`id_table`]: the id index's tables;
//! - [`undo`]: what a batch overwrote, to take back a batch sled applied
//!   only in part.
//!
//! Callers name everything through this module (`codec::encode_records`);
//! the files are how it is read, not part of its paths.

mod entry;
mod event_ref;
mod id_table;
mod record;
mod state;
mod undo;
mod wire;

#[cfg(test)]
mod tests;

pub use self::entry::{
    Entry, decode_entries, decode_entries_within, decode_entry, decode_entry_at, decode_events_within,
    encode_link_entry, encode_links, encode_records, entry_count, entry_time_and_position, is_link_entry,
    is_run, run_tail,
};
pub use self::event_ref::{decode_event_ref, decode_log_entry, encode_event_ref, encode_log_entry};
pub use self::id_table::{IdTable, decode_id_table, encode_id_table};
pub use self::record::{EventFields, Names, decode_event, encode_event};
pub use self::state::{decode_state, encode_state};
pub use self::undo::{UndoRecord, decode_undo, encode_undo};
pub use self::wire::shared;

// The version bytes. The first byte of a value under an event key tells its
// form (record, link, run of links, run of records), so those four stay
// distinct from each other, here in one place.

/// The version of an event record (see [`record`]).
const EVENT_V1: u8 = 1;
/// The first byte of a link entry; distinct from every record version.
const LINK_V1: u8 = 0x81;
/// The first byte of a run of links.
const LINK_RUN_V1: u8 = 0x82;
/// The first byte of a run of event records.
const RECORD_RUN_V1: u8 = 0x83;
/// The first byte of a log entry for several positions.
const LOG_RUN_V1: u8 = 0xFF;
/// The version of a stream state (see [`state`]).
const STATE_V1: u8 = 1;
/// A batch's undo record.
const UNDO_V1: u8 = 1;
/// The version of an id table (see [`id_table`]).
const ID_TABLE_V1: u8 = 1;
/// Bytes of one id table entry: id, stream index, event number.
const ID_ENTRY: usize = 16 + 4 + 8;
