//! Parsing of the parts of a request every resource shares: path segments,
//! stream names, event numbers, counts and the `ES-*` headers. Each failure
//! is a 400 whose reason phrase is v5's where v5 has one.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use super::error::HttpError;
use super::read_errors::ReadRoute;
use crate::feed::{Embed, MAX_PAGE_SIZE, PageStart};
use crate::store::ExpectedVersion;

/// The longest stream name accepted, in bytes (after percent-decoding).
/// Generous for any naming scheme, small enough that index keys stay cheap.
pub const MAX_STREAM_NAME_BYTES: usize = 1024;

/// Percent-decoded path segments; a segment that is not valid UTF-8 after
/// decoding is a 400 with our error format, not axum's.
#[derive(Debug)]
pub struct Segments<T>(pub T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let path = Path::<T>::from_request_parts(parts, state).await;
        path.map(|Path(value)| Self(value)).map_err(|rejection| {
            let error = HttpError::bad_request("Invalid path").with_detail(rejection.body_text());
            malformed(parts, error)
        })
    }
}

/// The query string, parsed; a malformed one is a 400 in our error format.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                // The reason phrase says what to change (v5 has none for
                // this): a read's answer has no body to say it in.
                let error = HttpError::bad_request(rejection.body_text());
                malformed(parts, error)
            })
    }
}

/// A malformed request; a read is answered as v5 answers one (no body).
fn malformed(parts: &Parts, error: HttpError) -> HttpError {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        error.answering_read(&parts.headers, None, ReadRoute::Page)
    } else {
        error
    }
}

/// The query parameters of reads.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReadQuery {
    /// `?embed=`: one of [`EMBED_NAMES`]; anything else is a `400` naming
    /// them (v5 reads it as `none`, hiding the typo).
    #[serde(default, deserialize_with = "embed_name")]
    pub embed: Option<Embed>,
    /// `?format=`: overrides `Accept`.
    pub format: Option<String>,
    /// `?from=N`: where a Server-Sent Events stream starts.
    pub from: Option<String>,
    /// `?asOf=`: the page as it was at a past `$all` position or time
    /// (`http::as_of`).
    #[serde(rename = "asOf")]
    pub as_of: Option<String>,
}

impl ReadQuery {
    pub fn embed(&self) -> Embed {
        self.embed.unwrap_or_default()
    }
}

/// The `?embed=` values, as the `400` for any other lists them.
pub const EMBED_NAMES: &str = "none, content, rich, body, pretty, tryharder";

fn embed_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Embed>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    Embed::parse(&text)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown embed '{text}': use one of {EMBED_NAMES}")))
}

/// Checks a stream name that came from a URL.
pub fn stream_name(name: &str) -> Result<(), HttpError> {
    let problem = if name.is_empty() {
        "Stream name must not be empty."
    } else if name.len() > MAX_STREAM_NAME_BYTES {
        "Stream name is too long."
    } else if name.chars().any(char::is_control) {
        "Stream name must not contain control characters."
    } else if name == "." || name == ".." {
        // Every client and proxy normalises these path segments away.
        "Stream name must not be '.' or '..'."
    } else {
        return Ok(());
    };
    Err(HttpError::bad_request(problem).with_detail(format!(
        "Stream names are 1 to {MAX_STREAM_NAME_BYTES} bytes of UTF-8 without control characters."
    )))
}

/// Checks that producers may append to (or delete) a stream.
pub fn user_stream(name: &str) -> Result<(), HttpError> {
    stream_name(name)?;
    if name.starts_with('$') {
        return Err(HttpError::bad_request("Stream names starting with '$' are reserved.").with_detail(
            "Streams whose names start with '$' belong to the system ($all, $ce-, $et-, $streams, \
             metadata streams); they cannot be written directly.",
        ));
    }
    Ok(())
}

/// `{event}` of a page route: `head` or an event number.
pub fn page_start(text: &str) -> Result<PageStart, HttpError> {
    if text.eq_ignore_ascii_case("head") {
        return Ok(PageStart::Head);
    }
    event_number(text).map(PageStart::Number)
}

/// An event number: a non-negative integer.
pub fn event_number(text: &str) -> Result<u64, HttpError> {
    text.parse::<u64>()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| HttpError::bad_request(format!("'{text}' is not valid event number")))
}

/// A page size: 1 to [`MAX_PAGE_SIZE`].
pub fn count(text: &str) -> Result<u64, HttpError> {
    match text.parse::<u64>() {
        Ok(count) if (1..=MAX_PAGE_SIZE).contains(&count) && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(count)
        }
        Ok(count) if count > MAX_PAGE_SIZE => {
            Err(HttpError::bad_request(format!("'{text}' is not valid count. Should be positive integer"))
                .with_detail(format!("The largest page is {MAX_PAGE_SIZE} events.")))
        }
        _ => Err(HttpError::bad_request(format!("'{text}' is not valid count. Should be positive integer"))),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

/// `ES-ExpectedVersion`, `Any` when absent.
pub fn expected_version(headers: &HeaderMap) -> Result<ExpectedVersion, HttpError> {
    match header(headers, "es-expectedversion") {
        None => Ok(ExpectedVersion::Any),
        Some(text) => ExpectedVersion::parse(text).ok_or_else(|| {
            HttpError::bad_request("ES-ExpectedVersion header in wrong format.").with_detail(
                "Send -2 (any version), -1 (the stream must not exist), -4 (the stream must exist) \
                 or N (the stream's last event number must be N, 0 or more).",
            )
        }),
    }
}

/// A `True`/`False` header (case-insensitive), `default` when absent.
fn boolean(headers: &HeaderMap, name: &str, display: &str, default: bool) -> Result<bool, HttpError> {
    match header(headers, name) {
        None => Ok(default),
        Some(text) if text.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(HttpError::bad_request(format!("{display} header in wrong format."))),
    }
}

/// `ES-ResolveLinkTos`, true when absent.
pub fn resolve_link_tos(headers: &HeaderMap) -> Result<bool, HttpError> {
    boolean(headers, "es-resolvelinktos", "ES-ResolveLinkTos", true)
}

/// `ES-HardDelete`, false when absent.
pub fn hard_delete(headers: &HeaderMap) -> Result<bool, HttpError> {
    boolean(headers, "es-harddelete", "ES-HardDelete", false)
}

/// `ES-EventType`, if sent.
pub fn event_type(headers: &HeaderMap) -> Option<&str> {
    header(headers, "es-eventtype")
}

/// `ES-EventId`: `None` when absent, an error when not a UUID.
pub fn event_id(headers: &HeaderMap) -> Result<Option<uuid::Uuid>, HttpError> {
    match header(headers, "es-eventid") {
        None => Ok(None),
        Some(text) => uuid::Uuid::parse_str(text.trim())
            .map(Some)
            .map_err(|_| HttpError::bad_request("ES-EventId header in wrong format.")),
    }
}

/// The header that asks a read to wait for events.
pub const ES_LONG_POLL: &str = "es-longpoll";

/// `ES-LongPoll: {seconds}`: `None` when absent; a positive integer else.
pub fn long_poll(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    match header(headers, ES_LONG_POLL) {
        None => Ok(None),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Some(seconds)),
            _ => Err(HttpError::bad_request("ES-LongPoll header in wrong format.")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn numbers_and_counts() {
        assert_eq!(page_start("head").ok(), Some(PageStart::Head));
        assert_eq!(page_start("17").ok(), Some(PageStart::Number(17)));
        for bad in ["-1", "+1", "1.0", "x", "", "99999999999999999999999"] {
            let error = event_number(bad).expect_err(bad);
            assert_eq!(error.reason, format!("'{bad}' is not valid event number"));
        }
        assert_eq!(count("20").ok(), Some(20));
        assert_eq!(count("4096").ok(), Some(4096));
        for bad in ["0", "-5", "4097", "abc", "+3"] {
            let error = count(bad).expect_err(bad);
            assert_eq!(error.reason, format!("'{bad}' is not valid count. Should be positive integer"));
        }
    }

    #[test]
    fn stream_names() {
        assert!(stream_name("Order-123").is_ok());
        assert!(stream_name("a b/c%d@é").is_ok());
        assert!(stream_name("").is_err());
        assert!(stream_name("a\nb").is_err());
        assert!(stream_name("..").is_err());
        assert!(stream_name(&"x".repeat(MAX_STREAM_NAME_BYTES + 1)).is_err());
        assert!(user_stream("$ce-Order").is_err());
        assert!(user_stream("$all").is_err());
    }

    #[test]
    fn headers_parse_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_version(&headers).ok(), Some(ExpectedVersion::Any));
        for (text, expected) in [
            ("-2", ExpectedVersion::Any),
            ("-1", ExpectedVersion::NoStream),
            ("-4", ExpectedVersion::StreamExists),
            ("0", ExpectedVersion::Exact(0)),
            ("12", ExpectedVersion::Exact(12)),
        ] {
            headers.insert("es-expectedversion", HeaderValue::from_static(text));
            assert_eq!(expected_version(&headers).ok(), Some(expected), "{text}");
        }
        for text in ["-3", "-5", "x", "1.5", ""] {
            headers.insert("es-expectedversion", HeaderValue::from_static(text));
            let error = expected_version(&headers).expect_err(text);
            assert_eq!(error.reason, "ES-ExpectedVersion header in wrong format.");
        }
        headers.insert("es-resolvelinktos", HeaderValue::from_static("FALSE"));
        assert_eq!(resolve_link_tos(&headers).ok(), Some(false));
        headers.insert("es-resolvelinktos", HeaderValue::from_static("yes"));
        assert!(resolve_link_tos(&headers).is_err());
        for bad in ["0", "-1", "x", "1.5"] {
            headers.insert("es-longpoll", HeaderValue::from_static(bad));
            assert_eq!(long_poll(&headers).expect_err(bad).reason, "ES-LongPoll header in wrong format.");
        }
        headers.insert("es-longpoll", HeaderValue::from_static("15"));
        assert_eq!(long_poll(&headers).ok(), Some(Some(15)));
    }
}
