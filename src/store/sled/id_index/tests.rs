use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::*;

/// Small enough that a few thousand ids make many runs and merges.
const SMALL: Limits = Limits { convert_at: 40, chunk: 8, merge_step: 12, garbage_step: 6 };

fn temporary() -> sled::Db {
    sled::Config::new().temporary(true).open().expect("a temporary sled")
}

/// Every (id, stream) a test wrote, with the number.
type Written = HashMap<(Uuid, String), u64>;

/// Commits `ids` as commit `seq`, the way the writer does.
fn commit(index: &mut IdIndex, db: &sled::Db, seq: u64, ids: &Written) {
    let owners: IdOwners =
        ids.iter().map(|((id, stream), number)| (*id, (Arc::from(stream.as_str()), *number))).collect();
    let mut batch = sled::Batch::default();
    index.stage(db, seq, &owners, &mut batch).expect("stage");
    db.apply_batch(batch).expect("apply");
}

/// Commits 1..=`commits`, each of 0 to 6 ids (random and ordered ones)
/// in three streams; returns every id with its owner.
fn fill(index: &mut IdIndex, db: &sled::Db, first_seq: u64, commits: u64) -> Written {
    let mut all = HashMap::new();
    for seq in first_seq..first_seq + commits {
        let ids: Written = (0..seq % 7)
            .map(|i| {
                let id = if i % 2 == 0 { Uuid::new_v4() } else { Uuid::from_u64_pair(seq, i) };
                ((id, format!("stream-{}", i % 3)), seq * 10 + i)
            })
            .collect();
        commit(index, db, seq, &ids);
        all.extend(ids);
    }
    all
}

fn assert_all_found(index: &IdIndex, db: &sled::Db, all: &Written) {
    for ((id, stream), number) in all {
        assert_eq!(index.number_in(db, id, stream).expect("lookup"), Some(*number), "id {id} in {stream}");
    }
    for ((id, stream), _) in all.iter().take(200) {
        let elsewhere = format!("{stream}-elsewhere");
        assert_eq!(index.number_in(db, id, &elsewhere).expect("lookup"), None, "id {id} in {elsewhere}");
    }
    for _ in 0..200 {
        assert_eq!(index.number_in(db, &Uuid::new_v4(), "stream-0").expect("lookup"), None);
    }
}

/// Does upkeep, as an idle writer would, until none is left.
fn settle(index: &mut IdIndex, db: &sled::Db) {
    let mut steps = 0;
    while index.has_upkeep() {
        let mut batch = sled::Batch::default();
        index.upkeep(db, &mut batch).expect("upkeep");
        db.apply_batch(batch).expect("apply");
        steps += 1;
        assert!(steps < 10_000, "upkeep never ends");
    }
}

/// Every stored chunk belongs to a live run and every segment is live;
/// the runs hold exactly the ids the manifest says.
fn assert_no_garbage_left(index: &IdIndex, db: &sled::Db) {
    let live: HashMap<u64, u64> = index.manifest.runs.iter().map(|run| (run.id, run.count)).collect();
    let mut counted: HashMap<u64, u64> = HashMap::new();
    for item in db.scan_prefix([keys::ID_RUN]) {
        let (key, value) = item.expect("scan");
        let run = u64::from_be_bytes(key[1..9].try_into().unwrap());
        assert!(live.contains_key(&run), "chunk of run {run}, which is not live");
        *counted.entry(run).or_default() += codec::decode_id_table(&value).unwrap().len() as u64;
    }
    assert_eq!(counted, live);
    for key in db.scan_prefix([keys::ID_SEGMENT]).keys() {
        let seq = keys::id_segment_seq(&key.unwrap()).unwrap();
        assert!(seq >= index.manifest.segments_from, "segment {seq} is garbage");
    }
}

#[test]
fn every_id_is_found_through_conversions_merges_and_a_reopen() {
    let db = temporary();
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    let mut all = HashMap::new();
    for round in 0..6 {
        all.extend(fill(&mut index, &db, 1 + round * 200, 200));
        assert_all_found(&index, &db, &all);
    }
    // About 3,600 ids in runs of 40 and up: merged down to a handful.
    assert!(index.run_count() <= 12, "{} runs", index.run_count());
    settle(&mut index, &db);
    assert_no_garbage_left(&index, &db);
    assert_eq!(
        index.manifest.runs.iter().map(|run| run.count).sum::<u64>() + index.recent.len() as u64,
        all.len() as u64
    );

    let reopened = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    assert_eq!(reopened.manifest, index.manifest);
    assert_eq!(reopened.recent, index.recent);
    assert_all_found(&reopened, &db, &all);
}

#[test]
fn a_merge_cut_short_by_a_crash_becomes_garbage_and_is_done_again() {
    let db = temporary();
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    let mut all = HashMap::new();
    let mut seq = 0;
    while index.merge.as_ref().is_none_or(|merge| merge.written == 0) {
        seq += 1;
        all.extend(fill(&mut index, &db, seq, 1));
    }
    let cut = index.merge.as_ref().unwrap().output;
    // The process dies here: what was applied is all there is.
    drop(index);
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    assert!(index.manifest.garbage.contains(&cut), "{:?}", index.manifest);
    assert_all_found(&index, &db, &all);
    all.extend(fill(&mut index, &db, seq + 1, 300));
    settle(&mut index, &db);
    assert_all_found(&index, &db, &all);
    assert_no_garbage_left(&index, &db);
    assert!(index.manifest.runs.iter().all(|run| run.id != cut));
}

#[test]
fn ids_of_the_old_per_id_layout_are_still_found() {
    let db = temporary();
    let id = Uuid::new_v4();
    db.insert(keys::event_id(&id), codec::encode_event_ref("old-stream", 41)).unwrap();
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    fill(&mut index, &db, 1, 100);
    assert_eq!(index.number_in(&db, &id, "old-stream").unwrap(), Some(41));
    assert_eq!(index.number_in(&db, &id, "new-stream").unwrap(), None);
}

#[test]
fn the_filter_scan_meets_every_id_while_the_index_merges() {
    let db = temporary();
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    let before = fill(&mut index, &db, 1, 2000);
    // The scan runs beside commits that convert and merge and remove
    // what they replaced, moving ids under it.
    let filter = Arc::new(IdFilter::new(0));
    let scan = {
        let (filter, db) = (Arc::clone(&filter), db.clone());
        std::thread::spawn(move || filter.fill(&db, &AtomicBool::new(false)))
    };
    let mut seq = 2000;
    while !scan.is_finished() || seq < 2600 {
        seq += 1;
        fill(&mut index, &db, seq, 1);
    }
    scan.join().unwrap().expect("scan");
    assert!(before.keys().all(|(id, _)| filter.may_hold(id)), "the scan missed an id");
}

/// One id in many streams: more entries than a chunk holds, so a run must
/// keep them in one chunk for a lookup to find each, through conversions,
/// merges and a reopen.
#[test]
fn an_id_written_to_many_streams_is_found_in_each_through_merges() {
    let db = temporary();
    let mut index = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    let mut all = Written::new();
    let shared: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut seq = 0;
    for round in 0..30u64 {
        seq += 1;
        // Each round writes every shared id to a stream of its own, in
        // commits that also hold ids of their own.
        let ids: Written = shared
            .iter()
            .map(|id| ((*id, format!("customer-{round}")), round))
            .chain((0..SMALL.chunk as u64).map(|i| ((Uuid::new_v4(), format!("order-{i}")), round)))
            .collect();
        commit(&mut index, &db, seq, &ids);
        all.extend(ids);
        all.extend(fill(&mut index, &db, seq + 1, 20));
        seq += 20;
    }
    assert!(index.run_count() > 1, "the test merges runs");
    assert_all_found(&index, &db, &all);
    settle(&mut index, &db);
    assert_no_garbage_left(&index, &db);
    let reopened = IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), SMALL).unwrap();
    assert_all_found(&reopened, &db, &all);
}
