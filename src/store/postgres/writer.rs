//! The writer: group commit on PostgreSQL. One task per store takes every
//! request waiting (up to [`MAX_BATCH`]) and commits them as one
//! transaction:
//!
//! 1. lock the head (`SELECT … FROM log_head FOR UPDATE`), reading the
//!    next position and the database's clock: from here on no other
//!    batch, on any node, commits until this one has, so every state read
//!    below is the latest and positions are assigned in commit order;
//! 2. read the states of every stream the batch may touch and the numbers
//!    its event ids already have, in two queries;
//! 3. check and stage each request in order against those facts and what
//!    the batch staged before it ([`Staging`](super::staging), with the shared rules of
//!    [`rules::check_append`]); a refused request stages nothing;
//! 4. write everything staged with one multi-row statement per table,
//!    move the head, `pg_notify` the new head and the streams touched,
//!    and commit.
//!
//! Only then are the requests answered. If the transaction fails, every
//! request of the batch gets the error and nothing of it is written; the
//! next batch reconnects if the connection was lost.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::staging::{Request, Staging};
use super::{CHANNEL, Command, Publisher, connect, db_error, signed, unsigned};
use crate::store::projections::Projections;
use crate::store::{AppendOutcome, CommitFigures, Durability, Head, StoreError};

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
    /// The writer's own connection; `None` before the first batch and
    /// after it was lost, until the next batch connects.
    client: Option<Client>,
    projections: Projections,
    publisher: Arc<Publisher>,
}

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
    /// process), `off` for `none`. Set once per connection rather than per
    /// transaction, which would cost each batch a round trip.
    pub(super) fn new(
        config: &tokio_postgres::Config,
        projections: Projections,
        durability: Durability,
        publisher: Arc<Publisher>,
    ) -> Self {
        let mut config = config.clone();
        config.application_name(WRITER_NAME);
        let synchronous_commit = match durability {
            Durability::Fsync | Durability::Flush => "on",
            Durability::None => "off",
        };
        let setting = format!("-c synchronous_commit={synchronous_commit}");
        let options = match config.get_options() {
            Some(given) => format!("{given} {setting}"),
            None => setting,
        };
        config.options(&options);
        Self { config, client: None, projections, publisher }
    }

    /// Takes batches until every sender is gone (the store closed).
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // The command that would have taken a batch past its bytes: the
        // first of the next one.
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(command) => command,
                None => match commands.recv().await {
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
        }
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
                if let Some((head, _, events)) = &committed {
                    // Reads see the head before anybody hears of the commit.
                    self.publisher.notifier.advance(*head);
                    let figures = CommitFigures { appends, events: *events, duration: started.elapsed() };
                    self.publisher.notifier.commit_observed(figures);
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    reply.send(answer);
                }
                if let Some((head, touched, _)) = committed {
                    self.publisher.publish(head, Some(&touched));
                }
            }
            Err(error @ StoreError::OutcomeUnknown(_)) => {
                tracing::error!(%error, requests = replies.len(), "a PostgreSQL commit was cut off; whether it stands is unknown");
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
    /// and, if anything was written, the new head, the streams touched and
    /// the events written.
    async fn transact(&mut self, requests: &[Request]) -> Result<Transacted, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            match connect(&self.config).await.map_err(db_error) {
                Ok(client) => self.client = Some(client),
                Err(error) => {
                    self.note_outage(&error);
                    return Err(error);
                }
            }
        }
        let Some(client) = self.client.as_mut() else { return Err(StoreError::Unavailable) };
        let result = run_transaction(client, requests, self.projections).await;
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

/// A transaction's answers, and what it committed if it wrote anything:
/// the new head, the streams touched, the events written.
type Transacted = (Vec<Answer>, Option<(Head, Vec<String>, u64)>);

async fn run_transaction(
    client: &mut Client,
    requests: &[Request],
    projections: Projections,
) -> Result<Transacted, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let head = tx
        .query_one(
            "SELECT next_position, commit_seq, last_created_micros, \
             (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint FROM log_head FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_error)?;
    let (next_position, commit_seq) = (unsigned(head.get(0)), unsigned(head.get(1)));
    let staging_from = next_position;
    let created_micros = head.get::<_, i64>(3).max(head.get(2));
    let mut staging = Staging::new(projections, next_position, created_micros);
    staging.load(&tx, requests).await?;

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
        tx.rollback().await.map_err(db_error)?;
        return Ok((answers, None));
    }
    let head = Head { next_position: staging.next_position, commit_seq: commit_seq + 1 };
    let touched: Vec<String> = staging.touched.iter().cloned().collect();
    let payload = super::listen::payload(head, &touched);
    let (next_position, seq) = (signed(head.next_position), signed(head.commit_seq));
    let move_head = async {
        tx.execute(
            "UPDATE log_head SET next_position = $1, commit_seq = $2, last_created_micros = $3",
            &[&next_position, &seq, &staging.created_micros],
        )
        .await
        .map_err(db_error)
    };
    let notify =
        async { tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map_err(db_error) };
    // Polled together, the statements are pipelined: sent without waiting
    // for each other's answers.
    tokio::try_join!(staging.write(&tx), move_head, notify)?;
    tx.commit().await.map_err(|error| match db_error(error) {
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
    let events = head.next_position - staging_from;
    Ok((answers, Some((head, touched, events))))
}
