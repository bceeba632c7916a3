//! The write-ahead log: a durable commit costs one `fdatasync` of data
//! already allocated, and nothing else.
//!
//! sled makes a batch durable with its flush, which writes its log with
//! `sync_file_range` and grows the file, so that the `fdatasync` that must
//! follow (see [`super::syncer`]) also commits the file's new size to the
//! filesystem's journal: a lone append took 0.70 ms where the disk's
//! `fdatasync` takes 0.18 ms (bench/run appends, 2026-12-06). Instead, in
//! the durable modes the writer applies each batch to sled without flushing
//! it and appends the batch's writes here, as one record, to a segment file
//! zero-filled in advance, then syncs that file. sled writes its own log in
//! the background (every 500 ms).
//!
//! When a segment fills, the writer moves on to a spare and hands the full
//! one to the checkpointer thread, which flushes and syncs sled: sled then
//! holds everything the segment holds, so its header is zeroed and the file
//! becomes the next spare. A clean close does the same to every segment.
//!
//! At open, before anything reads the store, every segment with a valid
//! header is replayed into sled in order of its number. Records hold the
//! values written, not the commands, so replaying them in order from
//! whatever sled kept of them (a prefix, or the lot) ends in the state
//! after the last one. sled is then flushed and synced, and the segments
//! are emptied.

mod segment;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use self::segment::{HEADER_BYTES, Header, RECORD_HEAD};
use super::syncer::FileSyncer;
use crate::store::{Durability, StoreError};

/// The size segments are made at. A crash replays at most about one
/// segment and a spare's worth is kept besides: small enough to replay in
/// well under a second and to fit small disks, large enough that the
/// checkpoints they cause (a sled flush and sync each) stay a few per
/// second under the heaviest load.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The writes of one batch: the sled batch to apply, and the same writes
/// as a log record.
#[derive(Clone)]
pub(crate) struct Batch {
    sled: sled::Batch,
    record: Vec<u8>,
}

impl Default for Batch {
    fn default() -> Self {
        Self { sled: sled::Batch::default(), record: vec![0; RECORD_HEAD] }
    }
}

impl Batch {
    pub(crate) fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let (key, value) = (key.into(), value.into());
        segment::put_insert(&mut self.record, &key, &value);
        self.sled.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: impl Into<sled::IVec>) {
        let key = key.into();
        segment::put_remove(&mut self.record, &key);
        self.sled.remove(key);
    }

    /// The sled batch, and the record to log (empty if nothing was staged).
    pub(crate) fn into_parts(self) -> (sled::Batch, Option<Vec<u8>>) {
        let logged = self.record.len() > RECORD_HEAD;
        (self.sled, logged.then_some(self.record))
    }
}

/// A segment being written, or waiting for its checkpoint.
struct Segment {
    file: File,
    path: PathBuf,
    header: Header,
    /// Where the next record goes.
    end: u64,
}

/// A full segment, and the store whose flush makes it redundant.
struct Checkpoint {
    db: sled::Db,
    generation: PathBuf,
    full: Segment,
}

/// The log being written, in the durable modes.
pub(crate) struct Wal {
    dir: PathBuf,
    current: Segment,
    /// Whether each record is synced (`fsync` mode) or only written
    /// (`flush` mode).
    sync: bool,
    spares: Receiver<LogFile>,
    checkpoints: Option<Sender<Checkpoint>>,
    checkpointer: Option<JoinHandle<()>>,
    /// Why the last checkpoint failed, if it did: the writer then stops
    /// rather than let the log grow without end.
    failed: Arc<Mutex<Option<String>>>,
}

impl Wal {
    /// Replays what the log holds into `db` (the current generation, in
    /// `generation`), then, in the durable modes, returns the log to write.
    pub(crate) fn open(
        data_dir: &Path,
        generation: &Path,
        db: &sled::Db,
        durability: Durability,
    ) -> Result<Option<Self>, StoreError> {
        let dir = data_dir.join("wal");
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
            File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync", data_dir, e))?;
        }
        let mut files = recover(&dir, generation, db)?;
        if durability == Durability::None {
            for (_, path) in files {
                fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
            }
            return Ok(None);
        }
        let (file, spare_path) = match files.pop() {
            Some(spare) => spare,
            None => segment::zero_filled(&dir, SEGMENT_BYTES)
                .map_err(|e| io("cannot create a segment in", &dir, e))?,
        };
        let current = start_segment(&dir, file, &spare_path, 1)?;
        let (spare_sender, spares) = mpsc::sync_channel(1);
        let mut need_spare = true;
        for (file, path) in files {
            if need_spare {
                need_spare = false;
                drop(spare_sender.try_send((file, path)));
            } else {
                fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
            }
        }
        let (checkpoints, jobs) = mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let checkpointer = {
            let (dir, failed) = (dir.clone(), Arc::clone(&failed));
            std::thread::Builder::new()
                .name("eventfeed-checkpointer".into())
                .spawn(move || checkpoint_loop(&dir, &jobs, &spare_sender, need_spare, &failed))
                .map_err(|e| StoreError::Io(format!("cannot start the checkpointer thread: {e}")))?
        };
        Ok(Some(Self {
            dir,
            current,
            sync: durability == Durability::Fsync,
            spares,
            checkpoints: Some(checkpoints),
            checkpointer: Some(checkpointer),
            failed,
        }))
    }

    /// Appends a batch's record (see [`Batch::into_parts`]) and, in `fsync`
    /// mode, makes it durable. The batch must already be applied to `db`,
    /// the store in `generation`, which a full segment's checkpoint flushes.
    pub(crate) fn append(
        &mut self,
        mut record: Vec<u8>,
        db: &sled::Db,
        generation: &Path,
    ) -> Result<(), StoreError> {
        segment::seal(&mut record, self.current.header.salt);
        let segment = &mut self.current;
        segment
            .file
            .write_all_at(&record, segment.end)
            .map_err(|e| io("cannot write the write-ahead log", &segment.path, e))?;
        if self.sync {
            segment.file.sync_data().map_err(|e| io("fdatasync failed on", &segment.path, e))?;
        }
        segment.end += record.len() as u64;
        if segment.end >= SEGMENT_BYTES {
            self.next_segment(db, generation)?;
        }
        Ok(())
    }

    fn next_segment(&mut self, db: &sled::Db, generation: &Path) -> Result<(), StoreError> {
        if let Some(error) = lock(&self.failed).clone() {
            return Err(StoreError::Io(format!("a checkpoint of the store failed: {error}")));
        }
        let (file, path) = match self.spares.try_recv() {
            Ok(spare) => spare,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                tracing::info!("the write-ahead log had no spare segment ready; making one");
                segment::zero_filled(&self.dir, SEGMENT_BYTES)
                    .map_err(|e| io("cannot create a segment in", &self.dir, e))?
            }
        };
        let next = start_segment(&self.dir, file, &path, self.current.header.number + 1)?;
        let full = std::mem::replace(&mut self.current, next);
        let job = Checkpoint { db: db.clone(), generation: generation.to_owned(), full };
        let sent = self.checkpoints.as_ref().is_some_and(|checkpoints| checkpoints.send(job).is_ok());
        if sent { Ok(()) } else { Err(StoreError::Io("the checkpointer thread stopped".into())) }
    }

    /// Empties the log once sled holds everything in it, flushed and synced
    /// (at a clean close): the next open has nothing to replay.
    pub(crate) fn close(mut self) -> Result<(), StoreError> {
        self.stop_checkpointer();
        for Valid { file, path, .. } in list(&self.dir)?.0 {
            segment::invalidate(&file).map_err(|e| io("cannot empty", &path, e))?;
        }
        Ok(())
    }

    fn stop_checkpointer(&mut self) {
        self.checkpoints = None;
        if let Some(thread) = self.checkpointer.take() {
            if thread.join().is_err() {
                tracing::error!("the checkpointer thread panicked");
            }
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_checkpointer();
    }
}

/// A segment file with its valid header.
struct Valid {
    file: File,
    header: Header,
    path: PathBuf,
}

/// A file of the log, and where it is.
type LogFile = (File, PathBuf);

/// Writes a new segment's header into a spare file and names it after its
/// number. The header is synced with the segment's first record; until
/// then the file reads as a spare, under either name.
fn start_segment(dir: &Path, file: File, spare: &Path, number: u64) -> Result<Segment, StoreError> {
    let header = Header::new(number);
    file.write_all_at(&header.encode(), 0).map_err(|e| io("cannot write the header of", spare, e))?;
    let path = dir.join(format!("{number:016}.wal"));
    fs::rename(spare, &path).map_err(|e| io("cannot rename", spare, e))?;
    Ok(Segment { file, path, header, end: HEADER_BYTES })
}

/// The log's files with a valid header, in the order they were written,
/// and the others (spares).
fn list(dir: &Path) -> Result<(Vec<Valid>, Vec<LogFile>), StoreError> {
    let mut valid = Vec::new();
    let mut spares = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let path = entry.map_err(|e| io("cannot list", dir, e))?.path();
        if path.extension().is_none_or(|extension| extension != "wal") {
            continue;
        }
        let file =
            File::options().read(true).write(true).open(&path).map_err(|e| io("cannot open", &path, e))?;
        let mut head = [0; HEADER_BYTES as usize];
        let read = file.read_at(&mut head, 0).map_err(|e| io("cannot read", &path, e))?;
        match Header::decode(&head[..read]) {
            Some(header) => valid.push(Valid { file, header, path }),
            None => spares.push((file, path)),
        }
    }
    valid.sort_by_key(|segment| segment.header.number);
    Ok((valid, spares))
}

/// Replays every valid segment into `db`, makes sled durable, and empties
/// them. Returns every file of the log, all spares now.
fn recover(dir: &Path, generation: &Path, db: &sled::Db) -> Result<Vec<LogFile>, StoreError> {
    let (valid, mut spares) = list(dir)?;
    let started = std::time::Instant::now();
    let (mut batches, mut bytes) = (0_u64, 0_u64);
    for Valid { header, path, .. } in &valid {
        let data = fs::read(path).map_err(|e| io("cannot read", path, e))?;
        for payload in segment::records(&data, header.salt) {
            let batch = segment::decode(payload).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "a record of {} passed its checksum but does not parse",
                    path.display()
                ))
            })?;
            db.apply_batch(batch)?;
            batches += 1;
            bytes += payload.len() as u64;
        }
    }
    if batches > 0 {
        db.flush()?;
        FileSyncer::open(generation)?;
        tracing::info!(
            batches,
            bytes,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "replayed the write-ahead log"
        );
    }
    for Valid { file, path, .. } in valid {
        segment::invalidate(&file).map_err(|e| io("cannot empty", &path, e))?;
        spares.push((file, path));
    }
    // A spare cut short (a start that died while making it) would grow as
    // it is written, and each sync would then commit its size too.
    let mut whole = Vec::with_capacity(spares.len());
    for (file, path) in spares {
        if file.metadata().is_ok_and(|metadata| metadata.len() >= SEGMENT_BYTES) {
            whole.push((file, path));
        } else {
            fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
        }
    }
    Ok(whole)
}

/// The checkpointer thread: makes sled durable after each full segment,
/// then turns the segment into a spare (or removes it if one is waiting).
fn checkpoint_loop(
    dir: &Path,
    jobs: &Receiver<Checkpoint>,
    spares: &SyncSender<LogFile>,
    need_spare: bool,
    failed: &Mutex<Option<String>>,
) {
    if need_spare {
        match segment::zero_filled(dir, SEGMENT_BYTES) {
            Ok(spare) => offer(spares, spare),
            Err(error) => tracing::warn!(%error, "could not make a spare segment for the write-ahead log"),
        }
    }
    // Segments whose checkpoint failed; the next one that succeeds covers them.
    let mut waiting: Vec<Segment> = Vec::new();
    for Checkpoint { db, generation, full } in jobs {
        waiting.push(full);
        let flushed = db.flush().map_err(StoreError::from).and_then(|_| FileSyncer::open(&generation));
        drop(db);
        if let Err(error) = flushed {
            tracing::error!(%error, "a checkpoint of the store failed; the write-ahead log keeps its segments");
            *lock(failed) = Some(error.to_string());
            continue;
        }
        for segment in waiting.drain(..) {
            match segment::invalidate(&segment.file) {
                Ok(()) => offer(spares, (segment.file, segment.path)),
                Err(error) => {
                    tracing::error!(%error, path = %segment.path.display(), "could not empty a segment");
                    *lock(failed) = Some(error.to_string());
                }
            }
        }
    }
}

/// Hands a spare to the writer, or removes it if one is waiting already.
fn offer(spares: &SyncSender<LogFile>, spare: LogFile) {
    if let Err(TrySendError::Full((_, path)) | TrySendError::Disconnected((_, path))) = spares.try_send(spare)
    {
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(%error, path = %path.display(), "could not remove a spare segment");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {error}", path.display()))
}
