//! Atomicity of appends, as a property: random interleavings of single and
//! multi-stream appends with random expected versions, run concurrently on
//! each backend. Afterwards every acknowledged request has all its events,
//! where its outcome said, every refused one has none, every stream's
//! numbers are dense, and `$all` shows each multi-stream request's events
//! side by side, in the request's order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use eventfeed::store::projections::Projections;
use eventfeed::store::sled::SledStoreOptions;
use eventfeed::store::{
    self, AllRead, Append, AppendOutcome, Direction, Durability, ExpectedVersion, ProposedEvent, Store,
    StoreConfig, StoreError, StreamRead,
};
use proptest::prelude::*;
use uuid::Uuid;

const STREAMS: [&str; 4] = ["Order-1", "Order-2", "Customer-1", "Email-a"];

/// A request and what the store answered.
type Answered = (Vec<Append>, Result<Vec<AppendOutcome>, StoreError>);

/// One part as generated: which stream, which expectation, how many events.
type PartSpec = (usize, i64, usize);

fn part_spec() -> impl Strategy<Value = PartSpec> {
    (0..STREAMS.len(), prop_oneof![Just(-2i64), Just(-1), Just(-4), 0i64..6], 1usize..3)
}

/// A request: one part (a single append) or two or three (a multi-stream
/// append, its streams distinct).
fn request() -> impl Strategy<Value = Vec<PartSpec>> {
    prop_oneof![
        part_spec().prop_map(|part| vec![part]),
        proptest::collection::vec(part_spec(), 2..4).prop_filter("distinct streams", |parts| {
            let mut streams: Vec<usize> = parts.iter().map(|part| part.0).collect();
            streams.sort_unstable();
            streams.dedup();
            streams.len() == parts.len()
        }),
    ]
}

fn build(parts: &[PartSpec]) -> Vec<Append> {
    parts
        .iter()
        .map(|&(stream, expected, count)| Append {
            stream: STREAMS[stream].to_owned(),
            expected: ExpectedVersion::parse(&expected.to_string()).unwrap(),
            events: (0..count)
                .map(|_| ProposedEvent {
                    id: Uuid::new_v4(),
                    event_type: "Happened".into(),
                    is_json: true,
                    data: Bytes::from_static(b"{}"),
                    metadata_is_json: false,
                    metadata: Bytes::new(),
                })
                .collect(),
            access: None,
        })
        .collect()
}

async fn open(sled: bool) -> (Arc<dyn Store>, Option<tempfile::TempDir>) {
    if !sled {
        let config = StoreConfig::Memory { projections: Projections::default() };
        return (store::open(&config).await.unwrap(), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = SledStoreOptions::new(dir.path().join("data"));
    options.durability = Durability::None;
    options.cache_capacity = 8 * 1024 * 1024;
    (store::open(&StoreConfig::Sled(options)).await.unwrap(), Some(dir))
}

/// Runs `requests` from four tasks at once; checks the properties.
async fn check(sled: bool, requests: Vec<Vec<PartSpec>>) {
    let (store, _dir) = open(sled).await;
    let requests: Vec<Vec<Append>> = requests.iter().map(|parts| build(parts)).collect();
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let store = Arc::clone(&store);
        let mine: Vec<Vec<Append>> = requests.iter().skip(lane).step_by(4).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for appends in mine {
                let answer = if appends.len() == 1 {
                    store.append(appends[0].clone()).await.map(|outcome| vec![outcome])
                } else {
                    store.append_all(appends.clone()).await
                };
                answers.push((appends, answer));
            }
            answers
        }));
    }
    let mut answers: Vec<Answered> = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }

    // Where every stored event is: (stream, number) by id, and its position.
    let mut stored: HashMap<Uuid, (String, u64, u64)> = HashMap::new();
    for stream in STREAMS {
        let read = StreamRead {
            stream: stream.into(),
            from: Some(0),
            direction: Direction::Forward,
            count: 4096,
            resolve_links: false,
        };
        let Ok(slice) = store.read_stream(read).await else { continue };
        for (expected, event) in slice.events.iter().enumerate() {
            assert_eq!(event.event.number, expected as u64, "{stream}'s numbers are dense");
            stored.insert(event.event.id, (stream.to_owned(), event.event.number, event.event.position));
        }
    }
    let all = store.read_all(AllRead { from: Some(0), direction: Direction::Forward, count: 100_000 }).await;
    assert_eq!(all.unwrap().events.len(), stored.len(), "$all holds exactly the streams' events");

    for (appends, answer) in &answers {
        let ids = appends.iter().flat_map(|append| append.events.iter().map(|event| event.id));
        match answer {
            Ok(outcomes) => {
                let mut positions = Vec::new();
                for (append, outcome) in appends.iter().zip(outcomes) {
                    for (offset, event) in append.events.iter().enumerate() {
                        let (stream, number, position) = stored.get(&event.id).expect("acknowledged, stored");
                        assert_eq!(
                            (stream.as_str(), *number),
                            (append.stream.as_str(), outcome.first_number + offset as u64)
                        );
                        positions.push(*position);
                    }
                }
                let first = positions[0];
                let contiguous =
                    positions.iter().enumerate().all(|(i, position)| *position == first + i as u64);
                assert!(contiguous, "one request's events are side by side in $all: {positions:?}");
            }
            Err(error) => {
                for id in ids {
                    assert!(!stored.contains_key(&id), "refused ({error}), yet {id} is stored");
                }
            }
        }
    }
    store.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_all_or_nothing(requests in proptest::collection::vec(request(), 10..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(false, requests.clone()));
        runtime.block_on(check(true, requests));
    }
}
