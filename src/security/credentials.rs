//! Credentials as clients send them (`Authorization: Basic`), the cache of
//! those recently verified, and the brake on guessing.
//!
//! Clients send Basic credentials on every request, and verifying a
//! password costs tens of milliseconds by design, so a verified pair is
//! remembered: under a keyed hash of login and password (a key drawn at
//! start, so the cache holds nothing an attacker could test passwords
//! against), never the password. An entry holds a watch on the user's
//! stream and is dropped as soon as that stream is appended to (a new
//! password, other groups, disabled, deleted), on whichever node wrote it.
//! A wrong password is never cached and always pays the full price.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2bMac, digest::consts::U32};

use super::User;
use crate::store::StreamWatch;

/// A login and password from an `Authorization` header.
#[derive(Clone)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("login", &self.login).finish_non_exhaustive()
    }
}

/// Reads an `Authorization` header value: `Basic` and base64 of
/// `login:password` (the first `:` separates them, as RFC 7617 says, so a
/// password may hold colons and a login may not). `None` for any other
/// scheme or anything malformed.
pub fn parse_basic(header: &[u8]) -> Option<Credentials> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (login, password) = decoded.split_once(':')?;
    if login.is_empty() {
        return None;
    }
    Some(Credentials { login: login.to_owned(), password: password.to_owned() })
}

/// The most verified credentials remembered at once.
const CACHE_CAPACITY: usize = 10_000;

type Key = [u8; 32];

/// Credentials verified recently (see the module doc).
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<Key, Verified>>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the key nor the entries (their keys and the accounts'
        // password hashes): with them, anyone reading a debug log could
        // test guesses offline.
        f.debug_struct("CredentialCache").field("entries", &self.len()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Verified {
    user: Arc<User>,
    /// The stored hash the password was verified against: if the account
    /// still has it, the password still holds.
    password_hash: String,
    /// Fires when the user's stream is appended to.
    changes: StreamWatch,
}

/// What the cache knows of some credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Verified, and the account has not changed since.
    Valid(Arc<User>),
    /// Verified against this stored hash, but the account's stream was
    /// written since (perhaps only to enable it, or to create it a moment
    /// before): the caller reads the account again, and if it still has
    /// this hash and is enabled, the password holds without a new
    /// verification.
    Changed {
        password_hash: String,
    },
    Unknown,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let mut key = [0; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self { key, entries: Mutex::default() }
    }
}

impl CredentialCache {
    /// What is known of these credentials.
    pub fn get(&self, credentials: &Credentials) -> Lookup {
        let key = self.key_of(credentials);
        let mut entries = self.lock();
        let Some(verified) = entries.get(&key) else { return Lookup::Unknown };
        if verified.changes.has_changed() {
            let password_hash = verified.password_hash.clone();
            entries.remove(&key);
            return Lookup::Changed { password_hash };
        }
        Lookup::Valid(Arc::clone(&verified.user))
    }

    /// Remembers credentials verified against `password_hash`. `changes`
    /// was taken before the account was read, so a change since is not
    /// missed.
    pub fn insert(
        &self,
        credentials: &Credentials,
        user: Arc<User>,
        password_hash: String,
        changes: StreamWatch,
    ) {
        let key = self.key_of(credentials);
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&key) {
            // Bounded, crudely: verified credentials come back quickly, so
            // emptying the cache costs one verification per active client.
            entries.clear();
        }
        entries.insert(key, Verified { user, password_hash, changes });
    }

    /// Forgets every entry of `login` (its account just changed here).
    pub fn forget(&self, login: &str) {
        self.lock().retain(|_, verified| verified.user.login != login);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key_of(&self, credentials: &Credentials) -> Key {
        let mut mac = Blake2bMac::<U32>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        // Length-prefixed, so that no two pairs hash the same input.
        mac.update(&(credentials.login.len() as u64).to_le_bytes());
        mac.update(credentials.login.as_bytes());
        mac.update(credentials.password.as_bytes());
        mac.finalize_fixed().into()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Verified>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Failed logins allowed within [`FAILURE_WINDOW`] before the login is
/// refused for [`LOCKOUT`].
pub const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a login is refused (`429`) after too many failures. Short, so
/// an attacker cannot lock a real user out for long, and long enough to
/// make online guessing hopeless: at most 5 guesses per 35 seconds.
pub const LOCKOUT: Duration = Duration::from_secs(30);
/// The most logins tracked; the oldest failures are forgotten first.
const TRACKED_LOGINS: usize = 10_000;

/// The brake on guessing passwords: per login, a count of recent failures.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    /// `Err(retry_after)` while `login` is locked out.
    pub fn check(&self, login: &str) -> Result<(), Duration> {
        let now = Instant::now();
        match self.lock().get(login).and_then(|failures| failures.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login; locks the login out at the limit.
    pub fn failed(&self, login: &str) {
        let now = Instant::now();
        let mut all = self.lock();
        if all.len() >= TRACKED_LOGINS && !all.contains_key(login) {
            all.retain(|_, failures| failures.locked_until.is_some_and(|until| until > now));
            if all.len() >= TRACKED_LOGINS {
                all.clear();
            }
        }
        let failures =
            all.entry(login.to_owned()).or_insert(Failures { count: 0, since: now, locked_until: None });
        if now.duration_since(failures.since) > FAILURE_WINDOW
            || failures.locked_until.is_some_and(|until| until <= now)
        {
            *failures = Failures { count: 0, since: now, locked_until: None };
        }
        failures.count += 1;
        if failures.count >= MAX_FAILURES {
            failures.locked_until = Some(now + LOCKOUT);
        }
    }

    /// A successful login clears its failures.
    pub fn succeeded(&self, login: &str) {
        self.lock().remove(login);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> String {
        format!("Basic {}", STANDARD.encode(text))
    }

    #[test]
    fn parses_basic_credentials() {
        let credentials = parse_basic(basic("admin:change:it").as_bytes()).expect("valid");
        assert_eq!((credentials.login.as_str(), credentials.password.as_str()), ("admin", "change:it"));
        assert!(parse_basic(basic("admin:").as_bytes()).is_some());
        assert!(format!("{credentials:?}").contains("admin"));
        assert!(!format!("{credentials:?}").contains("change"));
        for bad in [
            "Bearer abc".to_owned(),
            "Basic".to_owned(),
            "Basic !!!".to_owned(),
            basic("no-colon"),
            basic(":password"),
            format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
        ] {
            assert!(parse_basic(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(parse_basic(&[0xff, 0xfe]).is_none());
    }

    proptest::proptest! {
        #![proptest_config(crate::security::property_test_config())]

        /// Any bytes at all: no panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_basic(&bytes);
        }

        /// Anything after `Basic `: no panic, and whatever it yields is
        /// what the base64 said.
        #[test]
        fn anything_after_basic(text in "\\PC{0,80}") {
            if let Some(credentials) = parse_basic(format!("Basic {text}").as_bytes()) {
                let decoded = STANDARD.decode(text.trim()).expect("it decoded");
                let expected = format!("{}:{}", credentials.login, credentials.password);
                proptest::prop_assert_eq!(decoded, expected.into_bytes());
            }
        }

        /// Every login without a colon and every password round-trip.
        #[test]
        fn credentials_round_trip(login in "[^:]{1,40}", password in "\\PC{0,40}") {
            let header = basic(&format!("{login}:{password}"));
            let credentials = parse_basic(header.as_bytes()).expect("valid");
            proptest::prop_assert_eq!(credentials.login, login);
            proptest::prop_assert_eq!(credentials.password, password);
        }
    }

    #[test]
    fn locks_out_after_repeated_failures() {
        let throttle = Throttle::default();
        for _ in 1..MAX_FAILURES {
            throttle.failed("admin");
            assert!(throttle.check("admin").is_ok());
        }
        throttle.failed("admin");
        let retry_after = throttle.check("admin").expect_err("locked");
        assert!(retry_after <= LOCKOUT && retry_after > LOCKOUT - Duration::from_secs(5));
        assert!(throttle.check("ops").is_ok());
        throttle.succeeded("admin");
        assert!(throttle.check("admin").is_ok());
    }
}
