//! Rendered stream pages that can no longer change, kept in memory and
//! bounded by bytes (`--page-cache-mb`), so that a page read a second time
//! costs one state lookup instead of 20 event reads and a render.
//!
//! A page is kept only when nothing but a metadata write or a delete could
//! change its bytes, and the key holds the number of the metadata event the
//! page was rendered under and the stream's lowest visible event number, so
//! a metadata write or a soft delete (which hides every earlier event once
//! the stream is written again) makes every kept page of that stream
//! unreachable. Hence kept pages are:
//! - full and *immutable* (`Freshness::Immutable`); a full forward page
//!   that ends at the stream's last event (whose `headOfStream` flips with
//!   the next append) is kept under that last number too, so the next
//!   append makes it unreachable (polling readers re-read it until then);
//! - of a stream without `$maxCount` or `$maxAge`, whose events vanish
//!   with later appends or with time;
//! - public (any reader may have them; the access check still runs on
//!   every hit);
//! - free of resolved links (a link's target may be deleted later);
//! - read as they are now (no `asOf`), in a feed representation (Atom or
//!   JSON; the HTML view is left out).
//!
//! A hard-deleted or soft-deleted stream does not reach the cache: its state
//! is looked up first.
//!
//! Pages of `$all` are kept under the store's epoch of commits that may hide
//! events (`Store::all_pages_epoch`: metadata writes, deletes, scavenges),
//! so that any such commit makes every kept `$all` page unreachable. Kept
//! are full, immutable pages not at the head, holding no event of a stream
//! with `$maxCount` or `$maxAge` (`AllSlice::may_expire`), read as they are
//! now, on a backend that keeps the epoch (the sled store; a PostgreSQL node
//! would miss the other nodes' commits).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::feed::{Embed, PageRequest, PageStart};
use crate::store::{Direction, StreamSettings, retention};

/// Bytes counted for an entry besides its key and page: the cache's own
/// bookkeeping and the allocations' headers, roughly.
const ENTRY_OVERHEAD: u64 = 96;

/// A page's average size, to size the cache's table: about 8 KiB for 20
/// Atom entries.
const TYPICAL_PAGE: u64 = 8 * 1024;

/// The kept pages, and how often reads found one.
#[derive(Debug)]
pub struct PageCache {
    pages: Option<Cache<Vec<u8>, Bytes, PageWeight>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What a page weighs: its key and its bytes.
#[derive(Debug, Clone, Copy)]
struct PageWeight;

impl Weighter<Vec<u8>, Bytes> for PageWeight {
    fn weight(&self, key: &Vec<u8>, page: &Bytes) -> u64 {
        (key.len() + page.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// The counts `/metrics` reports.
#[derive(Debug, Clone, Copy)]
pub struct PageCacheFigures {
    pub hits: u64,
    pub misses: u64,
    pub pages: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

/// Everything a kept page's bytes depend on, besides the store.
#[derive(Debug, Clone, Copy)]
pub struct PageKey<'a> {
    /// The absolute base of every link (host, scheme, prefix).
    pub base: &'a str,
    pub stream: &'a str,
    pub request: PageRequest,
    pub media: &'static str,
    pub embed: Embed,
    pub resolve_links: bool,
}

impl PageKey<'_> {
    /// The key under these settings, lowest visible and last event numbers;
    /// `None` when a page under them may change without a metadata write
    /// (see the module doc).
    fn under(&self, settings: &StreamSettings, first_visible: u64, last: Option<u64>) -> Option<Vec<u8>> {
        let PageStart::Number(start) = self.request.start else { return None };
        if retention::expires_events(settings) || settings.not_public {
            return None;
        }
        // A forward page whose last slot is the last event is at the head
        // (or cut short by its bytes): its bytes last until the next append.
        let ends = start.checked_add(self.request.count - 1);
        let at_head = self.request.direction == Direction::Forward && last.is_some() && ends == last;
        let mut key = Key::with_capacity(self.base.len() + self.stream.len() + self.media.len() + 64);
        key.text(self.base).text(self.stream).text(self.media);
        key.page(start, self.request, self.embed);
        key.byte(u8::from(self.resolve_links)).maybe(settings.metadata_number).number(first_visible);
        key.maybe(last.filter(|_| at_head));
        Some(key.0)
    }
}

/// A key's bytes, written field by field: text ends with a NUL (which never
/// occurs in a stream name, a URL or a media type), numbers take a fixed
/// width, so no two keys' fields run into each other. No formatting: a
/// kept page's key is built on every hit.
struct Key(Vec<u8>);

impl Key {
    fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    fn text(&mut self, text: &str) -> &mut Self {
        self.0.extend_from_slice(text.as_bytes());
        self.byte(0)
    }

    fn number(&mut self, number: u64) -> &mut Self {
        self.0.extend_from_slice(&number.to_le_bytes());
        self
    }

    /// What a page request and its `embed` ask for, from event `start`.
    fn page(&mut self, start: u64, request: PageRequest, embed: Embed) -> &mut Self {
        let direction = match request.direction {
            Direction::Forward => b'f',
            Direction::Backward => b'b',
        };
        self.number(start).number(request.count).byte(direction).byte(embed as u8)
    }

    fn maybe(&mut self, number: Option<u64>) -> &mut Self {
        match number {
            Some(number) => self.byte(1).number(number),
            None => self.byte(0),
        }
    }

    fn byte(&mut self, byte: u8) -> &mut Self {
        self.0.push(byte);
        self
    }
}

/// Everything a kept page of `$all` depends on, besides the store.
#[derive(Debug, Clone, Copy)]
pub struct AllPageKey<'a> {
    pub base: &'a str,
    pub request: PageRequest,
    pub media: &'static str,
    pub embed: Embed,
}

impl AllPageKey<'_> {
    /// The key under the store's epoch of hiding commits; `None` for the
    /// head page, which moves with every append.
    fn under(&self, epoch: u64) -> Option<Vec<u8>> {
        let PageStart::Number(start) = self.request.start else { return None };
        // `$` never starts a stream page's key (a base does): no stream
        // page's key is the same.
        let mut key = Key::with_capacity(self.base.len() + self.media.len() + 48);
        key.text("$all").text(self.base).text(self.media);
        key.page(start, self.request, self.embed).number(epoch);
        Some(key.0)
    }
}

impl PageCache {
    /// A cache of at most `capacity_bytes`; 0 keeps nothing.
    pub fn new(capacity_bytes: u64) -> Self {
        let pages = (capacity_bytes > 0).then(|| {
            let items = usize::try_from(capacity_bytes / TYPICAL_PAGE).unwrap_or(usize::MAX).max(16);
            Cache::with_weighter(items, capacity_bytes, PageWeight)
        });
        Self { pages, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// Whether pages are kept at all.
    pub fn enabled(&self) -> bool {
        self.pages.is_some()
    }

    /// The page kept for `key` under the stream's current `settings`,
    /// lowest visible and last event numbers.
    pub fn get(
        &self,
        key: &PageKey<'_>,
        settings: &StreamSettings,
        first_visible: u64,
        last: Option<u64>,
    ) -> Option<Bytes> {
        // No key is built when nothing is kept.
        self.pages.as_ref()?;
        self.look_up(&key.under(settings, first_visible, last)?)
    }

    /// The key to keep a page just rendered under `settings`,
    /// `first_visible` and `last` by, when it may be kept; the caller checks
    /// the page itself (see the module doc).
    pub fn key_for(
        &self,
        key: &PageKey<'_>,
        settings: &StreamSettings,
        first_visible: u64,
        last: Option<u64>,
    ) -> Option<Vec<u8>> {
        self.pages.as_ref()?;
        key.under(settings, first_visible, last)
    }

    /// The `$all` page kept for `key` under the store's `epoch`.
    pub fn get_all(&self, key: &AllPageKey<'_>, epoch: u64) -> Option<Bytes> {
        self.pages.as_ref()?;
        self.look_up(&key.under(epoch)?)
    }

    /// The page kept under `key`, counted as a hit or a miss.
    fn look_up(&self, key: &[u8]) -> Option<Bytes> {
        let found = self.pages.as_ref()?.get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The key to keep an `$all` page read under `epoch` by, when pages
    /// are kept; the caller checks the page itself (see the module doc).
    pub fn all_key_for(&self, key: &AllPageKey<'_>, epoch: u64) -> Option<Vec<u8>> {
        self.pages.as_ref()?;
        key.under(epoch)
    }

    /// Keeps a page under a key from [`Self::key_for`] or
    /// [`Self::all_key_for`].
    pub fn insert(&self, key: Vec<u8>, page: Bytes) {
        if let Some(pages) = &self.pages {
            pages.insert(key, page);
        }
    }

    pub fn figures(&self) -> PageCacheFigures {
        let (pages, bytes, capacity_bytes) = match &self.pages {
            Some(cache) => (cache.len() as u64, cache.weight(), cache.capacity()),
            None => (0, 0, 0),
        };
        PageCacheFigures {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            pages,
            bytes,
            capacity_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stream: &str) -> PageKey<'_> {
        PageKey {
            base: "http://localhost:2113",
            stream,
            request: PageRequest { start: PageStart::Number(20), direction: Direction::Forward, count: 20 },
            media: "application/atom+xml",
            embed: Embed::None,
            resolve_links: true,
        }
    }

    #[test]
    fn a_metadata_write_makes_the_kept_page_unreachable() {
        let cache = PageCache::new(1 << 20);
        let settings = StreamSettings::default();
        let page = key("orders");
        let kept = cache.key_for(&page, &settings, 0, Some(99)).expect("a plain stream's page is kept");
        cache.insert(kept, Bytes::from_static(b"<feed/>"));
        assert_eq!(cache.get(&page, &settings, 0, Some(99)).as_deref(), Some(&b"<feed/>"[..]));
        let rewritten = StreamSettings { metadata_number: Some(0), ..settings };
        assert_eq!(cache.get(&page, &rewritten, 0, Some(99)), None);
        // Soft-deleted, then written again.
        assert_eq!(cache.get(&page, &settings, 60, Some(99)), None);
        let figures = cache.figures();
        assert_eq!((figures.hits, figures.misses, figures.pages), (1, 2, 1));
    }

    #[test]
    fn a_page_at_the_head_is_kept_until_the_next_append() {
        let cache = PageCache::new(1 << 20);
        let settings = StreamSettings::default();
        // Events 20 to 39, the last being 39.
        let page = key("orders");
        let kept = cache.key_for(&page, &settings, 0, Some(39)).expect("kept");
        cache.insert(kept, Bytes::from_static(b"<feed/>"));
        assert!(cache.get(&page, &settings, 0, Some(39)).is_some());
        assert_eq!(cache.get(&page, &settings, 0, Some(40)), None, "appended to");
        // Away from the head, the last number plays no part.
        assert_eq!(
            cache.key_for(&page, &settings, 0, Some(40)),
            cache.key_for(&page, &settings, 0, Some(41))
        );
        let backward =
            PageKey { request: PageRequest { direction: Direction::Backward, ..page.request }, ..page };
        assert_eq!(
            cache.key_for(&backward, &settings, 0, Some(39)),
            cache.key_for(&backward, &settings, 0, Some(40))
        );
    }

    #[test]
    fn pages_that_change_without_a_metadata_write_are_not_kept() {
        let cache = PageCache::new(1 << 20);
        let page = key("orders");
        for settings in [
            StreamSettings { max_count: Some(10), ..Default::default() },
            StreamSettings { max_age_secs: Some(60), ..Default::default() },
            StreamSettings { not_public: true, ..Default::default() },
        ] {
            assert_eq!(cache.key_for(&page, &settings, 0, Some(99)), None, "{settings:?}");
        }
        let head = PageKey { request: PageRequest { start: PageStart::Head, ..page.request }, ..page };
        assert_eq!(cache.key_for(&head, &StreamSettings::default(), 0, Some(99)), None);
    }

    #[test]
    fn every_field_of_the_request_is_in_the_key() {
        let cache = PageCache::new(1 << 20);
        let settings = StreamSettings::default();
        let page = key("orders");
        let variants = [
            PageKey { base: "http://other:2113", ..page },
            PageKey { stream: "orders2", ..page },
            PageKey { request: PageRequest { count: 21, ..page.request }, ..page },
            PageKey { request: PageRequest { direction: Direction::Backward, ..page.request }, ..page },
            PageKey { request: PageRequest { start: PageStart::Number(21), ..page.request }, ..page },
            PageKey { media: "application/vnd.eventstore.atom+json", ..page },
            PageKey { embed: Embed::Body, ..page },
            PageKey { resolve_links: false, ..page },
        ];
        let original = cache.key_for(&page, &settings, 0, Some(99));
        for variant in variants {
            assert_ne!(cache.key_for(&variant, &settings, 0, Some(99)), original, "{variant:?}");
        }
    }

    #[test]
    fn an_all_page_is_kept_under_the_epoch_and_every_field_of_its_request() {
        let cache = PageCache::new(1 << 20);
        let page = AllPageKey {
            base: "http://localhost:2113",
            request: PageRequest { start: PageStart::Number(40), direction: Direction::Forward, count: 20 },
            media: "application/atom+xml",
            embed: Embed::None,
        };
        let kept = cache.all_key_for(&page, 7).expect("kept");
        cache.insert(kept, Bytes::from_static(b"<feed/>"));
        assert!(cache.get_all(&page, 7).is_some());
        assert_eq!(cache.get_all(&page, 8), None, "a commit hid events since");
        let variants = [
            AllPageKey { base: "http://other:2113", ..page },
            AllPageKey { request: PageRequest { count: 21, ..page.request }, ..page },
            AllPageKey { request: PageRequest { direction: Direction::Backward, ..page.request }, ..page },
            AllPageKey { request: PageRequest { start: PageStart::Number(41), ..page.request }, ..page },
            AllPageKey { media: "application/vnd.eventstore.atom+json", ..page },
            AllPageKey { embed: Embed::Body, ..page },
        ];
        for variant in variants {
            assert_eq!(cache.get_all(&variant, 7), None, "{variant:?}");
        }
        let head = AllPageKey { request: PageRequest { start: PageStart::Head, ..page.request }, ..page };
        assert_eq!(cache.all_key_for(&head, 7), None);
    }

    #[test]
    fn the_cache_holds_no_more_than_its_bytes() {
        let cache = PageCache::new(64 * 1024);
        let settings = StreamSettings::default();
        for stream in 0..100 {
            let name = format!("s-{stream}");
            let kept = cache.key_for(&key(&name), &settings, 0, Some(99)).expect("kept");
            cache.insert(kept, Bytes::from(vec![b'x'; 4096]));
        }
        let figures = cache.figures();
        assert!(figures.bytes <= 64 * 1024, "{figures:?}");
        assert!(figures.pages >= 8, "{figures:?}");
    }

    #[test]
    fn a_cache_of_no_bytes_keeps_nothing() {
        let cache = PageCache::new(0);
        assert!(!cache.enabled());
        assert_eq!(cache.key_for(&key("orders"), &StreamSettings::default(), 0, Some(99)), None);
    }
}
