//! The writer: group commit on PostgreSQL. One task per store takes every
//! request waiting (up to [`MAX_BATCH`]) and commits them as one
//! transaction:
//!
//! 1. lock the head (`SELECT … FROM log_head FOR UPDATE`), reading the
//!    next position and the database's clock: from here on no other
//!    batch, on any node, commits until this one has, so every state read
//!    below is the latest and positions are assigned in commit order;
//! 2. read the states of every stream the batch may touch and the numbers
//!    its event ids already have, in two queries sent with the `BEGIN`
//!    and the lock (pipelined: one round trip for all four);
//! 3. check and stage each request in order against those facts and what
//!    the batch staged before it ([`Staging`](super::staging), with the shared rules of
//!    [`rules::check_append`]); a refused request stages nothing;
//! 4. write everything staged with one multi-row statement per table,
//!    move the head, `pg_notify` the new head and the streams touched
//!    (pipelined: one round trip), and commit.
//!
//! Only then are the requests answered. If the transaction fails, every
//! request of the batch gets the error and nothing of it is written; the
//! next batch reconnects if the connection was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::watch;
use tokio_postgres::Client;

use super::build::{self, Projected};
use super::connection::{self, Tls, connect};
use super::prepared::Prepared;
use super::staging::{self, Request, Staging};
use super::{CHANNEL, Command, Publisher, db_error, signed, unsigned};
use crate::store::projections::{Projection, Projections};
use crate::store::{AppendOutcome, CommitFigures, DatabaseQuery, Durability, Head, StoreError};

/// The most requests one transaction takes: enough to share one commit
/// among every client of a busy server.
const MAX_BATCH: usize = 1024;

/// The most event bytes (data plus metadata) one transaction takes, but
/// for a single larger request: the batch's rows are sent as parameters of
/// one statement, held in memory until it is written.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

pub(super) struct Writer {
    /// How the writer connects (see [`Writer::new`]).
    config: tokio_postgres::Config,
    tls: Tls,
    /// The writer's own connection; `None` before the first batch and
    /// after it was lost, until the next batch connects.
    client: Option<Client>,
    /// The statements prepared on `client`.
    prepared: Prepared,
    /// The projections as the head said at this writer's last batch.
    projected: Projected,
    publisher: Arc<Publisher>,
    /// When a build's step may be tried again after one failed.
    retry_build_at: Option<Instant>,
    build_log: build::BuildLog,
}

/// How long a writer waits to try a build's step again after one failed.
const BUILD_RETRY: Duration = Duration::from_secs(1);

/// How long PostgreSQL lets the writer's session sit idle inside a
/// transaction before ending it. The writer never does (its statements are
/// sent back to back); a session left so is one whose batch was abandoned
/// on a connection cut off without PostgreSQL noticing (a network
/// partition): it holds the head's lock, and every later batch would wait
/// for it until the server's TCP keepalives found the connection dead,
/// two hours by default.
const IDLE_IN_TRANSACTION_MS: u64 = 30_000;

/// The `application_name` of the writer's connection.
pub const WRITER_NAME: &str = "eventfeed-writer";

/// A request's answer.
enum Answer {
    Append(Result<Vec<AppendOutcome>, StoreError>),
    Delete(Result<(), StoreError>),
}

impl Writer {
    /// A writer connecting with `config`, named [`WRITER_NAME`], its
    /// session's `synchronous_commit` set by `durability`: `on` for `fsync`
    /// and `flush` (nothing cheaper survives a crash of the database's
    /// process), `off` for `none`; with generic plans and sequential
    /// scans disabled (below), and [`IDLE_IN_TRANSACTION_MS`]. Set once
    /// per connection rather than per transaction, which would cost each
    /// batch a round trip.
    ///
    /// Plans: every statement of the writer is prepared once and planned
    /// once (`plan_cache_mode=force_generic_plan`). Planning each batch's
    /// statements for their parameters took 16 % of the writer's backend
    /// at 64 clients (perf); none of them has a better plan for other
    /// parameters. A generic plan is costed from the tables' statistics of
    /// its moment, and a new database's are those of empty tables: once,
    /// the id lookup got a hash join over a sequential scan of
    /// `event_ids`, kept while the table grew until an autovacuum's analyze
    /// (4.7 ms per batch and growing). So the session disables sequential
    /// scans (`enable_seqscan=off`: costed out, never chosen where an index
    /// serves) and each lookup is written as probes of a primary key
    /// ([`super::staging::IDS_QUERY`]): the plan is right at any size.
    pub(super) fn new(
        config: &tokio_postgres::Config,
        tls: Tls,
        projected: Projected,
        durability: Durability,
        publisher: Arc<Publisher>,
    ) -> Self {
        let synchronous_commit = match durability {
            Durability::Fsync | Durability::Flush => "on",
            Durability::None => "off",
        };
        let setting = format!(
            "-c synchronous_commit={synchronous_commit} -c plan_cache_mode=force_generic_plan -c enable_seqscan=off \
             -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        );
        let mut config = connection::with_options(config, &setting);
        config.application_name(WRITER_NAME);
        Self {
            config,
            tls,
            client: None,
            prepared: Prepared::default(),
            projected,
            publisher,
            retry_build_at: None,
            build_log: build::BuildLog::default(),
        }
    }

    /// Takes batches until every sender is gone (the store closed).
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // The command that would have taken a batch past its bytes: the
        // first of the next one.
        let mut carried = None;
        let mut building = self.publisher.building.subscribe();
        loop {
            let first = match carried.take() {
                Some(command) => command,
                None => match self.next_command(&mut commands, &mut building).await {
                    Some(command) => command,
                    None => return,
                },
            };
            let mut bytes = first.bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let Ok(command) = commands.try_recv() else { break };
                bytes += command.bytes();
                if bytes > MAX_BATCH_BYTES {
                    carried = Some(command);
                    break;
                }
                batch.push(command);
            }
            self.commit(batch).await;
            // A step after every batch, so that a build finishes however
            // busy the server is.
            if self.may_build() {
                self.build_step().await;
            }
        }
    }

    /// The next command; while it waits and a build runs, the build's
    /// steps.
    async fn next_command(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        building: &mut watch::Receiver<Projections>,
    ) -> Option<Command> {
        loop {
            if self.may_build() {
                match commands.try_recv() {
                    Ok(command) => return Some(command),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {
                        self.build_step().await;
                        continue;
                    }
                }
            }
            let retry = self.retry_build_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                command = commands.recv() => return command,
                // A build another server started, heard by the listener.
                Ok(()) = building.changed() => {}
                () = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {}
            }
        }
    }

    /// Whether a build runs and this writer may take its next step.
    fn may_build(&self) -> bool {
        *self.publisher.building.borrow() != Projections::NONE
            && self.retry_build_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Takes one step of the build the head records (see [`build`]).
    async fn build_step(&mut self) {
        let started = Instant::now();
        let result = match self.connect().await {
            Ok(()) => {
                let Some(client) = self.client.as_mut() else { return };
                let prepared = &self.prepared;
                let work = async {
                    let result = build::step(client, prepared).await;
                    if result.is_err() && !client.is_closed() {
                        let _ = client.batch_execute("ROLLBACK").await;
                    }
                    result
                };
                tokio::time::timeout(connection::ANSWER_DEADLINE, work)
                    .await
                    .unwrap_or_else(|_| Err(connection::no_answer(connection::ANSWER_DEADLINE)))
            }
            Err(error) => Err(error),
        };
        self.publisher.notifier.query_observed(DatabaseQuery::WriteTransaction, started.elapsed());
        let progress = match result {
            Ok(progress) => progress,
            Err(error) => {
                // Whatever the step did, the head says where the build is:
                // the next step, on any node, starts from there.
                tracing::warn!(%error, "a step of building projections failed; trying again");
                if matches!(error, StoreError::Unreachable(_) | StoreError::OutcomeUnknown(_)) {
                    self.client = None;
                    self.note_outage(&error);
                }
                self.retry_build_at = Some(Instant::now() + BUILD_RETRY);
                return;
            }
        };
        self.retry_build_at = None;
        self.learn(progress.projected);
        if let Some((head, touched)) = &progress.committed {
            self.publisher.notifier.advance(*head);
            let states = self.publisher.notifier.recent_states();
            match touched {
                Some(names) => states.forget(names.iter().map(String::as_str)),
                None => states.forget_all(),
            }
            self.publisher.publish(*head, touched.as_deref());
        }
        self.build_log.record(&progress);
    }

    /// Takes what the head said of the projections.
    fn learn(&mut self, projected: Projected) {
        self.projected = projected;
        let building = projected.building;
        self.publisher.building.send_if_modified(|known| std::mem::replace(known, building) != building);
    }

    /// Connects the writer if it has no connection.
    async fn connect(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            match connect(&self.config, &self.tls).await.map_err(db_error) {
                Ok(client) => self.client = Some(client),
                Err(error) => {
                    self.note_outage(&error);
                    return Err(error);
                }
            }
            self.prepared = Prepared::default();
        }
        Ok(())
    }

    async fn commit(&mut self, batch: Vec<Command>) {
        let mut requests = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for command in batch {
            match command {
                Command::Append { appends, multi, reply } => {
                    requests.push(Request::Append(appends, multi));
                    replies.push(Reply::Append(reply));
                }
                Command::Delete { stream, expected, hard, reply } => {
                    requests.push(Request::Delete(stream, expected, hard));
                    replies.push(Reply::Delete(reply));
                }
            }
        }
        let appends = requests.iter().filter(|request| matches!(request, Request::Append(..))).count();
        let started = Instant::now();
        match self.transact(&requests).await {
            Ok((answers, committed)) => {
                let duration = started.elapsed();
                if let Some((head, touched, _)) = &committed {
                    // Reads see the head, and kept pages the streams'
                    // new states, before anybody hears of the commit.
                    self.publisher.notifier.advance(*head);
                    self.publisher.notifier.recent_states().forget(touched.iter().map(String::as_str));
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    reply.send(answer);
                }
                if let Some((head, touched, events)) = committed {
                    self.publisher.publish(head, Some(&touched));
                    // After the answers and the wake-ups, as the sled
                    // writer does.
                    self.publisher.notifier.commit_observed(CommitFigures { appends, events, duration });
                }
            }
            Err(error @ StoreError::OutcomeUnknown(_)) => {
                tracing::error!(%error, requests = replies.len(), "a PostgreSQL commit was cut off; whether it stands is unknown");
                self.publisher.notifier.recent_states().forget_all();
                for reply in replies {
                    reply.fail(error.clone());
                }
            }
            Err(error) => {
                tracing::warn!(%error, requests = replies.len(), "a PostgreSQL commit failed; nothing of it was written");
                for reply in replies {
                    reply.fail(error.clone());
                }
            }
        }
    }

    /// Runs one batch's transaction: the answers, in the requests' order,
    /// and the new head with the streams touched if anything was written.
    async fn transact(
        &mut self,
        requests: &[Request],
    ) -> Result<(Vec<Answer>, Option<Committed>), StoreError> {
        // A batch read with other projections than the head now says is
        // read again (another server changed them): at most a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.transact_once(requests).await? {
                (Outcome::Stale, projected) if attempts < 4 => self.learn(projected),
                (Outcome::Stale, _) => {
                    return Err(StoreError::Busy("the projections changed under every attempt".into()));
                }
                (Outcome::Done(answers, committed), projected) => {
                    self.learn(projected);
                    return Ok((answers, committed));
                }
            }
        }
    }

    async fn transact_once(&mut self, requests: &[Request]) -> Result<(Outcome, Projected), StoreError> {
        self.connect().await?;
        let Some(client) = self.client.as_mut() else { return Err(StoreError::Unavailable) };
        let started = Instant::now();
        // A database that does not answer (see `connection`): the batch is
        // abandoned with its connection, whose transaction PostgreSQL then
        // rolls back, unless its COMMIT was already on its way.
        let commit_sent = AtomicBool::new(false);
        let work = run_transaction(client, &self.prepared, requests, self.projected, &commit_sent);
        let result = match tokio::time::timeout(connection::ANSWER_DEADLINE, work).await {
            Ok(result) => result,
            Err(_) if commit_sent.load(Ordering::Acquire) => Err(StoreError::OutcomeUnknown(format!(
                "the database did not answer the commit within {} s",
                connection::ANSWER_DEADLINE.as_secs()
            ))),
            Err(_) => Err(connection::no_answer(connection::ANSWER_DEADLINE)),
        };
        self.publisher.notifier.query_observed(DatabaseQuery::WriteTransaction, started.elapsed());
        match &result {
            Err(error @ (StoreError::Unreachable(_) | StoreError::OutcomeUnknown(_))) => {
                self.client = None;
                self.note_outage(error);
            }
            _ => self.publisher.outage.back(),
        }
        result
    }

    /// Records that the database was lost (the connection is gone).
    fn note_outage(&self, error: &StoreError) {
        if let StoreError::Unreachable(why) | StoreError::OutcomeUnknown(why) = error {
            self.publisher.outage.lost(why);
        }
    }
}

/// What a transaction that wrote something leaves: the new head, the
/// streams it touched and how many events it wrote.
type Committed = (Head, Vec<String>, u64);

/// Where a request's answer goes.
enum Reply {
    Append(tokio::sync::oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>),
    Delete(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    fn send(self, answer: Answer) {
        // A caller that went away (its client disconnected) needs no answer.
        match (self, answer) {
            (Self::Append(reply), Answer::Append(answer)) => drop(reply.send(answer)),
            (Self::Delete(reply), Answer::Delete(answer)) => drop(reply.send(answer)),
            (reply, _) => reply.fail(StoreError::Io("the writer mixed up its answers".into())),
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Self::Append(reply) => drop(reply.send(Err(error))),
            Self::Delete(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// Locks the head and reads the next position, the commit sequence, the
/// newest creation time, the database's clock and the projections.
const LOCK_HEAD: &str = "SELECT next_position, commit_seq, last_created_micros, \
     (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint, projections, building FROM log_head FOR UPDATE";

/// What a batch's transaction came to.
enum Outcome {
    /// The answers, in the requests' order, and the new head with the
    /// streams touched if anything was written.
    Done(Vec<Answer>, Option<Committed>),
    /// Nothing: the head maintains a projection the batch's lookups left
    /// out. Rolled back, to be run again.
    Stale,
}

/// Runs one batch's transaction (see [`transaction`]); if it failed, ends
/// whatever the session was left in (an open or aborted transaction), so
/// the next batch starts from none.
async fn run_transaction(
    client: &mut Client,
    prepared: &Prepared,
    requests: &[Request],
    projected: Projected,
    commit_sent: &AtomicBool,
) -> Result<(Outcome, Projected), StoreError> {
    let result = transaction(client, prepared, requests, projected, commit_sent).await;
    if result.is_err() && !client.is_closed() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// One batch's transaction, in three round trips once its statements are
/// prepared: `BEGIN`, the head lock and both lookups, pipelined (the
/// session runs them in order, so the lookups read the states as of the
/// lock); the writes, the head's move and the notification, pipelined;
/// `COMMIT`. (`tokio_postgres::Transaction` would wait for its `BEGIN`.)
async fn transaction(
    client: &Client,
    prepared: &Prepared,
    requests: &[Request],
    projected: Projected,
    commit_sent: &AtomicBool,
) -> Result<(Outcome, Projected), StoreError> {
    // IMPORTANT: every statement of the first flight is prepared before it
    // is sent: one prepared meanwhile would reach the session after the
    // statements polled after it, and the lookups could run before the lock.
    let lock_head = prepared.get(client, LOCK_HEAD).await.map_err(db_error)?;
    let states_query = prepared.get(client, &staging::states_query()).await.map_err(db_error)?;
    let ids_query = prepared.get(client, staging::IDS_QUERY).await.map_err(db_error)?;
    let lookups = Staging::lookups(projected.maintained, requests);
    // Polled together, in this order: sent without waiting for each
    // other's answers, run by the session in the order sent.
    let ((), head, states, numbers) = tokio::try_join!(
        async { client.batch_execute("BEGIN").await.map_err(db_error) },
        async { client.query_one(&lock_head, &[]).await.map_err(db_error) },
        async { client.query(&states_query, &[&lookups.names]).await.map_err(db_error) },
        async { client.query(&ids_query, &[&lookups.id_streams, &lookups.ids]).await.map_err(db_error) },
    )?;
    let (next_position, commit_seq) = (unsigned(head.get(0)), unsigned(head.get(1)));
    let found = Projected::from_columns(head.get(4), head.get(5))?.unwrap_or(projected);
    if !covers(projected.maintained, found.maintained) {
        client.batch_execute("ROLLBACK").await.map_err(db_error)?;
        return Ok((Outcome::Stale, found));
    }
    let created_micros = head.get::<_, i64>(3).max(head.get(2));
    let mut staging = Staging::new(found.maintained, next_position, created_micros);
    staging.load(lookups, states, numbers);

    let answers: Vec<Answer> = requests
        .iter()
        .map(|request| match request {
            Request::Append(appends, false) => {
                Answer::Append(staging.append(&appends[0]).map(|one| vec![one]))
            }
            Request::Append(appends, true) => Answer::Append(staging.append_all(appends)),
            Request::Delete(stream, expected, hard) => {
                Answer::Delete(staging.delete(stream, *expected, *hard))
            }
        })
        .collect();
    if staging.touched.is_empty() {
        // Nothing to write: retries, refusals. Ends the transaction (and
        // the head lock) at once.
        client.batch_execute("ROLLBACK").await.map_err(db_error)?;
        return Ok((Outcome::Done(answers, None), found));
    }
    let head = Head { next_position: staging.next_position, commit_seq: commit_seq + 1 };
    let events = staging.next_position.saturating_sub(next_position);
    let touched: Vec<String> = staging.touched.iter().cloned().collect();
    let payload = super::listen::payload(head, &touched);
    let (next_position, seq) = (signed(head.next_position), signed(head.commit_seq));
    let move_head = async {
        let statement = prepared
            .get(client, "UPDATE log_head SET next_position = $1, commit_seq = $2, last_created_micros = $3")
            .await
            .map_err(db_error)?;
        client.execute(&statement, &[&next_position, &seq, &staging.created_micros]).await.map_err(db_error)
    };
    let notify = async {
        let statement = prepared.get(client, "SELECT pg_notify($1, $2)").await.map_err(db_error)?;
        client.execute(&statement, &[&CHANNEL, &payload]).await.map_err(db_error)
    };
    // Polled together, the statements are pipelined: sent without waiting
    // for each other's answers. All are answered before the `COMMIT`.
    tokio::try_join!(staging.write(client, prepared), move_head, notify)?;
    commit_sent.store(true, Ordering::Release);
    client.batch_execute("COMMIT").await.map_err(|error| match db_error(error) {
        // IMPORTANT: the connection was lost after COMMIT was sent, so
        // whether the batch stands is unknown: never answered as written,
        // nor as refused. A retry with the same ids is answered with the
        // original outcome if it stood (ids are spent forever), and written
        // if it did not. The head is learnt again by the next batch (which
        // locks it) and by the listener (which reads it on reconnecting).
        StoreError::Unreachable(why) => {
            StoreError::OutcomeUnknown(format!("the connection was lost during the commit: {why}"))
        }
        other => other,
    })?;
    Ok((Outcome::Done(answers, Some((head, touched, events))), found))
}

/// Whether lookups made for `read` read every state `needed` links need.
fn covers(read: Projections, needed: Projections) -> bool {
    Projection::ALL
        .into_iter()
        .all(|projection| read.is_enabled(projection) || !needed.is_enabled(projection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_read_again_only_when_the_head_links_more_than_it_looked_up() {
        let all = Projections::default();
        let streams_only = Projections { by_category: false, by_event_type: false, streams: true };
        assert!(covers(all, all));
        // Turned off elsewhere: the lookups read a state more, no harm.
        assert!(covers(all, streams_only));
        assert!(covers(streams_only, Projections::NONE));
        // Turned on elsewhere: the states of its streams were not read.
        assert!(!covers(streams_only, all));
        assert!(!covers(Projections::NONE, streams_only));
    }
}
