//! The commands that move a store, as `main` runs them: which store to
//! open and how, files and standard streams, the progress bar, and what
//! is said at the end. A refusal is an error message and a failed exit,
//! with nothing written to the store.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::format::TransferError;
use super::{Progress, Summary, WriteSink};
use crate::config::{ExportArgs, ImportArgs, StoreArgs};
use crate::store::sled::SledStore;
use crate::store::{self, Store};

/// Prints what a command did, or why it failed; the exit code says which.
pub fn finish(result: Result<String, TransferError>) -> ExitCode {
    match result {
        Ok(done) => {
            eprintln!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `eventfeed export`.
pub async fn export(args: &ExportArgs) -> Result<String, TransferError> {
    let store = open_source(&args.store).await?;
    let source = store.backend_name();
    let progress = Bar::new(None, "exported");
    let result = if args.to.as_os_str() == "-" {
        let mut out = WriteSink(BufWriter::new(std::io::stdout()));
        super::export(store.as_ref(), source, &mut out, &progress).await
    } else {
        let file = File::create(&args.to)
            .map_err(|e| TransferError::new(format!("cannot create {}: {e}", args.to.display())))?;
        let mut out = WriteSink(BufWriter::new(file));
        let result = super::export(store.as_ref(), source, &mut out, &progress).await;
        if result.is_err() {
            // A partial file would only fail `verify`: none is less confusing.
            let _ = std::fs::remove_file(&args.to);
        }
        result
    };
    progress.done();
    close(store.as_ref()).await?;
    let Summary { head, counts, .. } = result?;
    Ok(format!(
        "exported {} streams, {} events and {} links (head position {head}, {} bytes)",
        counts.streams, counts.events, counts.links, counts.bytes
    ))
}

/// `eventfeed import`.
pub async fn import(args: &ImportArgs) -> Result<String, TransferError> {
    let from_stdin = args.from.as_os_str() == "-";
    if !from_stdin {
        // Every line, the counts and the checksum, before anything is written.
        let (input, size) = open_file(&args.from)?;
        let progress = Bar::new(Some(size), "checked");
        let checked = super::verify(input, &progress);
        progress.done();
        checked?;
    }
    let created_dir = args.store.is_sled() && !args.store.data_dir.exists();
    let store = open_target(&args.store).await?;
    let result = if from_stdin {
        super::import(store.as_ref(), BufReader::new(std::io::stdin().lock()), &Bar::new(None, "imported"))
            .await
    } else {
        let (input, size) = open_file(&args.from)?;
        let progress = Bar::new(Some(size), "imported");
        let result = super::import(store.as_ref(), input, &progress).await;
        progress.done();
        result
    };
    close(store.as_ref()).await?;
    drop(store);
    let Summary { head, counts, .. } = match result {
        Ok(summary) => summary,
        Err(error) => {
            // Line 1, the header, is read and checked (and the target
            // found empty) before anything is written.
            let refused_at_once = error.line == Some(1);
            if created_dir && refused_at_once {
                let _ = std::fs::remove_dir_all(&args.store.data_dir);
            }
            if !refused_at_once {
                return Err(TransferError {
                    message: format!(
                        "{} (the target holds a partial import now: empty it before importing again)",
                        error.message
                    ),
                    ..error
                });
            }
            return Err(error);
        }
    };
    Ok(format!(
        "imported {} streams, {} events and {} links (head position {head}); counts and checksum verified",
        counts.streams, counts.events, counts.links
    ))
}

pub(super) fn open_file(path: &Path) -> Result<(BufReader<File>, u64), TransferError> {
    let file =
        File::open(path).map_err(|e| TransferError::new(format!("cannot open {}: {e}", path.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((BufReader::with_capacity(1024 * 1024, file), size))
}

/// Opens a store to export: it must exist, and (sled) must not be open
/// elsewhere.
pub async fn open_source(args: &StoreArgs) -> Result<Arc<dyn Store>, TransferError> {
    if args.is_sled() {
        let dir = &args.data_dir;
        let (exists, in_use) = SledStore::probe(dir)?;
        if !exists {
            return Err(TransferError::new(format!("there is no eventfeed store in {}", dir.display())));
        }
        if in_use {
            return Err(in_use_error(dir));
        }
    }
    Ok(store::open(&args.store_config()).await?)
}

/// Opens (or creates) a store to import into.
pub(super) async fn open_target(args: &StoreArgs) -> Result<Arc<dyn Store>, TransferError> {
    if args.is_sled() && SledStore::probe(&args.data_dir)?.1 {
        return Err(in_use_error(&args.data_dir));
    }
    Ok(store::open(&args.store_config()).await?)
}

fn in_use_error(dir: &Path) -> TransferError {
    TransferError::new(format!(
        "the store in {} is in use (locked by a running eventfeed?): stop the server first, or take an online copy with `eventfeed backup`",
        dir.display()
    ))
}

/// Closes a store, so that everything written is durable.
pub async fn close(store: &dyn Store) -> Result<(), TransferError> {
    store.close().await?;
    Ok(())
}

/// A progress bar on standard error when it is a terminal; nothing
/// otherwise (logs and pipes get the last line only).
#[derive(Debug)]
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar of `total` bytes, or a spinner counting records.
    pub fn new(total: Option<u64>, what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(&format!(
                    "{{bar:40}} {{bytes}}/{{total_bytes}} {what} ({{eta}} left)"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(&format!("{{spinner}} {{pos}} records {what} ({{msg}})"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }

    pub fn done(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn advance(&self, records: u64, bytes: u64) {
        if self.0.length().is_some() {
            self.0.set_position(bytes);
        } else {
            self.0.set_position(records);
            self.0.set_message(indicatif::HumanBytes(bytes).to_string());
        }
    }
}
