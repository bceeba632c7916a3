use super::*;
use crate::store::{StreamSettings, StreamView};

fn slice(last: u64, numbers: impl Iterator<Item = u64>) -> StreamSlice {
    let events = numbers
        .map(|number| ReadEvent {
            event: crate::store::RecordedEvent {
                stream: "s".into(),
                number,
                position: number,
                id: uuid::Uuid::nil(),
                event_type: "t".into(),
                created_micros: i64::try_from(number).unwrap_or(0),
                is_json: true,
                metadata_is_json: false,
                data: bytes::Bytes::from_static(b"{}"),
                metadata: bytes::Bytes::new(),
            },
            link: None,
        })
        .collect();
    StreamSlice {
        view: StreamView { last_number: last, first_visible: 0, settings: StreamSettings::default() },
        events,
    }
}

fn rels(feed: &Feed) -> Vec<(&'static str, String)> {
    feed.links
        .iter()
        .map(|l| (l.relation, l.uri.trim_start_matches("http://h/streams/s").to_owned()))
        .collect()
}

fn request(start: PageStart, direction: Direction, count: u64) -> PageRequest {
    PageRequest { start, direction, count }
}

#[test]
fn head_page_of_a_long_stream() {
    let urls = Urls::new("http://h".into());
    let feed = stream_feed(&urls, "s", request(PageStart::Head, Direction::Backward, 20), slice(99, 80..=99));
    assert_eq!(
        rels(&feed),
        [
            ("self", "".into()),
            ("first", "/head/backward/20".into()),
            ("last", "/0/forward/20".into()),
            ("next", "/79/backward/20".into()),
            ("previous", "/100/forward/20".into()),
            ("metadata", "/metadata".into()),
        ]
    );
    assert!(feed.head_of_stream);
    assert_eq!(feed.freshness, Freshness::Live { version: "99".into() });
    assert_eq!(feed.entries.first().map(|e| e.event.number), Some(99));
}

#[test]
fn backward_page_at_the_start_has_no_next_or_last() {
    let urls = Urls::new("http://h".into());
    let feed =
        stream_feed(&urls, "s", request(PageStart::Number(19), Direction::Backward, 20), slice(99, 0..=19));
    let relations: Vec<_> = feed.links.iter().map(|l| l.relation).collect();
    assert_eq!(relations, ["self", "first", "previous", "metadata"]);
    assert_eq!(feed.freshness, Freshness::Immutable);
    assert!(!feed.head_of_stream);
}

#[test]
fn forward_pages() {
    let urls = Urls::new("http://h".into());
    let full =
        stream_feed(&urls, "s", request(PageStart::Number(20), Direction::Forward, 20), slice(99, 20..=39));
    assert_eq!(
        rels(&full),
        [
            ("self", "".into()),
            ("first", "/head/backward/20".into()),
            ("last", "/0/forward/20".into()),
            ("next", "/19/backward/20".into()),
            ("previous", "/40/forward/20".into()),
            ("metadata", "/metadata".into()),
        ]
    );
    assert_eq!(full.freshness, Freshness::Immutable);
    assert!(!full.head_of_stream);
    assert_eq!(full.entries.first().map(|e| e.event.number), Some(39), "newest first");

    let partial =
        stream_feed(&urls, "s", request(PageStart::Number(90), Direction::Forward, 20), slice(99, 90..=99));
    assert!(partial.head_of_stream);
    assert!(partial.links.iter().any(|l| l.relation == "previous" && l.uri.ends_with("/100/forward/20")));
    assert_eq!(partial.freshness, Freshness::Live { version: "99".into() });

    let empty_end = stream_feed(
        &urls,
        "s",
        request(PageStart::Number(100), Direction::Forward, 20),
        slice(99, std::iter::empty()),
    );
    assert!(empty_end.head_of_stream);
    assert!(!empty_end.links.iter().any(|l| l.relation == "previous"));
    assert_eq!(empty_end.updated_micros, None);
}

#[test]
fn the_page_that_exactly_reaches_the_end_is_full_and_immutable() {
    let urls = Urls::new("http://h".into());
    let feed =
        stream_feed(&urls, "s", request(PageStart::Number(80), Direction::Forward, 20), slice(99, 80..=99));
    assert_eq!(feed.freshness, Freshness::Immutable);
    assert!(feed.head_of_stream);
    assert!(feed.links.iter().any(|l| l.relation == "previous" && l.uri.ends_with("/100/forward/20")));
}

#[test]
fn etags_are_stable_and_distinguish_media_types_and_metadata() {
    let atom = etag_value("7", "application/atom+xml", None);
    assert_eq!(atom, etag_value("7", "application/atom+xml", None));
    assert!(atom.starts_with("7;"));
    assert_ne!(atom, etag_value("7", "application/vnd.eventstore.atom+json", None));
    assert_ne!(atom, etag_value("7", "application/atom+xml", Some(0)));
}

#[test]
fn decimals() {
    let mut buffer = [0; 20];
    assert_eq!(decimal(0, &mut buffer), "0");
    assert_eq!(decimal(42, &mut buffer), "42");
    assert_eq!(decimal(u64::MAX, &mut buffer), "18446744073709551615");
}

#[test]
fn positions_round_trip() {
    assert_eq!(format_position(26), "000000000000001A000000000000001A");
    assert_eq!(parse_position("000000000000001a000000000000001A"), Some(26));
    assert_eq!(parse_position("1A"), None);
    assert_eq!(parse_position("zz00000000000000000000000000000z"), None);
}

#[test]
fn all_pages_step_by_scanned_positions() {
    let urls = Urls::new("http://h".into());
    let slice = |events: Vec<u64>, scanned: Option<(u64, u64)>| AllSlice {
        next_position: 100,
        scanned,
        events: events.into_iter().map(|position| test_event("s", position)).collect(),
        may_expire: false,
    };
    // Positions 10..=14 scanned, 12 hidden: a full page of 4.
    let forward = all_feed(
        &urls,
        request(PageStart::Number(10), Direction::Forward, 4),
        slice(vec![10, 11, 13, 14], Some((10, 14))),
    );
    let previous = forward.links.iter().find(|l| l.relation == "previous").map(|l| l.uri.clone());
    assert_eq!(previous.as_deref(), Some("http://h/streams/$all/000000000000000F000000000000000F/forward/4"));
    assert_eq!(forward.freshness, Freshness::Immutable);
    assert!(!forward.head_of_stream);
    assert_eq!(forward.entries[0].event.position, 14);

    let end = all_feed(&urls, request(PageStart::Number(100), Direction::Forward, 4), slice(vec![], None));
    assert!(end.head_of_stream);
    assert!(!end.links.iter().any(|l| l.relation == "previous"));
    assert!(matches!(end.freshness, Freshness::Live { .. }));

    let head = all_feed(
        &urls,
        request(PageStart::Head, Direction::Backward, 4),
        slice(vec![96, 97, 98, 99], Some((96, 99))),
    );
    let next = head.links.iter().find(|l| l.relation == "next").map(|l| l.uri.clone());
    assert_eq!(next.as_deref(), Some("http://h/streams/$all/000000000000005F000000000000005F/backward/4"));
    assert!(head.head_of_stream);
}

#[test]
fn embed_parsing_is_case_insensitive() {
    assert_eq!(Embed::parse("Body"), Some(Embed::Body));
    assert_eq!(Embed::parse("TRYHARDER"), Some(Embed::TryHarder));
    assert_eq!(Embed::parse("everything"), None);
}
