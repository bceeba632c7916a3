//! The HTTP error type: every failure a handler can return, mapped to its
//! status, its reason phrase and a `text/plain` body.
//!
//! v5 puts the message in the HTTP reason phrase with an empty body, and
//! clients read it from there; eventfeed sends the same reason phrase and
//! repeats it (plus any detail) in the body, so `curl` users see it too.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::ext::ReasonPhrase;

use crate::store::StoreError;

/// A failed request.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    /// The reason phrase, exactly as v5 words it where v5 has one.
    pub reason: String,
    /// Extra explanation for the body only.
    pub detail: Option<String>,
    /// Extra headers (`ES-CurrentVersion`, `Retry-After`, `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), detail: None, headers: Vec::new() }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found").with_detail(detail)
    }

    pub fn not_acceptable(supported: &[&str]) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "Not Acceptable")
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
}

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
        }
        let mut body = self.reason.clone();
        if let Some(detail) = &self.detail {
            body.push('\n');
            body.push_str(detail);
        }
        body.push('\n');
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
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
