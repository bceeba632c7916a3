//! How one event's payload is shown: as embedded JSON, as a JSON string
//! (`embed=body`), re-indented (`pretty`), or as XML.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::Embed;
use crate::store::RecordedEvent;

/// The payload of an event as a JSON value to embed verbatim (`content`):
/// the stored JSON for JSON events, else the bytes as a JSON string.
pub fn embedded(bytes: &[u8], is_json: bool) -> Box<RawValue> {
    if is_json {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Ok(raw) = RawValue::from_string(text.to_owned()) {
                return raw;
            }
        }
    }
    json_string(&String::from_utf8_lossy(bytes))
}

/// `text` as a JSON string literal. Serialising a `&str` cannot fail; the
/// `null` fallback only satisfies the type.
fn json_string(text: &str) -> Box<RawValue> {
    serde_json::value::to_raw_value(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The text of a payload for `embed=body` and above, when the level shows
/// it: JSON payloads always; others only with `tryharder`, and only if they
/// happen to parse as JSON. `pretty` and `tryharder` re-indent.
/// Borrowed from `bytes` unless it is re-indented (a page of large events
/// is serialised without copying their payloads).
pub fn body_text(bytes: &[u8], is_json: bool, embed: Embed) -> Option<Cow<'_, str>> {
    if bytes.is_empty() && !is_json {
        return None;
    }
    let reindent = matches!(embed, Embed::Pretty | Embed::TryHarder);
    if is_json {
        // `from_utf8` first: its check runs a word at a time over ASCII,
        // the lossy conversion's a character at a time.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        if reindent {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Ok(pretty) = serde_json::to_string_pretty(&value) {
                    return Some(Cow::Owned(pretty));
                }
            }
        }
        return Some(text);
    }
    if embed == Embed::TryHarder {
        let value = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
        return serde_json::to_string_pretty(&value).ok().map(Cow::Owned);
    }
    None
}

/// The XML declaration the converted documents start with.
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";

/// The payload as an XML document (`text/xml` / `application/xml` reads),
/// or `None` when it cannot be one: it holds a character XML 1.0 cannot
/// carry (a NUL, say), or bytes that are not UTF-8. Never anything that
/// is not well-formed XML, and never JSON text.
///
/// A JSON payload is converted as v5 converts it (Json.NET's
/// `DeserializeXmlNode(json, "data")`): members become elements, an array
/// repeats its element (an array in an array is wrapped in one more),
/// scalars become text, all under a `<data>` root; a root array is wrapped
/// too, so there is one root. Names that are not XML names are made so by
/// replacing offending characters with `_`. Any other payload is shown as
/// stored when it is a well-formed XML document (it was posted as XML),
/// else as the text of a `<data>` element, as v5 shows a string.
pub fn xml_payload(event: &RecordedEvent) -> Option<Vec<u8>> {
    let mut out = String::from(DECLARATION);
    if event.is_json {
        let value = serde_json::from_slice::<serde_json::Value>(&event.data).ok()?;
        if value.is_array() {
            out.push_str("<data>");
            write_xml_value(&mut out, "data", &value)?;
            out.push_str("</data>");
        } else {
            write_xml_value(&mut out, "data", &value)?;
        }
        return Some(out.into_bytes());
    }
    let text = std::str::from_utf8(&event.data).ok()?;
    if crate::xml::check_document(text).is_ok() {
        return Some(event.data.to_vec());
    }
    out.push_str("<data>");
    push_escaped(&mut out, text)?;
    out.push_str("</data>");
    Some(out.into_bytes())
}

/// The event as an XML document (`application/vnd.eventstore.event+xml`):
/// the fields of the event object (`…event+json`) as elements under an
/// `<event>` root, JSON payloads converted as [`xml_payload`] converts
/// them and any other payload as text, without a declaration, as v5 writes
/// it; `None` when a character XML cannot carry is in the way, or bytes
/// that are not UTF-8 (shown as text, they would read as other bytes).
pub fn xml_event(event: &RecordedEvent) -> Option<Vec<u8>> {
    use serde_json::Value;
    let payload = |bytes: &[u8], is_json: bool| {
        let parsed = is_json.then(|| serde_json::from_slice::<Value>(bytes).ok()).flatten();
        parsed.or_else(|| std::str::from_utf8(bytes).ok().map(|text| Value::String(text.to_owned())))
    };
    let mut out = String::from("<event>");
    write_xml_value(&mut out, "eventStreamId", &Value::from(&*event.stream))?;
    write_xml_value(&mut out, "eventNumber", &Value::from(event.number))?;
    write_xml_value(&mut out, "eventType", &Value::from(&*event.event_type))?;
    write_xml_value(&mut out, "eventId", &Value::from(event.id.to_string()))?;
    write_xml_value(&mut out, "data", &payload(&event.data, event.is_json)?)?;
    write_xml_value(&mut out, "metadata", &payload(&event.metadata, event.metadata_is_json)?)?;
    out.push_str("</event>");
    Some(out.into_bytes())
}

/// Writes `value` as the element `name`; `None` when a string holds a
/// character XML cannot carry.
fn write_xml_value(out: &mut String, name: &str, value: &serde_json::Value) -> Option<()> {
    use serde_json::Value;
    if let Value::Array(items) = value {
        for item in items {
            if item.is_array() {
                let name = xml_name(name);
                out.push_str(&format!("<{name}>"));
                write_xml_value(out, &name, item)?;
                out.push_str(&format!("</{name}>"));
            } else {
                write_xml_value(out, name, item)?;
            }
        }
        return Some(());
    }
    let name = xml_name(name);
    out.push('<');
    out.push_str(&name);
    out.push('>');
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                write_xml_value(out, key, member)?;
            }
        }
        Value::String(text) => push_escaped(out, text)?,
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
    Some(())
}

/// Appends `text` escaped as XML text; `None` if XML cannot carry it.
fn push_escaped(out: &mut String, text: &str) -> Option<()> {
    if !text.chars().all(crate::xml::is_char) {
        return None;
    }
    out.push_str(&quick_xml::escape::escape(text));
    Some(())
}

fn xml_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (index, ch) in name.chars().enumerate() {
        let valid =
            if index == 0 { crate::xml::is_name_start_char(ch) } else { crate::xml::is_name_char(ch) };
        out.push(if valid { ch } else { '_' });
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_text_by_level() {
        assert!(matches!(body_text(br#"{"a":1}"#, true, Embed::Body), Some(Cow::Borrowed(r#"{"a":1}"#))));
        assert_eq!(body_text(br#"{"a":1}"#, true, Embed::Pretty).as_deref(), Some("{\n  \"a\": 1\n}"));
        assert_eq!(body_text(br#"{"a":1}"#, false, Embed::Body), None);
        assert!(body_text(br#"{"a":1}"#, false, Embed::TryHarder).is_some());
        assert_eq!(body_text(b"plain", false, Embed::TryHarder), None);
    }

    #[test]
    fn embedded_payloads_are_valid_json() {
        assert_eq!(embedded(br#"{"a":[1,2]}"#, true).get(), r#"{"a":[1,2]}"#);
        assert_eq!(embedded(b"he said \"hi\"", false).get(), r#""he said \"hi\"""#);
        assert_eq!(embedded(b"", false).get(), r#""""#);
    }

    fn recorded(data: &'static [u8]) -> RecordedEvent {
        RecordedEvent {
            stream: "s".into(),
            number: 0,
            position: 0,
            id: uuid::Uuid::nil(),
            event_type: "t".into(),
            created_micros: 0,
            is_json: true,
            metadata_is_json: false,
            data: bytes::Bytes::from_static(data),
            metadata: bytes::Bytes::new(),
        }
    }

    #[test]
    fn json_payloads_convert_to_xml() {
        let event = recorded(br#"{"name":"a<b","tags":["x","y"],"1st":null}"#);
        assert_eq!(
            String::from_utf8(xml_payload(&event).expect("XML")).expect("utf-8"),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><data><name>a&lt;b</name><tags>x</tags><tags>y</tags><_st></_st></data>"
        );
    }

    #[test]
    fn events_convert_to_xml_with_every_field() {
        let event = recorded(br#"{"a":1}"#);
        assert_eq!(
            String::from_utf8(xml_event(&event).expect("XML")).expect("utf-8"),
            "<event><eventStreamId>s</eventStreamId><eventNumber>0</eventNumber><eventType>t</eventType>\
             <eventId>00000000-0000-0000-0000-000000000000</eventId><data><a>1</a></data><metadata></metadata></event>"
        );
        let text = RecordedEvent { is_json: false, ..recorded(b"<x/>") };
        assert!(
            String::from_utf8(xml_event(&text).expect("XML"))
                .expect("utf-8")
                .contains("<data>&lt;x/&gt;</data>")
        );
    }

    #[test]
    fn what_xml_cannot_carry_has_no_xml_view() {
        let nul = RecordedEvent { is_json: false, ..recorded(b"a\0b") };
        assert_eq!(xml_payload(&nul), None);
        assert_eq!(xml_event(&nul), None);
        assert_eq!(xml_payload(&recorded(br#"{"a":"\u0000"}"#)), None);
        let not_utf8 = RecordedEvent { is_json: false, ..recorded(b"\xff") };
        assert_eq!(xml_payload(&not_utf8), None);
        assert_eq!(xml_event(&not_utf8), None);
    }

    #[test]
    fn other_payloads_are_documents_or_text() {
        let text = |data: &'static [u8]| {
            let event = RecordedEvent { is_json: false, ..recorded(data) };
            String::from_utf8(xml_payload(&event).expect("XML")).expect("utf-8")
        };
        assert_eq!(text(b"<order id='1'/>"), "<order id='1'/>", "a document as it was posted");
        assert_eq!(text(b"{\"a\":1}"), format!("{DECLARATION}<data>{{&quot;a&quot;:1}}</data>"));
        assert_eq!(text(b"<a/><b/>"), format!("{DECLARATION}<data>&lt;a/&gt;&lt;b/&gt;</data>"));
        let list =
            String::from_utf8(xml_payload(&recorded(b"[1,[2],{\"b\":null}]")).expect("XML")).expect("utf-8");
        assert_eq!(
            list,
            format!(
                "{DECLARATION}<data><data>1</data><data><data>2</data></data><data><b></b></data></data>"
            )
        );
    }
}
