//! The Varnish harness: eventfeed behind a real `varnishd` running the
//! shipped VCL (`deploy/varnish/eventfeed.vcl`), on loopback ports:
//!
//! ```text
//! client ──► varnishd ──► recording proxy ──► eventfeed (in-process)
//! ```
//!
//! [`Chain`] (`common::cache_chain`) starts all three. Varnish's own
//! headers (`X-Varnish` with two transaction ids on a hit, `Age`) say what
//! the cache believes it did ([`is_cache_hit`]); the recording proxy
//! (`common::recording`), a small HTTP/1.1 relay, says what actually
//! reached eventfeed: every request Varnish sent (method, path, headers)
//! and the status eventfeed answered (`Exchange`).
//!
//! `varnishd` comes from Debian's `varnish` package (`tests/run` installs it).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tempfile::TempDir;

use super::cache_chain::CacheFront;
use super::http::{client, header};

// ---------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------

/// eventfeed, the recording proxy in front of it, and Varnish in front of
/// that (`common::cache_chain`). Dropping it stops all three.
pub type Chain = super::cache_chain::Chain<Varnish>;

/// Whether Varnish answered from its cache: on a hit `X-Varnish` carries two
/// transaction ids (this request's and the one that stored the object), and
/// `Age` is present.
pub fn is_cache_hit(headers: &HeaderMap) -> bool {
    let ids = header(headers, "x-varnish").unwrap_or_default();
    let age_present = header(headers, "age").is_some_and(|age| age.parse::<u64>().is_ok());
    ids.split_whitespace().count() == 2 && age_present
}

impl CacheFront for Varnish {
    const NAME: &'static str = "Varnish";
    /// Longer than the one-millisecond TTL the VCL gives head pages.
    const PASS_AFTER_FETCH: Duration = Duration::from_millis(20);
    const MAY_WEAKEN_ETAGS: bool = true;

    async fn start(backend: SocketAddr) -> Self {
        Varnish::start(backend).await
    }

    fn url(&self, path: &str) -> String {
        Varnish::url(self, path)
    }

    fn is_cache_hit(headers: &HeaderMap) -> bool {
        is_cache_hit(headers)
    }

    /// Varnish's headers tell a miss from a pass only in its log: a miss
    /// here is an answer that is not a hit.
    fn assert_miss(headers: &HeaderMap, context: &str) {
        assert!(!is_cache_hit(headers), "{context}: {headers:?}");
    }
}

// ---------------------------------------------------------------------------
// varnishd
// ---------------------------------------------------------------------------

/// The shipped VCL, pointed at a backend on this machine.
fn vcl_for(backend: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/eventfeed.vcl");
    let vcl = std::fs::read_to_string(&path).unwrap();
    let host = ".host = \"127.0.0.1\";";
    let port = ".port = \"2113\";";
    assert!(vcl.contains(host) && vcl.contains(port), "the VCL's backend is 127.0.0.1:2113");
    vcl.replacen(host, &format!(".host = \"{}\";", backend.ip()), 1).replacen(
        port,
        &format!(".port = \"{}\";", backend.port()),
        1,
    )
}

/// The rules the shipped VCLs include, next to a VCL written into `dir`
/// (an include of `./…` is relative to the including file).
pub fn copy_rules(dir: &Path) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/eventfeed-rules.vcl");
    std::fs::copy(rules, dir.join("eventfeed-rules.vcl")).unwrap();
}

fn varnishd_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("varnishd"))
        .find(|candidate| candidate.is_file())
        .expect("varnishd is installed (Debian package `varnish`; tests/run installs it)")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `varnishd` in the foreground with its own working directory, storage and
/// listening port; stopped when dropped.
pub struct Varnish {
    child: Child,
    addr: SocketAddr,
    /// The VCL, working directory and log; removed after varnishd stops.
    _dir: TempDir,
}

impl Varnish {
    pub async fn start(backend: SocketAddr) -> Self {
        Self::start_with_vcl(&vcl_for(backend)).await
    }

    /// Varnish with the shipped cluster VCL
    /// (`deploy/varnish/eventfeed-cluster.vcl`), its two nodes pointed at
    /// `nodes`.
    pub async fn start_cluster(nodes: [SocketAddr; 2]) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/eventfeed-cluster.vcl");
        let mut vcl = std::fs::read_to_string(&path).unwrap();
        for (shipped, node) in ["2113", "2114"].into_iter().zip(nodes) {
            let port = format!(".port = \"{shipped}\";");
            assert!(vcl.contains(&port), "the cluster VCL has a node on port {shipped}");
            vcl = vcl.replacen(&port, &format!(".port = \"{}\";", node.port()), 1);
        }
        Self::start_with_vcl(&vcl).await
    }

    /// Varnish running `vcl`, which may include the shipped rules.
    async fn start_with_vcl(vcl_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vcl = dir.path().join("eventfeed.vcl");
        std::fs::write(&vcl, vcl_text).unwrap();
        copy_rules(dir.path());
        let log = dir.path().join("varnishd.log");
        // Another process may take the port between free_port() and
        // varnishd's bind: try a few.
        for attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let work = dir.path().join(format!("work{attempt}"));
            let mut child = spawn_varnishd(&work, &vcl, addr, &log);
            match wait_until_serving(&mut child, addr, &log).await {
                Ok(()) => return Self { child, addr, _dir: dir },
                Err(output) => {
                    stop(&mut child);
                    if !output.contains("Address already in use") {
                        panic!("varnishd did not start:\n{output}");
                    }
                }
            }
        }
        panic!("varnishd found no free port");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Waits until a request through Varnish reaches the backend and comes
/// back; on failure returns varnishd's output.
async fn wait_until_serving(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let output = || std::fs::read_to_string(log).unwrap_or_default();
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("varnishd exited with {status}: {}", output()));
        }
        let ping = client.get(format!("http://{addr}/ping")).timeout(Duration::from_secs(5)).send().await;
        if ping.is_ok_and(|response| response.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("varnishd did not answer within 60 s: {}", output()))
}

/// SIGTERM lets varnishd's manager stop its cache process; SIGKILL if it
/// lingers.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_varnishd(work: &Path, vcl: &Path, addr: SocketAddr, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(varnishd_path())
        .arg("-F") // foreground: this process owns it and stops it
        .args(["-j", "none"]) // no privilege separation: runs as whoever runs the tests, root or not
        .arg("-n")
        .arg(work)
        .arg("-a")
        .arg(addr.to_string())
        .arg("-f")
        .arg(vcl)
        .args(["-s", "malloc,64m", "-T", "none"])
        // A test needs few threads and little shared-memory log.
        .args(["-p", "thread_pools=1", "-p", "thread_pool_min=10", "-p", "vsl_space=4M"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("varnishd starts")
}

impl Drop for Varnish {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
