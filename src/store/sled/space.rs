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
        let handle = if floor == 0 { None } else { File::open(dir).ok() };
        Self { dir: dir.to_path_buf(), handle, floor }
    }

    /// Whether a batch of `payload` bytes may be written: an error saying
    /// why not when the free space would fall below the floor.
    pub(crate) fn admit(&self, payload: u64) -> Result<(), StoreError> {
        if self.floor == 0 {
            return Ok(());
        }
        let needed = self.floor.saturating_add(payload.saturating_mul(WRITTEN_PER_PAYLOAD_BYTE));
        let Some(handle) = &self.handle else {
            return check(&self.dir, needed, self.floor);
        };
        let stats = rustix::fs::fstatvfs(handle).map_err(|error| cannot_tell(&self.dir, &error.into()))?;
        refuse_below(free_bytes(&stats), needed, self.floor)
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
        let free = available(dir.path()).expect("statvfs");
        assert!(SpaceFloor::new(dir.path(), 0).admit(u64::MAX).is_ok(), "no floor, no check");
        assert!(SpaceFloor::new(dir.path(), 1).admit(0).is_ok());
        let Err(StoreError::InsufficientStorage(message)) =
            SpaceFloor::new(dir.path(), free + (1 << 30)).admit(0)
        else {
            panic!("a floor above the free space refuses");
        };
        assert!(message.contains("--min-free-mb"), "{message}");
        assert!(SpaceFloor::new(dir.path(), 1).admit(free).is_err(), "a batch bigger than the space");
        assert!(check_before_open(&dir.path().join("not/yet"), 1).is_ok(), "an ancestor answers");
        assert!(
            SpaceFloor::new(dir.path(), 1).handle.is_some(),
            "the directory is checked through its handle"
        );
        let unopened = SpaceFloor::new(&dir.path().join("not/yet"), 1);
        assert!(unopened.handle.is_none() && unopened.admit(0).is_ok(), "without a handle, by path");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human(3 << 40), "3.0 TiB");
    }
}
