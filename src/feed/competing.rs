//! The competing-consumers feed (`GET /subscriptions/{stream}/{group}`):
//! the messages a consumer just took, as v5 shows them. It is an ordinary
//! feed (rendered by the same Atom and JSON renderers) with its own title
//! and links, and `ack`/`nack` links on every entry.
//!
//! Links, as in v5: `ackAll` and `nackAll` (only when there are messages)
//! name every message id of the response; `previous` asks for the next
//! messages; `self` is the group. Entries are newest first, like every
//! feed; the id lists keep the order messages were handed out in.

use uuid::Uuid;

use super::{Embed, Feed, Freshness, Link, Urls};
use crate::store::ReadEvent;

/// A feed plus the extra links of each of its entries.
#[derive(Debug, Clone)]
pub struct CompetingFeed {
    pub feed: Feed,
    /// `entry_links[i]` belongs to `feed.entries[i]`.
    pub entry_links: Vec<Vec<Link>>,
}

/// Builds the feed for `messages` (id and event, in the order they were
/// handed out) of group `group` on `stream`.
pub fn competing_feed(
    urls: &Urls,
    stream: &str,
    group: &str,
    count: u64,
    embed: Embed,
    messages: Vec<(Uuid, ReadEvent)>,
) -> CompetingFeed {
    let base = urls.subscription(stream, group);
    let mut links = Vec::with_capacity(4);
    if !messages.is_empty() {
        let ids = messages.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(",");
        links.push(Link { uri: format!("{base}/ack?ids={ids}"), relation: "ackAll" });
        links.push(Link { uri: format!("{base}/nack?ids={ids}"), relation: "nackAll" });
    }
    // The level of detail asked for is kept, so following `previous`
    // returns the same kind of entries.
    let previous = match embed_name(embed) {
        Some(name) => format!("{base}/{count}?embed={name}"),
        None => format!("{base}/{count}"),
    };
    links.push(Link { uri: previous, relation: "previous" });
    links.push(Link { uri: base.clone(), relation: "self" });

    let mut entries = Vec::with_capacity(messages.len());
    let mut entry_links = Vec::with_capacity(messages.len());
    for (id, event) in messages.into_iter().rev() {
        entry_links.push(vec![
            Link { uri: format!("{base}/ack/{id}"), relation: "ack" },
            Link { uri: format!("{base}/nack/{id}"), relation: "nack" },
        ]);
        entries.push(event);
    }
    let feed = Feed {
        title: format!("Messages for '{stream}/{group}'"),
        id: base,
        updated_micros: entries.first().map(|e| e.original().created_micros),
        stream_id: None,
        head_of_stream: false,
        self_url: None,
        etag: None,
        links,
        entries,
        // Never cached: every response hands out different messages.
        freshness: Freshness::Live { version: String::new() },
        is_head: false,
    };
    CompetingFeed { feed, entry_links }
}

/// `?embed=` as it is written back into links; `None` for the default.
fn embed_name(embed: Embed) -> Option<&'static str> {
    match embed {
        Embed::None => None,
        Embed::Content => Some("content"),
        Embed::Rich => Some("rich"),
        Embed::Body => Some("body"),
        Embed::Pretty => Some("pretty"),
        Embed::TryHarder => Some("tryharder"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordedEvent;

    fn event(number: u64) -> ReadEvent {
        ReadEvent {
            event: RecordedEvent {
                stream: "Order-1".into(),
                number,
                position: number,
                id: Uuid::from_u128(u128::from(number) + 1),
                event_type: "Placed".into(),
                created_micros: i64::try_from(number).unwrap_or(0),
                is_json: true,
                metadata_is_json: false,
                data: bytes::Bytes::from_static(br#"{"a":1}"#),
                metadata: bytes::Bytes::new(),
            },
            link: None,
        }
    }

    #[test]
    fn links_and_order_are_v5s() {
        let urls = Urls::new("http://h".into());
        let messages = vec![(Uuid::from_u128(1), event(0)), (Uuid::from_u128(2), event(1))];
        let competing = competing_feed(&urls, "Order-1", "g", 2, Embed::Body, messages);
        let feed = &competing.feed;
        assert_eq!(feed.title, "Messages for 'Order-1/g'");
        let relations: Vec<_> = feed.links.iter().map(|l| (l.relation, l.uri.as_str())).collect();
        let ids = "00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000000002";
        assert_eq!(
            relations,
            [
                ("ackAll", format!("http://h/subscriptions/Order-1/g/ack?ids={ids}").as_str()),
                ("nackAll", format!("http://h/subscriptions/Order-1/g/nack?ids={ids}").as_str()),
                ("previous", "http://h/subscriptions/Order-1/g/2?embed=body"),
                ("self", "http://h/subscriptions/Order-1/g"),
            ]
        );
        assert_eq!(feed.entries[0].event.number, 1, "newest first");
        assert!(competing.entry_links[0][0].uri.ends_with("/ack/00000000-0000-0000-0000-000000000002"));
        assert_eq!(competing.entry_links[1][1].relation, "nack");

        let json = String::from_utf8(super::super::json::render_feed_with_entry_links(
            feed,
            &urls,
            Embed::None,
            &competing.entry_links,
        ))
        .expect("utf-8");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        let entry_relations: Vec<_> = value["entries"][0]["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| l["relation"].clone())
            .collect();
        assert_eq!(entry_relations, ["edit", "alternate", "ack", "nack"]);
        let atom = String::from_utf8(super::super::atom::render_feed_with_entry_links(
            feed,
            &urls,
            Embed::None,
            &competing.entry_links,
        ))
        .expect("utf-8");
        assert!(atom.contains(r#"rel="ackAll""#) && atom.contains(r#"rel="nack""#), "{atom}");
    }

    #[test]
    fn an_empty_response_has_no_ack_links() {
        let urls = Urls::new("http://h".into());
        let competing = competing_feed(&urls, "s", "g", 1, Embed::None, Vec::new());
        let relations: Vec<_> = competing.feed.links.iter().map(|l| l.relation).collect();
        assert_eq!(relations, ["previous", "self"]);
        assert_eq!(competing.feed.links[0].uri, "http://h/subscriptions/s/g/1");
    }
}
