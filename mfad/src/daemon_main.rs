//! The `mfad` binary's logic: arguments, start-up, signals.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use mfa_shared::config::{Config, DEFAULT_CONFIG_PATH, StoreBackend};
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{Audit, Severity};
use crate::clock::SystemClock;
use crate::crypto::Vault;
use crate::keys::{KeyError, Keyed};
use crate::metrics::publish::Publisher;
use crate::nss::{DeadlineDirectory, FilesCache, LOOKUP_DEADLINE, SystemDirectory};
use crate::server;
use crate::service::Daemon;
use crate::store::postgres::Settings;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};

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
    /// journald's native socket: while it exists, audit events go there
    /// with structured fields instead of to the syslog socket.
    #[arg(long, default_value = "/run/systemd/journal/socket")]
    journal_socket: PathBuf,
    /// Create a new, empty store where there is none although the key file
    /// exists (a store lost beyond restoring, or a first start that did not
    /// finish), then exit.
    #[arg(long)]
    init_store: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy a host's SQLite store into the store the configuration names
    /// (the fleet's PostgreSQL database), then exit. Accounts the store
    /// has already are refused (nothing is copied) unless --replace.
    MigrateStore {
        /// The SQLite store to copy (e.g. /var/lib/mfad/mfad.db).
        #[arg(long)]
        from: PathBuf,
        /// Overwrite accounts the destination has already.
        #[arg(long)]
        replace: bool,
        /// Copy accounts whose recovery codes the destination cannot check
        /// (a host's store rekeyed to the fleet's key) without those codes.
        #[arg(long)]
        drop_recovery_codes: bool,
    },
    /// Re-seal every secret in the store with the key in FILE, then exit.
    /// Resumable: run it again if it was interrupted. Every host must hold
    /// the new key (in accepted_key_files) before it starts.
    Rekey {
        /// The new key file (32 bytes, mode 0600).
        #[arg(long)]
        new_key: PathBuf,
    },
}

/// How this start gets its store: the first start of an install creates the
/// key file and the store together; afterwards a missing store is a loss,
/// never silently replaced by an empty one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStart {
    Create,
    OpenExisting,
}

/// Why mfad will not open or create its store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreStartRefusal {
    #[error(
        "store {store} is missing, but key file {key} exists: the store was lost or moved. Restore it from backup. To start over with an empty store instead (every enrollment is lost; also after a first start that did not finish), run: mfad --init-store"
    )]
    StoreLost { store: PathBuf, key: PathBuf },
    #[error(
        "key file {key} is missing, but store {store} exists: every secret in the store is sealed with the lost key. Restore the key file from backup (mode 0600)"
    )]
    KeyLost { store: PathBuf, key: PathBuf },
    #[error("--init-store: store {0} exists already; move it aside first if it is to be replaced")]
    StoreExists(PathBuf),
}

/// The rule for the store at start, from whether the key file and the store
/// exist before this start touches anything.
pub fn store_start(
    key: &Path,
    key_exists: bool,
    store: &Path,
    store_exists: bool,
    init_store: bool,
) -> Result<StoreStart, StoreStartRefusal> {
    let (key, store) = (key.to_path_buf(), store.to_path_buf());
    match (key_exists, store_exists, init_store) {
        (_, true, true) => Err(StoreStartRefusal::StoreExists(store)),
        (false, true, false) => Err(StoreStartRefusal::KeyLost { store, key }),
        (true, true, false) => Ok(StoreStart::OpenExisting),
        (true, false, false) => Err(StoreStartRefusal::StoreLost { store, key }),
        (false, false, _) | (true, false, true) => Ok(StoreStart::Create),
    }
}

/// Whether something (even a dangling link or a file we may not read) is at
/// `path`.
fn exists(path: &Path) -> bool {
    !matches!(std::fs::symlink_metadata(path), Err(err) if err.kind() == io::ErrorKind::NotFound)
}

/// Make this process non-dumpable: no core file (which would hold secrets),
/// and no ptrace or /proc/PID/mem access by other users.
pub fn make_undumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// mfad's command line as clap sees it, for its manual page.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
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
    make_undumpable().context("cannot make mfad non-dumpable (prctl PR_SET_DUMPABLE)")?;
    let config = load_config(&args.config)?;
    if args.check_config {
        if config.store.backend == StoreBackend::Postgres {
            Settings::from_config(&config.store)?;
        }
        println!("{}: configuration is valid", args.config.display());
        return Ok(());
    }
    // Once, at start, a daemon may come up without its database; a command
    // that works on the store needs it.
    let lazily = args.command.is_none() && !args.init_store;
    let (store, mut vault) = open_store(&config, args.init_store, lazily)?;
    if args.init_store {
        println!("{}: created an empty store", config.store.path.display());
        return Ok(());
    }
    match args.command {
        Some(Command::MigrateStore { from, replace, drop_recovery_codes }) => {
            crate::keys::bind(&vault, &*store).context("cannot use the store's keys")?;
            let how = crate::maintenance::Migration { replace, drop_recovery_codes };
            println!("{}", crate::maintenance::migrate_store(&vault, &*store, &from, how)?);
            return Ok(());
        }
        Some(Command::Rekey { new_key }) => {
            crate::keys::bind(&vault, &*store).context("cannot use the store's keys")?;
            println!("{}", crate::maintenance::rekey(&mut vault, &*store, &new_key)?);
            return Ok(());
        }
        None => {}
    }
    let audit = Audit::new(args.syslog_socket.clone()).with_journal(args.journal_socket.clone());
    let vault = Arc::new(vault);
    let store = keyed_store(store, vault.clone(), &audit)?;
    let socket = config.socket.clone();
    let daemon = Arc::new(Daemon::new(
        config,
        Some(args.config.clone()),
        store,
        vault,
        Arc::new(SystemClock),
        Arc::new(DeadlineDirectory::new(
            Arc::new(FilesCache::system(Arc::new(SystemDirectory), Arc::new(SystemClock))),
            LOOKUP_DEADLINE,
            Arc::new(SystemClock),
        )),
        audit,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = server::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let serving = server::start(daemon.clone(), listener).context("cannot start serving connections")?;
        let serving = tokio::spawn(server::serve(serving, stopped.clone()));
        let metrics = daemon.config().metrics.clone();
        let publisher = metrics.textfile.map(|path| Publisher::new(daemon.clone(), path));
        if let Some(publisher) = &publisher {
            tokio::spawn(publisher.clone().run(metrics.interval.0, stopped));
        }
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
        if let Some(publisher) = publisher {
            let _ = tokio::task::spawn_blocking(move || publisher.write()).await;
        }
        let _ = std::fs::remove_file(&socket);
        daemon.audit.event(Severity::Info, "stopped");
        Ok(())
    })
}

/// `store` behind a check of this host's keys, made now if the store
/// answers.
fn keyed_store(store: Arc<dyn Store>, vault: Arc<Vault>, audit: &Audit) -> Result<Arc<Keyed>> {
    let store = Arc::new(Keyed::new(store, vault));
    match store.bind_now() {
        Ok(()) => Ok(store),
        // The fleet's database is down: serve what needs no store, answer
        // the rest `unavailable`, check the keys once it is back.
        Err(KeyError::Store(err @ StoreError::Unusable { .. })) => {
            audit.event(Severity::Warning, &format!("{err}; the keys are checked once it answers"));
            Ok(store)
        }
        Err(err) => Err(err).context("cannot use the store's keys"),
    }
}

/// The store the configuration names (a PostgreSQL one, `lazily`: also
/// while its database is down), and the keys of this host, not yet checked
/// against it (see [`crate::keys::bind`]).
fn open_store(config: &Config, init_store: bool, lazily: bool) -> Result<(Arc<dyn Store>, Vault)> {
    let key = &config.store.key_file;
    let store: Arc<dyn Store> = match config.store.backend {
        StoreBackend::Sqlite => {
            let path = &config.store.path;
            let start = store_start(key, exists(key), path, exists(path), init_store)?;
            // Created with the store, never without it.
            let opened = match start {
                StoreStart::Create => Vault::load_or_create(key).map(|_| SqliteStore::create(path)),
                StoreStart::OpenExisting => Ok(SqliteStore::open_existing(path)),
            }?;
            Arc::new(opened.context("cannot open the store")?)
        }
        StoreBackend::Postgres => {
            if init_store {
                anyhow::bail!("--init-store is for a SQLite store; the PostgreSQL store's schema is created at start");
            }
            let settings = Settings::from_config(&config.store)?;
            let opened = if lazily { PostgresStore::open_lazily(settings) } else { PostgresStore::open(settings) };
            Arc::new(opened.context("cannot open the store")?)
        }
    };
    let mut vault = Vault::load_or_create(key)?;
    for path in &config.store.accepted_key_files {
        vault.accept_key_file(path).with_context(|| format!("[store] accepted_key_files: {}", path.display()))?;
    }
    Ok((store, vault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_created_only_with_the_key_or_when_asked() {
        let (key, store) = (Path::new("/etc/mfad/secret.key"), Path::new("/var/lib/mfad/mfad.db"));
        let rule = |key_exists, store_exists, init| store_start(key, key_exists, store, store_exists, init);
        // The first start of an install: neither exists.
        assert_eq!(rule(false, false, false), Ok(StoreStart::Create));
        assert_eq!(rule(true, true, false), Ok(StoreStart::OpenExisting));
        // A store lost (or a first start cut short): refused, with the way out.
        let lost = rule(true, false, false).unwrap_err();
        assert!(matches!(lost, StoreStartRefusal::StoreLost { .. }));
        let text = lost.to_string();
        assert!(text.contains("/var/lib/mfad/mfad.db is missing") && text.contains("secret.key exists"), "{text}");
        assert!(text.contains("Restore it from backup") && text.contains("mfad --init-store"), "{text}");
        assert_eq!(rule(true, false, true), Ok(StoreStart::Create));
        assert_eq!(rule(false, false, true), Ok(StoreStart::Create));
        // A key lost: every sealed secret with it.
        let text = rule(false, true, false).unwrap_err().to_string();
        assert!(text.contains("secret.key is missing") && text.contains("Restore the key file"), "{text}");
        // --init-store never replaces a store.
        for key_exists in [false, true] {
            assert!(matches!(rule(key_exists, true, true), Err(StoreStartRefusal::StoreExists(_))));
        }
    }

    /// Set in the child process of the test below.
    const DUMPABLE_CHILD: &str = "MFAD_TEST_UNDUMPABLE_CHILD";

    #[test]
    fn make_undumpable_clears_the_dumpable_flag() {
        if std::env::var_os(DUMPABLE_CHILD).is_some() {
            // In the child: only this process is affected.
            // SAFETY: PR_GET_DUMPABLE reads a flag of this process.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 1, "dumpable before");
            make_undumpable().unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0, "not dumpable after");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "daemon_main::tests::make_undumpable_clears_the_dumpable_flag", "--test-threads=1"])
            .env(DUMPABLE_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }
}
