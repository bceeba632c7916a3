use super::*;
use crate::store::sled::generation;

/// A data directory with its current generation opened.
fn store() -> (tempfile::TempDir, PathBuf, sled::Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let generation = generation::current(dir.path()).expect("generation");
    let db = generation::open(&generation, 1 << 20).expect("sled opens");
    (dir, generation, db)
}

fn batch(i: u32) -> Batch {
    let mut batch = Batch::default();
    batch.insert(format!("key-{i}").into_bytes(), format!("value-{i}").into_bytes());
    batch.insert(&b"last"[..], &i.to_be_bytes()[..]);
    if i > 0 {
        batch.remove(format!("key-{}", i - 1).into_bytes());
    }
    batch
}

fn value(db: &sled::Db, key: &[u8]) -> Option<Vec<u8>> {
    db.get(key).expect("reads").map(|value| value.to_vec())
}

fn segment_files(data_dir: &Path) -> Vec<(Option<Header>, u64)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(data_dir.join("wal")).expect("lists") {
        let data = fs::read(entry.expect("entry").path()).expect("reads");
        found.push((Header::decode(&data), data.len() as u64));
    }
    found
}

#[test]
fn a_record_reads_back_as_the_batch_it_logged() {
    let (_dir, _, db) = store();
    let (_, record) = batch(3).into_parts();
    let mut record = record.expect("a record");
    segment::seal(&mut record, 7);
    let mut data = Header::new(1).encode().to_vec();
    data.extend_from_slice(&record);
    data.extend_from_slice(&[0; 64]);
    let payloads: Vec<&[u8]> = segment::records(&data, 7).collect();
    assert_eq!(payloads.len(), 1);
    db.insert(b"key-2", b"old").expect("inserts");
    db.apply_batch(segment::decode(payloads[0]).expect("parses")).expect("applies");
    assert_eq!(value(&db, b"key-3").as_deref(), Some(&b"value-3"[..]));
    assert_eq!(value(&db, b"key-2"), None, "the removal is replayed");
    assert_eq!(segment::records(&data, 8).count(), 0, "a record under another salt is not this segment's");
    let torn = &data[..data.len() - 64 - 1];
    assert_eq!(segment::records(torn, 7).count(), 0, "a torn record ends the segment");
    assert!(Batch::default().into_parts().1.is_none(), "an empty batch logs nothing");
}

/// What a `kill -9` leaves: records logged, sled never flushed. The next
/// open replays them, then empties the log.
#[test]
fn an_open_replays_what_sled_lost_and_then_empties_the_log() {
    let (dir, generation, db) = store();
    let mut wal = Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens").expect("a log");
    // Logged only, as if sled had lost every one of them.
    for i in 0..100 {
        let (_, record) = batch(i).into_parts();
        wal.append(record.expect("a record"), &db, &generation).expect("appends");
    }
    drop(wal);
    assert_eq!(value(&db, b"last"), None);

    assert!(Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens").is_some());
    assert_eq!(value(&db, b"key-99").as_deref(), Some(&b"value-99"[..]));
    assert_eq!(value(&db, b"key-98"), None);
    assert_eq!(value(&db, b"last"), Some(99_u32.to_be_bytes().to_vec()));
    for (header, len) in segment_files(dir.path()) {
        assert!(len >= SEGMENT_BYTES, "every file is a whole segment ({len} bytes)");
        assert!(header.is_none_or(|header| header.number == 1), "the old segment was emptied: {header:?}");
    }

    // The replayed store, changed since: nothing of the old log comes back.
    db.insert(b"last", b"changed").expect("inserts");
    drop(Wal::open(dir.path(), &generation, &db, Durability::None).expect("opens"));
    assert_eq!(value(&db, b"last").as_deref(), Some(&b"changed"[..]));
    assert!(segment_files(dir.path()).is_empty(), "durability none keeps no log");
}

/// Segments fill and are recycled as sled's checkpoints catch up: the log
/// stays a few segments long, and a crash replays only the segments not
/// checkpointed, to the same state.
#[test]
fn full_segments_are_checkpointed_and_recycled() {
    let (dir, generation, db) = store();
    let mut wal = Wal::open(dir.path(), &generation, &db, Durability::Flush).expect("opens").expect("a log");
    let big = vec![7_u8; 64 * 1024];
    let rounds = 5 * SEGMENT_BYTES / big.len() as u64;
    for i in 0..rounds {
        let mut batch = Batch::default();
        batch.insert(format!("big-{}", i % 10).into_bytes(), big.clone());
        batch.insert(&b"round"[..], &i.to_be_bytes()[..]);
        let (sled_batch, record) = batch.into_parts();
        db.apply_batch(sled_batch).expect("applies");
        wal.append(record.expect("a record"), &db, &generation).expect("appends");
    }
    assert!(wal.current.header.number >= 5, "the log moved on {} times", wal.current.header.number);
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() <= 4, "full segments were recycled: {files:?}");
    assert!(files.iter().all(|(_, len)| *len >= SEGMENT_BYTES), "{files:?}");

    let (_, record) = {
        let mut batch = Batch::default();
        batch.insert(&b"round"[..], &u64::MAX.to_be_bytes()[..]);
        batch.into_parts()
    };
    // A record in the current segment that sled never saw, beside the
    // checkpointed ones that sled holds.
    let mut wal = Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens").expect("a log");
    wal.append(record.expect("a record"), &db, &generation).expect("appends");
    drop(wal);
    drop(Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens"));
    assert_eq!(value(&db, b"round"), Some(u64::MAX.to_be_bytes().to_vec()));
    assert_eq!(value(&db, b"big-3").map(|v| v.len()), Some(big.len()));
}

/// A clean close empties the log: the next open replays nothing.
#[test]
fn a_close_leaves_nothing_to_replay() {
    let (dir, generation, db) = store();
    let mut wal = Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens").expect("a log");
    let (sled_batch, record) = batch(1).into_parts();
    db.apply_batch(sled_batch).expect("applies");
    wal.append(record.expect("a record"), &db, &generation).expect("appends");
    db.flush().expect("flushes");
    wal.close().expect("closes");
    assert!(segment_files(dir.path()).iter().all(|(header, _)| header.is_none()));
    db.remove(b"key-1").expect("removes");
    drop(Wal::open(dir.path(), &generation, &db, Durability::Fsync).expect("opens"));
    assert_eq!(value(&db, b"key-1"), None, "nothing was replayed");
}
