//! How a failed read is answered: exactly as v5 answers it, because clients
//! parse what they get (some take an empty `404` to mean "no such stream"
//! and fail on anything else). The status and reason phrase are v5's, and
//! so is the body, which holds nothing meant for people:
//!
//! - a request refused before anything is read (`400` for a malformed
//!   number, count or header, `406`) has no body and no `Content-Type`;
//! - a read that found nothing or failed (`404 Not Found`, `410 Deleted`,
//!   `5xx`) says `Content-Type: text/plain; charset=utf-8` over an empty
//!   body, except where v5's codec writes its value for "no event": one
//!   event, `/head` or metadata read as a JSON type answers `{}`;
//! - the subscription routes label their failures with their own type, and
//!   a stream's list of groups answers `[]` (v5 serialises its empty list).
//!
//! What eventfeed would explain goes where v5 clients never look: a page
//! for a browser that asks for `text/html`, and the debug log. Unlike v5,
//! the answer says `Vary` (it depends on `Accept`), so no cache hands the
//! page to a client or `{}` to a browser.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::caching::VARY;
use super::error::{ErrorBody, HttpError};
use super::negotiate::{self, HTML, PAGE_TYPES, PLAIN_TEXT};

/// The kinds of read route, by what v5 writes when a read on one fails.
#[derive(Debug, Clone, Copy)]
pub enum ReadRoute {
    /// A page of a stream, a metadata stream or `$all`: nothing.
    Page,
    /// One event, `/head` or metadata, offered as these types: `{}` for
    /// the JSON types, nothing for the others.
    Event(&'static [&'static str]),
    /// A subscription route: `nothing`, labelled `media_type`.
    Labelled { media_type: &'static str, nothing: &'static str },
}

impl HttpError {
    /// This failure as v5 answers it on a read `route` (see the module
    /// head); `format` is the request's `?format=`.
    pub fn answering_read(mut self, request: &HeaderMap, format: Option<&str>, route: ReadRoute) -> Self {
        self.headers.push((header::VARY, HeaderValue::from_static(VARY)));
        let offered = match route {
            ReadRoute::Page => PAGE_TYPES,
            ReadRoute::Event(offered) => offered,
            ReadRoute::Labelled { .. } => &[],
        };
        let chosen = negotiate::choose(request, format, offered).ok();
        if chosen == Some(HTML) {
            self.body = ErrorBody::Page;
            return self;
        }
        if self.body != ErrorBody::Explained {
            return self;
        }
        let refused = matches!(self.status, StatusCode::BAD_REQUEST | StatusCode::NOT_ACCEPTABLE);
        let (media_type, bytes) = match route {
            _ if refused => (None, ""),
            ReadRoute::Page => (Some(PLAIN_TEXT), ""),
            ReadRoute::Event(_) => (Some(PLAIN_TEXT), chosen.map_or("", negotiate::no_event)),
            ReadRoute::Labelled { media_type, nothing } => (Some(media_type), nothing),
        };
        self.body = ErrorBody::Exactly { media_type, bytes };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::negotiate::{ATOM_JSON, ATOM_XML, EVENT_TYPES, JSON};

    fn accepting(media_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(media_type));
        headers
    }

    fn answered(error: HttpError, accept: &'static str, route: ReadRoute) -> ErrorBody {
        error.answering_read(&accepting(accept), None, route).body
    }

    #[test]
    fn v5_bodies_per_route_and_status() {
        let missing = || HttpError::not_found("The stream does not exist.");
        let plain = |bytes| ErrorBody::Exactly { media_type: Some(PLAIN_TEXT), bytes };
        assert_eq!(answered(missing(), ATOM_JSON, ReadRoute::Page), plain(""));
        assert_eq!(answered(missing(), ATOM_JSON, ReadRoute::Event(EVENT_TYPES)), plain("{}"));
        assert_eq!(answered(missing(), JSON, ReadRoute::Event(EVENT_TYPES)), plain("{}"));
        assert_eq!(answered(missing(), ATOM_XML, ReadRoute::Event(EVENT_TYPES)), plain(""));
        let bad = || HttpError::bad_request("'x' is not valid event number");
        let nothing = ErrorBody::Exactly { media_type: None, bytes: "" };
        assert_eq!(answered(bad(), ATOM_JSON, ReadRoute::Event(EVENT_TYPES)), nothing);
        let groups = ReadRoute::Labelled { media_type: JSON, nothing: "[]" };
        assert_eq!(
            answered(missing(), "*/*", groups),
            ErrorBody::Exactly { media_type: Some(JSON), bytes: "[]" }
        );
        assert_eq!(answered(bad(), "*/*", groups), nothing);
    }

    #[test]
    fn browsers_get_a_page_and_every_answer_varies_by_accept() {
        let error = HttpError::no_route().answering_read(&accepting("text/html"), None, ReadRoute::Page);
        assert_eq!(error.body, ErrorBody::Page);
        assert!(error.headers.iter().any(|(name, _)| name == header::VARY));
        let error = HttpError::no_route().answering_read(&accepting("*/*"), None, ReadRoute::Page);
        assert_eq!(error.body, ErrorBody::Exactly { media_type: None, bytes: "" }, "set by the route");
    }
}
