//! The fleet store: one PostgreSQL database shared by every host's mfad.
//!
//! Nothing is cached on the host: every request reads the database, so a
//! change made through one host (a code used, a failure counted, an
//! approval, an IP rule) is in force on every other at once.
//!
//! Verification is serialised per user by a row lock: `update_user` runs
//! `SELECT ... FOR UPDATE` on the user's row, calls the change, writes and
//! commits, in one transaction. A second host's transaction on the same
//! user waits at its `SELECT` until the first commits, then reads the
//! committed row (READ COMMITTED re-reads a row it waited for), so it sees
//! the advanced counter and refuses the replay: of N hosts offering one
//! code, exactly one accepts. A row lock was chosen over a version column
//! with compare-and-set because the loser waits once instead of retrying
//! (no retry storm under contention, and `change` runs exactly once). A
//! user without a row gets one inserted (holding its lock) before the
//! change runs, so two first writes cannot both start from nothing.
//!
//! A write is acknowledged only after its COMMIT returned, with
//! `synchronous_commit = on` set for every connection: the commit is on the
//! database's disk (and its synchronous standbys) before a login succeeds.
//! Concurrent commits from the pool's connections share the server's WAL
//! flushes (PostgreSQL's own group commit), so a batching layer here would
//! add latency without saving a flush.
//!
//! The database out of reach (down, failing over, a standby that became
//! read-only) is [`StoreFault::Unreachable`]: the request is answered
//! `unavailable` and the connection dropped; the next request connects
//! again, after a short backoff while attempts keep failing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use ipnet::IpNet;
use mfa_shared::bypass::{BypassRule, RuleOrigin, parse_network};
use mfa_shared::config::{StoreConfig, url_is_unix_socket};
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use super::{Change, Store, StoreError, StoreFault, UserRecord, decode, encode};

mod tls;

/// Schema versions, applied in order at start; `mfad_schema.version`
/// records how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE users (
        name   text COLLATE \"C\" PRIMARY KEY,
        -- NULL only inside the transaction that first locks a new user.
        record text
     );
     CREATE TABLE ip_rules (
        id         bigserial PRIMARY KEY,
        cidr       text NOT NULL,
        bypass_2fa boolean NOT NULL,
        expires_at bigint
     );
     CREATE TABLE meta (
        name  text PRIMARY KEY,
        value text NOT NULL
     );"];

/// The advisory lock key that serialises migrations across hosts ("mfad").
const MIGRATION_LOCK: i64 = 0x6d66_6164;

/// Reconnect backoff while the database stays out of reach.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct PostgresStore {
    /// The connections' own runtime: the [`Store`] trait is blocking, and is
    /// called from mfad's blocking threads and from the command line. None
    /// only while dropped.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// "database DB on HOST", for messages (never a password).
    location: String,
    /// How long one operation (a connection included) may take: the
    /// client is answered `unavailable` after it, well before the PAM
    /// module's own timeout would turn a slow database into silence.
    deadline: Duration,
    backoff: Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    /// No new connection is attempted before this.
    retry_at: Option<Instant>,
    delay: Duration,
}

/// The store may be dropped inside mfad's own runtime (at shutdown), where
/// a runtime must not block waiting for its threads: they are let go.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStore({})", self.location)
    }
}

/// Why the settings cannot be used; each message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("[store] {key}: {message}")]
pub struct SettingsError {
    key: &'static str,
    message: String,
}

fn setting(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError { key, message: message.into() }
}

/// The connection settings of a `[store]` section, read and checked
/// (`mfad --check-config` stops here; starting goes on to connect).
pub struct Settings {
    pg: tokio_postgres::Config,
    tls: Option<tls::Connector>,
    pool_size: usize,
    connect_timeout: Duration,
    location: String,
}

impl Settings {
    pub fn from_config(store: &StoreConfig) -> Result<Settings, SettingsError> {
        let url = store.url.as_deref().ok_or_else(|| setting("url", "is needed for backend = \"postgres\""))?;
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|err| setting("url", format!("is not a PostgreSQL connection string: {err}")))?;
        if pg.get_password().is_some() {
            return Err(setting("url", "holds a password; put it in password_file (mode 0600)"));
        }
        if let Some(path) = &store.password_file {
            pg.password(read_password(path)?);
        }
        // Acknowledged means on the database's disk, whatever the server's
        // default.
        pg.options("-c synchronous_commit=on");
        pg.connect_timeout(store.connect_timeout.0);
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        pg.application_name("mfad");
        let tls = if url_is_unix_socket(url) || pg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_))) {
            None
        } else {
            tls::Connector::from_config(store)?
        };
        pg.ssl_mode(if tls.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        let location = describe(&pg);
        Ok(Settings { pg, tls, pool_size: store.pool_size, connect_timeout: store.connect_timeout.0, location })
    }
}

/// "database DB on HOST:PORT".
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("database {} on {host}:{port}", pg.get_dbname().unwrap_or("(the user's)"))
}

/// The password in `path`, which must be a regular file owned by the
/// effective uid with no access for group or others (the same rule as the
/// key file's).
fn read_password(path: &Path) -> Result<String, SettingsError> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|err| setting("password_file", format!("{shown}: {err}")))?;
    if !meta.file_type().is_file() {
        return Err(setting("password_file", format!("{shown} is not a regular file")));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(setting(
            "password_file",
            format!("{shown} is owned by uid {}, not {euid}; run: chown {euid} {shown}", meta.uid()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(setting(
            "password_file",
            format!("{shown} is readable by group or others; run: chmod 600 {shown}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|err| setting("password_file", format!("{shown}: {err}")))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(setting("password_file", format!("{shown} is empty")));
    }
    Ok(password.to_string())
}

/// An error from PostgreSQL: the database out of reach (no answer, the
/// connection gone, shutting down, a read-only standby after a failover)
/// is [`StoreFault::Unreachable`]; anything else a database error.
fn pg_error(location: &str, err: &tokio_postgres::Error) -> StoreError {
    let unreachable = match err.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            class == "08" // connection exception
                || class == "53" // insufficient resources (too many connections)
                || class == "57" // operator intervention (shutdown, cannot connect now)
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        }
    };
    // The error's own text often hides its cause (a TLS handshake failed:
    // which certificate, why?): its sources are added.
    let mut cause = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    if unreachable {
        StoreError::Unusable { fault: StoreFault::Unreachable, location: location.to_string(), cause }
    } else {
        StoreError::Database(cause)
    }
}

impl PostgresStore {
    /// Connect, and bring the schema up to date (under an advisory lock, so
    /// that hosts starting at once migrate once).
    pub fn open(settings: Settings) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mfad-postgres")
            .enable_all()
            .build()
            .map_err(|err| StoreError::Database(format!("cannot start the database runtime: {err}")))?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match settings.tls {
            Some(tls) => Manager::from_config(settings.pg, tls.into_make(), manager_config),
            None => Manager::from_config(settings.pg, NoTls, manager_config),
        };
        // Half the deadline each for a free connection and a new one, so a
        // request that had to wait still has time for its queries.
        let timeout = Some(settings.connect_timeout / 2);
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|err| StoreError::Database(format!("cannot build the connection pool: {err}")))?;
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            location: settings.location,
            deadline: settings.connect_timeout,
            backoff: Mutex::new(Backoff::default()),
        };
        match store.run(async |client| migrate(client, &store.location).await) {
            Ok(()) => Ok(store),
            // At start there is nothing to answer: mfad exits, and its
            // service manager starts it again.
            Err(StoreError::Unusable { location, cause, .. }) => {
                Err(StoreError::Database(format!("cannot reach the {location}: {cause}")))
            }
            Err(err) => Err(err),
        }
    }

    fn unreachable(&self, cause: impl Into<String>) -> StoreError {
        StoreError::Unusable { fault: StoreFault::Unreachable, location: self.location.clone(), cause: cause.into() }
    }

    /// A pooled connection, or why there is none. While connecting keeps
    /// failing, attempts are spaced out (doubling up to [`MAX_BACKOFF`]) and
    /// requests in between are answered at once.
    async fn client(&self) -> Result<Object, StoreError> {
        let now = Instant::now();
        if let Some(retry_at) = self.backoff().retry_at.filter(|at| now < *at) {
            let wait = retry_at - now;
            return Err(self.unreachable(format!("reconnecting; next attempt in {} ms", wait.as_millis())));
        }
        match self.pool.get().await {
            Ok(client) => {
                *self.backoff() = Backoff::default();
                Ok(client)
            }
            Err(err) => {
                let err = match err {
                    PoolError::Backend(err) => pg_error(&self.location, &err),
                    // Every connection is in use: overload, not an outage
                    // (which would open logins under failmode=safe).
                    PoolError::Timeout(TimeoutType::Wait) => StoreError::Busy(format!(
                        "all {} connections to the {} are in use",
                        self.pool.status().max_size,
                        self.location
                    )),
                    other => self.unreachable(other.to_string()),
                };
                if matches!(err, StoreError::Unusable { .. }) {
                    let mut backoff = self.backoff();
                    backoff.delay = (backoff.delay * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    backoff.retry_at = Some(Instant::now() + backoff.delay);
                }
                Err(err)
            }
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `op` on a pooled connection, the whole within the deadline. A
    /// connection that failed or timed out mid-operation is closed rather
    /// than returned to the pool (it may hold an open transaction).
    fn run<R>(&self, op: impl AsyncFnOnce(&mut Object) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(self.unreachable("the store is closing"));
        };
        runtime.block_on(async {
            let deadline = Instant::now() + self.deadline;
            let late = || self.unreachable(format!("no answer within {} s", self.deadline.as_secs()));
            // Bounded by the pool's own timeouts, which tell a busy pool
            // from an unreachable database.
            let mut client = self.client().await?;
            let result = tokio::time::timeout_at(deadline, op(&mut client)).await.unwrap_or_else(|_| Err(late()));
            if matches!(result, Err(StoreError::Unusable { .. })) {
                drop(Object::take(client));
            }
            result
        })
    }

    fn db(&self, err: tokio_postgres::Error) -> StoreError {
        pg_error(&self.location, &err)
    }
}

/// Bring the schema up to date. The advisory lock, held to the end of the
/// transaction, makes hosts starting at once take turns: the first
/// migrates, the others find the schema current.
async fn migrate(client: &mut Object, location: &str) -> Result<(), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mfad_schema (version integer NOT NULL)").await.map_err(db)?;
    let version: i32 = match tx.query_opt("SELECT version FROM mfad_schema", &[]).await.map_err(db)? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO mfad_schema (version) VALUES (0)", &[]).await.map_err(db)?;
            0
        }
    };
    let known = MIGRATIONS.len();
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > known {
        return Err(StoreError::Database(format!(
            "database schema version {version} is newer than this mfad ({known}): upgrade mfad on this host"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(db)?;
        let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE mfad_schema SET version = $1", &[&next]).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// Lock `user`'s row for the rest of `tx` and read it; a user without a row
/// gets an empty one (rolled back or deleted unless the change writes).
/// Returns the record and whether the row was inserted here.
async fn lock_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &str,
    location: &str,
) -> Result<(Option<UserRecord>, bool), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    let select = tx.prepare_cached("SELECT record FROM users WHERE name = $1 FOR UPDATE").await.map_err(db)?;
    let mut inserted = false;
    let row = match tx.query_opt(&select, &[&user]).await.map_err(db)? {
        Some(row) => row,
        None => {
            let insert = tx
                .prepare_cached("INSERT INTO users (name, record) VALUES ($1, NULL) ON CONFLICT (name) DO NOTHING")
                .await
                .map_err(db)?;
            // Zero rows: another host inserted it meanwhile and has
            // committed; its row is read (and locked) below.
            inserted = tx.execute(&insert, &[&user]).await.map_err(db)? == 1;
            tx.query_one(&select, &[&user]).await.map_err(db)?
        }
    };
    let json: Option<String> = row.get(0);
    let record = json.map(|json| decode(user, &json)).transpose()?;
    Ok((record, inserted))
}

/// Write what `change` decided for a row locked by [`lock_user`].
async fn write_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &str,
    change: Change,
    inserted: bool,
    location: &str,
) -> Result<(), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    match change {
        Change::Keep if !inserted => Ok(()),
        Change::Keep | Change::Delete => {
            let delete = tx.prepare_cached("DELETE FROM users WHERE name = $1").await.map_err(db)?;
            tx.execute(&delete, &[&user]).await.map(drop).map_err(db)
        }
        Change::Put(record) => {
            let json = encode(&record)?;
            let update = tx.prepare_cached("UPDATE users SET record = $2 WHERE name = $1").await.map_err(db)?;
            tx.execute(&update, &[&user, &json]).await.map(drop).map_err(db)
        }
    }
}

impl Store for PostgresStore {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.run(async |client| {
            let select =
                client.prepare_cached("SELECT record FROM users WHERE name = $1").await.map_err(|e| self.db(e))?;
            let row = client.query_opt(&select, &[&user]).await.map_err(|e| self.db(e))?;
            let json: Option<String> = row.and_then(|row| row.get(0));
            json.map(|json| decode(user, &json)).transpose()
        })
    }

    fn update_user(&self, user: &str, change: &mut dyn FnMut(Option<&UserRecord>) -> Change) -> Result<(), StoreError> {
        self.run(async |client| {
            let tx = client.transaction().await.map_err(|e| self.db(e))?;
            let (current, inserted) = lock_user(&tx, user, &self.location).await?;
            match change(current.as_ref()) {
                // Nothing to write: end the transaction without a commit
                // to wait for (an inserted empty row goes with it).
                Change::Keep => tx.rollback().await.map_err(|e| self.db(e)),
                decided => {
                    write_user(&tx, user, decided, inserted, &self.location).await?;
                    tx.commit().await.map_err(|e| self.db(e))
                }
            }
        })
    }

    fn update_users(
        &self,
        users: &[String],
        change: &mut dyn FnMut(&str, Option<&UserRecord>) -> Change,
    ) -> Result<(), StoreError> {
        // Locked in name order, so two bulk updates cannot deadlock.
        let mut names: Vec<&String> = users.iter().collect();
        names.sort();
        names.dedup();
        self.run(async |client| {
            let tx = client.transaction().await.map_err(|e| self.db(e))?;
            for user in names {
                let (current, inserted) = lock_user(&tx, user, &self.location).await?;
                let decided = change(user, current.as_ref());
                write_user(&tx, user, decided, inserted, &self.location).await?;
            }
            tx.commit().await.map_err(|e| self.db(e))
        })
    }

    fn list_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async |client| {
            let rows = client
                .query(
                    "SELECT name, record FROM users WHERE name > $1 AND record IS NOT NULL ORDER BY name LIMIT $2",
                    &[&after.unwrap_or(""), &limit],
                )
                .await
                .map_err(|e| self.db(e))?;
            rows.iter()
                .map(|row| {
                    let (name, json): (String, String) = (row.get(0), row.get(1));
                    decode(&name, &json)
                })
                .collect()
        })
    }

    fn add_ip_rule(&self, network: IpNet, bypass_2fa: bool, expires_at: Option<u64>) -> Result<i64, StoreError> {
        let expires = expires_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        self.run(async |client| {
            let row = client
                .query_one(
                    "INSERT INTO ip_rules (cidr, bypass_2fa, expires_at) VALUES ($1, $2, $3) RETURNING id",
                    &[&network.to_string(), &bypass_2fa, &expires],
                )
                .await
                .map_err(|e| self.db(e))?;
            Ok(row.get(0))
        })
    }

    fn list_ip_rules(&self) -> Result<Vec<BypassRule>, StoreError> {
        self.run(async |client| {
            let select = client
                .prepare_cached("SELECT id, cidr, bypass_2fa, expires_at FROM ip_rules ORDER BY id")
                .await
                .map_err(|e| self.db(e))?;
            let rows = client.query(&select, &[]).await.map_err(|e| self.db(e))?;
            rows.iter()
                .map(|row| {
                    let (id, cidr, bypass_2fa): (i64, String, bool) = (row.get(0), row.get(1), row.get(2));
                    let expires_at = row.get::<_, Option<i64>>(3).map(|t| u64::try_from(t).unwrap_or(0));
                    // Written only after parsing: a row that does not parse
                    // was tampered with, and fails closed.
                    let network = parse_network(&cidr)
                        .map_err(|reason| StoreError::Corrupt { user: format!("ip rule #{id}"), reason })?;
                    Ok(BypassRule { network, bypass_2fa, expires_at, origin: RuleOrigin::Runtime { id } })
                })
                .collect()
        })
    }

    fn remove_ip_rule(&self, id: i64) -> Result<bool, StoreError> {
        self.run(async |client| {
            let removed = client.execute("DELETE FROM ip_rules WHERE id = $1", &[&id]).await.map_err(|e| self.db(e))?;
            Ok(removed > 0)
        })
    }

    fn get_meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.run(async |client| {
            let row =
                client.query_opt("SELECT value FROM meta WHERE name = $1", &[&name]).await.map_err(|e| self.db(e))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn set_meta(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.run(async |client| {
            match value {
                Some(value) => {
                    client
                        .execute(
                            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            &[&name, &value],
                        )
                        .await
                }
                None => client.execute("DELETE FROM meta WHERE name = $1", &[&name]).await,
            }
            .map(drop)
            .map_err(|e| self.db(e))
        })
    }

    fn init_meta(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.run(async |client| {
            client
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await
                .map_err(|e| self.db(e))?;
            let row =
                client.query_one("SELECT value FROM meta WHERE name = $1", &[&name]).await.map_err(|e| self.db(e))?;
            Ok(row.get(0))
        })
    }
}
