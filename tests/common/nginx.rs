//! The nginx harness: eventfeed behind a real `nginx` running the shipped
//! `proxy_cache` configuration (`deploy/nginx/eventfeed.conf`), on loopback
//! ports:
//!
//! ```text
//! client ──► nginx (cache ──► relay) ──► recording proxy ──► eventfeed (in-process)
//! ```
//!
//! [`Chain`] (`common::cache_chain`) starts all of it. nginx's
//! `X-Cache-Status` header says what the cache believes it did
//! ([`cache_status`]); the recording proxy (`common::recording`) says what
//! actually reached eventfeed.
//!
//! The shipped file belongs inside nginx's `http { }` block. The harness
//! writes the rest around it (the main context: pid file, error log, temp
//! directories, all in a temporary directory) and includes the shipped
//! file with only its four machine-specific values replaced (eventfeed's
//! address, the listening address, the cache directory and the relay's
//! socket), the values the file's head lists: what runs is the file as
//! shipped. nginx runs in the foreground as an unprivileged user: `nobody`
//! when the tests run as root (through `setpriv`, which execs nginx, so the
//! child is nginx's master), whoever runs them otherwise.
//!
//! `nginx` comes from Debian's `nginx` package (`tests/run` installs it).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tempfile::TempDir;

use super::cache_chain::CacheFront;
use super::http::{client, header};
use super::postgres::is_root;
use super::varnish::free_port;

/// The shipped configuration, relative to the repository.
pub const SHIPPED: &str = "deploy/nginx/eventfeed.conf";

/// The values the shipped file names for this machine, which the harness
/// replaces: eventfeed's address, where nginx listens, the cache directory
/// and the relay's socket.
const SHIPPED_BACKEND: &str = "server 127.0.0.1:2113;";
const SHIPPED_LISTEN: &str = "listen 127.0.0.1:6092;";
pub const SHIPPED_CACHE_DIR: &str = "/var/lib/nginx/eventfeed-cache";
const SHIPPED_RELAY: &str = "unix:/run/nginx-eventfeed-relay.sock";

/// The user nginx runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";

// ---------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------

/// eventfeed, the recording proxy in front of it, and nginx in front of
/// that (`common::cache_chain`). Dropping it stops all three.
pub type Chain = super::cache_chain::Chain<Nginx>;

/// nginx's `X-Cache-Status` (HIT, MISS, EXPIRED, REVALIDATED, ...), absent
/// on what the configuration passes straight through.
pub fn cache_status(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-cache-status")
}

/// Whether nginx answered from its cache without asking eventfeed.
pub fn is_cache_hit(headers: &HeaderMap) -> bool {
    cache_status(headers).as_deref() == Some("HIT")
}

impl CacheFront for Nginx {
    const NAME: &'static str = "nginx";
    const PASS_AFTER_FETCH: Duration = Duration::ZERO;
    const MAY_WEAKEN_ETAGS: bool = false;

    async fn start(backend: SocketAddr) -> Self {
        Nginx::start(backend).await
    }

    fn url(&self, path: &str) -> String {
        Nginx::url(self, path)
    }

    fn is_cache_hit(headers: &HeaderMap) -> bool {
        is_cache_hit(headers)
    }

    fn assert_miss(headers: &HeaderMap, context: &str) {
        assert_eq!(cache_status(headers).as_deref(), Some("MISS"), "{context}: {headers:?}");
    }
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

fn nginx_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .expect("nginx is installed (Debian package `nginx`; tests/run installs it)")
}

/// The shipped configuration with this run's addresses and paths.
fn configuration_for(backend: SocketAddr, listen: SocketAddr, cache: &Path, relay: &Path) -> String {
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED)).unwrap();
    let replacements = [
        (SHIPPED_BACKEND, format!("server {backend};")),
        (SHIPPED_LISTEN, format!("listen {listen};")),
        (SHIPPED_CACHE_DIR, cache.display().to_string()),
        (SHIPPED_RELAY, format!("unix:{}", relay.display())),
    ];
    let mut configuration = shipped.clone();
    for (value, replacement) in replacements {
        assert!(shipped.contains(value), "{SHIPPED} names `{value}`");
        configuration = configuration.replace(value, &replacement);
    }
    configuration
}

/// The main context around the shipped file: one worker, everything nginx
/// writes under `dir`, no access log.
fn main_configuration(dir: &Path, included: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;\n\
         worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {dir}/tmp/body;\n\
         \x20   proxy_temp_path {dir}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {dir}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {dir}/tmp/scgi;\n\
         \x20   include {};\n\
         }}\n",
        included.display()
    )
}

/// `nginx` in the foreground with its own configuration, pid file, error
/// log, temp and cache directories and listening port; stopped when
/// dropped.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    cache: PathBuf,
    /// Stops nginx if the test process dies without dropping this.
    watchdog: Child,
    /// Everything above; removed after nginx stops.
    dir: TempDir,
}

impl Nginx {
    pub async fn start(backend: SocketAddr) -> Self {
        let root = is_root();
        let dir = tempfile::Builder::new().prefix("eventfeed-nginx-").tempdir().unwrap();
        // nginx creates the last directory of each temp path, not its parent.
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let cache = dir.path().join("cache");
        let log = dir.path().join("error.log");
        // Another process may take the port between free_port() and
        // nginx's bind: try a few.
        for attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let relay = dir.path().join(format!("relay{attempt}.sock"));
            let included = dir.path().join("eventfeed.conf");
            std::fs::write(&included, configuration_for(backend, addr, &cache, &relay)).unwrap();
            let main = dir.path().join("nginx.conf");
            std::fs::write(&main, main_configuration(dir.path(), &included)).unwrap();
            let output = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
            if root {
                // nginx runs as nobody, and writes its files here.
                let status = Command::new("chown")
                    .arg("-R")
                    .arg(format!("{UNPRIVILEGED_USER}:"))
                    .arg(dir.path())
                    .status();
                assert!(status.is_ok_and(|status| status.success()), "chown {}", dir.path().display());
            }
            let mut child = spawn_nginx(dir.path(), &main, output, root);
            match wait_until_serving(&mut child, addr, &log).await {
                Ok(()) => {
                    let watchdog = watch(child.id());
                    return Self { child, addr, cache, watchdog, dir };
                }
                Err(output) => {
                    stop(&mut child);
                    if !output.contains("Address already in use") {
                        panic!("nginx did not start:\n{output}");
                    }
                }
            }
        }
        panic!("nginx found no free port");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The cache's directory (the shipped file's /var/lib/nginx/eventfeed-cache).
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// nginx's master process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What nginx logged (warnings and worse).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn spawn_nginx(dir: &Path, main: &Path, output: std::fs::File, root: bool) -> Child {
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command.args([
            &format!("--reuid={UNPRIVILEGED_USER}"),
            &format!("--regid={}", group_of(UNPRIVILEGED_USER)),
            "--clear-groups",
            "--",
        ]);
        command.arg(nginx_path());
        command
    } else {
        Command::new(nginx_path())
    };
    let log = dir.join("error.log");
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(main)
        .arg("-e") // the log before the configuration's error_log takes over
        .arg(&log)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output);
    // Its own process group: its workers are stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().expect("nginx starts")
}

/// The primary group of `user`.
fn group_of(user: &str) -> String {
    let output = Command::new("id").args(["-g", user]).output().expect("id");
    assert!(output.status.success(), "id -g {user}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until a request through nginx reaches the backend and comes
/// back; on failure returns nginx's log.
async fn wait_until_serving(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let output = || std::fs::read_to_string(log).unwrap_or_default();
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nginx exited with {status}: {}", output()));
        }
        let ping = client.get(format!("http://{addr}/ping")).timeout(Duration::from_secs(5)).send().await;
        if ping.is_ok_and(|response| response.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nginx did not answer within 30 s: {}", output()))
}

/// A shell that stops nginx's process group once the test process is
/// gone (a test binary killed before it could drop the chain).
fn watch(nginx: u32) -> Child {
    let script = r#"
        while [ -d "/proc/$1" ]; do sleep 0.5; done
        kill -TERM -- "-$2" 2>/dev/null
    "#;
    Command::new("sh")
        .args(["-c", script, "nginx-watchdog", &std::process::id().to_string(), &nginx.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watchdog starts")
}

/// SIGTERM: nginx's fast shutdown (the master stops its workers, cache
/// manager and loader); SIGKILL to the group if it lingers.
fn stop(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
    let _ = child.wait();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}
