//! The feed renderers on a full page: 20 entries of a stream, rendered as
//! Atom (what a feed reader asks for) and as JSON with `embed=body` (what
//! most clients ask for), from a page built by `feed::stream_feed` as a
//! page read builds it.
//!
//! References, measured in the same run: a copy of the rendered bytes into
//! a new buffer (the least that producing them could cost), and for JSON,
//! `serde_json::to_vec_pretty` writing the same page from a `serde_json::Value`
//! (what a generic serialiser costs for the same output).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventfeed::feed::{self, Embed, Feed, PageRequest, PageStart, Urls};
use eventfeed::store::{Direction, ReadEvent, RecordedEvent, StreamSettings, StreamSlice, StreamView};
use uuid::Uuid;

mod common;

use common::{EVENT_TYPE, PAGE, STREAM, payload};

/// The number of the page's newest event: a page well inside a stream.
const NEWEST: u64 = 4_019;

/// Page `NEWEST - 19 ..= NEWEST`, backward, of a stream that goes on past
/// it (an immutable page, the kind caches keep).
fn page(urls: &Urls) -> Feed {
    let stream: Arc<str> = Arc::from(STREAM);
    let event_type: Arc<str> = Arc::from(EVENT_TYPE);
    let events = (NEWEST + 1 - PAGE..=NEWEST)
        .map(|number| ReadEvent {
            event: RecordedEvent {
                stream: Arc::clone(&stream),
                number,
                position: 1_000_000 + number,
                id: Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(number)),
                event_type: Arc::clone(&event_type),
                created_micros: 1_795_000_000_000_000 + i64::try_from(number).unwrap_or(0),
                is_json: true,
                metadata_is_json: false,
                data: Bytes::from(payload(number)),
                metadata: Bytes::new(),
            },
            link: None,
        })
        .collect();
    let slice = StreamSlice {
        view: StreamView { last_number: NEWEST + 100, first_visible: 0, settings: StreamSettings::default() },
        events,
    };
    let request =
        PageRequest { start: PageStart::Number(NEWEST), direction: Direction::Backward, count: PAGE };
    feed::stream_feed(urls, STREAM, request, slice)
}

fn atom(c: &mut Criterion) {
    let urls = Urls::new("http://127.0.0.1:2113".into());
    let page = page(&urls);
    let rendered = feed::atom::render_feed(&page, &urls, Embed::None);
    let mut group = c.benchmark_group("render/atom_page_20");
    group.throughput(Throughput::Bytes(rendered.len() as u64));
    group.bench_function("render", |b| {
        b.iter(|| feed::atom::render_feed(black_box(&page), &urls, Embed::None))
    });
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&rendered[..]).to_vec()));
    group.finish();
}

fn json_embed_body(c: &mut Criterion) {
    let urls = Urls::new("http://127.0.0.1:2113".into());
    let page = page(&urls);
    let rendered = feed::json::render_feed(&page, &urls, Embed::Body);
    let value: serde_json::Value = match serde_json::from_slice(&rendered) {
        Ok(value) => value,
        Err(error) => panic!("the page is JSON: {error}"),
    };
    // The reference writes the very same bytes.
    assert_eq!(serde_json::to_vec_pretty(&value).ok().as_deref(), Some(&rendered[..]));
    let mut group = c.benchmark_group("render/json_page_20_embed_body");
    group.throughput(Throughput::Bytes(rendered.len() as u64));
    group.bench_function("render", |b| {
        b.iter(|| feed::json::render_feed(black_box(&page), &urls, Embed::Body))
    });
    group.bench_function("reference/serde_json_to_vec_pretty", |b| {
        b.iter(|| serde_json::to_vec_pretty(black_box(&value)))
    });
    group.bench_function("reference/memcpy", |b| b.iter(|| black_box(&rendered[..]).to_vec()));
    group.finish();
}

criterion_group!(benches, atom, json_embed_body);
criterion_main!(benches);
