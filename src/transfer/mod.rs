//! Moving a store: `eventfeed export` writes one as NDJSON ([`format`]),
//! `eventfeed import` loads that into an empty store of either backend,
//! and `eventfeed backup` / `verify` build on both ([`cli`]).
//!
//! What an export holds, and why that is enough: every stream's state
//! (numbering, deletes, tombstones, the settings its metadata enforces)
//! and every entry a stream holds as stored — events, with ids, numbers,
//! positions, types, payloads and creation times, including those reads
//! no longer see but a scavenge has not removed, and the links of the
//! system projections (`$ce-`, `$et-`, `$streams`) as they are, numbers
//! and targets included, rather than derived again (after a scavenge, or
//! a projection turned on late, a rebuild would number them otherwise).
//! Everything else the server keeps lives in streams, so it comes along:
//! stream metadata (`$$stream`), users (`$user-…`, `$users`), persistent
//! subscription groups (`$persistentSubscriptionConfig`) with their
//! checkpoints and parked messages (`$persistentsubscription-…`). The ids
//! of events a scavenge removed come along too, since ids are spent
//! forever. Not carried: the scavenge reports.
//!
//! An export reads the store's state at one moment
//! ([`Store::export_snapshot`]), then each stream's entries below the
//! numbers it had then ([`Store::export_entries`]), a chunk at a time, so
//! memory holds the stream states and one chunk, never the events.

pub mod backup;
pub mod cli;
pub mod format;

use std::io::{BufRead, Write};

use async_trait::async_trait;

use self::format::{Counts, FORMAT, Line, LineReader, LineWriter, TransferError, VERSION};
use crate::store::projections::is_system_stream;
use crate::store::{ExportSnapshot, ImportItem, ImportStep, SpentId, Store, StoredEntry};

/// Entries asked of the store at a time, and items written to it at a time.
const CHUNK: usize = 1_000;
/// The event bytes one import step carries at most (one chunk may pass
/// it by one event).
const STEP_BYTES: usize = 4 * 1024 * 1024;

/// Something told how far a transfer has got (a progress bar, or nothing).
pub trait Progress: Sync {
    /// `records` lines and `bytes` bytes done so far.
    fn advance(&self, records: u64, bytes: u64);
}

/// No progress shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn advance(&self, _: u64, _: u64) {}
}

/// What an export wrote or an import loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The backend exported, as the header says.
    pub source: String,
    /// The next position of the store exported (the head it was read at).
    pub head: u64,
    pub counts: Counts,
    /// The BLAKE2b-256 of the file before its end line (hex), which the
    /// end line holds.
    pub checksum: String,
}

/// Where an export goes, a chunk of lines at a time: a file, standard
/// output, an HTTP response body, or only a checksum.
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), TransferError>;
}

/// A file or standard output: written at once (a chunk is some hundreds
/// of kilobytes).
#[derive(Debug)]
pub struct WriteSink<W>(pub W);

#[async_trait]
impl<W: Write + Send> Sink for WriteSink<W> {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), TransferError> {
        self.0
            .write_all(&bytes)
            .and_then(|()| self.0.flush())
            .map_err(|e| TransferError::new(format!("cannot write the export: {e}")))
    }
}

/// Writes the whole of `store` to `out`; `source` names its backend.
pub async fn export(
    store: &dyn Store,
    source: &str,
    out: &mut dyn Sink,
    progress: &dyn Progress,
) -> Result<Summary, TransferError> {
    let snapshot = store.export_snapshot().await?;
    write_export(store, snapshot, source, out, progress).await
}

/// Writes the export of `store` as of `snapshot` (see
/// [`Store::export_snapshot`]) to `out`.
pub async fn write_export(
    store: &dyn Store,
    snapshot: ExportSnapshot,
    source: &str,
    out: &mut dyn Sink,
    progress: &dyn Progress,
) -> Result<Summary, TransferError> {
    let head = snapshot.head.next_position;
    let mut writer = LineWriter::new(Vec::new());
    let streams = snapshot.streams.len() as u64;
    writer.write(&Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        source: source.into(),
        head,
        streams,
    })?;
    for (name, state) in &snapshot.streams {
        writer.write(&Line::stream(name, state))?;
        let mut from = 0;
        loop {
            let entries = store.export_entries(name, from, state.next_number, CHUNK).await?;
            let Some(last) = entries.last() else { break };
            from = last.number() + 1;
            for entry in &entries {
                writer.write(&match entry {
                    StoredEntry::Event(event) => Line::event(event),
                    StoredEntry::Link(link) => Line::link(link),
                })?;
            }
            let counts = writer.counts;
            progress.advance(counts.streams + counts.events + counts.links, counts.bytes);
            if writer.buffered() >= STEP_BYTES {
                out.write(writer.take()).await?;
            }
            // IMPORTANT: an export of a running server shares its async
            // threads with the requests; a chunk is a few milliseconds of
            // reading and encoding, and the requests waiting go first.
            tokio::task::yield_now().await;
        }
    }
    // Ids stay spent after a scavenge removed their events; the copy
    // keeps them so.
    for spent in store.export_spent_ids(&snapshot).await? {
        writer.write(&Line::Id { stream: spent.stream, number: spent.number, id: spent.id })?;
    }
    let (counts, checksum, rest) = writer.finish()?;
    out.write(rest).await?;
    drop(snapshot.hold);
    Ok(Summary { source: source.to_owned(), head, counts, checksum })
}

/// Reads an export through, checking every line, the counts and the
/// checksum, without writing anything.
pub fn verify(input: impl BufRead, progress: &dyn Progress) -> Result<Summary, TransferError> {
    let mut reader = LineReader::new(input);
    let mut checks = Checks::default();
    while let Some(line) = reader.next_line()? {
        checks.check(reader.line, line)?;
        if reader.line % CHUNK as u64 == 0 {
            progress.advance(reader.line, reader.counts.bytes);
        }
    }
    Ok(Summary { source: checks.source, head: checks.head, counts: reader.counts, checksum: reader.checksum })
}

/// Loads an export into `store`, which must be empty. Each line is checked
/// before it is written; a line found wrong stops the import there, having
/// written the lines before it (so check a file with [`verify`] first: the
/// CLI does).
pub async fn import(
    store: &dyn Store,
    input: impl BufRead,
    progress: &dyn Progress,
) -> Result<Summary, TransferError> {
    let mut reader = LineReader::new(input);
    let mut checks = Checks::default();
    let mut items = Vec::with_capacity(CHUNK);
    let mut step_bytes = 0;
    while let Some(line) = reader.next_line()? {
        let at = reader.line;
        let Some(item) = checks.check(at, line)? else {
            if at == 1 {
                store
                    .import(ImportStep::Begin)
                    .await
                    .map_err(|error| TransferError::at(at, error.to_string()))?;
            }
            continue;
        };
        if let ImportItem::Entry(StoredEntry::Event(event)) = &item {
            step_bytes += event.data.len() + event.metadata.len();
        }
        items.push(item);
        if items.len() >= CHUNK || step_bytes >= STEP_BYTES {
            store.import(ImportStep::Write(std::mem::take(&mut items))).await?;
            step_bytes = 0;
            progress.advance(at, reader.counts.bytes);
        }
    }
    if !items.is_empty() {
        store.import(ImportStep::Write(items)).await?;
    }
    let finish =
        ImportStep::Finish { next_position: checks.head, last_created_micros: checks.last_created_micros };
    store.import(finish).await?;
    Ok(Summary { source: checks.source, head: checks.head, counts: reader.counts, checksum: reader.checksum })
}

/// What the lines so far promise the next one: the rules of the format
/// beyond each line's own well-formedness.
#[derive(Debug, Default)]
struct Checks {
    /// The header was read.
    header: bool,
    source: String,
    head: u64,
    /// The stream whose entries follow, and its next number.
    stream: Option<(String, u64)>,
    /// The number the next entry of that stream must reach.
    next_entry: u64,
    last_created_micros: i64,
    /// An id line was read: only ids and the end follow.
    ids_started: bool,
}

impl Checks {
    /// Checks line `at`; returns what it asks the store to write (`None`
    /// for the header and the end).
    fn check(&mut self, at: u64, line: Line) -> Result<Option<ImportItem>, TransferError> {
        let fail = |message: String| TransferError::at(at, message);
        if !self.header {
            let Line::Header { format, version, head, source, .. } = &line else {
                return Err(fail("the file does not start with an eventfeed export's header".into()));
            };
            if format != FORMAT || *version != VERSION {
                return Err(fail(format!(
                    "the header is of format {format:?} version {version}; this build reads {FORMAT:?} version {VERSION}"
                )));
            }
            self.header = true;
            self.head = *head;
            self.source = source.clone();
            return Ok(None);
        }
        match line {
            Line::Header { .. } => Err(fail("a second header".into())),
            Line::Id { stream, number, id } => {
                self.stream = None;
                self.ids_started = true;
                Ok(Some(ImportItem::SpentId(SpentId { stream, number, id })))
            }
            Line::End { .. } => Ok(None),
            line @ Line::Stream { .. } => {
                let Some((name, state)) = format::state_of(&line) else { return Ok(None) };
                if self.ids_started {
                    return Err(fail(format!("stream '{name}' comes after the ids, which end the streams")));
                }
                if self.stream.as_ref().is_some_and(|(previous, _)| previous.as_bytes() >= name.as_bytes()) {
                    return Err(fail(format!("stream '{name}' is out of order or repeated")));
                }
                self.stream = Some((name.clone(), state.next_number));
                self.next_entry = 0;
                Ok(Some(ImportItem::Stream { name, state }))
            }
            line @ Line::Event { .. } => {
                let event =
                    format::event_of(line).map_err(|why| fail(format!("the event is malformed: {why}")))?;
                let Some(event) = event else { return Ok(None) };
                self.entry(&event.stream, event.number).map_err(&fail)?;
                if event.position >= self.head {
                    return Err(fail(format!(
                        "position {} is not below the head, {}",
                        event.position, self.head
                    )));
                }
                self.last_created_micros = self.last_created_micros.max(event.created_micros);
                Ok(Some(ImportItem::Entry(StoredEntry::Event(event))))
            }
            line @ Line::Link { .. } => {
                let Some(link) = format::link_of(line) else { return Ok(None) };
                // Only projections link, into system streams; the stores
                // read other streams' entries as their own events alone.
                if !is_system_stream(&link.stream) {
                    return Err(fail(format!(
                        "a link in '{}', which is no system stream: only streams whose names start with '$' hold links",
                        link.stream
                    )));
                }
                self.entry(&link.stream, link.number).map_err(&fail)?;
                if link.target_position >= self.head {
                    return Err(fail(format!(
                        "position {} is not below the head, {}",
                        link.target_position, self.head
                    )));
                }
                self.last_created_micros = self.last_created_micros.max(link.created_micros);
                Ok(Some(ImportItem::Entry(StoredEntry::Link(link))))
            }
        }
    }

    /// An entry must follow its stream's line, in number order, below its
    /// next number.
    fn entry(&mut self, stream: &str, number: u64) -> Result<(), String> {
        match &self.stream {
            Some((name, next_number)) if name == stream => {
                if number < self.next_entry || number >= *next_number {
                    return Err(format!(
                        "entry {number} of '{stream}' is out of order or beyond the stream's next number {next_number}"
                    ));
                }
                self.next_entry = number + 1;
                Ok(())
            }
            _ => Err(format!("an entry of '{stream}' that does not follow that stream's line")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> Line {
        Line::Stream {
            name: name.to_owned(),
            next_number: 1,
            created_position: 0,
            deleted_before: 0,
            soft_deleted: false,
            tombstoned: false,
            max_count: None,
            max_age_secs: None,
            truncate_before: None,
            cache_control_secs: None,
            metadata_number: None,
            not_public: false,
        }
    }

    fn link(stream: &str) -> Line {
        Line::Link {
            stream: stream.to_owned(),
            number: 0,
            position: 0,
            created: 1,
            target_stream: "Order-1".to_owned(),
            target_number: 0,
        }
    }

    /// Checks that read a header of a store whose head is 1.
    fn after_header() -> Checks {
        let mut checks = Checks::default();
        let header = Line::Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            source: "sled".to_owned(),
            head: 1,
            streams: 1,
        };
        assert!(checks.check(1, header).unwrap().is_none());
        checks
    }

    #[test]
    fn links_are_taken_in_system_streams_only() {
        let mut checks = after_header();
        checks.check(2, stream("$ce-Order")).unwrap();
        let taken = checks.check(3, link("$ce-Order")).unwrap();
        assert!(matches!(taken, Some(ImportItem::Entry(StoredEntry::Link(_)))));

        let mut checks = after_header();
        checks.check(2, stream("Order-2")).unwrap();
        let refused = checks.check(3, link("Order-2")).unwrap_err().to_string();
        assert!(
            refused.contains("line 3") && refused.contains("'Order-2', which is no system stream"),
            "{refused}"
        );
    }
}
