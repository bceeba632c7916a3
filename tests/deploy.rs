//! `deploy/systemd/eventfeed.service`: a unit systemd accepts
//! (`systemd-analyze verify`, where systemd is installed; tests/run
//! installs it), hardened, restarting always, and giving the server more
//! time to stop than its own shutdown takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

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

#[test]
fn systemd_accepts_the_unit() {
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
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/eventfeed", env!("CARGO_BIN_EXE_eventfeed"))).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify:\n{complaints}");
}
