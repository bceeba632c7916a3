//! Wake-ups across nodes: every commit calls `pg_notify` with its new head
//! and the streams it touched ([`payload`]), and one `LISTEN` connection
//! per store hands what it hears to the [`Publisher`], which wakes the
//! waiters. A commit of this node is usually published by its writer
//! first; the publisher publishes each commit once, whoever is first.
//!
//! Nothing is missed: after every (re)connection, and every
//! [`SAFETY_POLL`] besides, the listener reads the head, and a head newer
//! than the one published wakes every waiter (who read again). A payload
//! too large for `NOTIFY` says "every stream" the same way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};

use super::connection::Tls;
use super::{CHANNEL, Publisher};
use crate::store::Head;
use crate::store::projections::Projections;

/// How often the head is read even when nothing was heard: a bound on how
/// long a wake-up lost without a broken connection (which PostgreSQL does
/// not do, but proxies might) can go unnoticed.
const SAFETY_POLL: Duration = Duration::from_secs(5);

/// The largest `pg_notify` payload PostgreSQL takes is just under 8000
/// bytes; a commit touching more streams than fit says "every stream".
const MAX_PAYLOAD: usize = 7_900;

/// The `application_name` of the listener's connection.
pub const LISTENER_NAME: &str = "eventfeed-listener";

/// The longest wait between attempts while the database stays away.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// How long to wait before connecting again after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The notification of a commit: `[next_position, commit_seq, [streams…]]`
/// in JSON (names escaped, whatever they hold), or with `null` for the
/// streams when they would not fit PostgreSQL's 8000-byte limit.
pub(super) fn payload(head: Head, streams: &[String]) -> String {
    let full = serde_json::json!([head.next_position, head.commit_seq, streams]).to_string();
    if full.len() <= MAX_PAYLOAD {
        return full;
    }
    payload_every(head)
}

/// The notification of a commit that may have changed any stream.
pub(super) fn payload_every(head: Head) -> String {
    serde_json::json!([head.next_position, head.commit_seq, null]).to_string()
}

/// Reads a [`payload`]: the head, and the streams (`None`: every stream).
fn parse(payload: &str) -> Option<(Head, Option<Vec<String>>)> {
    let Value::Array(parts) = serde_json::from_str(payload).ok()? else { return None };
    let [next_position, commit_seq, streams] = parts.as_slice() else { return None };
    let head = Head { next_position: next_position.as_u64()?, commit_seq: commit_seq.as_u64()? };
    let streams = match streams {
        Value::Array(names) => {
            Some(names.iter().map(|name| name.as_str().map(str::to_owned)).collect::<Option<_>>()?)
        }
        _ => None,
    };
    Some((head, streams))
}

/// Listens until `shutdown` says so, reconnecting after any failure.
pub(super) async fn run(
    mut config: tokio_postgres::Config,
    tls: Tls,
    publisher: Arc<Publisher>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Named, so that an operator (or a test) can tell it apart in
    // `pg_stat_activity`.
    config.application_name(LISTENER_NAME);
    let mut delay = RECONNECT_DELAY;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut listened = false;
        tokio::select! {
            ended = listen(&config, &tls, &publisher, &mut listened) => {
                if let Err(error) = ended {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "the PostgreSQL listener has no connection");
                    publisher.outage.lost(&super::schema::error_text(&error));
                }
            }
            _ = shutdown.changed() => return,
        }
        // A connection that listened starts the delays over; one that
        // never did (the database is away) doubles them, up to a bound.
        if listened {
            delay = RECONNECT_DELAY;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if !listened {
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }
}

/// One connection's life: `LISTEN`, catch up, then publish what is heard
/// until the connection fails.
/// `listened` is set once `LISTEN` took.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &Tls,
    publisher: &Publisher,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut hearing, driver) = match tls {
        Tls::Plain => config.connect(NoTls).await.map(|(client, connection)| forward(client, connection))?,
        Tls::Verified(tls) => {
            config.connect(tls.clone()).await.map(|(client, connection)| forward(client, connection))?
        }
    };
    let listening = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        *listened = true;
        // Every commit from now on is heard: recent states may be kept.
        publisher.notifier.recent_states().set_hearing(true);
        loop {
            // After connecting, and now and then: whatever commits this
            // connection did not hear of wake everybody.
            catch_up(&client, publisher).await?;
            // The database answers: if it was away, it is back.
            publisher.outage.back();
            let deadline = tokio::time::sleep(SAFETY_POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    payload = hearing.recv() => match payload {
                        Some(payload) => match parse(&payload) {
                            Some((head, streams)) => {
                                // Whatever the head's order: the publisher
                                // skips a head older than one published.
                                let states = publisher.notifier.recent_states();
                                match &streams {
                                    Some(names) => states.forget(names.iter().map(String::as_str)),
                                    None => states.forget_all(),
                                }
                                publisher.publish(head, streams.as_deref());
                            }
                            None => {
                                tracing::warn!(%payload, "an unreadable commit notification");
                                publisher.notifier.recent_states().forget_all();
                            }
                        },
                        None => return client.batch_execute("SELECT 1").await,
                    },
                    () = &mut deadline => break,
                }
            }
        }
    };
    let ended = listening.await;
    publisher.notifier.recent_states().set_hearing(false);
    driver.abort();
    ended
}

/// Drives `connection` in the background and forwards its notifications
/// (their payloads); it ends, and what it forwards to closes, when the
/// connection fails.
fn forward<S, T>(client: Client, mut connection: Connection<S, T>) -> (Client, Hearing, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (heard, hearing) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if heard.send(notification.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "the PostgreSQL listener's connection failed");
                    return;
                }
            }
        }
    });
    (client, hearing, driver)
}

/// The notifications' payloads, as [`forward`] passes them on.
type Hearing = mpsc::UnboundedReceiver<String>;

/// Publishes the database's head, waking every stream, if it is newer
/// than the head published (forgetting every recent state, whatever the
/// head: commits may have gone unheard); and notes the database's size (`/info`,
/// `/metrics`) on the way.
async fn catch_up(
    client: &tokio_postgres::Client,
    publisher: &Publisher,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT next_position, commit_seq, pg_database_size(current_database()), building FROM log_head",
            &[],
        )
        .await?;
    let head = Head {
        next_position: u64::try_from(row.get::<_, i64>(0)).unwrap_or_default(),
        commit_seq: u64::try_from(row.get::<_, i64>(1)).unwrap_or_default(),
    };
    let size = u64::try_from(row.get::<_, i64>(2)).unwrap_or_default();
    publisher.size_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
    // A build another server started: this node's writer takes steps too,
    // and its `/info` says so.
    if let Ok(building) = Projections::from_words(row.get(3)) {
        publisher.building.send_if_modified(|known| std::mem::replace(known, building) != building);
    }
    publisher.notifier.recent_states().forget_all();
    publisher.publish(head, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_the_head_and_the_streams_or_say_every_stream() {
        let head = Head { next_position: 7, commit_seq: 3 };
        let streams = vec!["a".to_owned(), "we\"ird\nname".to_owned()];
        assert_eq!(parse(&payload(head, &streams)), Some((head, Some(streams))));
        let many: Vec<String> = (0..2_000).map(|n| format!("stream-{n}")).collect();
        let big = payload(head, &many);
        assert!(big.len() < 8_000);
        assert_eq!(parse(&big), Some((head, None)));
        assert_eq!(parse("nonsense"), None);
    }
}
