//! The data directory's layout: the store lives in a generation directory
//! (`store-0001/`, …) named by the `CURRENT` file, so that compaction can
//! write a fresh copy beside it and switch to it atomically.
//!
//! sled is log-structured and never gives disk space back except when the
//! last segments of its file happen to be free: deleting most of a store
//! leaves the file as large as it was. Rewriting the live data into a new
//! generation is the only way to shrink it (and also sheds sled's space
//! amplification: a fresh copy is typically a fraction of the original).
//!
//! Switching is crash-safe: `CURRENT` is replaced by writing a temporary
//! file, fsyncing it, renaming it over `CURRENT` and fsyncing the directory.
//! Before the rename the old generation is current, after it the new one;
//! whichever is not current is removed at the next open.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::StoreError;

const CURRENT: &str = "CURRENT";
const PREFIX: &str = "store-";

/// The sled database readers use. Compaction swaps it for the new
/// generation; every read takes a handle at its start and keeps it.
#[derive(Debug, Clone)]
pub(crate) struct DbCell(Arc<RwLock<sled::Db>>);

impl DbCell {
    pub fn new(db: sled::Db) -> Self {
        Self(Arc::new(RwLock::new(db)))
    }

    pub fn get(&self) -> sled::Db {
        // A panic while holding this lock cannot leave a half-swapped handle.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn replace(&self, db: sled::Db) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = db;
    }
}

/// Bytes of keys and values written to the current generation since this
/// process opened it (or, after a compaction, since the generation was
/// created). sled 0.34 snapshots its page table only when it opens a
/// store, and an open replays the log written since the last snapshot: this
/// is roughly what the next open would replay, so what a checkpoint at
/// shutdown saves (see `SledStore::checkpoint`).
#[derive(Debug, Default)]
pub(crate) struct LogSinceOpen(AtomicU64);

impl LogSinceOpen {
    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {error}", path.display()))
}

/// How long opening waits for another holder of the store's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database of a generation, waiting briefly if its file
/// lock is still held. sled lets go of the lock only when its last
/// background job finishes, which can be
/// moments after the last handle is dropped: a restart within the same
/// process (an embedding program, a test) would otherwise fail for no
/// reason. A lock still held after the wait means another process uses the
/// directory, and the error says so.
pub(crate) fn open(dir: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    remove_unfinished_snapshots(dir);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened =
            sled::Config::new().path(dir).cache_capacity(cache_capacity).flush_every_ms(Some(500)).open();
        match opened {
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Io(format!(
                        "{} is locked: is another eventfeed using this data directory? ({error})",
                        dir.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Removes the snapshot files sled began and never finished. sled writes
/// each snapshot to `snap.{lsn}.generating`, syncs it and renames it; an
/// open that dies on the way (a full disk, a kill) leaves the temporary
/// file, and sled's next open takes it for the newest snapshot (it sorts
/// after the finished one) and fails on it: "Read corrupted data", every
/// time, until it is removed. A finished snapshot, or none, always remains,
/// so removing them loses nothing.
fn remove_unfinished_snapshots(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(file = name, "removed a snapshot an earlier start left unfinished"),
                Err(error) => tracing::warn!(file = name, %error, "could not remove an unfinished snapshot"),
            }
        }
    }
}

/// The directory of the current generation, creating the first one in an
/// empty data directory, and removing any other generation (left by an
/// interrupted compaction, or by one that finished).
pub(crate) fn current(data_dir: &Path) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(data_dir).map_err(|e| io("cannot create", data_dir, e))?;
    let current_file = data_dir.join(CURRENT);
    let name = match fs::read_to_string(&current_file) {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let first = format!("{PREFIX}0001");
            switch(data_dir, &first)?;
            first
        }
        Err(error) => return Err(io("cannot read", &current_file, error)),
    };
    if !name.starts_with(PREFIX) || name.contains('/') {
        return Err(StoreError::Corrupt(format!(
            "{} names '{name}', not a generation",
            current_file.display()
        )));
    }
    remove_others(data_dir, &name);
    Ok(data_dir.join(name))
}

/// Whether `data_dir` holds a store (it names a current generation).
pub(crate) fn exists(data_dir: &Path) -> bool {
    data_dir.join(CURRENT).is_file()
}

/// Whether the store in `data_dir` is open, in this process or another:
/// sled holds an exclusive `flock` on its `db` file while it is open.
/// Asked before opening a store for an export, since an open tidies the
/// data directory ([`current`] removes other generations) before it meets
/// the lock, which must never happen under a running server.
pub(crate) fn in_use(data_dir: &Path) -> Result<bool, StoreError> {
    let current_file = data_dir.join(CURRENT);
    let name = match fs::read_to_string(&current_file) {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io("cannot read", &current_file, error)),
    };
    let db_file = data_dir.join(name).join("db");
    let file = match File::open(&db_file) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io("cannot open", &db_file, error)),
    };
    // Released when `file` is closed, at the end of this function.
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(error) => Err(io("cannot test the lock of", &db_file, error.into())),
    }
}

/// A new, empty generation directory beside `current` (not yet current).
pub(crate) fn next(data_dir: &Path, current: &Path) -> Result<PathBuf, StoreError> {
    let number = current
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix(PREFIX))
        .and_then(|number| number.parse::<u32>().ok())
        .unwrap_or(0);
    let next = data_dir.join(format!("{PREFIX}{:04}", number + 1));
    if next.exists() {
        fs::remove_dir_all(&next).map_err(|e| io("cannot clear", &next, e))?;
    }
    fs::create_dir_all(&next).map_err(|e| io("cannot create", &next, e))?;
    Ok(next)
}

/// Makes generation `name` current, durably and atomically.
pub(crate) fn switch(data_dir: &Path, name: &str) -> Result<(), StoreError> {
    let temporary = data_dir.join(format!("{CURRENT}.tmp"));
    let mut file = File::create(&temporary).map_err(|e| io("cannot write", &temporary, e))?;
    file.write_all(format!("{name}\n").as_bytes()).map_err(|e| io("cannot write", &temporary, e))?;
    file.sync_all().map_err(|e| io("cannot sync", &temporary, e))?;
    fs::rename(&temporary, data_dir.join(CURRENT)).map_err(|e| io("cannot rename", &temporary, e))?;
    File::open(data_dir).and_then(|dir| dir.sync_all()).map_err(|e| io("cannot sync", data_dir, e))
}

/// Removes every generation but `keep`. Failures are logged, not fatal:
/// a leftover directory costs space, not correctness.
pub(crate) fn remove_others(data_dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(data_dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) && name != keep && entry.path().is_dir() {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(generation = name, "removed an old store generation"),
                Err(error) => {
                    tracing::warn!(generation = name, %error, "could not remove an old store generation")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_generation_is_created_and_others_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = current(dir.path()).expect("current");
        assert!(first.ends_with("store-0001"));
        let second = next(dir.path(), &first).expect("next");
        assert!(second.ends_with("store-0002"));
        // Not switched: reopening keeps the first and removes the second.
        assert_eq!(current(dir.path()).expect("current"), first);
        assert!(!second.exists());
        let second = next(dir.path(), &first).expect("next");
        switch(dir.path(), "store-0002").expect("switch");
        assert_eq!(current(dir.path()).expect("current"), second);
        assert!(!first.exists());
    }

    /// What a start on a full disk left behind: sled's next open failed on
    /// it every time, and every acknowledged event was out of reach.
    #[test]
    fn an_unfinished_snapshot_does_not_stop_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let generation = current(dir.path()).expect("current");
        let db = open(&generation, 1 << 20).expect("opens");
        db.insert(b"key", b"value").expect("inserts");
        db.flush().expect("flushes");
        drop(db);
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::write(generation.join("snap.7FFFFFFFFFFFFFFF.generating"), b"").expect("writes");
        let db = open(&generation, 1 << 20).expect("opens despite the unfinished snapshot");
        assert_eq!(db.get(b"key").expect("reads").as_deref(), Some(&b"value"[..]));
        assert!(!generation.join("snap.7FFFFFFFFFFFFFFF.generating").exists());
    }
}
