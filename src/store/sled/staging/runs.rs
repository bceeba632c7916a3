//! The runs a batch writes: consecutive records of one stream, consecutive
//! links of one system stream and consecutive positions of the log are
//! each stored under one key, because sled's cost is per key written.

use super::super::codec;

/// The most links one run holds. Reading a link walks its run's items (they
/// vary in size), so runs stay short enough for that to cost little (a
/// projection built from the log would otherwise put thousands in one).
pub(super) const MAX_LINK_RUN: usize = 64;

/// Consecutive links to one system stream, staged by one batch.
#[derive(Clone)]
pub(super) struct PendingLinks {
    /// The number of the first.
    pub first: u64,
    /// (target position, created µs, target number, target stream).
    pub links: Vec<(u64, i64, u64, String)>,
}

impl PendingLinks {
    pub(super) fn next(&self) -> u64 {
        self.first + self.links.len() as u64
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let links: Vec<(u64, i64, u64, &str)> = self
            .links
            .iter()
            .map(|(position, created, number, stream)| (*position, *created, *number, stream.as_str()))
            .collect();
        codec::encode_links(&links)
    }
}

/// Runs of records start at multiples of this (the default page size) and
/// never cross one, so a page that starts at such a number, as a forward
/// walk from the start of a stream does, is read from the key it starts at:
/// one key, no look back for a run that started earlier.
const RECORD_RUN_ALIGN: u64 = 20;

/// The most bytes of records one run holds: sled rewrites a leaf's values
/// when it consolidates it, so a run of large events stays small. A record
/// larger than this is stored alone.
const MAX_RECORD_RUN_BYTES: usize = 32 * 1024;

/// Consecutive records of one stream, staged by one batch.
#[derive(Clone)]
pub(super) struct PendingRecords {
    /// The number of the first.
    pub first: u64,
    pub records: Vec<Vec<u8>>,
    /// The records' total size.
    pub bytes: usize,
}

impl PendingRecords {
    /// Whether `record`, numbered `number`, extends this run.
    pub(super) fn takes(&self, number: u64, record: &[u8]) -> bool {
        self.first + self.records.len() as u64 == number
            && number % RECORD_RUN_ALIGN != 0
            && self.bytes + record.len() <= MAX_RECORD_RUN_BYTES
    }
}

/// The most positions one log entry covers. `$all` pages and projection
/// builds read a log entry with one range read of its stream.
pub(super) const MAX_LOG_RUN: u64 = 64;
