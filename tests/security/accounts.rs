//! Accounts: the `/users` API, password changes, disabling and deleting
//! (at once, and across a restart), the lockout, the admin password and its
//! warnings, `/admin/shutdown`, and random `Authorization` headers.

use super::*;

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
