//! Absolute URLs of streams, pages and events.
//!
//! Stream names are percent-encoded as one path segment: everything except
//! unreserved characters and `$` is escaped, so names with spaces, `/`, `%`,
//! `@`, `?`, `#` or non-ASCII text survive every client and cache. `$` stays
//! readable (`/streams/$ce-Order`); it is a legal path character.
//!
//! Metadata streams (`$${s}`) are addressed under their stream, at
//! `/streams/{s}/metadata`, as v5 does.

use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::PageStart;
use crate::store::Direction;
use crate::store::metadata::described_stream;

/// Characters escaped in a stream-name path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'$');

/// Something derived from a stream's name (its URL, its escaped forms),
/// kept for the next entry: a page's entries nearly always share one or a
/// few streams, and a read shares one allocation per name among its
/// events, so a hit is mostly a pointer comparison.
#[derive(Debug)]
pub(crate) struct PerStream<T> {
    last: Option<(Arc<str>, T)>,
}

impl<T> Default for PerStream<T> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl<T> PerStream<T> {
    /// What `derive` makes of `stream`, made again only when the stream
    /// is not the last one's.
    pub(crate) fn get(&mut self, stream: &Arc<str>, derive: impl FnOnce(&str) -> T) -> &T {
        if self.last.as_ref().is_some_and(|(last, _)| !super::same_name(last, stream)) {
            self.last = None;
        }
        &self.last.get_or_insert_with(|| (Arc::clone(stream), derive(stream))).1
    }
}

/// Builds event URLs for one page, percent-encoding each stream's name
/// once.
#[derive(Debug)]
pub struct EventUrls<'a> {
    urls: &'a Urls,
    /// Stream URLs.
    streams: PerStream<String>,
}

impl<'a> EventUrls<'a> {
    pub fn new(urls: &'a Urls) -> Self {
        Self { urls, streams: PerStream::default() }
    }

    pub fn event(&mut self, stream: &Arc<str>, number: u64) -> String {
        let prefix = self.streams.get(stream, |stream| self.urls.stream(stream));
        let mut url = String::with_capacity(prefix.len() + 21);
        url.push_str(prefix);
        url.push('/');
        url.push_str(super::decimal(number, &mut [0; 20]));
        url
    }
}

/// Builds URLs under one base (`scheme://host[:port][/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    base: String,
}

impl Urls {
    /// `base` has no trailing slash.
    pub fn new(base: String) -> Self {
        Self { base }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}{path}` for a path starting with `/`.
    pub fn absolute(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stream(&self, stream: &str) -> String {
        let mut url = String::with_capacity(self.base.len() + 9 + stream.len() + 9);
        url.push_str(&self.base);
        url.push_str("/streams/");
        match described_stream(stream) {
            Some(described) => {
                url.extend(utf8_percent_encode(described, SEGMENT));
                url.push_str("/metadata");
            }
            None => url.extend(utf8_percent_encode(stream, SEGMENT)),
        }
        url
    }

    pub fn metadata(&self, stream: &str) -> String {
        let mut url = self.stream(stream);
        url.push_str("/metadata");
        url
    }

    pub fn event(&self, stream: &str, number: u64) -> String {
        format!("{}/{number}", self.stream(stream))
    }

    /// A persistent subscription group: `/subscriptions/{stream}/{group}`,
    /// each name one encoded segment.
    pub fn subscription(&self, stream: &str, group: &str) -> String {
        let mut url = String::with_capacity(self.base.len() + 16 + stream.len() + group.len());
        url.push_str(&self.base);
        url.push_str("/subscriptions/");
        url.extend(utf8_percent_encode(stream, SEGMENT));
        url.push('/');
        url.extend(utf8_percent_encode(group, SEGMENT));
        url
    }

    /// A page of `$all`, whose positions are 32 hex digits.
    pub fn all_page(&self, start: PageStart, direction: Direction, count: u64) -> String {
        let start = match start {
            PageStart::Head => "head".to_owned(),
            PageStart::Number(position) => super::format_position(position),
        };
        let direction = match direction {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        };
        format!("{}/streams/$all/{start}/{direction}/{count}", self.base)
    }

    pub fn page(&self, stream: &str, start: PageStart, direction: Direction, count: u64) -> String {
        let direction = match direction {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        };
        match start {
            PageStart::Head => format!("{}/head/{direction}/{count}", self.stream(stream)),
            PageStart::Number(number) => {
                format!("{}/{number}/{direction}/{count}", self.stream(stream))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_segment() {
        let urls = Urls::new("http://h:1/p".into());
        assert_eq!(urls.stream("Order-1"), "http://h:1/p/streams/Order-1");
        assert_eq!(urls.stream("a b/c%d@e"), "http://h:1/p/streams/a%20b%2Fc%25d%40e");
        assert_eq!(urls.stream("ünï"), "http://h:1/p/streams/%C3%BCn%C3%AF");
        assert_eq!(urls.stream("$ce-Order"), "http://h:1/p/streams/$ce-Order");
        assert_eq!(urls.event("q?#", 3), "http://h:1/p/streams/q%3F%23/3");
    }

    #[test]
    fn event_urls_reuse_the_stream_prefix() {
        let urls = Urls::new("http://h".into());
        let mut events = EventUrls::new(&urls);
        assert_eq!(events.event(&"a b".into(), 0), "http://h/streams/a%20b/0");
        assert_eq!(
            events.event(&"a b".into(), 18446744073709551615),
            "http://h/streams/a%20b/18446744073709551615"
        );
        assert_eq!(events.event(&"c".into(), 42), urls.event("c", 42));
        assert_eq!(events.event(&"$$m".into(), 7), "http://h/streams/m/metadata/7");
    }

    #[test]
    fn subscription_urls_encode_both_names() {
        let urls = Urls::new("http://h".into());
        assert_eq!(urls.subscription("$ce-Order", "a b/c"), "http://h/subscriptions/$ce-Order/a%20b%2Fc");
    }

    #[test]
    fn metadata_streams_live_under_their_stream() {
        let urls = Urls::new("http://h".into());
        assert_eq!(urls.stream("$$Order-1"), "http://h/streams/Order-1/metadata");
        assert_eq!(urls.event("$$Order-1", 0), "http://h/streams/Order-1/metadata/0");
        assert_eq!(
            urls.page("$$a b", PageStart::Head, Direction::Backward, 20),
            "http://h/streams/a%20b/metadata/head/backward/20"
        );
        assert_eq!(urls.metadata("Order-1"), "http://h/streams/Order-1/metadata");
    }
}
