//! How groups survive restarts, through the [`Store`] trait only and in
//! v5's system streams, so any store implementation gets persistence for
//! free:
//!
//! | stream | each event | metadata |
//! |---|---|---|
//! | `$persistentSubscriptionConfig` | `$PersistentConfig`: every group with its settings (a full snapshot) | `$maxCount: 1` |
//! | `$persistentsubscription-{s}::{g}-checkpoint` | `$SubscriptionCheckpoint`: the last processed number (`$all`: position), as v5 writes it | `$maxCount: 1` |
//! | `$persistentsubscription-{s}::{g}-parked` | `$>` link `"{n}@{stream}"` to the message as the group read it | `$tb` moves past replayed messages |
//!
//! (v5's names, as [`names`] gives them to every group whose name keeps its
//! rule, and names of their own to older groups that break it.)
//!
//! A checkpoint event's data is v5's: everything at or below that number
//! is processed. Its metadata may add `done`, ranges of processed messages
//! above it (messages acknowledged while an older one was still
//! outstanding), so that a crash does not redeliver them.

use bytes::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use super::names::{CONFIG_STREAM, GroupStream, checkpoint_stream, parked_stream};
use super::settings::Settings;
use super::state::{Checkpoint, Message, ParkRequest};
use crate::store::metadata::{METADATA_EVENT_TYPE, metadata_stream};
use crate::store::{
    Append, Direction, ExpectedVersion, LINK_EVENT_TYPE, ProposedEvent, ReadEvent, Store, StoreError,
    StreamRead, StreamView,
};

/// The event type of config snapshots (v5 writes `$PersistentConfig1`; the
/// format here is eventfeed's own, so the name differs).
pub const CONFIG_EVENT_TYPE: &str = "$PersistentConfig";
/// The event type of checkpoints, v5's.
pub const CHECKPOINT_EVENT_TYPE: &str = "$SubscriptionCheckpoint";

/// The version of the config snapshot format.
const CONFIG_VERSION: u64 = 1;

/// A group as the config stream records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub stream: String,
    pub group: String,
    /// Where the group starts without a checkpoint: `startFrom` resolved
    /// when the group was created (`-1` becomes the end of the source at
    /// that moment), so a restart before the first checkpoint never skips
    /// what was appended in between.
    pub start_at: u64,
    pub settings: Settings,
}

pub fn encode_config(groups: &[StoredGroup]) -> Bytes {
    let entries: Vec<Value> = groups
        .iter()
        .map(|group| {
            json!({
                "stream": group.stream,
                "group": group.group,
                "startAt": group.start_at,
                "settings": group.settings.to_json(),
            })
        })
        .collect();
    Bytes::from(json!({ "version": CONFIG_VERSION, "entries": entries }).to_string())
}

pub fn decode_config(data: &[u8]) -> Result<Vec<StoredGroup>, String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("config is not JSON: {e}"))?;
    if value["version"].as_u64() != Some(CONFIG_VERSION) {
        return Err(format!("config has unknown version {}", value["version"]));
    }
    let entries = value["entries"].as_array().ok_or("config has no entries")?;
    entries
        .iter()
        .map(|entry| {
            let text = |key: &str| entry[key].as_str().map(str::to_owned).ok_or(format!("entry lacks {key}"));
            let stream = text("stream")?;
            let Value::Object(settings) = &entry["settings"] else {
                return Err(format!("entry {stream} lacks settings"));
            };
            Ok(StoredGroup {
                settings: Settings::from_object(settings, stream == crate::feed::ALL_STREAM)
                    .map_err(|e| e.to_string())?,
                group: text("group")?,
                start_at: entry["startAt"].as_u64().ok_or("entry lacks startAt")?,
                stream,
            })
        })
        .collect()
}

/// The checkpoint event's data (v5's form) and metadata (the done ranges).
pub fn encode_checkpoint(checkpoint: &Checkpoint, is_all: bool) -> (Bytes, Bytes) {
    let data = match (checkpoint.last_processed(), is_all) {
        (None, _) => json!(-1),
        (Some(position), true) => json!(crate::feed::format_position(position)),
        (Some(number), false) => json!(number),
    };
    let metadata = if checkpoint.done.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(json!({ "done": checkpoint.done }).to_string())
    };
    (Bytes::from(data.to_string()), metadata)
}

pub fn decode_checkpoint(data: &[u8], metadata: &[u8]) -> Result<Checkpoint, String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("checkpoint is not JSON: {e}"))?;
    let next = match &value {
        Value::Number(number) => match number.as_i64() {
            Some(-1) => 0,
            Some(last) => u64::try_from(last).map_err(|_| format!("bad checkpoint {last}"))? + 1,
            None => return Err(format!("bad checkpoint {number}")),
        },
        Value::String(text) => {
            let last = crate::feed::parse_position(text)
                .or_else(|| text.parse().ok())
                .ok_or(format!("bad checkpoint {text}"))?;
            last + 1
        }
        other => return Err(format!("bad checkpoint {other}")),
    };
    let mut done = Vec::new();
    if !metadata.is_empty() {
        let value: Value =
            serde_json::from_slice(metadata).map_err(|e| format!("checkpoint metadata is not JSON: {e}"))?;
        for range in value["done"].as_array().into_iter().flatten() {
            match (range[0].as_u64(), range[1].as_u64()) {
                (Some(start), Some(end)) if start <= end && start > next => done.push((start, end)),
                _ => return Err(format!("bad done range {range}")),
            }
        }
    }
    done.sort_unstable();
    Ok(Checkpoint { next, done })
}

/// `"{n}@{stream}"`, the data of a link event.
pub fn link_data(number: u64, stream: &str) -> String {
    format!("{number}@{stream}")
}

pub fn parse_link(data: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(data).ok()?;
    let (number, stream) = text.split_once('@')?;
    Some((number.parse().ok()?, stream.to_owned()))
}

/// The stream a message belongs to for `Pinned`: the resolved event's, or
/// for an unresolved link, its target's.
pub fn pin_of(read: &ReadEvent) -> String {
    if read.link.is_none() && read.event.is_link() {
        if let Some((_, stream)) = parse_link(&read.event.data) {
            return stream;
        }
    }
    read.event.stream.to_string()
}

fn event(event_type: &str, is_json: bool, data: Bytes, metadata: Bytes) -> ProposedEvent {
    ProposedEvent {
        id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        is_json,
        data,
        metadata_is_json: !metadata.is_empty(),
        metadata,
    }
}

async fn append(store: &dyn Store, stream: String, events: Vec<ProposedEvent>) -> Result<(), StoreError> {
    store.append(Append { stream, expected: ExpectedVersion::Any, events, access: None }).await.map(|_| ())
}

/// Sets a stream's metadata document.
pub async fn set_metadata(store: &dyn Store, stream: &str, document: Value) -> Result<(), StoreError> {
    let metadata = event(METADATA_EVENT_TYPE, true, Bytes::from(document.to_string()), Bytes::new());
    append(store, metadata_stream(stream), vec![metadata]).await
}

pub async fn load_config(store: &dyn Store) -> Result<Vec<StoredGroup>, StoreError> {
    match crate::store::last_event(store, CONFIG_STREAM).await? {
        Some(read) => decode_config(&read.event.data).map_err(StoreError::Corrupt),
        None => Ok(Vec::new()),
    }
}

/// Writes the full list of groups. The first write also caps the config
/// stream at its latest event.
pub async fn write_config(store: &dyn Store, groups: &[StoredGroup]) -> Result<(), StoreError> {
    if store.stream_state(CONFIG_STREAM).await?.is_none() {
        set_metadata(store, CONFIG_STREAM, json!({ "$maxCount": 1 })).await?;
    }
    let snapshot = event(CONFIG_EVENT_TYPE, true, encode_config(groups), Bytes::new());
    append(store, CONFIG_STREAM.to_owned(), vec![snapshot]).await
}

pub async fn load_checkpoint(
    store: &dyn Store,
    stream: &str,
    group: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    match crate::store::last_event(store, &checkpoint_stream(stream, group)).await? {
        Some(read) => {
            decode_checkpoint(&read.event.data, &read.event.metadata).map(Some).map_err(StoreError::Corrupt)
        }
        None => Ok(None),
    }
}

pub async fn write_checkpoint(
    store: &dyn Store,
    stream: &str,
    group: &str,
    checkpoint: &Checkpoint,
    is_all: bool,
) -> Result<(), StoreError> {
    let (data, metadata) = encode_checkpoint(checkpoint, is_all);
    let checkpoint = event(CHECKPOINT_EVENT_TYPE, true, data, metadata);
    append(store, checkpoint_stream(stream, group), vec![checkpoint]).await
}

/// Appends parked messages, all or none, as links to where the group read
/// them (so a replay hands back the very same message, with the same id).
pub async fn park(
    store: &dyn Store,
    stream: &str,
    group: &str,
    requests: &[ParkRequest],
) -> Result<(), StoreError> {
    let events = requests
        .iter()
        .map(|request| {
            let original = request.message.event.original();
            let metadata = json!({
                "reason": request.reason,
                "eventStreamId": &*request.message.event.event.stream,
                "eventNumber": request.message.event.event.number,
                "eventId": request.message.event.event.id.to_string(),
            });
            event(
                LINK_EVENT_TYPE,
                false,
                Bytes::from(link_data(original.number, &original.stream)),
                Bytes::from(metadata.to_string()),
            )
        })
        .collect();
    append(store, parked_stream(stream, group), events).await
}

/// A stream's state as reads see it: `None` when it does not exist.
pub async fn stream_view(store: &dyn Store, stream: &str) -> Result<Option<StreamView>, StoreError> {
    let read = StreamRead {
        stream: stream.to_owned(),
        from: None,
        direction: Direction::Backward,
        count: 1,
        resolve_links: false,
    };
    match store.read_stream(read).await {
        Ok(slice) => Ok(Some(slice.view)),
        Err(StoreError::StreamNotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The parked stream's state: `None` when nothing was ever parked.
pub async fn parked_view(
    store: &dyn Store,
    stream: &str,
    group: &str,
) -> Result<Option<StreamView>, StoreError> {
    stream_view(store, &parked_stream(stream, group)).await
}

/// The first parked message not replayed yet (0 when nothing was parked).
pub async fn parked_first(store: &dyn Store, stream: &str, group: &str) -> Result<u64, StoreError> {
    Ok(parked_view(store, stream, group).await?.map_or(0, |view| view.first_visible))
}

/// Removes what a group left in the store.
pub async fn delete_group_streams(store: &dyn Store, stream: &str, group: &str) -> Result<(), StoreError> {
    for kind in GroupStream::ALL {
        delete_stream(store, &kind.name(stream, group)).await?;
    }
    Ok(())
}

/// Soft-deletes a stream; a stream that is not there is fine.
pub async fn delete_stream(store: &dyn Store, stream: &str) -> Result<(), StoreError> {
    match store.delete(stream, ExpectedVersion::Any, false).await {
        Ok(()) | Err(StoreError::StreamNotFound) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Rebuilds a message from a parked link: reads the event the link names
/// as the group reads its source.
pub async fn resolve_parked(
    store: &dyn Store,
    parked: &ReadEvent,
    resolve_links: bool,
    is_all: bool,
) -> Result<Option<Message>, StoreError> {
    let Some((number, stream)) = parse_link(&parked.event.data) else { return Ok(None) };
    let mut read = match store.read_event(&stream, number, resolve_links).await {
        Ok((_, read)) => read,
        Err(StoreError::StreamNotFound | StoreError::StreamDeleted) => return Ok(None),
        Err(error) => return Err(error),
    };
    if read.is_none() && resolve_links {
        // A link whose target is gone is still delivered, as the link.
        read = store.read_event(&stream, number, false).await.ok().and_then(|(_, read)| read);
    }
    Ok(read.map(|read| {
        let original = read.original();
        Message {
            id: original.id,
            position: if is_all { original.position } else { original.number },
            pin: pin_of(&read),
            origin: super::state::Origin::Parked(parked.event.number),
            event: read,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_in_v5s_form() {
        let checkpoint = Checkpoint { next: 11, done: vec![(13, 20), (25, 25)] };
        let (data, metadata) = encode_checkpoint(&checkpoint, false);
        assert_eq!(&data[..], b"10");
        assert_eq!(decode_checkpoint(&data, &metadata), Ok(checkpoint));
        let (data, metadata) = encode_checkpoint(&Checkpoint { next: 27, done: vec![] }, true);
        assert_eq!(&data[..], br#""000000000000001A000000000000001A""#);
        assert!(metadata.is_empty());
        assert_eq!(decode_checkpoint(&data, &metadata).map(|c| c.next), Ok(27));
        assert_eq!(decode_checkpoint(b"-1", b"").map(|c| c.next), Ok(0));
        assert!(decode_checkpoint(b"-2", b"").is_err());
        assert!(decode_checkpoint(b"5", br#"{"done":[[3,4]]}"#).is_err(), "ranges lie above the checkpoint");
    }

    #[test]
    fn config_round_trips() {
        let groups = vec![
            StoredGroup { stream: "s".into(), group: "g".into(), start_at: 4, settings: Settings::default() },
            StoredGroup {
                stream: "$all".into(),
                group: "h".into(),
                start_at: 0,
                settings: Settings { max_subscriber_count: 0, ..Settings::default() },
            },
        ];
        assert_eq!(decode_config(&encode_config(&groups)), Ok(groups));
    }

    #[test]
    fn links_parse() {
        assert_eq!(parse_link(b"12@Order-1@x"), Some((12, "Order-1@x".into())));
        assert_eq!(parse_link(b"x@y"), None);
    }
}
