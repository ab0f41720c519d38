//! The SQLite store's writer: group commit led by the callers themselves.
//!
//! Every change is on disk before its caller returns, and a sync costs
//! far more than a change, so changes that arrive together share one. A
//! caller that finds nobody writing leads: on its own thread it applies the
//! changes queued (its own first, each in a savepoint of its own, so that
//! one failing leaves the others) in one transaction, commits once, answers
//! their callers, hands the lead to the first caller queued behind the batch
//! if there is one, and returns. A caller that finds a leader queues its
//! change and sleeps until it is answered or handed the lead. So a lone
//! write costs no thread hand-off (waking a thread, often on the other CPU,
//! costs tens of µs each way), and under load the changes that arrive during
//! a commit make the next batch, which grows by itself (LevelDB's writer
//! queue). A leader leads one batch only: its own caller waits for nobody
//! else's changes.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::Thread;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::StoreError;
use super::files::StoreFiles;
use super::sqlite::db;

/// Changes applied in one transaction at most, which bounds how long the
/// first of them waits for its commit.
const MAX_BATCH: usize = 256;

/// A caller's change, run by whichever caller leads its batch; the caller
/// waits for it.
type Task = Borrowed<'static>;
/// A task as made, borrowing from its caller for `'a`.
type Borrowed<'a> = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send + 'a>;

/// The connection that writes, and the changes waiting for it.
pub(super) struct Writer {
    /// Held by a leader for the whole of its batch, so between batches (and
    /// only then) it is free and out of any transaction.
    conn: Mutex<Connection>,
    /// None for an in-memory store; checked before each batch commits.
    files: Option<Arc<StoreFiles>>,
    queue: Mutex<Queue>,
    /// The most changes one transaction has held.
    #[cfg(test)]
    largest_batch: AtomicUsize,
}

struct Queue {
    /// Waiting for a batch, in arrival order. A caller that leads (or is
    /// being handed the lead) has its own job first until it takes its batch.
    jobs: VecDeque<Job>,
    /// Whether a caller leads (or has been handed the lead): when not, the
    /// queue is empty.
    leading: bool,
}

/// Fields in this order: a job dropped unrun drops its task before its
/// reply answers, so a caller woken by that borrows nothing.
struct Job {
    task: Task,
    reply: Reply,
}

/// A caller waiting in [`Writer::write`], woken on its own (never all
/// waiters at once).
struct Caller {
    thread: Thread,
    turn: Mutex<Turn>,
}

enum Turn {
    Waiting,
    /// Handed the lead: its job is first in the queue.
    Lead,
    Done(Result<(), StoreError>),
}

impl Caller {
    fn set(&self, turn: Turn) {
        *lock(&self.turn) = turn;
        // Costs no system call unless the caller sleeps.
        self.thread.unpark();
    }

    /// Sleep until answered or handed the lead.
    fn wait(&self) -> Turn {
        loop {
            // Taken in a statement of its own: the lock is not held asleep.
            let turn = std::mem::replace(&mut *lock(&self.turn), Turn::Waiting);
            match turn {
                Turn::Waiting => std::thread::park(),
                turn => return turn,
            }
        }
    }
}

/// The answer owed to a queued caller. Dropped unsent (a batch cut short
/// by a bug), it answers with an error, so that no caller waits forever.
struct Reply {
    to: Arc<Caller>,
    sent: bool,
}

impl Reply {
    fn send(mut self, answer: Result<(), StoreError>) {
        self.to.set(Turn::Done(answer));
        self.sent = true;
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            self.to.set(Turn::Done(Err(StoreError::Database("the store's batch was cut short".to_string()))));
        }
    }
}

/// Hands the lead on when dropped, however the leader leaves.
struct HandOff<'w>(&'w Writer);

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        match queue.jobs.front() {
            Some(next) => next.reply.to.set(Turn::Lead),
            None => queue.leading = false,
        }
    }
}

/// The batch's transaction, rolled back unless it committed, however the
/// leader leaves (an open transaction would fail every batch after it).
struct Transaction<'c>(&'c Connection);

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// SQLite checkpoints the WAL into the store file when its last connection
/// closes; into a file that is no longer the store (deleted, overwritten)
/// that would write valid pages over whatever is there.
impl Drop for Writer {
    fn drop(&mut self) {
        if self.verify().is_err() {
            let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
            let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        }
    }
}

impl Writer {
    /// The writer of `conn`; `files`, when the store is a file, are checked
    /// before each batch commits.
    pub(super) fn new(conn: Connection, files: Option<Arc<StoreFiles>>) -> Writer {
        Writer {
            conn: Mutex::new(conn),
            files,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), leading: false }),
            #[cfg(test)]
            largest_batch: AtomicUsize::new(0),
        }
    }

    /// Run `read` on the writer's connection, outside any batch (an
    /// in-memory store has one connection, which reads too).
    pub(super) fn read<R>(&self, read: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let conn = lock(&self.conn);
        guarded(|| read(&conn))
    }

    /// The writer's connection while no batch holds it, for a read: its
    /// cache is current (a reader connection rereads every page a commit
    /// touched), and a read never waits behind a commit for it. A leader
    /// may find it taken by a read (one at a time, a few µs each; rarely
    /// by another one right after), which costs less than sending reads to
    /// the reader connection whenever a write is queued: at 32 clients that
    /// is nearly always, and cost 4 % of the throughput.
    pub(super) fn idle_connection(&self) -> Option<MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Run `apply` in a batch and return its result once the batch is on
    /// disk (or the error that kept it off).
    pub(super) fn write<R: Send>(
        &self,
        apply: impl FnOnce(&Connection) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        let mut slot: Option<Result<R, StoreError>> = None;
        let answer = {
            let slot = &mut slot;
            let task = move |conn: &Connection| {
                let result = apply(conn);
                let status = result.as_ref().map(drop).map_err(Clone::clone);
                *slot = Some(result);
                status
            };
            let task: Borrowed<'_> = Box::new(task);
            // SAFETY: the task borrows `slot` and what `apply` borrows, all
            // of which outlive this call, and this call does not return
            // before the task is gone. It returns once its caller's turn is
            // `Done`, which only a `Reply` sets, and a reply is sent or
            // dropped only after its job's task was run (consuming it) or
            // dropped (see [`Job`]). A leader that unwinds is caught below,
            // not let out of this call: its own job has then either been
            // answered, or it is still first in the queue and the hand-off
            // makes this caller lead again.
            let task: Task = unsafe { std::mem::transmute::<Borrowed<'_>, Task>(task) };
            let me = Arc::new(Caller { thread: std::thread::current(), turn: Mutex::new(Turn::Waiting) });
            let mut lead = {
                let mut queue = lock(&self.queue);
                queue.jobs.push_back(Job { task, reply: Reply { to: me.clone(), sent: false } });
                !std::mem::replace(&mut queue.leading, true)
            };
            loop {
                if lead {
                    // Tasks are already guarded: an unwind here is a bug of
                    // this file, and must not let this call return early.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| self.lead()));
                }
                match me.wait() {
                    Turn::Done(answer) => break answer,
                    Turn::Lead | Turn::Waiting => lead = true,
                }
            }
        };
        match answer {
            Ok(()) => slot.unwrap_or_else(|| Err(StoreError::Database("the change did not run".to_string()))),
            Err(err) => Err(err),
        }
    }

    /// Lead one batch: the jobs first in the queue, the leader's own first,
    /// in one transaction; then hand the lead on and answer them.
    fn lead(&self) {
        let hand_off = HandOff(self);
        let conn = lock(&self.conn);
        let batch: Vec<Job> = {
            let mut queue = lock(&self.queue);
            let n = queue.jobs.len().min(MAX_BATCH);
            queue.jobs.drain(..n).collect()
        };
        #[cfg(test)]
        self.largest_batch.fetch_max(batch.len(), Ordering::Relaxed);
        // IMMEDIATE takes the write lock before reading, so another process
        // sharing the file cannot interleave with the batch. The files are
        // checked once, before the commit: nothing of the batch is answered
        // before it, and a file gone or replaced stays so.
        let begun = run(&conn, "BEGIN IMMEDIATE");
        let transaction = Transaction(&conn);
        let answered: Vec<(Reply, Result<(), StoreError>)> = match begun {
            Err(err) => batch.into_iter().map(|job| (job.reply, Err(err.clone()))).collect(),
            Ok(()) => {
                let applied: Vec<_> =
                    batch.into_iter().map(|Job { task, reply }| (reply, apply(&conn, task))).collect();
                match commit(&conn, self.verify()) {
                    Some(err) => applied.into_iter().map(|(reply, _)| (reply, Err(err.clone()))).collect(),
                    None => applied,
                }
            }
        };
        drop(transaction);
        drop(conn);
        // The next batch starts before this one's callers are woken: the
        // sync is what the queue waits on.
        drop(hand_off);
        for (reply, answer) in answered {
            reply.send(answer);
        }
    }

    /// Whether the store's files are still the ones opened, intact.
    fn verify(&self) -> Result<(), StoreError> {
        self.files.as_ref().map_or(Ok(()), |files| files.verify())
    }

    #[cfg(test)]
    pub(super) fn largest_batch(&self) -> usize {
        self.largest_batch.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.queue).jobs.len()
    }
}

/// A lock whose holder panicked is taken over: what it guards stays
/// consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `f`, a panic in it (a bug in a caller's change) turned into an
/// error rather than the end of the batch.
fn guarded<R>(f: impl FnOnce() -> Result<R, StoreError>) -> Result<R, StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(StoreError::Database("a store update panicked; it was rolled back".to_string())))
}

/// Apply one change in a savepoint of the open batch: rolled back alone if
/// it fails.
fn apply(conn: &Connection, task: Task) -> Result<(), StoreError> {
    // SQLite rolls a transaction back by itself after some errors (a full
    // disk, an I/O error); a savepoint now would be a transaction of its
    // own, committed at its release and outside the batch.
    if conn.is_autocommit() {
        return Err(StoreError::Database("the batch was rolled back after an error".to_string()));
    }
    run(conn, "SAVEPOINT one_write")?;
    let result = guarded(|| task(conn));
    match result {
        Ok(()) => run(conn, "RELEASE one_write")?,
        Err(_) => conn.execute_batch("ROLLBACK TO one_write; RELEASE one_write").map_err(db)?,
    }
    result
}

/// Run one statement of the batch's own, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(drop).map_err(db)
}

/// Commit the batch, after a last look that the file is still the store;
/// the error that kept it off the disk, if any (the batch's [`Transaction`]
/// then rolls it back).
fn commit(conn: &Connection, verified: Result<(), StoreError>) -> Option<StoreError> {
    match verified {
        Err(err) => Some(err),
        Ok(()) => run(conn, "COMMIT").err(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A writer on a file in WAL mode with synchronous=FULL, as the store's,
    /// with a table `t (k INTEGER PRIMARY KEY, v INTEGER)`.
    fn file_writer(dir: &std::path::Path) -> Arc<Writer> {
        let conn = Connection::open(dir.join("w.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)").unwrap();
        Arc::new(Writer::new(conn, None))
    }

    fn count(writer: &Writer) -> i64 {
        writer.read(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db)).unwrap()
    }

    /// One thread per key, each inserting the row `(k, k)`.
    fn insert_each(
        writer: &Arc<Writer>,
        keys: std::ops::RangeInclusive<i64>,
    ) -> Vec<std::thread::JoinHandle<Result<usize, StoreError>>> {
        keys.map(|k| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.write(|conn| conn.execute("INSERT INTO t (k, v) VALUES (?1, ?1)", [k]).map_err(db))
            })
        })
        .collect()
    }

    /// Runs `f` on a thread; None when it did not finish within 10 s (a hang).
    fn within_10s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// Wait, yielding, until `n` jobs are queued behind the batch running.
    fn until_queued(writer: &Writer, n: usize) {
        while writer.queued() < n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lone_write_runs_on_its_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let writer = file_writer(dir.path());
        let ran_on = writer
            .write(|conn| {
                conn.execute("INSERT INTO t (k, v) VALUES (1, 1)", []).map_err(db)?;
                Ok(std::thread::current().id())
            })
            .unwrap();
        assert_eq!(ran_on, std::thread::current().id());
        assert_eq!(count(&writer), 1);
        assert_eq!(writer.largest_batch(), 1);
    }

    #[test]
    fn concurrent_writes_all_land_and_share_commits() {
        const THREADS: i64 = 16;
        const EACH: i64 = 50;
        let dir = tempfile::tempdir().unwrap();
        let writer = file_writer(dir.path());
        let start = Arc::new(Barrier::new(THREADS as usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (writer, start) = (writer.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        let k = t * EACH + i;
                        writer
                            .write(|conn| conn.execute("INSERT INTO t (k, v) VALUES (?1, ?1)", [k]).map_err(db))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count(&writer), THREADS * EACH);
        let sum: i64 =
            writer.read(|conn| conn.query_row("SELECT sum(v) FROM t", [], |r| r.get(0)).map_err(db)).unwrap();
        assert_eq!(sum, (0..THREADS * EACH).sum::<i64>());
        assert!(writer.largest_batch() > 1, "no commit was shared");
    }

    #[test]
    fn the_callers_queued_behind_a_batch_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let writer = file_writer(dir.path());
        let (started, has_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let first = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.write(move |conn| {
                    conn.execute("INSERT INTO t (k, v) VALUES (0, 0)", []).map_err(db)?;
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        // The first leads a batch now open, so every other queues behind it.
        has_started.recv().unwrap();
        let others = insert_each(&writer, 1..=8);
        until_queued(&writer, 8);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for other in others {
            assert_eq!(other.join().unwrap().unwrap(), 1);
        }
        assert_eq!(writer.largest_batch(), 8);
        assert_eq!(count(&writer), 9);
    }

    #[test]
    fn a_panicking_leader_does_not_strand_the_callers_queued_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let writer = file_writer(dir.path());
        let (started, has_started) = mpsc::channel();
        let queued = {
            let writer = writer.clone();
            move || until_queued(&writer, 4)
        };
        let leader = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.write(|conn| -> Result<(), StoreError> {
                    conn.execute("INSERT INTO t (k, v) VALUES (0, 0)", []).map_err(db)?;
                    started.send(()).unwrap();
                    queued();
                    panic!("a bug in the leader's change")
                })
            })
        };
        has_started.recv().unwrap();
        let others = insert_each(&writer, 1..=4);
        let led = within_10s(move || leader.join().unwrap());
        assert!(matches!(led, Some(Err(StoreError::Database(_)))), "the panicking change: {led:?}");
        let results = within_10s(move || others.into_iter().map(|o| o.join().unwrap()).collect::<Vec<_>>());
        let results = results.expect("a caller queued behind the panic hung");
        assert!(results.iter().all(|r| matches!(r, Ok(1))), "{results:?}");
        let keys: Vec<i64> = writer
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").map_err(db)?;
                let keys = stmt.query_map([], |r| r.get(0)).map_err(db)?;
                keys.collect::<Result<_, _>>().map_err(db)
            })
            .unwrap();
        assert_eq!(keys, vec![1, 2, 3, 4], "the panicked change was rolled back");
        let after = writer.clone();
        let done =
            within_10s(move || after.write(|conn| conn.execute("INSERT INTO t (k, v) VALUES (5, 5)", []).map_err(db)));
        assert!(matches!(done, Some(Ok(1))), "a write after the panic: {done:?}");
    }
}
