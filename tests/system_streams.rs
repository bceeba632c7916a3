//! `$all` and the system streams (`$ce-`, `$et-`, `$streams`): never behind,
//! links resolved or raw, consistent after crashes, rebuildable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::pages::{Walk, titles};
use common::{ATOM_JSON, ATOM_XML, BinaryServer, EVENTS_JSON, TestServer, client, event};
use reqwest::Client;
use serde_json::{Value, json};

/// Every entry of a stream (or `$all`), oldest first, walking forward pages
/// from the start; `resolve` sets `ES-ResolveLinkTos`.
async fn entries(client: &Client, base: &str, stream: &str, resolve: bool) -> Vec<Value> {
    let start = if stream == "$all" { "00000000000000000000000000000000" } else { "0" };
    let walk = Walk::forward(client, format!("{base}/streams/{stream}/{start}/forward/50"))
        .query("?embed=body")
        .header("es-resolvelinktos", if resolve { "True" } else { "False" })
        .until_missing()
        .max_pages(100_000);
    // `$all`'s forward pages link onwards from the head too.
    let walk = if stream == "$all" { walk.until_empty() } else { walk };
    walk.pages().await.events()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_holds_the_commit_order_of_32_concurrent_writers() {
    let server = Arc::new(TestServer::start().await);
    const PER_WRITER: usize = 40;
    let mut writers = Vec::new();
    for writer in 0..32 {
        let server = Arc::clone(&server);
        writers.push(tokio::spawn(async move {
            for seq in 0..PER_WRITER {
                let body = json!([event("Wrote", json!({"writer": writer, "seq": seq}))]);
                let response = server.post_events(&format!("writer-{writer}"), &body).await;
                assert_eq!(response.status(), 201);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let forward = entries(&server.client, &server.base, "$all", true).await;
    assert_eq!(forward.len(), 32 * PER_WRITER, "every event once");
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    for entry in &forward {
        let data: Value = serde_json::from_str(entry["data"].as_str().unwrap()).unwrap();
        let expected = next_seq.entry(data["writer"].as_u64().unwrap()).or_default();
        assert_eq!(data["seq"].as_u64().unwrap(), *expected, "each writer's events in its commit order");
        *expected += 1;
    }

    // Backward from the head along `next` links: the same events.
    let backward = Walk::backward(&server.client, server.url("/streams/$all/head/backward/37"))
        .query("?embed=body")
        .pages()
        .await
        .events();
    assert_eq!(titles(&backward), titles(&forward));
}

#[tokio::test]
async fn category_event_type_and_streams_projections() {
    let server = TestServer::start().await;
    for (stream, event_type) in [
        ("Order-1", "Placed"),
        ("Order-2-x", "Placed"),
        ("-Order", "Placed"),
        ("Order", "Placed"),
        ("Order--3", "Paid"),
        ("a-b-c", "Paid"),
        ("Order-1", "Paid"),
    ] {
        let response = server.post_events(stream, &json!([event(event_type, json!({"in": stream}))])).await;
        assert_eq!(response.status(), 201);
    }
    let client = &server.client;
    let base = &server.base;
    assert_eq!(
        titles(&entries(client, base, "$ce-Order", true).await),
        ["0@Order-1", "0@Order-2-x", "0@Order--3", "1@Order-1"]
    );
    assert_eq!(titles(&entries(client, base, "$ce-a", true).await), ["0@a-b-c"]);
    assert_eq!(server.get("/streams/$ce-", ATOM_JSON).await.status(), 404, "a leading '-' has no category");
    assert_eq!(
        titles(&entries(client, base, "$et-Placed", true).await),
        ["0@Order-1", "0@Order-2-x", "0@-Order", "0@Order"]
    );
    assert_eq!(
        titles(&entries(client, base, "$et-Paid", true).await),
        ["0@Order--3", "0@a-b-c", "1@Order-1"]
    );
    assert_eq!(
        titles(&entries(client, base, "$streams", true).await),
        ["0@Order-1", "0@Order-2-x", "0@-Order", "0@Order", "0@Order--3", "0@a-b-c"],
        "one link per stream, to its event 0"
    );
    // Own, dense numbers: full pages of a system stream are immutable (and
    // private: only $admins read the projections).
    let page = server.get("/streams/$ce-Order/0/forward/2", ATOM_JSON).await;
    assert_eq!(page.headers()["cache-control"], "max-age=31536000, private");
    // Never behind: the link is readable as soon as the append is answered.
    server.append_n("Order-9", 1).await;
    let head: Value = server.get("/streams/$ce-Order", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(head["entries"][0]["title"], "0@Order-9");
    // System streams cannot be appended to.
    assert_eq!(server.post_events("$ce-Order", &json!([event("X", json!({}))])).await.status(), 400);
}

#[tokio::test]
async fn links_are_resolved_by_default_and_raw_on_request() {
    let server = TestServer::start().await;
    server.post_events("Order-7", &json!([event("Placed", json!({"total": 3}))])).await;
    let resolved: Value = server.get("/streams/$ce-Order/0", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(resolved["title"], "0@Order-7");
    assert_eq!(resolved["summary"], "$>");
    assert_eq!(resolved["content"]["eventType"], "Placed");
    assert_eq!(resolved["content"]["data"], json!({"total": 3}));
    let target: Value = server.get("/streams/Order-7/0", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(resolved["updated"], target["updated"], "the link's timestamp (written with the event)");

    let page: Value = server.get("/streams/$ce-Order?embed=body", ATOM_JSON).await.json().await.unwrap();
    let entry = &page["entries"][0];
    assert_eq!(entry["streamId"], "Order-7");
    assert_eq!(entry["eventNumber"], 0);
    assert_eq!(entry["positionStreamId"], "$ce-Order");
    assert_eq!(entry["positionEventNumber"], 0);
    assert_eq!(entry["data"], "{\"total\":3}");

    for raw_value in ["False", "false", "FALSE"] {
        let raw: Value = server
            .get_with("/streams/$ce-Order/0", ATOM_JSON, &[("es-resolvelinktos", raw_value)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(raw["title"], "0@$ce-Order");
        assert_eq!(raw["summary"], "$>");
        assert_eq!(raw["content"]["eventType"], "$>");
        assert_eq!(raw["content"]["data"], "0@Order-7", "a link's data is n@stream");
    }
    let response = server
        .client
        .get(server.url("/streams/$ce-Order/0"))
        .header("accept", ATOM_JSON)
        .header("es-resolvelinktos", "TRUE")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for bad in ["yes", "1", ""] {
        let response = server
            .client
            .get(server.url("/streams/$ce-Order"))
            .header("es-resolvelinktos", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        assert_eq!(common::reason(response).await, "ES-ResolveLinkTos header in wrong format.");
    }
}

#[tokio::test]
async fn links_to_deleted_events_are_404_alone_and_raw_in_pages() {
    let server = TestServer::start().await;
    server.append_n("Gone-1", 2).await;
    server.append_n("Kept-1", 1).await;
    let deleted = server.client.delete(server.url("/streams/Gone-1")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(server.get("/streams/$ce-Gone/0", ATOM_JSON).await.status(), 404, "v5: the target is gone");
    let raw = server
        .client
        .get(server.url("/streams/$ce-Gone/0"))
        .header("accept", ATOM_JSON)
        .header("es-resolvelinktos", "false")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200, "the link itself still exists");
    let page: Value = server.get("/streams/$ce-Gone", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(
        titles(page["entries"].as_array().unwrap()),
        ["1@$ce-Gone", "0@$ce-Gone"],
        "pages keep their shape"
    );
    // $all no longer shows the deleted events; $et- shows them raw.
    let all = entries(&server.client, &server.base, "$all", true).await;
    assert_eq!(titles(&all), ["0@Kept-1"]);
    let by_type = entries(&server.client, &server.base, "$et-Tested", true).await;
    assert_eq!(titles(&by_type), ["0@$et-Tested", "1@$et-Tested", "0@Kept-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_system_stream_agrees_with_all() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = BinaryServer::start(&data_dir, &[]);
    let base = server.base.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..16u32 {
        let (base, stop, acknowledged) = (base.clone(), Arc::clone(&stop), Arc::clone(&acknowledged));
        writers.push(tokio::spawn(async move {
            let client = client();
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let stream = format!("{}-{}", ["Order", "Invoice", "Cart"][(writer % 3) as usize], round % 7);
                let types = ["Created", "Changed", "Closed"];
                let body = json!([
                    event(types[(round % 3) as usize], json!({})),
                    event(types[((round + 1) % 3) as usize], json!({}))
                ]);
                round += 1;
                let sent = client
                    .post(format!("{base}/streams/{stream}"))
                    .header("content-type", EVENTS_JSON)
                    .body(body.to_string())
                    .send()
                    .await;
                if !matches!(sent, Ok(ref r) if r.status() == 201) {
                    break;
                }
                acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Killed mid-load, once enough is in whatever the disk's speed.
    common::wait_until("200 acknowledged appends", std::time::Duration::from_secs(60), || {
        acknowledged.load(std::sync::atomic::Ordering::Relaxed) >= 200
    })
    .await;
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let server = BinaryServer::start(&data_dir, &[]);
    let client = client();
    let all = entries(&client, &server.base, "$all", true).await;
    assert!(all.len() > 100, "the load ran");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &all {
        let stream = entry["streamId"].as_str().unwrap();
        let title = entry["title"].as_str().unwrap().to_owned();
        let category = stream.split('-').next().unwrap();
        expected.entry(format!("$ce-{category}")).or_default().push(title.clone());
        expected
            .entry(format!("$et-{}", entry["eventType"].as_str().unwrap()))
            .or_default()
            .push(title.clone());
        if entry["eventNumber"] == 0 {
            expected.entry("$streams".into()).or_default().push(title);
        }
    }
    for (system_stream, titles_in_all) in expected {
        let actual = titles(&entries(&client, &server.base, &system_stream, true).await);
        assert_eq!(actual, titles_in_all, "{system_stream} agrees with $all: nothing missing, nothing extra");
    }
}

/// Every page of the projections' streams, in Atom and in JSON with raw and
/// resolved links, with a fixed Host so the bytes are comparable.
async fn projection_pages(server: &TestServer) -> Vec<(String, bytes::Bytes)> {
    let mut pages = Vec::new();
    for stream in ["$ce-Order", "$ce-Cart", "$et-Created", "$et-Changed", "$streams"] {
        for from in (0..60).step_by(10) {
            for (accept, resolve) in [(ATOM_XML, "True"), (ATOM_JSON, "True"), (ATOM_JSON, "False")] {
                let path = format!("/streams/{stream}/{from}/forward/10?embed=body");
                let response = server
                    .client
                    .get(server.url(&path))
                    .header("accept", accept)
                    .header("host", "eventfeed.test")
                    .header("es-resolvelinktos", resolve)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                pages.push((format!("{path} {accept} {resolve} {status}"), response.bytes().await.unwrap()));
            }
        }
    }
    pages
}

#[tokio::test]
async fn a_projection_built_later_is_byte_identical_to_one_maintained_throughout() {
    let server = TestServer::start().await;
    // Zed-1's event 0 (in $streams) exists from the start; its later event
    // proves the build runs, in streams the comparison leaves out.
    assert_eq!(server.post_events("Zed-1", &json!([event("Created", json!({}))])).await.status(), 201);
    for round in 0..15 {
        let stream = format!("{}-{}", ["Order", "Cart"][round % 2], round % 4);
        let body =
            json!([event("Created", json!({"round": round})), event("Changed", json!({"round": round}))]);
        assert_eq!(server.post_events(&stream, &body).await.status(), 201);
    }
    let maintained = projection_pages(&server).await;

    // Off: the markers go; events written meanwhile are not linked.
    let all_off = |config: &mut eventfeed::config::ServeConfig| {
        config.projection_by_category = false;
        config.projection_by_event_type = false;
        config.projection_streams = false;
    };
    let all_on = |config: &mut eventfeed::config::ServeConfig| {
        config.projection_by_category = true;
        config.projection_by_event_type = true;
        config.projection_streams = true;
    };
    let server = server.restart_with(all_off).await;
    // Written while off, in a category and type the comparison ignores.
    assert_eq!(server.post_events("Zed-1", &json!([event("Other", json!({}))])).await.status(), 201);
    assert_eq!(
        titles(&entries(&server.client, &server.base, "$ce-Zed", true).await),
        ["0@Zed-1"],
        "not linked while off"
    );
    // On again: every projection is rebuilt from the log, from scratch.
    let server = server.restart_with(all_on).await;
    common::wait_for_projections(&server.client, &server.base).await;
    assert_eq!(
        titles(&entries(&server.client, &server.base, "$ce-Zed", true).await),
        ["0@Zed-1", "1@Zed-1"],
        "the build ran"
    );
    assert_eq!(titles(&entries(&server.client, &server.base, "$et-Other", true).await), ["1@Zed-1"]);
    let rebuilt = projection_pages(&server).await;
    assert_eq!(rebuilt.len(), maintained.len());
    for ((what, before), (_, after)) in maintained.iter().zip(&rebuilt) {
        assert_eq!(after, before, "{what}");
    }

    // Events appended while a projection is off are linked once it is on.
    let server = server.restart_with(|config| config.projection_by_category = false).await;
    server.append_n("Order-late", 3).await;
    let still: Value = server.get("/streams/$ce-Order", ATOM_JSON).await.json().await.unwrap();
    assert_ne!(still["entries"][0]["title"], "2@Order-late", "not linked while off");
    let server = server.restart_with(all_on).await;
    common::wait_for_projections(&server.client, &server.base).await;
    let category = titles(&entries(&server.client, &server.base, "$ce-Order", true).await);
    assert_eq!(category.len(), 8 * 2 + 3, "{category:?}");
    assert_eq!(&category[category.len() - 3..], ["0@Order-late", "1@Order-late", "2@Order-late"]);
    // And appends after the build are linked live, after the built ones.
    server.append_n("Order-late", 1).await;
    let head: Value = server.get("/streams/$ce-Order", ATOM_JSON).await.json().await.unwrap();
    assert_eq!(head["entries"][0]["title"], "3@Order-late");
    assert_eq!(head["entries"][0]["positionEventNumber"], Value::Null, "(embed=none has no rich fields)");
}

/// Titles of a stream's entries read in pages of `size`: forward from 0
/// along `previous` links, or backward from the head along `next` links;
/// oldest first either way.
async fn titles_in_pages(server: &TestServer, stream: &str, size: usize, forward: bool) -> Vec<String> {
    // Forward pages of a truncated stream start empty; the walk ends where
    // the page has no link onwards.
    let walk = if forward {
        Walk::forward(&server.client, server.url(&format!("/streams/{stream}/0/forward/{size}")))
    } else {
        Walk::backward(&server.client, server.url(&format!("/streams/{stream}/head/backward/{size}")))
    };
    let pages = walk.pages().await;
    for page in pages.iter() {
        assert!(page.entries().len() <= size, "{}", page.url);
    }
    pages.titles()
}

/// The links one batch adds to a system stream are stored together (as a
/// run, at most 64 to a run); every way of reading them must be unable to
/// tell: pages of every size that start and end inside runs, single links
/// resolved and raw, retention whose boundary falls inside a run, and a
/// scavenge that removes exactly the hidden links, trimming a run it cuts.
#[tokio::test]
async fn links_written_together_read_like_links_written_alone() {
    let server = TestServer::start().await;
    let events = |count: usize, offset: usize| -> Value {
        let events: Vec<Value> = (0..count)
            .map(|i| event(["Even", "Odd"][(offset + i) % 2], json!({ "i": offset + i })))
            .collect();
        Value::Array(events)
    };
    // $ce-Bulk: 150 links (runs of 64, 64, 22), one, then 30.
    assert_eq!(server.post_events("Bulk-1", &events(150, 0)).await.status(), 201);
    assert_eq!(server.post_events("Bulk-2", &events(1, 0)).await.status(), 201);
    assert_eq!(server.post_events("Bulk-1", &events(30, 150)).await.status(), 201);
    let mut expected: Vec<String> = (0..150).map(|n| format!("{n}@Bulk-1")).collect();
    expected.push("0@Bulk-2".into());
    expected.extend((150..180).map(|n| format!("{n}@Bulk-1")));
    let even: Vec<String> = expected
        .iter()
        .filter(|title| {
            let (n, stream) = title.split_once('@').unwrap();
            let n: usize = n.parse().unwrap();
            // Bulk-2's event 0 had offset 0: "Even".
            stream == "Bulk-2" || n % 2 == 0
        })
        .cloned()
        .collect();
    for size in [1, 7, 20, 64, 65, 100] {
        for forward in [true, false] {
            assert_eq!(
                titles_in_pages(&server, "$ce-Bulk", size, forward).await,
                expected,
                "{size} {forward}"
            );
        }
        assert_eq!(titles_in_pages(&server, "$et-Even", size, true).await, even, "$et-Even by {size}");
    }
    for (number, title) in expected.iter().enumerate() {
        let resolved: Value =
            server.get(&format!("/streams/$ce-Bulk/{number}"), ATOM_JSON).await.json().await.unwrap();
        assert_eq!(resolved["title"].as_str().unwrap(), title);
        let raw: Value = server
            .get_with(&format!("/streams/$ce-Bulk/{number}"), ATOM_JSON, &[("es-resolvelinktos", "false")])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(raw["title"].as_str().unwrap(), format!("{number}@$ce-Bulk"));
        assert_eq!(raw["content"]["data"].as_str().unwrap(), title);
    }
    assert_eq!(server.get("/streams/$ce-Bulk/181", ATOM_JSON).await.status(), 404);

    // Keep the newest 100: the boundary (81) is inside the run 64..128.
    assert_eq!(server.set_metadata("$ce-Bulk", json!({"$maxCount": 100})).await.status(), 201);
    let visible = &expected[81..];
    assert_eq!(titles_in_pages(&server, "$ce-Bulk", 20, false).await, visible);
    assert_eq!(server.get("/streams/$ce-Bulk/80", ATOM_JSON).await.status(), 404);
    assert_eq!(server.get("/streams/$ce-Bulk/81", ATOM_JSON).await.status(), 200);
    // Links are absolute: the same Host on both sides of the restart.
    async fn page(server: &TestServer) -> reqwest::Response {
        server.get_with("/streams/$ce-Bulk/81/forward/20", ATOM_JSON, &[("host", "eventfeed.test")]).await
    }
    let page_before = page(&server).await.bytes().await.unwrap();

    let id = common::start_scavenge(&server.client, &server.base).await;
    let report = common::wait_for(&server.client, &server.base, &id, |r| r["status"] != "running").await;
    assert_eq!(report["status"], "completed", "{report}");
    // Every hidden link: the run hidden entirely, and the start of the run
    // the boundary falls in (its tail stays, under number 81).
    assert_eq!(report["linksRemoved"], 81, "{report}");
    assert_eq!(report["eventsRemoved"], 0, "{report}");

    let server = server.restart().await;
    assert_eq!(titles_in_pages(&server, "$ce-Bulk", 7, true).await, visible);
    assert_eq!(titles_in_pages(&server, "$ce-Bulk", 64, false).await, visible);
    assert_eq!(
        page(&server).await.bytes().await.unwrap(),
        page_before,
        "the page is the same after the scavenge and a restart"
    );
    assert_eq!(server.get("/streams/$ce-Bulk/63", ATOM_JSON).await.status(), 404);
    assert_eq!(server.get("/streams/$ce-Bulk/80", ATOM_JSON).await.status(), 404);
    assert_eq!(server.get("/streams/$ce-Bulk/81", ATOM_JSON).await.status(), 200);
    assert_eq!(server.get("/streams/$ce-Bulk/100", ATOM_JSON).await.status(), 200);
}

/// Does the same to a server that keeps rendered pages in memory and to one
/// that does not, and reads every page of `$all` from both (twice from the
/// first, so the second read may come from its page cache): every answer
/// must be the same, through `$tb`, `$maxCount` (and appends under it),
/// `$maxAge`, a soft delete and a rewrite, a hard delete and a scavenge,
/// each of which hides events already in `$all`.
#[tokio::test]
async fn all_pages_kept_in_memory_answer_exactly_as_a_fresh_read() {
    let kept = TestServer::start().await;
    let read = TestServer::start_with(|config| config.page_cache_mb = 0).await;
    let servers = [&kept, &read];
    let mut next = 0;
    let mut append = async |streams: &[&str], count: usize| {
        for n in next..next + count {
            for stream in streams {
                let id = format!("30000000-0000-4000-8000-{:06}{n:06}", stream.len());
                let body = json!([{"eventId": id, "eventType": "Noted", "data": {"n": n}}]);
                for server in servers {
                    assert_eq!(server.post_events(stream, &body).await.status(), 201);
                }
            }
        }
        next += count;
    };
    let compare = async |step: &str| {
        let mut heads = Vec::new();
        for server in servers {
            let page = server.get_json("/streams/$all/head/backward/1").await;
            // The head's ETag starts with its position, in hex.
            let etag = page["eTag"].as_str().unwrap().to_owned();
            heads.push(u64::from_str_radix(&etag[..16], 16).unwrap());
        }
        assert_eq!(heads[0], heads[1], "{step}: both servers hold as many positions");
        let last = heads[0];
        let mut pages = Vec::new();
        // The full page that ends at the head says so until the next append.
        let at_head = last.saturating_sub(19);
        pages.push(format!("/streams/$all/{at_head:016X}{at_head:016X}/forward/20"));
        for position in (0..=last).step_by(7) {
            let at = format!("{position:016X}{position:016X}");
            pages.push(format!("/streams/$all/{at}/forward/20"));
            pages.push(format!("/streams/$all/{at}/backward/20"));
        }
        for page in pages {
            for (accept, query) in [(ATOM_XML, ""), (ATOM_JSON, "?embed=body")] {
                let path = format!("{page}{query}");
                let mut answers = Vec::new();
                for server in [&kept, &kept, &read] {
                    let response =
                        server.client.get(server.url(&path)).header("accept", accept).send().await.unwrap();
                    let status = response.status();
                    let cache_control = common::header(&response, "cache-control");
                    let text = common::pages::normalise_times(&response.text().await.unwrap())
                        .replace(&server.base, "http://server");
                    answers.push((status, cache_control, text));
                }
                assert_eq!(answers[0], answers[1], "{step}: GET {path} ({accept}) read again");
                assert_eq!(
                    answers[0], answers[2],
                    "{step}: GET {path} ({accept}) with and without the cache"
                );
            }
        }
    };
    let both = async |what: &str, send: &dyn Fn(&TestServer) -> reqwest::RequestBuilder| {
        for server in servers {
            let status = send(server).send().await.unwrap().status();
            assert!(status.is_success(), "{what}: {status}");
        }
    };
    append(&["Kept-a", "Kept-b", "Kept-c"], 30).await;
    compare("90 events").await;
    if !common::backend::on_postgres() {
        let [hits] = common::counters(&kept.client, &kept.base, ["eventfeed_page_cache_hits_total "]).await;
        assert!(hits > 0.0, "no page of $all was kept");
    }
    append(&["Kept-d"], 1).await;
    compare("one more event").await;
    let mut written = 0;
    let mut metadata = async |stream: &str, document: Value| {
        written += 1;
        // The same id on both servers, so that their pages are the same.
        let body = json!([{"eventId": format!("40000000-0000-4000-8000-{written:012}"),
                           "eventType": "$metadata", "data": document}]);
        for server in servers {
            let path = format!("/streams/{stream}/metadata");
            let response = server
                .client
                .post(server.url(&path))
                .header("content-type", EVENTS_JSON)
                .json(&body)
                .send()
                .await;
            assert_eq!(response.unwrap().status(), 201);
        }
    };
    metadata("Kept-a", json!({"$tb": 12})).await;
    compare("$tb on Kept-a").await;
    metadata("Kept-b", json!({"$maxCount": 20})).await;
    compare("$maxCount on Kept-b").await;
    append(&["Kept-b"], 5).await;
    compare("5 more events under $maxCount").await;
    metadata("Kept-c", json!({"$maxAge": 3600})).await;
    compare("$maxAge on Kept-c").await;
    both("soft delete", &|server: &TestServer| server.client.delete(server.url("/streams/Kept-a"))).await;
    compare("Kept-a soft-deleted").await;
    append(&["Kept-a"], 3).await;
    compare("Kept-a written again").await;
    both("hard delete", &|server: &TestServer| {
        server.client.delete(server.url("/streams/Kept-c")).header("es-harddelete", "true")
    })
    .await;
    compare("Kept-c hard-deleted").await;
    for server in servers {
        let id = common::start_scavenge(&server.client, &server.base).await;
        common::wait_for(&server.client, &server.base, &id, |report| report["status"] == "completed").await;
    }
    compare("scavenged").await;
}
