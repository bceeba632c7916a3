//! Free disk space: a floor below which the store refuses to grow.
//!
//! sled does not survive running out of space gracefully: a write that
//! meets `ENOSPC` leaves it with a sticky error, the writer must stop (what
//! is on disk after a failed flush is unknown), and an open on a full disk
//! leaves a half-written snapshot behind. So the store never lets it get
//! there: appends are refused with [`StoreError::InsufficientStorage`]
//! while the free space of the data directory's filesystem is below the
//! floor plus what the batch could write, and they resume by themselves
//! as soon as space returns. Reads, deletes and scavenges go on; a
//! scavenge followed by compaction is how a store gives space back.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::StatVfs;

use crate::store::StoreError;

/// What sled writes for a batch, at most, per byte of payload: the
/// records, their log entries, and the B-tree leaves the inserts rewrite
/// (about three times the bytes, measured for small events; less for big
/// ones, which sled stores as blobs).
const WRITTEN_PER_PAYLOAD_BYTE: u64 = 4;

/// Below this much free space every batch is written with its undo record
/// (see `undo`). Only a write that fails can leave a batch applied in part,
/// and short of a failing disk the writes that fail are those that meet a
/// full one (or a quota, which the free space does not show). Above it the
/// record would cost every batch two more writes for nothing: a lone
/// durable append lost a sixth of its throughput to them (80 µs more CPU
/// each, measured), a 20-event batch a few per cent.
const UNDO_BELOW_FREE: u64 = 4 << 30;

/// Whether a batch is written with its undo record, given the free space
/// (or why it could not be told, which counts as little).
pub(crate) fn needs_undo(free: &Result<u64, StoreError>) -> bool {
    free.as_ref().map_or(true, |free| *free < UNDO_BELOW_FREE)
}

/// The space check of the writer.
#[derive(Debug)]
pub(crate) struct SpaceFloor {
    /// A directory on the store's filesystem.
    dir: PathBuf,
    /// That directory, kept open: the check of every batch is then one
    /// `fstatvfs`, with no walk of the path. Checking by path (an
    /// `exists` and a `statvfs`, each walking it) was 8 % of the server's
    /// CPU with 64 clients appending one event each, where batches are
    /// small and many (profiled). `None` if it could not be opened: then
    /// by path.
    handle: Option<File>,
    /// The fewest bytes that must stay free.
    floor: u64,
}

impl SpaceFloor {
    pub(crate) fn new(dir: &Path, floor: u64) -> Self {
        Self { dir: dir.to_path_buf(), handle: File::open(dir).ok(), floor }
    }

    /// The bytes still free on the store's disk, asked once per batch.
    pub(crate) fn free(&self) -> Result<u64, StoreError> {
        let free = match &self.handle {
            Some(handle) => rustix::fs::fstatvfs(handle).map(|stats| free_bytes(&stats)).map_err(Into::into),
            None => available(&self.dir),
        };
        free.map_err(|error| cannot_tell(&self.dir, &error))
    }

    /// Whether a batch of `payload` bytes may be written, with `free`
    /// bytes free: an error saying why not when the free space would fall
    /// below the floor.
    pub(crate) fn admit(&self, free: &Result<u64, StoreError>, payload: u64) -> Result<(), StoreError> {
        if self.floor == 0 {
            return Ok(());
        }
        let needed = self.floor.saturating_add(payload.saturating_mul(WRITTEN_PER_PAYLOAD_BYTE));
        refuse_below(free.clone()?, needed, self.floor)
    }
}

/// Refuses to go on when `dir`'s filesystem has fewer than `floor` bytes
/// free: what opening the store needs before it writes anything (sled
/// writes a snapshot at every open).
pub(crate) fn check_before_open(dir: &Path, floor: u64) -> Result<(), StoreError> {
    if floor == 0 {
        return Ok(());
    }
    check(dir, floor, floor)
}

fn check(dir: &Path, needed: u64, floor: u64) -> Result<(), StoreError> {
    let free = available(dir).map_err(|error| cannot_tell(dir, &error))?;
    refuse_below(free, needed, floor)
}

fn cannot_tell(dir: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Io(format!("cannot tell the free space of {}: {error}", dir.display()))
}

fn refuse_below(free: u64, needed: u64, floor: u64) -> Result<(), StoreError> {
    if free >= needed {
        return Ok(());
    }
    Err(StoreError::InsufficientStorage(format!(
        "{} free on the store's disk, and the store keeps {} free (--min-free-mb); \
         free some space, and retry: appends resume by themselves",
        human(free),
        human(floor)
    )))
}

/// The bytes an unprivileged process may still write to the filesystem of
/// `dir`, or of its nearest existing ancestor (a data directory that does
/// not exist yet).
pub(crate) fn available(dir: &Path) -> std::io::Result<u64> {
    let stats = match rustix::fs::statvfs(dir) {
        Err(rustix::io::Errno::NOENT) => {
            let existing = dir.ancestors().find(|path| path.exists()).unwrap_or(dir);
            rustix::fs::statvfs(existing)?
        }
        stats => stats?,
    };
    Ok(free_bytes(&stats))
}

fn free_bytes(stats: &StatVfs) -> u64 {
    stats.f_bavail.saturating_mul(stats.f_frsize)
}

/// `bytes` for a person: `512 B`, `20.0 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_admits_what_fits_and_says_why_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let admit = |floor: u64, payload: u64| {
            let space = SpaceFloor::new(dir.path(), floor);
            space.admit(&space.free(), payload)
        };
        let free = available(dir.path()).expect("statvfs");
        assert!(admit(0, u64::MAX).is_ok(), "no floor, no check");
        assert!(admit(1, 0).is_ok());
        let Err(StoreError::InsufficientStorage(message)) = admit(free + (1 << 30), 0) else {
            panic!("a floor above the free space refuses");
        };
        assert!(message.contains("--min-free-mb"), "{message}");
        assert!(admit(1, free).is_err(), "a batch bigger than the space");
        assert!(check_before_open(&dir.path().join("not/yet"), 1).is_ok(), "an ancestor answers");
        let space = SpaceFloor::new(dir.path(), 1);
        assert!(space.handle.is_some(), "the directory is checked through its handle");
        let unopened = SpaceFloor::new(&dir.path().join("not/yet"), 1);
        assert!(unopened.handle.is_none(), "not there yet");
        assert!(unopened.admit(&unopened.free(), 0).is_ok(), "without a handle, by path");
        std::fs::write(dir.path().join("a-file"), b"").expect("writes");
        let Err(broken) = SpaceFloor::new(&dir.path().join("a-file/below"), 1).free() else {
            panic!("a path under a file has no free space to tell");
        };
        assert!(matches!(broken, StoreError::Io(_)), "{broken:?}");
    }

    #[test]
    fn the_undo_record_is_kept_only_near_a_full_disk() {
        assert!(needs_undo(&Ok(UNDO_BELOW_FREE - 1)));
        assert!(!needs_undo(&Ok(UNDO_BELOW_FREE)));
        assert!(needs_undo(&Err(StoreError::Io("cannot tell".into()))), "unknown counts as little");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human(3 << 40), "3.0 TiB");
    }
}
