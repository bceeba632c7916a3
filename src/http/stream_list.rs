//! `GET /streams?prefix=…&after=…&count=…`: the names of streams in name
//! order, filtered by a prefix (`Order-` for a category), paged by the last
//! name seen. `$streams` lists streams in creation order; this finds the
//! streams of a category or with a name among a million in one range scan,
//! which no feed can. Who may read it: those who may read `$streams`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode as encode};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::authorize_read;
use super::error::HttpError;
use super::params::Query;
use crate::security::Principal;
use crate::store::projections::STREAMS_STREAM;

/// Names per page unless `count` says otherwise, and the most it may say.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/streams", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    count: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Response, HttpError> {
    let count = query.count.unwrap_or(DEFAULT_COUNT);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(HttpError::bad_request(format!("count must be between 1 and {MAX_COUNT}.")));
    }
    let settings = state.store.stream_state(STREAMS_STREAM).await?.map(|found| found.settings);
    authorize_read(&state, &principal, STREAMS_STREAM, settings).await?;
    let found = state.store.list_streams(&query.prefix, query.after.as_deref(), count).await?;
    let streams: Vec<_> = (found.iter())
        .map(|(name, stream)| {
            json!({
                "name": name,
                "lastEventNumber": stream.next_number.checked_sub(1),
                "deleted": stream.soft_deleted,
                "hardDeleted": stream.tombstoned,
            })
        })
        .collect();
    // A full page may have more after it: the next page starts after its
    // last name. `after` goes in the query as given, so it is encoded here.
    let next = (found.len() == count).then(|| {
        let last = found.last().map_or("", |(name, _)| name.as_str());
        format!(
            "/streams?prefix={}&after={}&count={count}",
            encode(&query.prefix, NON_ALPHANUMERIC),
            encode(last, NON_ALPHANUMERIC)
        )
    });
    let body = json!({ "prefix": query.prefix, "streams": streams, "next": next });
    let mut response = body.to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Changes with every new stream, and names are not for shared caches.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
