//! Staging's promise that a request is all or nothing, on a real sled
//! database: a request that fails at any check, including a failing read
//! of a state it needs, stages nothing, while the requests beside it in the
//! same batch commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::store::ProposedEvent;
use crate::store::sled::id_filter::IdFilter;
use crate::store::sled::id_index::Limits;
use crate::store::sled::undo;

fn event(event_type: &str) -> ProposedEvent {
    ProposedEvent {
        id: Uuid::new_v4(),
        event_type: event_type.into(),
        is_json: true,
        data: Bytes::from_static(b"{}"),
        metadata_is_json: false,
        metadata: Bytes::new(),
    }
}

fn append(stream: &str, events: Vec<ProposedEvent>) -> Append {
    Append { stream: stream.into(), expected: ExpectedVersion::Any, events, access: None }
}

/// A fresh database and its (empty) id index.
fn fresh() -> (tempfile::TempDir, sled::Db, IdIndex) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = sled::Config::new().path(dir.path()).temporary(true).open().expect("sled opens");
    let ids = IdIndex::open(&db, Arc::new(IdFilter::new(0))).expect("id index opens");
    (dir, db, ids)
}

/// Stages `requests` as one batch from the stored head, applies it with
/// its ids, as the writer does, and returns each request's result.
fn commit(db: &sled::Db, ids: &mut IdIndex, requests: &[Append]) -> Vec<Result<AppendOutcome, StoreError>> {
    let (results, batch, undo) = stage(db, ids, requests);
    undo::apply(db, undo.encode().as_deref(), batch).expect("batch applies");
    results
}

/// Stages `requests` as the writer does: the batch to apply, with its undo.
fn stage(
    db: &sled::Db,
    ids: &mut IdIndex,
    requests: &[Append],
) -> (Vec<Result<AppendOutcome, StoreError>>, sled::Batch, Undo) {
    let cache = StateCache::default();
    let commit_seq = counter(db, keys::COMMIT_SEQ) + 1;
    let mut staging =
        Staging::new(db, &cache, ids, Projections::default(), next_position(db), commit_seq, 1_000);
    let results = requests.iter().map(|request| staging.append(request)).collect();
    let Finished { mut batch, ids: owners, mut undo, .. } = staging.finish(true).expect("finishes");
    ids.stage(db, commit_seq, &owners, &mut batch).expect("ids stage");
    undo.append(ids.take_undo());
    (results, batch, undo)
}

fn counter(db: &sled::Db, name: &[u8]) -> u64 {
    db.get(keys::counter(name)).expect("reads").map_or(0, |value| keys::decode_u64(&value).expect("decodes"))
}

fn next_position(db: &sled::Db) -> u64 {
    counter(db, keys::NEXT_POSITION)
}

/// The category stream's state cannot be read (a corrupt record stands in
/// for any failing read): the append that needs it fails, and nothing of
/// it is written: no record, no log entry, no state, no spent id, no
/// position. The append beside it in the batch commits whole.
#[test]
fn a_failing_state_read_stages_nothing_of_its_request() {
    let (_dir, db, mut ids) = fresh();
    db.insert(keys::stream("$ce-Order"), &b"\xffnot a state"[..]).expect("inserts");

    let failing = append("Order-1", vec![event("OrderPlaced"), event("OrderPaid")]);
    let passing = append("Invoice-1", vec![event("InvoiceSent")]);
    let results = commit(&db, &mut ids, &[failing.clone(), passing.clone()]);

    assert!(matches!(results[0], Err(StoreError::Corrupt(_))), "{:?}", results[0]);
    let outcome = results[1].as_ref().expect("the other append commits");
    assert_eq!((outcome.first_number, outcome.position), (0, Some(0)));

    assert_eq!(next_position(&db), 1, "only the passing append took a position");
    assert!(db.get(keys::event("Order-1", 0)).unwrap().is_none(), "no record of the failed append");
    assert!(db.get(keys::stream("Order-1")).unwrap().is_none(), "no state of the failed append");
    assert!(db.get(keys::log(1)).unwrap().is_none(), "no log entry past the passing append");
    for proposed in &failing.events {
        assert_eq!(
            ids.number_in(&db, &proposed.id, "Order-1").unwrap(),
            None,
            "the failed append's ids are not spent"
        );
    }
    assert!(db.get(keys::event("Invoice-1", 0)).unwrap().is_some());
    assert!(db.get(keys::event("$ce-Invoice", 0)).unwrap().is_some(), "the passing append is linked");
}

/// The same for the state a metadata append updates: the described
/// stream's state cannot be read, so the metadata event is not written.
#[test]
fn a_failing_read_of_the_described_stream_stages_nothing() {
    let (_dir, db, mut ids) = fresh();
    db.insert(keys::stream("Order-2"), &b"\xffnot a state"[..]).expect("inserts");
    let mut metadata = event("$metadata");
    metadata.data = Bytes::from_static(br#"{"$maxCount":3}"#);

    let results = commit(&db, &mut ids, &[append("$$Order-2", vec![metadata])]);

    assert!(matches!(results[0], Err(StoreError::Corrupt(_))), "{:?}", results[0]);
    assert_eq!(next_position(&db), 0);
    assert!(db.get(keys::event("$$Order-2", 0)).unwrap().is_none());
    assert!(db.get(keys::stream("$$Order-2")).unwrap().is_none());
}

/// Every check fails before anything is staged, and a batch of only
/// failures writes nothing but its counters.
#[test]
fn rejected_appends_leave_the_store_as_it_was() {
    let (_dir, db, mut ids) = fresh();
    let first = append("Order-3", vec![event("OrderPlaced")]);
    assert!(commit(&db, &mut ids, std::slice::from_ref(&first))[0].is_ok());
    let before: Vec<_> = db.iter().collect::<Result<_, _>>().expect("reads");

    let twice = event("OrderPaid");
    let rejected = [
        append("Order-3", vec![]),
        append("Order-3", vec![twice.clone(), twice]),
        Append { expected: ExpectedVersion::NoStream, ..append("Order-3", vec![event("OrderPaid")]) },
        append("$$Order-3", vec![ProposedEvent { data: Bytes::from_static(b"[1]"), ..event("$metadata") }]),
        append("Order-3", vec![first.events[0].clone(), event("OrderPaid")]),
    ];
    for result in commit(&db, &mut ids, &rejected) {
        assert!(result.is_err(), "{result:?}");
    }
    let after: Vec<_> = db.iter().collect::<Result<_, _>>().expect("reads");
    let changed: Vec<_> = after.iter().filter(|entry| !before.contains(entry)).collect();
    let counters = [keys::counter(keys::COMMIT_SEQ), keys::counter(keys::NEXT_POSITION)];
    // The id index keeps one segment per commit, empty for this one.
    let segment = keys::id_segment(2);
    assert!(
        changed.iter().all(|(key, _)| counters.iter().any(|c| key[..] == c[..]) || key[..] == segment[..]),
        "only counters changed: {changed:?}"
    );
}

/// Every key and value the store holds, with each stream state as read: a
/// state that is put back is stamped with the commit before its batch, not
/// with the commit that last wrote it.
fn contents(db: &sled::Db) -> Vec<(sled::IVec, Vec<u8>)> {
    db.iter()
        .map(|item| {
            let (key, value) = item.expect("reads");
            let value = match keys::stream_name(&key) {
                Some(_) => codec::encode_state(&codec::decode_state(&value).expect("a state").0, 0),
                None => value.to_vec(),
            };
            (key, value)
        })
        .collect()
}

/// sled applied only some keys of a batch: each key the batch changed
/// holds its new value or its old one, as `coin` says.
fn tear(db: &sled::Db, before: &[(sled::IVec, Vec<u8>)], mut coin: impl FnMut() -> bool) {
    let old: HashMap<_, _> = before.iter().cloned().collect();
    let new: HashMap<_, _> = db.iter().map(|item| item.expect("reads")).collect();
    let keys: HashSet<&sled::IVec> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if coin() {
            match old.get(key) {
                Some(value) => db.insert(key, &value[..]).map(drop),
                None => db.remove(key).map(drop),
            }
            .expect("writes");
        }
    }
}

/// A batch that sled applied only in part (any part: sled applies a
/// batch's keys in hash order, and a failure stops it anywhere) is taken
/// back whole at the next open, whatever it wrote: new streams, appends
/// to old ones, links, metadata, the id index's segments, runs and
/// manifest (small limits, so that runs are made and merged within a few
/// commits). After each torn batch the store is as before it, and the
/// same batch then commits as if nothing had happened.
#[test]
fn a_batch_applied_only_in_part_is_taken_back_whole() {
    let (_dir, db, _) = fresh();
    let limits = Limits { convert_at: 6, chunk: 2, merge_step: 4, garbage_step: 2 };
    let open_ids = || IdIndex::open_with(&db, Arc::new(IdFilter::new(0)), limits).expect("id index opens");
    let mut ids = open_ids();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut coin = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed & 1 == 1
    };
    let mut metadata = event("$metadata");
    metadata.data = Bytes::from_static(br#"{"$maxCount":5}"#);
    let mut committed: Vec<(String, Uuid, u64)> = Vec::new();
    for round in 0..24 {
        let requests = [
            append(&format!("Order-{}", round % 5), vec![event("OrderPlaced"), event("OrderPaid")]),
            append(&format!("Invoice-{round}"), vec![event("InvoiceSent")]),
            append(&format!("$$Order-{}", round % 3), vec![metadata.clone()]),
        ];
        let before = contents(&db);
        let (results, batch, undo) = stage(&db, &mut ids, &requests);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let undo_tree = db.open_tree(keys::UNDO_TREE).expect("opens");
        undo_tree.insert(keys::UNDO, undo.encode().expect("a record")).expect("writes");
        db.apply_batch(batch).expect("applies");
        tear(&db, &before, &mut coin);

        assert!(undo::repair(&db).expect("repairs"), "round {round}: the record is found");
        let after = contents(&db);
        let differ: Vec<_> =
            after.iter().filter(|entry| !before.contains(entry)).map(|(key, _)| key).collect();
        // The id index's garbage may stay removed: nothing reads it (the
        // ids are looked up below).
        let lost: Vec<_> = (before.iter())
            .filter(|entry| !after.contains(entry) && ![keys::ID_SEGMENT, keys::ID_RUN].contains(&entry.0[0]))
            .map(|(key, _)| key)
            .collect();
        assert!(
            differ.is_empty() && lost.is_empty(),
            "round {round}: new or changed {differ:?}, lost {lost:?}"
        );
        assert!(!undo::repair(&db).expect("repairs"), "taken back once");

        ids = open_ids();
        for (stream, id, number) in &committed {
            assert_eq!(ids.number_in(&db, id, stream).expect("looks up"), Some(*number), "round {round}");
        }
        for (request, result) in requests.iter().zip(commit(&db, &mut ids, &requests)) {
            let outcome = result.expect("commits");
            for (offset, proposed) in request.events.iter().enumerate() {
                committed.push((request.stream.clone(), proposed.id, outcome.first_number + offset as u64));
            }
        }
        assert!(undo_tree.get(keys::UNDO).expect("reads").is_none(), "a whole batch leaves no record");
    }
    assert!(db.get(keys::counter(keys::ID_INDEX)).expect("reads").is_some(), "runs were made");
}
