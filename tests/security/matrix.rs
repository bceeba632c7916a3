//! Who may do what: the table of principals × operations × streams, the
//! `$settings` defaults, multi-stream appends, and a write racing a change
//! of its stream's `$acl`. After every refusal the store is read back
//! unchanged.

use super::*;

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

/// Runs `op` as every principal: on `target` itself when it is a system
/// stream, else each time on a fresh stream named after it, with one event,
/// `acl` as its `$acl` and a subscription group `readers`. Checks who
/// succeeds, that everyone else gets v5's 401 (or 429 once the failing
/// logins are locked out), and that a refusal changed nothing.
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
            // Messages handed out stay in flight for the whole test: a
            // timeout returning one while a later row is checked would
            // change the fingerprint (seen on a slower store).
            let settings = json!({ "messageTimeoutMilliseconds": 600_000 });
            let group =
                admin(server, Method::PUT, &format!("/subscriptions/{stream}/readers"), Some(settings)).await;
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
