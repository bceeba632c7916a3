//! A plain HTML rendering of feeds and events, for people who open a stream
//! in a browser: the entries as a table, the paging links as links. No
//! scripts; the page works with any browser and any cache.

use std::fmt::Write;

use super::time::rfc3339;
use super::{EventUrls, Feed, Urls};
use crate::store::ReadEvent;

/// Renders a feed page.
pub fn render_feed(feed: &Feed, urls: &Urls) -> Vec<u8> {
    let mut out = String::with_capacity(8192);
    page_start(&mut out, &feed.title);
    out.push_str("<nav>");
    for link in &feed.links {
        if link.relation == "self" {
            continue;
        }
        let _ = write!(out, "<a rel=\"{0}\" href=\"{1}\">{0}</a> ", link.relation, escape(&link.uri));
    }
    out.push_str("</nav>\n");
    let _ = writeln!(
        out,
        "<p>{} entries{}</p>",
        feed.entries.len(),
        if feed.head_of_stream { " · head of stream" } else { "" }
    );
    out.push_str(
        "<table>\n<thead><tr><th>Event</th><th>Type</th><th>Created (UTC)</th><th>Id</th></tr></thead>\n<tbody>\n",
    );
    let mut event_urls = EventUrls::new(urls);
    for read in &feed.entries {
        let event = &read.event;
        let url = event_urls.event(&event.stream, event.number);
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}\">{}@{}</a></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&url),
            event.number,
            escape(&event.stream),
            escape(&read.original().event_type),
            rfc3339(read.original().created_micros),
            event.id,
        );
    }
    out.push_str("</tbody>\n</table>\n");
    page_end(&mut out);
    out.into_bytes()
}

/// Renders one event: its headers and its payload as preformatted text.
pub fn render_event(read: &ReadEvent, urls: &Urls) -> Vec<u8> {
    let event = &read.event;
    let mut out = String::with_capacity(4096);
    page_start(&mut out, &format!("{}@{}", event.number, event.stream));
    let _ = writeln!(
        out,
        "<nav><a rel=\"up\" href=\"{}\">stream</a></nav>\n<dl><dt>Type</dt><dd>{}</dd><dt>Id</dt><dd><code>{}</code></dd><dt>Created (UTC)</dt><dd>{}</dd></dl>",
        escape(&urls.stream(&event.stream)),
        escape(&event.event_type),
        event.id,
        rfc3339(event.created_micros),
    );
    let _ = writeln!(out, "<h2>Data</h2>\n<pre>{}</pre>", escape(&payload(&event.data, event.is_json)));
    if !event.metadata.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Metadata</h2>\n<pre>{}</pre>",
            escape(&payload(&event.metadata, event.metadata_is_json))
        );
    }
    page_end(&mut out);
    out.into_bytes()
}

/// Renders a notice: a title and a line of text (a failure explained to a
/// person, or an answer that has nothing to show).
pub fn render_notice(title: &str, text: &str) -> Vec<u8> {
    let mut out = String::with_capacity(1024);
    page_start(&mut out, title);
    let _ = writeln!(out, "<p>{}</p>", escape(text));
    page_end(&mut out);
    out.into_bytes()
}

fn payload(bytes: &[u8], is_json: bool) -> String {
    if is_json {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Ok(pretty) = serde_json::to_string_pretty(&value) {
                return pretty;
            }
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}

fn page_start(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{0}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;}}table{{border-collapse:collapse;}}\
         td,th{{padding:.25rem .75rem;text-align:left;border-bottom:1px solid #ddd;}}\
         nav a{{margin-right:1rem;}}pre{{background:#f6f6f6;padding:1rem;overflow:auto;}}</style>\n\
         </head>\n<body>\n<h1>{0}</h1>\n",
        escape(title)
    );
}

fn page_end(out: &mut String) {
    out.push_str("</body>\n</html>\n");
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
