//! Walking a feed page by page. [`Walk`] follows `previous` links (forward,
//! oldest page first) or `next` links (backward, from the head) and keeps
//! every page it read; [`Pages`] gives their entries, events, titles or
//! event numbers, oldest first. Every page walk in the tests is a `Walk`.

#![allow(dead_code)]

use std::ops::Deref;

use reqwest::Client;
use serde_json::Value;

use super::http::ATOM_JSON;

/// The `uri` of a feed link by relation.
pub fn link(page: &Value, relation: &str) -> Option<String> {
    page["links"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["uri"].as_str().unwrap().to_owned())
}

/// Every event of a stream, oldest first, by walking forward pages.
pub async fn read_all_events(client: &Client, base: &str, stream: &str) -> Vec<Value> {
    Walk::forward(client, format!("{base}/streams/{stream}/0/forward/100"))
        .query("?embed=body")
        .until_missing()
        .pages()
        .await
        .events()
}

/// A walk along a feed's links, read as `application/vnd.eventstore.atom+json`.
/// It ends at the first page without a link onwards (or as set up with
/// [`Walk::until_empty`] and [`Walk::until_missing`]); every page it reads
/// must be 200.
#[derive(Debug)]
pub struct Walk<'a> {
    client: &'a Client,
    /// The first page's address.
    start: String,
    /// `previous` (forward) or `next` (backward).
    relation: &'static str,
    /// Appended to every address, since links drop the query.
    query: &'a str,
    /// Sent with every request besides `Accept`.
    headers: Vec<(&'a str, &'a str)>,
    /// The `Host` the pages are read with, and the base URL to read its
    /// links from instead.
    host: Option<(&'a str, &'a str)>,
    /// A 404 ends the walk instead of failing it.
    until_missing: bool,
    /// An empty page ends the walk even if it links onwards.
    until_empty: bool,
    /// A guard against a walk that never ends.
    max_pages: usize,
}

impl<'a> Walk<'a> {
    /// From `start` along `previous` links: the oldest page first.
    pub fn forward(client: &'a Client, start: impl Into<String>) -> Self {
        Self::new(client, start.into(), "previous")
    }

    /// From `start` (usually the head) along `next` links: the newest page
    /// first.
    pub fn backward(client: &'a Client, start: impl Into<String>) -> Self {
        Self::new(client, start.into(), "next")
    }

    fn new(client: &'a Client, start: String, relation: &'static str) -> Self {
        Self {
            client,
            start,
            relation,
            query: "",
            headers: Vec::new(),
            host: None,
            until_missing: false,
            until_empty: false,
            max_pages: 10_000,
        }
    }

    /// Appended to every page's address (links carry no query), such as
    /// `?embed=body`.
    pub fn query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    /// A request header for every page.
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Pages are read with `Host: host`, so their links name `host`; read
    /// each from `base` instead.
    pub fn host(mut self, host: &'a str, base: &'a str) -> Self {
        self.host = Some((host, base));
        self
    }

    /// A 404 ends the walk (the stream does not exist, or no longer does).
    pub fn until_missing(mut self) -> Self {
        self.until_missing = true;
        self
    }

    /// An empty page ends the walk, even if it links onwards.
    pub fn until_empty(mut self) -> Self {
        self.until_empty = true;
        self
    }

    /// Fails the test if the walk has not ended after this many pages
    /// (10,000 unless set).
    pub fn max_pages(mut self, max_pages: usize) -> Self {
        self.max_pages = max_pages;
        self
    }

    /// Reads every page of the walk.
    pub async fn pages(self) -> Pages {
        let forward = self.relation == "previous";
        let mut pages = Vec::new();
        let mut url = self.start.clone();
        for _ in 0..self.max_pages {
            let address = match self.host {
                Some((host, base)) => {
                    let path = url.strip_prefix(&format!("http://{host}")).unwrap();
                    format!("{base}{path}{}", self.query)
                }
                None => format!("{url}{}", self.query),
            };
            let mut request = self.client.get(&address).header("accept", ATOM_JSON);
            if let Some((host, _)) = self.host {
                request = request.header("host", host);
            }
            for (name, value) in &self.headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            if self.until_missing && response.status() == 404 {
                return Pages { pages, forward };
            }
            assert_eq!(response.status(), 200, "{address}");
            let body: Value = response.json().await.unwrap();
            let onwards = link(&body, self.relation);
            let page = Page { url, body };
            let empty = page.entries().is_empty();
            pages.push(page);
            match onwards {
                Some(onwards) if !(empty && self.until_empty) => url = onwards,
                _ => return Pages { pages, forward },
            }
        }
        panic!(
            "walking from {} along `{}` links did not end within {} pages",
            self.start, self.relation, self.max_pages
        );
    }
}

/// One page a walk read.
#[derive(Debug)]
pub struct Page {
    /// Its address as the walk found it (before [`Walk::query`] and
    /// [`Walk::host`] apply).
    pub url: String,
    pub body: Value,
}

impl Page {
    /// Its entries, newest first as served.
    pub fn entries(&self) -> &[Value] {
        self.body["entries"].as_array().unwrap()
    }

    pub fn link(&self, relation: &str) -> Option<String> {
        link(&self.body, relation)
    }
}

/// The pages of one walk, in the order read.
#[derive(Debug)]
pub struct Pages {
    pages: Vec<Page>,
    /// Whether the walk went forward (oldest page first).
    forward: bool,
}

impl Deref for Pages {
    type Target = [Page];

    fn deref(&self) -> &[Page] {
        &self.pages
    }
}

impl Pages {
    /// Every entry, oldest first. (Each page lists its entries newest
    /// first; a forward walk reads the oldest page first, a backward walk
    /// the newest.)
    pub fn entries(&self) -> Vec<&Value> {
        if self.forward {
            self.pages.iter().flat_map(|page| page.entries().iter().rev()).collect()
        } else {
            let mut entries: Vec<&Value> = self.pages.iter().flat_map(Page::entries).collect();
            entries.reverse();
            entries
        }
    }

    /// Every entry, oldest first, as owned values.
    pub fn events(&self) -> Vec<Value> {
        self.entries().into_iter().cloned().collect()
    }

    /// Every entry's `n@stream` title, oldest first.
    pub fn titles(&self) -> Vec<String> {
        titles(self.entries())
    }

    /// Every entry's event number (the `n` of its `n@stream` title),
    /// oldest first.
    pub fn numbers(&self) -> Vec<u64> {
        self.entries().into_iter().map(title_number).collect()
    }
}

/// `n@stream` titles of entries.
pub fn titles<'v>(entries: impl IntoIterator<Item = &'v Value>) -> Vec<String> {
    entries.into_iter().map(|e| e["title"].as_str().unwrap().to_owned()).collect()
}

/// The `n` of an entry's `n@stream` title.
pub fn title_number(entry: &Value) -> u64 {
    entry["title"].as_str().unwrap().split('@').next().unwrap().parse::<u64>().unwrap()
}

/// The entries' titles of one page given as JSON text, newest first as
/// served.
pub fn page_titles(page: &str) -> Vec<String> {
    let page: Value = serde_json::from_str(page).unwrap();
    titles(page["entries"].as_array().unwrap())
}

/// Replaces event timestamps (the only part of a page that depends on when
/// the test ran) with a fixed one.
pub fn normalise_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if is_timestamp(&bytes[i..]) {
            out.push_str("2000-01-01T00:00:00.000000Z");
            i += 27;
        } else {
            out.push(text[i..].chars().next().unwrap());
            i += text[i..].chars().next().unwrap().len_utf8();
        }
    }
    out
}

fn is_timestamp(bytes: &[u8]) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    bytes.len() >= SHAPE.len()
        && SHAPE
            .iter()
            .zip(bytes)
            .all(|(shape, byte)| if *shape == b'd' { byte.is_ascii_digit() } else { shape == byte })
}
