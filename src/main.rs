use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use eventfeed::config::{Cli, Command, LogFormat, ServeConfig};
use eventfeed::server::{Server, shutdown_signal};
use eventfeed::transfer::{backup, cli};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: the store's B-tree copies
/// nodes on every insert and page rendering allocates per entry, and with
/// glibc's malloc a fifth to a third of the server's CPU went to malloc and
/// free (measured with perf on appends and page reads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(config) => serve(config).await,
        Command::Export(args) => cli::finish(cli::export(&args).await),
        Command::Import(args) => cli::finish(cli::import(&args).await),
        Command::Backup(args) => cli::finish(backup::backup(&args).await),
        Command::Verify(args) => cli::finish(backup::verify(&args).await),
    }
}

async fn serve(config: ServeConfig) -> ExitCode {
    // `--log` was checked when the options were parsed.
    let filter = EnvFilter::new(&config.log_filter);
    // Colours on a terminal only: not into journald, files or pipes.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    // Before the server listens: a signal from then on stops it gracefully.
    let signal = shutdown_signal();
    let server = match Server::bind(&config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "eventfeed could not start");
            return ExitCode::FAILURE;
        }
    };
    match server.run(signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "eventfeed stopped with an error");
            ExitCode::FAILURE
        }
    }
}
