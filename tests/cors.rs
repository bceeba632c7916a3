//! Cross-origin requests, as a browser makes them: the default lets any
//! origin in without credentials; `--cors-origin` lets the listed origins
//! in with credentials and no other. And `nosniff` on every response.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use reqwest::Response;
use serde_json::json;

use common::{EVENTS_JSON, TestServer, header};

const APP: &str = "https://app.example";
const ELSEWHERE: &str = "https://elsewhere.example";

/// A browser's preflight for a request from `origin` with `method` and the
/// request headers `headers` (comma-separated).
async fn preflight(server: &TestServer, origin: &str, method: &str, headers: &str) -> Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/streams/cors"))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

/// A header's values as lower-case words (`a, B` is `["a", "b"]`).
fn words(response: &Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|word| word.trim().to_ascii_lowercase())
        .collect()
}

fn cors_headers(response: &Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn by_default_any_origin_may_call_anonymously_but_never_with_credentials() {
    let server = TestServer::start().await;
    server.append_n("cors", 1).await;

    let answer = preflight(&server, ELSEWHERE, "POST", "content-type, es-expectedversion, es-longpoll").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "access-control-allow-origin").as_deref(), Some("*"));
    let methods = words(&answer, "access-control-allow-methods");
    for method in ["get", "post", "put", "delete"] {
        assert!(methods.contains(&method.to_owned()), "{method} in {methods:?}");
    }
    let allowed = words(&answer, "access-control-allow-headers");
    for name in
        ["content-type", "es-longpoll", "es-expectedversion", "es-eventid", "es-eventtype", "last-event-id"]
    {
        assert!(allowed.contains(&name.to_owned()), "{name} in {allowed:?}");
    }
    assert!(!allowed.contains(&"authorization".to_owned()), "a page may not send credentials: {allowed:?}");
    assert_eq!(header(&answer, "access-control-allow-credentials"), None);

    let read = server.get_with("/streams/cors", common::ATOM_JSON, &[("origin", ELSEWHERE)]).await;
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(header(&read, "access-control-allow-credentials"), None);
    let exposed = words(&read, "access-control-expose-headers");
    for name in ["location", "es-position", "es-currentversion", "etag"] {
        assert!(exposed.contains(&name.to_owned()), "{name} in {exposed:?}");
    }
    // The same answer for every origin: nothing for caches to vary on.
    assert!(!words(&read, "vary").contains(&"origin".to_owned()));
}

#[tokio::test]
async fn listed_origins_may_call_with_credentials_and_no_other_origin_may() {
    let server = TestServer::start_with(|config| config.cors_origins = vec![APP.to_owned()]).await;
    server.append_n("cors", 1).await;

    let answer = preflight(&server, APP, "POST", "authorization, content-type, es-expectedversion").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(header(&answer, "access-control-allow-credentials").as_deref(), Some("true"));
    let allowed = words(&answer, "access-control-allow-headers");
    for name in ["authorization", "content-type", "es-expectedversion", "es-longpoll"] {
        assert!(allowed.contains(&name.to_owned()), "{name} in {allowed:?}");
    }
    assert!(words(&answer, "access-control-allow-methods").contains(&"post".to_owned()));
    assert!(words(&answer, "vary").contains(&"origin".to_owned()));

    let read = server.get_with("/streams/cors", common::ATOM_JSON, &[("origin", APP)]).await;
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(header(&read, "access-control-allow-credentials").as_deref(), Some("true"));
    assert!(words(&read, "access-control-expose-headers").contains(&"es-position".to_owned()));
    let vary = words(&read, "vary");
    assert!(vary.contains(&"origin".to_owned()) && vary.contains(&"accept".to_owned()), "{vary:?}");
    assert_eq!(read.headers().get_all("vary").iter().count(), 1, "one Vary, for caches that read one");

    // Another origin, or none (a same-origin page, a script), gets no CORS
    // header at all; the answer still varies by origin, for caches.
    let answer = preflight(&server, ELSEWHERE, "POST", "authorization").await;
    assert_eq!(cors_headers(&answer), Vec::<String>::new());
    let read = server.get_with("/streams/cors", common::ATOM_JSON, &[("origin", ELSEWHERE)]).await;
    assert_eq!(read.status(), 200);
    assert_eq!(cors_headers(&read), Vec::<String>::new());
    assert!(words(&read, "vary").contains(&"origin".to_owned()));
    let read = server.get_with("/streams/cors", common::ATOM_JSON, &[]).await;
    assert_eq!(cors_headers(&read), Vec::<String>::new());
    // An origin matches as browsers write it, scheme and port included.
    for near in ["http://app.example", "https://app.example:8443", "https://app.example.evil"] {
        let read = server.get_with("/streams/cors", common::ATOM_JSON, &[("origin", near)]).await;
        assert_eq!(cors_headers(&read), Vec::<String>::new(), "{near}");
    }
}

#[tokio::test]
async fn several_origins_are_each_echoed_alone() {
    let other = "http://localhost:8080";
    let server =
        TestServer::start_with(|config| config.cors_origins = vec![APP.to_owned(), other.to_owned()]).await;
    for origin in [APP, other] {
        let read = server.get_with("/ping", "application/json", &[("origin", origin)]).await;
        assert_eq!(header(&read, "access-control-allow-origin").as_deref(), Some(origin));
    }
}

#[tokio::test]
async fn every_response_says_nosniff() {
    for listed in [false, true] {
        let server = TestServer::start_with(|config| {
            if listed {
                config.cors_origins = vec![APP.to_owned()];
            }
        })
        .await;
        let client = &server.client;
        let ok = server.get("/ping", "application/json").await;
        let not_found = server.get("/streams/missing", common::ATOM_JSON).await;
        let no_route = server.get("/no/such/route", "text/plain").await;
        let not_allowed = client.put(server.url("/streams/cors")).send().await.unwrap();
        let bad = client
            .post(server.url("/streams/cors"))
            .header("content-type", EVENTS_JSON)
            .header("es-expectedversion", "soon")
            .body(json!([common::event("T", json!({}))]).to_string())
            .send()
            .await
            .unwrap();
        let preflight = preflight(&server, APP, "GET", "es-longpoll").await;
        for (response, status) in
            [(ok, 200), (not_found, 404), (no_route, 404), (not_allowed, 405), (bad, 400), (preflight, 200)]
        {
            assert_eq!(response.status(), status, "{}", response.url());
            assert_eq!(
                header(&response, "x-content-type-options").as_deref(),
                Some("nosniff"),
                "{status} {}",
                response.url()
            );
        }
    }
}
