//! `/openapi.json`: served by the server, valid OpenAPI 3.1 by a real
//! validator (`openapi-spec-validator`; Debian's
//! `python3-openapi-spec-validator`, which tests/run installs), and
//! describing every route the router has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{TestServer, header};
use serde_json::Value;

/// The validator's command line: its own script where pip put one, else
/// the module under the system's Python.
fn validator() -> Command {
    let script = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("openapi-spec-validator")).find(|p| p.is_file())
    });
    match script {
        Some(script) => Command::new(script),
        None => {
            let mut command = Command::new("/usr/bin/python3");
            command.args(["-m", "openapi_spec_validator"]);
            command
        }
    }
}

#[tokio::test]
async fn the_served_description_is_valid_openapi() {
    let server = TestServer::start().await;
    let response = server.client.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
    let text = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let output = validator().arg(&file).output().expect(
        "openapi-spec-validator runs (Debian package python3-openapi-spec-validator; tests/run installs it)",
    );
    assert!(
        output.status.success(),
        "the validator refused it:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_route_of_the_router_is_described() {
    let document: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let described = document["paths"].as_object().unwrap();
    let mut routes = Vec::new();
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http")).unwrap() {
        let source = std::fs::read_to_string(file.unwrap().path()).unwrap_or_default();
        for part in source.split(".route(\"").skip(1) {
            routes.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(routes.len() > 20, "{routes:?}");
    for route in routes {
        // The trailing-slash redirect is not an operation of its own.
        if route.ends_with('/') {
            continue;
        }
        assert!(described.contains_key(&route), "{route} is not in docs/openapi.json");
    }
}
