//! The store contract: what every backend of the `Store` seam must do,
//! checked on each through one harness. A backend is done when this suite
//! passes, not when its own tests do.
//!
//! Each contract test is an `async fn(Backend)`, listed once in
//! [`contract!`], which expands it into one `#[tokio::test]` per backend
//! (`on_sled::name`, `on_memory::name`, `on_postgres::name`). Stores are
//! opened only through `eventfeed::store::open`, as the server opens them.
//! The PostgreSQL tests run on a cluster of their own (`common::postgres`),
//! a fresh database each; without PostgreSQL they say `SKIPPED`, unless
//! `CI` is set.
//!
//! Last, a differential test replays seeded pseudo-random histories of
//! appends, retries, deletes, metadata writes, reads and a scavenge on the
//! memory store and each real backend together and demands the same
//! answer to every request. A failure names its seed and request number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventfeed::store::links::link_id;
use eventfeed::store::projections::Projections;
use eventfeed::store::{
    self, AccessBasis, AllRead, AllSlice, Append, AppendOutcome, Direction, Durability, ExpectedVersion,
    PostgresOptions, ProposedEvent, ReadEvent, RecordedEvent, ScavengeReport, ScavengeStarted,
    ScavengeStatus, Store, StoreConfig, StoreError, StreamRead, StreamSlice, StreamState, StreamView,
};
use tempfile::TempDir;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The harness.

/// A backend under contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The sled store in a temporary directory. `Durability::None`: the
    /// contract is the same in every mode, and this one costs no fsyncs.
    Sled,
    Memory,
    /// A fresh database in the tests' PostgreSQL cluster.
    Postgres,
}

/// An open store, and what it needs to stay open.
struct Opened {
    store: Arc<dyn Store>,
    /// The sled store's data directory, removed when the test ends.
    _dir: Option<TempDir>,
}

impl std::ops::Deref for Opened {
    type Target = Arc<dyn Store>;

    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

impl Opened {
    async fn close(self) {
        self.store.close().await.expect("the store closes");
    }
}

impl Backend {
    async fn open(self) -> Opened {
        self.open_with(Projections::default()).await
    }

    async fn open_with(self, projections: Projections) -> Opened {
        let (config, dir) = match self {
            Self::Sled => {
                let dir = tempfile::tempdir().unwrap();
                let mut options = eventfeed::store::sled::SledStoreOptions::new(dir.path().join("data"));
                options.durability = Durability::None;
                options.projections = projections;
                options.cache_capacity = 16 * 1024 * 1024;
                (StoreConfig::Sled(options), Some(dir))
            }
            Self::Memory => (StoreConfig::Memory { projections }, None),
            Self::Postgres => {
                let url = common::postgres::database().expect("the PostgreSQL cluster runs");
                (
                    StoreConfig::Postgres(PostgresOptions {
                        url,
                        durability: Durability::Fsync,
                        projections,
                        ca_file: None,
                    }),
                    None,
                )
            }
        };
        let store = store::open(&config).await.expect("the store opens");
        Opened { store, _dir: dir }
    }
}

/// Expands each contract test into one test per backend.
macro_rules! contract {
    ($($test:ident),+ $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sled).await;
                }
            )+
        }
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Memory).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if super::common::postgres::cluster().is_some() {
                        super::$test(super::Backend::Postgres).await;
                    }
                }
            )+
        }
    };
}

contract!(
    positions_and_numbers_are_dense_across_streams_and_batches,
    concurrent_appends_stay_dense,
    expected_versions,
    retries_return_the_original_outcome,
    partial_retries_and_malformed_requests_fail,
    event_ids_are_unique_per_stream,
    a_failed_request_changes_nothing,
    soft_delete_hides_the_past_and_numbering_continues,
    hard_delete_is_forever,
    max_count_and_truncate_before_apply_to_every_read,
    max_age_hides_old_events,
    all_reads_in_order_page_and_skip_hidden_events,
    projections_are_readable_when_the_append_is_acknowledged,
    projections_can_be_switched_off,
    watches_taken_before_an_append_are_woken,
    stream_state_reports_what_the_store_keeps,
    a_scavenge_changes_no_read,
    rules_on_system_streams_cut_what_one_append_linked,
    a_closed_store_refuses_writes,
    a_read_returns_at_most_its_bytes_and_at_least_one_event,
    multi_stream_appends_are_all_or_nothing,
    an_append_allowed_by_rules_that_changed_is_refused,
    streams_are_listed_by_name_from_a_prefix,
    an_export_loads_into_an_empty_store_unchanged,
);

// ---------------------------------------------------------------------------
// Helpers.

/// How long any wait for something the store does in the background may take.
const PATIENCE: Duration = Duration::from_secs(60);

fn proposed(id: Uuid, event_type: &str, data: &str) -> ProposedEvent {
    ProposedEvent {
        id,
        event_type: event_type.to_owned(),
        is_json: true,
        data: Bytes::from(data.to_owned()),
        metadata_is_json: false,
        metadata: Bytes::new(),
    }
}

/// `count` events of `event_type` with fresh ids.
fn fresh(count: usize, event_type: &str) -> Vec<ProposedEvent> {
    (0..count).map(|i| proposed(Uuid::new_v4(), event_type, &format!("{{\"i\":{i}}}"))).collect()
}

fn metadata(document: &str) -> Vec<ProposedEvent> {
    vec![proposed(Uuid::new_v4(), "$metadata", document)]
}

async fn append(
    store: &Arc<dyn Store>,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Result<AppendOutcome, StoreError> {
    store.append(Append { stream: stream.to_owned(), expected, events, access: None }).await
}

/// Appends that must succeed.
async fn put(store: &Arc<dyn Store>, stream: &str, events: Vec<ProposedEvent>) -> AppendOutcome {
    append(store, stream, ExpectedVersion::Any, events).await.expect("the append succeeds")
}

fn forward(stream: &str, from: u64, count: u64, resolve_links: bool) -> StreamRead {
    StreamRead {
        stream: stream.to_owned(),
        from: Some(from),
        direction: Direction::Forward,
        count,
        resolve_links,
    }
}

/// The whole stream as reads see it.
async fn read(store: &Arc<dyn Store>, stream: &str) -> Result<StreamSlice, StoreError> {
    store.read_stream(forward(stream, 0, 10_000, false)).await
}

fn numbers(slice: &StreamSlice) -> Vec<u64> {
    slice.events.iter().map(|event| event.original().number).collect()
}

/// Everything `$all` shows, oldest first.
async fn all(store: &Arc<dyn Store>) -> Vec<RecordedEvent> {
    let read = AllRead { from: Some(0), direction: Direction::Forward, count: 100_000 };
    store.read_all(read).await.expect("$all reads").events
}

fn all_read(from: Option<u64>, direction: Direction, count: u64) -> AllRead {
    AllRead { from, direction, count }
}

#[track_caller]
fn assert_wrong_version(result: Result<AppendOutcome, StoreError>, current: i64) {
    match result {
        Err(StoreError::WrongExpectedVersion { current: found, .. }) if found == current => {}
        other => panic!("expected a wrong expected version at {current}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Invalid(_))), "expected Invalid, got {result:?}");
}

/// Waits for a scavenge to finish and returns its report.
async fn scavenge(store: &Arc<dyn Store>) -> ScavengeReport {
    let ScavengeStarted::Started(id) = store.start_scavenge().await.expect("a scavenge starts") else {
        panic!("no scavenge was running");
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let report = store.scavenge_report(id).await.unwrap().expect("the scavenge has a report");
        if report.status != ScavengeStatus::Running {
            assert_eq!(report.status, ScavengeStatus::Completed, "{report:?}");
            return report;
        }
        assert!(tokio::time::Instant::now() < deadline, "the scavenge did not finish: {report:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// The contract.

async fn positions_and_numbers_are_dense_across_streams_and_batches(backend: Backend) {
    let store = backend.open().await;
    let batches: [(&str, usize); 6] =
        [("Order-1", 3), ("Order-2", 1), ("Order-1", 2), ("plain", 4), ("Order-2", 2), ("plain", 1)];
    let mut next_position = 0;
    let mut next_number = std::collections::HashMap::new();
    for (stream, count) in batches {
        let outcome = put(&store, stream, fresh(count, "Placed")).await;
        let first = *next_number.get(stream).unwrap_or(&0);
        assert_eq!(
            outcome,
            AppendOutcome {
                first_number: first,
                last_number: first + count as u64 - 1,
                position: Some(next_position),
                idempotent: false,
            }
        );
        next_number.insert(stream, first + count as u64);
        next_position += count as u64;
        assert!(store.notifier().next_position() >= next_position, "the head moved before the answer");
    }
    let log = all(&store).await;
    assert_eq!(
        log.iter().map(|event| event.position).collect::<Vec<_>>(),
        (0..next_position).collect::<Vec<_>>()
    );
    assert!(
        log.windows(2).all(|pair| pair[0].created_micros <= pair[1].created_micros),
        "creation times never decrease along the log"
    );
    for (stream, next) in next_number {
        let slice = read(&store, stream).await.unwrap();
        assert_eq!(numbers(&slice), (0..next).collect::<Vec<_>>(), "{stream}");
        assert_eq!(slice.view.last_number, next - 1);
        for event in &slice.events {
            let in_log = &log[event.event.position as usize];
            assert_eq!(in_log, &event.event, "a stream and $all show the same record");
        }
    }
    store.close().await;
}

async fn concurrent_appends_stay_dense(backend: Backend) {
    const TASKS: usize = 16;
    const APPENDS: usize = 10;
    let store = backend.open().await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store.store);
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..APPENDS {
                let (stream, count) =
                    if i % 2 == 0 { (format!("task-{task}"), 1 + i % 3) } else { ("shared".to_owned(), 2) };
                let outcome = put(&store, &stream, fresh(count, "Tick")).await;
                outcomes.push((stream, count as u64, outcome));
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    let log = all(&store).await;
    let total: u64 = outcomes.iter().map(|(_, count, _)| count).sum();
    assert_eq!(log.len() as u64, total);
    assert_eq!(log.iter().map(|event| event.position).collect::<Vec<_>>(), (0..total).collect::<Vec<_>>());
    // Each append's events sit together in $all, numbered as it was told.
    for (stream, count, outcome) in &outcomes {
        let position = outcome.position.unwrap();
        for offset in 0..*count {
            let event = &log[(position + offset) as usize];
            assert_eq!(&*event.stream, stream);
            assert_eq!(event.number, outcome.first_number + offset);
        }
        assert_eq!(outcome.last_number - outcome.first_number + 1, *count);
    }
    for stream in ["shared", "task-0", "task-15"] {
        let slice = read(&store, stream).await.unwrap();
        assert_eq!(numbers(&slice), (0..slice.events.len() as u64).collect::<Vec<_>>(), "{stream}");
    }
    store.close().await;
}

async fn expected_versions(backend: Backend) {
    let store = backend.open().await;
    use ExpectedVersion::{Any, Exact, NoStream, StreamExists};
    assert_wrong_version(append(&store, "s", StreamExists, fresh(1, "A")).await, -1);
    assert_wrong_version(append(&store, "s", Exact(0), fresh(1, "A")).await, -1);
    let created = append(&store, "s", NoStream, fresh(2, "A")).await.unwrap();
    assert_eq!((created.first_number, created.last_number), (0, 1));
    assert_wrong_version(append(&store, "s", NoStream, fresh(1, "A")).await, 1);
    assert_wrong_version(append(&store, "s", Exact(0), fresh(1, "A")).await, 1);
    assert_wrong_version(append(&store, "s", Exact(2), fresh(1, "A")).await, 1);
    let exact = append(&store, "s", Exact(1), fresh(1, "A")).await.unwrap();
    assert_eq!(exact.first_number, 2);
    let exists = append(&store, "s", StreamExists, fresh(1, "A")).await.unwrap();
    assert_eq!(exists.first_number, 3);
    let any = append(&store, "s", Any, fresh(1, "A")).await.unwrap();
    assert_eq!(any.first_number, 4);
    let any_new = append(&store, "t", Any, fresh(1, "A")).await.unwrap();
    assert_eq!(any_new.first_number, 0);
    // The error says what the stream is at, in words as well.
    let Err(StoreError::WrongExpectedVersion { current, detail }) =
        append(&store, "s", Exact(7), fresh(1, "A")).await
    else {
        panic!("a wrong version fails");
    };
    assert_eq!(current, 4);
    assert!(detail.contains('7') && detail.contains('4'), "{detail}");
    store.close().await;
}

async fn retries_return_the_original_outcome(backend: Backend) {
    let store = backend.open().await;
    put(&store, "other", fresh(2, "A")).await;
    let events = fresh(3, "A");
    let original = append(&store, "s", ExpectedVersion::NoStream, events.clone()).await.unwrap();
    assert_eq!(original.position, Some(2));
    put(&store, "s", fresh(1, "A")).await;
    let head = store.notifier().next_position();
    let retried = AppendOutcome { first_number: 0, last_number: 2, position: None, idempotent: true };
    // Whatever the expected version says: a retry is recognised by its ids.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
        ExpectedVersion::StreamExists,
    ] {
        assert_eq!(append(&store, "s", expected, events.clone()).await.unwrap(), retried, "{expected:?}");
    }
    // A consecutive part of an earlier write, in order, is a retry too.
    let part = append(&store, "s", ExpectedVersion::Any, events[1..].to_vec()).await.unwrap();
    assert_eq!(part, AppendOutcome { first_number: 1, last_number: 2, position: None, idempotent: true });
    // Nothing was written: same head, same stream.
    assert_eq!(store.notifier().next_position(), head);
    assert_eq!(read(&store, "s").await.unwrap().events.len(), 4);
    assert_eq!(all(&store).await.len() as u64, head);
    // Ids are spent across a soft delete: the retry still answers.
    store.delete("s", ExpectedVersion::Any, false).await.unwrap();
    assert_eq!(append(&store, "s", ExpectedVersion::NoStream, events.clone()).await.unwrap(), retried);
    assert_eq!(store.stream_state("s").await.unwrap().unwrap().next_number, 4);
    store.close().await;
}

/// Event ids are unique per stream, as in EventStore v5: one command's id
/// is often the id of the events it causes in several streams. The same
/// ids in another stream are new events there, and each stream then
/// recognises its own retries.
async fn event_ids_are_unique_per_stream(backend: Backend) {
    let store = backend.open().await;
    let events = fresh(2, "A");
    let order = put(&store, "order-1", events.clone()).await;
    put(&store, "customer-1", fresh(3, "A")).await;
    let customer = append(&store, "customer-1", ExpectedVersion::Exact(2), events.clone()).await.unwrap();
    assert_eq!((customer.first_number, customer.last_number, customer.idempotent), (3, 4, false));
    assert_eq!(customer.position, Some(5));
    // A third stream, in the same batch as a retry to the first: the
    // writer groups both in one commit when they arrive together.
    let (audit, retry) = tokio::join!(
        append(&store, "audit", ExpectedVersion::NoStream, events.clone()),
        append(&store, "order-1", ExpectedVersion::Any, events.clone()),
    );
    assert_eq!((audit.as_ref().unwrap().first_number, audit.unwrap().idempotent), (0, false));
    assert_eq!(retry.unwrap(), AppendOutcome { position: None, idempotent: true, ..order });
    // Each stream answers its own retries with its own numbers.
    let again = append(&store, "customer-1", ExpectedVersion::Any, events.clone()).await.unwrap();
    assert_eq!((again.first_number, again.last_number, again.idempotent), (3, 4, true));
    let again = append(&store, "audit", ExpectedVersion::Any, events.clone()).await.unwrap();
    assert_eq!((again.first_number, again.idempotent), (0, true));
    // A partial match in any of them is still a wrong expected version.
    let mut partial = events[..1].to_vec();
    partial.extend(fresh(1, "A"));
    assert_wrong_version(append(&store, "customer-1", ExpectedVersion::Any, partial).await, 4);
    // Each write is in each stream once, and in `$all` once per stream.
    assert_eq!(numbers(&read(&store, "order-1").await.unwrap()), [0, 1]);
    assert_eq!(numbers(&read(&store, "customer-1").await.unwrap()), [0, 1, 2, 3, 4]);
    assert_eq!(numbers(&read(&store, "audit").await.unwrap()), [0, 1]);
    let shared = all(&store).await.into_iter().filter(|event| event.id == events[0].id).count();
    assert_eq!(shared, 3);
    store.close().await;
}

async fn partial_retries_and_malformed_requests_fail(backend: Backend) {
    let store = backend.open().await;
    let events = fresh(3, "A");
    put(&store, "s", events.clone()).await;
    // Some ids new, some old.
    let mut mixed = events[..2].to_vec();
    mixed.extend(fresh(1, "A"));
    assert_wrong_version(append(&store, "s", ExpectedVersion::Any, mixed).await, 2);
    let mut new_first = fresh(1, "A");
    new_first.push(events[0].clone());
    assert_wrong_version(append(&store, "s", ExpectedVersion::Any, new_first).await, 2);
    // Old ids, another order or with a gap.
    let reordered = vec![events[1].clone(), events[0].clone()];
    assert_wrong_version(append(&store, "s", ExpectedVersion::Any, reordered).await, 2);
    let gap = vec![events[0].clone(), events[2].clone()];
    assert_wrong_version(append(&store, "s", ExpectedVersion::Any, gap).await, 2);
    // The error names an id the stream has, and where.
    let Err(StoreError::WrongExpectedVersion { detail, .. }) =
        append(&store, "s", ExpectedVersion::Any, vec![events[1].clone(), events[0].clone()]).await
    else {
        panic!("a partial retry fails");
    };
    assert!(detail.contains(&events[1].id.to_string()) && detail.contains("'s'"), "{detail}");
    // Malformed: an id twice in one request, no events, a bad metadata document.
    let id = Uuid::new_v4();
    assert_invalid(
        append(&store, "s", ExpectedVersion::Any, vec![proposed(id, "A", "{}"), proposed(id, "B", "{}")])
            .await,
    );
    assert_invalid(append(&store, "s", ExpectedVersion::Any, Vec::new()).await);
    assert_invalid(append(&store, "$$s", ExpectedVersion::Any, metadata(r#"{"$maxCount":0}"#)).await);
    assert_invalid(append(&store, "$$s", ExpectedVersion::Any, metadata("[1]")).await);
    assert_eq!(store.stream_state("t").await.unwrap(), None);
    assert_eq!(store.stream_state("$$s").await.unwrap(), None);
    store.close().await;
}

/// Everything a read can tell about a few streams and `$all`.
async fn snapshot(store: &Arc<dyn Store>, streams: &[&str]) -> String {
    let mut out = String::new();
    for stream in streams {
        let state = store.stream_state(stream).await;
        let slice = read(store, stream).await.map(|slice| (slice.view, slice.events));
        out.push_str(&format!("{stream}: {state:?} {slice:?}\n"));
    }
    let slice = store.read_all(all_read(Some(0), Direction::Forward, 100_000)).await.unwrap();
    out.push_str(&format!("$all: {} {:?} {:?}\n", slice.next_position, slice.scanned, slice.events));
    out
}

async fn a_failed_request_changes_nothing(backend: Backend) {
    let store = backend.open().await;
    let events = fresh(2, "Placed");
    put(&store, "Order-1", events.clone()).await;
    put(&store, "$$Order-1", metadata(r#"{"$maxCount":5}"#)).await;
    store.delete("gone", ExpectedVersion::Any, true).await.unwrap();
    let streams = ["Order-1", "$$Order-1", "Order-2", "$ce-Order", "$et-Placed", "$streams", "gone"];
    let before = snapshot(&store, &streams).await;
    let head = store.notifier().next_position();
    // The sled store publishes a commit just after it answers: wait for the
    // last one, so that the watch below counts it as seen.
    let notifier = store.notifier();
    assert!(notifier.wait_for_commit(notifier.commit_seq(), PATIENCE).await);
    let mut watch = notifier.watch(None);

    use ExpectedVersion::{Any, Exact, NoStream};
    assert_wrong_version(append(&store, "Order-1", Exact(0), fresh(2, "Placed")).await, 1);
    assert_wrong_version(append(&store, "Order-1", NoStream, fresh(1, "Placed")).await, 1);
    let mut partial = events[..1].to_vec();
    partial.extend(fresh(1, "Placed"));
    assert_wrong_version(append(&store, "Order-1", Any, partial).await, 1);
    assert_wrong_version(append(&store, "Order-2", Exact(3), fresh(1, "Placed")).await, -1);
    assert_invalid(append(&store, "Order-2", Any, Vec::new()).await);
    assert_invalid(append(&store, "$$Order-1", Any, metadata(r#"{"$tb":-1}"#)).await);
    assert_invalid(append(&store, "$$Order-2", Any, metadata("not json")).await);
    let twice = proposed(Uuid::new_v4(), "Placed", "{}");
    assert_invalid(append(&store, "Order-2", Any, vec![twice.clone(), twice]).await);
    assert_eq!(append(&store, "gone", Any, fresh(1, "Placed")).await, Err(StoreError::StreamDeleted));
    assert!(matches!(
        store.delete("Order-1", Exact(7), false).await,
        Err(StoreError::WrongExpectedVersion { current: 1, .. })
    ));
    assert!(matches!(
        store.delete("Order-1", NoStream, true).await,
        Err(StoreError::WrongExpectedVersion { current: 1, .. })
    ));
    assert_eq!(store.delete("Order-2", Any, false).await, Err(StoreError::StreamNotFound));
    assert_eq!(store.delete("gone", Any, true).await, Err(StoreError::StreamDeleted));
    // An idempotent retry writes nothing either.
    assert!(append(&store, "Order-1", Any, events).await.unwrap().idempotent);

    assert_eq!(snapshot(&store, &streams).await, before);
    assert_eq!(store.notifier().next_position(), head);
    let woke = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
    assert!(woke.is_err(), "nothing was published");
    store.close().await;
}

async fn soft_delete_hides_the_past_and_numbering_continues(backend: Backend) {
    let store = backend.open().await;
    put(&store, "Order-1", fresh(3, "Placed")).await;
    put(&store, "Order-2", fresh(1, "Placed")).await;
    store.delete("Order-1", ExpectedVersion::Exact(2), false).await.unwrap();
    assert_eq!(read(&store, "Order-1").await.unwrap_err(), StoreError::StreamNotFound);
    assert_eq!(store.read_event("Order-1", 0, false).await.unwrap_err(), StoreError::StreamNotFound);
    let state = store.stream_state("Order-1").await.unwrap().unwrap();
    assert!(state.soft_deleted && !state.tombstoned);
    assert_eq!((state.next_number, state.deleted_before), (3, 3));
    assert_eq!(all(&store).await.iter().map(|e| &*e.stream).collect::<Vec<_>>(), ["Order-2"]);
    // Deleting again: there is nothing to delete.
    assert_eq!(store.delete("Order-1", ExpectedVersion::Any, false).await, Err(StoreError::StreamNotFound));
    // The links stay, but resolve to nothing: they read as links.
    let category = store.read_stream(forward("$ce-Order", 0, 100, true)).await.unwrap();
    assert_eq!(category.events.len(), 4);
    assert!(category.events[..3].iter().all(|e| e.link.is_none() && e.event.is_link()));
    assert!(category.events[3].link.is_some());
    assert_eq!(
        store.read_event("$ce-Order", 0, true).await.unwrap().1,
        None,
        "a resolved read of a gone target"
    );
    assert!(store.read_event("$ce-Order", 0, false).await.unwrap().1.unwrap().event.is_link());

    // The stream no longer exists, so NoStream is right; numbering goes on.
    let again = append(&store, "Order-1", ExpectedVersion::NoStream, fresh(2, "Placed")).await.unwrap();
    assert_eq!((again.first_number, again.last_number, again.position), (3, 4, Some(4)));
    let slice = read(&store, "Order-1").await.unwrap();
    assert_eq!(numbers(&slice), [3, 4]);
    assert_eq!((slice.view.first_visible, slice.view.last_number), (3, 4));
    assert_eq!(store.read_event("Order-1", 1, false).await.unwrap().1, None);
    assert_eq!(store.read_event("Order-1", 4, false).await.unwrap().1.unwrap().event.number, 4);
    let state = store.stream_state("Order-1").await.unwrap().unwrap();
    assert!(!state.soft_deleted);
    assert_eq!(state.created_position, 0, "the stream was created once");
    assert_eq!(
        all(&store).await.iter().map(|e| (e.position, e.number)).collect::<Vec<_>>(),
        [(3, 0), (4, 3), (5, 4)]
    );
    // `$streams` links a stream once, when it is first created.
    let streams = read(&store, "$streams").await.unwrap();
    assert_eq!(streams.events.len(), 2);
    store.close().await;
}

async fn hard_delete_is_forever(backend: Backend) {
    let store = backend.open().await;
    let events = fresh(2, "Placed");
    put(&store, "Order-1", events.clone()).await;
    put(&store, "Order-2", fresh(1, "Placed")).await;
    store.delete("Order-1", ExpectedVersion::Exact(1), true).await.unwrap();
    assert_eq!(read(&store, "Order-1").await.unwrap_err(), StoreError::StreamDeleted);
    assert_eq!(store.read_event("Order-1", 0, false).await.unwrap_err(), StoreError::StreamDeleted);
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream, ExpectedVersion::Exact(1)] {
        assert_eq!(
            append(&store, "Order-1", expected, fresh(1, "Placed")).await,
            Err(StoreError::StreamDeleted)
        );
    }
    // Even a retry of what it held: the tombstone is checked first.
    assert_eq!(append(&store, "Order-1", ExpectedVersion::Any, events).await, Err(StoreError::StreamDeleted));
    assert_eq!(store.delete("Order-1", ExpectedVersion::Any, true).await, Err(StoreError::StreamDeleted));
    assert_eq!(store.delete("Order-1", ExpectedVersion::Any, false).await, Err(StoreError::StreamDeleted));
    let state = store.stream_state("Order-1").await.unwrap().unwrap();
    assert!(state.tombstoned);
    assert_eq!(state.next_number, 2);
    assert_eq!(all(&store).await.iter().map(|e| &*e.stream).collect::<Vec<_>>(), ["Order-2"]);
    let category = store.read_stream(forward("$ce-Order", 0, 100, true)).await.unwrap();
    assert_eq!(category.events.iter().map(|e| e.link.is_some()).collect::<Vec<_>>(), [false, false, true]);

    // A tombstone on a name never written keeps the name from ever being used.
    store.delete("never", ExpectedVersion::NoStream, true).await.unwrap();
    let state = store.stream_state("never").await.unwrap().unwrap();
    assert!(state.tombstoned);
    assert_eq!(state.next_number, 0);
    assert_eq!(
        append(&store, "never", ExpectedVersion::Any, fresh(1, "A")).await,
        Err(StoreError::StreamDeleted)
    );
    assert_eq!(read(&store, "never").await.unwrap_err(), StoreError::StreamDeleted);
    // But an expected version is still checked first.
    assert!(matches!(
        store.delete("never-either", ExpectedVersion::Exact(0), true).await,
        Err(StoreError::WrongExpectedVersion { current: -1, .. })
    ));
    store.close().await;
}

async fn max_count_and_truncate_before_apply_to_every_read(backend: Backend) {
    let store = backend.open().await;
    put(&store, "Order-1", fresh(10, "Placed")).await;
    put(&store, "$$Order-1", metadata(r#"{"$maxCount":3,"owner":"team-a"}"#)).await;
    let slice = read(&store, "Order-1").await.unwrap();
    assert_eq!(numbers(&slice), [7, 8, 9]);
    assert_eq!((slice.view.first_visible, slice.view.last_number), (7, 9));
    assert_eq!(slice.view.settings.max_count, Some(3));
    assert_eq!(slice.view.settings.metadata_number, Some(0));
    assert_eq!(store.read_event("Order-1", 6, false).await.unwrap().1, None);
    assert_eq!(store.read_event("Order-1", 7, false).await.unwrap().1.unwrap().event.number, 7);
    let backward = StreamRead {
        stream: "Order-1".into(),
        from: None,
        direction: Direction::Backward,
        count: 5,
        resolve_links: false,
    };
    assert_eq!(numbers(&store.read_stream(backward.clone()).await.unwrap()), [7, 8, 9]);
    let visible_in_all: Vec<(String, u64)> =
        all(&store).await.iter().map(|e| (e.stream.to_string(), e.number)).collect();
    assert_eq!(
        visible_in_all,
        [("Order-1".to_owned(), 7), ("Order-1".into(), 8), ("Order-1".into(), 9), ("$$Order-1".into(), 0)]
    );
    // The settings are the stream's: its category stream shows every link,
    // and resolves those whose target is hidden to nothing.
    let category = store.read_stream(forward("$ce-Order", 0, 100, true)).await.unwrap();
    assert_eq!(category.events.len(), 10);
    assert_eq!(category.events.iter().filter(|e| e.link.is_some()).count(), 3);

    // The newest metadata wins.
    put(&store, "$$Order-1", metadata(r#"{"$tb":8}"#)).await;
    let slice = read(&store, "Order-1").await.unwrap();
    assert_eq!(numbers(&slice), [8, 9]);
    assert_eq!((slice.view.settings.max_count, slice.view.settings.truncate_before), (None, Some(8)));
    assert_eq!(slice.view.settings.metadata_number, Some(1));
    let state = store.stream_state("Order-1").await.unwrap().unwrap();
    assert_eq!(state.settings, slice.view.settings);
    // Both rules: the strictest wins.
    put(&store, "$$Order-1", metadata(r#"{"$tb":2,"$maxCount":1}"#)).await;
    assert_eq!(numbers(&read(&store, "Order-1").await.unwrap()), [9]);
    // Retention hides, it does not remove: lifting it shows the events again.
    put(&store, "$$Order-1", metadata("{}")).await;
    assert_eq!(read(&store, "Order-1").await.unwrap().events.len(), 10);
    // Metadata for a stream never written is kept for when it is.
    put(&store, "$$later", metadata(r#"{"$maxCount":1}"#)).await;
    put(&store, "later", fresh(3, "A")).await;
    assert_eq!(numbers(&read(&store, "later").await.unwrap()), [2]);
    store.close().await;
}

async fn max_age_hides_old_events(backend: Backend) {
    let store = backend.open().await;
    put(&store, "old", fresh(2, "A")).await;
    put(&store, "young", fresh(2, "A")).await;
    put(&store, "$$old", metadata(r#"{"$maxAge":1}"#)).await;
    put(&store, "$$young", metadata(r#"{"$maxAge":86400}"#)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let slice = read(&store, "old").await.unwrap();
    assert!(slice.events.is_empty());
    assert_eq!((slice.view.first_visible, slice.view.last_number), (2, 1));
    assert_eq!(store.read_event("old", 1, false).await.unwrap().1, None);
    assert_eq!(read(&store, "young").await.unwrap().events.len(), 2);
    let streams: Vec<String> = all(&store).await.iter().map(|e| e.stream.to_string()).collect();
    assert_eq!(streams, ["young", "young", "$$old", "$$young"]);
    store.close().await;
}

async fn all_reads_in_order_page_and_skip_hidden_events(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(
        store.read_all(all_read(None, Direction::Backward, 10)).await.unwrap().scanned,
        None,
        "an empty log"
    );
    // Positions 0-1 hidden (deleted), then a, b, hidden c at 4-5, then a.
    put(&store, "hidden", fresh(2, "A")).await;
    put(&store, "a", fresh(1, "A")).await;
    put(&store, "b", fresh(1, "A")).await;
    put(&store, "c", fresh(2, "A")).await;
    put(&store, "a", fresh(1, "A")).await;
    store.delete("hidden", ExpectedVersion::Any, true).await.unwrap();
    store.delete("c", ExpectedVersion::Any, false).await.unwrap();
    let visible = [2, 3, 6];
    let positions = |slice: &AllSlice| slice.events.iter().map(|e| e.position).collect::<Vec<_>>();

    let everything = store.read_all(all_read(Some(0), Direction::Forward, 100)).await.unwrap();
    assert_eq!(positions(&everything), visible);
    assert_eq!((everything.next_position, everything.scanned), (7, Some((0, 6))));
    let first = store.read_all(all_read(Some(0), Direction::Forward, 1)).await.unwrap();
    assert_eq!((positions(&first), first.scanned), (vec![2], Some((0, 2))));
    let next = store.read_all(all_read(Some(3), Direction::Forward, 2)).await.unwrap();
    assert_eq!((positions(&next), next.scanned), (vec![3, 6], Some((3, 6))));
    let beyond = store.read_all(all_read(Some(7), Direction::Forward, 2)).await.unwrap();
    assert_eq!((positions(&beyond), beyond.scanned, beyond.next_position), (vec![], None, 7));
    let head = store.read_all(all_read(None, Direction::Forward, 5)).await.unwrap();
    assert_eq!((positions(&head), head.scanned), (vec![6], Some((6, 6))));

    let newest = store.read_all(all_read(None, Direction::Backward, 2)).await.unwrap();
    assert_eq!(
        (positions(&newest), newest.scanned),
        (vec![3, 6], Some((3, 6))),
        "ascending order, newest end"
    );
    let older = store.read_all(all_read(Some(2), Direction::Backward, 2)).await.unwrap();
    assert_eq!((positions(&older), older.scanned), (vec![2], Some((0, 2))));
    let clamped = store.read_all(all_read(Some(1_000), Direction::Backward, 100)).await.unwrap();
    assert_eq!((positions(&clamped), clamped.scanned), (visible.to_vec(), Some((0, 6))));
    let count_zero = store.read_all(all_read(Some(0), Direction::Forward, 0)).await.unwrap();
    assert_eq!(positions(&count_zero), [2], "a count of 0 reads one");

    // Paging forward and backward one at a time meets every visible event.
    let mut paged = Vec::new();
    let mut from = Some(0);
    while let Some(position) = from {
        let page = store.read_all(all_read(Some(position), Direction::Forward, 1)).await.unwrap();
        paged.extend(positions(&page));
        from = page.scanned.map(|(_, high)| high + 1).filter(|next| *next < page.next_position);
    }
    assert_eq!(paged, visible);
    let mut paged = Vec::new();
    let mut from = None;
    loop {
        let page = store.read_all(all_read(from, Direction::Backward, 1)).await.unwrap();
        paged.splice(0..0, positions(&page));
        match page.scanned {
            Some((low, _)) if low > 0 => from = Some(low - 1),
            _ => break,
        }
    }
    assert_eq!(paged, visible);
    store.close().await;
}

async fn projections_are_readable_when_the_append_is_acknowledged(backend: Backend) {
    let store = backend.open().await;
    put(&store, "plain", fresh(1, "Noted")).await;
    let placed = put(
        &store,
        "Order-1",
        vec![proposed(Uuid::new_v4(), "Placed", "{}"), proposed(Uuid::new_v4(), "Paid", "{}")],
    )
    .await;
    assert_eq!(placed.position, Some(1));
    put(&store, "$$Order-1", metadata("{}")).await;

    let category = store.read_stream(forward("$ce-Order", 0, 100, false)).await.unwrap();
    let links: Vec<&RecordedEvent> = category.events.iter().map(|e| &e.event).collect();
    assert_eq!(links.len(), 2);
    for (number, link) in links.iter().enumerate() {
        assert!(link.is_link() && category.events[number].link.is_none());
        assert_eq!(
            (&*link.stream, link.number, link.position),
            ("$ce-Order", number as u64, 1 + number as u64)
        );
        assert_eq!(link.data, Bytes::from(format!("{number}@Order-1")));
        assert_eq!(
            link.id,
            link_id(link.position, "$ce-Order"),
            "a link's id is derived, the same everywhere"
        );
    }
    let resolved = store.read_stream(forward("$ce-Order", 0, 100, true)).await.unwrap();
    let order = read(&store, "Order-1").await.unwrap();
    for (number, event) in resolved.events.iter().enumerate() {
        assert_eq!(event.event, order.events[number].event, "resolved to the target");
        let link = event.link.as_deref().expect("the link is kept");
        assert_eq!(link, links[number]);
        assert_eq!(event.original(), links[number]);
        assert_eq!(link.created_micros, event.event.created_micros, "a link has its target's time");
    }
    let (view, paid) = store.read_event("$et-Paid", 0, true).await.unwrap();
    assert_eq!(view.last_number, 0);
    let paid = paid.unwrap();
    assert_eq!((&*paid.event.stream, paid.event.number), ("Order-1", 1));
    assert_eq!(paid.link.unwrap().data, Bytes::from("1@Order-1"));
    assert_eq!(numbers(&read(&store, "$et-Placed").await.unwrap()), [0]);
    assert_eq!(numbers(&read(&store, "$et-Noted").await.unwrap()), [0]);
    // `$streams`: each user stream's event 0, in creation order.
    let streams = store.read_stream(forward("$streams", 0, 100, false)).await.unwrap();
    let targets: Vec<&[u8]> = streams.events.iter().map(|e| &e.event.data[..]).collect();
    assert_eq!(targets, [&b"0@plain"[..], b"0@Order-1"]);
    let state = store.stream_state("$streams").await.unwrap().unwrap();
    assert_eq!((state.next_number, state.created_position), (2, 0));
    assert_eq!(store.stream_state("$ce-Order").await.unwrap().unwrap().created_position, 1);
    // System streams are not projected; links are not in `$all`.
    assert_eq!(read(&store, "$et-$metadata").await.unwrap_err(), StoreError::StreamNotFound);
    assert_eq!(read(&store, "$ce-plain").await.unwrap_err(), StoreError::StreamNotFound);
    assert!(all(&store).await.iter().all(|e| !e.is_link()));
    assert_eq!(all(&store).await.len(), 4);
    // Reading backward from the head, and a page past the end.
    let newest = StreamRead {
        stream: "$ce-Order".into(),
        from: None,
        direction: Direction::Backward,
        count: 1,
        resolve_links: true,
    };
    let newest = store.read_stream(newest).await.unwrap();
    assert_eq!(newest.events[0].original().number, 1);
    assert!(store.read_stream(forward("$ce-Order", 5, 10, true)).await.unwrap().events.is_empty());
    store.close().await;
}

async fn projections_can_be_switched_off(backend: Backend) {
    let only_streams = Projections { by_category: false, by_event_type: false, streams: true };
    let store = backend.open_with(only_streams).await;
    put(&store, "Order-1", fresh(2, "Placed")).await;
    assert_eq!(read(&store, "$ce-Order").await.unwrap_err(), StoreError::StreamNotFound);
    assert_eq!(read(&store, "$et-Placed").await.unwrap_err(), StoreError::StreamNotFound);
    assert_eq!(read(&store, "$streams").await.unwrap().events.len(), 1);
    assert_eq!(store.notifier().next_position(), 2);
    store.close().await;
}

async fn watches_taken_before_an_append_are_woken(backend: Backend) {
    let store = backend.open().await;
    let notifier = store.notifier();
    let mut stream = notifier.watch_stream("Order-1");
    let mut any = notifier.watch(None);
    let mut category = notifier.watch(Some("$ce-Order"));
    let mut described = notifier.watch(Some("Order-2"));
    let mut other = notifier.watch_stream("elsewhere");
    let outcome = put(&store, "Order-1", fresh(3, "Placed")).await;
    assert_eq!(outcome.position, Some(0));
    // Before the answer: a read that follows it finds the append.
    assert!(notifier.next_position() >= 3);
    assert_eq!(store.read_all(all_read(None, Direction::Backward, 1)).await.unwrap().next_position, 3);
    tokio::time::timeout(PATIENCE, stream.changed()).await.expect("the stream's watch wakes");
    tokio::time::timeout(PATIENCE, any.changed()).await.expect("the $all watch wakes");
    tokio::time::timeout(PATIENCE, category.changed()).await.expect("the category's watch wakes");
    assert!(notifier.head().borrow().next_position >= 3, "woken waiters find the head past the append");

    // Metadata wakes the stream it describes; a delete wakes its stream.
    put(&store, "$$Order-2", metadata(r#"{"$maxCount":2}"#)).await;
    tokio::time::timeout(PATIENCE, described.changed()).await.expect("the described stream's watch wakes");
    let mut stream = notifier.watch_stream("Order-1");
    store.delete("Order-1", ExpectedVersion::Any, false).await.unwrap();
    tokio::time::timeout(PATIENCE, stream.changed()).await.expect("a delete wakes the stream's watch");
    // Appends elsewhere do not wake a stream's watch.
    let woke = tokio::time::timeout(Duration::from_millis(100), other.changed()).await;
    assert!(woke.is_err(), "appends to other streams do not wake a watch");
    store.close().await;
}

async fn stream_state_reports_what_the_store_keeps(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.stream_state("Order-1").await.unwrap(), None);
    put(&store, "other", fresh(2, "A")).await;
    put(&store, "Order-1", fresh(3, "A")).await;
    let state = store.stream_state("Order-1").await.unwrap().unwrap();
    assert_eq!(state, StreamState { next_number: 3, created_position: 2, ..StreamState::default() });
    assert_eq!(state.last_number(), Some(2));
    assert!(state.exists());
    // Metadata first: the stream has settings but no events, and does not exist.
    put(&store, "$$Order-2", metadata(r#"{"$maxCount":4,"$cacheControl":30,"$acl":{"$r":"ops"}}"#)).await;
    let state = store.stream_state("Order-2").await.unwrap().unwrap();
    assert_eq!(state.next_number, 0);
    assert!(!state.exists());
    assert_eq!(
        (
            state.settings.max_count,
            state.settings.cache_control_secs,
            state.settings.metadata_number,
            state.settings.not_public
        ),
        (Some(4), Some(30), Some(0), true)
    );
    assert_eq!(read(&store, "Order-2").await.unwrap_err(), StoreError::StreamNotFound);
    assert!(matches!(
        append(&store, "Order-2", ExpectedVersion::StreamExists, fresh(1, "A")).await,
        Err(StoreError::WrongExpectedVersion { current: -1, .. })
    ));
    let first = append(&store, "Order-2", ExpectedVersion::NoStream, fresh(1, "A")).await.unwrap();
    let state = store.stream_state("Order-2").await.unwrap().unwrap();
    assert_eq!((state.next_number, state.created_position), (1, first.position.unwrap()));
    assert_eq!(state.settings.max_count, Some(4), "settings survive the first append");
    assert_eq!(store.stream_state("$$Order-2").await.unwrap().unwrap().next_number, 1);
    store.close().await;
}

async fn streams_are_listed_by_name_from_a_prefix(backend: Backend) {
    let store = backend.open().await;
    for stream in ["Order-2", "Order-é", "Invoice-1", "Order-1", "Order-9", "Orders"] {
        put(&store, stream, fresh(1, "A")).await;
    }
    store.delete("Order-9", ExpectedVersion::Any, true).await.unwrap();
    let names =
        |found: Vec<(String, StreamState)>| found.into_iter().map(|(name, _)| name).collect::<Vec<_>>();
    let listed = store.list_streams("Order-", None, 10).await.unwrap();
    assert!(listed[2].1.tombstoned, "a hard-deleted stream is listed as such");
    assert_eq!(listed[0].1.next_number, 1);
    // Byte order: 'é' (0xC3 0xA9) after '9'.
    assert_eq!(names(listed), ["Order-1", "Order-2", "Order-9", "Order-é"]);
    assert_eq!(
        names(store.list_streams("Order-", Some("Order-1"), 2).await.unwrap()),
        ["Order-2", "Order-9"]
    );
    assert_eq!(names(store.list_streams("Order-", Some("Order-é"), 2).await.unwrap()), Vec::<String>::new());
    assert_eq!(names(store.list_streams("Nothing", None, 2).await.unwrap()), Vec::<String>::new());
    let all = names(store.list_streams("", None, 1000).await.unwrap());
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every name, in byte order");
    assert!(
        ["Invoice-1", "Orders", "$ce-Order"].iter().all(|name| all.iter().any(|listed| listed == name)),
        "{all:?}"
    );
    store.close().await;
}

async fn a_scavenge_changes_no_read(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.latest_scavenge(), None, "no scavenge yet");
    let early = fresh(4, "Placed");
    put(&store, "Order-1", early.clone()).await;
    put(&store, "Order-1", fresh(6, "Placed")).await;
    put(&store, "$$Order-1", metadata(r#"{"$maxCount":3}"#)).await;
    put(&store, "Order-2", fresh(2, "Placed")).await;
    store.delete("Order-2", ExpectedVersion::Any, false).await.unwrap();
    put(&store, "Order-3", fresh(3, "Placed")).await;
    store.delete("Order-3", ExpectedVersion::Any, true).await.unwrap();
    put(&store, "Order-4", fresh(2, "Placed")).await;
    let streams =
        ["Order-1", "Order-2", "Order-3", "Order-4", "$$Order-1", "$ce-Order", "$et-Placed", "$streams"];
    let events_before = all(&store).await;
    let mut before = Vec::new();
    for stream in streams {
        before.push(store.read_stream(forward(stream, 0, 100, true)).await.map(|s| (s.view, s.events)));
    }

    let report = scavenge(&store).await;
    assert_eq!(report.events_removed, 7 + 2 + 3, "{report:?}");
    assert_eq!(report.links_removed, 0, "no system stream hides links: {report:?}");
    assert!(report.finished_micros.is_some());
    assert_eq!(store.scavenge_report(Uuid::new_v4()).await.unwrap(), None);
    let latest = store.latest_scavenge().expect("the scavenge is the latest");
    assert_eq!((latest.scavenge_id, latest.status), (report.scavenge_id, report.status));

    assert_eq!(all(&store).await, events_before);
    for (stream, before) in streams.iter().zip(before) {
        let after = store.read_stream(forward(stream, 0, 100, true)).await.map(|s| (s.view, s.events));
        assert_eq!(after, before, "{stream}");
    }
    // Ids stay spent; states stay.
    let retried = append(&store, "Order-1", ExpectedVersion::Any, early).await.unwrap();
    assert_eq!(retried, AppendOutcome { first_number: 0, last_number: 3, position: None, idempotent: true });
    assert_eq!(
        append(&store, "Order-3", ExpectedVersion::Any, fresh(1, "A")).await,
        Err(StoreError::StreamDeleted)
    );
    let again = append(&store, "Order-2", ExpectedVersion::NoStream, fresh(1, "A")).await.unwrap();
    assert_eq!(again.first_number, 2);
    store.close().await;
}

/// Every read of `stream` in windows of 1, 7 and 20 from every number up
/// to `end`, both ways, links resolved and not.
async fn windows(
    store: &Arc<dyn Store>,
    stream: &str,
    end: u64,
) -> Vec<Result<(StreamView, Vec<ReadEvent>), StoreError>> {
    let mut slices = Vec::new();
    for from in 0..end {
        for count in [1, 7, 20] {
            for direction in [Direction::Forward, Direction::Backward] {
                let resolve_links = from % 2 == 0;
                let read = StreamRead {
                    stream: stream.to_owned(),
                    from: Some(from),
                    direction,
                    count,
                    resolve_links,
                };
                slices.push(store.read_stream(read).await.map(|slice| (slice.view, slice.events)));
            }
        }
    }
    slices
}

/// A system stream's `$maxCount` and `$maxAge` hide, and a scavenge then
/// removes, exactly the links they name, wherever they fall among the
/// links one append added (which a store may keep together: the
/// PostgreSQL store keeps up to 20 in one row); every window of the
/// stream reads the same before and after.
async fn rules_on_system_streams_cut_what_one_append_linked(backend: Backend) {
    let store = backend.open().await;
    put(&store, "Order-1", fresh(25, "Placed")).await;
    put(&store, "Order-2", fresh(10, "Placed")).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    put(&store, "Order-3", fresh(3, "Placed")).await;
    let targets: Vec<String> =
        (store.read_stream(forward("$ce-Order", 0, 100, true)).await.unwrap().events.iter())
            .map(|read| format!("{}@{}", read.event.number, read.event.stream))
            .collect();
    let expected: Vec<String> = [("Order-1", 25), ("Order-2", 10), ("Order-3", 3)]
        .iter()
        .flat_map(|&(stream, count)| (0..count).map(move |number| format!("{number}@{stream}")))
        .collect();
    assert_eq!(targets, expected);

    // The count cuts the first append's links at 8; the age (with a count
    // that would keep more) leaves only the last append's.
    put(&store, "$$$ce-Order", metadata(r#"{"$maxCount":30}"#)).await;
    put(&store, "$$$et-Placed", metadata(r#"{"$maxAge":2,"$maxCount":36}"#)).await;
    assert_eq!(numbers(&read(&store, "$ce-Order").await.unwrap()), (8..38).collect::<Vec<_>>());
    assert_eq!(numbers(&read(&store, "$et-Placed").await.unwrap()), [35, 36, 37]);
    let before = (windows(&store, "$ce-Order", 40).await, windows(&store, "$et-Placed", 40).await);

    let report = scavenge(&store).await;
    assert_eq!(report.links_removed, 8 + 35, "{report:?}");
    assert_eq!(report.events_removed, 0, "{report:?}");
    let after = (windows(&store, "$ce-Order", 40).await, windows(&store, "$et-Placed", 40).await);
    assert!(before == after, "a window reads otherwise after the scavenge");
    // Linked on from where the cut run ended.
    put(&store, "Order-1", fresh(1, "Placed")).await;
    // (`$maxCount` still keeps 30.)
    assert_eq!(numbers(&read(&store, "$ce-Order").await.unwrap()), (9..39).collect::<Vec<_>>());
    // An export reads what is stored in chunks of any size, cut runs and
    // all: 0 to 7 were removed, 8 is stored but hidden by the count.
    let mut chunked = Vec::new();
    let mut from = 0;
    loop {
        let chunk = store.export_entries("$ce-Order", from, 39, 3).await.unwrap();
        let Some(last) = chunk.last() else { break };
        from = last.number() + 1;
        chunked.extend(chunk.iter().map(|entry| entry.number()));
    }
    assert_eq!(chunked, (8..39).collect::<Vec<_>>());
    store.close().await;
}

/// An export (`eventfeed export`) loaded into an empty store of the same
/// backend gives the same reads, positions, states and spent ids, and the
/// copy goes on from the same head; a store that holds anything refuses
/// an import and is left as it was.
async fn an_export_loads_into_an_empty_store_unchanged(backend: Backend) {
    use eventfeed::transfer::{self, Quiet, WriteSink};

    let store = backend.open().await;
    let early = fresh(4, "Placed");
    put(&store, "Order-1", early.clone()).await;
    let late = fresh(6, "Placed");
    put(&store, "Order-1", late.clone()).await;
    put(&store, "$$Order-1", metadata(r#"{"$maxCount":3}"#)).await;
    put(&store, "Order-2", fresh(2, "Placed")).await;
    store.delete("Order-2", ExpectedVersion::Any, false).await.unwrap();
    put(&store, "Order-3", fresh(3, "Noted")).await;
    store.delete("Order-3", ExpectedVersion::Any, true).await.unwrap();
    put(&store, "Order-4", fresh(2, "Placed")).await;
    scavenge(&store).await;
    put(&store, "Order-4", fresh(1, "Placed")).await;
    let streams = [
        "Order-1",
        "Order-2",
        "Order-3",
        "Order-4",
        "$$Order-1",
        "$ce-Order",
        "$et-Placed",
        "$et-Noted",
        "$streams",
    ];
    let mut sink = WriteSink(Vec::new());
    let exported = transfer::export(store.as_ref(), "test", &mut sink, &Quiet).await.unwrap();
    let file = sink.0;

    let copy = backend.open().await;
    let imported = transfer::import(copy.as_ref(), &file[..], &Quiet).await.unwrap();
    assert_eq!(imported.counts, exported.counts);
    assert_eq!(all(&copy).await, all(&store).await);
    for stream in streams {
        let read = |store: Arc<dyn Store>| async move {
            let slice = store.read_stream(forward(stream, 0, 100, true)).await.map(|s| (s.view, s.events));
            (slice, store.stream_state(stream).await.unwrap())
        };
        assert_eq!(read(Arc::clone(&copy)).await, read(Arc::clone(&store)).await, "{stream}");
    }
    // Ids stay spent, those of events a scavenge removed too, and both go
    // on from the same head.
    let retried = append(&copy, "Order-1", ExpectedVersion::Any, late[3..].to_vec()).await.unwrap();
    assert!(retried.idempotent && retried.first_number == 7, "{retried:?}");
    let retried = append(&copy, "Order-1", ExpectedVersion::Any, early).await.unwrap();
    assert!(retried.idempotent && retried.first_number == 0, "a scavenged event's id: {retried:?}");
    assert_eq!(imported.counts.ids, 4 + 6 - 3 + 2 + 3, "the ids of the events the scavenge removed");
    let next = fresh(1, "Placed");
    let original_next = append(&store, "Order-4", ExpectedVersion::Any, next.clone()).await.unwrap();
    assert_eq!(append(&copy, "Order-4", ExpectedVersion::Any, next).await.unwrap(), original_next);

    // A store that holds anything refuses, and nothing of the file is written.
    let before = all(&copy).await;
    let refused = transfer::import(copy.as_ref(), &file[..], &Quiet).await.unwrap_err();
    assert!(refused.message.contains("not empty") && refused.line == Some(1), "{refused}");
    assert_eq!(all(&copy).await, before);
    copy.close().await;
    store.close().await;
}

/// A range read stops before the event that would take it past
/// `READ_BYTES` of data, keeping the lowest events going forward and the
/// highest going backward, and always returns at least one; `$all` says
/// where it stopped through the positions it examined.
async fn a_read_returns_at_most_its_bytes_and_at_least_one_event(backend: Backend) {
    use eventfeed::store::rules::READ_BYTES;
    let store = backend.open().await;
    let big = |n: usize| {
        proposed(Uuid::new_v4(), "Big", &format!("\"{}\"", "x".repeat(READ_BYTES / 4 - 2 + n % 2)))
    };
    put(&store, "small", fresh(3, "A")).await;
    for n in 0..10 {
        put(&store, "big", vec![big(n)]).await;
    }
    // Four of about a quarter of the bytes each, at most.
    let read = |from, direction, count| StreamRead {
        stream: "big".into(),
        from: Some(from),
        direction,
        count,
        resolve_links: false,
    };
    let forward = store.read_stream(read(0, Direction::Forward, 10)).await.unwrap();
    let taken = numbers(&forward);
    assert!((3..=4).contains(&taken.len()) && taken[0] == 0, "{taken:?}");
    let bytes: usize = forward.events.iter().map(|e| e.event.data.len()).sum();
    assert!(bytes <= READ_BYTES, "{bytes}");
    let backward = store.read_stream(read(9, Direction::Backward, 10)).await.unwrap();
    let taken = numbers(&backward);
    assert!((3..=4).contains(&taken.len()) && taken.last() == Some(&9), "{taken:?}");
    assert!(taken.windows(2).all(|pair| pair[1] == pair[0] + 1), "ascending: {taken:?}");

    // One event larger than the budget still reads.
    let huge = proposed(Uuid::new_v4(), "Huge", &format!("\"{}\"", "y".repeat(READ_BYTES + 10)));
    put(&store, "huge", vec![huge.clone(), fresh(1, "A").remove(0)]).await;
    let alone = store
        .read_stream(StreamRead { stream: "huge".into(), ..read(0, Direction::Forward, 20) })
        .await
        .unwrap();
    assert_eq!(numbers(&alone), [0]);

    // `$all`: small events 0..=2, big ones at 3..=12.
    let slice = store.read_all(all_read(Some(0), Direction::Forward, 100)).await.unwrap();
    let positions: Vec<u64> = slice.events.iter().map(|event| event.position).collect();
    assert_eq!(positions[..3], [0, 1, 2]);
    assert!((6..=7).contains(&positions.len()), "{positions:?}");
    assert_eq!(slice.scanned, Some((0, *positions.last().unwrap())), "the next page starts after the last");
    let slice = store.read_all(all_read(Some(12), Direction::Backward, 100)).await.unwrap();
    let positions: Vec<u64> = slice.events.iter().map(|event| event.position).collect();
    assert!((3..=4).contains(&positions.len()) && positions.last() == Some(&12), "{positions:?}");
    assert_eq!(slice.scanned, Some((positions[0], 12)));
    store.close().await;
}

/// One append to several streams: every part in one commit with
/// consecutive positions, each part against its own expected version, or
/// nothing at all; repeated whole, it answers the original outcomes.
async fn multi_stream_appends_are_all_or_nothing(backend: Backend) {
    use ExpectedVersion::{Exact, NoStream, StreamExists};
    let store = backend.open().await;
    let part =
        |stream: &str, expected, events| Append { stream: stream.into(), expected, events, access: None };
    put(&store, "Account-1", fresh(2, "Opened")).await;
    put(&store, "other", fresh(1, "A")).await;
    let signup = vec![
        part("Account-1", Exact(1), fresh(1, "Renamed")),
        part("Email-a", NoStream, fresh(2, "Reserved")),
    ];
    let outcomes = store.append_all(signup.clone()).await.unwrap();
    let written: Vec<_> = outcomes.iter().map(|o| (o.first_number, o.last_number, o.position)).collect();
    assert_eq!(written, [(2, 2, Some(3)), (0, 1, Some(4))], "consecutive positions, in the request's order");
    let in_all: Vec<_> = all(&store).await.iter().map(|e| (e.stream.to_string(), e.number)).collect();
    assert_eq!(in_all[3..], [("Account-1".into(), 2), ("Email-a".into(), 0), ("Email-a".into(), 1)]);
    assert_eq!(numbers_of(&store, "$ce-Email").await, [0, 1], "projections see the whole batch");
    let head = store.notifier().next_position();

    // Repeated whole: the original outcomes, nothing written.
    let again = store.append_all(signup.clone()).await.unwrap();
    assert!(again.iter().all(|o| o.idempotent));
    assert_eq!(again.iter().map(|o| (o.first_number, o.last_number)).collect::<Vec<_>>(), [(2, 2), (0, 1)]);

    // Every failed expectation is reported, and nothing of the request is written.
    let refused = store
        .append_all(vec![
            part("Account-1", Exact(0), fresh(1, "Renamed")),
            part("Email-b", NoStream, fresh(1, "Reserved")),
            part("Email-c", StreamExists, fresh(1, "Reserved")),
        ])
        .await;
    let Err(StoreError::Conflicts(conflicts)) = refused else { panic!("{refused:?}") };
    let reported: Vec<_> = conflicts.iter().map(|c| (c.stream.as_str(), c.expected, c.current)).collect();
    assert_eq!(reported, [("Account-1", Exact(0), 2), ("Email-c", StreamExists, -1)]);
    // A part that repeats an earlier write beside a new one is a conflict too.
    let partly =
        store.append_all(vec![signup[1].clone(), part("Email-d", NoStream, fresh(1, "Reserved"))]).await;
    assert!(
        matches!(partly, Err(StoreError::Conflicts(ref c)) if c.len() == 1 && c[0].stream == "Email-a"),
        "{partly:?}"
    );
    // Malformed requests, and a part refused for another reason.
    store.delete("Gone-1", ExpectedVersion::Any, true).await.unwrap();
    let head = head.max(store.notifier().next_position());
    assert_invalid(store.append_all(Vec::new()).await);
    let twice = vec![part("Email-e", NoStream, fresh(1, "R")), part("Email-e", NoStream, fresh(1, "R"))];
    assert_invalid(store.append_all(twice).await);
    let gone = store
        .append_all(vec![part("Email-f", NoStream, fresh(1, "R")), part("Gone-1", NoStream, fresh(1, "R"))])
        .await;
    assert!(
        matches!(gone, Err(StoreError::InPart { ref stream, ref error }) if stream == "Gone-1" && **error == StoreError::StreamDeleted),
        "{gone:?}"
    );
    assert_eq!(store.notifier().next_position(), head, "nothing of a refused request was written");
    for stream in ["Email-b", "Email-c", "Email-d", "Email-e", "Email-f"] {
        assert_eq!(store.stream_state(stream).await.unwrap(), None, "{stream}");
    }

    // A metadata part applies to the events of the same request.
    store
        .append_all(vec![
            part("$$Audit-1", NoStream, metadata(r#"{"$maxCount":1}"#)),
            part("Audit-1", NoStream, fresh(3, "A")),
        ])
        .await
        .unwrap();
    assert_eq!(numbers(&read(&store, "Audit-1").await.unwrap()), [2]);
    store.close().await;
}

/// The numbers a stream shows, links resolved.
/// An append carries the access rules it was allowed by (the metadata
/// event of the stream that governs it); if that metadata changed before
/// the writer takes it, it is refused and nothing is written, alone or as
/// part of a multi-stream append. `metadata_number` sees a change at once.
async fn an_append_allowed_by_rules_that_changed_is_refused(backend: Backend) {
    let store = backend.open().await;
    let basis = |stream: &str, metadata_number| Some(AccessBasis { stream: stream.into(), metadata_number });
    let guarded = |stream: &str, access| Append {
        stream: stream.into(),
        expected: ExpectedVersion::Any,
        events: fresh(1, "A"),
        access,
    };
    put(&store, "guarded", fresh(1, "A")).await;
    assert_eq!(store.metadata_number("guarded").await.unwrap(), None);
    assert_eq!(store.metadata_number("never-written").await.unwrap(), None);
    store.append(guarded("guarded", basis("guarded", None))).await.expect("the rules still hold");
    put(&store, "$$guarded", metadata(r#"{"$acl":{"$w":"$admins"}}"#)).await;
    assert_eq!(store.metadata_number("guarded").await.unwrap(), Some(0));
    let before = snapshot(&store, &["guarded", "other"]).await;
    let stale = store.append(guarded("guarded", basis("guarded", None))).await;
    assert_eq!(stale.unwrap_err(), StoreError::AccessChanged);
    // A metadata write governed by the stream it describes.
    let mut metadata_write = guarded("$$guarded", basis("guarded", None));
    metadata_write.events = metadata("{}");
    assert_eq!(store.append(metadata_write).await.unwrap_err(), StoreError::AccessChanged);
    let parts = vec![guarded("other", basis("other", None)), guarded("guarded", basis("guarded", None))];
    let refused = store.append_all(parts).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::InPart { stream, error } if stream == "guarded" && **error == StoreError::AccessChanged),
        "{refused:?}"
    );
    assert_eq!(
        snapshot(&store, &["guarded", "other"]).await,
        before,
        "nothing of a refused append is written"
    );
    store.append(guarded("guarded", basis("guarded", Some(0)))).await.expect("checked against the new rules");
}

async fn numbers_of(store: &Arc<dyn Store>, stream: &str) -> Vec<u64> {
    numbers(&read(store, stream).await.unwrap())
}

async fn a_closed_store_refuses_writes(backend: Backend) {
    let store = backend.open().await;
    put(&store, "s", fresh(1, "A")).await;
    store.store.close().await.unwrap();
    assert_eq!(append(&store, "s", ExpectedVersion::Any, fresh(1, "A")).await, Err(StoreError::Unavailable));
    assert_eq!(store.delete("s", ExpectedVersion::Any, true).await, Err(StoreError::Unavailable));
    // Reads still answer, and a scavenge asked now, if it starts at all,
    // does not run to completion and removes nothing.
    assert_eq!(numbers(&read(&store, "s").await.unwrap()), [0]);
    if let Ok(ScavengeStarted::Started(id)) = store.start_scavenge().await {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let report = store.scavenge_report(id).await.unwrap().expect("the scavenge has a report");
            if report.status != ScavengeStatus::Running {
                assert_ne!(report.status, ScavengeStatus::Completed, "{report:?}");
                assert_eq!(report.events_removed, 0);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the scavenge did not stop: {report:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(all(&store).await.len(), 1);
    // Closing twice is fine.
    store.close().await;
}

// ---------------------------------------------------------------------------
// The differential test.

/// splitmix64: a tiny deterministic generator, so a failing history can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A request of the history.
#[derive(Debug, Clone)]
enum Request {
    Append(Append),
    AppendAll(Vec<Append>),
    Delete { stream: String, expected: ExpectedVersion, hard: bool },
    ReadStream(StreamRead),
    ReadEvent { stream: String, number: u64, resolve_links: bool },
    ReadAll(AllRead),
    State(String),
}

/// An answer, with creation times zeroed: each backend's clock stamps its
/// own (their order is checked separately).
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Append(Result<AppendOutcome, StoreError>),
    AppendAll(Result<Vec<AppendOutcome>, StoreError>),
    Delete(Result<(), StoreError>),
    Stream(Result<(store::StreamView, Vec<ReadEvent>), StoreError>),
    Event(Result<(store::StreamView, Option<ReadEvent>), StoreError>),
    All(Result<AllAnswer, StoreError>),
    State(Result<Option<StreamState>, StoreError>),
}

/// An [`AllSlice`], compared whole.
#[derive(Debug, PartialEq, Eq)]
struct AllAnswer {
    next_position: u64,
    scanned: Option<(u64, u64)>,
    events: Vec<RecordedEvent>,
}

fn timeless(mut event: RecordedEvent) -> RecordedEvent {
    event.created_micros = 0;
    event
}

fn timeless_read(event: ReadEvent) -> ReadEvent {
    ReadEvent { event: timeless(event.event), link: event.link.map(|link| Box::new(timeless(*link))) }
}

async fn ask(store: &Arc<dyn Store>, request: &Request) -> Answer {
    match request.clone() {
        Request::Append(append) => Answer::Append(store.append(append).await),
        Request::AppendAll(appends) => Answer::AppendAll(store.append_all(appends).await),
        Request::Delete { stream, expected, hard } => {
            Answer::Delete(store.delete(&stream, expected, hard).await)
        }
        Request::ReadStream(read) => Answer::Stream(
            store
                .read_stream(read)
                .await
                .map(|slice| (slice.view, slice.events.into_iter().map(timeless_read).collect())),
        ),
        Request::ReadEvent { stream, number, resolve_links } => Answer::Event(
            store
                .read_event(&stream, number, resolve_links)
                .await
                .map(|(view, event)| (view, event.map(timeless_read))),
        ),
        Request::ReadAll(read) => Answer::All(store.read_all(read).await.map(|slice| {
            let events = slice.events.into_iter().map(timeless).collect();
            AllAnswer { next_position: slice.next_position, scanned: slice.scanned, events }
        })),
        Request::State(stream) => Answer::State(store.stream_state(&stream).await),
    }
}

const USER_STREAMS: [&str; 6] = ["Order-1", "Order-2", "Order-3", "Cart-1", "plain", "other"];
const SYSTEM_STREAMS: [&str; 3] = ["$ce-Cart", "$et-Paid", "$streams"];
const READABLE: [&str; 12] = [
    "Order-1",
    "Order-2",
    "Cart-1",
    "plain",
    "other",
    "$$Order-1",
    "$$plain",
    "$ce-Order",
    "$ce-Cart",
    "$et-Placed",
    "$et-Paid",
    "$streams",
];
const METADATA: [&str; 8] = [
    r#"{"$maxCount":1}"#,
    r#"{"$maxCount":3}"#,
    r#"{"$tb":2}"#,
    r#"{"$tb":6,"$maxCount":5}"#,
    "{}",
    r#"{"$cacheControl":5,"$acl":{"$r":"ops"}}"#,
    r#"{"$maxCount":0}"#,
    "not json",
];

/// A stream to append to or delete: mostly a user stream, rarely a system
/// stream (whose links and records then share its numbers).
fn writable(rng: &mut Rng, system_percent: u64) -> String {
    if rng.chance(system_percent) { rng.pick(&SYSTEM_STREAMS) } else { rng.pick(&USER_STREAMS) }.to_string()
}

/// The next request of a history. `written` holds the batches of ids
/// appended so far (successful or not), for retries.
fn next_request(
    rng: &mut Rng,
    written: &mut Vec<(String, Vec<ProposedEvent>)>,
    counter: &mut u128,
) -> Request {
    let mut new_event = |rng: &mut Rng| {
        *counter += 1;
        let event_type = *rng.pick(&["Placed", "Paid", "Shipped"]);
        proposed(
            Uuid::from_u128(rng.next() as u128 ^ (*counter << 64)),
            event_type,
            &format!("{{\"n\":{counter}}}"),
        )
    };
    let expected = |rng: &mut Rng| match rng.below(6) {
        0 | 1 => ExpectedVersion::Any,
        2 => ExpectedVersion::NoStream,
        3 => ExpectedVersion::StreamExists,
        _ => ExpectedVersion::Exact(rng.below(12)),
    };
    let direction = |rng: &mut Rng| if rng.chance(50) { Direction::Forward } else { Direction::Backward };
    match rng.below(100) {
        // Multi-stream appends of new events (a stream may come up twice).
        0..=6 => {
            let parts = (0..2 + rng.below(2))
                .map(|_| {
                    let stream = writable(rng, 5);
                    let events: Vec<ProposedEvent> = (0..1 + rng.below(2)).map(|_| new_event(rng)).collect();
                    written.push((stream.clone(), events.clone()));
                    Append { stream, expected: expected(rng), events, access: None }
                })
                .collect();
            Request::AppendAll(parts)
        }
        // Appends of new events.
        7..=34 => {
            let stream = writable(rng, 5);
            let events: Vec<ProposedEvent> = (0..1 + rng.below(4)).map(|_| new_event(rng)).collect();
            written.push((stream.clone(), events.clone()));
            Request::Append(Append { stream, expected: expected(rng), events, access: None })
        }
        // Retries: exact, a part, mixed with new ids, to another stream, or with a duplicate.
        35..=46 if !written.is_empty() => {
            let (stream, events) = rng.pick(written).clone();
            let (stream, events) = match rng.below(6) {
                0 | 1 => (stream, events),
                2 => {
                    let start = rng.below(events.len() as u64) as usize;
                    (stream, events[start..].to_vec())
                }
                3 => {
                    let mut mixed = events.clone();
                    mixed.push(new_event(rng));
                    (stream, mixed)
                }
                4 => (rng.pick(&USER_STREAMS).to_string(), events),
                _ => {
                    let mut twice = events.clone();
                    twice.push(events[0].clone());
                    (stream, twice)
                }
            };
            Request::Append(Append { stream, expected: expected(rng), events, access: None })
        }
        // Metadata.
        47..=56 => {
            let stream = format!("$${}", writable(rng, 20));
            let document = rng.pick(&METADATA);
            let events = vec![proposed(Uuid::from_u128(rng.next() as u128), "$metadata", document)];
            Request::Append(Append { stream, expected: ExpectedVersion::Any, events, access: None })
        }
        // Deletes, mostly soft.
        57..=62 => {
            Request::Delete { stream: writable(rng, 20), expected: expected(rng), hard: rng.chance(15) }
        }
        63..=63 => Request::Append(Append {
            stream: "plain".into(),
            expected: ExpectedVersion::Any,
            events: Vec::new(),
            access: None,
        }),
        // Reads.
        64..=77 => Request::ReadStream(StreamRead {
            stream: rng.pick(&READABLE).to_string(),
            from: if rng.chance(30) { None } else { Some(rng.below(25)) },
            direction: direction(rng),
            count: rng.below(12),
            resolve_links: rng.chance(50),
        }),
        78..=85 => Request::ReadEvent {
            stream: rng.pick(&READABLE).to_string(),
            number: rng.below(20),
            resolve_links: rng.chance(50),
        },
        86..=94 => Request::ReadAll(AllRead {
            from: if rng.chance(30) { None } else { Some(rng.below(120)) },
            direction: direction(rng),
            count: rng.below(15),
        }),
        _ => Request::State(rng.pick(&READABLE).to_string()),
    }
}

/// Asks both stores every request of `requests` and compares the answers.
async fn replay(
    seed: u64,
    step: &mut usize,
    backend: &Arc<dyn Store>,
    memory: &Arc<dyn Store>,
    requests: &[Request],
) {
    for request in requests {
        *step += 1;
        let (on_backend, on_memory) = (ask(backend, request).await, ask(memory, request).await);
        assert_eq!(on_backend, on_memory, "seed {seed}, request {step}: {request:?}");
    }
}

/// Every read there is of every stream the history touched, and of `$all`.
fn full_reads() -> Vec<Request> {
    let mut requests = Vec::new();
    let streams =
        READABLE.iter().chain(&["Order-3", "$$Order-2", "$$Order-3", "$$Cart-1", "$$other", "$et-Shipped"]);
    for stream in streams {
        for resolve_links in [false, true] {
            requests.push(Request::ReadStream(forward(stream, 0, 1_000, resolve_links)));
        }
        requests.push(Request::State(stream.to_string()));
    }
    requests.push(Request::ReadAll(all_read(Some(0), Direction::Forward, 10_000)));
    requests.push(Request::ReadAll(all_read(None, Direction::Backward, 10_000)));
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_every_request_alike() {
    answer_alike(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_memory_answer_every_request_alike() {
    if common::postgres::cluster().is_some() {
        answer_alike(Backend::Postgres).await;
    }
}

/// The differential test of `backend` against the memory store.
async fn answer_alike(backend: Backend) {
    for seed in [1, 0x5eed, 20_261_205] {
        let (sled, memory) = (backend.open().await, Backend::Memory.open().await);
        let mut rng = Rng(seed);
        let (mut written, mut counter, mut step) = (Vec::new(), 0, 0);
        let history: Vec<Request> =
            (0..300).map(|_| next_request(&mut rng, &mut written, &mut counter)).collect();
        replay(seed, &mut step, &sled, &memory, &history).await;
        replay(seed, &mut step, &sled, &memory, &full_reads()).await;
        for store in [&sled, &memory] {
            let log = all(store).await;
            assert!(log.windows(2).all(|pair| pair[0].created_micros <= pair[1].created_micros));
        }

        // A scavenge removes the same, and changes no answer.
        let (on_sled, on_memory) = (scavenge(&sled).await, scavenge(&memory).await);
        let counts =
            |report: &ScavengeReport| (report.streams_scanned, report.events_removed, report.links_removed);
        assert_eq!(counts(&on_sled), counts(&on_memory), "seed {seed}: the scavenges differ");
        replay(seed, &mut step, &sled, &memory, &full_reads()).await;

        // And the history goes on after it (retries of scavenged ids among it).
        let more: Vec<Request> =
            (0..100).map(|_| next_request(&mut rng, &mut written, &mut counter)).collect();
        replay(seed, &mut step, &sled, &memory, &more).await;
        replay(seed, &mut step, &sled, &memory, &full_reads()).await;
        sled.close().await;
        memory.close().await;
    }
}
