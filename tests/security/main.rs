//! Users, authentication and stream ACLs over real sockets. One test
//! binary with a module per part, sharing the principals and helpers here:
//! - [`matrix`]: who may do what (a table of principals × operations ×
//!   streams), and that a refused request changes nothing;
//! - [`accounts`]: the users API, password changes, the brake on guessing,
//!   restarts, shutdown;
//! - [`browsers`]: private pages, credentials before ETags, cross-site
//!   writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod browsers;
mod matrix;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use common::{ATOM_JSON, EVENTS_JSON, TestServer, anonymous_client as client, event, header};

const ADMIN: (&str, &str) = ("admin", "changeit");

/// Who a request speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    WrongPassword,
    Disabled,
    Plain,
    InAclGroup,
    Ops,
    Admin,
}

use Who::*;

const EVERYONE: [Who; 7] = [Anonymous, WrongPassword, Disabled, Plain, InAclGroup, Ops, Admin];
/// Everyone with valid credentials, and anonymous.
const ALL_VALID: &[Who] = &[Anonymous, Plain, InAclGroup, Ops, Admin];

impl Who {
    fn credentials(self) -> Option<(&'static str, &'static str)> {
        match self {
            Anonymous => None,
            WrongPassword => Some(("carol", "not-her-password")),
            Disabled => Some(("dave", "dave-pw")),
            Plain => Some(("alice", "alice-pw")),
            InAclGroup => Some(("bob", "bob-pw")),
            Ops => Some(("ops", "changeit")),
            Admin => Some(ADMIN),
        }
    }
}

fn as_who(request: RequestBuilder, who: Who) -> RequestBuilder {
    match who.credentials() {
        Some((login, password)) => request.basic_auth(login, Some(password)),
        None => request,
    }
}

async fn send(
    server: &TestServer,
    who: Who,
    method: Method,
    path: &str,
    body: Option<(&str, Value)>,
) -> Response {
    let mut request = as_who(client().request(method, server.url(path)), who).header("accept", ATOM_JSON);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body.to_string());
    }
    request.send().await.unwrap()
}

async fn admin(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Response {
    send(server, Admin, method, path, body.map(|body| ("application/json", body))).await
}

async fn create_user(server: &TestServer, login: &str, password: &str, groups: &[&str]) {
    let body = json!({ "loginName": login, "fullName": login, "groups": groups, "password": password });
    let response = admin(server, Method::POST, "/users/", Some(body)).await;
    assert_eq!(response.status(), 201, "create {login}: {}", response.text().await.unwrap());
}

/// A server with the matrix's users: alice (no groups), bob (in `team`),
/// carol (whose password the matrix gets wrong), dave (in `team`, disabled).
async fn server_with_users() -> TestServer {
    let server = TestServer::start().await;
    create_user(&server, "alice", "alice-pw", &[]).await;
    create_user(&server, "bob", "bob-pw", &["team"]).await;
    create_user(&server, "carol", "carol-pw", &["team"]).await;
    create_user(&server, "dave", "dave-pw", &["team"]).await;
    let disabled = admin(&server, Method::POST, "/users/dave/command/disable", None).await;
    assert_eq!(disabled.status(), 200);
    server
}

/// Everything a denied request could have changed: the log's head (every
/// write moves it) and each subscription group's deliveries.
async fn fingerprint(server: &TestServer) -> (Value, Vec<Value>) {
    let info: Value = client().get(server.url("/info")).send().await.unwrap().json().await.unwrap();
    let groups: Value = admin(server, Method::GET, "/subscriptions", None).await.json().await.unwrap();
    let deliveries = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            let keep = ["eventStreamId", "groupName", "lastProcessedEventNumber", "totalInFlightMessages"];
            json!(keep.map(|key| group[key].clone()))
        })
        .collect();
    (info["nextPosition"].clone(), deliveries)
}

/// Whether `status` is how `who` is refused: v5's 401, or 429 for the
/// principals whose logins fail (they get locked out along the way).
fn refused(who: Who, status: StatusCode) -> bool {
    status == 401 || (matches!(who, WrongPassword | Disabled) && status == 429)
}

async fn status_as(server: &TestServer, login: &str, password: &str) -> StatusCode {
    let request = client().get(server.url("/subscriptions")).basic_auth(login, Some(password));
    request.send().await.unwrap().status()
}
