//! The PostgreSQL backend: the same contract as the sled store, on a
//! database teams already run and replicate.
//!
//! - [`schema`]: numbered migrations applied at open; a newer schema is
//!   refused.
//! - [`writer`]: one writer task per store keeps group commit: it takes
//!   every request waiting and commits them as one transaction, which
//!   first locks the one-row `log_head`. That lock orders commits by
//!   position on every node, so positions are dense and a reader of
//!   `$all` never sees a position before the lower ones (a sequence would
//!   let a later commit of a lower position appear after a higher one).
//! - [`read`]: stream pages, `$all`, single events, each one index range
//!   scan plus one query for the payloads it returns, in one snapshot.
//! - [`listen`]: `pg_notify` in the commit, and a `LISTEN` connection that
//!   moves the [`Notifier`] for commits of other nodes and re-reads the
//!   head after every reconnection, so no wake-up is missed.
//! - [`transfer`]: the entries an export reads, and an import through
//!   `COPY`.
//! - [`scavenge`]: plain `DELETE`s of what no read can see, one stream per
//!   small transaction under the head lock, so it never races an append
//!   that changes what is visible.
//!
//! One clock: creation times and `$maxAge` are the database's
//! (`clock_timestamp()`), so every node renders the same bytes.
//!
//! Only this module knows SQL.

mod build;
mod connection;
mod errors;
mod lease;
mod links;
mod listen;
mod page;
mod prepared;
mod read;
mod scavenge;
pub mod schema;
mod staging;
mod transfer;
mod writer;

pub(crate) use errors::db_error;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::{
    AllRead, AllSlice, Append, AppendOutcome, DatabaseQuery, ExpectedVersion, ExportSnapshot, Head,
    ImportStep, Lease, LeaseClaim, Notifier, PoolFigures, PostgresOptions, ReadEvent, ScavengeReport,
    ScavengeStarted, SpentId, Store, StoreError, StoredEntry, StreamRead, StreamSettings, StreamSlice,
    StreamState, StreamView,
};
use crate::store::projections::Projections;

/// How many requests may wait for the writer; beyond it callers wait to
/// send, which slows them down rather than queueing without bound.
const WRITER_QUEUE: usize = 16 * 1024;

/// The channel every commit notifies, with its head and streams.
const CHANNEL: &str = "eventfeed_commits";

/// The commands the writer takes.
#[derive(Debug)]
enum Command {
    /// One append (`Store::append`) or several at once (`append_all`).
    Append {
        appends: Vec<Append>,
        multi: bool,
        reply: oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>,
    },
    Delete {
        stream: String,
        expected: ExpectedVersion,
        hard: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Command {
    /// The event bytes (data plus metadata) the command would write.
    fn bytes(&self) -> usize {
        match self {
            Self::Append { appends, .. } => {
                appends.iter().flat_map(|append| &append.events).map(super::ProposedEvent::size).sum()
            }
            Self::Delete { .. } => 0,
        }
    }
}

/// Publishes heads to the notifier in commit order, whoever learns of the
/// commit first: the writer (this node's commits) or the listener (every
/// node's). Each commit is published once; a head older than one already
/// published is skipped, so the watched head never goes backwards.
#[derive(Debug)]
struct Publisher {
    notifier: Notifier,
    /// The commit sequence last published.
    published: Mutex<u64>,
    /// Whether the database is away now, as the writer and the listener
    /// (which both hold the publisher) last found it.
    outage: Outage,
    /// The database's size in bytes (`pg_database_size`), as the listener
    /// last read it with the head; `u64::MAX` before it has.
    size_bytes: AtomicU64,
    /// The projections being built from the log, as last read from the head.
    building: watch::Sender<Projections>,
}

/// Why the database is known to be away now, if it is: set when the
/// writer, the listener or a read loses it (a read that gets no answer in
/// time, see `connection`), cleared when the writer or the listener
/// reaches it again
/// (the listener tries every few seconds, so it clears without appends).
/// `/health/ready` answers `503` meanwhile.
#[derive(Debug, Default)]
struct Outage(Mutex<Option<String>>);

impl Outage {
    fn lost(&self, why: &str) {
        let mut outage = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if outage.is_none() {
            tracing::warn!(%why, "the PostgreSQL database cannot be reached; appends answer 503 until it is back");
        }
        *outage = Some(why.to_owned());
    }

    fn back(&self) {
        if self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().is_some() {
            tracing::info!("the PostgreSQL database is reachable again");
        }
    }

    fn reason(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Publisher {
    /// Publishes `head`, waking `streams` (every stream for `None`),
    /// unless a head at least as new was published already.
    fn publish(&self, head: Head, streams: Option<&[String]>) {
        // IMPORTANT: held while publishing, so that two publishers cannot
        // interleave an older head after a newer one.
        let mut published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if head.commit_seq <= *published {
            return;
        }
        *published = head.commit_seq;
        match streams {
            Some(streams) => self.notifier.publish(head, streams.iter().map(String::as_str)),
            None => self.notifier.publish_all(head),
        }
    }
}

/// The PostgreSQL store. See the module documentation.
pub struct PgStore {
    /// Connections for reads and scavenges.
    pool: Pool,
    /// Requests to the writer task; `None` once closed.
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    /// Resolves when the writer task has ended (after close).
    writer_done: Mutex<Option<oneshot::Receiver<()>>>,
    publisher: Arc<Publisher>,
    /// Tells the listener to stop.
    shutdown: watch::Sender<bool>,
    /// Whether `close` was called: writes are refused from then on.
    closed: AtomicBool,
    /// An import was begun and found the database empty.
    importing: AtomicBool,
    /// The scavenge running now, if any.
    scavenging: Arc<Mutex<Option<Uuid>>>,
    /// The report of the scavenge running or started last.
    latest_scavenge: Arc<Mutex<Option<ScavengeReport>>>,
    options: PostgresOptions,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("options", &self.options).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, migrates the schema, checks the projections, reads the
    /// head and starts the writer and the listener. A bad connection
    /// string, an unreachable database or a newer schema fail here.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let config = connection::config(&options.url)?;
        let tls = connection::Tls::for_config(&config, options.ca_file.as_deref())?;
        let mut client = connection::connect(&config, &tls).await.map_err(|error| {
            StoreError::Io(format!(
                "cannot connect to {}: {}",
                connection::describe(&options.url),
                schema::error_text(&error)
            ))
        })?;
        schema::migrate(&mut client).await?;
        let projected = build::reconcile(&mut client, options.projections).await?;
        let latest_scavenge = scavenge::newest(&client).await?;
        let head = read_head(&client).await?;
        tracing::info!(database = %connection::describe(&options.url), next_position = head.next_position, "PostgreSQL store open");
        let publisher = Arc::new(Publisher {
            notifier: Notifier::new(head),
            published: Mutex::new(head.commit_seq),
            outage: Outage::default(),
            size_bytes: AtomicU64::new(u64::MAX),
            building: watch::channel(projected.building).0,
        });
        let pool = connection::read_pool(&config, &tls)?;
        let (shutdown, shutdown_seen) = watch::channel(false);
        tokio::spawn(listen::run(config.clone(), tls.clone(), Arc::clone(&publisher), shutdown_seen));
        let (sender, receiver) = mpsc::channel(WRITER_QUEUE);
        let (done, writer_done) = oneshot::channel();
        let writer = writer::Writer::new(&config, tls, projected, options.durability, Arc::clone(&publisher));
        tokio::spawn(async move {
            writer.run(receiver).await;
            let _ = done.send(());
        });
        Ok(Self {
            pool,
            writer: Mutex::new(Some(sender)),
            writer_done: Mutex::new(Some(writer_done)),
            publisher,
            shutdown,
            closed: AtomicBool::new(false),
            importing: AtomicBool::new(false),
            scavenging: Arc::new(Mutex::new(None)),
            latest_scavenge: Arc::new(Mutex::new(latest_scavenge)),
            options,
        })
    }

    /// Sends a command to the writer; `Unavailable` once closed.
    async fn send(&self, command: Command) -> Result<(), StoreError> {
        let sender = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match sender {
            Some(sender) => sender.send(command).await.map_err(|_| StoreError::Unavailable),
            None => Err(StoreError::Unavailable),
        }
    }

    async fn append_parts(
        &self,
        appends: Vec<Append>,
        multi: bool,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append { appends, multi, reply }).await?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => db_error(error),
            deadpool_postgres::PoolError::Timeout(_) => connection::no_answer(connection::ANSWER_DEADLINE),
            other => StoreError::Io(format!("PostgreSQL pool: {other}")),
        })
    }

    /// `work` within its deadline (see [`connection::within`]); a database
    /// that misses it is lost until it answers again.
    async fn within<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let lost = self.publisher.outage.reason().is_some();
        let result = connection::within(work, lost).await;
        if let Err(StoreError::Unreachable(why)) = &result {
            self.publisher.outage.lost(why);
        }
        result
    }

    /// Tells the notifier's observer (`/metrics`) how long `query` took
    /// since `started` (once it held a connection).
    fn timed(&self, query: DatabaseQuery, started: Instant) {
        self.publisher.notifier.query_observed(query, started.elapsed());
    }
}

/// The head as the database has it.
async fn read_head(client: &Client) -> Result<Head, StoreError> {
    let row =
        client.query_one("SELECT next_position, commit_seq FROM log_head", &[]).await.map_err(db_error)?;
    Ok(Head { next_position: unsigned(row.get(0)), commit_seq: unsigned(row.get(1)) })
}

/// A stored number; never negative, since only this module writes them.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// A number to store: every number the store keeps fits a `bigint` (the
/// metadata rules cap settings at `i64::MAX`).
/// The least string greater than every string that starts with `prefix`
/// (in code point order, which is UTF-8's byte order); `None` when there
/// is none (an empty prefix, or one of only the greatest code point).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The columns of `streams`, in table order, as [`state_from_row`] reads
/// them (from `offset`).
const STATE_COLUMNS: &str = "name, next_number, created_position, deleted_before, soft_deleted, tombstoned, \
     max_count, max_age_secs, truncate_before, cache_control_secs, metadata_number, not_public";

/// A stream's state from the [`STATE_COLUMNS`] of a row that start at
/// `offset` (the name not read).
fn state_from_row(row: &Row, offset: usize) -> StreamState {
    let optional = |index: usize| row.get::<_, Option<i64>>(offset + index).map(unsigned);
    StreamState {
        next_number: unsigned(row.get(offset + 1)),
        created_position: unsigned(row.get(offset + 2)),
        deleted_before: unsigned(row.get(offset + 3)),
        soft_deleted: row.get(offset + 4),
        tombstoned: row.get(offset + 5),
        settings: StreamSettings {
            max_count: optional(6),
            max_age_secs: optional(7),
            truncate_before: optional(8),
            cache_control_secs: optional(9),
            metadata_number: optional(10),
            not_public: row.get(offset + 11),
        },
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        let mut outcomes = self.append_parts(vec![append], false).await?;
        outcomes.pop().ok_or_else(|| StoreError::Io("the writer answered no outcome".into()))
    }

    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_parts(appends, true).await
    }

    async fn read_stream(&self, read: StreamRead) -> Result<StreamSlice, StoreError> {
        self.within(async {
            let mut client = self.reader().await?;
            let started = Instant::now();
            let slice = page::stream(&mut client, &read).await;
            self.timed(DatabaseQuery::ReadStream, started);
            slice
        })
        .await
    }

    async fn read_all(&self, read: AllRead) -> Result<AllSlice, StoreError> {
        self.within(async {
            let mut client = self.reader().await?;
            let started = Instant::now();
            let slice = read::read_all(&mut client, read).await;
            self.timed(DatabaseQuery::ReadAll, started);
            slice
        })
        .await
    }

    async fn read_event(
        &self,
        stream: &str,
        number: u64,
        resolve_links: bool,
    ) -> Result<(StreamView, Option<ReadEvent>), StoreError> {
        self.within(async {
            let mut client = self.reader().await?;
            let started = Instant::now();
            let event = page::event(&mut client, stream, number, resolve_links).await;
            self.timed(DatabaseQuery::ReadEvent, started);
            event
        })
        .await
    }

    async fn delete(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delete { stream: stream.to_owned(), expected, hard, reply }).await?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    async fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        self.within(async {
            let client = self.reader().await?;
            let started = Instant::now();
            let query = format!("SELECT {STATE_COLUMNS} FROM streams WHERE name = $1");
            // Prepared once per connection: every append's access check asks.
            let row = match client.prepare_cached(&query).await {
                Ok(statement) => client.query_opt(&statement, &[&stream]).await.map_err(db_error),
                Err(error) => Err(db_error(error)),
            };
            self.timed(DatabaseQuery::StreamState, started);
            Ok(row?.as_ref().map(|row| state_from_row(row, 0)))
        })
        .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamState)>, StoreError> {
        // Byte order (names compare byte for byte: migration 0003), on the
        // primary key: one range scan from the prefix to the first name
        // after every name that has it.
        let end = prefix_end(prefix);
        let query = format!(
            "SELECT {STATE_COLUMNS} FROM streams \
             WHERE name >= $1 AND name > $2 AND ($3::text IS NULL OR name < $3) \
             ORDER BY name LIMIT $4"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.within(async {
            let client = self.reader().await?;
            let started = Instant::now();
            let rows =
                client.query(&query, &[&prefix, &after.unwrap_or(""), &end, &limit]).await.map_err(db_error);
            self.timed(DatabaseQuery::ListStreams, started);
            Ok(rows?.iter().map(|row| (row.get::<_, String>(0), state_from_row(row, 0))).collect())
        })
        .await
    }

    async fn start_scavenge(&self) -> Result<ScavengeStarted, StoreError> {
        let closed = self.closed.load(Ordering::Acquire);
        let latest = Arc::clone(&self.latest_scavenge);
        scavenge::start(self.pool.clone(), Arc::clone(&self.scavenging), latest, closed).await
    }

    fn latest_scavenge(&self) -> Option<ScavengeReport> {
        self.latest_scavenge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    async fn scavenge_report(&self, id: Uuid) -> Result<Option<ScavengeReport>, StoreError> {
        let client = self.reader().await?;
        scavenge::report(&client, id).await
    }

    async fn lease(&self, name: &str, claim: &LeaseClaim) -> Result<Lease, StoreError> {
        self.within(async { lease::claim(&**self.reader().await?, name, claim).await }).await
    }

    async fn release_lease(&self, name: &str, holder: Uuid) -> Result<(), StoreError> {
        self.within(async { lease::release(&**self.reader().await?, name, holder).await }).await
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn projections_building(&self) -> Vec<&'static str> {
        self.publisher.building.borrow().names()
    }

    async fn export_entries(
        &self,
        stream: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let client = self.reader().await?;
        transfer::export_entries(&client, stream, from, below, limit).await
    }

    async fn export_spent_ids(&self, snapshot: &ExportSnapshot) -> Result<Vec<SpentId>, StoreError> {
        let client = self.reader().await?;
        transfer::export_spent_ids(&client, snapshot).await
    }

    /// With `COPY`, a transaction per step (see [`transfer`]).
    async fn import(&self, step: ImportStep) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable);
        }
        let mut client = self.reader().await?;
        match step {
            ImportStep::Begin => {
                transfer::begin(&client).await?;
                self.importing.store(true, Ordering::Release);
            }
            _ if !self.importing.load(Ordering::Acquire) => {
                return Err(StoreError::Invalid("no import was begun".into()));
            }
            ImportStep::Write(items) => transfer::write(&mut client, items).await?,
            ImportStep::Finish { next_position, last_created_micros } => {
                transfer::finish(&client, next_position, last_created_micros).await?;
                self.importing.store(false, Ordering::Release);
                self.publisher.publish(read_head(&client).await?, None);
            }
        }
        Ok(())
    }

    fn notifier(&self) -> &Notifier {
        &self.publisher.notifier
    }

    fn database_pool(&self) -> Option<PoolFigures> {
        let status = self.pool.status();
        Some(PoolFigures {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        })
    }

    /// The database's files, as the listener measures them every few
    /// seconds (a query of its own here would need the async threads).
    fn size_on_disk(&self) -> Option<u64> {
        let bytes = self.publisher.size_bytes.load(Ordering::Relaxed);
        (bytes != u64::MAX).then_some(bytes)
    }

    fn unreachable(&self) -> Option<String> {
        self.publisher.outage.reason().map(|why| format!("the PostgreSQL database cannot be reached: {why}"))
    }

    /// Stops taking writes and waits for the writer to finish the batch it
    /// has (committed, so durable); reads still answer. Every commit is
    /// durable when acknowledged, so there is nothing to flush.
    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let done = self.writer_done.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(done) = done {
            let _ = done.await;
        }
        let _ = self.shutdown.send(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end("Order-").as_deref(), Some("Order."));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
