//! What browsers and caches see: private pages and their headers,
//! credentials checked before ETags, and cross-site writes refused.

use super::*;

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

/// The web UI's calls (`X-Requested-With: eventfeed-ui`) get their `401`
/// without a `Basic` challenge, so the browser shows the UI's login form
/// rather than its own dialog; every other client keeps v5's challenge.
#[tokio::test]
async fn the_web_uis_calls_get_no_basic_challenge() {
    let server = TestServer::start().await;
    let ui = |path: &str| client().get(server.url(path)).header("x-requested-with", "eventfeed-ui");
    let refused = [
        ui("/streams/$all").send().await.unwrap(),
        ui("/streams/$all").basic_auth("admin", Some("wrong")).send().await.unwrap(),
        ui("/users").send().await.unwrap(),
    ];
    for response in refused {
        assert_eq!(response.status(), 401);
        assert_eq!(header(&response, "www-authenticate").as_deref(), Some("BasicCustom realm=\"ES\""));
    }
    let other = client().get(server.url("/streams/$all")).send().await.unwrap();
    assert_eq!(header(&other, "www-authenticate").as_deref(), Some("Basic realm=\"ES\""));
    let admin = ui("/streams/$all").basic_auth("admin", Some("changeit")).send().await.unwrap();
    assert_eq!(admin.status(), 200);
}
