//! Cache headers, ETags and conditional requests — the reason the server
//! exists: immutable pages are cached for a year by any HTTP cache, live
//! ones revalidate cheaply with a stable ETag.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::feed::{Freshness, etag_value};
use crate::store::StreamSettings;
use crate::store::metadata::MAX_CACHE_CONTROL_SECS;

/// One year, the longest `max-age` RFC 9111 suggests caches honour.
pub const IMMUTABLE: &str = "max-age=31536000, public";
pub const IMMUTABLE_PRIVATE: &str = "max-age=31536000, private";
/// Live responses: every cache must ask before reusing them.
pub const REVALIDATE: &str = "max-age=0, no-cache, must-revalidate";
pub const REVALIDATE_PRIVATE: &str = "max-age=0, no-cache, must-revalidate, private";

/// The names of [`VARY`], as a literal for `concat!`.
macro_rules! vary_names {
    () => {
        "Accept, X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Port, X-Forwarded-Prefix"
    };
}

/// What a representation varies by: the negotiated type, and the proxy
/// headers every absolute link is built from. A client that sends none of
/// the `X-Forwarded-*` headers shares one variant with every other.
pub const VARY: &str = vary_names!();
/// [`VARY`] for answers that only some readers may have.
pub const VARY_PRIVATE: &str = concat!(vary_names!(), ", Authorization");

/// [`VARY`] and [`VARY_PRIVATE`] with the compression layer's
/// `accept-encoding` joined, as [`one_vary`] joins them: what almost every
/// page carries, so joined without an allocation.
const VARY_ENCODED: [(&str, &str); 2] = [
    (VARY, concat!(vary_names!(), ", Accept-Encoding")),
    (VARY_PRIVATE, concat!(vary_names!(), ", Authorization, Accept-Encoding")),
];

/// The caching facts of one response.
#[derive(Debug, Clone)]
pub struct Caching<'a> {
    pub freshness: &'a Freshness,
    pub settings: &'a StreamSettings,
}

impl Caching<'_> {
    fn cache_control(&self) -> HeaderValue {
        let visibility = if self.settings.not_public { "private" } else { "public" };
        match self.freshness {
            Freshness::Immutable if self.settings.not_public => HeaderValue::from_static(IMMUTABLE_PRIVATE),
            Freshness::Immutable => HeaderValue::from_static(IMMUTABLE),
            Freshness::Live { .. } => match self.settings.cache_control_secs {
                // Clamped for settings stored before `$cacheControl` had a
                // maximum (they may hold any number).
                Some(seconds) => {
                    let seconds = seconds.min(MAX_CACHE_CONTROL_SECS);
                    header_value(&format!("max-age={seconds}, {visibility}"))
                }
                None if self.settings.not_public => HeaderValue::from_static(REVALIDATE_PRIVATE),
                None => HeaderValue::from_static(REVALIDATE),
            },
        }
    }

    /// The ETag value (without quotes) for a live response.
    pub fn etag(&self, media_type: &str) -> Option<String> {
        match self.freshness {
            Freshness::Immutable => None,
            Freshness::Live { version } => {
                Some(etag_value(version, media_type, self.settings.metadata_number))
            }
        }
    }
}

/// Builds the response for a representation: `304` when the client's
/// `If-None-Match` still matches (without rendering), else `200` with the
/// body `render` produces, given the ETag it may embed.
pub fn respond<B: Into<Body>>(
    request: &HeaderMap,
    caching: &Caching<'_>,
    media_type: &'static str,
    render: impl FnOnce(Option<&str>) -> B,
) -> Response {
    let etag = caching.etag(media_type);
    let not_modified = etag.as_deref().is_some_and(|etag| if_none_match(request, etag));
    let mut response = if not_modified {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let body = render(etag.as_deref());
        let mut response = Response::new(body.into());
        response.headers_mut().insert(header::CONTENT_TYPE, content_type(media_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, caching.cache_control());
    // A private answer depends on who asked: a shared cache that keeps it
    // anyway (against `private`) must at least key it by the credentials.
    let vary = if caching.settings.not_public { VARY_PRIVATE } else { VARY };
    headers.insert(header::VARY, HeaderValue::from_static(vary));
    if let Some(etag) = etag {
        // A 304 repeats the form the client sent, so that a cache holding
        // the gzip copy (stored with the weak tag) finds it again.
        let weak = not_modified && sent_weak(request);
        headers.insert(header::ETAG, header_value(&format!("{}\"{etag}\"", if weak { "W/" } else { "" })));
    }
    response
}

/// Whether an `If-None-Match` names a weak ETag.
fn sent_weak(request: &HeaderMap) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("W/\""))
}

/// Makes the ETag of a compressed response weak (`W/"…"`), as nginx does.
///
/// A strong ETag promises byte-identical bodies, and the gzip and identity
/// bodies of one page differ; a weak one promises the same content, which
/// both are. `If-None-Match` compares weakly, so either form revalidates
/// either copy. (A `304` has no body to compress: [`respond`] gives it the
/// form the client sent.)
///
/// A plain function for `tower::util::MapResponseLayer`, whose future is
/// not boxed: as an `axum::middleware::from_fn` it cost 2-3% of an
/// uncached page read (a boxed future and a cloned router per request).
/// Also merges the `Vary` the compression layer adds (`accept-encoding`)
/// into the response's own, so there is one `Vary` header.
pub fn weak_etag_when_encoded<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    one_vary(headers);
    if headers.contains_key(header::CONTENT_ENCODING) {
        if let Some(strong) =
            headers.get(header::ETAG).and_then(|v| v.to_str().ok()).filter(|v| v.starts_with('"'))
        {
            let weak = header_value(&format!("W/{strong}"));
            headers.insert(header::ETAG, weak);
        }
    }
    response
}

/// Joins every `Vary` header into one, each name once.
fn one_vary(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::VARY).iter();
    let (Some(first), Some(second)) = (values.next(), values.next()) else {
        return;
    };
    if values.next().is_none() && second.as_bytes().eq_ignore_ascii_case(b"accept-encoding") {
        let joined = VARY_ENCODED.iter().find(|(own, _)| first.as_bytes() == own.as_bytes());
        if let Some((_, joined)) = joined {
            headers.insert(header::VARY, HeaderValue::from_static(joined));
            return;
        }
    }
    let joined = joined_vary(headers);
    headers.insert(header::VARY, header_value(&joined));
}

/// Every name of every `Vary` header, each once, in order.
fn joined_vary(headers: &HeaderMap) -> String {
    let mut names: Vec<String> = Vec::new();
    for value in headers.get_all(header::VARY).iter().filter_map(|v| v.to_str().ok()) {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
                names.push(if name.eq_ignore_ascii_case("accept-encoding") {
                    "Accept-Encoding".into()
                } else {
                    name.into()
                });
            }
        }
    }
    names.join(", ")
}

/// Whether `If-None-Match` names `etag` (or `*`). Weak comparison, as RFC
/// 9110 prescribes for `If-None-Match`; malformed values match nothing.
pub fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|candidate| {
            candidate == "*"
                || candidate
                    .trim_start_matches("W/")
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .is_some_and(|c| c == etag)
        })
    })
}

/// The `Content-Type` for a media type: text-based types say UTF-8.
pub fn content_type(media_type: &str) -> HeaderValue {
    use crate::http::negotiate::{
        ATOM_JSON, ATOM_XML, EVENT_JSON, EVENT_STREAM, EVENT_XML, JSON, OCTET_STREAM,
    };
    // The types of pages and events, which almost every read answers
    // with, without formatting (a kept page's answer is made on every hit).
    let known = match media_type {
        ATOM_XML => "application/atom+xml; charset=utf-8",
        ATOM_JSON => "application/vnd.eventstore.atom+json; charset=utf-8",
        JSON => "application/json; charset=utf-8",
        EVENT_JSON => "application/vnd.eventstore.event+json; charset=utf-8",
        EVENT_XML => "application/vnd.eventstore.event+xml; charset=utf-8",
        OCTET_STREAM | EVENT_STREAM => return header_value(media_type),
        _ => return header_value(&format!("{media_type}; charset=utf-8")),
    };
    HeaderValue::from_static(known)
}

/// A header value from text the server composed (never raw user input).
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::negotiate::{
        ATOM_JSON, ATOM_XML, COMPETING_JSON, EVENT_JSON, EVENT_STREAM, EVENT_XML, HTML, JSON, OCTET_STREAM,
        TEXT_XML,
    };

    #[test]
    fn a_text_type_says_utf_8_and_a_binary_one_does_not() {
        for text in [ATOM_XML, ATOM_JSON, JSON, EVENT_JSON, EVENT_XML, TEXT_XML, HTML, COMPETING_JSON] {
            assert_eq!(content_type(text), format!("{text}; charset=utf-8"), "{text}");
        }
        for binary in [OCTET_STREAM, EVENT_STREAM] {
            assert_eq!(content_type(binary), binary);
        }
    }

    #[test]
    fn the_joined_vary_of_a_page_is_what_the_general_join_writes() {
        for own in [VARY, VARY_PRIVATE] {
            for encoding in ["accept-encoding", "Accept-Encoding"] {
                let mut headers = HeaderMap::new();
                headers.insert(header::VARY, HeaderValue::from_static(own));
                headers.append(header::VARY, HeaderValue::from_static(encoding));
                let general = joined_vary(&headers);
                one_vary(&mut headers);
                let joined: Vec<_> = headers.get_all(header::VARY).iter().collect();
                assert_eq!(joined, [general.as_str()], "{own} + {encoding}");
            }
        }
        // Any other pair takes the general join.
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept, accept"));
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        one_vary(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().collect::<Vec<_>>(), ["Accept, Accept-Encoding"]);
    }

    fn with_inm(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_none_match_forms() {
        assert!(if_none_match(&with_inm("\"3;123\""), "3;123"));
        assert!(if_none_match(&with_inm("W/\"3;123\""), "3;123"));
        assert!(if_none_match(&with_inm("\"1;1\", \"3;123\""), "3;123"));
        assert!(if_none_match(&with_inm("*"), "3;123"));
        assert!(!if_none_match(&with_inm("3;123"), "3;123"), "unquoted is malformed");
        assert!(!if_none_match(&with_inm("\"4;123\""), "3;123"));
        assert!(!if_none_match(&HeaderMap::new(), "3;123"));
    }

    #[test]
    fn cache_control_per_freshness_and_settings() {
        let public = StreamSettings::default();
        let live = Freshness::Live { version: "1".into() };
        let caching = Caching { freshness: &Freshness::Immutable, settings: &public };
        assert_eq!(caching.cache_control(), IMMUTABLE);
        assert_eq!(caching.etag("x"), None);
        let caching = Caching { freshness: &live, settings: &public };
        assert_eq!(caching.cache_control(), REVALIDATE);
        let private = StreamSettings { not_public: true, cache_control_secs: Some(30), ..public };
        let caching = Caching { freshness: &live, settings: &private };
        assert_eq!(caching.cache_control(), "max-age=30, private");
        let private_no_max_age = StreamSettings { cache_control_secs: None, ..private };
        let caching = Caching { freshness: &live, settings: &private_no_max_age };
        assert_eq!(caching.cache_control(), REVALIDATE_PRIVATE);
        let caching = Caching { freshness: &Freshness::Immutable, settings: &private };
        assert_eq!(caching.cache_control(), IMMUTABLE_PRIVATE);
        // A `$cacheControl` stored before it had a maximum is served as a year.
        let stored_long_ago = StreamSettings { cache_control_secs: Some(u64::MAX), ..public };
        let caching = Caching { freshness: &live, settings: &stored_long_ago };
        assert_eq!(caching.cache_control(), "max-age=31536000, public");
    }
}
