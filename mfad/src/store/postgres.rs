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

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use ipnet::IpNet;
use mfa_shared::bypass::{BypassRule, RuleOrigin, parse_network};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use super::{Change, Store, StoreError, StoreFault, UserRecord, decode, encode};

mod schema;
mod settings;
mod tls;

pub use settings::{Settings, SettingsError};

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
    /// The schema was brought up to date (at start, or at the first
    /// contact after a start without the database).
    migrated: AtomicBool,
}

#[derive(Default)]
struct Backoff {
    /// No new connection is attempted before this.
    retry_at: Option<Instant>,
    delay: Duration,
    /// Why the last attempt failed, repeated until the next one.
    cause: String,
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

/// An error from PostgreSQL: the database out of reach (no answer, the
/// connection gone, shutting down, a read-only standby after a failover)
/// is [`StoreFault::Unreachable`]; anything else a database error.
fn pg_error(location: &str, err: &tokio_postgres::Error) -> StoreError {
    let unreachable = match err.code() {
        None => true,
        Some(code) => {
            let class = code.code().get(..2).unwrap_or("");
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
        let store = Self::new(settings)?;
        match store.run(async |_| Ok(())) {
            Ok(()) => Ok(store),
            Err(StoreError::Unusable { location, cause, .. }) => {
                Err(StoreError::Database(format!("cannot reach the {location}: {cause}")))
            }
            Err(err) => Err(err),
        }
    }

    /// [`PostgresStore::open`], or, while the database cannot be reached, a
    /// store that connects (and migrates) at its first use once it can.
    pub fn open_lazily(settings: Settings) -> Result<PostgresStore, StoreError> {
        let store = Self::new(settings)?;
        match store.run(async |_| Ok(())) {
            Ok(()) | Err(StoreError::Unusable { .. }) => Ok(store),
            Err(err) => Err(err),
        }
    }

    fn new(settings: Settings) -> Result<PostgresStore, StoreError> {
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
            migrated: AtomicBool::new(false),
        };
        Ok(store)
    }

    fn unreachable(&self, cause: impl Into<String>) -> StoreError {
        StoreError::Unusable { fault: StoreFault::Unreachable, location: self.location.clone(), cause: cause.into() }
    }

    /// A pooled connection, or why there is none. While connecting keeps
    /// failing, attempts are spaced out (doubling up to [`MAX_BACKOFF`]) and
    /// requests in between are answered at once.
    async fn client(&self) -> Result<Object, StoreError> {
        let now = Instant::now();
        let waiting = {
            let backoff = self.backoff();
            backoff.retry_at.filter(|at| now < *at).map(|at| (at - now, backoff.cause.clone()))
        };
        if let Some((wait, cause)) = waiting {
            return Err(self.unreachable(format!("{cause}; next attempt in {} ms", wait.as_millis())));
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
                if let StoreError::Unusable { cause, .. } = &err {
                    let mut backoff = self.backoff();
                    backoff.delay = (backoff.delay * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    backoff.retry_at = Some(Instant::now() + backoff.delay);
                    backoff.cause.clone_from(cause);
                }
                Err(err)
            }
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `op` once the schema is up to date (see [`PostgresStore::run_once`]).
    fn run<R>(&self, op: impl AsyncFnOnce(&mut Object) -> Result<R, StoreError>) -> Result<R, StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            self.run_once(async |client| schema::migrate(client, &self.location).await)?;
            self.migrated.store(true, Ordering::Release);
        }
        self.run_once(op)
    }

    /// Run `op` on a pooled connection, the whole within the deadline. A
    /// connection that failed or timed out mid-operation is closed rather
    /// than returned to the pool (it may hold an open transaction).
    fn run_once<R>(&self, op: impl AsyncFnOnce(&mut Object) -> Result<R, StoreError>) -> Result<R, StoreError> {
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

/// The statement that locks a user's row for the rest of the transaction
/// and reads it.
const LOCK_USER: &str = "SELECT record FROM users WHERE name = $1 FOR UPDATE";

/// Lock `user`'s row for the rest of `tx` and read it; a user without a row
/// gets an empty one (rolled back or deleted unless the change writes).
/// Returns the record and whether the row was inserted here.
async fn lock_user(
    tx: &impl GenericClient,
    user: &str,
    location: &str,
) -> Result<(Option<UserRecord>, bool), StoreError> {
    let select = tx.prepare_cached(LOCK_USER).await.map_err(|err| pg_error(location, &err))?;
    let row = tx.query_opt(&select, &[&user]).await.map_err(|err| pg_error(location, &err))?;
    locked_record(tx, &select, row, user, location).await
}

/// The record of a row `select` ([`LOCK_USER`]) locked and read, or, when
/// there was none, of the empty row inserted and locked in its place; and
/// whether it was inserted here.
async fn locked_record(
    tx: &impl GenericClient,
    select: &Statement,
    row: Option<Row>,
    user: &str,
    location: &str,
) -> Result<(Option<UserRecord>, bool), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    let mut inserted = false;
    let row = match row {
        Some(row) => row,
        None => {
            let insert = tx
                .prepare_cached("INSERT INTO users (name, record) VALUES ($1, NULL) ON CONFLICT (name) DO NOTHING")
                .await
                .map_err(db)?;
            // Zero rows: another host inserted it meanwhile and has
            // committed; its row is read (and locked) below.
            inserted = tx.execute(&insert, &[&user]).await.map_err(db)? == 1;
            tx.query_one(select, &[&user]).await.map_err(db)?
        }
    };
    let json: Option<String> = row.get(0);
    let record = json.map(|json| decode(user, &json)).transpose()?;
    Ok((record, inserted))
}

/// [`Store::update_user`] in two round trips where one after the other
/// would take four: BEGIN goes with the locking read, and the write with
/// COMMIT. The server runs a connection's statements in the order they
/// were sent, so each pair does what it would one after the other; every
/// statement is prepared before its pair is sent, so that no prepare's
/// round trip can come between the two. A failed write leaves the
/// transaction aborted, and the COMMIT sent with it then rolls back; the
/// write's error is returned, so nothing is acknowledged that was not
/// committed. On any error the caller rolls back.
async fn update_pipelined(
    client: &deadpool_postgres::Client,
    user: &str,
    change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    location: &str,
) -> Result<(), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    let select = client.prepare_cached(LOCK_USER).await.map_err(db)?;
    let name: [&(dyn ToSql + Sync); 1] = [&user];
    let (began, row) = tokio::join!(client.batch_execute("BEGIN"), client.query_opt(&select, &name));
    began.map_err(db)?;
    // Whether the row was inserted here does not matter: a kept change
    // rolls it back, a written one writes it.
    let (current, _) = locked_record(client, &select, row.map_err(db)?, user, location).await?;
    let (statement, json) = match change(current.as_ref()) {
        // Nothing to write: end the transaction without a commit to wait
        // for (an inserted empty row goes with it).
        Change::Keep => return client.batch_execute("ROLLBACK").await.map_err(db),
        Change::Delete => (client.prepare_cached("DELETE FROM users WHERE name = $1").await.map_err(db)?, None),
        Change::Put(record) => {
            let json = encode(&record)?;
            (client.prepare_cached("UPDATE users SET record = $2 WHERE name = $1").await.map_err(db)?, Some(json))
        }
    };
    let write = async {
        match &json {
            Some(json) => client.execute(&statement, &[&user, json]).await,
            None => client.execute(&statement, &[&user]).await,
        }
    };
    let (written, committed) = tokio::join!(write, client.batch_execute("COMMIT"));
    written.map_err(db)?;
    committed.map_err(db)
}

/// Write what `change` decided for a row locked by [`lock_user`].
async fn write_user(
    tx: &impl GenericClient,
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

    fn update_user(
        &self,
        user: &str,
        change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError> {
        self.run(async |client| {
            let updated = update_pipelined(client, user, change, &self.location).await;
            if updated.is_err() {
                // Back to the pool outside any transaction (a broken
                // connection is dropped by `run_once`).
                let _ = client.batch_execute("ROLLBACK").await;
            }
            updated
        })
    }

    fn update_users(
        &self,
        users: &[String],
        change: &mut (dyn FnMut(&str, Option<&UserRecord>) -> Change + Send),
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
