//! This server's identity among the servers that share a database: the
//! holder id of the persistent subscriptions' lease (`subscriptions::owner`).
//!
//! Kept in the data directory (`node-id`), so a server restarted on the
//! same directory, after a `kill -9` say, is the same holder: it takes its
//! groups back at once, instead of answering `503` until the lease of its
//! previous life runs out (up to its 6 s). The file stays locked while the
//! server runs, so a second server started on the same directory cannot
//! pass for the first (two owners of one group would both deliver its
//! messages): it gets an identity of its own, as does a server whose
//! directory cannot be written.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use uuid::Uuid;

/// The file that holds the identity, in the data directory.
const FILE: &str = "node-id";

/// An identity, and the lock that keeps it this process's.
#[derive(Debug)]
pub(super) struct Identity {
    pub id: Uuid,
    /// Locked until the process ends (the kernel drops the lock of a killed
    /// process with its descriptors).
    _file: Option<File>,
}

impl Identity {
    /// The identity kept in `data_dir`, made the first time; a fresh one,
    /// kept nowhere, if the file is locked by another server or cannot be
    /// used.
    pub fn of(data_dir: &Path) -> Self {
        match kept(data_dir) {
            Ok(Some((id, file))) => Self { id, _file: Some(file) },
            Ok(None) => {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    "another server runs on this data directory: this one takes an identity of its own"
                );
                Self::fresh()
            }
            Err(error) => {
                tracing::warn!(%error, data_dir = %data_dir.display(), "no identity kept in the data directory");
                Self::fresh()
            }
        }
    }

    /// An identity kept nowhere: a server on a store of its own alone
    /// needs none that lasts.
    pub fn fresh() -> Self {
        Self { id: Uuid::new_v4(), _file: None }
    }
}

/// The identity in `data_dir/node-id` with its file locked; `None` when
/// another process holds the lock.
fn kept(data_dir: &Path) -> std::io::Result<Option<(Uuid, File)>> {
    std::fs::create_dir_all(data_dir)?;
    let mut file =
        File::options().read(true).write(true).create(true).truncate(false).open(data_dir.join(FILE))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if let Ok(id) = Uuid::parse_str(text.trim()) {
        return Ok(Some((id, file)));
    }
    let id = Uuid::new_v4();
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    Ok(Some((id, file)))
}

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn a_directory_keeps_its_identity_and_lends_it_to_one_server_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::of(dir.path());
        assert!(first._file.is_some());
        let second = Identity::of(dir.path());
        assert_ne!(second.id, first.id, "a second server on the directory passed for the first");
        let id = first.id;
        drop(first);
        assert_eq!(Identity::of(dir.path()).id, id, "restarted on the directory, the server is the same");
    }
}
