//! A Patroni cluster of the tests' own: one etcd and two PostgreSQL
//! members managed by Patroni (Debian's `patroni` and `etcd-server`), a
//! primary and a synchronous standby, every server on free loopback ports
//! in one temporary directory, run as an unprivileged user when the tests
//! run as root.
//!
//! As with [`super::postgres`], a shell watchdog outlives nothing: once the
//! test process is gone it kills every process whose command line names
//! the cluster's directory (etcd, both Patronis, their postmasters) and
//! removes the directory.
//!
//! The settings are the ones `deploy/patroni/` documents, shortened for a
//! test: `ttl` 10 s and `loop_wait` 1 s, so a dead primary's leader key
//! expires and the standby is promoted about 10 s after the kill.
//! `synchronous_mode` is on: a commit is acknowledged only once the
//! standby has it, which is what makes the failover lose nothing.
//! `fsync` is off: these tests kill processes, never the machine, and the
//! page cache outlives a process.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::postgres::{as_cluster_user, binaries, is_root};

/// How long the cluster may take to elect a primary and attach its
/// synchronous standby.
const START_PATIENCE: Duration = Duration::from_secs(90);

/// One Patroni-managed PostgreSQL.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// Patroni's REST API port.
    pub api: u16,
    config: PathBuf,
    data: PathBuf,
}

/// A running cluster.
#[derive(Debug)]
pub struct Patroni {
    dir: PathBuf,
    root: bool,
    pub members: Vec<Member>,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("a free port: {error}"))
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts a cluster, or says why not: the caller skips (or under `CI`
/// fails) as [`super::postgres::cluster`] does.
pub fn start() -> Result<Patroni, String> {
    for program in ["patroni", "etcd"] {
        if !installed(program) {
            return Err(format!(
                "no `{program}` (Debian: apt-get install patroni etcd-server; tests/run installs them)"
            ));
        }
    }
    let bin = binaries().ok_or("no /usr/lib/postgresql/<version>/bin/postgres")?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("eventfeed-patroni-")
        .tempdir()
        .map_err(|error| format!("a temporary directory: {error}"))?
        .keep();
    let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
    let members = (1..=2)
        .map(|n| {
            Ok(Member {
                name: format!("pg{n}"),
                port: free_port()?,
                api: free_port()?,
                config: dir.join(format!("pg{n}.yml")),
                data: dir.join(format!("pg{n}")),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for member in &members {
        std::fs::write(&member.config, member_config(member, &dir, &bin, etcd_client))
            .map_err(|error| format!("writing {}: {error}", member.config.display()))?;
    }
    if root {
        let status = Command::new("chown")
            .args(["-R", "nobody:"])
            .arg(&dir)
            .status()
            .map_err(|error| format!("chown: {error}"))?;
        if !status.success() {
            return Err(format!("chown {} failed", dir.display()));
        }
    }
    // The watchdog starts etcd, lives as long as the test process and
    // then takes everything of the cluster's down with it.
    let script = r#"
        dir=$1
        etcd --name etcd --data-dir "$dir/etcd" \
            --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
            --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
            --initial-cluster "etcd=http://127.0.0.1:$3" >"$dir/etcd.log" 2>&1 &
        while [ -d "/proc/$4" ]; do sleep 0.2; done
        pkill -9 -f "$dir/"
        sleep 0.5
        rm -rf "$dir"
    "#;
    as_cluster_user(Path::new("/bin/sh"), root, &dir)
        .args(["-c", script, "watchdog"])
        .arg(&dir)
        .arg(etcd_client.to_string())
        .arg(etcd_peer.to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("starting etcd: {error}"))?;
    let cluster = Patroni { dir, root, members };
    // The first member bootstraps the cluster and becomes its primary;
    // the second then clones it and follows as the synchronous standby.
    cluster.start_member(0)?;
    cluster.wait(|cluster| cluster.primary() == Some(0), "a primary")?;
    cluster.start_member(1)?;
    cluster.wait(|cluster| cluster.synchronous_standby() == Some(1), "a synchronous standby")?;
    Ok(cluster)
}

/// A member's Patroni configuration (YAML is a superset of JSON, so the
/// values are quoted as JSON).
fn member_config(member: &Member, dir: &Path, bin: &Path, etcd: u16) -> String {
    let quote = |path: &Path| serde_json::Value::String(path.display().to_string()).to_string();
    format!(
        r#"scope: eventfeed-tests
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 0
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_log_hints: "on"
        max_connections: 300
        fsync: "off"
        full_page_writes: "off"
  initdb:
    - encoding: UTF8
    - no-locale
    - auth: trust
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {pgpass}
  parameters:
    unix_socket_directories: {dir}
  authentication:
    replication:
      username: replicator
      password: replicator
    superuser:
      username: postgres
      password: postgres
"#,
        name = member.name,
        api = member.api,
        port = member.port,
        data = quote(&member.data),
        bin = quote(bin),
        pgpass = quote(&dir.join(format!("{}.pgpass", member.name))),
        dir = quote(dir),
    )
}

impl Patroni {
    /// The multi-host connection string eventfeed nodes use: whichever
    /// member is the primary.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.members.iter().map(|m| format!("127.0.0.1:{}", m.port)).collect();
        format!("postgres://postgres@{}/postgres?target_session_attrs=read-write", hosts.join(","))
    }

    /// Starts member `index`'s Patroni (again, after a kill: it rejoins
    /// as a standby).
    pub fn start_member(&self, index: usize) -> Result<(), String> {
        let member = &self.members[index];
        as_cluster_user(Path::new("/bin/sh"), self.root, &self.dir)
            .arg("-c")
            .arg(r#"exec patroni "$1" >>"$2" 2>&1"#)
            .arg("patroni")
            .arg(&member.config)
            .arg(self.dir.join(format!("{}.log", member.name)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|error| format!("starting patroni {}: {error}", member.name))
    }

    /// `kill -9` of member `index` as a machine dies: its Patroni and its
    /// postmaster (the backends die with it), with no chance to hand over.
    pub fn kill_member(&self, index: usize) {
        let member = &self.members[index];
        for pattern in
            [format!("patroni {}", member.config.display()), format!("-D {} ", member.data.display())]
        {
            let _ = Command::new("pkill").args(["-9", "-f", "--", &pattern]).status();
        }
    }

    /// `true` when member `index`'s REST API says `status` for `path`.
    fn answers(&self, index: usize, path: &str) -> bool {
        let url = format!("http://127.0.0.1:{}{path}", self.members[index].api);
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
            .output()
            .is_ok_and(|output| output.stdout == b"200")
    }

    /// The member that is the primary now, by Patroni's own health check.
    pub fn primary(&self) -> Option<usize> {
        (0..self.members.len()).find(|&index| self.answers(index, "/primary"))
    }

    /// The member that is a synchronous standby now.
    pub fn synchronous_standby(&self) -> Option<usize> {
        (0..self.members.len()).find(|&index| self.answers(index, "/sync"))
    }

    /// Waits until `done` holds, up to the start's patience.
    pub fn wait(&self, done: impl Fn(&Self) -> bool, what: &str) -> Result<(), String> {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > START_PATIENCE {
                return Err(format!("no {what} after {START_PATIENCE:?}; logs: {}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The tails of the members' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for name in self.members.iter().map(|m| m.name.as_str()).chain(["etcd"]) {
            let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            logs.push_str(&format!("\n--- {name}\n"));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }
}
