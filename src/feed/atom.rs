//! The Atom XML feed (RFC 4287), written with quick-xml straight into a
//! buffer.
//!
//! Every feed and entry carries the elements RFC 4287 requires (`id`,
//! `title`, `updated`, `author`) and exactly one `rel="self"` link per feed.
//!
//! Embedded content (`?embed=content`, single-event entries) is the event's
//! data as `type="text"`: the one content model every feed reader shows,
//! so a reader following a stream displays each event's payload. (v5 used a
//! JSON media type, which RFC 4287 would require to be Base64; inline XML
//! content is valid but many readers reject it.) The entry's title, id and
//! summary already carry the number, stream and type; clients that need
//! the full event use the JSON representations.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, Event};

use super::time::{EMPTY_FEED_UPDATED, Timestamps};
use super::{Embed, Feed, Link, PerStream, Urls, swar};
use crate::store::ReadEvent;

const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// Renders a feed page.
pub fn render_feed(feed: &Feed, urls: &Urls, embed: Embed) -> Vec<u8> {
    render(|writer| write_feed(writer, feed, urls, embed, &[]))
}

/// Renders a feed whose entries carry extra links (see
/// [`super::json::render_feed_with_entry_links`]).
pub fn render_feed_with_entry_links(
    feed: &Feed,
    urls: &Urls,
    embed: Embed,
    entry_links: &[Vec<Link>],
) -> Vec<u8> {
    render(|writer| write_feed(writer, feed, urls, embed, entry_links))
}

/// Renders one event as a standalone Atom entry document with content.
pub fn render_entry(event: &ReadEvent, urls: &Urls) -> Vec<u8> {
    render(|writer| {
        let (out, mut times) = (writer.get_mut(), Timestamps::default());
        write_entry(out, event, &mut EntryStreams::new(urls), &mut times, Embed::Content, true, &[]);
        Ok(())
    })
}

fn render(write: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    // A 20-entry page is about 8 KiB: one allocation, no copy on growth.
    let mut writer = Writer::new(Vec::with_capacity(16 * 1024));
    // Writing into a Vec cannot fail; a failure here would be a bug in the
    // writer, and an empty body is then more honest than half a document.
    let written = writer
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))
        .and_then(|()| write(&mut writer));
    match written {
        Ok(()) => writer.into_inner(),
        Err(_) => Vec::new(),
    }
}

fn write_feed(
    writer: &mut Writer<Vec<u8>>,
    feed: &Feed,
    urls: &Urls,
    embed: Embed,
    entry_links: &[Vec<Link>],
) -> io::Result<()> {
    writer.create_element("feed").with_attribute(("xmlns", ATOM_NS)).write_inner_content(|w| {
        let out = w.get_mut();
        let mut times = Timestamps::default();
        text_element(out, "title", &feed.title);
        text_element(out, "id", &feed.id);
        out.extend_from_slice(b"<updated>");
        match feed.updated_micros {
            Some(micros) => out.extend_from_slice(times.format(micros).as_bytes()),
            None => out.extend_from_slice(EMPTY_FEED_UPDATED.as_bytes()),
        }
        out.extend_from_slice(b"</updated>");
        out.extend_from_slice(AUTHOR_ELEMENT);
        for link in &feed.links {
            link_element(out, &link.uri, link.relation);
        }
        let mut streams = EntryStreams::new(urls);
        for (index, entry) in feed.entries.iter().enumerate() {
            let extra = entry_links.get(index).map_or(&[][..], Vec::as_slice);
            write_entry(out, entry, &mut streams, &mut times, embed, false, extra);
        }
        Ok(())
    })?;
    Ok(())
}

/// `<author><name>EventStore</name></author>`, the same in every feed and
/// entry.
const AUTHOR_ELEMENT: &[u8] = b"<author><name>EventStore</name></author>";

/// Writes one entry. The markup around the values is fixed, so it is
/// written as bytes, and each value is escaped in the same single pass that
/// makes it XML-safe: entries are most of a page, and rendering them through
/// an element-and-attribute API cost a fifth of a page read (measured).
fn write_entry(
    out: &mut Vec<u8>,
    read: &ReadEvent,
    streams: &mut EntryStreams<'_>,
    times: &mut Timestamps,
    embed: Embed,
    standalone: bool,
    extra_links: &[Link],
) {
    let event = &read.event;
    let original = read.original();
    let stream = streams.escaped(&event.stream);
    let mut digits = [0; 20];
    let number = super::decimal(event.number, &mut digits).as_bytes();
    if standalone {
        out.extend_from_slice(b"<entry xmlns=\"");
        out.extend_from_slice(ATOM_NS.as_bytes());
        out.extend_from_slice(b"\"><title>");
    } else {
        out.extend_from_slice(b"<entry><title>");
    }
    out.extend_from_slice(number);
    out.push(b'@');
    out.extend_from_slice(&stream.name_text);
    out.extend_from_slice(b"</title><id>");
    out.extend_from_slice(&stream.url_text);
    out.extend_from_slice(number);
    out.extend_from_slice(b"</id><updated>");
    out.extend_from_slice(times.format(original.created_micros).as_bytes());
    out.extend_from_slice(b"</updated>");
    out.extend_from_slice(AUTHOR_ELEMENT);
    out.extend_from_slice(b"<summary type=\"text\">");
    escape_into(out, &original.event_type, Quotes::Kept);
    out.extend_from_slice(b"</summary>");
    for relation in ["edit", "alternate"] {
        link_with(out, relation, |out| {
            out.extend_from_slice(&stream.url_attribute);
            out.extend_from_slice(number);
        });
    }
    for link in extra_links {
        link_element(out, &link.uri, link.relation);
    }
    if embed >= Embed::Content {
        out.extend_from_slice(b"<content type=\"text\">");
        escape_into(out, &String::from_utf8_lossy(&event.data), Quotes::Kept);
        out.extend_from_slice(b"</content>");
    }
    out.extend_from_slice(b"</entry>");
}

/// The streams of a page's entries, escaped as the entries need them, once
/// per stream ([`PerStream`]): building and escaping the URL for every
/// entry cost 0.4 µs of the 20 µs of CPU that a 20-entry page read takes
/// (measured).
struct EntryStreams<'a> {
    urls: &'a Urls,
    escaped: PerStream<EscapedStream>,
}

impl<'a> EntryStreams<'a> {
    fn new(urls: &'a Urls) -> Self {
        Self { urls, escaped: PerStream::default() }
    }

    fn escaped(&mut self, stream: &std::sync::Arc<str>) -> &EscapedStream {
        self.escaped.get(stream, |stream| EscapedStream::new(self.urls, stream))
    }
}

/// A stream's name and entry-URL prefix, escaped.
struct EscapedStream {
    /// The name as element text.
    name_text: Vec<u8>,
    /// `{stream URL}/` as element text and as an attribute value: an
    /// entry's URL is this and its number.
    url_text: Vec<u8>,
    url_attribute: Vec<u8>,
}

impl EscapedStream {
    fn new(urls: &Urls, stream: &str) -> Self {
        let escaped = |text: &str, quotes: Quotes| {
            let mut out = Vec::with_capacity(text.len() + 1);
            escape_into(&mut out, text, quotes);
            out
        };
        let url = urls.stream(stream) + "/";
        Self {
            name_text: escaped(stream, Quotes::Kept),
            url_text: escaped(&url, Quotes::Kept),
            url_attribute: escaped(&url, Quotes::Escaped),
        }
    }
}

fn text_element(out: &mut Vec<u8>, name: &str, text: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
    escape_into(out, text, Quotes::Kept);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

fn link_element(out: &mut Vec<u8>, href: &str, relation: &'static str) {
    link_with(out, relation, |out| escape_into(out, href, Quotes::Escaped));
}

/// A link whose `href` value `write_href` writes, escaped. Relations are
/// this crate's own words (`edit`, `next`, `ack`, …), which need no
/// escaping.
fn link_with(out: &mut Vec<u8>, relation: &'static str, write_href: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"<link href=\"");
    write_href(out);
    out.extend_from_slice(b"\" rel=\"");
    out.extend_from_slice(relation.as_bytes());
    out.extend_from_slice(b"\"/>");
}

/// Whether `"` is escaped (attribute values) or kept (element text, where
/// `Event stream 'x'` and JSON payloads read better unescaped).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quotes {
    Kept,
    Escaped,
}

const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// Appends `text` escaped for XML in one pass: `&`, `<`, `>` (and `"` in
/// attributes) as entities, and the characters XML 1.0 cannot carry even
/// escaped — C0 controls other than tab, newline and return, DEL, C1
/// controls, U+FFFE and U+FFFF — as U+FFFD. Event data posted as bytes may
/// contain them; the exact bytes remain available from the event's
/// `application/octet-stream` representation.
fn escape_into(out: &mut Vec<u8>, text: &str, quotes: Quotes) {
    swar::escape_into(out, text, may_need_escaping, |bytes, index| {
        let next = |offset: usize| bytes.get(index + offset).copied();
        let escaped: (&'static [u8], usize) = match next(0)? {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'"' if quotes == Quotes::Escaped => (b"&quot;", 1),
            b'\t' | b'\n' | b'\r' => return None,
            0x00..=0x1F | 0x7F => (REPLACEMENT, 1),
            // C1 controls: U+0080..=U+009F, encoded C2 80..=C2 9F.
            0xC2 if next(1).is_some_and(|byte| (0x80..=0x9F).contains(&byte)) => (REPLACEMENT, 2),
            // U+FFFE and U+FFFF: EF BF BE and EF BF BF.
            0xEF if next(1) == Some(0xBF) && next(2).is_some_and(|byte| byte == 0xBE || byte == 0xBF) => {
                (REPLACEMENT, 3)
            }
            _ => return None,
        };
        Some(escaped)
    });
}

/// Flags the bytes of a word that may need attention from
/// [`escape_into`] (see [`swar::matching`]): bytes below 0x20, DEL, every
/// byte of a non-ASCII character, and `& < > "`. A flagged byte that needs
/// nothing costs only a look; none that needs something goes unflagged.
fn may_need_escaping(chunk: u64) -> u64 {
    use swar::{below, matching, non_ascii};
    non_ascii(chunk)
        | below(chunk, 0x20)
        | matching(chunk, b'&')
        | matching(chunk, b'<')
        | matching(chunk, b'>')
        | matching(chunk, b'"')
        | matching(chunk, 0x7F)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time definition `escape_into` must agree with.
    fn reference(text: &str, quotes: Quotes) -> String {
        text.chars()
            .map(|c| match c {
                '&' => "&amp;".to_owned(),
                '<' => "&lt;".to_owned(),
                '>' => "&gt;".to_owned(),
                '"' if quotes == Quotes::Escaped => "&quot;".to_owned(),
                '\t' | '\n' | '\r' => c.to_string(),
                '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}' => "\u{fffd}".to_owned(),
                _ => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_fast_path_agrees_with_the_definition_at_every_offset() {
        let alphabet = [
            'a', ' ', '&', '<', '>', '"', '\'', '\u{0}', '\u{1f}', '\t', '\u{7f}', '\u{85}', 'é', '\u{fffe}',
            '\u{ffff}', '\u{fffd}', '😀', '~', '{',
        ];
        for text in swar::mostly_plain_texts(&alphabet) {
            for quotes in [Quotes::Kept, Quotes::Escaped] {
                assert_eq!(escaped(&text, quotes), reference(&text, quotes), "{text:?}");
            }
        }
    }

    fn escaped(text: &str, quotes: Quotes) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, text, quotes);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn control_characters_are_replaced_not_emitted() {
        assert_eq!(escaped("a\u{0}b\u{1b}c\td\r\n", Quotes::Kept), "a\u{fffd}b\u{fffd}c\td\r\n");
        assert_eq!(escaped("x\u{7f}\u{85}\u{9f}\u{a0}é", Quotes::Kept), "x\u{fffd}\u{fffd}\u{fffd}\u{a0}é");
        assert_eq!(
            escaped("\u{fffe}\u{ffff}\u{fffd}\u{ffef}", Quotes::Kept),
            "\u{fffd}\u{fffd}\u{fffd}\u{ffef}"
        );
    }

    #[test]
    fn the_author_element_names_the_author() {
        let expected = format!("<author><name>{}</name></author>", super::super::AUTHOR);
        assert_eq!(AUTHOR_ELEMENT, expected.as_bytes());
    }

    #[test]
    fn markup_is_escaped_and_quotes_only_in_attributes() {
        assert_eq!(escaped(r#"a<b>&"c"'"#, Quotes::Kept), r#"a&lt;b&gt;&amp;"c"'"#);
        assert_eq!(escaped(r#"a<b>&"c"'"#, Quotes::Escaped), "a&lt;b&gt;&amp;&quot;c&quot;'");
        assert_eq!(escaped("", Quotes::Kept), "");
    }

    #[test]
    fn an_entry_url_is_escaped_for_text_and_for_attributes() {
        let event = ReadEvent { event: super::super::test_event("a&b", 7), link: None };
        // A base from forwarded headers may hold anything.
        for (base, text, attribute) in [
            ("http://h<1>", "http://h&lt;1&gt;", "http://h&lt;1&gt;"),
            (r#"http://h"1""#, r#"http://h"1""#, "http://h&quot;1&quot;"),
        ] {
            let rendered = String::from_utf8(render_entry(&event, &Urls::new(base.into()))).unwrap();
            let url = |escaped: &str| format!("{escaped}/streams/a%26b/7");
            assert!(rendered.contains(&format!("<id>{}</id>", url(text))), "{rendered}");
            for relation in ["edit", "alternate"] {
                let link = format!(r#"<link href="{}" rel="{relation}"/>"#, url(attribute));
                assert!(rendered.contains(&link), "{rendered}");
            }
        }
    }
}
