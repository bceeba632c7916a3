//! Content negotiation: `Accept` with q-values, and the `?format=` override.
//!
//! For each representation a resource offers (in the server's order of
//! preference), the most specific matching media range in `Accept` gives its
//! quality; the highest quality wins, then the type the client named most
//! specifically, then the server's order. So no
//! `Accept` or `*/*` yields the first offer (Atom for feeds), and a type that
//! is only offered "by name" (v5's `event`/`events` types, the description
//! document, Server-Sent Events) is chosen only when a client names it,
//! because it is offered after the types a wildcard should pick.
//!
//! Each route offers every type v5 registers for it (its codecs, per route
//! in v5's `AtomController`), so a client gets the representation and the
//! `Content-Type` it asked for wherever v5 would give them.

use axum::http::{HeaderMap, header};

use super::error::HttpError;

pub const ATOM_XML: &str = "application/atom+xml";
pub const ATOM_JSON: &str = "application/vnd.eventstore.atom+json";
pub const JSON: &str = "application/json";
pub const TEXT_XML: &str = "text/xml";
pub const APPLICATION_XML: &str = "application/xml";
pub const HTML: &str = "text/html";
pub const PLAIN_TEXT: &str = "text/plain";
pub const STREAM_DESCRIPTION: &str = "application/vnd.eventstore.streamdesc+json";
pub const EVENT_STREAM: &str = "text/event-stream";
pub const EVENT_JSON: &str = "application/vnd.eventstore.event+json";
pub const EVENT_XML: &str = "application/vnd.eventstore.event+xml";
pub const OCTET_STREAM: &str = "application/octet-stream";
pub const EVENTS_JSON: &str = "application/vnd.eventstore.events+json";
pub const EVENTS_XML: &str = "application/vnd.eventstore.events+xml";
pub const COMPETING_JSON: &str = "application/vnd.eventstore.competingatom+json";
pub const COMPETING_XML: &str = "application/vnd.eventstore.competingatom+xml";

/// What `/streams/{stream}` offers, best first: a page, and Server-Sent
/// Events (last). v5 serialises a feed with the JSON or the XML codec
/// behind each of its types, so the JSON types get the JSON feed and the
/// XML types the Atom feed, each under its own `Content-Type`.
pub const FEED_TYPES: &[&str] = &[
    ATOM_XML,
    ATOM_JSON,
    JSON,
    TEXT_XML,
    APPLICATION_XML,
    HTML,
    EVENT_JSON,
    EVENT_XML,
    EVENTS_JSON,
    EVENTS_XML,
    STREAM_DESCRIPTION,
    EVENT_STREAM,
];

/// What every other page offers (of a stream, a metadata stream or
/// `$all`): the same, without Server-Sent Events.
pub const PAGE_TYPES: &[&str] = match FEED_TYPES.split_last() {
    Some((_, pages)) => pages,
    None => &[],
};

/// What a single event offers, best first (v5 offers no `events` types
/// and no description document here).
pub const EVENT_TYPES: &[&str] =
    &[ATOM_XML, ATOM_JSON, JSON, EVENT_JSON, TEXT_XML, APPLICATION_XML, OCTET_STREAM, HTML, EVENT_XML];

/// Whether v5 writes a representation with its JSON codec (the others are
/// XML, HTML or raw bytes).
pub fn is_json(media_type: &str) -> bool {
    matches!(media_type, ATOM_JSON | JSON | EVENT_JSON | EVENTS_JSON | STREAM_DESCRIPTION | COMPETING_JSON)
}

/// What v5's codec for a representation writes for a read of one event
/// that found none: `{}` in JSON, nothing otherwise.
pub fn no_event(media_type: &str) -> &'static str {
    if is_json(media_type) { "{}" } else { "" }
}

/// One parsed media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRange {
    kind: String,
    subtype: String,
    /// Quality in thousandths, so comparisons are exact.
    quality: u16,
}

impl MediaRange {
    /// How specifically this range matches `media_type`: 3 exact, 2
    /// `type/*`, 1 `*/*`, `None` no match.
    fn specificity(&self, media_type: &str) -> Option<u8> {
        let (kind, subtype) = media_type.split_once('/')?;
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(1),
            (k, "*") if k.eq_ignore_ascii_case(kind) => Some(2),
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => Some(3),
            _ => None,
        }
    }
}

fn parse_accept(header: &str) -> Vec<MediaRange> {
    header
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let (kind, subtype) = parts.next()?.trim().split_once('/')?;
            if kind.is_empty() || subtype.is_empty() {
                return None;
            }
            let mut quality = 1000;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        quality = parse_quality(value.trim())?;
                    }
                }
            }
            Some(MediaRange {
                kind: kind.trim().to_ascii_lowercase(),
                subtype: subtype.trim().to_ascii_lowercase(),
                quality,
            })
        })
        .collect()
}

/// `0`, `1`, `0.5`, `0.125` → thousandths; anything else is malformed.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (index, digit) in fraction.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][index];
    }
    let quality = whole * 1000 + thousandths;
    (quality <= 1000).then_some(quality)
}

/// Picks the representation to send: `?format=` first, then `Accept`.
///
/// `?format=` names a type as v5 maps it (`json`, `xml`, `atom`, `atomxj`,
/// and `text`, which no read offers); `html` is eventfeed's. A name v5
/// does not know is a 400 (v5 fails with a 500).
pub fn choose(
    headers: &HeaderMap,
    format: Option<&str>,
    offered: &'static [&'static str],
) -> Result<&'static str, HttpError> {
    if let Some(format) = format {
        let wanted = match format.to_ascii_lowercase().as_str() {
            "json" => JSON,
            "xml" => TEXT_XML,
            "atom" => ATOM_XML,
            "atomxj" => ATOM_JSON,
            "html" => HTML,
            "text" => PLAIN_TEXT,
            _ => {
                return Err(HttpError::bad_request(format!(
                    "'{format}' is not a valid format. Use json, xml, atom, atomxj or html"
                )));
            }
        };
        return offered
            .iter()
            .find(|offer| **offer == wanted)
            .copied()
            .ok_or_else(|| HttpError::not_acceptable(offered));
    }
    let mut values = headers.get_all(header::ACCEPT).iter();
    if let (Some(only), None) = (values.next(), values.next())
        && let Some(offer) = only.to_str().ok().and_then(|text| exactly(text, offered))
    {
        return Ok(offer);
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    best(&accept, offered).ok_or_else(|| HttpError::not_acceptable(offered))
}

/// The offer an `Accept` of one bare type names, as most clients send it:
/// what [`best`] would pick (no other offer can match a type without a
/// wildcard), without parsing the header.
fn exactly(accept: &str, offered: &'static [&'static str]) -> Option<&'static str> {
    let accept = accept.trim();
    offered.iter().find(|offer| offer.eq_ignore_ascii_case(accept)).copied()
}

fn best(accept: &str, offered: &'static [&'static str]) -> Option<&'static str> {
    let ranges = parse_accept(accept);
    if ranges.is_empty() {
        return offered.first().copied();
    }
    // Ranked by quality, then by how specifically the client named the
    // type (so `application/json, */*` picks JSON over a wildcard match),
    // then by the server's order.
    let mut chosen: Option<(&'static str, (u16, u8))> = None;
    for offer in offered {
        let rank = ranges
            .iter()
            .filter_map(|range| range.specificity(offer).map(|s| (s, range.quality)))
            .max_by_key(|(specificity, _)| *specificity)
            .map_or((0, 0), |(specificity, quality)| (quality, specificity));
        if rank.0 > 0 && chosen.is_none_or(|(_, best)| rank > best) {
            chosen = Some((offer, rank));
        }
    }
    chosen.map(|(offer, _)| offer)
}

/// The media type of a request's `Content-Type`, lower-cased, without
/// parameters; `None` when absent.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media_type.is_empty()).then_some(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_accept_or_anything_gets_atom() {
        assert_eq!(best("", FEED_TYPES), Some(ATOM_XML));
        assert_eq!(best("*/*", FEED_TYPES), Some(ATOM_XML));
        assert_eq!(best("application/*", FEED_TYPES), Some(ATOM_XML));
    }

    #[test]
    fn real_clients() {
        // axios
        assert_eq!(best("application/json, text/plain, */*", FEED_TYPES), Some(JSON));
        // Python feedparser
        assert_eq!(
            best(
                "application/atom+xml,application/rdf+xml,application/rss+xml,application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1",
                FEED_TYPES
            ),
            Some(ATOM_XML)
        );
        // A browser
        assert_eq!(
            best("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8", FEED_TYPES),
            Some(HTML)
        );
        assert_eq!(best("application/vnd.eventstore.atom+json", FEED_TYPES), Some(ATOM_JSON));
    }

    #[test]
    fn q_values_order_and_zero_excludes() {
        assert_eq!(best("application/atom+xml;q=0.5, application/json", FEED_TYPES), Some(JSON));
        assert_eq!(best("application/json;q=0, */*;q=0.1", &[JSON, HTML]), Some(HTML));
        assert_eq!(best("image/png", FEED_TYPES), None);
        assert_eq!(best("*/*;q=0", FEED_TYPES), None);
        assert_eq!(best("text/*;q=0.3, text/html;q=0.7", FEED_TYPES), Some(HTML));
    }

    #[test]
    fn by_name_only_types_need_their_name() {
        assert_eq!(best("*/*", FEED_TYPES), Some(ATOM_XML));
        assert_eq!(best(STREAM_DESCRIPTION, FEED_TYPES), Some(STREAM_DESCRIPTION));
        assert_eq!(best("text/event-stream", FEED_TYPES), Some(EVENT_STREAM));
        assert_eq!(best(EVENTS_JSON, PAGE_TYPES), Some(EVENTS_JSON));
        assert_eq!(best("application/*", PAGE_TYPES), Some(ATOM_XML));
        assert_eq!(best(EVENTS_JSON, EVENT_TYPES), None, "v5 offers no events type for one event");
    }

    #[test]
    fn one_bare_type_is_chosen_as_the_full_negotiation_chooses_it() {
        let lists: [&'static [&'static str]; 3] = [FEED_TYPES, PAGE_TYPES, EVENT_TYPES];
        for offered in lists {
            let mut accepts: Vec<String> =
                [FEED_TYPES, PAGE_TYPES, EVENT_TYPES].concat().iter().map(|t| t.to_string()).collect();
            accepts.extend(
                ["APPLICATION/ATOM+XML", " application/json ", "*/*", "image/png", "application/json;q=0"]
                    .map(String::from),
            );
            for accept in accepts {
                let mut headers = HeaderMap::new();
                headers.insert(header::ACCEPT, accept.parse().unwrap());
                let chosen = choose(&headers, None, offered).ok();
                assert_eq!(chosen, best(&accept, offered), "Accept: {accept:?} among {offered:?}");
            }
        }
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        assert_eq!(best("garbage, application/json;q=abc, application/json", FEED_TYPES), Some(JSON));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.25"), Some(250));
        assert_eq!(parse_quality("1.5"), None);
        assert_eq!(parse_quality("2"), None);
    }
}
