//! A PostgreSQL cluster of the tests' own: `initdb` into a temporary
//! directory, `postgres` on a free loopback port with its socket in that
//! directory, as an unprivileged user when the tests run as root
//! (PostgreSQL refuses to run as root). One cluster per test binary,
//! started by the first test that asks; every test gets a fresh database
//! in it ([`database`]). A test that stops, kills or restarts PostgreSQL
//! gets a cluster of its own ([`Cluster::dedicated`]), so that it disturbs
//! no other test.
//!
//! A small shell watchdog stops a cluster (and removes its directory) once
//! the test process is gone: a test binary's statics are never dropped, so
//! nothing in this process could.
//!
//! Without PostgreSQL (Debian: `apt-get install postgresql`; tests/run
//! installs it) the tests that need it say `SKIPPED` and pass, unless `CI`
//! is set: then they fail.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the cluster may take to start.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The user the cluster runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    port: u16,
    /// Whether its processes run as [`UNPRIVILEGED_USER`].
    root: bool,
    /// Its temporary directory: the data directory, the socket, the log.
    dir: PathBuf,
    /// The process started (`runuser` or `postgres`), whose process group
    /// holds the postmaster and its children; `None` while it is stopped.
    process: Mutex<Option<Child>>,
    /// Numbers the databases created.
    databases: AtomicU64,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The tests' cluster, started on first use; `None` (having said
/// `SKIPPED` and why) when PostgreSQL cannot be started and `CI` is
/// unset. Under `CI` that fails the test.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get_or_init(|| unavailable_unless_ci(start())).as_ref()
}

/// A started cluster, or `None` having said why it is skipped; panics
/// under `CI`.
fn unavailable_unless_ci(started: Result<Cluster, String>) -> Option<Cluster> {
    match started {
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
    }
}

/// The connection string of a new, empty database in the tests' cluster;
/// `None` as for [`cluster`].
pub fn database() -> Option<String> {
    cluster().map(Cluster::create_database)
}

impl Cluster {
    /// A cluster for one test alone, which it may stop, kill and start
    /// again; `None` as for [`cluster`]. Dropping it stops it.
    pub fn dedicated() -> Option<Self> {
        unavailable_unless_ci(start())
    }

    /// Creates an empty database and returns its connection string.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}")).expect("a database is created");
        self.url(&name)
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// How `$ce-{category}` in database `name` agrees with the log: four
    /// counts, equal when it links every event of the category once, in
    /// position order, numbered densely (the events of the category, the
    /// stream's entries, those two matched entry for entry, and the
    /// stream's length).
    pub fn category_agreement(&self, name: &str, category: &str) -> String {
        let sql = format!(
            "WITH expected AS (SELECT row_number() OVER (ORDER BY position) - 1 AS n, position, stream, number \
             FROM events WHERE stream LIKE '{category}-%'), \
             got AS (SELECT r.first_number + u.i - 1 AS n, u.position, u.stream, u.number \
             FROM link_runs r, unnest(r.positions, r.link_streams, r.link_numbers) WITH ORDINALITY \
             AS u(position, stream, number, i) WHERE r.stream = '$ce-{category}') \
             SELECT (SELECT count(*) FROM expected) || ' ' || (SELECT count(*) FROM got) || ' ' || \
             (SELECT count(*) FROM expected JOIN got USING (n, position, stream, number)) || ' ' || \
             (SELECT next_number FROM streams WHERE name = '$ce-{category}')"
        );
        self.psql(name, &sql).unwrap()
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

    /// Turns TLS on with this certificate and key (PEM), written into the
    /// data directory as its owner's (the key readable by it alone, as
    /// PostgreSQL demands); plain connections stay allowed.
    pub fn enable_tls(&self, certificate: &str, key: &str) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let data = self.dir.join("data");
        let owner = std::fs::metadata(&data).unwrap();
        for (file, text, mode) in [("server.crt", certificate, 0o644), ("server.key", key, 0o600)] {
            let path = data.join(file);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        for setting in ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"] {
            self.psql("postgres", &format!("ALTER SYSTEM SET {setting}")).unwrap();
        }
        self.psql("postgres", "SELECT pg_reload_conf()").unwrap();
        let started = Instant::now();
        while self.psql("postgres", "SHOW ssl").as_deref() != Ok("on") {
            assert!(
                started.elapsed() < START_PATIENCE,
                "TLS did not turn on: {:?}",
                self.psql("postgres", "SHOW ssl")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's process id, from its lock file.
    fn postmaster(&self) -> Option<u32> {
        let lock = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        lock.lines().next()?.trim().parse().ok()
    }

    /// Kills the postmaster and every process of it with `SIGKILL`, as a
    /// crash of the database's machine would (less the page cache, which
    /// survives: with `fsync` off nothing else would), and waits until
    /// they are gone.
    pub fn kill9(&self) {
        let process = self.process.lock().unwrap().take().expect("the cluster runs");
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", process.id())]).status();
        wait_for_group_gone(process);
    }

    /// Stops the cluster as an operator would (`SIGINT`: a fast shutdown,
    /// which ends every session), and waits until it is gone.
    pub fn stop(&self) {
        let process = self.process.lock().unwrap().take().expect("the cluster runs");
        if let Some(postmaster) = self.postmaster() {
            let _ = Command::new("kill").args(["-INT", &postmaster.to_string()]).status();
        }
        wait_for_group_gone(process);
    }

    /// Starts the cluster again on its data directory and port (after
    /// [`Cluster::stop`] or [`Cluster::kill9`]), and waits until it answers.
    pub fn start_again(&self) {
        self.launch().expect("PostgreSQL starts again");
    }

    /// Starts `postgres` in a process group of its own and waits until it
    /// answers. `fsync` off: the tests crash no machine (a killed
    /// postmaster leaves what it wrote in the page cache), and it spares
    /// the disk the other builds share.
    fn launch(&self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .map_err(|error| format!("the log: {error}"))?;
        let child = as_cluster_user(&self.bin.join("postgres"), self.root, &self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|error| format!("the log: {error}"))?)
            .stderr(log)
            .spawn()
            .map_err(|error| format!("starting postgres: {error}"))?;
        *self.process.lock().unwrap() = Some(child);
        let started = Instant::now();
        loop {
            match self.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(error) if started.elapsed() > START_PATIENCE => {
                    let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                    return Err(format!("postgres did not answer: {error}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let process = self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let (Some(mut process), Some(postmaster)) = (process, self.postmaster()) {
            // An immediate shutdown; the watchdog removes the directory
            // when the test process ends.
            let _ = Command::new("kill").args(["-QUIT", &postmaster.to_string()]).status();
            let _ = process.wait();
        }
    }
}

/// Reaps `process` and waits until no process of its group is left but
/// zombies (whose parent, the killed postmaster, is gone).
fn wait_for_group_gone(mut process: Child) {
    let group = process.id();
    let _ = process.wait();
    let started = Instant::now();
    while group_alive(group) {
        assert!(started.elapsed() < START_PATIENCE, "PostgreSQL did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process of process group `group` still runs (zombies aside).
fn group_alive(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // `pid (name) state ppid pgrp …`; the name may hold anything, so
        // the fields are counted after its closing parenthesis.
        let Some((_, fields)) = stat.rsplit_once(')') else { return false };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<u32>().ok());
        pgrp == Some(group) && state != Some("Z")
    })
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
    let dir = owned_temporary_directory(root)?;
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
    watch(&dir, root)?;
    let cluster = Cluster { bin, port, root, dir, process: Mutex::new(None), databases: AtomicU64::new(0) };
    cluster.launch()?;
    Ok(cluster)
}

/// Starts the watchdog of the cluster in `dir`: once the test process is
/// gone, it stops whatever postmaster runs in the directory (an immediate
/// shutdown), waits for it, and removes the directory.
fn watch(dir: &Path, root: bool) -> Result<(), String> {
    let script = r#"
        while [ -d "/proc/$2" ]; do sleep 0.2; done
        postmaster=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
        if [ -n "$postmaster" ] && kill -QUIT "$postmaster" 2>/dev/null; then
            while kill -0 "$postmaster" 2>/dev/null; do sleep 0.1; done
        fi
        rm -rf "$1"
    "#;
    as_cluster_user(Path::new("/bin/sh"), root, dir)
        .args(["-c", script, "watchdog"])
        .arg(dir)
        .arg(std::process::id().to_string())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("starting the watchdog: {error}"))?;
    Ok(())
}

// -- A second cluster from a base backup (tests/postgres_backup.rs) --------

impl Cluster {
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
        watch(&dir, root)?;
        let cluster =
            Cluster { bin, port, root, dir, process: Mutex::new(None), databases: AtomicU64::new(0) };
        cluster.launch()?;
        Ok(cluster)
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
