//! `http-examples/*.http`, each run top to bottom against a fresh server,
//! so every file works on its own and does what its titles say.
//!
//! The files use the VS Code REST Client's syntax, which this runs: file
//! variables (`@base = …`), named requests (`# @name placed`) and their
//! responses (`{{placed.response.headers.Location}}`,
//! `{{placed.response.body.$.entries[0].id}}`), and `{{$guid}}`. A request
//! must answer 2xx or 3xx unless its title announces the status (`→ 404`),
//! in which case it must answer exactly that. Redirects are not followed,
//! so a `307` is seen as such. Server-Sent Events are checked by their
//! status and headers, not read to the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The base URL the files use; rewritten to the test server's.
const EXAMPLE_BASE: &str = "http://127.0.0.1:2113";

#[derive(Debug, Default)]
struct Request {
    title: String,
    name: Option<String>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A response kept for the requests after it.
struct Answer {
    headers: HeaderMap,
    body: Option<Value>,
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("http-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "http"))
        .collect();
    files.sort();
    files
}

/// The file's variables and its requests, in order.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Request>) {
    let mut variables = HashMap::new();
    let mut requests = Vec::new();
    // A title may go on over several `###` lines: one line each.
    let mut joined = String::new();
    let mut in_title = false;
    for line in text.lines() {
        match line.strip_prefix("###") {
            Some(more) if in_title => joined.push_str(more.trim_end()),
            _ => {
                joined.push('\n');
                joined.push_str(line);
            }
        }
        in_title = line.starts_with("###");
    }
    for (index, chunk) in joined.split("\n###").enumerate() {
        let mut lines = chunk.lines();
        let mut request = Request::default();
        if index > 0 {
            request.title = lines.next().unwrap_or_default().trim().to_owned();
        }
        // Comments, variables and the title's continuation, then the request line.
        for line in lines.by_ref() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("# @name ").or_else(|| line.strip_prefix("// @name ")) {
                request.name = Some(name.trim().to_owned());
            } else if let Some(definition) = line.strip_prefix('@') {
                let (name, value) = definition.split_once('=').expect("@name = value");
                variables.insert(name.trim().to_owned(), value.trim().to_owned());
            } else if line.starts_with('#') {
                request.title.push(' ');
                request.title.push_str(line.trim_start_matches('#').trim());
            } else if !line.is_empty() && !line.starts_with("//") {
                let mut parts = line.split_whitespace();
                request.method = parts.next().unwrap().to_owned();
                request.url = parts.next().expect("a URL").to_owned();
                break;
            }
        }
        if request.method.is_empty() {
            continue;
        }
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            request.headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        request.body = lines.collect::<Vec<_>>().join("\n").trim().to_owned();
        requests.push(request);
    }
    (variables, requests)
}

/// `$.entries[0].id`-style paths: names and array indexes.
fn json_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = value;
    for segment in path.trim_start_matches('$').split('.').filter(|s| !s.is_empty()) {
        let mut pieces = segment.split('[');
        let name = pieces.next().unwrap_or_default();
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in pieces {
            current = current.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(current)
}

fn resolve(name: &str, variables: &HashMap<String, String>, answers: &HashMap<String, Answer>) -> String {
    if name == "$guid" {
        return uuid::Uuid::new_v4().to_string();
    }
    if let Some(value) = variables.get(name) {
        return value.clone();
    }
    let (request, rest) = name.split_once(".response.").unwrap_or_else(|| panic!("unknown variable {name}"));
    let answer = answers.get(request).unwrap_or_else(|| panic!("{name}: no earlier request named {request}"));
    if let Some(header) = rest.strip_prefix("headers.") {
        let value = answer.headers.get(header).unwrap_or_else(|| panic!("{name}: no such header"));
        return value.to_str().unwrap().to_owned();
    }
    let path = rest.strip_prefix("body.").unwrap_or_else(|| panic!("{name}: headers or body"));
    let body = answer.body.as_ref().unwrap_or_else(|| panic!("{name}: the response had no JSON body"));
    match json_path(body, path).unwrap_or_else(|| panic!("{name}: not in {body}")) {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn substitute(text: &str, variables: &HashMap<String, String>, answers: &HashMap<String, Answer>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closing }}") + start;
        out.push_str(&resolve(rest[start + 2..end].trim(), variables, answers));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn announced_status(title: &str) -> Option<u16> {
    title.split_once('→').and_then(|(_, rest)| rest.trim_start().get(..3)?.parse().ok())
}

async fn run_file(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (mut variables, requests) = parse(&std::fs::read_to_string(path).unwrap());
    assert!(!requests.is_empty(), "{name} has no requests");
    let server = TestServer::start().await;
    for value in variables.values_mut() {
        *value = value.replace(EXAMPLE_BASE, &server.url(""));
    }
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut answers = HashMap::new();
    let mut failures = Vec::new();
    for request in &requests {
        let url = substitute(&request.url, &variables, &answers);
        let mut headers = HeaderMap::new();
        for (header, value) in &request.headers {
            let value = substitute(value, &variables, &answers);
            headers.append(
                HeaderName::try_from(header.as_str()).unwrap(),
                HeaderValue::try_from(value).unwrap(),
            );
        }
        let body = substitute(&request.body, &variables, &answers);
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
        let is_event_stream = headers.get("accept").is_some_and(|accept| accept == "text/event-stream");
        let response = client
            .request(method, &url)
            .headers(headers)
            .body(body)
            .timeout(Duration::from_secs(40))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{name}: {} {url}: {error}", request.method));
        let status = response.status().as_u16();
        let response_headers = response.headers().clone();
        let text = if is_event_stream { String::new() } else { response.text().await.unwrap_or_default() };
        let place = format!("{name}: ### {}\n{} {url} → {status}\n{text}", request.title, request.method);
        match announced_status(&request.title) {
            Some(announced) if announced != status => {
                failures.push(format!("announced {announced}: {place}"))
            }
            None if !(200..400).contains(&status) => failures.push(format!("failed: {place}")),
            _ => {}
        }
        if let Some(request_name) = &request.name {
            let body = serde_json::from_str(&text).ok();
            answers.insert(request_name.clone(), Answer { headers: response_headers, body });
        }
    }
    failures
}

#[tokio::test]
async fn every_http_example_runs_top_to_bottom_on_a_fresh_store() {
    let mut failures = Vec::new();
    let files = files();
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        failures.extend(run_file(&path).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_syntax_is_understood() {
    let (variables, requests) = parse(
        "# A file\n\n@base = http://x\n\n### One → 404\n# @name one\nGET {{base}}/a\nAccept: b\n\n### Two\n\
         POST {{base}}/b\nContent-Type: c\n\n{\"x\": 1}\n",
    );
    assert_eq!(variables["base"], "http://x");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].name.as_deref(), Some("one"));
    assert_eq!(announced_status(&requests[0].title), Some(404));
    assert_eq!(requests[1].body, "{\"x\": 1}");
    let value: Value = serde_json::json!({"entries": [{"id": "e"}]});
    assert_eq!(json_path(&value, "$.entries[0].id"), Some(&Value::from("e")));
}
