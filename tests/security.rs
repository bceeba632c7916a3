//! Users, authentication and stream ACLs over real sockets: the v5 users
//! API, who may do what (a table of principals × operations × streams),
//! that a denied request changes nothing, that credentials are checked
//! before `If-None-Match`, the brake on guessing, and that all of it
//! survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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

/// An operation on one stream; its success status.
#[derive(Debug, Clone, Copy)]
enum StreamOp {
    Read,
    Write,
    Delete,
    MetaRead,
    MetaWrite,
    ReadMessages,
}

impl StreamOp {
    async fn run(self, server: &TestServer, who: Who, stream: &str) -> Response {
        let events = json!([event("Tested", json!({ "by": format!("{who:?}") }))]);
        match self {
            Self::Read => send(server, who, Method::GET, &format!("/streams/{stream}"), None).await,
            Self::Write => {
                send(server, who, Method::POST, &format!("/streams/{stream}"), Some((EVENTS_JSON, events)))
                    .await
            }
            Self::Delete => send(server, who, Method::DELETE, &format!("/streams/{stream}"), None).await,
            Self::MetaRead => {
                let request = as_who(client().get(server.url(&format!("/streams/{stream}/metadata"))), who);
                request.header("accept", "application/json").send().await.unwrap()
            }
            Self::MetaWrite => {
                let document = json!({ "owner": "someone" });
                let path = format!("/streams/{stream}/metadata");
                send(server, who, Method::POST, &path, Some(("application/json", document))).await
            }
            Self::ReadMessages => {
                let request =
                    as_who(client().get(server.url(&format!("/subscriptions/{stream}/readers/1"))), who);
                request
                    .header("accept", "application/vnd.eventstore.competingatom+json")
                    .send()
                    .await
                    .unwrap()
            }
        }
    }

    fn succeeded(self, status: StatusCode) -> bool {
        match self {
            Self::Read | Self::MetaRead | Self::ReadMessages => status == 200,
            Self::Write | Self::MetaWrite => status == 201,
            Self::Delete => status == 204,
        }
    }
}

/// Runs `op` as every principal on a fresh stream made by `prepare`, and
/// checks who succeeds, that everyone else gets v5's 401 (or 429 while the
/// wrong password is locked out), and that a refusal changed nothing.
async fn check_row(server: &TestServer, target: &str, op: StreamOp, allowed: &[Who], acl: Option<Value>) {
    for who in EVERYONE {
        let stream = if target.starts_with('$') {
            target.to_owned()
        } else {
            format!("{target}-{}", uuid::Uuid::new_v4().simple())
        };
        if !target.starts_with('$') {
            server.append_n(&stream, 1).await;
            if let Some(acl) = &acl {
                let meta = admin(
                    server,
                    Method::POST,
                    &format!("/streams/{stream}/metadata"),
                    Some(json!({ "$acl": acl })),
                )
                .await;
                assert_eq!(meta.status(), 201);
            }
            let group =
                admin(server, Method::PUT, &format!("/subscriptions/{stream}/readers"), Some(json!({})))
                    .await;
            assert_eq!(group.status(), 201);
        }
        let before = fingerprint(server).await;
        let response = op.run(server, who, &stream).await;
        let status = response.status();
        let context = format!("{op:?} on {target} as {who:?}");
        if allowed.contains(&who) {
            assert!(op.succeeded(status), "{context}: {status} {}", response.text().await.unwrap());
            continue;
        }
        assert!(refused(who, status), "{context}: {status}");
        if status == 401 {
            assert_eq!(
                header(&response, "www-authenticate").as_deref(),
                Some("Basic realm=\"ES\""),
                "{context}"
            );
        }
        assert_eq!(fingerprint(server).await, before, "{context}: a refused request changed the store");
    }
}

#[tokio::test]
async fn who_may_do_what_to_streams() {
    let server = server_with_users().await;
    let team = json!({ "$r": "team", "$w": "team", "$d": "team", "$mr": "team", "$mw": "team" });
    let admins: &[Who] = &[Admin];
    let team_only: &[Who] = &[InAclGroup, Admin];
    let rows: [(&str, StreamOp, &[Who], Option<Value>); 17] = [
        // A user stream without $acl: the built-in defaults.
        ("open", StreamOp::Read, ALL_VALID, None),
        ("open", StreamOp::Write, ALL_VALID, None),
        ("open", StreamOp::Delete, admins, None),
        ("open", StreamOp::MetaRead, ALL_VALID, None),
        ("open", StreamOp::MetaWrite, admins, None),
        ("open", StreamOp::ReadMessages, ALL_VALID, None),
        // A user stream whose $acl names a group.
        ("guarded", StreamOp::Read, team_only, Some(team.clone())),
        ("guarded", StreamOp::Write, team_only, Some(team.clone())),
        ("guarded", StreamOp::Delete, team_only, Some(team.clone())),
        ("guarded", StreamOp::MetaRead, team_only, Some(team.clone())),
        ("guarded", StreamOp::MetaWrite, team_only, Some(team.clone())),
        ("guarded", StreamOp::ReadMessages, team_only, Some(team.clone())),
        // System streams: $admins only.
        ("$settings", StreamOp::Write, admins, None),
        ("$settings", StreamOp::Read, admins, None),
        ("$settings", StreamOp::MetaRead, admins, None),
        ("$users", StreamOp::Read, admins, None),
        ("$user-alice", StreamOp::Read, admins, None),
    ];
    for (target, op, allowed, acl) in rows {
        check_row(&server, target, op, allowed, acl).await;
    }
}

#[tokio::test]
async fn changed_defaults_in_settings_apply_to_every_user_stream() {
    let server = server_with_users().await;
    let settings = json!([{
        "eventId": uuid::Uuid::new_v4(), "eventType": "update-default-acl",
        "data": { "$userStreamAcl": { "$r": "team", "$w": "team", "$d": "team", "$mr": "team", "$mw": "team" } }
    }]);
    let response =
        send(&server, Admin, Method::POST, "/streams/$settings", Some((EVENTS_JSON, settings))).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let team_only: &[Who] = &[InAclGroup, Admin];
    for op in [StreamOp::Read, StreamOp::Write, StreamOp::Delete, StreamOp::MetaRead, StreamOp::MetaWrite] {
        check_row(&server, "defaults", op, team_only, None).await;
    }
    // A stream's own $acl still wins over the defaults.
    check_row(&server, "reopened", StreamOp::Read, ALL_VALID, Some(json!({ "$r": "$all" }))).await;
    // Settings that cannot be read are refused, and change nothing.
    let bad = json!([{ "eventId": uuid::Uuid::new_v4(), "eventType": "x", "data": { "$userStreamAcl": { "$q": "a" } } }]);
    let response = send(&server, Admin, Method::POST, "/streams/$settings", Some((EVENTS_JSON, bad))).await;
    assert_eq!(response.status(), 400);
}

/// What a row of the server table names: what, how, where, the body, and
/// who may.
type ServerRow = (&'static str, Method, &'static str, Option<Value>, &'static [Who]);

/// Work on the server rather than a stream, and the streams that gather
/// other streams' events.
#[tokio::test]
async fn who_may_do_what_to_the_server() {
    let server = server_with_users().await;
    server.append_n("matrix-1", 1).await;
    let admins_and_ops: &[Who] = &[Ops, Admin];
    let rows: [ServerRow; 7] = [
        ("read $all", Method::GET, "/streams/$all", None, &[Admin]),
        ("read $ce-", Method::GET, "/streams/$ce-matrix", None, &[Admin]),
        ("read $et-", Method::GET, "/streams/$et-Tested", None, &[Admin]),
        ("create subscription", Method::PUT, "/subscriptions/matrix-1/{n}", Some(json!({})), admins_and_ops),
        ("list subscriptions", Method::GET, "/subscriptions", None, admins_and_ops),
        ("scavenge", Method::POST, "/admin/scavenge", None, admins_and_ops),
        (
            "create user",
            Method::POST,
            "/users/",
            Some(json!({ "loginName": "{n}", "password": "pw" })),
            &[Admin],
        ),
    ];
    for (what, method, path, body, allowed) in rows {
        for (n, who) in EVERYONE.into_iter().enumerate() {
            let name = format!("made-{n}");
            let path = path.replace("{n}", &name);
            let body = body.as_ref().map(|body| {
                ("application/json", serde_json::from_str(&body.to_string().replace("{n}", &name)).unwrap())
            });
            let before = fingerprint(&server).await;
            let response = send(&server, who, method.clone(), &path, body).await;
            let status = response.status();
            if allowed.contains(&who) {
                assert!(status.is_success() || status == 409, "{what} as {who:?}: {status}");
            } else {
                assert!(refused(who, status), "{what} as {who:?}: {status}");
                assert_eq!(fingerprint(&server).await, before, "{what} as {who:?} changed the store");
            }
        }
    }
    // Deleting a group: $admins and $ops.
    for who in EVERYONE {
        let group = admin(&server, Method::PUT, "/subscriptions/matrix-1/doomed", Some(json!({}))).await;
        assert!(group.status() == 201 || group.status() == 409);
        let status =
            send(&server, who, Method::DELETE, "/subscriptions/matrix-1/doomed", None).await.status();
        if [Ops, Admin].contains(&who) {
            assert_eq!(status, 200, "delete group as {who:?}");
        } else {
            assert!(refused(who, status), "delete group as {who:?}: {status}");
        }
    }
}

#[tokio::test]
async fn the_users_api_never_shows_a_password() {
    let server = TestServer::start().await;
    create_user(&server, "erin", "secret-1", &["team", "$ops"]).await;
    let listed: Value = admin(&server, Method::GET, "/users/", None).await.json().await.unwrap();
    let text = listed.to_string();
    assert!(
        !text.contains("secret-1") && !text.contains("argon2") && !text.contains("passwordHash"),
        "{text}"
    );
    let logins: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|u| u["loginName"].as_str().unwrap()).collect();
    assert_eq!(logins, ["admin", "ops", "erin"]);
    // Another create of the same login conflicts.
    let again = json!({ "loginName": "erin", "password": "x" });
    assert_eq!(admin(&server, Method::POST, "/users/", Some(again)).await.status(), 409);
    // Update, then read back.
    let update = json!({ "fullName": "Erin E.", "groups": ["team"] });
    assert_eq!(admin(&server, Method::PUT, "/users/erin", Some(update)).await.status(), 200);
    let erin: Value = admin(&server, Method::GET, "/users/erin", None).await.json().await.unwrap();
    assert_eq!(erin["data"]["fullName"], "Erin E.");
    assert_eq!(erin["data"]["groups"], json!(["team"]));
    // Erin reads herself, not others.
    let own = as_who(client().get(server.url("/users/erin")), Anonymous).basic_auth("erin", Some("secret-1"));
    assert_eq!(own.send().await.unwrap().status(), 200);
    let other = client().get(server.url("/users/admin")).basic_auth("erin", Some("secret-1"));
    assert_eq!(other.send().await.unwrap().status(), 401);
    // Bad input: 400 with a reason, nothing written.
    for body in [
        json!({ "loginName": "$x", "password": "p" }),
        json!({ "loginName": "a:b", "password": "p" }),
        json!({ "loginName": "ok" }),
        json!({ "loginName": "ok", "password": "" }),
    ] {
        let before = fingerprint(&server).await;
        assert_eq!(admin(&server, Method::POST, "/users/", Some(body.clone())).await.status(), 400, "{body}");
        assert_eq!(fingerprint(&server).await, before);
    }
    assert_eq!(admin(&server, Method::GET, "/users/nobody", None).await.status(), 404);
    assert_eq!(admin(&server, Method::DELETE, "/users/nobody", None).await.status(), 404);
}

async fn status_as(server: &TestServer, login: &str, password: &str) -> StatusCode {
    let request = client().get(server.url("/subscriptions")).basic_auth(login, Some(password));
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn password_changes_disabling_and_deleting_take_effect_at_once_and_survive_a_restart() {
    let server = TestServer::start().await;
    create_user(&server, "frank", "first", &["$ops"]).await;
    assert_eq!(status_as(&server, "frank", "first").await, 200);
    // Their own change, proving the current password.
    let change = |current: &str, new: &str| json!({ "currentPassword": current, "newPassword": new });
    let path = "/users/frank/command/change-password";
    let wrong =
        client().post(server.url(path)).basic_auth("frank", Some("first")).json(&change("nope", "second"));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    let by_admin = admin(&server, Method::POST, path, Some(change("first", "second"))).await;
    assert_eq!(by_admin.status(), 401, "only frank changes frank's password");
    let right =
        client().post(server.url(path)).basic_auth("frank", Some("first")).json(&change("first", "second"));
    assert_eq!(right.send().await.unwrap().status(), 200);
    // The old password stops working at once, although it was cached.
    assert_eq!(status_as(&server, "frank", "first").await, 401);
    assert_eq!(status_as(&server, "frank", "second").await, 200);
    // Disabled: refused at once, cache or not; enabled again: back.
    assert_eq!(admin(&server, Method::POST, "/users/frank/command/disable", None).await.status(), 200);
    assert_eq!(status_as(&server, "frank", "second").await, 401);
    assert_eq!(admin(&server, Method::POST, "/users/frank/command/enable", None).await.status(), 200);
    assert_eq!(status_as(&server, "frank", "second").await, 200);
    // An admin resets it.
    let reset = json!({ "newPassword": "third" });
    assert_eq!(
        admin(&server, Method::POST, "/users/frank/command/reset-password", Some(reset)).await.status(),
        200
    );
    assert_eq!(status_as(&server, "frank", "second").await, 401);
    assert_eq!(status_as(&server, "frank", "third").await, 200);
    // The admin's own password, and an ACL, then a restart keeps them all.
    let admin_reset = json!({ "newPassword": "s3cret" });
    let response =
        admin(&server, Method::POST, "/users/admin/command/reset-password", Some(admin_reset)).await;
    assert_eq!(response.status(), 200);
    let new_admin = |request: RequestBuilder| request.basic_auth("admin", Some("s3cret"));
    let append = new_admin(client().post(server.url("/streams/kept")))
        .header("content-type", EVENTS_JSON)
        .body(json!([event("Kept", json!({}))]).to_string());
    assert_eq!(append.send().await.unwrap().status(), 201);
    let meta = new_admin(client().post(server.url("/streams/kept/metadata")))
        .json(&json!({ "$acl": { "$r": "frank" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 201);
    let server = server.restart().await;
    assert_eq!(status_as(&server, "admin", "changeit").await, 401);
    assert_eq!(status_as(&server, "admin", "s3cret").await, 200);
    assert_eq!(status_as(&server, "frank", "third").await, 200);
    let read = |who: Option<(&str, &str)>| {
        let request = client().get(server.url("/streams/kept")).header("accept", ATOM_JSON);
        match who {
            Some((login, password)) => request.basic_auth(login, Some(password)),
            None => request,
        }
    };
    assert_eq!(read(None).send().await.unwrap().status(), 401);
    assert_eq!(read(Some(("frank", "third"))).send().await.unwrap().status(), 200);
    // Deleted: refused; the login can be created again.
    let delete = new_admin(client().delete(server.url("/users/frank"))).send().await.unwrap();
    assert_eq!(delete.status(), 200);
    assert_eq!(status_as(&server, "frank", "third").await, 401);
    let again = new_admin(client().post(server.url("/users/")))
        .json(&json!({ "loginName": "frank", "password": "fourth", "groups": ["$ops"] }));
    assert_eq!(again.send().await.unwrap().status(), 201);
    assert_eq!(status_as(&server, "frank", "fourth").await, 200);
}

#[tokio::test]
async fn repeated_failures_lock_a_login_out_for_a_while() {
    let server = TestServer::start().await;
    create_user(&server, "gina", "right", &["$ops"]).await;
    // A client verified before the attack keeps working throughout.
    assert_eq!(status_as(&server, "gina", "right").await, 200);
    for _ in 0..5 {
        assert_eq!(status_as(&server, "gina", "wrong").await, 401);
    }
    let locked =
        client().get(server.url("/subscriptions")).basic_auth("gina", Some("guess")).send().await.unwrap();
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = header(&locked, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(status_as(&server, "gina", "right").await, 200, "verified credentials are not locked out");
    // Another login is unaffected.
    assert_eq!(status_as(&server, "ops", "changeit").await, 200);
}

#[tokio::test]
async fn private_pages_are_private_and_credentials_come_before_etags() {
    let server = TestServer::start().await;
    create_user(&server, "hal", "pw", &[]).await;
    server.append_n("secret", 2).await;
    server.append_n("public", 2).await;
    let meta =
        admin(&server, Method::POST, "/streams/secret/metadata", Some(json!({ "$acl": { "$r": "hal" } })))
            .await;
    assert_eq!(meta.status(), 201);
    let hal =
        |path: &str| client().get(server.url(path)).header("accept", ATOM_JSON).basic_auth("hal", Some("pw"));
    let head = hal("/streams/secret").send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(header(&head, "cache-control").unwrap().contains("private"));
    assert!(header(&head, "vary").unwrap().to_lowercase().contains("authorization"));
    let etag = header(&head, "etag").unwrap();
    // An immutable page of a private stream is private too.
    let page = hal("/streams/secret/0/forward/1").send().await.unwrap();
    assert_eq!(header(&page, "cache-control").as_deref(), Some("max-age=31536000, private"));
    // Anonymous with the right ETag: 401, never a 304 that confirms it.
    let anonymous = client()
        .get(server.url("/streams/secret"))
        .header("accept", ATOM_JSON)
        .header("if-none-match", &etag);
    assert_eq!(anonymous.send().await.unwrap().status(), 401);
    let alice = client().get(server.url("/streams/secret/0")).header("accept", ATOM_JSON);
    assert_eq!(alice.send().await.unwrap().status(), 401);
    assert_eq!(hal("/streams/secret").header("if-none-match", &etag).send().await.unwrap().status(), 304);
    // A public stream stays public, even read with credentials.
    let public = hal("/streams/public/0/forward/1").send().await.unwrap();
    assert_eq!(header(&public, "cache-control").as_deref(), Some("max-age=31536000, public"));
    assert!(!header(&public, "vary").unwrap().to_lowercase().contains("authorization"));
    // A wrong password is refused even where anonymous may read.
    let wrong = client().get(server.url("/streams/public")).basic_auth("hal", Some("nope"));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    // Garbage in the header: 401, not a 500.
    let garbage = client().get(server.url("/streams/public")).header("authorization", "Basic %%%");
    assert_eq!(garbage.send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_multi_stream_append_with_one_denied_part_writes_nothing() {
    let server = TestServer::start().await;
    server.append_n("locked", 1).await;
    let meta = admin(
        &server,
        Method::POST,
        "/streams/locked/metadata",
        Some(json!({ "$acl": { "$w": "$admins" } })),
    )
    .await;
    assert_eq!(meta.status(), 201);
    let body = json!([
        { "stream": "free", "events": [event("A", json!({}))] },
        { "stream": "locked", "events": [event("B", json!({}))] },
    ]);
    let before = fingerprint(&server).await;
    let response = client().post(server.url("/streams")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(fingerprint(&server).await, before);
    let response = client()
        .post(server.url("/streams"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_admin_password_can_be_set_at_the_first_start() {
    let server = TestServer::start_with(|config| config.admin_password = Some("from-the-start".into())).await;
    assert_eq!(status_as(&server, "admin", "changeit").await, 401);
    assert_eq!(status_as(&server, "admin", "from-the-start").await, 200);
    // Later starts ignore it: the account exists.
    let server = server.restart_with(|config| config.admin_password = Some("another".into())).await;
    assert_eq!(status_as(&server, "admin", "from-the-start").await, 200);
    assert_eq!(status_as(&server, "admin", "another").await, 401);
}

/// Random `Authorization` headers, from a fixed seed: none authenticates
/// (an admin-only route never answers 200), none fails the server.
#[test]
fn random_authorization_headers_never_authenticate() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestRunner};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let header_value = prop_oneof![
        // Anything printable.
        "[ -~]{0,60}",
        // "Basic " and random base64 of random bytes.
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| {
            use base64::Engine as _;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(bytes))
        }),
        // Real logins with wrong or mangled passwords and schemes.
        ("(admin|ops|Admin|admin |)", "[ -~]{0,12}", "(Basic|basic|BASIC|Bearer|Basic  )").prop_map(
            |(login, password, scheme)| {
                use base64::Engine as _;
                let password = if password == "changeit" { format!("{password}!") } else { password };
                format!(
                    "{scheme} {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
                )
            }
        ),
    ];
    let config =
        Config { cases: 200, rng_seed: RngSeed::Fixed(27), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&header_value, |value| {
        let Ok(value) = reqwest::header::HeaderValue::from_str(&value) else { return Ok(()) };
        let status = runtime.block_on(async {
            client().get(server.url("/users/")).header("authorization", value).send().await.unwrap().status()
        });
        prop_assert!(status == 401 || status == 429, "{status}");
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let ping = runtime.block_on(async { client().get(server.url("/ping")).send().await.unwrap() });
    assert_eq!(ping.status(), 200, "still serving");
}

/// The built-in accounts' default password is logged at every start and
/// listed by `/info` until changed.
#[tokio::test]
async fn a_default_password_is_warned_of_at_every_start_until_changed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let within = Duration::from_secs(10);
    let mut server = common::BinaryServer::start(&data, &[]);
    for login in ["admin", "ops"] {
        let warning = format!("the account '{login}' still has the default password");
        assert!(server.logged(&warning, within).await, "no warning for {login}");
    }
    let info: Value = client().get(server.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["defaultPasswords"], json!(["admin", "ops"]));
    let reset = client()
        .post(server.url("/users/ops/command/reset-password"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({ "newPassword": "not-the-default" }));
    assert_eq!(reset.send().await.unwrap().status(), 200);
    let info: Value = client().get(server.url("/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["defaultPasswords"], json!(["admin"]));
    server.terminate();
    let server = common::BinaryServer::start(&data, &[]);
    assert!(server.logged("the account 'admin' still has the default password", within).await);
    assert!(
        !server.logged("the account 'ops' still has the default password", Duration::from_millis(500)).await
    );
}

/// `POST /admin/shutdown`: `$ops` and `$admins` stop the server cleanly;
/// anyone else is refused and it keeps serving.
#[tokio::test]
async fn shutdown_is_for_ops_and_admins() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::BinaryServer::start(&dir.path().join("data"), &[]);
    let shutdown = |who: Option<(&str, &str)>| {
        let request = client().post(server.url("/admin/shutdown"));
        match who {
            Some((login, password)) => request.basic_auth(login, Some(password)),
            None => request,
        }
    };
    assert_eq!(shutdown(None).send().await.unwrap().status(), 401);
    assert_eq!(shutdown(Some(("ops", "wrong"))).send().await.unwrap().status(), 401);
    assert_eq!(client().get(server.url("/ping")).send().await.unwrap().status(), 200, "still serving");
    assert_eq!(shutdown(Some(("ops", "changeit"))).send().await.unwrap().status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a requested shutdown is a clean exit: {status}");
    assert!(server.logged("store flushed", Duration::from_secs(5)).await);
}

/// A write and a tightening of its stream's `$acl` racing: an append
/// allowed by the old rules is never written after the new ones, since the
/// writer refuses an append whose rules changed after its check (and the
/// check then runs again, against the new rules).
#[tokio::test]
async fn no_append_is_written_after_the_rule_that_forbids_it() {
    let server = server_with_users().await;
    let bob = |request: RequestBuilder| request.basic_auth("bob", Some("bob-pw"));
    for round in 0..10 {
        let stream = format!("race-{round}");
        server.append_n(&stream, 1).await;
        let open = json!({ "$acl": { "$w": ["team", "$admins"] } });
        assert_eq!(
            admin(&server, Method::POST, &format!("/streams/{stream}/metadata"), Some(open)).await.status(),
            201
        );
        let appends: Vec<_> = (0..16)
            .map(|_| {
                let request = bob(client().post(server.url(&format!("/streams/{stream}"))))
                    .header("content-type", EVENTS_JSON)
                    .body(json!([event("ByBob", json!({}))]).to_string());
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        let close = json!({ "$acl": { "$w": "$admins" } });
        let closed = admin(&server, Method::POST, &format!("/streams/{stream}/metadata"), Some(close)).await;
        assert_eq!(closed.status(), 201);
        for append in appends {
            let status = append.await.unwrap();
            assert!(status == 201 || status == 401, "{status}");
        }
        // In commit order: nothing of bob's after the closing metadata.
        let page: Value =
            admin(&server, Method::GET, "/streams/$all/00000000000000000000000000000000/forward/4096", None)
                .await
                .json()
                .await
                .unwrap();
        let mut entries: Vec<&Value> = page["entries"].as_array().unwrap().iter().collect();
        entries.reverse(); // newest first in the feed
        let meta_stream = format!("$${stream}");
        let stream_of =
            |entry: &&Value| entry["title"].as_str().unwrap().split_once('@').unwrap().1.to_owned();
        let last_metadata = entries.iter().rposition(|entry| stream_of(entry) == meta_stream).unwrap();
        let late = entries[last_metadata..].iter().filter(|entry| stream_of(entry) == stream).count();
        assert_eq!(late, 0, "round {round}: an append allowed by the old $acl was written after the new one");
    }
}

/// A page of another site cannot make a browser change anything with the
/// credentials it keeps for the server (CORS hides the answer, but a
/// simple `POST` is sent anyway): a write with credentials and a foreign
/// `Origin` is refused, unless `--cors-origin` lists it. Reads, anonymous
/// writes, same-site pages and clients without `Origin` are unaffected.
#[tokio::test]
async fn credentialed_writes_from_other_sites_are_refused() {
    let server =
        TestServer::start_with(|config| config.cors_origins = vec!["https://app.example".into()]).await;
    let host = server.addr.to_string();
    let scavenge = |origin: Option<&str>| {
        let request = client().post(server.url("/admin/scavenge")).basic_auth(ADMIN.0, Some(ADMIN.1));
        match origin {
            Some(origin) => request.header("origin", origin),
            None => request,
        }
    };
    let before = fingerprint(&server).await;
    let forged = scavenge(Some("https://evil.example")).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(scavenge(Some("null")).send().await.unwrap().status(), 403);
    assert_eq!(fingerprint(&server).await, before, "a refused request changes nothing");
    for origin in [Some(format!("http://{host}")), Some("https://app.example".to_owned()), None] {
        let status = scavenge(origin.as_deref()).send().await.unwrap().status();
        assert!(status == 202 || status == 409, "{origin:?}: {status}");
    }
    // Reads with credentials from anywhere: CORS decides what the page sees.
    let read = client()
        .get(server.url("/streams/$all"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("origin", "https://evil.example");
    assert_eq!(read.send().await.unwrap().status(), 200);
    // Anonymous writes from anywhere, with anonymous rights.
    let append = client()
        .post(server.url("/streams/open-to-all"))
        .header("origin", "https://evil.example")
        .header("content-type", EVENTS_JSON)
        .body(json!([event("A", json!({}))]).to_string());
    assert_eq!(append.send().await.unwrap().status(), 201);
}
