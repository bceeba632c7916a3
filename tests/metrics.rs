//! `GET /metrics`: valid Prometheus text (a strict parser here, and
//! Debian's `promtool check metrics` where installed), counters that move
//! with appends, reads, a wrong expected version, `304`s and a parked
//! subscription message, routes labelled by template and never by stream
//! name, who may read it (`$admins`, `$ops`, anyone with
//! `--metrics-public`), and a real Prometheus server scraping it.
//!
//! `prometheus-client` encodes but does not parse the text format, so the
//! parser is here: every line must be a `# HELP`, a `# TYPE` or a sample
//! of a family whose `TYPE` came first, with well-formed names, labels and
//! values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::subscriptions::Api;
use common::{ATOM_JSON, EVENTS_JSON, TestServer, anonymous_client, event};

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The parsed exposition: samples, and each family's type and help.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
    helps: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
    }

    /// `value`, or 0 for a series not yet created.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("not a value: {text:?}")),
    }
}

/// `{a="x",b="y"}` (the braces stripped): label values may hold escaped
/// `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or_else(|| format!("no label value in {text:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in {text:?}")),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {text:?}")),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice in {text:?}"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// The family a sample belongs to, given the types declared.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        (types.get(family).map(String::as_str) == Some("histogram")).then_some(family)
    })
}

/// Parses the text format strictly (see the module doc).
fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, help) = help.split_once(' ').ok_or_else(|| format!("HELP without text: {line}"))?;
            if !is_metric_name(name) || exposition.helps.insert(name.to_owned(), help.to_owned()).is_some() {
                return Err(format!("bad or repeated HELP: {line}"));
            }
            continue;
        }
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) =
                declared.split_once(' ').ok_or_else(|| format!("TYPE without type: {line}"))?;
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !is_metric_name(name) || !known.contains(&kind) {
                return Err(format!("bad TYPE: {line}"));
            }
            if !exposition.helps.contains_key(name) {
                return Err(format!("TYPE before HELP: {line}"));
            }
            if exposition.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("TYPE twice: {line}"));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("a comment the format does not have: {line}"));
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| format!("no value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').ok_or_else(|| format!("unclosed labels: {line}"))?;
                (name, parse_labels(labels)?)
            }
            None => (series, BTreeMap::new()),
        };
        if !is_metric_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        let family =
            family_of(name, &exposition.types).ok_or_else(|| format!("sample without TYPE: {line}"))?;
        if exposition.types[family] == "counter" && !name.ends_with("_total") {
            return Err(format!("a counter not named _total: {line}"));
        }
        let value = parse_value(value)?;
        if value < 0.0 && exposition.types[family] != "gauge" {
            return Err(format!("negative {}: {line}", exposition.types[family]));
        }
        exposition.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok(exposition)
}

/// Checks with Debian's `promtool` too, where installed (it is, by
/// tests/run); CI must have it.
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        assert!(std::env::var_os("CI").is_none(), "CI needs promtool (Debian's prometheus package)");
        eprintln!("promtool not installed: checked with this file's parser only");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Scrapes as the server's own (admin) client; checks the headers and the
/// format.
async fn scrape(server: &TestServer) -> Exposition {
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

async fn append(server: &TestServer, stream: &str, expected: Option<&str>, events: usize) -> u16 {
    let body: Vec<Value> = (0..events).map(|n| event("Metered", json!({ "n": n }))).collect();
    let mut request =
        server.client.post(server.url(&format!("/streams/{stream}"))).header("content-type", EVENTS_JSON);
    if let Some(expected) = expected {
        request = request.header("es-expectedversion", expected);
    }
    request.body(Value::Array(body).to_string()).send().await.unwrap().status().as_u16()
}

const STREAM_ROUTE: &[(&str, &str)] =
    &[("route", "/streams/{stream}"), ("method", "POST"), ("status", "2xx")];

#[tokio::test]
async fn metrics_are_valid_text_and_move_with_appends_reads_and_conflicts() {
    let server = TestServer::start().await;
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    promtool_check(&text);
    let before = scrape(&server).await;
    for family in [
        "eventfeed_head_position",
        "eventfeed_http_request_duration_seconds",
        "eventfeed_commit_duration_seconds",
    ] {
        assert!(before.helps.contains_key(family), "HELP of {family}");
    }
    assert_eq!(before.types["eventfeed_commit_duration_seconds"], "histogram");
    assert_eq!(before.types["eventfeed_waiters"], "gauge");

    let stream = "metered-secret-name";
    assert_eq!(append(&server, stream, None, 3).await, 201);
    assert_eq!(append(&server, stream, Some("2"), 2).await, 201);
    let conflict = append(&server, stream, Some("0"), 1).await;
    assert!(conflict == 400 || conflict == 409, "a wrong expected version: {conflict}");
    // A page read, then the same read answered 304.
    let page = server.get(&format!("/streams/{stream}"), ATOM_JSON).await;
    assert_eq!(page.status(), 200);
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let again = server.get_with(&format!("/streams/{stream}"), ATOM_JSON, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);

    let after = scrape(&server).await;
    // A labelled family appears with its first series.
    assert_eq!(after.types["eventfeed_appends_total"], "counter");
    let moved = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    assert_eq!(moved("eventfeed_appends_total", &[("outcome", "ok")]), 2.0);
    assert_eq!(moved("eventfeed_append_events_total", &[("outcome", "ok")]), 5.0);
    assert_eq!(moved("eventfeed_appends_total", &[("outcome", "wrong_expected_version")]), 1.0);
    assert_eq!(moved("eventfeed_append_events_total", &[("outcome", "wrong_expected_version")]), 1.0);
    assert_eq!(moved("eventfeed_http_not_modified_total", &[]), 1.0);
    assert!(moved("eventfeed_reads_total", &[]) >= 2.0);
    assert_eq!(moved("eventfeed_http_requests_total", STREAM_ROUTE), 2.0);
    let get = [("route", "/streams/{stream}"), ("method", "GET")];
    assert_eq!(moved("eventfeed_http_request_duration_seconds_count", &get), 2.0);
    assert!(moved("eventfeed_commits_total", &[]) >= 2.0);
    assert!(moved("eventfeed_commit_events_sum", &[]) >= 5.0);
    assert!(moved("eventfeed_commit_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(after.value("eventfeed_head_position", &[]), Some(5.0));
    assert_eq!(after.value("eventfeed_writes_accepting", &[]), Some(1.0));
    // The admin's Basic credentials: verified once, then from the cache.
    assert!(after.count("eventfeed_credential_cache_hits_total", &[]) >= 5.0);

    // Routes by template only: no stream name anywhere in the text.
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(stream), "a stream name leaked into the metrics");
    // A histogram's buckets are cumulative and end at +Inf with the count.
    let buckets: Vec<&Sample> =
        after.samples.iter().filter(|s| s.name == "eventfeed_commit_duration_seconds_bucket").collect();
    assert!(buckets.windows(2).all(|pair| pair[0].value <= pair[1].value));
    assert_eq!(buckets.last().unwrap().labels["le"], "+Inf");
    assert_eq!(
        Some(buckets.last().unwrap().value),
        after.value("eventfeed_commit_duration_seconds_count", &[])
    );
}

#[tokio::test]
async fn a_parked_subscription_message_shows_in_its_groups_figures() {
    let server = TestServer::start().await;
    let api = Api::of(&server);
    let (_, taken) = api.set_up_and_take("metered-sub", "g", json!({ "startFrom": 0 }), 4, "c", 2).await;
    assert_eq!(taken.len(), 2);
    let park =
        api.post_path(&format!("/subscriptions/metered-sub/g/nack/{}?action=Park", taken[0].id), "c").await;
    assert_eq!(park.status(), 202);
    let group = [("stream", "metered-sub"), ("group", "g")];
    let deadline = Instant::now() + Duration::from_secs(20);
    let figures = loop {
        let figures = scrape(&server).await;
        // The park is written to the parked stream, then counted by the
        // group: both settle within moments.
        if figures.value("eventfeed_subscription_parked", &group) == Some(1.0)
            && figures.value("eventfeed_subscription_processed_total", &group) == Some(1.0)
        {
            break figures;
        }
        assert!(Instant::now() < deadline, "the parked message never showed: {figures:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(figures.types["eventfeed_subscription_parked"], "gauge");
    // The other message taken is in flight until acked or timed out.
    assert!(figures.value("eventfeed_subscription_in_flight", &group).is_some_and(|n| n <= 1.0));
    // Nothing acked: the checkpoint is at most past the parked first
    // event, so three or four events behind the source's four.
    let lag = figures.value("eventfeed_subscription_checkpoint_lag", &group).unwrap();
    assert!(lag == 3.0 || lag == 4.0, "checkpoint lag {lag}");
}

#[tokio::test]
async fn open_sse_streams_are_counted_until_their_client_goes() {
    let server = TestServer::start().await;
    server.append_n("watched", 1).await;
    let open = |figures: &Exposition| figures.value("eventfeed_sse_streams", &[]);
    assert_eq!(open(&scrape(&server).await), Some(0.0));
    let sse = server
        .client
        .get(server.url("/streams/watched"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let figures = scrape(&server).await;
    assert_eq!(open(&figures), Some(1.0));
    assert!(figures.value("eventfeed_waiters", &[]).is_some_and(|n| n >= 1.0));
    drop(sse);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open(&scrape(&server).await) != Some(0.0) {
        assert!(Instant::now() < deadline, "the closed SSE stream is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_user(server: &TestServer, login: &str, groups: &[&str]) {
    let body = json!({ "loginName": login, "fullName": login, "groups": groups, "password": "pw" });
    let response = server
        .client
        .post(server.url("/users/"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn status_as(server: &TestServer, login: Option<&str>) -> u16 {
    let mut request = anonymous_client().get(server.url("/metrics"));
    if let Some(login) = login {
        request = request.basic_auth(login, Some("pw"));
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn admins_and_ops_may_read_the_metrics_and_anyone_with_metrics_public() {
    let server = TestServer::start().await;
    create_user(&server, "operator", &["$ops"]).await;
    create_user(&server, "someone", &[]).await;
    assert_eq!(status_as(&server, None).await, 401);
    assert_eq!(status_as(&server, Some("someone")).await, 401);
    assert_eq!(status_as(&server, Some("operator")).await, 200);
    let denied = anonymous_client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.headers()["www-authenticate"], "Basic realm=\"ES\"");
    // A denied append is counted as such.
    let refused = anonymous_client()
        .post(server.url("/streams/%24settings"))
        .header("content-type", EVENTS_JSON)
        .body(json!([event("T", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(scrape(&server).await.value("eventfeed_appends_total", &[("outcome", "denied")]), Some(1.0));

    let server = server.restart_with(|config| config.metrics_public = true).await;
    assert_eq!(status_as(&server, None).await, 200);
}

#[tokio::test]
async fn metrics_turned_off_answer_404() {
    let server = TestServer::start_with(|config| config.metrics = false).await;
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(append(&server, "off", None, 1).await, 201);
}

/// A Prometheus server on loopback, in a temporary directory, scraping
/// one target every second; killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` when it cannot start (not installed); CI must have it.
    fn start(target: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: eventfeed\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        // A free port: bound, then released for Prometheus to take.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Some(Self { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }),
            Err(error) => {
                assert!(std::env::var_os("CI").is_none(), "CI needs prometheus (Debian's package): {error}");
                eprintln!("SKIPPED: prometheus cannot start ({error}); tests/run installs it");
                None
            }
        }
    }

    /// The value of an instant query's only sample, once it has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let query = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={query}", self.base))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        let value = body["data"]["result"].get(0)?["value"][1].as_str()?.to_owned();
        value.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_append_counter() {
    let server = TestServer::start_with(|config| config.metrics_public = true).await;
    assert_eq!(append(&server, "scraped", None, 3).await, 201);
    assert_eq!(append(&server, "scraped", None, 4).await, 201);
    let Some(prometheus) = Prometheus::start(&server.addr.to_string()) else { return };
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = r#"eventfeed_append_events_total{job="eventfeed",outcome="ok"}"#;
    loop {
        if prometheus.query(query).await == Some(7.0) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never returned the append counter");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(prometheus.query(r#"eventfeed_appends_total{outcome="ok"}"#).await, Some(2.0));
    assert_eq!(prometheus.query(r#"up{job="eventfeed"}"#).await, Some(1.0));
}

#[tokio::test]
async fn a_long_poll_woken_by_an_append_is_timed_from_the_commit() {
    let server = Arc::new(TestServer::start().await);
    server.append_n("awaited", 1).await;
    let wakeups = |figures: &Exposition| figures.count("eventfeed_wakeup_seconds_count", &[]);
    let before = scrape(&server).await;
    assert_eq!(before.types["eventfeed_wakeup_seconds"], "histogram");
    let waiter = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let response = server
                .client
                .get(server.url("/streams/awaited/1/forward/20"))
                .header("accept", ATOM_JSON)
                .header("es-longpoll", "30")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        })
    };
    // Once the long-poll waits (it holds a waiter's permit), append.
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(&server).await.value("eventfeed_waiters", &[]) != Some(1.0) {
        assert!(Instant::now() < deadline, "the long-poll never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first append's wake-up is published after its 201, so it may
    // still reach this waiter (which then reads again and waits on): the
    // figures count from here.
    let before = scrape(&server).await;
    server.append_n("awaited", 1).await;
    tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap();
    let after = scrape(&server).await;
    let woken = wakeups(&after) - wakeups(&before);
    assert!((1.0..=2.0).contains(&woken), "{woken} wake-ups counted for one append");
    // Timed from the commit, not from the start of the wait (which began
    // before the append, whatever the machine's speed).
    let took =
        after.count("eventfeed_wakeup_seconds_sum", &[]) - before.count("eventfeed_wakeup_seconds_sum", &[]);
    assert!(took > 0.0 && took < 5.0, "a wake-up of {took} s");
}

#[tokio::test]
async fn the_postgres_backend_reports_its_pool_and_query_durations_and_sled_does_not() {
    // On the run whose servers are all on PostgreSQL, there is no sled
    // server to ask.
    if !common::backend::on_postgres() {
        let sled = TestServer::start().await;
        let text = sled.client.get(sled.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains("eventfeed_database_"), "database figures on sled:\n{text}");
    }

    let Some(url) = common::postgres::database() else { return };
    let server = TestServer::start_with(|config| config.store = url).await;
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    promtool_check(&text);
    let before = scrape(&server).await;
    assert_eq!(before.types["eventfeed_database_pool_in_use"], "gauge");
    assert_eq!(before.value("eventfeed_database_pool_max", &[]), Some(16.0));
    assert_eq!(before.value("eventfeed_database_pool_waiting", &[]), Some(0.0));

    assert_eq!(append(&server, "metered-on-postgres", None, 3).await, 201);
    assert_eq!(server.get("/streams/metered-on-postgres", ATOM_JSON).await.status(), 200);
    let after = scrape(&server).await;
    assert_eq!(after.types["eventfeed_database_query_duration_seconds"], "histogram");
    let moved = |name: &str, labels: &[(&str, &str)]| after.count(name, labels) - before.count(name, labels);
    let count = "eventfeed_database_query_duration_seconds_count";
    assert!(moved(count, &[("query", "write_transaction")]) >= 1.0, "{after:?}");
    assert!(moved(count, &[("query", "read_stream")]) >= 1.0, "{after:?}");
    assert!(moved("eventfeed_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(moved("eventfeed_commit_events_sum", &[]) >= 3.0);
    // The read's connection stays open in the pool, idle again.
    let open = after.value("eventfeed_database_pool_open", &[]).unwrap();
    assert!(open >= 1.0, "no read connection open");
    let in_use = after.value("eventfeed_database_pool_in_use", &[]).unwrap();
    assert!(in_use < open, "{in_use} of {open} connections in use with no read running");
}
