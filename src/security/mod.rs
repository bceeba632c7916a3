//! Security, as EventStore v5 defined it: users, their credentials, and who
//! may do what. No HTTP here: `http::auth` turns headers into a
//! [`Principal`] with [`Security::authenticate`], and every handler asks
//! [`acl::may`] (through `http::auth`) before it acts.
//!
//! - [`acl`]: `$acl` lists, the defaults in `$settings`, and [`acl::may`],
//!   the one function that decides.
//! - [`users`]: accounts, kept as events in `$user-{login}` and `$users`,
//!   so they survive crashes and travel with backups like any stream.
//! - [`credentials`]: the `Basic` header, the cache of verified
//!   credentials, the brake on guessing.
//! - [`password`]: argon2id hashes.

pub mod acl;
pub mod credentials;
pub mod password;
pub mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};

use self::acl::{ADMINS, Acl, DefaultAcls, SETTINGS_STREAM};
use self::credentials::{CredentialCache, Credentials, Lookup, Throttle};
use crate::store::metadata::{ALL_ROLE, metadata_stream};
use crate::store::{Store, StoreError, StreamWatch};

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credentials: only what `$all` may do.
    Anonymous,
    /// A user whose credentials were verified.
    User(Arc<User>),
    /// The server itself (its own writers); may do everything.
    System,
}

/// A verified user: their login and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub login: String,
    pub groups: Vec<String>,
}

impl Principal {
    /// `$admins` (and the server itself) may do everything.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Anonymous => false,
            Self::User(user) => user.groups.iter().any(|group| group == ADMINS),
            Self::System => true,
        }
    }

    /// Whether `role` (a login, a group or `$all`) covers this principal.
    pub fn has_role(&self, role: &str) -> bool {
        role == ALL_ROLE
            || match self {
                Self::Anonymous => false,
                Self::User(user) => user.login == role || user.groups.iter().any(|group| group == role),
                Self::System => true,
            }
    }

    /// The login, for logs and messages.
    pub fn login(&self) -> Option<&str> {
        match self {
            Self::User(user) => Some(&user.login),
            _ => None,
        }
    }
}

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown login, wrong password, or a disabled or deleted account.
    Invalid,
    /// Too many failures for this login lately; try again after this long.
    Throttled(Duration),
    Store(StoreError),
}

impl From<StoreError> for AuthError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// The most `$acl`s kept parsed. Each is keyed by its metadata event, which
/// never changes, so entries never go stale; the bound only caps memory.
const ACL_CACHE_CAPACITY: usize = 10_000;

/// The most streams whose governing metadata is remembered; a stream
/// forgotten costs one store read at its next append.
const LAST_SEEN_CAPACITY: usize = 100_000;

/// Password verifications running at once: each takes 19 MiB and a core
/// for tens of milliseconds, so a flood of guesses queues here instead of
/// exhausting memory.
const CONCURRENT_VERIFICATIONS: usize = 4;

/// Users, credentials and access rules of one store.
#[derive(Debug)]
pub struct Security {
    store: Arc<dyn Store>,
    credentials: CredentialCache,
    throttle: Throttle,
    verifications: Semaphore,
    /// The hash of the default password, which the built-in accounts have
    /// until changed, and which unknown logins are checked against so that
    /// they take as long to refuse as a wrong password.
    default_hash: OnceCell<String>,
    acls: Mutex<HashMap<(String, u64), Arc<Acl>>>,
    no_acl: Arc<Acl>,
    defaults: RwLock<Arc<DefaultAcls>>,
    /// The metadata event last seen governing each stream appended to
    /// lately (`None`: none), so that checking an append needs no store
    /// read: the writer refuses an append whose rules were not the
    /// stream's, and the check is then made with the current ones.
    last_seen_metadata: Mutex<HashMap<String, Option<u64>>>,
    /// The built-in accounts still with the default password, once checked.
    default_passwords: Mutex<Option<Vec<String>>>,
    /// Credentials found verified in the cache, and not (`/metrics`): a
    /// relaxed increment each, where the lookup already takes a lock.
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

/// How the verified-credential cache has served since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialCacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Credentials held now.
    pub entries: usize,
}

impl Security {
    /// Security for `store`: creates the `admin` account with
    /// `admin_password` if it was never written, and starts following
    /// `$settings`.
    pub async fn open(store: Arc<dyn Store>, admin_password: Option<&str>) -> Result<Arc<Self>, StoreError> {
        let security = Arc::new(Self {
            store,
            credentials: CredentialCache::default(),
            throttle: Throttle::default(),
            verifications: Semaphore::new(CONCURRENT_VERIFICATIONS),
            default_hash: OnceCell::new(),
            acls: Mutex::default(),
            no_acl: Arc::default(),
            defaults: RwLock::new(Arc::new(DefaultAcls::builtin())),
            default_passwords: Mutex::default(),
            last_seen_metadata: Mutex::default(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        });
        if let Some(password) = admin_password {
            security.set_initial_admin_password(password).await?;
        }
        security.reload_defaults().await;
        let follower = Arc::downgrade(&security);
        tokio::spawn(async move { follow_settings(follower).await });
        Ok(security)
    }

    /// The credential cache's hits, misses and size, for `/metrics`.
    pub fn credential_cache(&self) -> CredentialCacheFigures {
        CredentialCacheFigures {
            hits: self.cache_hits.load(Ordering::Relaxed),
            misses: self.cache_misses.load(Ordering::Relaxed),
            entries: self.credentials.len(),
        }
    }

    /// Turns credentials into a principal: from the cache when they were
    /// verified lately and the account has not changed since, else by
    /// reading the account and verifying the password.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, AuthError> {
        let verified_against = match self.credentials.get(&credentials) {
            Lookup::Valid(user) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Principal::User(user));
            }
            Lookup::Changed { password_hash } => Some(password_hash),
            Lookup::Unknown => None,
        };
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        // Taken before the account is read, so that no change is missed.
        let changes = self.store.notifier().watch_stream(&users::user_stream(&credentials.login));
        if let Some(verified_against) = verified_against {
            // The account was written since the password was verified: if
            // it still has the hash the password matched, it still holds.
            let account = self.account(&credentials.login).await?;
            if let Some(account) = account.filter(|a| !a.disabled && a.password_hash == verified_against) {
                return Ok(self.remember(&credentials, account, changes));
            }
        }
        self.throttle.check(&credentials.login).map_err(AuthError::Throttled)?;
        let _permit = self.verifications.acquire().await.map_err(|_| StoreError::Unavailable)?;
        // Another request may have verified the same pair while this one
        // queued.
        if let Lookup::Valid(user) = self.credentials.get(&credentials) {
            return Ok(Principal::User(user));
        }
        let account = self.account(&credentials.login).await?.filter(|account| !account.disabled);
        let stored_hash = match &account {
            Some(account) => account.password_hash.clone(),
            None => self.default_hash().await,
        };
        let password = credentials.password.clone();
        let verified = tokio::task::spawn_blocking(move || password::verify(&password, &stored_hash))
            .await
            .unwrap_or(false);
        match account {
            Some(account) if verified => {
                self.throttle.succeeded(&credentials.login);
                Ok(self.remember(&credentials, account, changes))
            }
            _ => {
                self.throttle.failed(&credentials.login);
                Err(AuthError::Invalid)
            }
        }
    }

    /// Caches credentials verified for `account` (`changes` taken before
    /// it was read) and returns its principal.
    fn remember(
        &self,
        credentials: &Credentials,
        account: users::Account,
        changes: StreamWatch,
    ) -> Principal {
        let user = Arc::new(User { login: account.login_name, groups: account.groups });
        self.credentials.insert(credentials, Arc::clone(&user), account.password_hash, changes);
        Principal::User(user)
    }

    /// The `$acl` of `stream` as of its metadata event `metadata_number`
    /// (`None`: it has none).
    pub async fn acl(&self, stream: &str, metadata_number: Option<u64>) -> Result<Arc<Acl>, StoreError> {
        let Some(number) = metadata_number else {
            return Ok(Arc::clone(&self.no_acl));
        };
        let key = (stream.to_owned(), number);
        if let Some(acl) = self.lock_acls().get(&key) {
            return Ok(Arc::clone(acl));
        }
        let acl = match self.store.read_event(&metadata_stream(stream), number, false).await {
            Ok((_, Some(read))) => Arc::new(Acl::from_metadata(&read.event.data)),
            // The metadata event is gone (its stream deleted): no $acl.
            Ok((_, None)) | Err(StoreError::StreamNotFound | StoreError::StreamDeleted) => Arc::default(),
            Err(other) => return Err(other),
        };
        let mut acls = self.lock_acls();
        if acls.len() >= ACL_CACHE_CAPACITY {
            acls.clear();
        }
        acls.insert(key, Arc::clone(&acl));
        Ok(acl)
    }

    /// The metadata event last seen governing `stream`, if it was seen lately.
    pub fn last_seen_metadata(&self, stream: &str) -> Option<Option<u64>> {
        lock(&self.last_seen_metadata).get(stream).copied()
    }

    /// Remembers the metadata event governing `stream`, as just read.
    pub fn saw_metadata(&self, stream: &str, metadata_number: Option<u64>) {
        let mut seen = lock(&self.last_seen_metadata);
        if seen.len() >= LAST_SEEN_CAPACITY && !seen.contains_key(stream) {
            seen.clear();
        }
        seen.insert(stream.to_owned(), metadata_number);
    }

    /// The `$acl` of `stream` as it stands now.
    pub async fn current_acl(&self, stream: &str) -> Result<Arc<Acl>, StoreError> {
        let metadata_number = self.store.metadata_number(stream).await?;
        self.acl(stream, metadata_number).await
    }

    /// The defaults from `$settings`, as last read.
    pub fn defaults(&self) -> Arc<DefaultAcls> {
        Arc::clone(&self.defaults.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Reads `$settings` again (after a write to it here; other writes are
    /// followed in the background).
    pub async fn reload_defaults(&self) {
        let last = match crate::store::last_event(&*self.store, SETTINGS_STREAM).await {
            Err(StoreError::StreamDeleted) => Ok(None),
            other => other,
        };
        let defaults = match last {
            Ok(Some(last)) => DefaultAcls::from_settings(&last.event.data).unwrap_or_else(|problem| {
                tracing::error!(%problem, "$settings cannot be read; using the built-in access defaults");
                DefaultAcls::builtin()
            }),
            Ok(None) => DefaultAcls::builtin(),
            Err(error) => {
                tracing::error!(%error, "reading $settings failed; keeping the access defaults");
                return;
            }
        };
        *self.defaults.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(defaults);
    }

    /// Drops what is remembered of `login`'s credentials: its account
    /// just changed.
    pub fn forget(&self, login: &str) {
        self.credentials.forget(login);
    }

    async fn default_hash(&self) -> String {
        let hash = self
            .default_hash
            .get_or_init(|| async {
                let hashing = tokio::task::spawn_blocking(|| password::hash(users::DEFAULT_PASSWORD));
                hashing.await.unwrap_or_default()
            })
            .await;
        hash.clone()
    }

    fn lock_default_passwords(&self) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
        self.default_passwords.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_acls(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Arc<Acl>>> {
        self.acls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Follows `$settings` for as long as `security` lives.
async fn follow_settings(security: std::sync::Weak<Security>) {
    loop {
        // The watch before the read, so that no write in between is missed.
        let mut changes = match security.upgrade() {
            Some(security) => {
                let changes = security.store.notifier().watch_stream(SETTINGS_STREAM);
                security.reload_defaults().await;
                changes
            }
            None => return,
        };
        changes.changed().await;
    }
}

/// The parsers' property tests: many cases, from a fixed seed, so a run
/// is reproducible.
#[cfg(test)]
fn property_test_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 2000,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(27),
        ..proptest::test_runner::Config::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
