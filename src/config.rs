//! Command-line options. Every option is also an environment variable, and
//! every one is documented in `--help`: the defaults start a working server
//! with an embedded store and no set-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::store::projections::Projections;
use crate::store::sled::{DEFAULT_MIN_FREE_BYTES, SledStoreOptions};
use crate::store::{Durability, PostgresOptions, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "eventfeed",
    version,
    about = "An HTTP event store that serves every stream as a cacheable Atom or JSON feed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value, parsed once at start: boxing the server's options to make
// the other commands' variants smaller would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeConfig),
    /// Write a whole store as NDJSON (docs/moving.md), to move it to
    /// another backend or keep it; the store must not be in use.
    Export(ExportArgs),
    /// Load an export into an empty store of either backend, after
    /// checking the file's every line, counts and checksum.
    Import(ImportArgs),
    /// Copy a running server's store, consistent at one head position,
    /// into a new directory (docs/operations.md, Backup).
    Backup(BackupArgs),
    /// Check a backup: its export, its manifest, and its store.
    Verify(VerifyArgs),
}

/// Which store an export reads or an import writes: the same options, and
/// environment variables, as the server's.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `sled`, the embedded store in `--data-dir`, or a PostgreSQL
    /// connection string.
    #[arg(long, env = "EVENTFEED_STORE", default_value = "sled", hide_env_values = true, value_parser = store_choice)]
    pub store: String,
    /// PEM file of the CAs that sign the PostgreSQL server's certificate,
    /// checked over TLS (`sslmode=require` in the connection string, which
    /// also checks that the certificate names the host); without it, the
    /// system's CAs.
    #[arg(long, env = "EVENTFEED_STORE_CA", value_name = "PEM")]
    pub store_ca: Option<PathBuf>,
    /// Directory of the embedded store.
    #[arg(long, env = "EVENTFEED_DATA_DIR", default_value = "./eventfeed-data")]
    pub data_dir: PathBuf,
    /// As the server's: opening a store with other projections than it
    /// was maintained with would start rebuilding them.
    #[arg(long, env = "EVENTFEED_PROJECTION_BY_CATEGORY", default_value_t = true, action = ArgAction::Set)]
    pub projection_by_category: bool,
    #[arg(long, env = "EVENTFEED_PROJECTION_BY_EVENT_TYPE", default_value_t = true, action = ArgAction::Set)]
    pub projection_by_event_type: bool,
    #[arg(long, env = "EVENTFEED_PROJECTION_STREAMS", default_value_t = true, action = ArgAction::Set)]
    pub projection_streams: bool,
}

impl StoreArgs {
    /// Whether the store is the embedded one.
    pub fn is_sled(&self) -> bool {
        !is_postgres(&self.store)
    }

    pub fn store_config(&self) -> StoreConfig {
        let projections = Projections {
            by_category: self.projection_by_category,
            by_event_type: self.projection_by_event_type,
            streams: self.projection_streams,
        };
        if is_postgres(&self.store) {
            return StoreConfig::Postgres(PostgresOptions {
                url: self.store.clone(),
                durability: Durability::Fsync,
                projections,
                ca_file: self.store_ca.clone(),
            });
        }
        let mut options = SledStoreOptions::new(&self.data_dir);
        options.projections = projections;
        StoreConfig::Sled(options)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The file to write, `-` for standard output.
    #[arg(long, default_value = "-")]
    pub to: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The directory to make the backup in; it must not exist or be empty.
    #[arg(long)]
    pub to: PathBuf,
    /// The running server, `http://host:port`.
    #[arg(long, env = "EVENTFEED_BACKUP_SERVER", default_value = "http://127.0.0.1:2113")]
    pub server: String,
    /// `login:password` of a member of `$admins`.
    #[arg(long, env = "EVENTFEED_BACKUP_USER", hide_env_values = true)]
    pub user: String,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The backup's directory.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The export to load, `-` for standard input (then it cannot be
    /// checked before it is loaded: a bad line stops the import there).
    #[arg(long)]
    pub from: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The store: `sled`, the embedded store in `--data-dir`, or a
    /// PostgreSQL connection string (`postgres://user:password@host/db`,
    /// or libpq's `key=value` pairs), whose database eventfeed creates its
    /// tables in at start (needs the `postgres` build feature).
    #[arg(long, env = "EVENTFEED_STORE", default_value = "sled", hide_env_values = true, value_parser = store_choice)]
    pub store: String,
    /// PEM file of the CAs that sign the PostgreSQL server's certificate,
    /// checked over TLS (`sslmode=require` in the connection string, which
    /// also checks that the certificate names the host); without it, the
    /// system's CAs.
    #[arg(long, env = "EVENTFEED_STORE_CA", value_name = "PEM")]
    pub store_ca: Option<PathBuf>,
    /// Directory of the embedded store; created if missing.
    #[arg(long, env = "EVENTFEED_DATA_DIR", default_value = "./eventfeed-data")]
    pub data_dir: PathBuf,

    /// Address and port to listen on.
    #[arg(long, env = "EVENTFEED_BIND", default_value = "127.0.0.1:2113")]
    pub bind: SocketAddr,

    /// Where the other servers sharing this PostgreSQL database reach this
    /// one (`http://node1.internal:2113`): the server that runs the
    /// persistent subscriptions is called there by the others, which
    /// forward subscription requests to it. Default: `http://` and the
    /// address bound, which only works when that is not 0.0.0.0 or ::.
    #[arg(long, env = "EVENTFEED_ADVERTISE_URL", value_parser = advertise_url)]
    pub advertise_url: Option<String>,

    /// The password of the built-in `admin` account, set when the store is
    /// first opened (without it: v5's default, `changeit`, with a warning at
    /// every start until changed). Ignored once the account exists: change
    /// it with `POST /users/admin/command/reset-password`.
    #[arg(long, env = "EVENTFEED_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// PEM file of the TLS certificate chain, leaf first; with `--tls-key`
    /// the server speaks HTTPS only. Read at start: a renewal needs a
    /// restart.
    #[arg(long, env = "EVENTFEED_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EVENTFEED_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// An origin (`scheme://host[:port]`) whose pages may call the server
    /// with a user's credentials; repeatable, comma-separated in the
    /// variable. Given, other origins get no CORS headers; unset, any origin
    /// may, without credentials.
    #[arg(
        long = "cors-origin",
        env = "EVENTFEED_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = crate::http::cors::origin
    )]
    pub cors_origins: Vec<String>,

    /// What an acknowledged append survives: `fsync` a process crash and
    /// power loss; `flush` a process crash; `none` neither (the last ~0.5 s
    /// of appends can be lost; benchmarks and throwaway stores only).
    #[arg(long, env = "EVENTFEED_DURABILITY", default_value = "fsync", value_parser = durability())]
    pub durability: Durability,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives such as `eventfeed=debug`; `info,tower_http=debug` adds a
    /// line per request.
    #[arg(long = "log", env = "EVENTFEED_LOG", default_value = "info", value_parser = log_filter)]
    pub log_filter: String,

    /// Log format.
    #[arg(long, env = "EVENTFEED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest event accepted (data plus metadata), in bytes; larger ones
    /// get 413.
    #[arg(long, env = "EVENTFEED_MAX_EVENT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "EVENTFEED_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Longest `ES-LongPoll` wait honoured, in seconds; longer requests
    /// wait this long.
    #[arg(long, env = "EVENTFEED_MAX_LONG_POLL_SECS", default_value_t = 300)]
    pub max_long_poll_secs: u64,

    /// Most long-poll waiters and Server-Sent Event streams open at once;
    /// beyond it requests get 503 with Retry-After.
    #[arg(long, env = "EVENTFEED_MAX_WAITERS", default_value_t = 50_000)]
    pub max_waiters: usize,

    /// Seconds a request's line and headers may take to arrive, from their
    /// first byte (for a connection's first request, from its accept);
    /// a connection slower than that is closed without an answer.
    #[arg(long, env = "EVENTFEED_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = timeout_secs())]
    pub header_timeout_secs: u64,

    /// Seconds a request body may pause; a request whose body pauses
    /// longer, or arrives below `--body-min-bytes-per-sec`, is answered
    /// 408 and its connection closed.
    #[arg(long, env = "EVENTFEED_BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = timeout_secs())]
    pub body_timeout_secs: u64,

    /// Least average rate of a request body, in bytes a second: a body may
    /// take `--body-timeout-secs` plus a second for each this many bytes
    /// received. 0: no minimum.
    #[arg(long, env = "EVENTFEED_BODY_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub body_min_bytes_per_sec: u64,

    /// Seconds a connection may stay open with nothing to do (no request
    /// being served, none arriving), or with its client not reading its
    /// response. Longer than the 60 s proxies keep idle connections to a
    /// backend (Varnish's `backend_idle_timeout`, nginx's upstream
    /// `keepalive_timeout`), so that they close theirs first. Long-polls and
    /// SSE streams are being served, however quiet, and are not idle.
    #[arg(long, env = "EVENTFEED_IDLE_TIMEOUT_SECS", default_value_t = 75, value_parser = timeout_secs())]
    pub idle_timeout_secs: u64,

    /// Most connections open at once; beyond it new connections are closed
    /// as soon as they are accepted. Never more than the open-file limit
    /// less what is kept for the store (a tenth, at least 512, at most
    /// half), which is also the default.
    #[arg(long, env = "EVENTFEED_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Memory for the store's page cache, in MiB.
    #[arg(long, env = "EVENTFEED_CACHE_MB", default_value_t = 512)]
    pub cache_mb: u64,

    /// Memory for rendered pages that can no longer change, in MiB: a page
    /// read again is answered from it without reading the store (the
    /// stream's state is still looked up). 0 turns it off.
    #[arg(long, env = "EVENTFEED_PAGE_CACHE_MB", default_value_t = 128)]
    pub page_cache_mb: u64,

    /// Free space, in MiB, the store always leaves on its disk: appends
    /// that could take it lower get `507 Insufficient Storage` (and go
    /// through once space is freed, no restart needed), and the server does
    /// not start below it, leaving the store untouched. 0 turns it off.
    #[arg(long, env = "EVENTFEED_MIN_FREE_MB", default_value_t = DEFAULT_MIN_FREE_BYTES / (1024 * 1024))]
    pub min_free_mb: u64,

    /// Let anyone read `GET /metrics`, without credentials (for a Prometheus
    /// scraper on a trusted network). Without it, only members of `$admins`
    /// and `$ops` may. The metrics hold counts, never a stream's name or an
    /// event (persistent subscriptions' stream and group names excepted).
    #[arg(long, env = "EVENTFEED_METRICS_PUBLIC", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_public: bool,

    /// Record metrics (`GET /metrics`): `false` leaves out the per-request
    /// timing and answers `/metrics` with `404`, for benchmarks that compare
    /// the cost of metrics.
    #[arg(long, env = "EVENTFEED_METRICS", default_value_t = true, action = ArgAction::Set)]
    pub metrics: bool,

    /// Maintain `$ce-{category}` streams.
    #[arg(long, env = "EVENTFEED_PROJECTION_BY_CATEGORY", default_value_t = true, action = ArgAction::Set)]
    pub projection_by_category: bool,

    /// Maintain `$et-{eventType}` streams.
    #[arg(long, env = "EVENTFEED_PROJECTION_BY_EVENT_TYPE", default_value_t = true, action = ArgAction::Set)]
    pub projection_by_event_type: bool,

    /// Maintain the `$streams` stream.
    #[arg(long, env = "EVENTFEED_PROJECTION_STREAMS", default_value_t = true, action = ArgAction::Set)]
    pub projection_streams: bool,

    /// Seconds between background scavenges, which reclaim the space of
    /// deleted and expired events; 0 turns them off (`POST
    /// /admin/scavenge` still works).
    #[arg(long, env = "EVENTFEED_SCAVENGE_INTERVAL_SECS", default_value_t = 86_400)]
    pub scavenge_interval_secs: u64,

    /// At a clean stop, when at least this many MiB were written since the
    /// start, the store is opened once more before the process exits, so
    /// that the next start need not replay them from the store's log (a
    /// start after millions of appends otherwise takes seconds); 0: after
    /// any write. A second SIGINT or SIGTERM skips it.
    #[arg(long, env = "EVENTFEED_CHECKPOINT_AFTER_MB", default_value_t = 256)]
    pub checkpoint_after_mb: u64,

    /// Seconds to wait at shutdown for open requests to finish before
    /// closing them.
    #[arg(long, env = "EVENTFEED_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Seconds between a shutdown signal and the server closing its
    /// listener, during which it serves as usual but `/health/ready`
    /// answers `503`, so that a load balancer probing it stops sending
    /// traffic before connections are refused. 0 (the default): none, the
    /// listener closes at once. Behind a load balancer, its probe interval
    /// times its failure threshold, plus a second.
    #[arg(long, env = "EVENTFEED_SHUTDOWN_DRAIN_SECS", default_value_t = 0)]
    pub shutdown_drain_secs: u64,
}

/// The default `--shutdown-grace-secs`: long enough for an ordinary request
/// to finish, short enough for a supervisor's stop timeout (the systemd
/// unit in `deploy/` allows two minutes, for the checkpoint after it).
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;

/// The `--durability` values. The store's [`Durability`] knows nothing of
/// the command line; this maps the words to it, and lists them in `--help`.
fn durability() -> impl TypedValueParser<Value = Durability> {
    clap::builder::PossibleValuesParser::new(["fsync", "flush", "none"]).map(|word| match word.as_str() {
        "flush" => Durability::Flush,
        "none" => Durability::None,
        _ => Durability::Fsync,
    })
}

/// An advertised URL: `http://host:port`, nothing after the authority
/// (servers forward plain HTTP to each other).
fn advertise_url(text: &str) -> Result<String, String> {
    let authority = text
        .strip_prefix("http://")
        .ok_or("expected http://host:port (servers forward to each other over plain HTTP)")?
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('?') {
        return Err("expected http://host:port, nothing after the port".into());
    }
    Ok(format!("http://{authority}"))
}

/// Checks a `--store` value: `sled`, or something a PostgreSQL
/// connection string can be (a URL or `key=value` pairs). The string
/// itself is read when the store opens, which says what is wrong with it.
fn store_choice(text: &str) -> Result<String, String> {
    if text == "sled" || is_postgres(text) {
        return Ok(text.to_owned());
    }
    Err("expected `sled` or a PostgreSQL connection string (postgres://…, or key=value pairs)".into())
}

/// Whether a `--store` value names a PostgreSQL database.
fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://") || store.contains('=')
}

/// The timeouts' values: at least a second, at most a day (a longer one
/// would be no timeout at all).
fn timeout_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=86_400)
}

/// Checks a `--log` value, so that a mistyped filter stops the start with
/// the reason instead of quietly logging at another level.
fn log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text).map(|_| text.to_owned()).map_err(|error| {
        format!("not a log filter ({error}); use a level such as info or directives such as eventfeed=debug")
    })
}

impl ServeConfig {
    /// The store these options describe.
    pub fn store_config(&self) -> StoreConfig {
        let projections = Projections {
            by_category: self.projection_by_category,
            by_event_type: self.projection_by_event_type,
            streams: self.projection_streams,
        };
        if is_postgres(&self.store) {
            return StoreConfig::Postgres(PostgresOptions {
                url: self.store.clone(),
                durability: self.durability,
                projections,
                ca_file: self.store_ca.clone(),
            });
        }
        StoreConfig::Sled(SledStoreOptions {
            path: self.data_dir.clone(),
            durability: self.durability,
            projections,
            cache_capacity: self.cache_mb.saturating_mul(1024 * 1024),
            checkpoint_after_bytes: self.checkpoint_after_mb.saturating_mul(1024 * 1024),
            min_free_bytes: self.min_free_mb.saturating_mul(1024 * 1024),
        })
    }

    /// The defaults, with the store in `data_dir` and an ephemeral port on
    /// loopback (for tests and embedding).
    pub fn for_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Cli::parse_from(["eventfeed", "serve"]);
        let Command::Serve(ref mut serve) = config.command else { unreachable!("parsed as serve") };
        serve.data_dir = data_dir.into();
        serve.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        serve.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_log_filter_is_refused_with_the_reason() {
        let error = Cli::try_parse_from(["eventfeed", "serve", "--log", "eventfeed=loud"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("not a log filter"), "{error}");
        let Command::Serve(config) =
            Cli::try_parse_from(["eventfeed", "serve", "--log", "warn,eventfeed=debug"]).unwrap().command
        else {
            unreachable!("parsed as serve")
        };
        assert_eq!(config.log_filter, "warn,eventfeed=debug");
    }

    #[test]
    fn metrics_are_on_and_private_unless_told() {
        let Command::Serve(config) = Cli::try_parse_from(["eventfeed", "serve"]).unwrap().command else {
            unreachable!("parsed as serve")
        };
        assert!(config.metrics && !config.metrics_public);
        assert_eq!(config.shutdown_drain_secs, 0);
        let Command::Serve(config) =
            Cli::try_parse_from(["eventfeed", "serve", "--metrics-public"]).unwrap().command
        else {
            unreachable!("parsed as serve")
        };
        assert!(config.metrics_public);
        let Command::Serve(config) =
            Cli::try_parse_from(["eventfeed", "serve", "--metrics-public", "false", "--metrics", "false"])
                .unwrap()
                .command
        else {
            unreachable!("parsed as serve")
        };
        assert!(!config.metrics_public && !config.metrics);
    }

    #[test]
    fn timeouts_are_between_a_second_and_a_day() {
        let Command::Serve(config) = Cli::try_parse_from(["eventfeed", "serve"]).unwrap().command else {
            unreachable!("parsed as serve")
        };
        assert_eq!(
            (config.header_timeout_secs, config.body_timeout_secs, config.idle_timeout_secs),
            (10, 10, 75)
        );
        assert_eq!(config.max_connections, None);
        for flag in ["--header-timeout-secs", "--body-timeout-secs", "--idle-timeout-secs"] {
            for refused in ["0", "86401"] {
                let error = Cli::try_parse_from(["eventfeed", "serve", flag, refused]).unwrap_err();
                assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{flag} {refused}");
            }
        }
        let error = Cli::try_parse_from(["eventfeed", "serve", "--max-connections", "0"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn tls_takes_a_certificate_and_a_key_or_neither() {
        let Command::Serve(config) =
            Cli::try_parse_from(["eventfeed", "serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .unwrap()
                .command
        else {
            unreachable!("parsed as serve")
        };
        assert_eq!((config.tls_cert.unwrap(), config.tls_key.unwrap()), ("c.pem".into(), "k.pem".into()));
        for alone in [["--tls-cert", "c.pem"], ["--tls-key", "k.pem"]] {
            let error = Cli::try_parse_from(["eventfeed", "serve", alone[0], alone[1]]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{alone:?}");
        }
    }

    #[test]
    fn cors_origins_repeat_or_come_comma_separated() {
        let Command::Serve(config) = Cli::try_parse_from([
            "eventfeed",
            "serve",
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "HTTP://b.example:8080,https://c.example:443",
        ])
        .unwrap()
        .command
        else {
            unreachable!("parsed as serve")
        };
        assert_eq!(config.cors_origins, ["https://a.example", "http://b.example:8080", "https://c.example"]);
        let error = Cli::try_parse_from(["eventfeed", "serve", "--cors-origin", "a.example"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("scheme://host[:port]"), "{error}");
    }

    #[test]
    fn an_advertised_url_is_plain_http_to_a_host_and_port() {
        let parse = |url: &str| {
            Cli::try_parse_from(["eventfeed", "serve", "--advertise-url", url]).map(|cli| {
                let Command::Serve(config) = cli.command else { unreachable!("parsed as serve") };
                config.advertise_url
            })
        };
        assert_eq!(
            parse("http://node1.internal:2113/").unwrap().as_deref(),
            Some("http://node1.internal:2113")
        );
        for bad in ["https://node1:2113", "node1:2113", "http://", "http://node1:2113/api"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_store_is_sled_or_a_postgres_connection_string() {
        let Command::Serve(config) = Cli::try_parse_from(["eventfeed", "serve"]).unwrap().command else {
            unreachable!("parsed as serve")
        };
        assert!(matches!(config.store_config(), StoreConfig::Sled(_)));
        for url in [
            "postgres://u:secret@db/events",
            "postgresql://db1,db2/e?target_session_attrs=read-write",
            "host=db",
        ] {
            let Command::Serve(config) =
                Cli::try_parse_from(["eventfeed", "serve", "--store", url]).unwrap().command
            else {
                unreachable!("parsed as serve")
            };
            let StoreConfig::Postgres(options) = config.store_config() else { panic!("{url}") };
            assert_eq!(options.url, url);
            assert!(!format!("{options:?}").contains("secret"), "the password stays out of logs");
        }
        let error = Cli::try_parse_from(["eventfeed", "serve", "--store", "mysql://db"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn durability_words_map_to_the_modes() {
        for (word, mode) in
            [("fsync", Durability::Fsync), ("flush", Durability::Flush), ("none", Durability::None)]
        {
            let Command::Serve(config) =
                Cli::try_parse_from(["eventfeed", "serve", "--durability", word]).unwrap().command
            else {
                unreachable!("parsed as serve")
            };
            assert_eq!(config.durability, mode);
        }
        let Command::Serve(config) = Cli::try_parse_from(["eventfeed", "serve"]).unwrap().command else {
            unreachable!("parsed as serve")
        };
        assert_eq!(config.durability, Durability::Fsync);
        let error = Cli::try_parse_from(["eventfeed", "serve", "--durability", "sometimes"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
