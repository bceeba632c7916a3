//! Which server runs the persistent subscriptions when several share one
//! store (PostgreSQL).
//!
//! A group's consumers compete for its messages, and that competition
//! lives in one place: the group's state, in one server's memory. So one
//! server at a time runs every group, the holder of the store's lease
//! [`LEASE`]; the others forward subscription requests to it (see
//! `http::subscriptions::forward`). On a store only one server can open
//! (sled) the lease is this server's for good, and nothing runs to keep
//! it.
//!
//! Why one owner for every group rather than one per group: groups are
//! cheap next to the HTTP work around them, and one lease means one row
//! to renew, one place to look when something is wrong, and a takeover
//! that moves everything at once. The cost is that one server does all
//! the subscription bookkeeping.
//!
//! The lease lasts [`TTL`] by the database's clock and the holder renews it
//! every [`RENEW_EVERY`]. The holder stops serving [`MARGIN`] before the
//! lease could have expired (counted from when it *sent* its last
//! successful renewal, so the database's expiry is never earlier), without
//! writing a final checkpoint: by the time another server can take the
//! lease, this one has let go. The new owner loads every group from its
//! last checkpoint, so messages that were in flight are delivered again
//! (delivery is at least once), and checkpoints never move backwards.
//! A server that shuts down gives the lease back after its final
//! checkpoints, so another takes over at its next renewal, not after the
//! time to live.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::Subscriptions;
use crate::store::{Lease, LeaseClaim, Store, StoreError};

/// The lease's name in the store.
pub const LEASE: &str = "persistent-subscriptions";
/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the holder renews it (and others try to take it).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long before the lease could expire the holder stops serving.
pub const MARGIN: Duration = Duration::from_secs(1);

/// Where the persistent subscriptions run, as this server sees it now.
#[derive(Debug, Clone)]
pub enum Role {
    /// Here.
    Owner(Arc<Subscriptions>),
    /// On the server reached at this URL.
    Elsewhere(String),
    /// Nowhere known: the store cannot be asked, or the owner just left.
    Unknown,
}

/// This server's part in running the persistent subscriptions.
#[derive(Debug)]
pub struct SubscriptionHost {
    store: Arc<dyn Store>,
    claim: LeaseClaim,
    role: RwLock<Role>,
    /// While owner: when this server must stop serving.
    valid_until: Mutex<Option<Instant>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The store is this server's alone: no lease to keep.
    exclusive: std::sync::atomic::AtomicBool,
}

impl SubscriptionHost {
    /// Claims the lease once (a lone server owns at once, its groups loaded
    /// before its first request) and keeps claiming it in the background.
    /// `address` is this server's advertised URL, `holder` its identity
    /// (the same after a restart on the same data directory, so that it
    /// takes back a lease its previous life held).
    pub async fn start(
        store: Arc<dyn Store>,
        address: String,
        holder: Uuid,
    ) -> Result<Arc<Self>, StoreError> {
        let host = Arc::new(Self {
            store,
            claim: LeaseClaim { holder, address, ttl: TTL },
            role: RwLock::new(Role::Unknown),
            valid_until: Mutex::new(None),
            stop: watch::Sender::new(false),
            task: Mutex::new(None),
            exclusive: std::sync::atomic::AtomicBool::new(false),
        });
        host.claim_once().await?;
        if host.exclusive.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(host);
        }
        let task = tokio::spawn(Arc::clone(&host).keep_claiming());
        *host.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(task);
        Ok(host)
    }

    /// Where the subscriptions run now.
    pub fn role(&self) -> Role {
        self.role.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The subscriptions, when they run here.
    pub fn local(&self) -> Option<Arc<Subscriptions>> {
        match self.role() {
            Role::Owner(subscriptions) => Some(subscriptions),
            Role::Elsewhere(_) | Role::Unknown => None,
        }
    }

    fn set_role(&self, role: Role) -> Role {
        std::mem::replace(&mut *self.role.write().unwrap_or_else(|poisoned| poisoned.into_inner()), role)
    }

    fn set_valid_until(&self, until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = until;
    }

    fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One claim: become the owner, stay it, or learn who is.
    async fn claim_once(&self) -> Result<(), StoreError> {
        let sent = Instant::now();
        match self.store.lease(LEASE, &self.claim).await? {
            Lease::Exclusive => {
                if self.local().is_none() {
                    let subscriptions = Subscriptions::load(Arc::clone(&self.store)).await?;
                    self.set_role(Role::Owner(subscriptions));
                }
                self.exclusive.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Lease::Held => {
                self.set_valid_until(Some(sent + TTL - MARGIN));
                if self.local().is_none() {
                    let subscriptions = Subscriptions::load(Arc::clone(&self.store)).await?;
                    self.set_role(Role::Owner(subscriptions));
                    tracing::info!(address = %self.claim.address, "this server now runs the persistent subscriptions");
                }
            }
            Lease::HeldBy { address } => {
                self.let_go().await;
                let role = if address.is_empty() { Role::Unknown } else { Role::Elsewhere(address) };
                self.set_role(role);
            }
        }
        Ok(())
    }

    /// Stops serving the subscriptions here, without a final checkpoint:
    /// another server may already have taken them over.
    async fn let_go(&self) {
        self.set_valid_until(None);
        if let Role::Owner(subscriptions) = self.set_role(Role::Unknown) {
            tracing::warn!("this server no longer holds the subscriptions' lease; they stop here");
            subscriptions.fence().await;
        }
    }

    async fn keep_claiming(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut next_claim = Instant::now() + RENEW_EVERY;
        loop {
            let deadline = self.valid_until();
            tokio::select! {
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
                () = tokio::time::sleep_until(next_claim) => {
                    next_claim = Instant::now() + RENEW_EVERY;
                    if let Err(error) = self.claim_once().await {
                        tracing::warn!(%error, "could not renew or take the persistent subscriptions' lease");
                        if self.local().is_none() {
                            self.set_role(Role::Unknown);
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if self.valid_until().is_some_and(|until| until <= Instant::now()) {
                        tracing::warn!("the subscriptions' lease was not renewed in time");
                        self.let_go().await;
                    }
                }
            }
        }
    }

    /// At server shutdown: stops claiming; if the subscriptions run here,
    /// stops them with their final checkpoints and gives the lease back.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Role::Owner(subscriptions) = self.set_role(Role::Unknown) {
            subscriptions.shutdown().await;
            if self.exclusive.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            if let Err(error) = self.store.release_lease(LEASE, self.claim.holder).await {
                tracing::warn!(%error, "could not give the subscriptions' lease back; it expires by itself");
            }
        }
    }
}
