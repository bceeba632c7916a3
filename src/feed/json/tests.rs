use super::*;

#[test]
fn strings_are_escaped_as_serde_json_escapes_them_at_every_offset() {
    let alphabet = [
        'a', ' ', '"', '\\', '/', '\u{0}', '\u{8}', '\u{c}', '\u{1f}', '\t', '\n', '\r', '\u{7f}', 'é', '😀',
    ];
    for text in swar::mostly_plain_texts(&alphabet) {
        let mut ours = b"\"".to_vec();
        escape_into(&mut ours, &text);
        ours.push(b'"');
        let theirs = serde_json::to_string(&text).expect("a string serialises");
        assert_eq!(String::from_utf8(ours).expect("utf-8"), theirs, "{text:?}");
    }
}

#[test]
fn the_layout_is_serde_jsons_pretty_and_compact_layout() {
    // serde_json is built with `preserve_order`: members stay in order.
    let value = serde_json::json!({
        "a": "x\"y",
        "empty": [],
        "none": {},
        "list": [{"uri": "u", "relation": "r"}, {"uri": "v", "relation": "s"}],
        "n": 7,
        "t": true,
    });
    for pretty in [true, false] {
        let mut json = JsonWriter::new(0, pretty);
        json.open(b'{');
        json.string_field("a", "x\"y");
        json.key("empty");
        json.open(b'[');
        json.close(b']');
        json.key("none");
        json.open(b'{');
        json.close(b'}');
        json.key("list");
        json.open(b'[');
        json.link("u", "r");
        json.link("v", "s");
        json.close(b']');
        json.number_field("n", 7);
        json.bool_field("t", true);
        json.close(b'}');
        let expected = match pretty {
            true => serde_json::to_string_pretty(&value),
            false => serde_json::to_string(&value),
        };
        assert_eq!(String::from_utf8(json.out).expect("utf-8"), expected.expect("serialises"));
    }
}

/// Every kind of entry a page can hold, at every embed level the
/// spelled-out entries serve: byte for byte what `write_entry` writes.
#[test]
fn spelled_out_entries_are_written_exactly_as_the_reference_writes_them() {
    let event = |stream: &str, number: u64, event_type: &str, data: &[u8], is_json: bool, metadata: &[u8]| {
        let mut event = super::super::test_event(stream, number);
        event.event_type = event_type.into();
        event.id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef ^ u128::from(number));
        event.created_micros = 1_795_000_000_000_000 + i64::try_from(number / 3).unwrap();
        event.data = bytes::Bytes::copy_from_slice(data);
        event.is_json = is_json;
        event.metadata_is_json = metadata.starts_with(b"{");
        event.metadata = bytes::Bytes::copy_from_slice(metadata);
        event
    };
    let plain = |event: RecordedEvent| ReadEvent { event, link: None };
    let linked = |target: RecordedEvent, from: &str, number: u64, metadata: &[u8]| {
        let mut link = event(from, number, crate::store::LINK_EVENT_TYPE, b"3@x", false, metadata);
        link.position = 900 + number;
        ReadEvent { event: target, link: Some(Box::new(link)) }
    };
    let entries = vec![
        plain(event("order-1", 12, "Placed", br#"{"a": "b\"c", "n": 1}"#, true, b"")),
        plain(event("order-1", 11, "Placed", br#"{"a":1}"#, true, br#"{"m": "\u0001"}"#)),
        plain(event("order-1", 10, "Paid\"\\", b"not json \x01\n", false, b"plain meta")),
        plain(event("order-1", 9, "Empty", b"", false, b"")),
        plain(event("order-1", 8, "EmptyJson", b"", true, b"")),
        plain(event("order-1", 7, "Array", b"[1, 2]", false, b"")),
        plain(event("we\"ird \\ n\u{1}ame/%@\u{e9}", 3, "T\u{7f}\u{1f}", b"{}", true, b"")),
        plain(event("$$order-1", 0, "$metadata", br#"{"$maxCount": 5}"#, true, b"")),
        linked(event("order-1", 6, "Placed", br#"{"x": [1]}"#, true, b""), "$ce-order", 4, b"{\"$o\": 1}"),
        linked(event("order-2", 0, "Placed", b"", true, b""), "$et-Placed", 3, b"\xff bad utf-8"),
        plain(event("order-1", 5, "Placed", b"{\"bad utf-8\": \"\xff\"}", true, b"")),
    ];
    let extra = |number: usize| match number % 3 {
        0 => Vec::new(),
        1 => vec![Link { uri: "http://h/ack/\"1".into(), relation: "ack" }],
        _ => vec![
            Link { uri: "http://h/ack/2".into(), relation: "ack" },
            Link { uri: "http://h/nack/2".into(), relation: "nack" },
        ],
    };
    for base in ["http://127.0.0.1:2113", "https://h\"\\1/pre fix"] {
        let urls = Urls::new(base.into());
        for count in [0, 1, entries.len()] {
            let feed = Feed {
                title: "Event stream 'order-1'".into(),
                id: format!("{base}/streams/order-1"),
                updated_micros: Some(1_795_000_000_000_000),
                stream_id: Some("order-1".into()),
                head_of_stream: count == 0,
                self_url: None,
                etag: None,
                links: vec![Link { uri: format!("{base}/streams/order-1"), relation: "self" }],
                entries: entries[..count].to_vec(),
                freshness: super::super::Freshness::Immutable,
                is_head: false,
            };
            let links: Vec<Vec<Link>> = (0..count).map(extra).collect();
            for embed in [Embed::None, Embed::Rich, Embed::Body, Embed::Pretty, Embed::TryHarder] {
                for links in [&[][..], &links[..]] {
                    let ours = render_page(&feed, &urls, embed, links, true);
                    let reference = render_page(&feed, &urls, embed, links, false);
                    assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&reference),
                        "{base} {count} entries {embed:?}"
                    );
                    serde_json::from_slice::<serde_json::Value>(&ours).expect("the page is JSON");
                }
            }
        }
    }
}

#[test]
fn an_entry_url_is_the_same_in_its_id_and_its_links() {
    let event = ReadEvent { event: super::super::test_event("a\"b", 7), link: None };
    // A base from forwarded headers may hold anything.
    let base = "http://h\"\\1";
    let entry: serde_json::Value =
        serde_json::from_slice(&render_entry(&event, &Urls::new(base.into()))).unwrap();
    let url = format!("{base}/streams/a%22b/7");
    assert_eq!(entry["id"], url.as_str());
    assert_eq!(entry["links"][0], serde_json::json!({"uri": url, "relation": "edit"}));
    assert_eq!(entry["links"][1], serde_json::json!({"uri": url, "relation": "alternate"}));
}
