//! The permanent id index, which tells a retried append from a new one:
//! lookups in an index of 100,000 random ids (5,000 appends of 20 events)
//! in a sled database in a temporary directory, built as the writer builds
//! it and reopened as after a restart.
//!
//! - `number_in/hit`: an id the stream holds (a retry), found in the
//!   index's runs or its in-memory segments, wherever it landed;
//! - `number_in/miss`: a fresh id, which the filter turns away from memory;
//! - `may_hold_any/20_fresh`: what the writer asks first for an append of
//!   20 new events.
//!
//! References, measured in the same run: one sled point read of a key the
//! database holds (the floor under any lookup that reaches sled), and a hit
//! in a `HashMap` of the same ids (an index kept wholly in memory).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use eventfeed::store::sled::bench_support::IdLookup;
use uuid::Uuid;

/// The ids the index holds: a dozen runs of 8,192 ids, so that a lookup
/// goes through the several runs that merging leaves. Under `cargo test
/// --all-targets` (CI), which runs each benchmark once, a debug build
/// builds the index in about a second.
const IDS: usize = 100_000;
/// The events of one append (one commit).
const PER_APPEND: usize = 20;
/// Steps through the ids in an order unrelated to how they were written
/// (prime, so every id comes up before any comes up twice).
const STRIDE: usize = 7_919;

/// `count` ids that look like UUIDv4 (random, as most clients send), the
/// same on every run: splitmix64 from `seed`.
fn random_ids(seed: u64, count: usize) -> Vec<Uuid> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| {
            uuid::Builder::from_random_bytes(((u128::from(next()) << 64) | u128::from(next())).to_be_bytes())
                .into_uuid()
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let ids = random_ids(1, IDS);
    let streams: Vec<String> = (0..IDS / PER_APPEND).map(|k| format!("order-{k}")).collect();
    let owners: Vec<(Uuid, &str, u64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, streams[i / PER_APPEND].as_str(), (i % PER_APPEND) as u64))
        .collect();
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("a temporary directory: {error}"),
    };
    let index = match IdLookup::build(dir.path(), &owners, PER_APPEND) {
        Ok(index) => index,
        Err(error) => panic!("the index builds: {error}"),
    };
    let fresh = random_ids(2, 4_096);
    let stream_of = |at: usize| streams[at / PER_APPEND].as_str();
    assert!((0..IDS).step_by(997).all(|at| matches!(index.number_in(&ids[at], stream_of(at)), Ok(Some(_)))));
    assert!(fresh.iter().take(100).all(|id| matches!(index.number_in(id, "order-0"), Ok(None))));
    let in_memory: HashMap<Uuid, (&str, u64)> =
        owners.iter().map(|&(id, stream, number)| (id, (stream, number))).collect();

    let mut group = c.benchmark_group("id_index/100k");
    let mut at = 0;
    group.bench_function("number_in/hit", |b| {
        b.iter(|| {
            at = (at + STRIDE) % IDS;
            index.number_in(black_box(&ids[at]), stream_of(at))
        })
    });
    group.bench_function("number_in/miss", |b| {
        b.iter(|| {
            at = (at + 1) % fresh.len();
            index.number_in(black_box(&fresh[at]), "order-0")
        })
    });
    let appends: Vec<&[Uuid]> = fresh.chunks_exact(PER_APPEND).collect();
    group.bench_function("may_hold_any/20_fresh", |b| {
        b.iter(|| {
            at = (at + 1) % appends.len();
            index.may_hold_any(black_box(appends[at]))
        })
    });
    group.bench_function("reference/sled_point_read", |b| b.iter(|| index.read_one_key()));
    group.bench_function("reference/hashmap_hit", |b| {
        b.iter(|| {
            at = (at + STRIDE) % IDS;
            in_memory.get(black_box(&ids[at])).copied()
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
