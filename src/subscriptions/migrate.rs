//! At start, before any group runs: a group created before the rule on
//! group names (see [`super::names`]) that breaks it kept its checkpoint
//! and parked messages under v5's names, which may be another group's
//! (that is why the rule exists). They move to the group's own names, and
//! v5's names are left to the group they name now.
//!
//! Every step can be repeated, so the next start finishes what a crash
//! interrupted: copies keep the ids of the events they copy and go in the
//! same batches each time, so a repeated batch is an idempotent retry; the
//! old streams are deleted only once copied; and the group is marked as
//! moved last, by capping its new checkpoint stream at one event as
//! creating a group does (so a group created since the rule never moves).
//!
//! Groups whose v5 names already coincided before the upgrade shared
//! those streams, and nothing in them says which group wrote what. The
//! shared checkpoint is then dropped, so that every group sharing it
//! starts again from where it was created: at-least-once delivery allows
//! redelivering, never skipping. The shared parked messages stay where they
//! are, at the v5 names.

use serde_json::json;

use super::names::{GroupStream, checkpoint_stream, keeps_v5_names};
use super::persist::{self, StoredGroup};
use crate::store::metadata::metadata_stream;
use crate::store::{
    Append, Direction, ExpectedVersion, ProposedEvent, RecordedEvent, Store, StoreError, StreamRead,
};

/// Events copied per append: one read of the old stream and one atomic
/// append, small enough for any store, and parked streams seldom hold more.
const COPY_BATCH: u64 = 500;

/// Moves the streams of every group in `groups` that breaks the rule on
/// group names and has not moved yet.
pub async fn run(store: &dyn Store, groups: &[StoredGroup]) -> Result<(), StoreError> {
    for group in groups.iter().filter(|group| !keeps_v5_names(&group.group)) {
        let checkpoints = checkpoint_stream(&group.stream, &group.group);
        if store.stream_state(&metadata_stream(&checkpoints)).await?.is_some() {
            continue;
        }
        let (stream, name) = (group.stream.as_str(), group.group.as_str());
        let old = |kind: GroupStream| kind.v5_name(stream, name);
        let own = v5_checkpoints(group);
        let sharers: Vec<(&str, &str)> = groups
            .iter()
            .filter(|other| *other != group && v5_checkpoints(other) == own)
            .map(|other| (other.stream.as_str(), other.group.as_str()))
            .collect();
        if sharers.is_empty() {
            for kind in GroupStream::ALL {
                let copied = copy_stream(store, &old(kind), &kind.name(stream, name)).await?;
                tracing::info!(%stream, group = %name, stream_kind = ?kind, copied, "moved a group's stream to a name of its own");
            }
            for kind in GroupStream::ALL {
                persist::delete_stream(store, &old(kind)).await?;
            }
        } else {
            tracing::warn!(
                %stream, group = %name, ?sharers,
                "groups shared a checkpoint under v5's names; it is dropped, and each of them starts again from where it was created"
            );
            persist::delete_stream(store, &old(GroupStream::Checkpoint)).await?;
        }
        persist::set_metadata(store, &checkpoints, json!({ "$maxCount": 1 })).await?;
    }
    Ok(())
}

/// The v5 name of `group`'s checkpoint stream: groups share it exactly
/// when they share every v5 name, since the names differ only in the kind.
fn v5_checkpoints(group: &StoredGroup) -> String {
    GroupStream::Checkpoint.v5_name(&group.stream, &group.group)
}

/// Copies the events reads see of `from` to the end of `to`, with their
/// ids, types, data and metadata, [`COPY_BATCH`] numbers at a time from
/// the first one visible. Returns how many were copied.
async fn copy_stream(store: &dyn Store, from: &str, to: &str) -> Result<u64, StoreError> {
    let Some(view) = persist::stream_view(store, from).await? else { return Ok(0) };
    let mut copied = 0;
    let mut next = view.first_visible;
    while next <= view.last_number {
        let read = StreamRead {
            stream: from.to_owned(),
            from: Some(next),
            direction: Direction::Forward,
            count: COPY_BATCH,
            resolve_links: false,
        };
        let events: Vec<ProposedEvent> =
            store.read_stream(read).await?.events.iter().map(|read| copy_of(&read.event)).collect();
        next += COPY_BATCH;
        if !events.is_empty() {
            copied += events.len() as u64;
            store
                .append(Append {
                    stream: to.to_owned(),
                    expected: ExpectedVersion::Any,
                    events,
                    access: None,
                })
                .await?;
        }
    }
    Ok(copied)
}

fn copy_of(event: &RecordedEvent) -> ProposedEvent {
    ProposedEvent {
        id: event.id,
        event_type: event.event_type.to_string(),
        is_json: event.is_json,
        data: event.data.clone(),
        metadata_is_json: event.metadata_is_json,
        metadata: event.metadata.clone(),
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::projections::Projections;
    use crate::subscriptions::names::parked_stream;
    use crate::subscriptions::settings::Settings;

    fn group(stream: &str, name: &str) -> StoredGroup {
        StoredGroup { stream: stream.into(), group: name.into(), start_at: 0, settings: Settings::default() }
    }

    async fn append(store: &dyn Store, stream: &str, data: impl Iterator<Item = String>) {
        let events = data
            .map(|data| ProposedEvent {
                id: Uuid::new_v4(),
                event_type: "$>".into(),
                is_json: false,
                data: Bytes::from(data),
                metadata_is_json: false,
                metadata: Bytes::new(),
            })
            .collect();
        let append = Append { stream: stream.into(), expected: ExpectedVersion::Any, events, access: None };
        store.append(append).await.expect("the memory store appends");
    }

    async fn events(store: &dyn Store, stream: &str) -> Vec<RecordedEvent> {
        let read = StreamRead {
            stream: stream.into(),
            from: Some(0),
            direction: Direction::Forward,
            count: 10_000,
            resolve_links: false,
        };
        match store.read_stream(read).await {
            Ok(slice) => slice.events.into_iter().map(|read| read.event).collect(),
            Err(StoreError::StreamNotFound) => Vec::new(),
            Err(error) => panic!("{error}"),
        }
    }

    /// 1,200 parked messages (the first 100 replayed) and a checkpoint under
    /// v5's names of group `y::h` on `dA`.
    async fn old_streams(store: &dyn Store) -> (String, String) {
        let old_parked = GroupStream::Parked.v5_name("dA", "y::h");
        let old_checkpoints = GroupStream::Checkpoint.v5_name("dA", "y::h");
        append(store, &old_parked, (0..1_200).map(|n| format!("{n}@dA"))).await;
        persist::set_metadata(store, &old_parked, json!({ "$tb": 100 })).await.expect("metadata");
        append(store, &old_checkpoints, ["4", "5"].map(String::from).into_iter()).await;
        persist::set_metadata(store, &old_checkpoints, json!({ "$maxCount": 1 })).await.expect("metadata");
        (old_parked, old_checkpoints)
    }

    #[tokio::test]
    async fn a_move_interrupted_after_a_copy_finishes_with_each_event_copied_once() {
        let store = MemoryStore::new(Projections::NONE);
        let (old_parked, old_checkpoints) = old_streams(&store).await;
        let old_events = events(&store, &old_parked).await;
        let new_parked = parked_stream("dA", "y::h");
        // Interrupted once the parked messages were copied.
        assert_eq!(copy_stream(&store, &old_parked, &new_parked).await, Ok(1_100));

        let groups = [group("dA", "y::h")];
        run(&store, &groups).await.unwrap();
        run(&store, &groups).await.unwrap();
        let moved = events(&store, &new_parked).await;
        assert_eq!(moved.len(), 1_100, "each parked message once");
        let ids =
            |events: &[RecordedEvent]| events.iter().map(|e| (e.id, e.data.clone())).collect::<Vec<_>>();
        assert_eq!(ids(&moved), ids(&old_events), "the same messages, ids and all");
        let checkpoint = persist::load_checkpoint(&store, "dA", "y::h").await.unwrap();
        assert_eq!(checkpoint.map(|c| c.next), Some(6));
        for old in [old_parked, old_checkpoints] {
            assert_eq!(persist::stream_view(&store, &old).await, Ok(None), "{old} is left to dA::y/h");
        }
    }

    #[tokio::test]
    async fn a_checkpoint_two_groups_shared_is_dropped_and_the_parked_messages_stay() {
        let store = MemoryStore::new(Projections::NONE);
        let (old_parked, _) = old_streams(&store).await;
        let groups = [group("dA", "y::h"), group("dA::y", "h")];
        run(&store, &groups).await.unwrap();
        for (stream, name) in [("dA", "y::h"), ("dA::y", "h")] {
            assert_eq!(persist::load_checkpoint(&store, stream, name).await, Ok(None), "{stream}/{name}");
        }
        assert_eq!(events(&store, &old_parked).await.len(), 1_100, "still at v5's name, dA::y/h's");
        assert!(events(&store, &parked_stream("dA", "y::h")).await.is_empty());

        // Once done, never again: dA::y/h's checkpoints are its own now.
        persist::write_checkpoint(
            &store,
            "dA::y",
            "h",
            &crate::subscriptions::Checkpoint { next: 3, done: vec![] },
            false,
        )
        .await
        .unwrap();
        run(&store, &groups).await.unwrap();
        let checkpoint = persist::load_checkpoint(&store, "dA::y", "h").await.unwrap();
        assert_eq!(checkpoint.map(|c| c.next), Some(3));
    }
}
