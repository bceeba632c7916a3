//! How the store connects to PostgreSQL: the connection settings, TLS
//! ([`Tls`]: `sslmode=require`, the server's certificate verified), and
//! how long it waits for the database.
//!
//! A database that stops answering without closing its connections: a
//! network partition, a host or a disk that hangs, a frozen process. A
//! closed connection fails at once; a silent one would hold an append or a
//! read for as long as the system's TCP timeouts (retransmissions give up
//! after about 15 minutes on Linux) and every request behind it too.
//!
//! Two guards:
//!
//! - **The sockets** ([`harden`]): unless the connection string says
//!   otherwise, TCP keepalives probe an idle connection after 10 s and
//!   every 5 s, giving up after 3 unanswered; and `TCP_USER_TIMEOUT`
//!   drops a connection whose sent data is unacknowledged for 20 s. A
//!   host gone or cut off then fails the connection, which the store
//!   already treats as a lost database.
//! - **The requests** ([`within`]): a database host that still acknowledges
//!   at the TCP level but does not answer (a frozen process, a disk that
//!   hangs under it) is caught by a deadline on each interactive statement:
//!   [`ANSWER_DEADLINE`] ([`LOST_DEADLINE`] for reads while the database
//!   is known lost). A read past it answers `503`; a write batch past
//!   it too, its connection dropped, as "nothing was written" when its
//!   `COMMIT` had not been sent and as "whether it stands is unknown" when
//!   it had (see `writer`). Bulk work (an import, a scavenge) is not bound
//!   by it: its steps may rightly take longer.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How long a connection may take to open, unless the connection string
/// says (`connect_timeout`): an unreachable database fails a start, an
/// append or a read in this time instead of the system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection settings of `url`, with the guards it leaves unset:
/// [`CONNECT_TIMEOUT`] and [`harden`]'s.
pub fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|error| StoreError::Invalid(format!("not a PostgreSQL connection string: {error}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    harden(&mut config);
    Ok(config)
}

/// How the store's connections talk to PostgreSQL: in the clear, or over
/// TLS when the connection string says `sslmode=require`.
///
/// Over TLS the server's certificate is always verified, against the CAs
/// of `--store-ca` or else the system's, and must name the host connected
/// to (libpq's `verify-full`; its `require` checks nothing). `prefer`,
/// tokio-postgres's default, stays in the clear: it would otherwise try
/// TLS first and fail on the many servers whose certificate no CA signed
/// (Debian's clusters come with a self-signed one), where it connects today.
#[derive(Clone)]
pub enum Tls {
    Plain,
    Verified(MakeRustlsConnect),
}

impl Tls {
    /// The TLS for `config`, with the CAs of `ca_file` if given.
    pub fn for_config(config: &tokio_postgres::Config, ca_file: Option<&Path>) -> Result<Self, StoreError> {
        if config.get_ssl_mode() != SslMode::Require {
            return match ca_file {
                Some(_) => Err(StoreError::Invalid(
                    "--store-ca is for TLS to the database: add sslmode=require to the connection string"
                        .into(),
                )),
                None => Ok(Self::Plain),
            };
        }
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let unreadable = |error: rustls_pki_types::pem::Error| {
                    StoreError::Invalid(format!("--store-ca {}: {error}", path.display()))
                };
                for certificate in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
                    let added = roots.add(certificate.map_err(unreadable)?);
                    added.map_err(|error| {
                        StoreError::Invalid(format!("--store-ca {}: {error}", path.display()))
                    })?;
                }
            }
            None => {
                let (added, _) =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(StoreError::Invalid(
                        "sslmode=require, but this system has no CA certificates: give the database's CA with \
                         --store-ca"
                            .into(),
                    ));
                }
            }
        }
        if roots.is_empty() {
            return Err(StoreError::Invalid(
                "--store-ca: no certificate in it (a PEM `BEGIN CERTIFICATE` block)".into(),
            ));
        }
        // ring, as for HTTPS (see `server::tls`).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| StoreError::Invalid(format!("TLS to the database: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::Verified(MakeRustlsConnect::new(config)))
    }

    /// The readers' pool's connection manager.
    pub fn manager(&self, config: tokio_postgres::Config) -> deadpool_postgres::Manager {
        let fast =
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
        match self {
            Self::Plain => deadpool_postgres::Manager::from_config(config, NoTls, fast),
            Self::Verified(tls) => deadpool_postgres::Manager::from_config(config, tls.clone(), fast),
        }
    }
}

/// Connects one client and drives its connection in the background.
pub async fn connect(config: &tokio_postgres::Config, tls: &Tls) -> Result<Client, tokio_postgres::Error> {
    match tls {
        Tls::Plain => config.connect(NoTls).await.map(|(client, connection)| drive(client, connection)),
        Tls::Verified(tls) => {
            config.connect(tls.clone()).await.map(|(client, connection)| drive(client, connection))
        }
    }
}

/// `client`, its connection driven in the background until it ends,
/// whatever its stream.
fn drive<S, T>(client: Client, connection: Connection<S, T>) -> Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a PostgreSQL connection ended");
        }
    });
    client
}

/// Where a connection string points, without its password, for logs.
pub fn describe(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|host| match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!("postgres {} database {}", hosts.join(","), config.get_dbname().unwrap_or("(default)"))
        }
        Err(_) => "postgres (an unreadable connection string)".to_owned(),
    }
}

/// The longest an interactive statement (a page, a state, a write batch)
/// waits for the database's answer. Far above what a healthy database
/// takes even for the largest batch (32 MiB), far below the system's
/// TCP timeouts.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Keepalive probes and the unacknowledged-data timeout, for connection
/// strings that do not set their own (`keepalives_idle`,
/// `keepalives_interval`, `keepalives_retries`, `tcp_user_timeout`).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// tokio-postgres's `keepalives_idle` when the string does not set it.
const LIBRARY_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Sets the socket guards the connection string leaves unset.
pub fn harden(config: &mut tokio_postgres::Config) {
    if config.get_keepalives_idle() == LIBRARY_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
}

/// The pool of the reads' connections, at most [`READ_CONNECTIONS`].
///
/// Their statements run on generic plans, planned once per connection. On
/// PostgreSQL's default (`plan_cache_mode=auto`), a page's statement
/// estimated its generic plan at ten times a custom one's once
/// `link_runs` held one system stream's 100,000 runs, and so was planned
/// again on every read: 0.3-0.4 ms of planning for 0.3 ms of execution
/// (EXPLAIN, by hand), the same index scans either way; only the guesses
/// of the ranges' sizes differ.
///
/// A request waits for a free connection no longer than for an answer:
/// with every connection held by a silent database it answers 503, as the
/// statements holding them will.
pub fn read_pool(config: &tokio_postgres::Config, tls: &Tls) -> Result<deadpool_postgres::Pool, StoreError> {
    let manager = tls.manager(with_options(config, "-c plan_cache_mode=force_generic_plan"));
    deadpool_postgres::Pool::builder(manager)
        .max_size(READ_CONNECTIONS)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(ANSWER_DEADLINE))
        .build()
        .map_err(|error| StoreError::Io(format!("PostgreSQL pool: {error}")))
}

/// How many connections reads may hold at once (the writer and the
/// listener have one each besides).
pub const READ_CONNECTIONS: usize = 16;

/// `config` with the session settings `settings` (`-c name=value …`)
/// after those the connection string gives.
pub fn with_options(config: &tokio_postgres::Config, settings: &str) -> tokio_postgres::Config {
    let mut config = config.clone();
    let options = match config.get_options() {
        Some(given) => format!("{given} {settings}"),
        None => settings.to_owned(),
    };
    config.options(&options);
    config
}

/// The deadline of a read while the database is known to be lost: a
/// request that asks it several things (a state, a page, the state again
/// for the access check) is not held for each one's full deadline, and a
/// database back (it answers in milliseconds) is still read.
pub const LOST_DEADLINE: Duration = Duration::from_secs(1);

/// `work` if the database answers within [`ANSWER_DEADLINE`] (within
/// [`LOST_DEADLINE`] when it is known to be `lost`); else the database
/// counts as unreachable (nothing was written: for reads, and for writes
/// that had not committed).
pub async fn within<T>(
    work: impl Future<Output = Result<T, StoreError>>,
    lost: bool,
) -> Result<T, StoreError> {
    let deadline = if lost { LOST_DEADLINE } else { ANSWER_DEADLINE };
    tokio::time::timeout(deadline, work).await.unwrap_or_else(|_| Err(no_answer(deadline)))
}

/// The error of a database that did not answer within `deadline`.
pub fn no_answer(deadline: Duration) -> StoreError {
    StoreError::Unreachable(format!("the database did not answer within {} s", deadline.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_string_wins_over_the_defaults() {
        let mut unset = tokio_postgres::Config::from_str("postgres://u@localhost/db").unwrap();
        harden(&mut unset);
        assert_eq!(unset.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(unset.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(unset.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert_eq!(unset.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));

        let given = "postgres://u@localhost/db?keepalives_idle=30&keepalives_interval=7\
                     &keepalives_retries=9&tcp_user_timeout=60";
        let mut set = tokio_postgres::Config::from_str(given).unwrap();
        harden(&mut set);
        assert_eq!(set.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(set.get_keepalives_interval(), Some(Duration::from_secs(7)));
        assert_eq!(set.get_keepalives_retries(), Some(9));
        assert_eq!(set.get_tcp_user_timeout(), Some(&Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_statement_without_an_answer_is_the_database_unreachable() {
        let answered = within(async { Ok::<_, StoreError>(7) }, false).await;
        assert!(matches!(answered, Ok(7)));
        for (lost, deadline) in [(false, ANSWER_DEADLINE), (true, LOST_DEADLINE)] {
            let started = tokio::time::Instant::now();
            let silent = within(std::future::pending::<Result<(), StoreError>>(), lost).await;
            assert!(matches!(silent, Err(StoreError::Unreachable(why)) if why.contains("did not answer")));
            assert_eq!(started.elapsed(), deadline, "lost: {lost}");
        }
    }
}
