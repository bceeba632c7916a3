//! The events parsers' fuzz suite: random `…events+json` arrays and
//! `…events+xml` documents, valid and broken (tests/common/bodies.rs),
//! straight into `events_body::parse_events`, with no server around it.
//!
//! - A valid body parses to exactly the events it holds (CDATA exactly).
//! - A body with something the format forbids added (a NUL, `&#0;`, an
//!   undefined entity, a second root, a field or key given twice) is
//!   refused, whatever else it holds.
//! - Any body at all either parses to events the store can take or is a
//!   `400` that says why; never a panic. An XML body that parses holds no
//!   character XML cannot carry.
//!
//! Reproducible: a fixed seed and a fixed number of cases per property,
//! so it runs in about a second in every `cargo test`, and a failure is
//! the same failure on every machine (it prints the shrunk body).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bodies::{
    Payload, ValidBody, any_events_body, breakage, sometimes_broken, valid_json_events, valid_xml_events,
};
use eventfeed::http::events_body::{EventsFormat, parse_events};
use eventfeed::store::ProposedEvent;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed};

/// Cases per property: every kind of body and breakage many times over,
/// in well under a second each.
const CASES: u32 = 512;

fn config() -> Config {
    Config { cases: CASES, rng_seed: RngSeed::Fixed(25), failure_persistence: None, ..Config::default() }
}

/// Checks that `events` are exactly what `body` was generated from.
fn assert_parsed_as_generated(body: &ValidBody, events: &[ProposedEvent]) -> Result<(), TestCaseError> {
    prop_assert_eq!(events.len(), body.events.len());
    for (event, expected) in events.iter().zip(&body.events) {
        prop_assert_eq!(event.id, expected.id);
        prop_assert_eq!(&event.event_type, &expected.event_type);
        match &expected.data {
            Payload::Json(value) => {
                prop_assert!(event.is_json);
                let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
                prop_assert_eq!(&data, value);
            }
            Payload::Text(text) => {
                prop_assert!(!event.is_json);
                prop_assert_eq!(std::str::from_utf8(&event.data).unwrap(), text.as_str());
            }
        }
        prop_assert!(event.metadata.is_empty());
    }
    Ok(())
}

/// Inserts `what` at the byte `at` (modulo the length) of `body`, on a
/// character boundary.
fn insert(body: &[u8], at: usize, what: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    [&text[..at], what, &text[at..]].concat().into_bytes()
}

/// Inserts `what` right after the first occurrence of `after`.
fn insert_after(body: &[u8], after: &str, what: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    let at = text.find(after).unwrap() + after.len();
    [&text[..at], what, &text[at..]].concat().into_bytes()
}

fn refused(format: EventsFormat, body: &[u8]) -> Result<(), TestCaseError> {
    match parse_events(format, body) {
        Ok(events) => Err(TestCaseError::fail(format!("taken as {} events", events.len()))),
        Err(error) => {
            prop_assert_eq!(error.status.as_u16(), 400);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_valid_json_array_parses_to_exactly_its_events(body in valid_json_events()) {
        let events = parse_events(EventsFormat::Json, &body.bytes).unwrap();
        assert_parsed_as_generated(&body, &events)?;
    }

    #[test]
    fn a_valid_xml_document_parses_to_exactly_its_events(body in valid_xml_events()) {
        let events = parse_events(EventsFormat::Xml, &body.bytes).unwrap();
        assert_parsed_as_generated(&body, &events)?;
    }

    #[test]
    fn a_character_xml_forbids_anywhere_in_a_document_is_refused(
        body in valid_xml_events(),
        at in any::<usize>(),
        forbidden in select(vec!["\u{0}", "\u{1}", "\u{1f}", "\u{fffe}", "\u{ffff}"]),
    ) {
        refused(EventsFormat::Xml, &insert(&body.bytes, at, forbidden))?;
    }

    #[test]
    fn a_reference_xml_forbids_anywhere_but_in_cdata_is_refused(
        body in valid_xml_events(),
        at in any::<usize>(),
        reference in select(vec!["&#0;", "&#x1F;", "&#xFFFF;", "&nbsp;", "&undefined;"]),
    ) {
        // Inside a tag it breaks the tag; in text it is what XML forbids;
        // outside the root, text. In CDATA it is text like any other.
        let broken = insert(&body.bytes, at, reference);
        let text = std::str::from_utf8(&broken).unwrap();
        let at = text.find(reference).unwrap();
        let in_cdata = text[..at].rfind("<![CDATA[").is_some_and(|open| !text[open..at].contains("]]>"));
        prop_assume!(!in_cdata);
        refused(EventsFormat::Xml, &broken)?;
    }

    #[test]
    fn a_second_root_or_a_field_given_twice_is_refused(
        body in valid_xml_events(),
        // The generated events give EventId, EventType and Data: one more
        // of any of them is one too many, as is a second Metadata.
        field in select(vec![
            "<EventId>x</EventId>",
            "<eventtype>T</eventtype>",
            "<Data/>",
            "<Metadata>m</Metadata><metadata/>",
        ]),
    ) {
        let text = std::str::from_utf8(&body.bytes).unwrap();
        refused(EventsFormat::Xml, format!("{text}<Events/>").as_bytes())?;
        refused(EventsFormat::Xml, format!("{text}junk").as_bytes())?;
        refused(EventsFormat::Xml, &insert_after(&body.bytes, "<Event>", field))?;
    }

    #[test]
    fn a_key_given_twice_in_a_json_array_is_refused(
        body in valid_json_events(),
        key in select(vec!["eventId", "eventType", "data"]),
    ) {
        let twice = insert_after(&body.bytes, "{", &format!("\"{key}\":null,"));
        refused(EventsFormat::Json, &twice)?;
    }

    #[test]
    fn any_body_is_events_the_store_can_take_or_a_400(
        body in prop_oneof![
            3 => any_events_body(),
            1 => sometimes_broken(valid_xml_events().prop_map(|body| body.bytes)),
            1 => (valid_json_events(), breakage()).prop_map(|(body, breakage)| breakage.apply(&body.bytes)),
        ],
        xml in any::<bool>(),
    ) {
        let format = if xml { EventsFormat::Xml } else { EventsFormat::Json };
        match parse_events(format, &body) {
            Ok(events) => {
                prop_assert!(!events.is_empty());
                for event in &events {
                    prop_assert!(!event.event_type.is_empty());
                    if xml {
                        for payload in [&event.data, &event.metadata] {
                            let text = std::str::from_utf8(payload);
                            prop_assert!(text.is_ok_and(|text| text.chars().all(eventfeed::xml::is_char)));
                        }
                    }
                }
            }
            Err(error) => {
                prop_assert_eq!(error.status.as_u16(), 400);
                prop_assert!(!error.reason.is_empty());
            }
        }
    }
}
