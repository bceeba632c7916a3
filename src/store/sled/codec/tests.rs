//! Round trips, byte layouts and damaged values for every format.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::store::{RecordedEvent, StoreError, StreamSettings, StreamState};

#[test]
fn event_round_trip() {
    let id = Uuid::new_v4();
    let fields = EventFields {
        stream: "Order-123",
        number: 42,
        position: 7,
        id: &id,
        event_type: "OrderPlaced",
        created_micros: 1_700_000_000_123_456,
        is_json: true,
        metadata_is_json: false,
        data: br#"{"total":12}"#,
        metadata: b"plain",
    };
    let record = encode_event(&fields);
    let event = decode_event(Bytes::from(record.clone())).expect("decodes");
    assert_eq!(&*event.stream, "Order-123");
    assert_eq!(event.number, 42);
    assert_eq!(event.position, 7);
    assert_eq!(event.id, id);
    assert_eq!(&*event.event_type, "OrderPlaced");
    assert_eq!(event.created_micros, 1_700_000_000_123_456);
    assert!(event.is_json);
    assert!(!event.metadata_is_json);
    assert_eq!(&event.data[..], br#"{"total":12}"#);
    assert_eq!(&event.metadata[..], b"plain");
    assert_eq!(entry_time_and_position(&record).expect("decodes"), (1_700_000_000_123_456, 7));
}

#[test]
fn truncated_and_unknown_records_are_errors_not_panics() {
    let id = Uuid::new_v4();
    let record = encode_event(&EventFields {
        stream: "s",
        number: 0,
        position: 0,
        id: &id,
        event_type: "t",
        created_micros: 0,
        is_json: false,
        metadata_is_json: false,
        data: b"abc",
        metadata: b"",
    });
    for cut in 0..record.len() {
        assert!(decode_event(Bytes::copy_from_slice(&record[..cut])).is_err(), "cut at {cut}");
    }
    let mut future = record.clone();
    future[0] = 99;
    assert!(matches!(decode_event(Bytes::from(future)), Err(StoreError::Corrupt(_))));
}

#[test]
fn state_round_trip_with_and_without_settings() {
    let plain = StreamState { next_number: 5, created_position: 10, ..StreamState::default() };
    assert_eq!(decode_state(&encode_state(&plain, 0)).expect("decodes"), (plain, 0));

    let full = StreamState {
        next_number: 100,
        created_position: 3,
        deleted_before: 40,
        soft_deleted: true,
        tombstoned: false,
        settings: StreamSettings {
            max_count: Some(10),
            max_age_secs: None,
            truncate_before: Some(50),
            cache_control_secs: Some(30),
            metadata_number: Some(2),
            not_public: true,
        },
    };
    assert_eq!(decode_state(&encode_state(&full, 77)).expect("decodes"), (full, 77));
}

#[test]
fn link_entries_round_trip_and_are_told_from_records() {
    let link = encode_link_entry(9, 1_000, 4, "Order-1");
    assert_eq!(
        decode_entry(Bytes::from(link.clone())).expect("decodes"),
        Entry::Link { position: 9, created_micros: 1_000, number: 4, stream: "Order-1".into() }
    );
    assert_eq!(entry_time_and_position(&link).expect("decodes"), (1_000, 9));
    assert!(decode_entry(Bytes::copy_from_slice(&link[..12])).is_err());
    let id = Uuid::new_v4();
    let record = encode_event(&EventFields {
        stream: "s",
        number: 1,
        position: 2,
        id: &id,
        event_type: "t",
        created_micros: 3,
        is_json: false,
        metadata_is_json: false,
        data: b"",
        metadata: b"",
    });
    assert!(matches!(decode_entry(Bytes::from(record)), Ok(Entry::Event(event)) if event.position == 2));
}

#[test]
fn runs_of_links_round_trip() {
    let links = [(9, 1_000, 4, "Order-1"), (10, 1_001, 0, "Order-2"), (12, 1_002, 5, "Ordér-1")];
    let run = encode_links(&links);
    assert!(is_link_entry(&run) && is_run(&run));
    assert_eq!(entry_count(&run).expect("decodes"), 3);
    assert_eq!(entry_time_and_position(&run).expect("decodes"), (1_000, 9));
    let decoded = decode_entries(Bytes::from(run.clone())).expect("decodes");
    let expected: Vec<Entry> = links
        .iter()
        .map(|&(position, created_micros, number, stream)| Entry::Link {
            position,
            created_micros,
            number,
            stream: stream.into(),
        })
        .collect();
    assert_eq!(decoded, expected);
    assert!(decode_entry(Bytes::from(run.clone())).is_err(), "a run is not one entry");
    for cut in [3, 10, run.len() - 1] {
        assert!(decode_entries(Bytes::copy_from_slice(&run[..cut])).is_err(), "cut at {cut}");
    }
    // A lone link keeps the single-entry form.
    let lone = encode_links(&links[..1]);
    assert_eq!(lone, encode_link_entry(9, 1_000, 4, "Order-1"));
    assert_eq!(entry_count(&lone).expect("decodes"), 1);
    assert_eq!(decode_entries(Bytes::from(lone)).expect("decodes"), expected[..1]);
}

fn record(number: u64, data: &[u8]) -> Vec<u8> {
    encode_event(&EventFields {
        stream: "Order-1",
        number,
        position: 100 + number,
        id: &Uuid::from_u128(u128::from(number) + 1),
        event_type: "Placed",
        created_micros: 5_000 + number as i64,
        is_json: true,
        metadata_is_json: false,
        data,
        metadata: b"",
    })
}

#[test]
fn runs_of_records_round_trip_and_read_one_item() {
    let records: Vec<Vec<u8>> = (7..11).map(|n| record(n, format!("{{\"n\":{n}}}").as_bytes())).collect();
    let run = Bytes::from(encode_records(records.clone()));
    assert!(is_run(&run) && !is_link_entry(&run));
    assert_eq!(entry_count(&run).expect("decodes"), 4);
    assert_eq!(entry_time_and_position(&run).expect("decodes"), (5_007, 107));
    let expected: Vec<Entry> = records
        .iter()
        .map(|r| Entry::Event(decode_event(Bytes::from(r.clone())).expect("decodes")))
        .collect();
    assert_eq!(decode_entries(run.clone()).expect("decodes"), expected);
    for (number, entry) in (7..).zip(&expected) {
        assert_eq!(decode_entry_at(run.clone(), 7, number).expect("decodes").as_ref(), Some(entry));
    }
    assert_eq!(decode_entry_at(run.clone(), 7, 6).expect("decodes"), None);
    assert_eq!(decode_entry_at(run.clone(), 7, 11).expect("decodes"), None);
    assert!(decode_entry(run.clone()).is_err(), "a run is not one entry");
    for cut in [3, 10, run.len() - 1] {
        assert!(decode_entries(run.slice(..cut)).is_err(), "cut at {cut}");
        assert!(decode_entry_at(run.slice(..cut), 7, 8).is_err(), "cut at {cut}");
    }
    // A lone record is stored as it is.
    assert_eq!(encode_records(records[..1].to_vec()), records[0]);
    let lone = Bytes::from(records[0].clone());
    assert_eq!(decode_entry_at(lone.clone(), 7, 7).expect("decodes").as_ref(), Some(&expected[0]));
    assert_eq!(decode_entry_at(lone, 7, 8).expect("decodes"), None);
}

#[test]
fn events_decoded_together_share_equal_names() {
    let mut other = record(9, b"{}");
    // The same record under another type ("Placed" -> "Shiped").
    let at = other.windows(6).position(|w| w == b"Placed").expect("holds its type");
    other[at..at + 6].copy_from_slice(b"Shiped");
    let run = Bytes::from(encode_records(vec![record(7, b"{}"), record(8, b"{}"), other]));
    let mut decoded = Vec::new();
    decode_entries_within(run, 7, 7, 9, &mut Names::default(), &mut |number, entry| {
        decoded.push((number, entry));
        Ok(())
    })
    .expect("decodes");
    let events: Vec<&RecordedEvent> = decoded
        .iter()
        .map(|(_, entry)| match entry {
            Entry::Event(event) => event,
            Entry::Link { .. } => panic!("records are events"),
        })
        .collect();
    assert!(events.iter().all(|event| Arc::ptr_eq(&event.stream, &events[0].stream)));
    assert!(Arc::ptr_eq(&events[0].event_type, &events[1].event_type));
    assert_eq!((&*events[1].event_type, &*events[2].event_type), ("Placed", "Shiped"));
}

#[test]
fn the_tail_of_a_run_reads_like_the_entries_it_keeps() {
    let records: Vec<Vec<u8>> = (0..3).map(|n| record(n, b"{}")).collect();
    let run = Bytes::from(encode_records(records.clone()));
    let tail = Bytes::from(run_tail(&run, 1).expect("trims"));
    assert_eq!(decode_entries(tail).expect("decodes"), decode_entries(run.clone()).expect("decodes")[1..]);
    assert_eq!(run_tail(&run, 2).expect("trims"), records[2], "a lone record takes its own form");
    assert!(run_tail(&run, 3).is_err(), "a trim must leave an entry");

    let links = [(9, 1_000, 4, "Order-1"), (10, 1_001, 0, "Order-2"), (12, 1_002, 5, "Ordér-1")];
    let run = Bytes::from(encode_links(&links));
    assert_eq!(run_tail(&run, 1).expect("trims"), encode_links(&links[1..]));
    assert_eq!(run_tail(&run, 2).expect("trims"), encode_link_entry(12, 1_002, 5, "Ordér-1"));
}

#[test]
fn event_refs_round_trip() {
    let value = encode_event_ref("Order-1", 3);
    assert_eq!(decode_event_ref(&value).expect("decodes"), ("Order-1".to_owned(), 3));
}

#[test]
fn log_entries_round_trip_alone_and_as_runs() {
    let lone = encode_log_entry("Order-1", 3, 1);
    assert_eq!(lone, encode_event_ref("Order-1", 3), "a lone position keeps the reference form");
    assert_eq!(decode_log_entry(&lone).expect("decodes"), ("Order-1".to_owned(), 3, 1));
    let run = encode_log_entry("Ordér-1", (1 << 62) + 5, 20);
    assert_eq!(decode_log_entry(&run).expect("decodes"), ("Ordér-1".to_owned(), (1 << 62) + 5, 20));
    for cut in [1, 4, 12] {
        assert!(decode_log_entry(&run[..cut]).is_err(), "cut at {cut}");
    }
    // The largest number a reference can hold still reads as a reference.
    let highest = encode_event_ref("s", i64::MAX as u64);
    assert_eq!(decode_log_entry(&highest).expect("decodes"), ("s".to_owned(), i64::MAX as u64, 1));
}

#[test]
fn id_tables_name_each_stream_once_and_find_ids() {
    let mut ids: Vec<Uuid> = (0..50u128).map(|i| Uuid::from_u128(i * 7919 + 3)).collect();
    ids.sort();
    let entries: Vec<(Uuid, &str, u64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, if i % 2 == 0 { "order-1" } else { "user-7" }, i as u64))
        .collect();
    let value = encode_id_table(entries.iter().copied());
    assert_eq!(value.len(), 1 + 4 + 2 * 2 + 7 + 6 + 4 + 50 * ID_ENTRY);
    let table = decode_id_table(&value).unwrap();
    assert_eq!(table.len(), 50);
    for (i, (id, stream, number)) in entries.iter().enumerate() {
        assert_eq!(table.get(i).unwrap(), (*id, *stream, *number));
        assert_eq!(table.number_in(id, stream).unwrap(), Some(*number));
        assert_eq!(table.number_in(id, "elsewhere").unwrap(), None);
    }
    assert_eq!(table.number_in(&Uuid::from_u128(4), "order-1").unwrap(), None);
    assert_eq!(table.number_in(&Uuid::max(), "order-1").unwrap(), None);
    assert_eq!(table.ids().collect::<Vec<_>>(), ids);
}

#[test]
fn an_id_written_to_several_streams_is_found_in_each() {
    let shared = Uuid::from_u128(20);
    let entries = [
        (Uuid::from_u128(10), "a", 0),
        (shared, "order-1", 4),
        (shared, "customer-1", 9),
        (shared, "audit", 2),
        (Uuid::from_u128(30), "customer-1", 10),
    ];
    let value = encode_id_table(entries);
    let table = decode_id_table(&value).unwrap();
    assert_eq!(table.number_in(&shared, "order-1").unwrap(), Some(4));
    assert_eq!(table.number_in(&shared, "customer-1").unwrap(), Some(9));
    assert_eq!(table.number_in(&shared, "audit").unwrap(), Some(2));
    assert_eq!(table.number_in(&shared, "a").unwrap(), None);
    assert_eq!(table.number_in(&Uuid::from_u128(30), "customer-1").unwrap(), Some(10));
}

#[test]
fn damaged_id_tables_are_refused() {
    let value = encode_id_table([(Uuid::from_u128(1), "s", 0)]);
    assert!(decode_id_table(&value[..value.len() - 1]).is_err());
    let mut version = value.clone();
    version[0] = 9;
    assert!(decode_id_table(&version).is_err());
    let mut index = value;
    let at = index.len() - 12;
    index[at..at + 4].copy_from_slice(&5u32.to_be_bytes());
    assert!(decode_id_table(&index).unwrap().get(0).is_err());
}
