//! The fleet store: one PostgreSQL database shared by every host's mfad.
//!
//! Nothing is answered from the host: every request reads the database, so
//! a change made through one host (a code used, a failure counted, an
//! approval, an IP rule) is in force on every other at once. The text of a
//! record last read here is kept only to write it back conditionally (below).
//!
//! Verification is serialised per user by a row lock: `update_user` runs
//! `SELECT ... FOR UPDATE` on the user's row, calls the change, writes and
//! commits, in one transaction. A second host's transaction on the same
//! user waits at its `SELECT` until the first commits, then reads the
//! committed row (READ COMMITTED re-reads a row it waited for), so it sees
//! the advanced counter and refuses the replay: of N hosts offering one
//! code, exactly one accepts. A user without a row gets one inserted
//! (holding its lock) before the change runs, so two first writes cannot
//! both start from nothing. A change to a record read here just before (a
//! login's code check after its prompt) is first tried without the lock,
//! as an UPDATE that applies only while the row still holds the text read;
//! when it applies to nothing, the locking path runs (and `change` again):
//! the loser of a race retries once, then waits on the lock like any other.
//!
//! A write is acknowledged only after its commit returned (its COMMIT's,
//! or a lone statement's own at the end of its exchange), with
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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use ipnet::IpNet;
use mfa_shared::bypass::{BypassRule, RuleOrigin, parse_network};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Change, Store, StoreError, StoreFault, UserRecord, decode, encode};

mod schema;
mod settings;
mod tls;

pub use settings::{Settings, SettingsError};

/// Reconnect backoff while the database stays out of reach.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct PostgresStore {
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
    /// Each user's record as last read here (its text, at most
    /// [`SEEN_MAX`] users): see [`Store::update_user`].
    seen: Mutex<HashMap<String, String>>,
}

/// Users whose last read record is kept for [`PostgresStore::seen`]; when
/// full, the map starts over (a record not kept costs a round trip, never
/// a wrong answer).
const SEEN_MAX: usize = 4096;

#[derive(Default)]
struct Backoff {
    /// No new connection is attempted before this.
    retry_at: Option<Instant>,
    delay: Duration,
    /// Why the last attempt failed, repeated until the next one.
    cause: String,
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

/// What drives a connection: the future that reads and writes its socket.
type Driver = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// One connection to the database, driven on the thread that uses it: a
/// runtime of its own (a current-thread one, with which its socket is
/// registered) runs the exchanges and the connection together inside the
/// caller's call. A shared runtime would take every exchange to one of its
/// threads and back: two thread wakeups per round trip.
struct Connection {
    client: Client,
    driver: Driver,
    /// Statements prepared on this connection, by their text.
    statements: HashMap<&'static str, Statement>,
    /// None only while dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// A BEGIN was sent and its COMMIT or ROLLBACK has not returned: the
    /// connection may be inside a transaction (see [`PostgresStore::run_once`]).
    in_transaction: Cell<bool>,
}

/// The store may be dropped inside mfad's own runtime (at shutdown), where
/// a runtime must not block waiting for its threads: they are let go.
impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How connections are secured.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(MakeRustlsConnect),
}

impl Connection {
    /// Connect within `limit`.
    fn open(pg: &tokio_postgres::Config, tls: &Tls, limit: Duration, location: &str) -> Result<Connection, StoreError> {
        let unreachable = |cause: String| StoreError::Unusable {
            fault: StoreFault::Unreachable,
            location: location.to_string(),
            cause,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| unreachable(format!("cannot start a connection's runtime: {err}")))?;
        let connect = async {
            match tls {
                Tls::None => pg.connect(NoTls).await.map(|(client, conn)| (client, Box::pin(conn) as Driver)),
                Tls::Rustls(tls) => {
                    pg.connect(tls.clone()).await.map(|(client, conn)| (client, Box::pin(conn) as Driver))
                }
            }
        };
        // The timer is made inside: it belongs to the runtime.
        let connected = runtime.block_on(async { tokio::time::timeout(limit, connect).await });
        let failure = match connected {
            Ok(Ok((client, driver))) => {
                let statements = HashMap::new();
                let (runtime, in_transaction) = (Some(runtime), Cell::new(false));
                return Ok(Connection { client, driver, statements, runtime, in_transaction });
            }
            Ok(Err(err)) => pg_error(location, &err),
            Err(_) => unreachable(format!("no connection within {} ms", limit.as_millis())),
        };
        // A name lookup still running (getaddrinfo, on the runtime's
        // blocking threads: a resolver that does not answer) is let go,
        // not waited for.
        runtime.shutdown_background();
        Err(failure)
    }

    /// Whether the connection is still open. The server may have closed it
    /// while it sat idle (a restart, a failover, `idle_session_timeout`)
    /// with nobody driving it to notice: its runtime's reactor is turned
    /// once, without waiting, and the connection driven, so that what the
    /// server sent is read now and not by the next request.
    fn still_open(&mut self) -> bool {
        let Connection { client, driver, runtime, .. } = self;
        let Some(runtime) = runtime else { return false };
        if client.is_closed() {
            return false;
        }
        runtime.block_on(async {
            tokio::task::yield_now().await;
            std::future::poll_fn(|cx| Poll::Ready(driver.as_mut().poll(cx).is_pending())).await
        })
    }

    /// Run `op` to its end or until `deadline`, driving the connection
    /// meanwhile. The connection ending first is an error.
    fn run<R>(
        &mut self,
        location: &str,
        deadline: Instant,
        late: impl FnOnce() -> StoreError,
        op: impl AsyncFnOnce(&Db<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let Connection { client, driver, statements, runtime, in_transaction } = self;
        let Some(runtime) = runtime else {
            let cause = "the connection is closing".to_string();
            return Err(StoreError::Unusable { fault: StoreFault::Unreachable, location: location.to_string(), cause });
        };
        let db = Db { client, statements: RefCell::new(statements), location, in_transaction };
        runtime.block_on(async {
            let work = tokio::time::timeout_at(deadline, op(&db));
            tokio::select! {
                biased;
                done = work => done.unwrap_or_else(|_| Err(late())),
                ended = driver.as_mut() => Err(match ended {
                    Err(err) => pg_error(location, &err),
                    Ok(()) => StoreError::Unusable {
                        fault: StoreFault::Unreachable,
                        location: location.to_string(),
                        cause: "the database closed the connection".to_string(),
                    },
                }),
            }
        })
    }
}

/// A connection as an operation sees it: its client, and its statements
/// prepared once.
struct Db<'c> {
    client: &'c Client,
    statements: RefCell<&'c mut HashMap<&'static str, Statement>>,
    location: &'c str,
    /// Set before a BEGIN is sent, cleared once its COMMIT or ROLLBACK
    /// returned.
    in_transaction: &'c Cell<bool>,
}

impl Db<'_> {
    /// `sql` prepared on this connection (once: then from the cache).
    async fn prepared(&self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(|err| self.error(err))?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }

    fn error(&self, err: tokio_postgres::Error) -> StoreError {
        pg_error(self.location, &err)
    }

    /// Run `op` in a transaction, committed when it succeeds (when it
    /// fails, the connection is closed: see [`PostgresStore::run_once`]).
    async fn transaction<R>(&self, op: impl AsyncFnOnce(&Db<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.in_transaction.set(true);
        self.client.batch_execute("BEGIN").await.map_err(|err| self.error(err))?;
        let done = op(self).await?;
        self.client.batch_execute("COMMIT").await.map_err(|err| self.error(err))?;
        self.in_transaction.set(false);
        Ok(done)
    }
}

/// The connections: at most `max` open, idle ones kept for the next
/// request.
struct Pool {
    pg: tokio_postgres::Config,
    tls: Tls,
    max: usize,
    /// How long a request waits for a free connection, and how long a new
    /// one may take to connect.
    timeout: Duration,
    state: Mutex<PoolState>,
    /// Told when a connection is given back or closed.
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Idle, in use, or being opened.
    open: usize,
}

/// Why no connection was had.
enum Unavailable {
    /// Every connection stayed in use.
    Busy,
    Failed(StoreError),
}

impl Pool {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection still open (the last given back first: its
    /// server process is the likeliest to be warm), else a new one while
    /// fewer than `max` are open, else the first given back within the
    /// timeout.
    fn take(&self, location: &str) -> Result<Lease<'_>, Unavailable> {
        let wait_until = Instant::now() + self.timeout;
        let mut state = self.state();
        loop {
            if let Some(connection) = state.idle.pop() {
                drop(state);
                let mut lease = Lease { pool: self, connection: Some(connection) };
                if lease.connection.as_mut().is_some_and(Connection::still_open) {
                    return Ok(lease);
                }
                lease.discard();
                state = self.state();
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                // Counted back out however the attempt ends (a panic too).
                let slot = Opening(self);
                let opened = Connection::open(&self.pg, &self.tls, self.timeout, location);
                return match opened {
                    Ok(connection) => {
                        std::mem::forget(slot);
                        Ok(Lease { pool: self, connection: Some(connection) })
                    }
                    Err(err) => Err(Unavailable::Failed(err)),
                };
            }
            let now = Instant::now();
            if now >= wait_until {
                return Err(Unavailable::Busy);
            }
            state = match self.freed.wait_timeout(state, wait_until - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// A connection was closed (or never opened).
    fn closed(&self) {
        self.state().open -= 1;
        self.freed.notify_one();
    }
}

/// A slot of the pool taken for a connection being opened: given back
/// when dropped (forgotten once the connection is open).
struct Opening<'p>(&'p Pool);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// A connection taken from the pool: given back when dropped, unless
/// discarded (or dropped by a panic, which may have left a transaction
/// open on it).
struct Lease<'p> {
    pool: &'p Pool,
    connection: Option<Connection>,
}

impl Lease<'_> {
    fn discard(mut self) {
        if self.connection.take().is_some() {
            self.pool.closed();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        if std::thread::panicking() {
            drop(connection);
            self.pool.closed();
            return;
        }
        self.pool.state().idle.push(connection);
        self.pool.freed.notify_one();
    }
}

impl PostgresStore {
    /// Connect, and bring the schema up to date (under an advisory lock, so
    /// that hosts starting at once migrate once).
    pub fn open(settings: Settings) -> Result<PostgresStore, StoreError> {
        let store = Self::new(settings);
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
        let store = Self::new(settings);
        match store.run(async |_| Ok(())) {
            Ok(()) | Err(StoreError::Unusable { .. }) => Ok(store),
            Err(err) => Err(err),
        }
    }

    fn new(settings: Settings) -> PostgresStore {
        let tls = match settings.tls {
            Some(tls) => Tls::Rustls(tls.into_make()),
            None => Tls::None,
        };
        // Half the deadline each for a free connection and a new one, so a
        // request that had to wait still has time for its queries.
        let pool = Pool {
            pg: settings.pg,
            tls,
            max: settings.pool_size,
            timeout: settings.connect_timeout / 2,
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        };
        PostgresStore {
            pool,
            location: settings.location,
            deadline: settings.connect_timeout,
            backoff: Mutex::new(Backoff::default()),
            migrated: AtomicBool::new(false),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `json` as `user`'s record as last read.
    fn saw(&self, user: &str, json: String) {
        let mut seen = self.seen();
        if seen.len() >= SEEN_MAX && !seen.contains_key(user) {
            seen.clear();
        }
        seen.insert(user.to_string(), json);
    }

    fn unreachable(&self, cause: impl Into<String>) -> StoreError {
        StoreError::Unusable { fault: StoreFault::Unreachable, location: self.location.clone(), cause: cause.into() }
    }

    /// A pooled connection, or why there is none. While connecting keeps
    /// failing, attempts are spaced out (doubling up to [`MAX_BACKOFF`]) and
    /// requests in between are answered at once.
    fn connection(&self) -> Result<Lease<'_>, StoreError> {
        let now = Instant::now();
        let waiting = {
            let backoff = self.backoff();
            backoff.retry_at.filter(|at| now < *at).map(|at| (at - now, backoff.cause.clone()))
        };
        if let Some((wait, cause)) = waiting {
            return Err(self.unreachable(format!("{cause}; next attempt in {} ms", wait.as_millis())));
        }
        match self.pool.take(&self.location) {
            Ok(lease) => {
                *self.backoff() = Backoff::default();
                Ok(lease)
            }
            // Every connection is in use: overload, not an outage (which
            // would open logins under failmode=safe).
            Err(Unavailable::Busy) => {
                Err(StoreError::Busy(format!("all {} connections to the {} are in use", self.pool.max, self.location)))
            }
            Err(Unavailable::Failed(err)) => {
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
    fn run<R>(&self, op: impl AsyncFnOnce(&Db<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            self.run_once(async |db| schema::migrate(db).await)?;
            self.migrated.store(true, Ordering::Release);
        }
        self.run_once(op)
    }

    /// Run `op` on a pooled connection, on this thread, the whole within
    /// the deadline. A connection that may still be inside a transaction
    /// (an operation that began one failed or timed out before ending it)
    /// is closed rather than given back, which rolls the transaction back,
    /// and so is one that is out of reach. So each operation starts on a
    /// connection outside any transaction, where a lone statement is a
    /// transaction that commits on its own; an operation that returned
    /// with its transaction open is a failure, never acknowledged.
    fn run_once<R>(&self, op: impl AsyncFnOnce(&Db<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let deadline = Instant::now() + self.deadline;
        let late = || self.unreachable(format!("no answer within {} s", self.deadline.as_secs()));
        let mut lease = self.connection()?;
        let (result, in_transaction) = match lease.connection.as_mut() {
            Some(connection) => (connection.run(&self.location, deadline, late, op), connection.in_transaction.get()),
            None => (Err(self.unreachable("no connection")), false),
        };
        let result = match result {
            Ok(_) if in_transaction => {
                Err(StoreError::Database("internal error: an operation left its transaction open".to_string()))
            }
            result => result,
        };
        if in_transaction || matches!(result, Err(StoreError::Unusable { .. })) {
            lease.discard();
        }
        result
    }
}

/// The statement that locks a user's row for the rest of the transaction
/// and reads it.
const LOCK_USER: &str = "SELECT record FROM users WHERE name = $1 FOR UPDATE";

/// Lock `user`'s row for the rest of the transaction and read it; a user
/// without a row gets an empty one (rolled back or deleted unless the
/// change writes). Returns the record and whether the row was inserted here.
async fn lock_user(db: &Db<'_>, user: &str) -> Result<(Option<UserRecord>, bool), StoreError> {
    let select = db.prepared(LOCK_USER).await?;
    let row = db.client.query_opt(&select, &[&user]).await.map_err(|err| db.error(err))?;
    locked_record(db, &select, row, user).await
}

/// The record of a row `select` ([`LOCK_USER`]) locked and read, or, when
/// there was none, of the empty row inserted and locked in its place; and
/// whether it was inserted here.
async fn locked_record(
    db: &Db<'_>,
    select: &Statement,
    row: Option<Row>,
    user: &str,
) -> Result<(Option<UserRecord>, bool), StoreError> {
    let mut inserted = false;
    let row = match row {
        Some(row) => row,
        None => {
            let insert =
                db.prepared("INSERT INTO users (name, record) VALUES ($1, NULL) ON CONFLICT (name) DO NOTHING").await?;
            // Zero rows: another host inserted it meanwhile and has
            // committed; its row is read (and locked) below.
            inserted = db.client.execute(&insert, &[&user]).await.map_err(|err| db.error(err))? == 1;
            db.client.query_one(select, &[&user]).await.map_err(|err| db.error(err))?
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
/// committed. On any error the connection is closed (it is marked inside
/// a transaction until the COMMIT or ROLLBACK returned), which rolls back.
async fn update_pipelined(
    db: &Db<'_>,
    user: &str,
    change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
) -> Result<(), StoreError> {
    let client = db.client;
    let select = db.prepared(LOCK_USER).await?;
    let name: [&(dyn ToSql + Sync); 1] = [&user];
    db.in_transaction.set(true);
    let (began, row) = tokio::join!(client.batch_execute("BEGIN"), client.query_opt(&select, &name));
    began.map_err(|err| db.error(err))?;
    // Whether the row was inserted here does not matter: a kept change
    // rolls it back, a written one writes it.
    let (current, _) = locked_record(db, &select, row.map_err(|err| db.error(err))?, user).await?;
    let (statement, json) = match change(current.as_ref()) {
        // Nothing to write: end the transaction without a commit to wait
        // for (an inserted empty row goes with it).
        Change::Keep => {
            client.batch_execute("ROLLBACK").await.map_err(|err| db.error(err))?;
            db.in_transaction.set(false);
            return Ok(());
        }
        Change::Delete => (db.prepared("DELETE FROM users WHERE name = $1").await?, None),
        Change::Put(record) => {
            let json = encode(&record)?;
            (db.prepared("UPDATE users SET record = $2 WHERE name = $1").await?, Some(json))
        }
    };
    let write = async {
        match &json {
            Some(json) => client.execute(&statement, &[&user, json]).await,
            None => client.execute(&statement, &[&user]).await,
        }
    };
    let (written, committed) = tokio::join!(write, client.batch_execute("COMMIT"));
    written.map_err(|err| db.error(err))?;
    committed.map_err(|err| db.error(err))?;
    db.in_transaction.set(false);
    Ok(())
}

/// Write `json` as `user`'s record if the row still holds `seen`, in one
/// round trip: a lone UPDATE, which is a transaction of its own (the
/// connection is outside any, see [`PostgresStore::run_once`]) and is
/// answered after its commit. Whether it wrote. Under READ COMMITTED an
/// UPDATE that finds the row changed by a transaction committed meanwhile
/// (or waits for one holding its lock) checks the condition on the row as
/// it is then.
async fn write_if_unchanged(db: &Db<'_>, user: &str, json: &str, seen: &str) -> Result<bool, StoreError> {
    let swap = db.prepared("UPDATE users SET record = $2 WHERE name = $1 AND record = $3").await?;
    let params: [&(dyn ToSql + Sync); 3] = [&user, &json, &seen];
    let swapped = db.client.execute(&swap, &params).await.map_err(|err| db.error(err))?;
    Ok(swapped == 1)
}

/// Write what `change` decided for a row locked by [`lock_user`].
async fn write_user(db: &Db<'_>, user: &str, change: Change, inserted: bool) -> Result<(), StoreError> {
    match change {
        Change::Keep if !inserted => Ok(()),
        Change::Keep | Change::Delete => {
            let delete = db.prepared("DELETE FROM users WHERE name = $1").await?;
            db.client.execute(&delete, &[&user]).await.map(drop).map_err(|err| db.error(err))
        }
        Change::Put(record) => {
            let json = encode(&record)?;
            let update = db.prepared("UPDATE users SET record = $2 WHERE name = $1").await?;
            db.client.execute(&update, &[&user, &json]).await.map(drop).map_err(|err| db.error(err))
        }
    }
}

impl Store for PostgresStore {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let json = self.run(async |db| {
            let select = db.prepared("SELECT record FROM users WHERE name = $1").await?;
            let row = db.client.query_opt(&select, &[&user]).await.map_err(|err| db.error(err))?;
            Ok(row.and_then(|row| row.get::<_, Option<String>>(0)))
        })?;
        let Some(json) = json else { return Ok(None) };
        let record = decode(user, &json)?;
        self.saw(user, json);
        Ok(Some(record))
    }

    /// A change to a record read here before (a login's code check after
    /// its prompt) is first tried in one statement that writes only while
    /// the row still holds the record as read: one round trip and its
    /// commit, where locking the row first takes two. Any other change,
    /// and one whose row has changed since (another host, a concurrent
    /// login: the database re-reads a row updated meanwhile before it
    /// writes), goes through the row lock, with `change` called again on
    /// the record as it is then. Of two hosts offering the same code, one
    /// write wins either way.
    fn update_user(
        &self,
        user: &str,
        change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError> {
        let seen = self.seen().remove(user);
        let mut swap = None;
        if let Some(seen) = seen
            && let Ok(current) = decode(user, &seen)
            && let Change::Put(record) = change(Some(&current))
        {
            swap = Some((encode(&record)?, seen));
        }
        // Both tries on one connection, within one deadline.
        self.run(async |db| {
            if let Some((json, seen)) = &swap
                && write_if_unchanged(db, user, json, seen).await?
            {
                return Ok(());
            }
            update_pipelined(db, user, change).await
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
        self.run(async |db| {
            db.transaction(async |db| {
                for user in names {
                    let (current, inserted) = lock_user(db, user).await?;
                    let decided = change(user, current.as_ref());
                    write_user(db, user, decided, inserted).await?;
                }
                Ok(())
            })
            .await
        })
    }

    fn list_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async |db| {
            let rows = db
                .client
                .query(
                    "SELECT name, record FROM users WHERE name > $1 AND record IS NOT NULL ORDER BY name LIMIT $2",
                    &[&after.unwrap_or(""), &limit],
                )
                .await
                .map_err(|err| db.error(err))?;
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
        self.run(async |db| {
            let row = db
                .client
                .query_one(
                    "INSERT INTO ip_rules (cidr, bypass_2fa, expires_at) VALUES ($1, $2, $3) RETURNING id",
                    &[&network.to_string(), &bypass_2fa, &expires],
                )
                .await
                .map_err(|err| db.error(err))?;
            Ok(row.get(0))
        })
    }

    fn list_ip_rules(&self) -> Result<Vec<BypassRule>, StoreError> {
        self.run(async |db| {
            let select = db.prepared("SELECT id, cidr, bypass_2fa, expires_at FROM ip_rules ORDER BY id").await?;
            let rows = db.client.query(&select, &[]).await.map_err(|err| db.error(err))?;
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
        self.run(async |db| {
            let removed =
                db.client.execute("DELETE FROM ip_rules WHERE id = $1", &[&id]).await.map_err(|err| db.error(err))?;
            Ok(removed > 0)
        })
    }

    fn get_meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.run(async |db| {
            let row = db
                .client
                .query_opt("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(|err| db.error(err))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn set_meta(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.run(async |db| {
            match value {
                Some(value) => {
                    db.client
                        .execute(
                            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            &[&name, &value],
                        )
                        .await
                }
                None => db.client.execute("DELETE FROM meta WHERE name = $1", &[&name]).await,
            }
            .map(drop)
            .map_err(|err| db.error(err))
        })
    }

    fn init_meta(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.run(async |db| {
            db.client
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await
                .map_err(|err| db.error(err))?;
            let row = db
                .client
                .query_one("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(|err| db.error(err))?;
            Ok(row.get(0))
        })
    }
}
