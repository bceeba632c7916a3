//! The record codec on the paths every append and page read take: a
//! 20-event append encoded as one run of records, the same run decoded
//! into a page, the two small values a read decodes beside it (the
//! stream's state and a log entry), and the id-index chunk a lookup of an
//! id decodes.
//!
//! Each group's reference, measured in the same run, copies the same bytes
//! into a new buffer: the least any decode of them could cost.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventfeed::store::sled::codec::{self, EventFields, Names};
use eventfeed::store::{ReadEvent, StreamSettings, StreamState};
use uuid::Uuid;

mod common;

use common::{EVENT_TYPE, PAGE, STREAM, payload};

/// The number of the run's first event: a stream well under way.
const FIRST: u64 = 4_000;

/// An append's events, as the writer holds them while it encodes them.
struct Append {
    ids: Vec<Uuid>,
    data: Vec<Vec<u8>>,
}

impl Append {
    fn new() -> Self {
        let ids =
            (0..PAGE).map(|i| Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(i)));
        Self { ids: ids.collect(), data: (FIRST..FIRST + PAGE).map(payload).collect() }
    }

    /// The run of records the writer stores for the append: each event
    /// encoded, then the records joined into a run.
    fn encode(&self) -> Vec<u8> {
        let records = (FIRST..).zip(self.ids.iter().zip(&self.data)).map(|(number, (id, data))| {
            codec::encode_event(&EventFields {
                stream: STREAM,
                number,
                position: 1_000_000 + number,
                id,
                event_type: EVENT_TYPE,
                created_micros: 1_795_000_000_000_000,
                is_json: true,
                metadata_is_json: false,
                data,
                metadata: b"",
            })
        });
        codec::encode_records(records.collect())
    }
}

/// The run decoded into a page, as a page read decodes it.
fn decode_page(run: &Bytes) -> Vec<ReadEvent> {
    let mut page = Vec::with_capacity(PAGE as usize);
    let decoded =
        codec::decode_events_within(run, FIRST, FIRST, FIRST + PAGE - 1, &mut Names::default(), &mut page);
    assert!(matches!(decoded, Ok(true)), "a run of records decodes");
    page
}

fn run_of_records(c: &mut Criterion) {
    let append = Append::new();
    let run = Bytes::from(append.encode());
    assert_eq!(decode_page(&run).len(), PAGE as usize);
    let mut group = c.benchmark_group("codec/run_of_20");
    group.throughput(Throughput::Bytes(run.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(&append).encode()));
    group.bench_function("decode", |b| b.iter(|| decode_page(black_box(&run))));
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&run[..]).to_vec()));
    group.finish();
}

fn stream_state(c: &mut Criterion) {
    let state = StreamState {
        next_number: FIRST + PAGE,
        created_position: 17,
        settings: StreamSettings { max_count: Some(10_000), metadata_number: Some(0), ..Default::default() },
        ..Default::default()
    };
    let value = codec::encode_state(&state, 123_456);
    let mut group = c.benchmark_group("codec/stream_state");
    group.throughput(Throughput::Bytes(value.len() as u64));
    group.bench_function("decode", |b| b.iter(|| codec::decode_state(black_box(&value))));
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&value[..]).to_vec()));
    group.finish();
}

fn log_entry(c: &mut Criterion) {
    // What one 20-event append leaves in the log.
    let value = codec::encode_log_entry(STREAM, FIRST, PAGE);
    let mut group = c.benchmark_group("codec/log_entry");
    group.throughput(Throughput::Bytes(value.len() as u64));
    group.bench_function("decode", |b| b.iter(|| codec::decode_log_entry(black_box(&value))));
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&value[..]).to_vec()));
    group.finish();
}

fn id_table_chunk(c: &mut Criterion) {
    // A chunk of a run of the id index: 128 ids sorted, each of another
    // append (random ids scatter an append's ids over the runs).
    let streams: Vec<String> = (0..128).map(|k| format!("order-{k}")).collect();
    let mut entries: Vec<(Uuid, &str, u64)> = (0..128u32)
        .map(|i| {
            (
                Uuid::from_u128(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                streams[i as usize].as_str(),
                7,
            )
        })
        .collect();
    entries.sort_unstable_by_key(|entry| entry.0);
    let value = codec::encode_id_table(entries.iter().copied());
    let (wanted, stream, _) = entries[77];
    let find =
        |value: &[u8]| codec::decode_id_table(value).and_then(|table| table.number_in(&wanted, stream));
    assert!(matches!(find(&value), Ok(Some(7))));
    let mut group = c.benchmark_group("codec/id_table_chunk_128");
    group.throughput(Throughput::Bytes(value.len() as u64));
    group.bench_function("decode_and_find", |b| b.iter(|| find(black_box(&value))));
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&value[..]).to_vec()));
    group.finish();
}

criterion_group!(benches, run_of_records, stream_state, log_entry, id_table_chunk);
criterion_main!(benches);
