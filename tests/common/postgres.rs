//! A PostgreSQL cluster of the tests' own: `initdb` into a temporary
//! directory, `postgres` on a free loopback port with its socket in that
//! directory, as an unprivileged user when the tests run as root
//! (PostgreSQL refuses to run as root). One cluster per test binary,
//! started by the first test that asks; every test gets a fresh database
//! in it ([`database`]).
//!
//! The cluster runs under a small shell watchdog that stops it (and
//! removes its directory) once the test process is gone: a test binary's
//! statics are never dropped, so nothing in this process could.
//!
//! Without PostgreSQL (Debian: `apt-get install postgresql`; tests/run
//! installs it) the tests that need it say `SKIPPED` and pass, unless `CI`
//! is set: then they fail.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the cluster may take to start.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The user the cluster runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    port: u16,
    /// Numbers the databases created.
    databases: AtomicU64,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The tests' cluster, started on first use; `None` (having said
/// `SKIPPED` and why) when PostgreSQL cannot be started and `CI` is
/// unset. Under `CI` that fails the test.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| match start() {
            Ok(cluster) => Some(cluster),
            Err(why) => {
                let message = format!(
                    "PostgreSQL cannot be started: {why} (Debian: apt-get install postgresql; tests/run installs it)"
                );
                if std::env::var_os("CI").is_some() {
                    panic!("{message}");
                }
                eprintln!("SKIPPED: {message}");
                None
            }
        })
        .as_ref()
}

/// The connection string of a new, empty database in the tests' cluster;
/// `None` as for [`cluster`].
pub fn database() -> Option<String> {
    cluster().map(Cluster::create_database)
}

impl Cluster {
    /// Creates an empty database and returns its connection string.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}")).expect("a database is created");
        self.url(&name)
    }

    /// The connection string of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL command in database `name` with `psql`; its output.
    pub fn psql(&self, name: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", name])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("psql: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// The newest PostgreSQL's binaries: Debian keeps them in
/// `/usr/lib/postgresql/<version>/bin`, off the `PATH`.
pub fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `program` as the unprivileged user when the tests run as root, in
/// `dir` (the user may not enter the tests' own working directory).
pub fn as_cluster_user(program: &Path, root: bool, dir: &Path) -> Command {
    let mut command = if root {
        let mut command = Command::new("runuser");
        command.args(["-u", UNPRIVILEGED_USER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir(dir);
    command
}

fn start() -> Result<Cluster, String> {
    let bin = binaries().ok_or("no /usr/lib/postgresql/<version>/bin/postgres")?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("eventfeed-pg-")
        .tempdir()
        .map_err(|error| format!("a temporary directory: {error}"))?
        .keep();
    if root {
        let status = Command::new("chown")
            .arg(format!("{UNPRIVILEGED_USER}:"))
            .arg(&dir)
            .status()
            .map_err(|error| format!("chown: {error}"))?;
        if !status.success() {
            return Err(format!("chown {} failed", dir.display()));
        }
    }
    let data = dir.join("data");
    let initdb = as_cluster_user(&bin.join("initdb"), root, &dir)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("initdb: {error}"))?;
    if !initdb.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("a free port: {error}"))?
        .port();
    // The watchdog: the cluster lives as long as this process does.
    // fsync off: the tests crash no machine, and it spares the disk the
    // other builds share.
    let script = r#"
        "$1/postgres" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 -c fsync=off \
            -c full_page_writes=off -c max_connections=300 >"$3/postgres.log" 2>&1 &
        cluster=$!
        while [ -d "/proc/$5" ] && kill -0 "$cluster" 2>/dev/null; do sleep 0.2; done
        kill -QUIT "$cluster" 2>/dev/null
        wait "$cluster"
        rm -rf "$3"
    "#;
    as_cluster_user(Path::new("/bin/sh"), root, &dir)
        .args(["-c", script, "watchdog"])
        .arg(&bin)
        .arg(&data)
        .arg(&dir)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("starting postgres: {error}"))?;
    let cluster = Cluster { bin, port, databases: AtomicU64::new(0) };
    let started = Instant::now();
    loop {
        match cluster.psql("postgres", "SELECT 1") {
            Ok(_) => return Ok(cluster),
            Err(error) if started.elapsed() > START_PATIENCE => {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("postgres did not answer: {error}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

// -- A second cluster from a base backup (tests/postgres_backup.rs) --------
//
// Added beside the shared cluster rather than woven into `start`, so that
// the first cluster's start stays as it is.

impl Cluster {
    /// The port the cluster listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Takes a base backup of the running cluster with `pg_basebackup`
    /// (`-X stream`: the WAL written meanwhile comes with it, so the copy
    /// is consistent by itself), as the cluster's user, into a new
    /// temporary directory of that user's; the backup's data directory.
    pub fn base_backup(&self) -> Result<PathBuf, String> {
        let root = is_root();
        let dir = owned_temporary_directory(root)?;
        let data = dir.join("data");
        let output = as_cluster_user(&self.bin.join("pg_basebackup"), root, &dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-D"])
            .arg(&data)
            .args(["-X", "stream", "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("pg_basebackup: {error}"))?;
        if !output.status.success() {
            return Err(format!("pg_basebackup failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        Ok(data)
    }

    /// Starts a second cluster on `data` (a base backup's data directory,
    /// which it recovers to its consistent end and then serves read-write)
    /// on a free loopback port, under a watchdog like the first one's.
    pub fn start_from(data: &Path) -> Result<Cluster, String> {
        let bin = binaries().ok_or("no /usr/lib/postgresql/<version>/bin/postgres")?;
        let root = is_root();
        let dir = data.parent().ok_or("a data directory has a parent")?.to_path_buf();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("a free port: {error}"))?
            .port();
        let script = r#"
            "$1/postgres" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 -c fsync=off \
                -c full_page_writes=off -c max_connections=300 >"$3/postgres.log" 2>&1 &
            cluster=$!
            while [ -d "/proc/$5" ] && kill -0 "$cluster" 2>/dev/null; do sleep 0.2; done
            kill -QUIT "$cluster" 2>/dev/null
            wait "$cluster"
            rm -rf "$3"
        "#;
        as_cluster_user(Path::new("/bin/sh"), root, &dir)
            .args(["-c", script, "watchdog"])
            .arg(&bin)
            .arg(data)
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting postgres: {error}"))?;
        let cluster = Cluster { bin, port, databases: AtomicU64::new(0) };
        let started = Instant::now();
        loop {
            match cluster.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(cluster),
                Err(error) if started.elapsed() > START_PATIENCE => {
                    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                    return Err(format!("postgres did not answer: {error}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// A new temporary directory, owned by the cluster's user when the tests
/// run as root; kept (a watchdog or the caller removes it).
fn owned_temporary_directory(root: bool) -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix("eventfeed-pg-")
        .tempdir()
        .map_err(|error| format!("a temporary directory: {error}"))?
        .keep();
    if root {
        let status = Command::new("chown")
            .arg(format!("{UNPRIVILEGED_USER}:"))
            .arg(&dir)
            .status()
            .map_err(|error| format!("chown: {error}"))?;
        if !status.success() {
            return Err(format!("chown {} failed", dir.display()));
        }
    }
    Ok(dir)
}
