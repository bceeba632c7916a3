//! Staging's promise that a request is all or nothing, on a real sled
//! database: a request that fails at any check, including a failing read
//! of a state it needs, stages nothing, while the requests beside it in the
//! same batch commit.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::store::ProposedEvent;
use crate::store::sled::id_filter::IdFilter;

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
    let cache = StateCache::default();
    let commit_seq = counter(db, keys::COMMIT_SEQ) + 1;
    let mut staging =
        Staging::new(db, &cache, ids, Projections::default(), next_position(db), commit_seq, 1_000);
    let results = requests.iter().map(|request| staging.append(request)).collect();
    let mut finished = staging.finish();
    ids.stage(db, commit_seq, &finished.ids, &mut finished.batch).expect("ids stage");
    db.apply_batch(finished.batch).expect("batch applies");
    results
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
