//! The `mfad` binary's logic: arguments, start-up, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use mfa_shared::config::{Config, DEFAULT_CONFIG_PATH};
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{Audit, Severity};
use crate::clock::SystemClock;
use crate::crypto::Vault;
use crate::nss::{DeadlineDirectory, LOOKUP_DEADLINE, SystemDirectory};
use crate::server;
use crate::service::Daemon;
use crate::store::SqliteStore;

#[derive(Debug, Parser)]
#[command(name = "mfad", version, about = "Two-factor authentication daemon for PAM logins")]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration file and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
    /// Syslog socket for the audit trail; stderr is used when it is absent.
    #[arg(long, default_value = "/dev/log")]
    syslog_socket: PathBuf,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mfad: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &PathBuf) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("{}", path.display()))
}

fn run(args: Args) -> Result<()> {
    let config = load_config(&args.config)?;
    if args.check_config {
        println!("{}: configuration is valid", args.config.display());
        return Ok(());
    }
    let audit = Audit::new(args.syslog_socket.clone());
    let vault = Vault::load_or_create(&config.store.key_file)?;
    let store = SqliteStore::open(&config.store.path)
        .with_context(|| format!("cannot open store {}", config.store.path.display()))?;
    let socket = config.socket.clone();
    let daemon = Arc::new(Daemon::new(
        config,
        Some(args.config.clone()),
        Arc::new(store),
        vault,
        Arc::new(SystemClock),
        Arc::new(DeadlineDirectory::new(Arc::new(SystemDirectory), LOOKUP_DEADLINE)),
        audit,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = server::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let serving = tokio::spawn(server::serve(daemon.clone(), listener, stopped));
        daemon.audit.event(Severity::Info, &format!("started, listening on {}", socket.display()));
        server::notify_ready();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let d = daemon.clone();
                    let _ = tokio::task::spawn_blocking(move || d.reload()).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        daemon.audit.event(Severity::Info, "stopping: finishing requests in flight");
        let _ = stop.send(true);
        let _ = serving.await;
        let _ = std::fs::remove_file(&socket);
        daemon.audit.event(Severity::Info, "stopped");
        Ok(())
    })
}
