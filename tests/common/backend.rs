//! Which store the black-box tests' servers run on: the embedded sled
//! store (the default), or PostgreSQL when `EVENTFEED_TEST_STORE=postgres`
//! (tests/run runs the targets for which the backend matters a second time
//! so). The same test files run on either: [`TestServer`] and
//! [`BinaryServer`] ask [`store_for`] for the `--store` of their data
//! directory, which on PostgreSQL is a fresh database in the tests'
//! cluster (`common::postgres`) the first time a directory is seen and the
//! same database every time after, so that a restart "on the same
//! directory" reopens the same store.
//!
//! A test that can only mean something on sled (its files, its disk) asks
//! [`sled_only`] first, which says `SKIPPED` and why on PostgreSQL.
//!
//! [`TestServer`]: super::TestServer
//! [`BinaryServer`]: super::BinaryServer

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use eventfeed::store::projections::Projections;
use eventfeed::store::sled::SledStoreOptions;
use eventfeed::store::{Durability, PostgresOptions, StoreConfig};

/// The variable that picks the backend: `sled` (or unset) or `postgres`.
pub const VARIABLE: &str = "EVENTFEED_TEST_STORE";

/// The backends the harness can run servers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// The backend of this run, from [`VARIABLE`]; any other value fails the
/// test rather than silently testing sled.
pub fn backend() -> Backend {
    match std::env::var(VARIABLE).as_deref() {
        Err(_) | Ok("" | "sled") => Backend::Sled,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("{VARIABLE}={other}: expected sled or postgres"),
    }
}

/// Whether this run's servers keep their events in PostgreSQL.
pub fn on_postgres() -> bool {
    backend() == Backend::Postgres
}

/// The databases handed out, by the data directory they stand for.
static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();

/// The `--store` a server on `data_dir` is started with: `None` on sled
/// (the default, the store in `data_dir`); on PostgreSQL the connection
/// string of the database that stands for `data_dir`, fresh the first
/// time. Without a PostgreSQL cluster that fails: the run asked for it.
pub fn store_for(data_dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let mut databases = DATABASES.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    let url = databases.entry(data_dir.to_path_buf()).or_insert_with(|| {
        let cluster = super::postgres::cluster()
            .unwrap_or_else(|| panic!("{VARIABLE}=postgres, but PostgreSQL cannot be started"));
        cluster.create_database()
    });
    Some(url.clone())
}

/// The store a server on `data_dir` opens, for tests that write into it
/// directly before a server starts on it (as an older release left it):
/// the sled store in `data_dir`, or the database [`store_for`] gives it.
pub fn store_config(data_dir: &Path) -> StoreConfig {
    match store_for(data_dir) {
        Some(url) => StoreConfig::Postgres(PostgresOptions {
            url,
            durability: Durability::Fsync,
            projections: Projections::default(),
            ca_file: None,
        }),
        None => StoreConfig::Sled(SledStoreOptions::new(data_dir.to_owned())),
    }
}

/// On PostgreSQL, says `SKIPPED` with the test's name and `why` (what the
/// test checks that only the embedded store has) and returns true: the
/// caller returns.
pub fn sled_only(why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    // Written to the process's stderr, not through `eprintln!`, which the
    // test harness captures and shows only for failures: a skip must be
    // seen in every run's output.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "SKIPPED on PostgreSQL (sled only): {test}: {why}");
    true
}
