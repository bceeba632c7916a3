//! A tmpfs of a given size, for tests of a full disk that fill a real
//! filesystem (tests/disk_full.rs, tests/health.rs).

// Each test binary that includes `common` uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root).
    pub fn mount(megabytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status();
        if mounted.is_ok_and(|status| status.success()) {
            return Some(Self { _dir: dir, path });
        }
        let root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        assert!(!root, "root could not mount a tmpfs");
        None
    }

    /// Grows (or shrinks) the filesystem in place.
    pub fn resize(&self, megabytes: u64) {
        let resized = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(resized.success(), "the tmpfs grows");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
