//! Test helpers: real servers on loopback ports with temporary data
//! directories, and a real HTTP client.
//!
//! [`TestServer`] runs the server in this process (fast to start, easy to
//! restart on the same directory); [`BinaryServer`] runs the real binary, for
//! tests that kill it or signal it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

pub const EVENTS_JSON: &str = "application/vnd.eventstore.events+json";
pub const ATOM_JSON: &str = "application/vnd.eventstore.atom+json";
pub const ATOM_XML: &str = "application/atom+xml";

/// Tests that open a thousand client sockets need more than the common
/// default soft limit of 1024 open files; raise it to the hard limit.
pub fn raise_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A client that does not follow redirects (tests look at them).
pub fn client() -> Client {
    raise_open_file_limit();
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

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

/// One element of an events array with a fresh id.
pub fn event(event_type: &str, data: Value) -> Value {
    serde_json::json!({ "eventId": uuid::Uuid::new_v4().to_string(), "eventType": event_type, "data": data })
}

/// The real binary, started with `--bind 127.0.0.1:0` (and `--log info`
/// unless `extra_args` has a `--log`).
pub struct BinaryServer {
    pub child: Child,
    pub base: String,
    pub addr: SocketAddr,
    /// Every line it has logged since the listening line.
    log: Arc<Mutex<Vec<String>>>,
}

impl BinaryServer {
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        let log_level: &[&str] = if extra_args.contains(&"--log") { &[] } else { &["--log", "info"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventfeed"))
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
        let addr = loop {
            let line = lines.next().expect("server logs a listening line").unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim().parse::<SocketAddr>().unwrap();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self { child, base: format!("http://{addr}"), addr, log }
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

/// Every event of a stream, oldest first, by walking forward pages.
pub async fn read_all_events(client: &Client, base: &str, stream: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut url = format!("{base}/streams/{stream}/0/forward/100?embed=body");
    loop {
        let response = client.get(&url).header("accept", ATOM_JSON).send().await.unwrap();
        if response.status() == 404 {
            return events;
        }
        assert_eq!(response.status(), 200, "{url}");
        let page: Value = response.json().await.unwrap();
        let mut entries = page["entries"].as_array().unwrap().clone();
        entries.reverse();
        events.extend(entries);
        match link(&page, "previous") {
            Some(previous) => url = format!("{previous}?embed=body"),
            None => return events,
        }
    }
}

/// The `uri` of a feed link by relation.
pub fn link(page: &Value, relation: &str) -> Option<String> {
    page["links"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["uri"].as_str().unwrap().to_owned())
}

/// Sends one raw HTTP/1.1 request (for paths a URL library would
/// normalise) and returns the status code.
pub async fn raw_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits (up to 60 s) until no projection is being built.
pub async fn wait_for_projections(client: &Client, base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info: Value = client.get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
        if info["projectionsBuilding"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections still building: {}",
            info["projectionsBuilding"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `done` every 10 ms until it holds; fails the test, naming `what`,
/// if it does not within `limit`.
pub async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 30 s) until the server reports at least `count` waiters
/// (long-polls and SSE streams), so a test acts only once they all wait.
pub async fn wait_for_waiters(client: &Client, base: &str, count: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info: Value = client.get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
        if info["waiters"].as_u64().unwrap() >= count {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "only {} of {count} waiters arrived", info["waiters"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP reason phrase the server sent (our error format also repeats
/// it as the first line of the body, which is what this checks when the
/// client library does not expose non-canonical phrases).
pub async fn reason(response: Response) -> String {
    if let Some(phrase) = response.extensions().get::<hyper::ext::ReasonPhrase>() {
        return String::from_utf8_lossy(phrase.as_bytes()).into_owned();
    }
    response.text().await.unwrap().lines().next().unwrap_or_default().to_owned()
}

/// A response header as text, if present.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// Starts a scavenge; returns its id.
pub async fn start_scavenge(client: &Client, base: &str) -> String {
    let response = client.post(format!("{base}/admin/scavenge")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["scavengeId"].as_str().unwrap().to_owned()
}

/// A scavenge's report.
pub async fn report(client: &Client, base: &str, id: &str) -> Value {
    client.get(format!("{base}/admin/scavenge/{id}")).send().await.unwrap().json().await.unwrap()
}

/// Polls a scavenge's report until `until` holds (at most ten minutes).
pub async fn wait_for(client: &Client, base: &str, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let report = report(client, base, id).await;
        if until(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "scavenge did not get there: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
