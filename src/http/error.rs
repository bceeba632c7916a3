//! The HTTP error type: every failure a handler can return, mapped to its
//! status, its reason phrase, its headers and its body.
//!
//! v5 puts the message in the HTTP reason phrase, and clients read it from
//! there; eventfeed sends the same reason phrase. What the body holds
//! depends on what failed ([`ErrorBody`]): the answer to a write repeats
//! the message (plus any detail) as `text/plain`, so `curl` users see it;
//! the answer to a read is exactly v5's (`read_errors` decides it), because
//! clients parse it, and its detail goes to a page for browsers and to the
//! debug log instead.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::ext::ReasonPhrase;

use crate::feed;
use crate::store::StoreError;

/// A failed request.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    /// The reason phrase, exactly as v5 words it where v5 has one.
    pub reason: String,
    /// Extra explanation for people: in the body of an explained answer,
    /// on the page of a browser's, in the debug log otherwise.
    pub detail: Option<String>,
    /// Extra headers (`ES-CurrentVersion`, `Retry-After`, `Vary`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ErrorBody,
}

/// What the body of a failure holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ErrorBody {
    /// The reason phrase and the detail as `text/plain`: eventfeed's
    /// addition to v5's answer to a write, whose body no v5 client reads
    /// (v5 sends none, or on subscription writes its own message object).
    #[default]
    Explained,
    /// Exactly what v5 sends: these bytes, labelled with this media type in
    /// UTF-8 (no `Content-Type` when `None`).
    Exactly { media_type: Option<&'static str>, bytes: &'static str },
    /// A page stating the failure and its detail, for a browser (it asked
    /// for `text/html`, which no v5 client does).
    Page,
}

impl HttpError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), detail: None, headers: Vec::new(), body: ErrorBody::default() }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found").with_detail(detail)
    }

    /// v5's answer to a URL that no route serves, whatever the method:
    /// `404 Not Found` and nothing else.
    pub fn no_route() -> Self {
        Self::not_found("No resource lives at this URL.")
            .with_body(ErrorBody::Exactly { media_type: None, bytes: "" })
    }

    /// v5's reason phrase when no offered type is acceptable.
    pub fn not_acceptable(supported: &[&str]) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "Requested URI is not available in requested format")
            .with_detail(format!("This resource is available as: {}", supported.join(", ")))
    }

    pub fn unsupported_media_type(supported: &[&str]) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
            .with_detail(format!("Send one of these Content-Types: {}", supported.join(", ")))
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large").with_detail(detail)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_body(mut self, body: ErrorBody) -> Self {
        self.body = body;
        self
    }
}

/// `Retry-After` while the store's database is away, in seconds: about
/// the time PostgreSQL takes to restart, and the longest the store waits
/// between attempts to reconnect.
const DATABASE_RETRY_AFTER: &str = "5";

/// The `ES-CurrentVersion` header.
pub const CURRENT_VERSION: HeaderName = HeaderName::from_static("es-currentversion");

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::WrongExpectedVersion { current, detail } => {
                HttpError::bad_request("Wrong expected EventNumber")
                    .with_detail(detail)
                    .with_header(CURRENT_VERSION, HeaderValue::from(current))
            }
            StoreError::StreamDeleted => HttpError::new(StatusCode::GONE, "Stream deleted"),
            StoreError::StreamNotFound => HttpError::not_found("The stream does not exist."),
            StoreError::Invalid(message) => HttpError::bad_request(message),
            StoreError::Busy(message) => {
                HttpError::new(StatusCode::CONFLICT, "Conflict").with_detail(message)
            }
            StoreError::AccessChanged => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .with_detail(
                        "The stream's access rules kept changing while the request waited; nothing was \
                     written. Retry it.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            StoreError::Unavailable => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                .with_detail("The store is shutting down or not accepting writes.")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            // Nothing was written: the same request, ids and all, goes
            // through once space is freed.
            StoreError::InsufficientStorage(message) => {
                HttpError::new(StatusCode::INSUFFICIENT_STORAGE, "Insufficient Storage")
                    .with_detail(message)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("10"))
            }
            StoreError::CommitFailed(cause) => {
                tracing::error!(%cause, "a write could not be made durable; its outcome is unknown");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .with_detail(
                        "The write could not be made durable, so whether it stands is unknown, and the \
                         store takes no writes until the server is restarted. Retry it with the same \
                         event ids once the server is back: a write that stood is then answered with \
                         its original Location.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("10"))
            }
            // Nothing was written; the store comes back by itself when its
            // database does (the database's own restart takes seconds). The
            // store logs the outage once, not every request it fails.
            StoreError::Unreachable(cause) => {
                tracing::debug!(%cause, "the store's database cannot be reached");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .with_detail(
                        "The store's database cannot be reached; nothing was written. The server \
                         reconnects by itself: retry the request after the time Retry-After says.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static(DATABASE_RETRY_AFTER))
            }
            // The store logged the cut-off commit once, for its whole batch.
            StoreError::OutcomeUnknown(cause) => {
                tracing::debug!(%cause, "a write's commit was cut off; its outcome is unknown");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                    .with_detail(
                        "The connection to the store's database was lost while the write committed, so \
                         whether it stands is unknown. Retry it with the same event ids: a write that \
                         stood is then answered with its original Location, one that did not is \
                         written then.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static(DATABASE_RETRY_AFTER))
            }
            // The multi-stream append route answers conflicts with a JSON
            // body of its own; this is the plain form.
            StoreError::Conflicts(_) => {
                HttpError::new(StatusCode::CONFLICT, "Conflict").with_detail(error.to_string())
            }
            StoreError::InPart { stream, error } => {
                let part = HttpError::from(*error);
                let detail = match &part.detail {
                    Some(detail) => format!("Stream '{stream}': {}. {detail}", part.reason),
                    None => format!("Stream '{stream}': {}.", part.reason),
                };
                part.with_detail(detail)
            }
            StoreError::Corrupt(_) | StoreError::Io(_) => {
                // Logged in `into_response`; the client learns only that it
                // was the server's fault.
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                    .with_detail(error.to_string())
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = %self.status, reason = %self.reason, detail = ?self.detail, "request failed");
        } else if let (ErrorBody::Exactly { .. }, Some(detail)) = (&self.body, &self.detail) {
            tracing::debug!(status = %self.status, reason = %self.reason, %detail, "request refused");
        }
        let (media_type, body) = match self.body {
            ErrorBody::Explained => {
                let mut text = self.reason.clone();
                if let Some(detail) = &self.detail {
                    text.push('\n');
                    text.push_str(detail);
                }
                text.push('\n');
                (Some("text/plain"), Body::from(text))
            }
            ErrorBody::Exactly { media_type, bytes } => (media_type, Body::from(bytes)),
            ErrorBody::Page => {
                let title = format!("{} {}", self.status.as_u16(), self.reason);
                let page = feed::html::render_notice(&title, self.detail.as_deref().unwrap_or_default());
                (Some("text/html"), Body::from(page))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(media_type) = media_type {
            // Composed of the server's own constants: always a valid value.
            if let Ok(content_type) = HeaderValue::from_str(&format!("{media_type}; charset=utf-8")) {
                headers.insert(header::CONTENT_TYPE, content_type);
            }
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Ok(reason) = ReasonPhrase::try_from(reason_phrase(&self.reason)) {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

/// A reason phrase must be visible ASCII, spaces and tabs: anything else
/// (user input echoed in a message, non-ASCII) becomes `?`.
fn reason_phrase(reason: &str) -> String {
    reason.chars().map(|c| if c == '\t' || c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases_stay_on_one_valid_line() {
        assert_eq!(reason_phrase("'a\r\nb' is not valid"), "'a??b' is not valid");
        assert_eq!(reason_phrase("'ü' bad"), "'?' bad");
        assert!(ReasonPhrase::try_from(reason_phrase("x\u{0}y")).is_ok());
    }
}
