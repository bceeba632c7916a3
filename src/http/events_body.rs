//! Reading append bodies (within a size limit) and parsing them into
//! proposed events: the events array as JSON or XML, and the single-event
//! bodies (JSON, XML, raw bytes) whose id and type come from headers.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::HttpError;
use super::negotiate::{APPLICATION_XML, EVENTS_JSON, EVENTS_XML, JSON, OCTET_STREAM, TEXT_XML};
use crate::json::{self, Rejected};
use crate::store::ProposedEvent;
use crate::xml::{self, NotWellFormed};
use xml_events::Refused;

mod xml_events;

/// The longest event type accepted, in bytes. Event types name `$et-`
/// streams, so they must fit comfortably within the stream-name limit.
pub const MAX_EVENT_TYPE_BYTES: usize = 512;

/// The Content-Types an append accepts.
pub const APPEND_TYPES: &[&str] = &[EVENTS_JSON, EVENTS_XML, JSON, TEXT_XML, APPLICATION_XML, OCTET_STREAM];

/// What kind of body a Content-Type announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// An array of events, each with its own id and type.
    Events(EventsFormat),
    /// One event's data; id and type from headers or the URL.
    Single(SingleFormat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFormat {
    Json,
    Xml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleFormat {
    Json,
    Xml,
    Bytes,
}

impl BodyKind {
    /// Classifies a media type; `None` means 415.
    pub fn of(media_type: &str) -> Option<Self> {
        Some(match media_type {
            EVENTS_JSON => Self::Events(EventsFormat::Json),
            EVENTS_XML => Self::Events(EventsFormat::Xml),
            JSON => Self::Single(SingleFormat::Json),
            TEXT_XML | APPLICATION_XML => Self::Single(SingleFormat::Xml),
            OCTET_STREAM => Self::Single(SingleFormat::Bytes),
            _ => return None,
        })
    }
}

/// Reads a request body of at most `limit` bytes (decoded: see
/// `encoding`, which also fails a body whose encoded bytes are too many).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, HttpError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if exceeds_a_limit(&*error) => Err(HttpError::payload_too_large(format!(
            "The request body is larger than {limit} bytes: --max-request-bytes sets the limit, \
                 and --max-event-bytes that of a body holding one event."
        ))),
        Err(error) => {
            Err(HttpError::bad_request("Could not read the request body.").with_detail(error.to_string()))
        }
    }
}

/// Whether a body failed for its length, here or while it was decoded. A
/// decoder reports it as an `io::Error` wrapping the limit's error, which
/// `source()` skips (it returns the wrapped error's own source), so the
/// wrapped error is looked at by `get_ref`.
fn exceeds_a_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<LengthLimitError>() {
            return true;
        }
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io_error) => io_error.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

/// Parses an events array.
pub fn parse_events(format: EventsFormat, body: &[u8]) -> Result<Vec<ProposedEvent>, HttpError> {
    let drafts = match format {
        EventsFormat::Json => json_drafts(body)?,
        EventsFormat::Xml => xml_drafts(body)?,
    };
    if drafts.is_empty() {
        return Err(HttpError::bad_request("Write request body invalid.")
            .with_detail("The events array is empty: send at least one event."));
    }
    drafts.into_iter().map(Draft::into_event).collect()
}

/// Builds the one event of a single-body append.
pub fn single_event(
    format: SingleFormat,
    id: Uuid,
    event_type: &str,
    body: Bytes,
) -> Result<ProposedEvent, HttpError> {
    validate_event_type(event_type)?;
    let is_json = match format {
        SingleFormat::Json => {
            json::check(&body).map_err(|rejected| invalid_json("The body is not valid JSON", rejected))?;
            true
        }
        SingleFormat::Xml => {
            xml::check_document(utf8(&body)?).map_err(not_well_formed)?;
            false
        }
        SingleFormat::Bytes => false,
    };
    Ok(ProposedEvent {
        id,
        event_type: event_type.to_owned(),
        is_json,
        data: body,
        metadata_is_json: false,
        metadata: Bytes::new(),
    })
}

/// Checks an event type from a header or a body.
pub fn validate_event_type(event_type: &str) -> Result<(), HttpError> {
    if event_type.is_empty() {
        return Err(HttpError::bad_request("Empty eventType provided."));
    }
    if event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(HttpError::bad_request("Event type too long.")
            .with_detail(format!("An event type may be at most {MAX_EVENT_TYPE_BYTES} bytes.")));
    }
    if event_type.chars().any(char::is_control) {
        return Err(HttpError::bad_request("Event type contains control characters."));
    }
    Ok(())
}

/// A payload as the body gave it, before the JSON-or-bytes decision.
enum Payload {
    Absent,
    /// A JSON value that is not a string: stored as JSON text.
    Json(String),
    /// Text (a JSON string, or XML text content): JSON if it parses as an
    /// object or array, else UTF-8 bytes.
    Text(String),
    /// Inner XML markup: stored as bytes.
    Markup(Vec<u8>),
}

impl Payload {
    /// (bytes, is_json)
    fn into_stored(self) -> Result<(Bytes, bool), HttpError> {
        Ok(match self {
            Self::Absent => (Bytes::new(), false),
            Self::Json(text) => (Bytes::from(text), true),
            Self::Text(text) => {
                let is_json = is_json_document(&text)?;
                (Bytes::from(text), is_json)
            }
            Self::Markup(bytes) => (Bytes::from(bytes), false),
        })
    }
}

/// Whether text is a JSON object or array (the rule v5 applies to string
/// payloads), to be stored as JSON. One with a key given twice is refused
/// rather than stored as text: it was meant as JSON, and its readers
/// would disagree on what it says.
fn is_json_document(text: &str) -> Result<bool, HttpError> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Ok(false);
    }
    match json::check(text.as_bytes()) {
        Ok(()) => Ok(true),
        Err(Rejected::Malformed(_)) => Ok(false),
        Err(duplicate) => Err(invalid_json("A payload holds a JSON document", duplicate)),
    }
}

/// `400 Write request body invalid.`, saying what was wrong with the JSON.
fn invalid_json(context: &str, rejected: Rejected) -> HttpError {
    HttpError::bad_request("Write request body invalid.").with_detail(format!("{context}: {rejected}"))
}

struct Draft {
    id: Option<String>,
    event_type: Option<String>,
    data: Payload,
    metadata: Payload,
}

impl Draft {
    fn new() -> Self {
        Self { id: None, event_type: None, data: Payload::Absent, metadata: Payload::Absent }
    }

    fn into_event(self) -> Result<ProposedEvent, HttpError> {
        let id = self.id.map(|id| id.trim().to_owned()).unwrap_or_default();
        if id.is_empty() {
            return Err(HttpError::bad_request("Empty eventId provided."));
        }
        let id = Uuid::parse_str(&id).map_err(|_| {
            HttpError::bad_request("Invalid eventId provided.").with_detail(format!("'{id}' is not a UUID."))
        })?;
        let event_type = self.event_type.unwrap_or_default();
        validate_event_type(&event_type)?;
        let (data, is_json) = self.data.into_stored()?;
        let (metadata, metadata_is_json) = self.metadata.into_stored()?;
        Ok(ProposedEvent { id, event_type, is_json, data, metadata_is_json, metadata })
    }
}

/// One element of the JSON events array. Property names are matched in
/// camelCase and PascalCase, as v5's (case-insensitive) parser accepted both.
#[derive(Deserialize)]
struct JsonEvent<'a> {
    #[serde(rename = "eventId", alias = "EventId", alias = "eventID")]
    event_id: Option<String>,
    #[serde(rename = "eventType", alias = "EventType")]
    event_type: Option<String>,
    #[serde(borrow, alias = "Data")]
    data: Option<&'a RawValue>,
    #[serde(borrow, alias = "Metadata", alias = "metaData")]
    metadata: Option<&'a RawValue>,
}

fn json_drafts(body: &[u8]) -> Result<Vec<Draft>, HttpError> {
    // The whole array first: a key given twice anywhere in it (an event's
    // or its data's) is refused, naming the key.
    let expected = "Expected a JSON array of events";
    json::check(body).map_err(|rejected| invalid_json(expected, rejected))?;
    let events: Vec<JsonEvent<'_>> =
        serde_json::from_slice(body).map_err(|error| invalid_json(expected, Rejected::Malformed(error)))?;
    events
        .into_iter()
        .map(|event| {
            Ok(Draft {
                id: event.event_id,
                event_type: event.event_type,
                data: json_payload(event.data)?,
                metadata: json_payload(event.metadata)?,
            })
        })
        .collect()
}

fn json_payload(raw: Option<&RawValue>) -> Result<Payload, HttpError> {
    let Some(raw) = raw else { return Ok(Payload::Absent) };
    let text = raw.get();
    if text == "null" {
        return Ok(Payload::Absent);
    }
    if text.starts_with('"') {
        let decoded: String = serde_json::from_str(text).map_err(|error| {
            HttpError::bad_request("Write request body invalid.").with_detail(error.to_string())
        })?;
        return Ok(Payload::Text(decoded));
    }
    Ok(Payload::Json(text.to_owned()))
}

/// Parses an events document (see `xml_events`).
fn xml_drafts(body: &[u8]) -> Result<Vec<Draft>, HttpError> {
    xml_events::drafts(utf8(body)?).map_err(|refused| match refused {
        Refused::NotWellFormed(problem) => not_well_formed(problem),
        Refused::Format(message) => {
            HttpError::bad_request("Write request body invalid.").with_detail(message)
        }
    })
}

/// An XML body as text: eventfeed takes XML in UTF-8 only (see
/// [`xml::walk`], which also refuses a declaration naming another).
fn utf8(body: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(body).map_err(|error| {
        HttpError::bad_request("Write request body invalid.")
            .with_detail(format!("The body is not UTF-8, the one encoding of XML taken: {error}."))
    })
}

/// `400 Write request body invalid.`, saying why the XML is not XML.
fn not_well_formed(problem: NotWellFormed) -> HttpError {
    HttpError::bad_request("Write request body invalid.")
        .with_detail(format!("The body is not well-formed XML: {problem}."))
}

fn payload_text(payload: Payload) -> String {
    match payload {
        Payload::Absent => String::new(),
        Payload::Json(text) | Payload::Text(text) => text,
        Payload::Markup(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "fbf4a1a1-b4a3-4dfe-a01f-ec52c34e16e4";

    #[test]
    fn json_payload_rules() {
        let body = format!(
            r#"[{{"eventId":"{ID}","eventType":"t","data":{{"a":1}},"metadata":"{{\"m\":2}}"}},
               {{"EventId":"{}","EventType":"u","Data":"plain text"}},
               {{"eventId":"{}","eventType":"v","data":42}}]"#,
            Uuid::new_v4(),
            Uuid::new_v4()
        );
        let events = parse_events(EventsFormat::Json, body.as_bytes()).expect("valid");
        assert_eq!(&events[0].data[..], br#"{"a":1}"#);
        assert!(events[0].is_json);
        assert_eq!(&events[0].metadata[..], br#"{"m":2}"#);
        assert!(events[0].metadata_is_json);
        assert_eq!(&events[1].data[..], b"plain text");
        assert!(!events[1].is_json);
        assert!(events[1].metadata.is_empty());
        assert_eq!(&events[2].data[..], b"42");
        assert!(events[2].is_json);
    }

    #[test]
    fn json_errors_are_specific() {
        let reason =
            |body: &str| parse_events(EventsFormat::Json, body.as_bytes()).expect_err("invalid").reason;
        assert_eq!(reason(r#"[{"eventType":"t","data":{}}]"#), "Empty eventId provided.");
        assert_eq!(reason(&format!(r#"[{{"eventId":"{ID}","data":{{}}}}]"#)), "Empty eventType provided.");
        assert_eq!(
            reason(&format!(r#"[{{"eventId":"{ID}","eventType":"","data":{{}}}}]"#)),
            "Empty eventType provided."
        );
        assert_eq!(reason(r#"[{"eventId":"nope","eventType":"t"}]"#), "Invalid eventId provided.");
        assert_eq!(reason("[]"), "Write request body invalid.");
        assert_eq!(reason("{"), "Write request body invalid.");
        assert_eq!(reason(r#"{"eventId":"x"}"#), "Write request body invalid.");
    }

    #[test]
    fn xml_events() {
        let body = format!(
            "<Events><Event><EventId>{ID}</EventId><EventType>t</EventType>\
             <Data><Order><Id>1</Id></Order></Data><Metadata>a &amp; b</Metadata></Event>\
             <event><eventId>{}</eventId><eventType>u</eventType><data>{{\"x\":1}}</data></event></Events>",
            Uuid::new_v4()
        );
        let events = parse_events(EventsFormat::Xml, body.as_bytes()).expect("valid");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.to_string(), ID);
        assert_eq!(&events[0].data[..], b"<Order><Id>1</Id></Order>");
        assert!(!events[0].is_json);
        assert_eq!(&events[0].metadata[..], b"a & b");
        assert_eq!(&events[1].data[..], br#"{"x":1}"#);
        assert!(events[1].is_json);
        assert!(parse_events(EventsFormat::Xml, b"<Events><Event><EventId>").is_err());
        assert!(parse_events(EventsFormat::Xml, b"<Events/>").is_err());
    }

    #[test]
    fn single_bodies() {
        let id = Uuid::new_v4();
        let event =
            single_event(SingleFormat::Json, id, "t", Bytes::from_static(b"{\"a\":1}")).expect("valid");
        assert!(event.is_json);
        assert!(single_event(SingleFormat::Json, id, "t", Bytes::from_static(b"{oops")).is_err());
        let event =
            single_event(SingleFormat::Bytes, id, "t", Bytes::from_static(b"\x00\x01")).expect("valid");
        assert!(!event.is_json);
        assert!(single_event(SingleFormat::Xml, id, "t", Bytes::from_static(b"<a x='1'>&amp;</a>")).is_ok());
        for broken in [&b"<a/>junk"[..], b"<a>\0</a>", b"<a>&nbsp;</a>", b"<a>", b"\xff", b"plain text"] {
            let refused = single_event(SingleFormat::Xml, id, "t", Bytes::from_static(broken));
            assert!(refused.is_err(), "{broken:?}");
        }
        assert!(single_event(SingleFormat::Xml, id, "", Bytes::new()).is_err());
        assert!(single_event(SingleFormat::Xml, id, "a\nb", Bytes::new()).is_err());
    }
}
