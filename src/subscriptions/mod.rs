//! Persistent subscriptions (competing consumers): groups of consumers that
//! share the events of one source (a stream, a system stream such as
//! `$ce-Order`, or `$all`) so that each event is processed by one of them,
//! with the bookkeeping (who has what, retries, parking, the position
//! reached) kept by the server.
//!
//! - [`settings`]: the settings, their defaults and validation.
//! - [`state`]: the state machine of one group (no I/O).
//! - [`consumers`]: consumer identity, liveness and the strategies.
//! - `driver`: the background task of a group (reads, timeouts, parking,
//!   checkpoints).
//! - [`persist`]: the system streams groups persist in.
//! - [`names`]: those streams' names, and the rules on group names that
//!   keep each group's streams its own.
//! - `migrate`: at start, moves the streams of groups from before those
//!   rules to names of their own.
//!
//! [`Subscriptions`] is the manager the HTTP layer talks to. Nothing here
//! knows about HTTP.
//!
//! Delivery is at least once: a checkpoint only ever covers messages that
//! are done, so after a crash delivery resumes at the checkpoint and nothing
//! is skipped; what is redelivered is bounded by what was outstanding when
//! the last checkpoint was written plus `maxCheckPointCount` (see
//! [`state`]).

pub mod consumers;
mod driver;
mod error;
mod migrate;
pub mod names;
pub mod owner;
pub mod persist;
pub mod settings;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::feed::ALL_STREAM;
use crate::store::{Store, StoreError};
pub use error::SubscriptionError;
use persist::StoredGroup;
pub use settings::{InvalidSetting, Settings, StartFrom, Strategy};
use state::GroupState;
pub use state::{Checkpoint, ConnectionStats, Delivered, Message, NackAction, Stats};

/// The longest a request that found fewer messages than it asked for waits
/// for the group to read what was appended before it (usually one store
/// read; longer only if the store is failing, and then answering with what
/// there is is right).
pub const READ_BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a group reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A stream (including system streams such as `$ce-Order`); positions
    /// are its event numbers.
    Stream(String),
    /// Every event; positions are global positions.
    All,
}

impl Source {
    fn of(stream: &str) -> Self {
        if stream == ALL_STREAM { Self::All } else { Self::Stream(stream.to_owned()) }
    }
}

/// How a driver is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopMode {
    Run,
    /// Server shutdown: write a final checkpoint.
    Shutdown,
    /// The group is being deleted: just stop.
    Delete,
}

/// One group: its state, its wake-up signals and its driver.
#[derive(Debug)]
struct Group {
    stream: String,
    name: String,
    source: Source,
    state: Mutex<GroupState>,
    /// Bumped whenever a waiting consumer might now get a message.
    changes: watch::Sender<u64>,
    /// Wakes the driver after a request changed the state.
    kick: Notify,
    stop: watch::Sender<StopMode>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Group {
    /// Waits until the driver has served read ticket `ticket`; `false` if
    /// the deadline passed or the group was deleted first.
    async fn read_served(&self, ticket: u64, changes: &mut watch::Receiver<u64>, deadline: Instant) -> bool {
        while !self.lock().is_served(ticket) {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Every state operation leaves the state consistent before any
        // point that could panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|version| *version = version.wrapping_add(1));
    }

    fn kick(&self) {
        self.kick.notify_one();
    }

    /// Stops the driver and waits for it to finish.
    async fn stop(&self, mode: StopMode) {
        self.stop.send_replace(mode);
        let handle = self.driver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(handle) = handle {
            if let Err(error) = handle.await {
                tracing::error!(stream = %self.stream, group = %self.name, %error, "subscription driver failed");
            }
        }
    }
}

/// Marks a consumer as waiting (a long-poll) while it lives.
#[derive(Debug)]
pub struct WaitGuard {
    group: Arc<Group>,
    consumer: String,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.group.lock().end_wait(&self.consumer, Instant::now());
        // The consumer may now go idle: the driver schedules its expiry.
        self.group.kick();
    }
}

/// What `info` and the listings show about a group.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub stream: String,
    pub group: String,
    pub settings: Settings,
    pub stats: Stats,
    /// Parked messages not yet replayed.
    pub parked_count: u64,
    /// The last event number (position for `$all`) of the source.
    pub last_known: Option<u64>,
}

type GroupKey = (String, String);

/// Every group of the server.
#[derive(Debug)]
pub struct Subscriptions {
    store: Arc<dyn Store>,
    groups: RwLock<BTreeMap<GroupKey, Arc<Group>>>,
    /// Where each group starts without a checkpoint (persisted with it).
    start_at: Mutex<BTreeMap<GroupKey, u64>>,
    /// Serialises creates, updates and deletes, which each write the full
    /// config snapshot.
    config: tokio::sync::Mutex<()>,
    /// Set when another server took the subscriptions over: every
    /// operation then fails with [`SubscriptionError::Moved`].
    fenced: std::sync::atomic::AtomicBool,
}

impl Subscriptions {
    /// Loads every persisted group and starts its driver.
    pub async fn load(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        let stored = persist::load_config(&*store).await?;
        migrate::run(&*store, &stored).await?;
        let subscriptions = Arc::new(Self {
            store: Arc::clone(&store),
            groups: RwLock::new(BTreeMap::new()),
            start_at: Mutex::new(BTreeMap::new()),
            config: tokio::sync::Mutex::new(()),
            fenced: std::sync::atomic::AtomicBool::new(false),
        });
        for group in stored {
            let checkpoint = persist::load_checkpoint(&*store, &group.stream, &group.group).await?;
            let parked_first = persist::parked_first(&*store, &group.stream, &group.group).await?;
            tracing::info!(
                stream = %group.stream,
                group = %group.group,
                checkpoint = ?checkpoint.as_ref().map(|c| c.next),
                "persistent subscription loaded"
            );
            subscriptions.start(&group, checkpoint, parked_first);
        }
        Ok(subscriptions)
    }

    fn start(&self, stored: &StoredGroup, checkpoint: Option<Checkpoint>, parked_first: u64) {
        let state = GroupState::new(
            stored.settings.clone(),
            stored.start_at,
            checkpoint,
            parked_first,
            Instant::now(),
        );
        let group = Arc::new(Group {
            stream: stored.stream.clone(),
            name: stored.group.clone(),
            source: Source::of(&stored.stream),
            state: Mutex::new(state),
            changes: watch::Sender::new(0),
            kick: Notify::new(),
            stop: watch::Sender::new(StopMode::Run),
            driver: Mutex::new(None),
        });
        let handle = tokio::spawn(driver::run(Arc::clone(&group), Arc::clone(&self.store)));
        *group.driver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(handle);
        let key = (stored.stream.clone(), stored.group.clone());
        self.start_at_map().insert(key.clone(), stored.start_at);
        self.groups.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, group);
    }

    fn start_at_map(&self) -> MutexGuard<'_, BTreeMap<GroupKey, u64>> {
        self.start_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails once [`Self::fence`] was called.
    fn check_live(&self) -> Result<(), SubscriptionError> {
        if self.fenced.load(std::sync::atomic::Ordering::Acquire) {
            return Err(SubscriptionError::Moved);
        }
        Ok(())
    }

    fn get(&self, stream: &str, group: &str) -> Result<Arc<Group>, SubscriptionError> {
        self.check_live()?;
        let groups = self.groups.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        groups.get(&(stream.to_owned(), group.to_owned())).cloned().ok_or(SubscriptionError::NotFound)
    }

    fn all_groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// The config snapshot with `change` applied.
    fn stored_groups(&self, change: Option<(&str, &str, Option<&StoredGroup>)>) -> Vec<StoredGroup> {
        let start_at = self.start_at_map().clone();
        let mut stored: Vec<StoredGroup> = self
            .all_groups()
            .iter()
            .map(|group| StoredGroup {
                stream: group.stream.clone(),
                group: group.name.clone(),
                start_at: start_at.get(&(group.stream.clone(), group.name.clone())).copied().unwrap_or(0),
                settings: group.lock().settings.clone(),
            })
            .collect();
        if let Some((stream, name, replacement)) = change {
            stored.retain(|g| !(g.stream == stream && g.group == name));
            stored.extend(replacement.cloned());
        }
        stored
    }

    /// Where `start_from` puts a new group on `stream` right now.
    async fn resolve_start(&self, stream: &str, start_from: StartFrom) -> Result<u64, StoreError> {
        Ok(match start_from {
            StartFrom::At(number) | StartFrom::Position(number) => number,
            StartFrom::Now if stream == ALL_STREAM => self.store.notifier().next_position(),
            StartFrom::Now => self.store.stream_state(stream).await?.map_or(0, |state| state.next_number),
        })
    }

    /// Creates a group. Anything a deleted group of the same name left
    /// behind is cleared first, so the new one starts from `startFrom`.
    pub async fn create(
        &self,
        stream: &str,
        group: &str,
        settings: Settings,
    ) -> Result<(), SubscriptionError> {
        names::check_group_name(group).map_err(SubscriptionError::InvalidName)?;
        let _config = self.config.lock().await;
        self.check_live()?;
        if self.get(stream, group).is_ok() {
            return Err(SubscriptionError::AlreadyExists);
        }
        let start_at = self.resolve_start(stream, settings.start_from).await?;
        persist::delete_group_streams(&*self.store, stream, group).await?;
        let checkpoints = names::checkpoint_stream(stream, group);
        persist::set_metadata(&*self.store, &checkpoints, serde_json::json!({ "$maxCount": 1 })).await?;
        let stored = StoredGroup { stream: stream.to_owned(), group: group.to_owned(), start_at, settings };
        let snapshot = self.stored_groups(Some((stream, group, Some(&stored))));
        persist::write_config(&*self.store, &snapshot).await?;
        self.start(&stored, None, 0);
        tracing::info!(%stream, %group, start_at, "persistent subscription created");
        Ok(())
    }

    /// Changes a group's settings. Progress is kept: in-flight messages stay
    /// in flight and the checkpoint stays where it is; `startFrom` only
    /// matters while the group has no checkpoint.
    pub async fn update(
        &self,
        stream: &str,
        group: &str,
        settings: Settings,
    ) -> Result<(), SubscriptionError> {
        let _config = self.config.lock().await;
        let existing = self.get(stream, group)?;
        let previous_start = existing.lock().settings.start_from;
        let key = (stream.to_owned(), group.to_owned());
        let start_at = if previous_start == settings.start_from {
            self.start_at_map().get(&key).copied().unwrap_or(0)
        } else {
            self.resolve_start(stream, settings.start_from).await?
        };
        let stored = StoredGroup { stream: stream.to_owned(), group: group.to_owned(), start_at, settings };
        let snapshot = self.stored_groups(Some((stream, group, Some(&stored))));
        persist::write_config(&*self.store, &snapshot).await?;
        self.start_at_map().insert(key, start_at);
        existing.lock().update_settings(stored.settings);
        existing.kick();
        existing.bump();
        tracing::info!(%stream, %group, "persistent subscription updated");
        Ok(())
    }

    /// Deletes a group with its checkpoints and parked messages.
    pub async fn delete(&self, stream: &str, group: &str) -> Result<(), SubscriptionError> {
        let _config = self.config.lock().await;
        let existing = self.get(stream, group)?;
        let snapshot = self.stored_groups(Some((stream, group, None)));
        persist::write_config(&*self.store, &snapshot).await?;
        let key = (stream.to_owned(), group.to_owned());
        self.groups.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
        self.start_at_map().remove(&key);
        existing.stop(StopMode::Delete).await;
        // Waiting consumers wake, find the group gone, and answer 404.
        existing.bump();
        if let Err(error) = persist::delete_group_streams(&*self.store, stream, group).await {
            // The next create of this name clears them anyway.
            tracing::warn!(%stream, %group, %error, "could not delete the group's streams");
        }
        tracing::info!(%stream, %group, "persistent subscription deleted");
        Ok(())
    }

    /// Hands up to `count` messages to `consumer` without waiting.
    pub fn take(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivered>, SubscriptionError> {
        let group = self.get(stream, group)?;
        let taken = group.lock().take(consumer, count, Instant::now());
        let delivered =
            taken.map_err(|full| SubscriptionError::GroupFull { retry_after: full.retry_after })?;
        if !delivered.is_empty() {
            // The buffer has room again and the gate may want a checkpoint.
            group.kick();
        }
        Ok(delivered)
    }

    /// Like [`Self::take`], but when fewer than `count` messages are
    /// available it first lets the group read what was acknowledged before
    /// the call (the driver reads asynchronously), taking again after each
    /// read, until `count` is met, a read started after the call reaches
    /// the end of the source, or the read-ahead buffer is full. So a
    /// consumer that asks right after an append gets that event: not
    /// nothing, and not only the part an earlier read already brought in.
    /// The wait is usually one read of the store; all of it is bounded by
    /// [`READ_BARRIER_TIMEOUT`].
    pub async fn take_fresh(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivered>, SubscriptionError> {
        let mut delivered = self.take(stream, group, consumer, count)?;
        if delivered.len() >= count {
            return Ok(delivered);
        }
        let handle = self.get(stream, group)?;
        let mut changes = handle.changes.subscribe();
        let deadline = Instant::now() + READ_BARRIER_TIMEOUT;
        while delivered.len() < count {
            // `None`: the read-ahead buffer is full, so no read would add to it.
            let Some(ticket) = handle.lock().request_read() else { break };
            handle.kick();
            if !handle.read_served(ticket, &mut changes, deadline).await {
                break;
            }
            match self.take(stream, group, consumer, count - delivered.len()) {
                Ok(more) => delivered.extend(more),
                // What was taken first is the consumer's now: hand it over.
                Err(_) if !delivered.is_empty() => break,
                Err(error) => return Err(error),
            }
            if handle.lock().is_caught_up() {
                break;
            }
        }
        Ok(delivered)
    }

    /// A receiver that changes whenever a consumer waiting on the group
    /// might now get a message (take it before trying, then wait on it);
    /// it closes when the group is deleted.
    pub fn changes(&self, stream: &str, group: &str) -> Result<watch::Receiver<u64>, SubscriptionError> {
        Ok(self.get(stream, group)?.changes.subscribe())
    }

    /// Marks `consumer` as waiting for the guard's lifetime, so it counts as
    /// connected however long it waits. Call after a `take` admitted it.
    pub fn waiting(&self, stream: &str, group: &str, consumer: &str) -> Result<WaitGuard, SubscriptionError> {
        let group = self.get(stream, group)?;
        group.lock().begin_wait(consumer);
        Ok(WaitGuard { group, consumer: consumer.to_owned() })
    }

    pub fn ack(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[Uuid],
    ) -> Result<(), SubscriptionError> {
        let group = self.get(stream, group)?;
        let pinned = {
            let mut state = group.lock();
            state.ack(consumer, ids, Instant::now());
            state.settings.strategy == Strategy::Pinned
        };
        group.kick();
        if pinned {
            // Acks release streams pinned to their consumer.
            group.bump();
        }
        Ok(())
    }

    pub fn nack(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[Uuid],
        action: NackAction,
    ) -> Result<(), SubscriptionError> {
        let group = self.get(stream, group)?;
        group.lock().nack(consumer, ids, action, Instant::now());
        group.kick();
        group.bump();
        Ok(())
    }

    /// Hands every message parked so far back to the group. Returns how
    /// many are waiting to be handed back.
    pub async fn replay_parked(&self, stream: &str, group: &str) -> Result<u64, SubscriptionError> {
        let group = self.get(stream, group)?;
        let view = persist::parked_view(&*self.store, stream, &group.name).await?;
        let last = view.and_then(|view| (view.first_visible <= view.last_number).then_some(view.last_number));
        let count = group.lock().request_replay(last);
        group.kick();
        Ok(count)
    }

    pub async fn info(&self, stream: &str, group: &str) -> Result<GroupInfo, SubscriptionError> {
        let group = self.get(stream, group)?;
        self.info_of(&group).await
    }

    /// Every group, or those on `stream`, in name order.
    pub async fn list(&self, stream: Option<&str>) -> Result<Vec<GroupInfo>, SubscriptionError> {
        self.check_live()?;
        let groups: Vec<Arc<Group>> =
            self.all_groups().into_iter().filter(|g| stream.is_none_or(|s| g.stream == s)).collect();
        let mut infos = Vec::with_capacity(groups.len());
        for group in groups {
            infos.push(self.info_of(&group).await?);
        }
        Ok(infos)
    }

    async fn info_of(&self, group: &Group) -> Result<GroupInfo, SubscriptionError> {
        let (settings, stats) = {
            let mut state = group.lock();
            (state.settings.clone(), state.stats(Instant::now()))
        };
        let parked = persist::parked_view(&*self.store, &group.stream, &group.name).await?;
        let parked_count = parked.map_or(0, |view| {
            let end = view.last_number + 1;
            end.saturating_sub(view.first_visible.max(stats.replay_next))
        });
        let last_known = match &group.source {
            Source::All => self.store.notifier().next_position().checked_sub(1),
            Source::Stream(name) => {
                self.store.stream_state(name).await?.and_then(|state| state.next_number.checked_sub(1))
            }
        };
        Ok(GroupInfo {
            stream: group.stream.clone(),
            group: group.name.clone(),
            settings,
            stats,
            parked_count,
            last_known,
        })
    }

    /// Stops every group at once, writing nothing more (another server
    /// may be running them already): every operation fails with
    /// [`SubscriptionError::Moved`] from here on, and consumers waiting
    /// for messages are woken to learn it.
    pub async fn fence(&self) {
        self.fenced.store(true, std::sync::atomic::Ordering::Release);
        let groups = self.all_groups();
        for group in &groups {
            group.stop.send_replace(StopMode::Delete);
            group.bump();
        }
        for group in groups {
            group.stop(StopMode::Delete).await;
        }
    }

    /// Stops every driver, each writing a final checkpoint. Call after the
    /// server stopped taking requests and before the store closes.
    pub async fn shutdown(&self) {
        let groups = self.all_groups();
        for group in &groups {
            group.stop.send_replace(StopMode::Shutdown);
        }
        for group in groups {
            group.stop(StopMode::Shutdown).await;
        }
    }
}
