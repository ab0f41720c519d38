//! The SQLite store's writer: one thread owns the connection that writes.
//!
//! A caller sends its change over a channel and waits. The thread applies
//! every change waiting (each in a savepoint of its own, so that one
//! failing leaves the others) in one transaction, commits once, one fsync
//! for the lot, and only then answers each caller. Changes that arrive
//! during a commit make the next batch: under load batches grow by
//! themselves, and no caller queues on a lock held across an fsync.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::StoreError;
use super::files::StoreFiles;
use super::sqlite::db;

/// Changes applied in one transaction at most, which bounds how long the
/// first of them waits for its commit.
const MAX_BATCH: usize = 256;

/// A caller's change, run on the writer thread; the caller waits for it.
type Task = Borrowed<'static>;
/// A task as made, borrowing from its caller for `'a`.
type Borrowed<'a> = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send + 'a>;

/// Fields in this order: a job dropped unrun drops its task before its
/// reply channel, so a caller woken by the channel's end borrows nothing.
enum Job {
    /// Applied inside the batch's transaction.
    Write { task: Task, done: SyncSender<Result<(), StoreError>> },
    /// Run outside any transaction (an in-memory store has one connection,
    /// which reads too).
    Read { task: Task, done: SyncSender<Result<(), StoreError>> },
}

pub(super) struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Callers between sending a job and having its answer.
    waiting: AtomicUsize,
}

/// Closing the channel ends the thread; waiting for it closes the
/// connection before the store is gone.
impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Start the thread that owns `conn`; `files`, when the store is a file,
    /// are checked before each batch begins and before it commits.
    pub(super) fn start(conn: Connection, files: Option<Arc<StoreFiles>>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new().name("mfad-writer".into()).spawn(move || serve(conn, files, queue))?;
        Ok(Writer { jobs: Some(jobs), thread: Some(thread), waiting: AtomicUsize::new(0) })
    }

    /// Whether a caller is waiting for the writer now (a hint: it may change
    /// the moment after).
    pub(super) fn busy(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Run `apply` in a batch and return its result once the batch is on
    /// disk (or the error that kept it off).
    pub(super) fn write<R: Send>(
        &self,
        apply: impl FnOnce(&Connection) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        self.submit(false, apply)
    }

    /// Run `read` on the writer's connection, outside any batch.
    pub(super) fn read<R: Send>(
        &self,
        read: impl FnOnce(&Connection) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        self.submit(true, read)
    }

    fn submit<R: Send>(
        &self,
        read: bool,
        apply: impl FnOnce(&Connection) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        let stopped = || StoreError::Database("the store's writer has stopped".to_string());
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        let mut slot: Option<Result<R, StoreError>> = None;
        let (done, finished) = mpsc::sync_channel(1);
        {
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
            // before the task is gone: `finished` yields only once the
            // writer has run the task (consuming it) and answered, or once
            // the job was dropped unrun (its task before its `done`, see
            // [`Job`]), which closes the channel. A job refused by `send`
            // is dropped inside this block.
            let task: Task = unsafe { std::mem::transmute::<Borrowed<'_>, Task>(task) };
            let job = if read { Job::Read { task, done } } else { Job::Write { task, done } };
            jobs.send(job).map_err(|_| stopped())?;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let answer = finished.recv();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match answer {
            Ok(Ok(())) => slot.unwrap_or_else(|| Err(StoreError::Database("the change did not run".to_string()))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(stopped()),
        }
    }
}

/// The writer thread: batches until the channel closes.
fn serve(conn: Connection, files: Option<Arc<StoreFiles>>, queue: Receiver<Job>) {
    let verify = || files.as_ref().map_or(Ok(()), |f| f.verify());
    let mut reads = Vec::new();
    while let Ok(job) = queue.recv() {
        let (task, done) = match job {
            Job::Read { task, done } => {
                let _ = done.send(run(&conn, task));
                continue;
            }
            Job::Write { task, done } => (task, done),
        };
        // IMMEDIATE takes the write lock before reading, so another process
        // sharing the file cannot interleave with the batch.
        if let Err(err) = verify().and_then(|()| conn.execute_batch("BEGIN IMMEDIATE").map_err(db)) {
            drop(task);
            let _ = done.send(Err(err));
            continue;
        }
        let mut batch = vec![(done, apply(&conn, task))];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Job::Write { task, done }) => batch.push((done, apply(&conn, task))),
                Ok(Job::Read { task, done }) => reads.push((task, done)),
                Err(_) => break,
            }
        }
        let failure = commit(&conn, verify());
        for (done, applied) in batch {
            let _ = done.send(match &failure {
                Some(err) => Err(err.clone()),
                None => applied,
            });
        }
        for (task, done) in reads.drain(..) {
            let _ = done.send(run(&conn, task));
        }
    }
    // Closing: SQLite checkpoints the WAL into the store file when its last
    // connection closes; into a file that is no longer the store (deleted,
    // overwritten) that would write valid pages over whatever is there.
    if verify().is_err() {
        let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    }
}

/// Run a task, a panic in it (a bug in a caller's change) turned into an
/// error rather than the end of the writer.
fn run(conn: &Connection, task: Task) -> Result<(), StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| task(conn)))
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
    conn.execute_batch("SAVEPOINT one_write").map_err(db)?;
    let result = run(conn, task);
    let end = if result.is_ok() { "RELEASE one_write" } else { "ROLLBACK TO one_write; RELEASE one_write" };
    conn.execute_batch(end).map_err(db)?;
    result
}

/// Commit the batch, after a last look that the file is still the store;
/// the error that kept it off the disk, if any.
fn commit(conn: &Connection, verified: Result<(), StoreError>) -> Option<StoreError> {
    let failure = match verified {
        Err(err) => Some(err),
        Ok(()) => conn.execute_batch("COMMIT").err().map(db),
    };
    if failure.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    failure
}
