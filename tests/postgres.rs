//! The PostgreSQL backend behind the real server: a server started with
//! `--store postgres://…` serves the same bytes under the same ETags and
//! cache headers as the sled store for the same history (tests/feeds.rs
//! pins sled's bytes in tests/snapshots), wakes long-polls, and refuses a
//! database whose schema is newer than it knows; two stores on one
//! database (two nodes) wake each other's waiters, also across a lost
//! listening connection.
//!
//! The database is a fresh one in the tests' own cluster
//! (`common::postgres`); without PostgreSQL these tests say `SKIPPED`,
//! unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use common::pages::normalise_times;
use common::{ATOM_JSON, ATOM_XML, TestServer, link};
use eventfeed::config::ServeConfig;
use eventfeed::server::Server;
use eventfeed::store::projections::Projections;
use eventfeed::store::{
    self, Append, AppendOutcome, Direction, Durability, ExpectedVersion, PostgresOptions, ProposedEvent,
    Store, StoreConfig, StoreError, StreamRead,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every link is built on this host, so bytes do not depend on the port.
const HOST: &str = "eventfeed.test";

async fn postgres_server() -> Option<TestServer> {
    let url = common::postgres::database()?;
    Some(TestServer::start_with(|config| config.store = url).await)
}

/// The same history for both servers: fixed ids, every kind of payload,
/// full and partial pages, metadata, both deletes and the projections.
async fn write_history(server: &TestServer) {
    let id = |n: u32| format!("20000000-0000-4000-8000-{n:012}");
    let events = json!([
        {"eventId": id(1), "eventType": "OrderPlaced",
         "data": {"customer": "c-1", "lines": [{"sku": "A", "qty": 2}]}, "metadata": {"correlationId": "k-1"}},
        {"eventId": id(2), "eventType": "OrderNoted", "data": "a note, not JSON <&>"},
        {"eventId": id(3), "eventType": "OrderPaid", "data": {"amount": 12.5}, "metadata": "plain metadata"},
    ]);
    assert_eq!(server.post_events("Order-1", &events).await.status(), 201);
    let xml = server
        .client
        .post(server.url("/streams/Order-1"))
        .header("content-type", "text/xml")
        .header("es-eventtype", "OrderShipped")
        .header("es-eventid", id(4))
        .body("<shipment carrier=\"x\"/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 201);
    let many: Vec<Value> = (0..25)
        .map(|n| json!({"eventId": id(100 + n), "eventType": "OrderPlaced", "data": {"n": n}}))
        .collect();
    assert_eq!(server.post_events("Order-2", &Value::Array(many)).await.status(), 201);
    let metadata = server
        .client
        .post(server.url("/streams/Order-2/metadata"))
        .header("content-type", "application/json")
        .header("es-eventid", id(150))
        .body(json!({"$maxCount": 22, "owner": "team-a"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 201);
    for (stream, base) in [("soft", 200), ("hard", 210)] {
        let events = json!([{"eventId": id(base), "eventType": "Noted", "data": {}}]);
        assert_eq!(server.post_events(stream, &events).await.status(), 201);
    }
    let soft = server.client.delete(server.url("/streams/soft")).send().await.unwrap();
    assert_eq!(soft.status(), 204);
    let hard = server
        .client
        .delete(server.url("/streams/hard"))
        .header("es-harddelete", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(hard.status(), 204);
    // A retry is answered as the original, and writes nothing.
    assert_eq!(server.post_events("Order-1", &events).await.status(), 201);
}

/// What a GET answers, as compared: status, ETag, Cache-Control and the
/// body with event times (each store's clock) replaced.
async fn answer(
    server: &TestServer,
    path: &str,
    accept: &str,
) -> (u16, Option<String>, Option<String>, String) {
    let response = server
        .client
        .get(server.url(path))
        .header("accept", accept)
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    let (status, etag, cache_control) = (response.status().as_u16(), header("etag"), header("cache-control"));
    (status, etag, cache_control, normalise_times(&response.text().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_etags_are_the_same_as_on_sled() {
    let Some(postgres) = postgres_server().await else { return };
    let sled = TestServer::start().await;
    write_history(&sled).await;
    write_history(&postgres).await;
    let mut paths: Vec<String> = [
        "/streams/Order-1",
        "/streams/Order-1/head/backward/3",
        "/streams/Order-1/2/backward/2",
        "/streams/Order-1/0/forward/3",
        "/streams/Order-1/4/forward/3",
        "/streams/Order-1/head/backward/5?embed=body",
        "/streams/Order-1/head/backward/5?embed=tryharder",
        "/streams/Order-1/0",
        "/streams/Order-1/3",
        "/streams/Order-1/9",
        "/streams/Order-2",
        "/streams/Order-2/0/forward/20",
        "/streams/Order-2/3/forward/20",
        "/streams/Order-2/20/forward/20",
        "/streams/Order-2/metadata",
        "/streams/$$Order-2",
        "/streams/$ce-Order",
        "/streams/$ce-Order/0/forward/20?embed=body",
        "/streams/$ce-Order/0",
        "/streams/$et-OrderPlaced/head/backward/20",
        "/streams/$streams",
        "/streams/soft",
        "/streams/hard",
        "/streams/never",
        "/streams/$all",
        "/streams/$all/head/backward/20",
    ]
    .map(str::to_owned)
    .to_vec();
    // `$all` further back, by the links the sled server gives.
    let all_head = sled.get_json("/streams/$all/head/backward/20").await;
    for relation in ["next", "last", "previous"] {
        if let Some(url) = link(&all_head, relation) {
            let path = url.find("/streams/").map(|start| &url[start..]).expect("a stream URL");
            paths.push(path.to_owned());
        }
    }
    let mut compared = 0;
    for path in &paths {
        for accept in [ATOM_JSON, ATOM_XML] {
            let (on_sled, on_postgres) =
                (answer(&sled, path, accept).await, answer(&postgres, path, accept).await);
            assert_eq!(on_postgres, on_sled, "GET {path} ({accept})");
            compared += 1;
        }
    }
    assert!(compared >= 56, "{compared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_an_append() {
    let Some(server) = postgres_server().await else { return };
    server.append_n("live", 1).await;
    let waiting = {
        let client = server.client.clone();
        let url = server.url("/streams/live/1/forward/20");
        tokio::spawn(async move {
            client.get(url).header("accept", ATOM_JSON).header("es-longpoll", "30").send().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.append_n("live", 1).await;
    let response =
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the long-poll woke").unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_everything_and_a_newer_schema_is_refused() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let server = TestServer::start_with(|config| config.store = url.clone()).await;
    server.append_n("kept", 3).await;
    let server = server.restart().await;
    assert_eq!(
        server.get_json("/streams/kept/0/forward/20").await["entries"].as_array().map(Vec::len),
        Some(3)
    );
    drop(server);
    let name = url.rsplit('/').next().unwrap();
    cluster.psql(name, "UPDATE schema_version SET version = version + 1").unwrap();
    let mut config = ServeConfig::for_dir(tempfile::tempdir().unwrap().path().join("unused"));
    config.store = url;
    let Err(refused) = Server::bind(&config).await else { panic!("a newer schema is refused") };
    assert!(refused.to_string().contains("newer than this eventfeed"), "{refused}");
}

/// A build of a projection left half done by the server that started it
/// (closed mid-build, as a server that dies) is finished by another
/// server on the database, one that did not start it and learns of it
/// from the head, with every link where live maintenance puts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_left_half_done_is_finished_by_another_server() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let with_category = |by_category: bool| {
        StoreConfig::Postgres(PostgresOptions {
            projections: Projections { by_category, ..Projections::default() },
            ..postgres_options(&url)
        })
    };
    let a = store::open(&with_category(true)).await.unwrap();
    // Several steps' worth (a step links 5,000 events).
    for batch in 0..60 {
        let events = (0..250)
            .map(|_| ProposedEvent {
                id: Uuid::new_v4(),
                event_type: "Ticked".into(),
                is_json: true,
                data: Bytes::from_static(b"{}"),
                metadata_is_json: false,
                metadata: Bytes::new(),
            })
            .collect();
        let append = Append {
            stream: format!("Order-{}", batch % 9),
            expected: ExpectedVersion::Any,
            events,
            access: None,
        };
        a.append(append).await.unwrap();
    }
    // Off, then on through another server that stops after its first step
    // (closing ends its writer at the next step).
    store::open(&with_category(false)).await.unwrap().close().await.unwrap();
    append_one(&a, "Order-late").await;
    let b = store::open(&with_category(true)).await.unwrap();
    assert_eq!(b.projections_building(), ["by-category"]);
    // Half-built streams are not exported.
    let refused = b.export_snapshot().await.unwrap_err();
    assert!(refused.to_string().contains("being built (by-category)"), "{refused}");
    b.close().await.unwrap();
    let head = "SELECT building || ' ' || build_cleared || ' ' || build_next FROM log_head";
    let left = cluster.psql(&database, head).unwrap();
    assert!(left.starts_with("by-category "), "the build was left half done: {left}");

    // `a` learns of it from the head (its next batch, or its listener's
    // next read) and takes the remaining steps.
    append_one(&a, "Order-live").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !a.projections_building().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "not finished: {}",
            cluster.psql(&database, head).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append_one(&a, "Order-live").await;
    let expected = 60 * 250 + 3;
    assert_eq!(
        cluster.category_agreement(&database, "Order"),
        format!("{expected} {expected} {expected} {expected}")
    );
    assert_eq!(cluster.psql(&database, head).unwrap(), "none false 0");
    a.close().await.unwrap();
}

/// An append of one event to `stream`.
async fn try_append(store: &Arc<dyn Store>, stream: &str) -> Result<AppendOutcome, StoreError> {
    try_append_id(store, stream, Uuid::new_v4()).await
}

/// An append of one event with id `id` to `stream`.
async fn try_append_id(store: &Arc<dyn Store>, stream: &str, id: Uuid) -> Result<AppendOutcome, StoreError> {
    let event = ProposedEvent {
        id,
        event_type: "Ticked".into(),
        is_json: true,
        data: Bytes::from_static(b"{}"),
        metadata_is_json: false,
        metadata: Bytes::new(),
    };
    store
        .append(Append {
            stream: stream.into(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            access: None,
        })
        .await
}

/// The names of the streams whose names start with `prefix`, as listed.
async fn listed(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
    store.list_streams(prefix, None, 10).await.unwrap().into_iter().map(|(name, _)| name).collect()
}

/// An append of one event to `stream` that succeeds; its position.
async fn append_one(store: &Arc<dyn Store>, stream: &str) -> u64 {
    let outcome = try_append(store, stream).await.expect("the append succeeds");
    outcome.position.expect("a new event has a position")
}

/// A store on database `url`.
fn store_config(url: &str) -> StoreConfig {
    StoreConfig::Postgres(postgres_options(url))
}

fn postgres_options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        durability: Durability::Fsync,
        projections: Projections::default(),
        ca_file: None,
    }
}

/// Terminates the connections named `application_name` to the database
/// of `url`; how many there were.
fn terminate(cluster: &common::postgres::Cluster, url: &str, application_name: &str) -> String {
    let name = url.rsplit('/').next().unwrap();
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{application_name}' AND datname = current_database()"
    );
    cluster.psql(name, &sql).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_come_back_by_themselves_after_the_writer_loses_its_connection() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let store = store::open(&store_config(&url)).await.unwrap();
    append_one(&store, "s").await;
    assert_eq!(terminate(cluster, &url, "eventfeed-writer"), "1");
    // Until the writer has connected again (at the latest for the next
    // batch) appends fail as unavailable, never as written.
    let mut acknowledged = 1;
    for attempt in 0..3 {
        match try_append(&store, "s").await {
            Ok(outcome) => {
                assert_eq!(outcome.first_number, acknowledged, "attempt {attempt}");
                acknowledged += 1;
            }
            Err(StoreError::Unreachable(_) | StoreError::OutcomeUnknown(_)) if attempt < 2 => {}
            Err(error) => panic!("attempt {attempt}: {error}"),
        }
    }
    assert!(acknowledged >= 2, "the writer connected again");
    let read = StreamRead {
        stream: "s".into(),
        from: Some(0),
        direction: Direction::Forward,
        count: 100,
        resolve_links: false,
    };
    let numbers: Vec<u64> =
        store.read_stream(read).await.unwrap().events.iter().map(|e| e.event.number).collect();
    assert_eq!(numbers, (0..acknowledged).collect::<Vec<_>>(), "every acknowledged append, densely");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_wake_each_other_even_after_a_lost_connection() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let config = store_config(&url);
    let (one, two) = (store::open(&config).await.unwrap(), store::open(&config).await.unwrap());
    let patience = Duration::from_secs(15);

    let mut stream = two.notifier().watch_stream("shared");
    let mut all = two.notifier().watch(None);
    assert_eq!(append_one(&one, "shared").await, 0);
    tokio::time::timeout(patience, stream.changed()).await.expect("the other store's stream waiter wakes");
    tokio::time::timeout(patience, all.changed()).await.expect("the other store's $all waiter wakes");
    assert_eq!(two.notifier().next_position(), 1);
    // Positions go on densely whichever store appends.
    assert_eq!(append_one(&two, "shared").await, 1);
    assert_eq!(append_one(&one, "other").await, 2);

    // The second store's listening connection is cut; what commits while
    // it reconnects still wakes its waiters (it reads the head again).
    assert_eq!(terminate(cluster, &url, "eventfeed-listener"), "2", "both stores listen");
    let mut stream = two.notifier().watch_stream("shared");
    append_one(&one, "shared").await;
    tokio::time::timeout(patience, stream.changed()).await.expect("a waiter wakes after the reconnection");
    assert!(two.notifier().next_position() >= 4);
    one.close().await.unwrap();
    two.close().await.unwrap();
}

/// The writer's lookups stay probes of a primary key however the tables
/// grow: its statements are planned once, on a new database's empty
/// tables, and a plan that scans a whole table (a hash join over
/// `event_ids`, as a join once got) would be kept while the table grows.
/// Counted by PostgreSQL's own statistics of `event_ids`: no row read by
/// a sequential scan (the migration's index build scans the empty table),
/// no more index entries read than ids looked up (a probe for a new id
/// reads none, a full scan of the index reads every entry each batch), and
/// an index scan for every batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_id_lookups_never_scan_the_whole_table() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let store = store::open(&store_config(&url)).await.unwrap();
    // Enough batches for the generic plan to be made and reused, some of
    // them of many appends at once, on tables that start empty.
    for round in 0..20 {
        let appends = (0..10).map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { append_one(&store, &format!("grow-{round}-{n}")).await })
        });
        for append in appends {
            append.await.unwrap();
        }
    }
    let name = url.rsplit('/').next().unwrap();
    let stats = "SELECT seq_tup_read || ' ' || coalesce(idx_scan, 0) || ' ' || coalesce(idx_tup_fetch, 0) \
                 || ' ' || n_tup_ins FROM pg_stat_user_tables WHERE relname = 'event_ids'";
    // A backend reports its statistics at the end of a transaction at most
    // once a second: appends go on until the 200 are counted.
    let mut counted = String::new();
    for _ in 0..60 {
        append_one(&store, "tick").await;
        counted = cluster.psql(name, stats).unwrap();
        let figures: Vec<u64> = counted.split(' ').map(|figure| figure.parse().unwrap()).collect();
        let [scanned, index_scans, index_read, rows] = figures[..] else { panic!("{counted}") };
        if rows >= 200 {
            let what =
                format!("rows read by sequential scans, index scans, rows read by them, rows: {counted}");
            assert_eq!(scanned, 0, "{what}");
            assert!(index_scans >= 20, "{what}");
            assert!(index_read <= rows, "{what}");
            store.close().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("PostgreSQL never counted the appends: {counted}");
}

/// Stream names compare byte for byte whatever the database's collation:
/// on a database created in a linguistic one (`C.UTF-8`, always there on
/// Debian), every stream-name column is `"C"` (its indexes then compare
/// with `memcmp`, not the C library's collation rules). A store at schema
/// version 2, with names in the database's collation and their own index
/// for the listing, is migrated with its data: pages, ids already spent
/// and the listing by prefix are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_names_compare_byte_for_byte_also_after_migrating_a_version_2_store() {
    let Some(cluster) = common::postgres::cluster() else { return };
    let url = cluster.create_database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let linguistic = format!("{name}_c_utf8");
    cluster
        .psql(
            "postgres",
            &format!(
                "CREATE DATABASE {linguistic} TEMPLATE template0 LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
            ),
        )
        .unwrap();
    let collations = "SELECT string_agg(table_name || '.' || column_name || ' ' || coalesce(collation_name, \
                      'default'), ', ' ORDER BY table_name, column_name) FROM information_schema.columns \
                      WHERE table_schema = 'public' AND (column_name IN ('stream', 'link_stream', 'link_streams') \
                      OR (table_name = 'streams' AND column_name = 'name'))";
    let byte_order = "event_ids.stream C, events.stream C, link_runs.link_streams C, link_runs.stream C, \
                      streams.name C";
    for database in [&name, &linguistic] {
        let store = store::open(&store_config(&cluster.url(database))).await.unwrap();
        for stream in ["Order-b", "Order-a", "Order-B", "Other"] {
            append_one(&store, stream).await;
        }
        assert_eq!(cluster.psql(database, collations).unwrap(), byte_order, "{database}");
        assert_eq!(listed(&store, "Order-").await, ["Order-B", "Order-a", "Order-b"], "{database}");
        store.close().await.unwrap();
    }

    // Back to version 2 as it was: names in the database's collation and
    // the listing's own index, and the projections in `settings` (with
    // one turned off, so that the move to the head is seen).
    let version_2 = "CREATE TABLE stream_entries (stream text COLLATE \"C\" NOT NULL, number bigint NOT NULL, \
                     position bigint NOT NULL, created_micros bigint NOT NULL, link_stream text COLLATE \"C\", \
                     link_number bigint, PRIMARY KEY (stream, number)); \
                     INSERT INTO stream_entries (stream, number, position, created_micros) \
                     SELECT stream, number, position, created_micros FROM events; \
                     DROP INDEX events_by_stream; \
                     INSERT INTO stream_entries (stream, number, position, created_micros, link_stream, link_number) \
                     SELECT r.stream, r.first_number + u.i - 1, u.position, r.created_micros, u.link_stream, \
                     u.link_number FROM link_runs r, unnest(r.positions, r.link_streams, r.link_numbers) \
                     WITH ORDINALITY AS u(position, link_stream, link_number, i); \
                     DROP TABLE link_runs; \
                     ALTER TABLE log_head DROP COLUMN projections, DROP COLUMN building, \
                     DROP COLUMN build_cleared, DROP COLUMN build_next; \
                     INSERT INTO settings (key, value) VALUES ('projections', 'by-category,streams'); \
                     ALTER TABLE streams ALTER COLUMN name TYPE text COLLATE pg_catalog.default; \
                     ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE pg_catalog.default; \
                     ALTER TABLE stream_entries ALTER COLUMN stream TYPE text COLLATE pg_catalog.default, \
                     ALTER COLUMN link_stream TYPE text COLLATE pg_catalog.default; \
                     ALTER TABLE event_ids ALTER COLUMN stream TYPE text COLLATE pg_catalog.default; \
                     CREATE INDEX streams_by_name_bytes ON streams (name COLLATE \"C\"); \
                     UPDATE schema_version SET version = 2";
    cluster.psql(&linguistic, version_2).unwrap();
    assert!(cluster.psql(&linguistic, collations).unwrap().contains("streams.name default"));
    // Started with what the database had: nothing to change or build.
    let config = StoreConfig::Postgres(PostgresOptions {
        projections: Projections { by_event_type: false, ..Projections::default() },
        ..postgres_options(&cluster.url(&linguistic))
    });
    let store = store::open(&config).await.unwrap();
    assert_eq!(cluster.psql(&linguistic, collations).unwrap(), byte_order);
    assert_eq!(cluster.psql(&linguistic, "SELECT version FROM schema_version").unwrap(), "5");
    // The links written as rows before version 5, one run each now, read
    // as before.
    assert_eq!(
        cluster.psql(&linguistic, "SELECT count(*) FROM link_runs WHERE stream = '$ce-Order'").unwrap(),
        "3"
    );
    let category = StreamRead {
        stream: "$ce-Order".into(),
        from: Some(0),
        direction: Direction::Forward,
        count: 20,
        resolve_links: true,
    };
    let linked: Vec<_> = (store.read_stream(category).await.unwrap().events.iter())
        .map(|read| format!("{}@{}", read.event.number, read.event.stream))
        .collect();
    assert_eq!(linked, ["0@Order-b", "0@Order-a", "0@Order-B"]);
    assert_eq!(
        cluster.psql(&linguistic, "SELECT projections || ' ' || building FROM log_head").unwrap(),
        "by-category,streams none"
    );
    assert_eq!(cluster.psql(&linguistic, "SELECT count(*) FROM settings").unwrap(), "0");
    let read = StreamRead {
        stream: "Order-a".into(),
        from: Some(0),
        direction: Direction::Forward,
        count: 20,
        resolve_links: false,
    };
    let events = store.read_stream(read).await.unwrap().events;
    assert_eq!(events.len(), 1);
    // The id of that event is spent in its stream: appended again, it is
    // answered as the append it was.
    let again = try_append_id(&store, "Order-a", events[0].event.id).await.unwrap();
    assert!(again.idempotent && again.first_number == 0, "{again:?}");
    assert_eq!(listed(&store, "Order-").await, ["Order-B", "Order-a", "Order-b"]);
    append_one(&store, "Order-0").await;
    store.close().await.unwrap();
}

/// TLS to the database (`sslmode=require`): every connection eventfeed
/// opens (the writer's, the listener's, the readers') is encrypted, and the
/// server's certificate is checked against `--store-ca`. A certificate
/// that no CA given signed, a CA file given for a plain connection, or TLS
/// asked of a server without it, stop the open with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_connection_and_checks_the_certificate() {
    let Some(cluster) = common::postgres::Cluster::dedicated() else { return };
    let plain_url = cluster.create_database();
    let name = plain_url.rsplit('/').next().unwrap().to_owned();
    // Asked before the server has TLS: refused by the server.
    let tls_url = format!("{plain_url}?sslmode=require");
    let files = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(&["localhost", "127.0.0.1"]);
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let refused = open_error(&tls_url, Some(&ca_file)).await;
    assert!(refused.contains("TLS handshake: server does not support TLS"), "{refused}");

    cluster.enable_tls(&certificate, &key);
    let server = TestServer::start_with(|config| {
        config.store = tls_url.clone();
        config.store_ca = Some(ca_file.clone());
    })
    .await;
    server.append_n("tls", 3).await;
    let page = server.get_json("/streams/tls/0/forward/20").await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(3));
    let connections = cluster
        .psql(
            &name,
            "SELECT count(*) FILTER (WHERE s.ssl) || ' of ' || count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
             AND a.application_name <> 'psql'",
        )
        .unwrap();
    let (encrypted, all) = connections.split_once(" of ").unwrap();
    assert!(all.parse::<u32>().unwrap() >= 3, "the writer, the listener and a reader: {connections}");
    assert_eq!(encrypted, all, "every connection of eventfeed's is encrypted: {connections}");

    // Another CA's certificate: not trusted.
    let (other_ca, _, _) = certificates(&["localhost"]);
    let other_file = files.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let untrusted = open_error(&tls_url, Some(&other_file)).await;
    assert!(untrusted.contains("invalid peer certificate"), "{untrusted}");
    // A CA without sslmode=require is a mistake, not silently ignored.
    let ignored = open_error(&plain_url, Some(&ca_file)).await;
    assert!(ignored.contains("sslmode=require"), "{ignored}");
}

/// A CA's certificate, and a certificate for `names` it signed with its
/// key, all PEM.
fn certificates(names: &[&str]) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "eventfeed test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let certificate = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

/// Why opening a store on `url` with `ca_file` fails.
async fn open_error(url: &str, ca_file: Option<&Path>) -> String {
    let mut config = store_config(url);
    if let StoreConfig::Postgres(options) = &mut config {
        options.ca_file = ca_file.map(Path::to_owned);
    }
    match store::open(&config).await {
        Ok(_) => panic!("a store opened on {url} with {ca_file:?}"),
        Err(error) => error.to_string(),
    }
}
