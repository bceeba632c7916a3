//! `eventfeed backup` and `eventfeed verify`: an online, consistent copy of
//! a running server's store, and its check.
//!
//! A backup directory holds:
//! - `export.ndjson`: the export the server streamed from
//!   `GET /admin/export`, read at one head position (see `http::export`);
//! - `store/`: an embedded store imported from it, so that
//!   `eventfeed serve --data-dir DIR/store` starts on the store exactly as
//!   it was at that position;
//! - `manifest.json`: the head position, the counts and the export's
//!   BLAKE2b-256 checksum, written last (a directory without it is not a
//!   finished backup).
//!
//! `verify` checks the export line by line (its hash chain, counts and
//! checksum), that the manifest agrees, and that the store, exported
//! again, gives the same bytes, checksum for checksum.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::cli::{Bar, close, open_file, open_source, open_target};
use super::format::TransferError;
use super::{Quiet, Sink, Summary};
use crate::config::{BackupArgs, StoreArgs, VerifyArgs};

/// The export's file in a backup directory.
pub const EXPORT_FILE: &str = "export.ndjson";
/// The store's directory in a backup directory.
pub const STORE_DIR: &str = "store";
/// The manifest's file in a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What a backup records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The next position of the store backed up: the copy holds every
    /// event below it, and none at or above it.
    pub head_position: u64,
    pub streams: u64,
    pub events: u64,
    pub links: u64,
    /// The export's size and BLAKE2b-256 (hex), as its end line holds it.
    pub bytes: u64,
    pub blake2b: String,
    /// When the backup finished, in microseconds since the Unix epoch.
    pub taken_micros: i64,
}

const MANIFEST_FORMAT: &str = "eventfeed-backup";

/// `eventfeed backup`.
pub async fn backup(args: &BackupArgs) -> Result<String, TransferError> {
    let dir = &args.to;
    let empty = std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()).unwrap_or(true);
    if !empty {
        return Err(TransferError::new(format!(
            "{} is not empty: a backup goes into a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| TransferError::new(format!("cannot create {}: {e}", dir.display())))?;
    match backup_into(args, dir).await {
        Ok(manifest) => Ok(format!(
            "backed up {} streams, {} events and {} links at head position {} into {}",
            manifest.streams,
            manifest.events,
            manifest.links,
            manifest.head_position,
            dir.display()
        )),
        Err(error) => {
            // Nothing half made is left to be taken for a backup.
            let _ = std::fs::remove_dir_all(dir);
            Err(error)
        }
    }
}

async fn backup_into(args: &BackupArgs, dir: &Path) -> Result<Manifest, TransferError> {
    let export_path = dir.join(EXPORT_FILE);
    let file = File::create(&export_path)
        .map_err(|e| TransferError::new(format!("cannot create {}: {e}", export_path.display())))?;
    let mut out = BufWriter::new(file);
    let authorization = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&args.user));
    let url = format!("{}/admin/export", args.server.trim_end_matches('/'));
    let progress = Bar::new(None, "received");
    let mut received = 0u64;
    let fetched = crate::http::client::get_streamed(&url, Some(&authorization), |chunk| {
        received += chunk.len() as u64;
        super::Progress::advance(&progress, 0, received);
        out.write_all(chunk).map_err(|e| format!("cannot write {}: {e}", export_path.display()))
    })
    .await;
    progress.done();
    fetched.map_err(TransferError::new)?;
    out.flush()
        .and_then(|()| out.get_ref().sync_all())
        .map_err(|e| TransferError::new(format!("cannot write {}: {e}", export_path.display())))?;

    let (input, _) = open_file(&export_path)?;
    let summary = super::verify(input, &Quiet)
        .map_err(|e| TransferError::new(format!("the export received is not whole: {e}")))?;
    let store_args = store_args(&dir.join(STORE_DIR));
    let store = open_target(&store_args).await?;
    let (input, _) = open_file(&export_path)?;
    let imported = super::import(store.as_ref(), input, &Quiet).await;
    close(store.as_ref()).await?;
    imported?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: 1,
        head_position: summary.head,
        streams: summary.counts.streams,
        events: summary.counts.events,
        links: summary.counts.links,
        bytes: summary.counts.bytes,
        blake2b: summary.checksum,
        taken_micros: crate::store::retention::now_micros(),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| TransferError::new(e.to_string()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut file = File::create(&manifest_path)
        .map_err(|e| TransferError::new(format!("cannot create {}: {e}", manifest_path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TransferError::new(format!("cannot write {}: {e}", manifest_path.display())))?;
    Ok(manifest)
}

/// The embedded store in `dir`, with the default options.
fn store_args(dir: &Path) -> StoreArgs {
    StoreArgs {
        store: "sled".into(),
        store_ca: None,
        data_dir: dir.to_owned(),
        projection_by_category: true,
        projection_by_event_type: true,
        projection_streams: true,
    }
}

/// `eventfeed verify`.
pub async fn verify(args: &VerifyArgs) -> Result<String, TransferError> {
    let dir = &args.dir;
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        TransferError::new(format!("{} cannot be read ({e}): not a finished backup", manifest_path.display()))
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        TransferError::new(format!("{} is not a backup's manifest: {e}", manifest_path.display()))
    })?;
    let (input, size) = open_file(&dir.join(EXPORT_FILE))?;
    let progress = Bar::new(Some(size), "checked");
    let checked = super::verify(input, &progress);
    progress.done();
    let summary = checked.map_err(|e| TransferError::new(format!("{EXPORT_FILE}: {e}")))?;
    let recorded =
        (manifest.head_position, manifest.streams, manifest.events, manifest.links, &manifest.blake2b);
    let found = (
        summary.head,
        summary.counts.streams,
        summary.counts.events,
        summary.counts.links,
        &summary.checksum,
    );
    if recorded != found {
        return Err(TransferError::new(format!(
            "the manifest records head {}, {} streams, {} events, {} links, checksum {}; {EXPORT_FILE} holds head {}, {} streams, {} events, {} links, checksum {}",
            recorded.0,
            recorded.1,
            recorded.2,
            recorded.3,
            recorded.4,
            found.0,
            found.1,
            found.2,
            found.3,
            found.4
        )));
    }
    let store = open_source(&store_args(&dir.join(STORE_DIR))).await?;
    let mut sink = Discard;
    let again = super::export(store.as_ref(), &summary.source, &mut sink, &Quiet).await;
    close(store.as_ref()).await?;
    let Summary { checksum, head, .. } = again?;
    if checksum != manifest.blake2b || head != manifest.head_position {
        return Err(TransferError::new(format!(
            "{STORE_DIR}/ does not hold what {EXPORT_FILE} does (exported again: head {head}, checksum {checksum})"
        )));
    }
    Ok(format!(
        "backup verified: head position {}, {} streams, {} events, {} links, checksum {}; the store matches the export",
        manifest.head_position, manifest.streams, manifest.events, manifest.links, manifest.blake2b
    ))
}

/// Drops what it is given: an export read only for its checksum.
struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn write(&mut self, _: Vec<u8>) -> Result<(), TransferError> {
        Ok(())
    }
}
