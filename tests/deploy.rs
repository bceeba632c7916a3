//! `deploy/systemd/eventfeed.service`: a unit systemd accepts
//! (`systemd-analyze verify`, where systemd is installed; tests/run
//! installs it), hardened, restarting always, and giving the server more
//! time to stop than its own shutdown takes. `deploy/prometheus/`: a
//! scrape configuration `promtool` accepts, scraping `/metrics`.
//! `deploy/grafana/eventfeed.json`: a dashboard whose queries name only
//! metrics a running server's `/metrics` exposes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};

const UNIT: &str = include_str!("../deploy/systemd/eventfeed.service");

fn setting<'a>(name: &str) -> Option<&'a str> {
    UNIT.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

#[test]
fn the_unit_is_hardened_and_restarts_always() {
    for (name, value) in [
        ("Restart", "always"),
        ("StateDirectory", "eventfeed"),
        ("User", "eventfeed"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Environment", "EVENTFEED_DATA_DIR=/var/lib/eventfeed"),
    ] {
        assert!(UNIT.lines().any(|line| line == format!("{name}={value}")), "{name}={value}");
    }
    // SIGTERM: up to the grace for open requests, then a checkpoint;
    // systemd must not SIGKILL before the server is done.
    let stop: u64 = setting("TimeoutStopSec").unwrap().trim_end_matches('s').parse().unwrap();
    let grace = eventfeed::config::DEFAULT_SHUTDOWN_GRACE_SECS;
    assert!(stop >= grace + 60, "TimeoutStopSec={stop} leaves too little after the {grace} s grace");
}

const NODE_DROP_IN: &str = include_str!("../deploy/systemd/eventfeed.service.d/node.conf");

#[test]
fn systemd_accepts_the_unit() {
    verify_unit(UNIT);
}

/// The node drop-in: systemd merges a drop-in's sections into the unit,
/// so the unit with the drop-in's text appended is what it loads.
#[test]
fn systemd_accepts_the_unit_with_the_node_drop_in() {
    for setting in ["EnvironmentFile=/etc/eventfeed/store.env", "Environment=EVENTFEED_SHUTDOWN_DRAIN_SECS=5"]
    {
        assert!(NODE_DROP_IN.lines().any(|line| line == setting), "{setting}");
    }
    verify_unit(&format!("{UNIT}\n{NODE_DROP_IN}"));
}

/// The sample Patroni members keep the settings the failover guarantee
/// rests on (docs/scaling-out.md), the same the failover test runs with
/// (tests/common/patroni.rs).
#[test]
fn the_patroni_members_replicate_synchronously_and_never_promote_a_lagging_standby() {
    let harness = include_str!("common/patroni.rs");
    for member in [include_str!("../deploy/patroni/pg1.yml"), include_str!("../deploy/patroni/pg2.yml")] {
        for setting in ["synchronous_mode: true", "synchronous_commit: \"on\"", "maximum_lag_on_failover: 0"]
        {
            assert!(member.lines().any(|line| line.trim() == setting), "deploy/patroni: {setting}");
            assert!(harness.lines().any(|line| line.trim() == setting), "the failover test: {setting}");
        }
    }
}

fn verify_unit(text: &str) {
    let Ok(output) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "systemd-analyze is not installed (Debian package systemd; tests/run installs it): not verified"
        );
        return;
    };
    assert!(output.status.success());
    // Verified as installed, but running the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("eventfeed.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/eventfeed", env!("CARGO_BIN_EXE_eventfeed"))).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify:\n{complaints}");
}

const SCRAPE_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = include_str!("../deploy/grafana/eventfeed.json");

#[test]
fn promtool_accepts_the_scrape_config() {
    let config = std::fs::read_to_string(SCRAPE_CONFIG).unwrap();
    assert!(config.contains("metrics_path: /metrics"));
    assert!(config.contains("job_name: eventfeed"));
    let Ok(output) = Command::new("promtool").args(["check", "config", SCRAPE_CONFIG]).output() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs promtool (Debian's prometheus package)");
        eprintln!("SKIPPED: promtool is not installed (tests/run installs it)");
        return;
    };
    assert!(
        output.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `eventfeed_…` name in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("eventfeed_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", Value::String(expr)) => exprs.push(expr.clone()),
                    _ => collect_exprs(value, exprs),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|value| collect_exprs(value, exprs)),
        _ => {}
    }
}

/// The sample names `server`'s `/metrics` exposes after it has done a bit
/// of everything (labelled families appear with their first series).
async fn exposed_metrics(server: &common::TestServer) -> BTreeSet<String> {
    server.append_n("deployed", 3).await;
    let conflict = server
        .client
        .post(server.url("/streams/deployed"))
        .header("content-type", common::EVENTS_JSON)
        .header("es-expectedversion", "0")
        .body(json!([common::event("T", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert!(conflict.status().is_client_error());
    let api = common::subscriptions::Api::of(server);
    api.create("deployed", "g", json!({ "startFrom": 0 })).await;
    let id = common::start_scavenge(&server.client, &server.base).await;
    common::wait_for(&server.client, &server.base, &id, |report| report["status"] != "running").await;
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_dashboard_names_only_metrics_the_server_exposes() {
    let mut exposed = exposed_metrics(&common::TestServer::start().await).await;
    // The PostgreSQL backend's own figures (its pool, its queries), from a
    // server on PostgreSQL; without one (said SKIPPED; CI has one) they
    // are left out of the check.
    let mut dashboard = dashboard_metrics();
    match common::postgres::database() {
        Some(url) => {
            let server = common::TestServer::start_with(|config| config.store = url).await;
            exposed.extend(exposed_metrics(&server).await);
        }
        None => dashboard.retain(|name| !name.starts_with("eventfeed_database_")),
    }
    let missing: Vec<_> = dashboard.into_iter().filter(|name| !exposed.contains(name)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not expose: {missing:?}\n{exposed:?}"
    );
}
