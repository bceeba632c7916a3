//! The JSON feed (`application/vnd.eventstore.atom+json`, also served as
//! `application/json`): v5's field names and order, camelCase, nulls omitted.

use std::borrow::Cow;

use serde::Serialize;

use super::event::{EventObject, body_text};
use super::time::{EMPTY_FEED_UPDATED, rfc3339};
use super::{AUTHOR, Embed, EventUrls, Feed, Link, Urls};
use crate::store::ReadEvent;
use crate::store::metadata::described_stream;

#[derive(Serialize)]
struct Author {
    name: &'static str,
}

const THE_AUTHOR: Author = Author { name: AUTHOR };

#[derive(Serialize)]
struct LinkJson<'a> {
    uri: &'a str,
    relation: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FeedJson<'a> {
    title: &'a str,
    id: &'a str,
    updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    author: Author,
    head_of_stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    self_url: Option<&'a str>,
    #[serde(rename = "eTag", skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    links: Vec<LinkJson<'a>>,
    entries: Vec<EntryJson<'a>>,
}

/// An entry. The rich fields (`embed=rich` and above) come first, as v5
/// writes them; they are plain optional fields rather than a flattened
/// struct, because `#[serde(flatten)]` sends every entry down serde's much
/// slower map path (measured on JSON pages).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Cow<'a, str>>,
    #[serde(rename = "metaData", skip_serializing_if = "Option::is_none")]
    metadata: Option<Cow<'a, str>>,
    #[serde(rename = "linkMetaData", skip_serializing_if = "Option::is_none")]
    link_metadata: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_json: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_meta_data: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_link_meta_data: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position_event_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position_stream_id: Option<&'a str>,
    title: String,
    id: String,
    updated: String,
    author: Author,
    summary: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<EventObject<'a>>,
    links: EntryLinks<'a>,
}

/// any extra ones (competing-consumer feeds add `ack` and `nack`).
struct EntryLinks<'a> {
    url: String,
    extra: &'a [Link],
}

impl Serialize for EntryLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut links = serializer.serialize_seq(Some(2 + self.extra.len()))?;
        links.serialize_element(&LinkJson { uri: &self.url, relation: "edit" })?;
        links.serialize_element(&LinkJson { uri: &self.url, relation: "alternate" })?;
        for link in self.extra {
            links.serialize_element(&LinkJson { uri: &link.uri, relation: link.relation })?;
        }
        links.end()
    }
}

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
    let body = FeedJson {
        title: &feed.title,
        id: &feed.id,
        updated: feed.updated_micros.map_or_else(|| EMPTY_FEED_UPDATED.to_owned(), rfc3339),
        stream_id: feed.stream_id.as_deref(),
        author: THE_AUTHOR,
        head_of_stream: feed.head_of_stream,
        self_url: feed.self_url.as_deref(),
        etag: feed.etag.as_deref(),
        links: feed.links.iter().map(|l| LinkJson { uri: &l.uri, relation: l.relation }).collect(),
        entries: {
            let mut event_urls = EventUrls::new(urls);
            feed.entries
                .iter()
                .enumerate()
                .map(|(index, e)| {
                    entry(e, &mut event_urls, embed, entry_links.get(index).map_or(&[][..], Vec::as_slice))
                })
                .collect()
        },
    };
    // Room for the whole page up front: growing the buffer by doubling
    // copied a 20 KiB page three times (8% of a page read's CPU, profiled).
    let payload: usize = match embed >= Embed::Body {
        true => feed.entries.iter().map(|e| e.event.data.len() + e.event.metadata.len()).sum(),
        false => 0,
    };
    to_vec_sized(&body, 1024 + feed.entries.len() * 1024 + payload + payload / 4)
}

/// Renders one event as an entry with its content (single-event reads).
pub fn render_entry(event: &ReadEvent, urls: &Urls) -> Vec<u8> {
    to_vec(&entry(event, &mut EventUrls::new(urls), Embed::Content, &[]))
}

/// Renders one entry on a single line (for a Server-Sent Events `data:`
/// field, which ends at a newline).
pub fn render_entry_line(event: &ReadEvent, urls: &Urls, embed: Embed) -> String {
    serde_json::to_string(&entry(event, &mut EventUrls::new(urls), embed, &[]))
        .unwrap_or_else(|_| "{}".to_owned())
}

/// Renders the event object (`application/vnd.eventstore.event+json`).
pub fn render_event_object(event: &ReadEvent) -> Vec<u8> {
    to_vec(&EventObject::of(&event.event))
}

fn to_vec(value: &impl Serialize) -> Vec<u8> {
    to_vec_sized(value, 4096)
}

fn to_vec_sized(value: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Serialising these types into a Vec cannot fail: every map key is a
    // string and no Serialize impl here returns an error.
    if serde_json::to_writer_pretty(&mut out, value).is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
    out
}

fn entry<'a>(
    read: &'a ReadEvent,
    urls: &mut EventUrls<'_>,
    embed: Embed,
    extra_links: &'a [Link],
) -> EntryJson<'a> {
    let event = &read.event;
    let original = read.original();
    let url = urls.event(&event.stream, event.number);
    let rich = embed >= Embed::Rich;
    let body = embed >= Embed::Body;
    EntryJson {
        event_id: rich.then(|| event.id.to_string()),
        event_type: rich.then_some(event.event_type.as_str()),
        event_number: rich.then_some(event.number),
        data: body.then(|| body_text(&event.data, event.is_json, embed)).flatten(),
        metadata: (body && !event.metadata.is_empty())
            .then(|| body_text(&event.metadata, event.metadata_is_json, embed))
            .flatten(),
        link_metadata: read
            .link
            .as_ref()
            .filter(|_| body)
            .map(|link| String::from_utf8_lossy(&link.metadata)),
        stream_id: rich.then_some(event.stream.as_str()),
        is_json: rich.then_some(event.is_json),
        is_meta_data: rich.then(|| described_stream(&event.stream).is_some()),
        is_link_meta_data: rich.then_some(false),
        position_event_number: rich.then_some(original.number),
        position_stream_id: rich.then_some(original.stream.as_str()),
        title: format!("{}@{}", event.number, event.stream),
        id: url.clone(),
        updated: rfc3339(original.created_micros),
        author: THE_AUTHOR,
        // A resolved link shows "$>" here; everything else its own type.
        summary: &original.event_type,
        content: (embed == Embed::Content).then(|| EventObject::of(event)),
        links: EntryLinks { url, extra: extra_links },
    }
}
