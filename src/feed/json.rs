//! The JSON feed (`application/vnd.eventstore.atom+json`, also served as
//! `application/json`): v5's field names and order, camelCase, absent
//! fields omitted.
//!
//! Written by hand straight into a buffer, laid out exactly as serde_json's
//! pretty printer lays it out (two-space indent, `"name": value`), which is
//! what v5 served and what the snapshots pin. A page is a fixed shape of a
//! few hundred small fields; going through `Serialize` for each (per-field
//! dispatch, byte-at-a-time string escaping) was a fifth of a JSON page
//! read, and written here a page is served about 25% faster (measured,
//! 20-entry pages with `embed=body`).

use uuid::Uuid;

use super::event::{body_text, embedded};
use super::time::{EMPTY_FEED_UPDATED, Timestamps};
use super::{AUTHOR, Embed, EventUrls, Feed, Link, PerStream, Urls, swar};
use crate::store::metadata::described_stream;
use crate::store::{ReadEvent, RecordedEvent};

/// Renders a feed page.
pub fn render_feed(feed: &Feed, urls: &Urls, embed: Embed) -> Vec<u8> {
    render_feed_with_entry_links(feed, urls, embed, &[])
}

/// Renders a feed whose entries carry extra links after their own:
/// `entry_links[i]` belongs to `feed.entries[i]` (competing consumers' `ack`
/// and `nack`). Missing items mean no extra links.
pub fn render_feed_with_entry_links(
    feed: &Feed,
    urls: &Urls,
    embed: Embed,
    entry_links: &[Vec<Link>],
) -> Vec<u8> {
    render_page(feed, urls, embed, entry_links, embed != Embed::Content)
}

/// Renders a page, its entries by [`PageEntries`] when `spelled_out`, else
/// by [`write_entry`] (the reference the tests hold the other to, and how
/// `embed=content` entries are written).
fn render_page(
    feed: &Feed,
    urls: &Urls,
    embed: Embed,
    entry_links: &[Vec<Link>],
    spelled_out: bool,
) -> Vec<u8> {
    // Room for the whole page up front: growing the buffer by doubling
    // copied a 20 KiB page three times (8% of a page read's CPU, profiled).
    let payload: usize = match embed >= Embed::Body {
        true => feed.entries.iter().map(|e| e.event.data.len() + e.event.metadata.len()).sum(),
        false => 0,
    };
    let mut json = JsonWriter::pretty(1024 + feed.entries.len() * 1024 + payload + payload / 4);
    json.open(b'{');
    json.string_field("title", &feed.title);
    json.string_field("id", &feed.id);
    json.key("updated");
    match feed.updated_micros {
        Some(micros) => json.time(micros),
        None => json.string(EMPTY_FEED_UPDATED),
    }
    if let Some(stream) = &feed.stream_id {
        json.string_field("streamId", stream);
    }
    json.author();
    json.bool_field("headOfStream", feed.head_of_stream);
    if let Some(url) = &feed.self_url {
        json.string_field("selfUrl", url);
    }
    if let Some(etag) = &feed.etag {
        json.string_field("eTag", etag);
    }
    json.key("links");
    json.open(b'[');
    for link in &feed.links {
        json.link(&link.uri, link.relation);
    }
    json.close(b']');
    json.key("entries");
    json.open(b'[');
    let mut page_entries = PageEntries::new(urls, embed);
    let mut event_urls = EventUrls::new(urls);
    for (index, entry) in feed.entries.iter().enumerate() {
        let extra = entry_links.get(index).map_or(&[][..], Vec::as_slice);
        if spelled_out {
            // `next`'s separator; the indent is part of the entry's text.
            if json.has_members {
                json.out.push(b',');
            }
            page_entries.write(&mut json.out, &mut json.times, entry, extra);
            json.has_members = true;
        } else {
            json.next();
            write_entry(&mut json, entry, &mut event_urls, embed, extra);
        }
    }
    json.close(b']');
    json.close(b'}');
    json.out
}

/// The entries of a feed page, written with their layout spelled out: the
/// text between two values is one literal, copied in one go.
///
/// A page is the hot path of every read, and written member by member (a
/// separator, an indent, the quoted name, the value) its entries took two
/// thirds of the time to render a 20-entry page; spelled out, a page renders
/// in 2.3 µs instead of 5.8 (`embed=body`, measured in a loop; `benches/render.rs`
/// times the whole page), and the
/// server reads 49,000 such pages a second instead of 36,000 (one core).
/// The price is a second statement of the entry's layout: [`write_entry`]
/// is the reference, still used for single entries, Server-Sent Events and
/// `embed=content`, and a test holds the two byte-for-byte equal for every
/// kind of entry at every other embed level.
///
/// The literals are for an entry as an item of the page's `entries` array:
/// the entry at depth two, its members at three, those of `author` and
/// `links` at four, a link's at five (serde_json's pretty layout).
struct PageEntries<'a> {
    urls: &'a Urls,
    embed: Embed,
    /// The escaped names and URL prefixes of the page's streams.
    streams: PerStream<EscapedStream>,
}

/// A stream's name, escaped, and `{stream URL}/`, escaped: an entry's URL
/// is this and its number.
struct EscapedStream {
    name: Vec<u8>,
    url_prefix: Vec<u8>,
}

impl EscapedStream {
    fn new(urls: &Urls, stream: &str) -> Self {
        let mut name = Vec::with_capacity(stream.len());
        escape_into(&mut name, stream);
        let mut url_prefix = Vec::with_capacity(64);
        escape_into(&mut url_prefix, &urls.stream(stream));
        url_prefix.push(b'/');
        Self { name, url_prefix }
    }
}

impl<'a> PageEntries<'a> {
    fn new(urls: &'a Urls, embed: Embed) -> Self {
        Self { urls, embed, streams: PerStream::default() }
    }

    /// Writes `read` as an entry, from the indent before its `{` to its `}`.
    fn write(&mut self, out: &mut Vec<u8>, times: &mut Timestamps, read: &ReadEvent, extra_links: &[Link]) {
        debug_assert!(self.embed != Embed::Content, "content is written by write_entry");
        let event = &read.event;
        let original = read.original();
        let embed = self.embed;
        let rich = embed >= Embed::Rich;
        let urls = self.urls;
        let stream = self.streams.get(&event.stream, |stream| EscapedStream::new(urls, stream));
        let mut digits = [0; 20];
        let number = super::decimal(event.number, &mut digits).as_bytes();
        // `eventType` and `summary` are the same text unless this is a
        // resolved link (`summary` is then `$>`).
        let mut event_type = None;
        if rich {
            out.extend_from_slice(b"\n    {\n      \"eventId\": \"");
            out.extend_from_slice(event.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
            out.extend_from_slice(b"\",\n      \"eventType\": \"");
            let start = out.len();
            escape_into(out, &event.event_type);
            event_type = Some(start..out.len());
            out.extend_from_slice(b"\",\n      \"eventNumber\": ");
            out.extend_from_slice(number);
        }
        if embed >= Embed::Body {
            if let Some(data) = body_text(&event.data, event.is_json, embed) {
                out.extend_from_slice(b",\n      \"data\": \"");
                escape_into(out, &data);
                out.push(b'"');
            }
            if !event.metadata.is_empty() {
                if let Some(metadata) = body_text(&event.metadata, event.metadata_is_json, embed) {
                    out.extend_from_slice(b",\n      \"metaData\": \"");
                    escape_into(out, &metadata);
                    out.push(b'"');
                }
            }
            if let Some(link) = &read.link {
                out.extend_from_slice(b",\n      \"linkMetaData\": \"");
                escape_into(out, &String::from_utf8_lossy(&link.metadata));
                out.push(b'"');
            }
        }
        if rich {
            out.extend_from_slice(b",\n      \"streamId\": \"");
            out.extend_from_slice(&stream.name);
            out.extend_from_slice(match event.is_json {
                true => b"\",\n      \"isJson\": true",
                false => b"\",\n      \"isJson\": false",
            });
            out.extend_from_slice(match described_stream(&event.stream).is_some() {
                true => b",\n      \"isMetaData\": true",
                false => b",\n      \"isMetaData\": false",
            });
            out.extend_from_slice(b",\n      \"isLinkMetaData\": false,\n      \"positionEventNumber\": ");
            out.extend_from_slice(super::decimal(original.number, &mut [0; 20]).as_bytes());
            out.extend_from_slice(b",\n      \"positionStreamId\": \"");
            match super::same_name(&original.stream, &event.stream) {
                true => out.extend_from_slice(&stream.name),
                false => escape_into(out, &original.stream),
            }
            out.extend_from_slice(b"\",\n      \"title\": \"");
        } else {
            out.extend_from_slice(b"\n    {\n      \"title\": \"");
        }
        out.extend_from_slice(number);
        out.push(b'@');
        out.extend_from_slice(&stream.name);
        out.extend_from_slice(b"\",\n      \"id\": \"");
        let url_start = out.len();
        out.extend_from_slice(&stream.url_prefix);
        out.extend_from_slice(number);
        let url = url_start..out.len();
        out.extend_from_slice(b"\",\n      \"updated\": \"");
        out.extend_from_slice(times.format(original.created_micros).as_bytes());
        out.extend_from_slice(b"\",\n      \"author\": {\n        \"name\": \"");
        out.extend_from_slice(AUTHOR.as_bytes());
        out.extend_from_slice(b"\"\n      },\n      \"summary\": \"");
        match event_type {
            Some(escaped) if super::same_name(&original.event_type, &event.event_type) => {
                out.extend_from_within(escaped)
            }
            _ => escape_into(out, &original.event_type),
        }
        out.extend_from_slice(b"\",\n      \"links\": [\n        {\n          \"uri\": \"");
        out.extend_from_within(url.clone());
        out.extend_from_slice(
            b"\",\n          \"relation\": \"edit\"\n        },\n        {\n          \"uri\": \"",
        );
        out.extend_from_within(url);
        out.extend_from_slice(b"\",\n          \"relation\": \"alternate\"\n        }");
        for link in extra_links {
            out.extend_from_slice(b",\n        {\n          \"uri\": \"");
            escape_into(out, &link.uri);
            out.extend_from_slice(b"\",\n          \"relation\": \"");
            // Relations are this crate's literals (`ack`, `nack`).
            out.extend_from_slice(link.relation.as_bytes());
            out.extend_from_slice(b"\"\n        }");
        }
        out.extend_from_slice(b"\n      ]\n    }");
    }
}

/// Renders one event as an entry with its content (single-event reads).
pub fn render_entry(event: &ReadEvent, urls: &Urls) -> Vec<u8> {
    let mut json = JsonWriter::pretty(4096);
    write_entry(&mut json, event, &mut EventUrls::new(urls), Embed::Content, &[]);
    json.out
}

/// Renders one entry on a single line (for a Server-Sent Events `data:`
/// field, which ends at a newline).
pub fn render_entry_line(event: &ReadEvent, urls: &Urls, embed: Embed) -> String {
    let mut json = JsonWriter::new(1024, false);
    write_entry(&mut json, event, &mut EventUrls::new(urls), embed, &[]);
    // Only UTF-8 text and ASCII markup were written.
    String::from_utf8(json.out).unwrap_or_else(|_| "{}".to_owned())
}

/// Renders the event object (`application/vnd.eventstore.event+json`).
pub fn render_event_object(event: &ReadEvent) -> Vec<u8> {
    let mut json = JsonWriter::pretty(4096);
    write_event_object(&mut json, &event.event);
    json.out
}

fn write_entry(
    json: &mut JsonWriter,
    read: &ReadEvent,
    urls: &mut EventUrls<'_>,
    embed: Embed,
    extra_links: &[Link],
) {
    let event = &read.event;
    let original = read.original();
    let url = urls.event(&event.stream, event.number);
    let rich = embed >= Embed::Rich;
    json.open(b'{');
    if rich {
        json.plain_field("eventId", event.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        json.string_field("eventType", &event.event_type);
        json.number_field("eventNumber", event.number);
    }
    if embed >= Embed::Body {
        if let Some(data) = body_text(&event.data, event.is_json, embed) {
            json.string_field("data", &data);
        }
        if !event.metadata.is_empty() {
            if let Some(metadata) = body_text(&event.metadata, event.metadata_is_json, embed) {
                json.string_field("metaData", &metadata);
            }
        }
        if let Some(link) = &read.link {
            json.string_field("linkMetaData", &String::from_utf8_lossy(&link.metadata));
        }
    }
    if rich {
        json.string_field("streamId", &event.stream);
        json.bool_field("isJson", event.is_json);
        json.bool_field("isMetaData", described_stream(&event.stream).is_some());
        json.bool_field("isLinkMetaData", false);
        json.number_field("positionEventNumber", original.number);
        json.string_field("positionStreamId", &original.stream);
    }
    // `{number}@{stream}`: neither the digits nor `@` need escaping.
    json.key("title");
    json.out.push(b'"');
    json.out.extend_from_slice(super::decimal(event.number, &mut [0; 20]).as_bytes());
    json.out.push(b'@');
    escape_into(&mut json.out, &event.stream);
    json.out.push(b'"');
    json.key("id");
    let escaped_url = json.escaped_string(&url);
    json.key("updated");
    json.time(original.created_micros);
    json.author();
    // A resolved link shows "$>" here; everything else its own type.
    json.string_field("summary", &original.event_type);
    if embed == Embed::Content {
        json.key("content");
        write_event_object(json, event);
    }
    json.key("links");
    json.open(b'[');
    // The URL's second and third appearances: copies of the bytes
    // escaped for `id`.
    json.link_copied(escaped_url.clone(), "edit");
    json.link_copied(escaped_url, "alternate");
    for link in extra_links {
        json.link(&link.uri, link.relation);
    }
    json.close(b']');
    json.close(b'}');
}

/// The event object: on its own, and as the `content` of an entry.
fn write_event_object(json: &mut JsonWriter, event: &RecordedEvent) {
    json.open(b'{');
    json.string_field("eventStreamId", &event.stream);
    json.number_field("eventNumber", event.number);
    json.string_field("eventType", &event.event_type);
    json.plain_field("eventId", event.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    json.key("data");
    json.out.extend_from_slice(embedded(&event.data, event.is_json).get().as_bytes());
    json.key("metadata");
    let metadata_is_json = event.metadata_is_json && !event.metadata.is_empty();
    json.out.extend_from_slice(embedded(&event.metadata, metadata_is_json).get().as_bytes());
    json.close(b'}');
}

/// Writes JSON values into a buffer, pretty (serde_json's layout) or on one
/// line. The caller writes a well-formed document: every `open` is closed,
/// and every member of an object starts with `key`, of an array with
/// `next` (or a helper that calls it).
struct JsonWriter {
    out: Vec<u8>,
    pretty: bool,
    /// How many objects and arrays are open.
    depth: usize,
    /// Whether the innermost open object or array has a member yet.
    has_members: bool,
    times: Timestamps,
}

impl JsonWriter {
    fn new(capacity: usize, pretty: bool) -> Self {
        let out = Vec::with_capacity(capacity);
        Self { out, pretty, depth: 0, has_members: false, times: Timestamps::default() }
    }

    fn pretty(capacity: usize) -> Self {
        Self::new(capacity, true)
    }

    fn open(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.depth += 1;
        self.has_members = false;
    }

    /// Closes the innermost object or array; its parent, if any, has a
    /// member: the one just closed.
    fn close(&mut self, bracket: u8) {
        self.depth -= 1;
        if self.has_members {
            self.indent();
        }
        self.out.push(bracket);
        self.has_members = true;
    }

    /// A newline and two spaces per open level (pretty only). For the
    /// depths a feed reaches, all of `INDENT` is copied and the excess cut
    /// off: a copy of a fixed size is a few vector moves, one of the exact
    /// length a call to `memcpy` (the indents were 4% of a JSON page read).
    fn indent(&mut self) {
        const INDENT: &[u8; 33] = b"\n                                ";
        if self.pretty {
            let end = self.out.len() + 1 + 2 * self.depth;
            if end - self.out.len() <= INDENT.len() {
                self.out.extend_from_slice(INDENT);
                self.out.truncate(end);
            } else {
                self.out.push(b'\n');
                self.out.extend(std::iter::repeat_n(b' ', 2 * self.depth));
            }
        }
    }

    /// Starts the next member of the innermost object or array.
    #[inline]
    fn next(&mut self) {
        if self.has_members {
            self.out.push(b',');
        }
        self.indent();
        self.has_members = true;
    }

    /// Starts an object member. Names are this module's own literals, which
    /// need no escaping. Always inlined, so that copying a name is a copy
    /// of a known size.
    #[inline(always)]
    fn key(&mut self, name: &str) {
        self.next();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(if self.pretty { b"\": " } else { b"\":" });
    }

    #[inline]
    fn string(&mut self, text: &str) {
        self.out.push(b'"');
        escape_into(&mut self.out, text);
        self.out.push(b'"');
    }

    /// Writes a string and returns where its escaped text lies in the
    /// output, for [`Self::link_copied`].
    fn escaped_string(&mut self, text: &str) -> std::ops::Range<usize> {
        self.out.push(b'"');
        let start = self.out.len();
        escape_into(&mut self.out, text);
        let escaped = start..self.out.len();
        self.out.push(b'"');
        escaped
    }

    fn time(&mut self, micros: i64) {
        self.out.push(b'"');
        self.out.extend_from_slice(self.times.format(micros).as_bytes());
        self.out.push(b'"');
    }

    #[inline(always)]
    fn string_field(&mut self, name: &str, text: &str) {
        self.key(name);
        self.string(text);
    }

    /// A string field whose text needs no escaping (hex ids, this crate's
    /// own literals): copied as it is, not looked through.
    #[inline(always)]
    fn plain_field(&mut self, name: &str, text: &str) {
        debug_assert!(!text.bytes().any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\'), "{text:?}");
        self.key(name);
        self.out.push(b'"');
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(b'"');
    }

    #[inline(always)]
    fn number_field(&mut self, name: &str, number: u64) {
        self.key(name);
        self.out.extend_from_slice(super::decimal(number, &mut [0; 20]).as_bytes());
    }

    #[inline(always)]
    fn bool_field(&mut self, name: &str, value: bool) {
        self.key(name);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `"author": {"name": "EventStore"}`, on feeds and entries alike.
    fn author(&mut self) {
        self.key("author");
        self.open(b'{');
        self.plain_field("name", AUTHOR);
        self.close(b'}');
    }

    /// A link as an array item: `{"uri": ..., "relation": ...}`.
    fn link(&mut self, uri: &str, relation: &str) {
        self.link_with(relation, |json| json.string(uri));
    }

    /// A link whose URI is already written, escaped, at `escaped`.
    fn link_copied(&mut self, escaped: std::ops::Range<usize>, relation: &str) {
        self.link_with(relation, |json| {
            json.out.push(b'"');
            json.out.extend_from_within(escaped);
            json.out.push(b'"');
        });
    }

    /// A link whose URI value `write_uri` writes.
    fn link_with(&mut self, relation: &str, write_uri: impl FnOnce(&mut Self)) {
        self.next();
        self.open(b'{');
        self.key("uri");
        write_uri(self);
        // Relations are this crate's literals (`edit`, `ack`, ...).
        self.plain_field("relation", relation);
        self.close(b'}');
    }
}

/// Appends the contents of a JSON string literal for `text`, escaped as
/// serde_json escapes: `"` and `\` with a backslash, control characters
/// as `\b \f \n \r \t` or `\u00XX`; everything else, non-ASCII included,
/// as is.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    swar::escape_into(out, text, may_need_escaping, |bytes, index| {
        let byte = *bytes.get(index)?;
        let escaped: &'static [u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => &UNICODE_ESCAPES[usize::from(byte)],
            _ => return None,
        };
        Some((escaped, 1))
    });
}

/// `\u0000` to `\u001f`: the control characters without a short escape.
static UNICODE_ESCAPES: [[u8; 6]; 32] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0; 6]; 32];
    let mut byte = 0;
    while byte < 32 {
        table[byte] = [b'\\', b'u', b'0', b'0', HEX[byte >> 4], HEX[byte & 0xF]];
        byte += 1;
    }
    table
};

/// Flags the bytes of a word that are control characters, `"` or `\\`
/// (see [`swar::matching`]).
fn may_need_escaping(chunk: u64) -> u64 {
    swar::below(chunk, 0x20) | swar::matching(chunk, b'"') | swar::matching(chunk, b'\\')
}

#[cfg(test)]
mod tests;
