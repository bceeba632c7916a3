//! Servers on loopback ports with temporary data directories:
//! [`TestServer`] runs the server in this process (fast to start, easy to
//! restart on the same directory, its configuration adjustable);
//! [`BinaryServer`] runs the real binary, for tests that kill it or signal
//! it. Both keep their events on the backend `common::backend` picks: on
//! PostgreSQL each data directory stands for a database of its own, so a
//! restart on the same directory reopens the same store.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfeed::config::ServeConfig;
use eventfeed::server::Server;
use reqwest::{Client, Response};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::backend;
use super::http::{ATOM_JSON, EVENTS_JSON, client, event};

/// A server running inside the test process.
pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub client: Client,
    dir: Option<TempDir>,
    path: PathBuf,
    config: ServeConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default configuration changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::for_dir(dir.path().join("data"));
        adjust(&mut config);
        // A test that chose its store keeps it; the others get this run's.
        if config.store == "sled" {
            if let Some(url) = backend::store_for(&config.data_dir) {
                config.store = url;
            }
        }
        let path = config.data_dir.clone();
        Self::launch(config, Some(dir), path).await
    }

    async fn launch(config: ServeConfig, dir: Option<TempDir>, path: PathBuf) -> Self {
        let server = Server::bind(&config).await.expect("server starts");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs and stops cleanly");
        });
        Self {
            base: format!("http://{addr}"),
            addr,
            client: client(),
            dir,
            path,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> &Path {
        &self.path
    }

    /// Shuts down gracefully and waits until the store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends");
        }
    }

    /// Stops, then starts again on the same data directory (new port).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops, then starts again on the same data directory with the
    /// configuration changed by `adjust`.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        self.stop().await;
        let mut config = self.config.clone();
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        adjust(&mut config);
        let dir = self.dir.take();
        Self::launch(config, dir, self.path.clone()).await
    }

    pub async fn get(&self, path: &str, accept: &str) -> Response {
        self.get_with(path, accept, &[]).await
    }

    /// A GET with request headers besides `Accept`.
    pub async fn get_with(&self, path: &str, accept: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.get(self.url(path)).header("accept", accept);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path, ATOM_JSON).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Writes a stream's metadata document (`POST /streams/{stream}/metadata`).
    pub async fn set_metadata(&self, stream: &str, document: Value) -> Response {
        self.client
            .post(self.url(&format!("/streams/{stream}/metadata")))
            .header("content-type", "application/json")
            .body(document.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Appends an events+json array; returns the response.
    pub async fn post_events(&self, stream: &str, events: &Value) -> Response {
        self.client
            .post(self.url(&format!("/streams/{stream}")))
            .header("content-type", EVENTS_JSON)
            .body(events.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Appends `count` events of type `type` with data `{"n": i}`, one
    /// request; asserts 201.
    pub async fn append_n(&self, stream: &str, count: usize) {
        let events: Vec<Value> = (0..count).map(|n| event("Tested", serde_json::json!({ "n": n }))).collect();
        let response = self.post_events(stream, &Value::Array(events)).await;
        assert_eq!(response.status(), 201, "append to {stream}: {}", response.text().await.unwrap());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The real binary, started with `--bind 127.0.0.1:0` (and `--log info`
/// unless `extra_args` has a `--log`); `base` is `https://` when it was
/// given a TLS certificate. Unless `extra_args` has a `--store`, its store
/// is this run's backend's for `data_dir` (in `EVENTFEED_STORE`, as an
/// operator would give it).
pub struct BinaryServer {
    pub child: Child,
    pub base: String,
    pub addr: SocketAddr,
    /// Every line it has logged but the listening line.
    log: Arc<Mutex<Vec<String>>>,
}

impl BinaryServer {
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::launch(Command::new(env!("CARGO_BIN_EXE_eventfeed")), data_dir, extra_args)
    }

    /// Starts the binary with its open-file limit, soft and hard, set to
    /// `limit` (by util-linux's `prlimit`, which then runs it in its own
    /// process, so `child` is the server itself).
    pub fn start_with_open_file_limit(data_dir: &Path, limit: u64, extra_args: &[&str]) -> Self {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={limit}:{limit}")).arg(env!("CARGO_BIN_EXE_eventfeed"));
        Self::launch(command, data_dir, extra_args)
    }

    fn launch(mut command: Command, data_dir: &Path, extra_args: &[&str]) -> Self {
        let log_level: &[&str] = if extra_args.contains(&"--log") { &[] } else { &["--log", "info"] };
        let on_postgres = !extra_args.contains(&"--store") && backend::on_postgres();
        if on_postgres {
            if let Some(url) = backend::store_for(data_dir) {
                command.env("EVENTFEED_STORE", url);
            }
        }
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind", "127.0.0.1:0"])
            .args(log_level)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut before = Vec::new();
        let (scheme, addr) = loop {
            let line = lines.next().expect("server logs a listening line").unwrap();
            let url = line.split("listening on ").nth(1).map(str::trim);
            if let Some((scheme, addr)) = url.and_then(|url| url.split_once("://")) {
                break (scheme.to_owned(), addr.parse::<SocketAddr>().unwrap());
            }
            before.push(line);
        };
        // The run asked for PostgreSQL: make sure that is what it tests.
        if on_postgres {
            assert!(
                before.iter().any(|line| line.contains("PostgreSQL store open")),
                "the server opened no PostgreSQL store: {before:?}"
            );
        }
        // Keep draining the log so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(before));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self { child, base: format!("{scheme}://{addr}"), addr, log }
    }

    /// The last `count` lines it logged.
    pub fn last_logged(&self, count: usize) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(count)..].to_vec()
    }

    /// Waits up to `timeout` for a logged line that contains `text`.
    pub async fn logged(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().iter().any(|line| line.contains(text)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let started = std::time::Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
        started.elapsed()
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
