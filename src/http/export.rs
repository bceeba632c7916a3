//! `GET /admin/export`: the whole store as an export (NDJSON, the format
//! of `eventfeed export`, see `transfer::format`), streamed as it is read,
//! at the head the request found: what `eventfeed backup` takes from a
//! running server. `$admins` only.
//!
//! The store's states are read between two of its writer's batches (the
//! only pause appends see), and scavenges are held off until the response
//! ends; then the entries are read while appends go on. The response is
//! `200` once the snapshot is taken; a failure after that cuts the body
//! short, which a reader sees as an export without its end line.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::AppState;
use super::auth::authorize_task;
use super::error::HttpError;
use crate::security::Principal;
use crate::security::acl::Task;
use crate::transfer::format::TransferError;
use crate::transfer::{Quiet, Sink, write_export};

/// The media type of an export.
const NDJSON: &str = "application/x-ndjson";

/// The `eventfeed-head-position` header: the head the export was read at.
const HEAD_POSITION: &str = "eventfeed-head-position";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/admin/export", get(export))
}

async fn export(State(state): State<AppState>, principal: Principal) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::Export)?;
    let snapshot = state.store.export_snapshot().await?;
    let head = snapshot.head.next_position;
    // A few chunks in flight: the export reads ahead of a slow client by
    // no more than that.
    let (sender, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut sink = ChannelSink(sender.clone());
        let source = store.backend_name();
        if let Err(error) = write_export(store.as_ref(), snapshot, source, &mut sink, &Quiet).await {
            tracing::error!(%error, "an export was cut short");
            let _ = sender.send(Err(std::io::Error::other(error.to_string()))).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |context| receiver.poll_recv(context)));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HEAD_POSITION, HeaderValue::from(head));
    Ok(response)
}

/// The response body, a chunk at a time.
struct ChannelSink(mpsc::Sender<Result<Bytes, std::io::Error>>);

#[async_trait::async_trait]
impl Sink for ChannelSink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), TransferError> {
        self.0.send(Ok(Bytes::from(bytes))).await.map_err(|_| TransferError::new("the client went away"))
    }
}
