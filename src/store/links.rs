//! Link events: how an entry of a system stream (`$ce-`, `$et-`,
//! `$streams`) is shown to readers. Every backend stores a link as whatever
//! suits it (the target's position, creation time, number and stream) and
//! presents it through [`link_event`], so that the same link reads the same,
//! id included, whichever backend holds it.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use uuid::Uuid;

use super::{LINK_EVENT_TYPE, RecordedEvent};

/// The type of every `$>` event, shared by every link a read returns.
pub static LINK_TYPE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(LINK_EVENT_TYPE));

/// The `$>` event that stands for link `number` of system stream `stream`,
/// pointing at event `target_number` of `target_stream` (at global position
/// `target_position`, created at `created_micros`). A link has its target's
/// position and creation time; its data is `"{n}@{stream}"`.
pub fn link_event(
    stream: &str,
    number: u64,
    target_position: u64,
    created_micros: i64,
    target_number: u64,
    target_stream: &str,
) -> RecordedEvent {
    RecordedEvent {
        stream: stream.into(),
        number,
        position: target_position,
        id: link_id(target_position, stream),
        event_type: LINK_TYPE.clone(),
        created_micros,
        is_json: false,
        metadata_is_json: false,
        data: Bytes::from(format!("{target_number}@{target_stream}")),
        metadata: Bytes::new(),
    }
}

/// A stable id for a link: links are not stored as records, so their id is
/// derived from what identifies them (the target position and the system
/// stream) as a version-8 (custom) UUID. The same link has the same id on
/// every read, every node, every restart and every backend.
pub fn link_id(target_position: u64, stream: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&target_position.to_be_bytes());
    bytes[8..].copy_from_slice(&crate::hash::fnv1a_64(stream.as_bytes()).to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_names_its_target_and_keeps_its_id() {
        let link = link_event("$ce-Order", 3, 17, 1_000, 5, "Order-1");
        assert_eq!(&*link.stream, "$ce-Order");
        assert_eq!((link.number, link.position, link.created_micros), (3, 17, 1_000));
        assert_eq!(&link.data[..], b"5@Order-1");
        assert!(link.is_link());
        assert_eq!(link.id, link_id(17, "$ce-Order"));
        assert_ne!(link.id, link_id(17, "$et-Placed"));
        assert_ne!(link.id, link_id(18, "$ce-Order"));
        assert_eq!(link.id.get_version_num(), 8);
    }
}
