//! Makes sled's files durable, which sled's own flush does not quite do
//! (see [`FileSyncer`]): the writer syncs after every durable batch.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Makes sled's files durable: sled's own flush writes its log with
/// `sync_file_range`, which does not flush the device cache and does not
/// cover file-size metadata, and it never syncs blob files (values of large
/// nodes) at all.
pub(super) struct FileSyncer {
    /// sled's log, kept open so each sync is one syscall.
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already synced. Blob files are written once and never
    /// modified, so each needs one sync; names of removed blobs are dropped
    /// on the next listing.
    synced_blobs: HashSet<OsString>,
}

impl FileSyncer {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let log = File::open(path.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open sled's log for syncing: {e}")))?;
        // The data directory's entries (db, conf, blobs/) must be durable too.
        File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Io(format!("cannot sync the data directory: {e}")))?;
        let mut syncer = Self { log, blobs_dir: path.join("blobs"), synced_blobs: HashSet::new() };
        syncer.sync().map_err(|e| StoreError::Io(format!("initial fdatasync failed: {e}")))?;
        Ok(syncer)
    }

    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced_blobs.len());
        let mut synced_new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // sled's garbage collector removed it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_new = true;
            }
            present.insert(name);
        }
        if synced_new {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
