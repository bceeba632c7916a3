//! `/streams/$all` (also `/streams/%24all`): every event in commit order,
//! paged by global position. Not writable.

use axum::http::HeaderMap;

use super::AppState;
use super::error::HttpError;
use super::live::Rendered;
use super::params::ReadQuery;
use super::streams::render_feed;
use crate::feed::{self, PageRequest, PageStart, Urls};
use crate::store::{AllRead, StreamSettings};

/// `{position}` of an `$all` page route: `head` or 32 hex digits.
pub(super) fn page_start(text: &str) -> Result<PageStart, HttpError> {
    if text.eq_ignore_ascii_case("head") {
        return Ok(PageStart::Head);
    }
    feed::parse_position(text).map(PageStart::Number).ok_or_else(|| {
        HttpError::bad_request(format!("'{text}' is not valid position"))
            .with_detail("Positions in $all are 32 hex digits, as in the links of its pages, or 'head'.")
    })
}

/// Reads and renders one page of `$all`.
pub(super) async fn page(
    state: &AppState,
    urls: &Urls,
    request: PageRequest,
    query: &ReadQuery,
    headers: &HeaderMap,
    media: &'static str,
) -> Result<Rendered, HttpError> {
    let read = AllRead {
        from: match request.start {
            PageStart::Head => None,
            PageStart::Number(position) => Some(position),
        },
        direction: request.direction,
        count: request.count,
    };
    let slice = state.store.read_all(read).await?;
    let feed = feed::all_feed(urls, request, slice);
    Ok(render_feed(headers, urls, feed, &StreamSettings::default(), media, query.embed()))
}
