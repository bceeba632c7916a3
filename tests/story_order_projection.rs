//! Story 2, the order projection that was replayed: checkpoints of the
//! reader's own in the store, and a replay that is safe and quick. Proves
//! solved what a team lived through with EventStore's HTTP API: orders
//! live in streams `CustomerOrder-{id}`; services follow `$ce-CustomerOrder`
//! and `$et-OrderCreated` and keep their place in a checkpoint stream of
//! their own (`{source}_{service}_checkpoints`, one `checkpoint` event per
//! page processed); commands' ids are the events' ids, so a retried command
//! writes nothing twice. After a bad deploy the projection's database was
//! restored from an old backup, its checkpoint set back, and the replay of
//! a little over 50,000 events took 20 minutes.
//!
//! Here 50,000 events over 5,000 orders are written by commands, some of
//! them sent twice; a projection reads `$ce-CustomerOrder` over HTTP the
//! way that team's did (pages with `embed=body`, following `previous`
//! links, a long-poll at the head, a checkpoint event per page), is killed
//! mid-way at an arbitrary point, and resumes from its checkpoint with no
//! event lost or applied twice; it then follows the head live; then its
//! database is restored from an empty backup, its checkpoint set back to
//! the start, and the replay rebuilds exactly the same state. A second
//! service on `$et-OrderCreated` sends each welcome mail once. (How long
//! the replay takes, cold and through Varnish, is a benchmark figure,
//! `bench/run stories`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pages::link;
use common::{ATOM_JSON, EVENTS_JSON, TestServer, client};
use reqwest::Client;
use serde_json::{Value, json};
use uuid::Uuid;

const ORDERS: usize = 5_000;

/// Events per order: created, seven items, paid, shipped.
const EVENTS_PER_ORDER: usize = 10;

const ITEMS_PER_ORDER: usize = 7;

/// Events a page of the projection's reads.
const PAGE: usize = 100;

/// Commands sent at once.
const COMMAND_SENDERS: usize = 16;

/// Every this many commands is sent twice, as a client retrying after a
/// lost answer would.
const RETRY_EVERY: usize = 50;

/// An event id made from the command's id: the command's id for its first
/// event, the next ids for the others. Sending the command again sends the
/// same ids, which the store recognises as a retry.
fn event_id(command: Uuid, index: usize) -> Uuid {
    Uuid::from_u128(command.as_u128().wrapping_add(index as u128))
}

/// The two commands that write order `order`: place it (created and its
/// items), then complete it (paid and shipped).
fn commands(order: usize) -> [(String, Vec<Value>); 2] {
    let stream = format!("CustomerOrder-{order}");
    let place = Uuid::new_v4();
    let mut placed = vec![json!({"eventId": event_id(place, 0), "eventType": "OrderCreated",
                                 "data": {"order": order, "customer": format!("customer-{}", order % 97)}})];
    placed.extend((0..ITEMS_PER_ORDER).map(|item| {
        json!({"eventId": event_id(place, item + 1), "eventType": "ItemAdded",
               "data": {"sku": format!("SKU-{}", (order + item) % 113), "price": 100 + item}})
    }));
    let complete = Uuid::new_v4();
    let completed = vec![
        json!({"eventId": event_id(complete, 0), "eventType": "OrderPaid", "data": {"amount": order_total()}}),
        json!({"eventId": event_id(complete, 1), "eventType": "OrderShipped", "data": {"carrier": "post"}}),
    ];
    [(stream.clone(), placed), (stream, completed)]
}

/// What every order's items add up to.
fn order_total() -> i64 {
    (0..ITEMS_PER_ORDER as i64).map(|item| 100 + item).sum()
}

async fn send(client: &Client, base: &str, stream: &str, events: &[Value]) -> String {
    let response = client
        .post(format!("{base}/streams/{stream}"))
        .header("content-type", EVENTS_JSON)
        .body(Value::Array(events.to_vec()).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "append to {stream}");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Writes every order, `COMMAND_SENDERS` at once, sending some commands
/// twice; a retry must be answered with the first attempt's `Location`.
async fn write_orders(base: &str, orders: std::ops::Range<usize>) {
    let next = Arc::new(AtomicUsize::new(orders.start));
    let senders: Vec<_> = (0..COMMAND_SENDERS)
        .map(|_| {
            let (next, base, end) = (Arc::clone(&next), base.to_owned(), orders.end);
            tokio::spawn(async move {
                let client = client();
                loop {
                    let order = next.fetch_add(1, Ordering::SeqCst);
                    if order >= end {
                        return;
                    }
                    for (command, (stream, events)) in commands(order).iter().enumerate() {
                        let location = send(&client, &base, stream, events).await;
                        if (order * 2 + command) % RETRY_EVERY == 0 {
                            let again = send(&client, &base, stream, events).await;
                            assert_eq!(again, location, "a retried command writes nothing new");
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// One order as the projection keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OrderRow {
    customer: String,
    items: u32,
    total: i64,
    paid: i64,
    shipped: bool,
}

/// The projection's database: its rows, the last event number applied per
/// order stream (what makes applying an event a second time a no-op), and,
/// for the test, how often each event was applied.
#[derive(Debug, Clone, Default)]
struct Database {
    orders: BTreeMap<String, OrderRow>,
    versions: BTreeMap<String, u64>,
    applied: BTreeMap<(String, u64), u32>,
    /// Events seen again after a resume and skipped as already applied.
    skipped: usize,
}

/// Which service, reading which stream, applying events how.
#[derive(Clone, Copy)]
struct Service {
    source: &'static str,
    name: &'static str,
    apply: fn(&mut OrderRow, &str, &Value),
}

impl Service {
    /// `{source}_{service}_checkpoints`, the source without its `$ce-` or
    /// `$et-` (a user stream may not start with `$`).
    fn checkpoint_stream(&self) -> String {
        let source = self.source.trim_start_matches("$ce-").trim_start_matches("$et-");
        format!("{source}_{}_checkpoints", self.name)
    }
}

const ORDER_SUMMARY: Service =
    Service { source: "$ce-CustomerOrder", name: "ordersummary", apply: summarise };

const WELCOME_MAIL: Service = Service { source: "$et-OrderCreated", name: "welcomemail", apply: welcome };

fn summarise(row: &mut OrderRow, event_type: &str, data: &Value) {
    match event_type {
        "OrderCreated" => row.customer = data["customer"].as_str().unwrap().to_owned(),
        "ItemAdded" => {
            row.items += 1;
            row.total += data["price"].as_i64().unwrap();
        }
        "OrderPaid" => row.paid = data["amount"].as_i64().unwrap(),
        "OrderShipped" => row.shipped = true,
        other => panic!("an unknown event type {other}"),
    }
}

/// The welcome-mail service records the mail it sent on the order's row.
fn welcome(row: &mut OrderRow, event_type: &str, data: &Value) {
    assert_eq!(event_type, "OrderCreated");
    row.customer = data["customer"].as_str().unwrap().to_owned();
    row.items += 1; // mails sent
}

/// Applies one entry in one step (the lock is a database transaction); an
/// event at or below the order's version was applied before a crash and
/// is skipped.
fn apply(service: &Service, database: &Mutex<Database>, entry: &Value) {
    let stream = entry["streamId"].as_str().unwrap().to_owned();
    let number = entry["eventNumber"].as_u64().unwrap();
    let data: Value = serde_json::from_str(entry["data"].as_str().expect("the body is embedded")).unwrap();
    let mut database = database.lock().unwrap();
    match database.versions.get(&stream).copied() {
        Some(version) if number <= version => {
            database.skipped += 1;
            return;
        }
        Some(version) if service.source.starts_with("$ce-") => {
            assert_eq!(number, version + 1, "{stream}: event {number} follows {version}, none lost")
        }
        _ => {}
    }
    (service.apply)(
        database.orders.entry(stream.clone()).or_default(),
        entry["eventType"].as_str().unwrap(),
        &data,
    );
    database.versions.insert(stream.clone(), number);
    *database.applied.entry((stream, number)).or_insert(0) += 1;
}

/// Where the service resumes: after the position its last checkpoint
/// event names, or at the start when it has none.
async fn resume_position(client: &Client, base: &str, service: &Service) -> u64 {
    let response = client
        .get(format!("{base}/streams/{}/head", service.checkpoint_stream()))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        404 => 0,
        200 => {
            let checkpoint: Value = response.json().await.unwrap();
            u64::try_from(checkpoint["position"].as_i64().unwrap() + 1).unwrap()
        }
        other => panic!("reading the checkpoint answered {other}"),
    }
}

async fn write_checkpoint(client: &Client, base: &str, service: &Service, position: i64) {
    let event =
        json!([{"eventId": Uuid::new_v4(), "eventType": "checkpoint", "data": {"position": position}}]);
    send(client, base, &service.checkpoint_stream(), event.as_array().unwrap()).await;
}

/// The projection as that team wrote it: from its checkpoint, read pages
/// of `PAGE` events with their bodies, oldest first, following `previous`
/// links; apply each page, then write a checkpoint; at the head, long-poll
/// the next page. It runs until its task is aborted (a kill or a stop), or
/// dies by itself once `crash_at` events are applied, in the middle of a
/// page, before that page's checkpoint.
async fn run_projection(
    base: String,
    service: Service,
    database: Arc<Mutex<Database>>,
    crash_at: Option<usize>,
) {
    let client = client();
    let from = resume_position(&client, &base, &service).await;
    let mut page = format!("{base}/streams/{}/{from}/forward/{PAGE}", service.source);
    loop {
        let response = client
            .get(format!("{page}?embed=body"))
            .header("accept", ATOM_JSON)
            .header("es-longpoll", "5")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{page}");
        let feed: Value = response.json().await.unwrap();
        let entries = feed["entries"].as_array().unwrap();
        for entry in entries.iter().rev() {
            apply(&service, &database, entry);
            if crash_at.is_some_and(|crash_at| database.lock().unwrap().applied.len() >= crash_at) {
                return;
            }
            // A database write per event: a kill can land between two.
            tokio::task::yield_now().await;
        }
        if let Some(last) = entries.first() {
            let position = last["positionEventNumber"].as_i64().unwrap();
            write_checkpoint(&client, &base, &service, position).await;
        }
        // At the head the same page is asked again (long-polled); else on.
        if let Some(previous) = link(&feed, "previous") {
            page = previous;
        }
    }
}

/// Waits until the projection has applied `count` distinct events.
async fn wait_for_applied(database: &Mutex<Database>, count: usize, limit: Duration) {
    common::wait_until(&format!("{count} events applied"), limit, || {
        database.lock().unwrap().applied.len() >= count
    })
    .await;
}

/// Every event applied exactly once, and the state the commands imply.
fn check(database: &Database, orders: usize, what: &str) {
    let twice: Vec<_> = database.applied.iter().filter(|(_, times)| **times != 1).collect();
    assert!(twice.is_empty(), "{what}: events applied more than once: {twice:?}");
    assert_eq!(database.applied.len(), orders * EVENTS_PER_ORDER, "{what}: every event applied");
    assert_eq!(database.orders.len(), orders, "{what}");
    for (stream, row) in &database.orders {
        let order: usize = stream.strip_prefix("CustomerOrder-").unwrap().parse().unwrap();
        let expected = OrderRow {
            customer: format!("customer-{}", order % 97),
            items: ITEMS_PER_ORDER as u32,
            total: order_total(),
            paid: order_total(),
            shipped: true,
        };
        assert_eq!(row, &expected, "{what}: {stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_projection_resumes_from_its_checkpoint_and_a_rewound_one_replays_exactly() {
    let server = TestServer::start().await;
    write_orders(&server.base, 0..ORDERS).await;
    let total = ORDERS * EVENTS_PER_ORDER;

    // A crash in the middle of a page: 7 of its events applied, its
    // checkpoint not written. The resume reads the page again and skips
    // exactly those 7.
    let database = Arc::new(Mutex::new(Database::default()));
    let crash_at = PAGE * 150 + 7;
    tokio::spawn(run_projection(server.base.clone(), ORDER_SUMMARY, Arc::clone(&database), Some(crash_at)))
        .await
        .unwrap();
    assert_eq!(database.lock().unwrap().applied.len(), crash_at);
    let projection =
        tokio::spawn(run_projection(server.base.clone(), ORDER_SUMMARY, Arc::clone(&database), None));
    wait_for_applied(&database, crash_at + PAGE, Duration::from_secs(60)).await;
    assert_eq!(database.lock().unwrap().skipped, 7, "the resume skipped what the crash had applied");

    // Killed from outside later on: wherever in a page, a read or a
    // checkpoint write the task then is.
    wait_for_applied(&database, total * 7 / 10, Duration::from_secs(300)).await;
    projection.abort();
    let _ = projection.await;
    let applied_at_kill = database.lock().unwrap().applied.len();
    assert!(applied_at_kill < total, "killed before the end ({applied_at_kill})");

    // Resumed from its checkpoint: to the head, then live.
    let projection =
        tokio::spawn(run_projection(server.base.clone(), ORDER_SUMMARY, Arc::clone(&database), None));
    wait_for_applied(&database, total, Duration::from_secs(300)).await;
    write_orders(&server.base, ORDERS..ORDERS + 1).await;
    wait_for_applied(&database, total + EVENTS_PER_ORDER, Duration::from_secs(30)).await;
    projection.abort();
    let _ = projection.await;
    let live = database.lock().unwrap().clone();
    check(&live, ORDERS + 1, "after the kill and the resume");
    eprintln!(
        "REPORT order projection: crashed after {crash_at}, killed after {applied_at_kill} events applied; on \
         resuming, {} events read again and skipped as already applied",
        live.skipped
    );
    assert!(
        live.skipped <= 7 + PAGE,
        "a resume re-reads at most the page it was killed in ({})",
        live.skipped
    );

    // The bad deploy: the database is restored from a backup taken before
    // anything was applied, the checkpoint set back to the start, and the
    // projection replays everything.
    let restored = Arc::new(Mutex::new(Database::default()));
    write_checkpoint(&server.client, &server.base, &ORDER_SUMMARY, -1).await;
    let started = Instant::now();
    let projection =
        tokio::spawn(run_projection(server.base.clone(), ORDER_SUMMARY, Arc::clone(&restored), None));
    wait_for_applied(&restored, total + EVENTS_PER_ORDER, Duration::from_secs(300)).await;
    projection.abort();
    let _ = projection.await;
    eprintln!(
        "REPORT order projection: replayed {} events in {:?} (debug build)",
        total + EVENTS_PER_ORDER,
        started.elapsed()
    );
    let replayed = restored.lock().unwrap().clone();
    check(&replayed, ORDERS + 1, "after the replay");
    assert_eq!(replayed.orders, live.orders, "the replay rebuilt the state the live projection had");
    assert_eq!(replayed.skipped, 0, "a replay into an empty database skips nothing");

    // The checkpoint stream holds one checkpoint per page, the last one
    // at the head of $ce-CustomerOrder.
    let head = resume_position(&server.client, &server.base, &ORDER_SUMMARY).await;
    assert_eq!(head, (total + EVENTS_PER_ORDER) as u64);

    // The welcome mails: one per order created, each sent once.
    let mails = Arc::new(Mutex::new(Database::default()));
    let service = tokio::spawn(run_projection(server.base.clone(), WELCOME_MAIL, Arc::clone(&mails), None));
    wait_for_applied(&mails, ORDERS + 1, Duration::from_secs(120)).await;
    service.abort();
    let _ = service.await;
    let mails = mails.lock().unwrap();
    assert_eq!(mails.orders.len(), ORDERS + 1);
    assert!(mails.orders.values().all(|row| row.items == 1), "one welcome mail per order");
    assert!(mails.applied.values().all(|&times| times == 1));
}
