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
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::time::{EMPTY_FEED_UPDATED, rfc3339};
use super::{AUTHOR, Embed, EventUrls, Feed, Link, Urls};
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
    render(|writer| write_entry(writer, event, &mut EventUrls::new(urls), Embed::Content, true, &[]))
}

fn render(write: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut writer = Writer::new(Vec::with_capacity(8192));
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
        text_element(w, "title", &feed.title)?;
        text_element(w, "id", &feed.id)?;
        let updated = feed.updated_micros.map_or_else(|| EMPTY_FEED_UPDATED.to_owned(), rfc3339);
        text_element(w, "updated", &updated)?;
        author(w)?;
        for link in &feed.links {
            w.create_element("link")
                .with_attribute(("href", link.uri.as_str()))
                .with_attribute(("rel", link.relation))
                .write_empty()?;
        }
        let mut event_urls = EventUrls::new(urls);
        for (index, entry) in feed.entries.iter().enumerate() {
            let extra = entry_links.get(index).map_or(&[][..], Vec::as_slice);
            write_entry(w, entry, &mut event_urls, embed, false, extra)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_entry(
    writer: &mut Writer<Vec<u8>>,
    read: &ReadEvent,
    urls: &mut EventUrls<'_>,
    embed: Embed,
    standalone: bool,
    extra_links: &[Link],
) -> io::Result<()> {
    let event = &read.event;
    let original = read.original();
    let url = urls.event(&event.stream, event.number);
    let mut element = writer.create_element("entry");
    if standalone {
        element = element.with_attribute(("xmlns", ATOM_NS));
    }
    element.write_inner_content(|w| {
        text_element(w, "title", &format!("{}@{}", event.number, event.stream))?;
        text_element(w, "id", &url)?;
        text_element(w, "updated", &rfc3339(original.created_micros))?;
        author(w)?;
        w.create_element("summary").with_attribute(("type", "text")).write_text_content(
            BytesText::from_escaped(quick_xml::escape::partial_escape(xml_safe(&original.event_type))),
        )?;
        for relation in ["edit", "alternate"] {
            w.create_element("link")
                .with_attribute(("href", url.as_str()))
                .with_attribute(("rel", relation))
                .write_empty()?;
        }
        for link in extra_links {
            w.create_element("link")
                .with_attribute(("href", link.uri.as_str()))
                .with_attribute(("rel", link.relation))
                .write_empty()?;
        }
        if embed >= Embed::Content {
            let data = String::from_utf8_lossy(&event.data);
            let escaped = quick_xml::escape::partial_escape(xml_safe(&data)).into_owned();
            w.create_element("content")
                .with_attribute(("type", "text"))
                .write_text_content(BytesText::from_escaped(escaped))?;
        }
        Ok(())
    })?;
    Ok(())
}

fn author(writer: &mut Writer<Vec<u8>>) -> io::Result<()> {
    writer.create_element("author").write_inner_content(|w| text_element(w, "name", AUTHOR))?;
    Ok(())
}

fn text_element(writer: &mut Writer<Vec<u8>>, name: &str, text: &str) -> io::Result<()> {
    // Only `<`, `>` and `&` need escaping in element text; escaping quotes
    // too (quick-xml's default) makes titles like `Event stream 'x'` ugly.
    let escaped = quick_xml::escape::partial_escape(xml_safe(text));
    writer.create_element(name).write_text_content(BytesText::from_escaped(escaped))?;
    Ok(())
}

/// XML 1.0 cannot carry most control characters even escaped; event data
/// posted as bytes may contain them. They are replaced with U+FFFD so that
/// the feed stays well-formed (the exact bytes remain available from the
/// event's `application/octet-stream` representation).
fn xml_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| {
        (!c.is_control() || matches!(c, '\t' | '\n' | '\r')) && !matches!(c, '\u{fffe}' | '\u{ffff}')
    };
    if text.chars().all(allowed) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.chars().map(|c| if allowed(c) { c } else { '\u{fffd}' }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced_not_emitted() {
        assert_eq!(xml_safe("a\u{0}b\u{1b}c\td"), "a\u{fffd}b\u{fffd}c\td");
        assert!(matches!(xml_safe("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
