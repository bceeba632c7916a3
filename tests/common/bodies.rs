//! Random request bodies for the property suites: events arrays in JSON and
//! XML that are valid (with what they hold, to check a parse against),
//! and the same bodies broken in the ways a client or a network breaks
//! them (a byte flipped, cut short, junk inserted, a key or an element
//! given twice, a character XML cannot carry).

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

/// One event of a generated array, as the parser should read it back.
#[derive(Debug, Clone)]
pub struct Expected {
    pub id: uuid::Uuid,
    pub event_type: String,
    /// The data: JSON (compared as a value) or text (compared exactly).
    pub data: Payload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
}

/// A valid body and the events it holds.
#[derive(Debug, Clone)]
pub struct ValidBody {
    pub bytes: Vec<u8>,
    pub events: Vec<Expected>,
}

fn uuid() -> impl Strategy<Value = uuid::Uuid> {
    any::<u128>().prop_map(uuid::Uuid::from_u128)
}

fn event_type() -> impl Strategy<Value = String> {
    select(vec!["Placed", "Paid", "order-shipped", "$special", "ünïcode", "a b"]).prop_map(str::to_owned)
}

/// Text that XML and JSON can both carry: markup characters, quotes,
/// spaces at the ends, non-ASCII.
pub fn text() -> impl Strategy<Value = String> {
    let pieces =
        select(vec!["a", " ", "<", ">", "&", "\"", "'", "]]", "é", "😀", "\t", "\n", "x1", "{", "}"]);
    proptest::collection::vec(pieces, 1..12).prop_map(|pieces| pieces.concat())
}

/// A JSON value with unique keys, a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(select(vec!["a", "b", "total", "n", "x-y"]), inner, 0..4)
                .prop_map(|members| members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ]
    })
}

/// An object, as data usually is (a JSON document is stored as JSON).
fn json_document() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(select(vec!["a", "b", "total"]), json_value(), 0..4)
        .prop_map(|members| members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        json_document().prop_map(Payload::Json),
        // Text that no one could take for a JSON document.
        text().prop_map(|text| Payload::Text(format!("t{text}"))),
    ]
}

fn expected() -> impl Strategy<Value = Expected> {
    (uuid(), event_type(), payload()).prop_map(|(id, event_type, data)| Expected { id, event_type, data })
}

/// A valid `…events+json` array.
pub fn valid_json_events() -> impl Strategy<Value = ValidBody> {
    proptest::collection::vec(expected(), 1..4).prop_map(|events| {
        let array: Vec<Value> = events
            .iter()
            .map(|event| {
                let data = match &event.data {
                    Payload::Json(value) => value.clone(),
                    Payload::Text(text) => Value::String(text.clone()),
                };
                serde_json::json!({"eventId": event.id.to_string(), "eventType": event.event_type, "data": data})
            })
            .collect();
        ValidBody { bytes: Value::Array(array).to_string().into_bytes(), events }
    })
}

/// How a text payload is written in XML.
#[derive(Debug, Clone, Copy)]
enum TextForm {
    Escaped,
    CData,
    /// Half escaped, half CDATA.
    Mixed,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` as XML content that reads back as exactly `text`.
fn xml_text(text: &str, form: TextForm) -> String {
    let cdata = |text: &str| format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"));
    match form {
        TextForm::Escaped => escape(text),
        TextForm::CData => cdata(text),
        TextForm::Mixed => {
            let middle = text.char_indices().nth(text.chars().count() / 2).map_or(text.len(), |(i, _)| i);
            format!("{}{}", escape(&text[..middle]), cdata(&text[middle..]))
        }
    }
}

/// A valid `…events+xml` document. Text payloads are written escaped, as
/// CDATA or both; JSON payloads as text. Each is read back exactly, but
/// for the whitespace at the ends of a field outside CDATA, which the
/// format trims (the expected events say so).
pub fn valid_xml_events() -> impl Strategy<Value = ValidBody> {
    let form = select(vec![TextForm::Escaped, TextForm::CData, TextForm::Mixed]);
    let declared = any::<bool>();
    (proptest::collection::vec((expected(), form), 1..4), declared).prop_map(|(events, declared)| {
        let mut xml = String::new();
        if declared {
            xml.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        }
        xml.push_str("<Events>\n");
        for (event, form) in &events {
            let data = match &event.data {
                Payload::Json(value) => escape(&value.to_string()),
                Payload::Text(text) => xml_text(text, *form),
            };
            xml.push_str(&format!(
                "  <Event><EventId>{}</EventId><EventType>{}</EventType><Data>{data}</Data></Event>\n",
                event.id,
                escape(&event.event_type)
            ));
        }
        xml.push_str("</Events>\n");
        let events = events
            .into_iter()
            .map(|(event, form)| match (event.data, form) {
                (Payload::Text(text), TextForm::Escaped) => {
                    let trimmed = text.trim_end_matches([' ', '\t', '\n', '\r']).to_owned();
                    Expected { data: Payload::Text(trimmed), ..event }
                }
                (data, _) => Expected { data, ..event },
            })
            .collect();
        ValidBody { bytes: xml.into_bytes(), events }
    })
}

/// A way to break a body.
#[derive(Debug, Clone)]
pub enum Breakage {
    FlipByte { at: usize, mask: u8 },
    CutAt(usize),
    Insert { at: usize, junk: Vec<u8> },
}

pub fn breakage() -> impl Strategy<Value = Breakage> {
    let junk = prop_oneof![
        select(vec![
            &b"\0"[..],
            b"&#0;",
            b"&undefined;",
            b"<EventId>x</EventId>",
            b"<Data>x</Data>",
            b"]]>",
            b"<![CDATA[",
            b"</Event>",
            b"<",
            b"\"a\":1,",
            b",\"eventType\":\"T\"",
            b"\xef\xbf\xbf",
            b"\xff",
        ])
        .prop_map(<[u8]>::to_vec),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Breakage::FlipByte { at, mask }),
        any::<usize>().prop_map(Breakage::CutAt),
        (any::<usize>(), junk).prop_map(|(at, junk)| Breakage::Insert { at, junk }),
    ]
}

impl Breakage {
    pub fn apply(&self, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        let position = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
        match self {
            Self::FlipByte { at, mask } => {
                if !body.is_empty() {
                    let at = at % body.len();
                    body[at] ^= mask;
                }
            }
            Self::CutAt(at) => body.truncate(position(*at, body.len())),
            Self::Insert { at, junk } => {
                let at = position(*at, body.len());
                body.splice(at..at, junk.iter().copied());
            }
        }
        body
    }
}

/// Mostly `valid` bodies as they are, the others broken once or twice.
pub fn sometimes_broken(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let breakages = prop_oneof![2 => Just(Vec::new()), 1 => proptest::collection::vec(breakage(), 1..3)];
    (valid, breakages)
        .prop_map(|(body, breakages)| breakages.iter().fold(body, |body, breakage| breakage.apply(&body)))
}

/// Any events body: valid JSON or XML, either broken, or random bytes.
pub fn any_events_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => sometimes_broken(valid_json_events().prop_map(|body| body.bytes)),
        2 => sometimes_broken(valid_xml_events().prop_map(|body| body.bytes)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}
