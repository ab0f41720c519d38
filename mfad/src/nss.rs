//! Users and groups the standard way (NSS), so LDAP/SSSD accounts work.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::unistd::{Group, Uid, User};

use crate::clock::Clock;

mod files;
pub use files::FilesCache;

/// The account name of a uid, if NSS knows it.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// Names of every group `user` belongs to (primary and supplementary), via
/// getgrouplist(3). Empty for a user NSS does not know; an error when NSS
/// fails (an unreachable LDAP server), so that callers can fail closed.
pub fn group_names(user: &str) -> Result<Vec<String>, String> {
    let account = match User::from_name(user) {
        Ok(Some(account)) => account,
        Ok(None) => return Ok(Vec::new()),
        Err(err) => return Err(format!("user lookup failed: {err}")),
    };
    let name = CString::new(user).map_err(|_| "user name holds a NUL byte".to_string())?;
    let gids = nix::unistd::getgrouplist(&name, account.gid).map_err(|err| format!("getgrouplist failed: {err}"))?;
    let mut names = Vec::with_capacity(gids.len());
    for gid in gids {
        match Group::from_gid(gid) {
            Ok(Some(group)) => names.push(group.name),
            // A gid without a name cannot match a configured group name.
            Ok(None) => {}
            Err(err) => return Err(format!("group lookup failed: {err}")),
        }
    }
    Ok(names)
}

/// Host name for the default issuer.
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".to_string())
}

/// An account as NSS knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The canonical name (`pw_name`): `alice` for `ALICE` or
    /// `alice@corp.example` under a case-insensitive directory.
    pub name: String,
    pub uid: u32,
}

/// Accounts and group membership, swappable in tests.
pub trait Directory: Send + Sync {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String>;

    /// The account `name` stands for; `None` when NSS does not know it.
    fn account(&self, name: &str) -> Result<Option<Account>, String>;

    /// The name NSS gives first for `uid` (several names may share a uid).
    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String>;

    /// [`Directory::account`], and for an account found the name NSS gives
    /// first for its uid: what resolving a name at login needs, in one go.
    fn account_and_first_name(&self, name: &str) -> Result<Option<(Account, Option<String>)>, String> {
        let Some(account) = self.account(name)? else { return Ok(None) };
        let first = self.name_of_uid(account.uid)?;
        Ok(Some((account, first)))
    }
}

/// The system's NSS.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemDirectory;

impl Directory for SystemDirectory {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        group_names(user)
    }

    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        match User::from_name(name) {
            Ok(user) => Ok(user.map(|u| Account { name: u.name, uid: u.uid.as_raw() })),
            Err(err) => Err(format!("user lookup failed: {err}")),
        }
    }

    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(user) => Ok(user.map(|u| u.name)),
            Err(err) => Err(format!("user lookup failed: {err}")),
        }
    }
}

/// How long one lookup may take: well below the module's default timeout
/// (10 s), so that a hung directory (LDAP) is a deny with a reason, never
/// the silence that `failmode=safe` would let through.
/// A login makes at most three bounded lookups (one per name it resolves,
/// at most two, and the groups, which elevation never needs), so even a
/// directory that answers each just in time answers within 6 s.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// Lookups that may be left running past their deadline at once (a hung
/// directory); past that, new ones fail at once instead of holding more
/// connections. Lookups that answer in time never count.
const MAX_OVERDUE_LOOKUPS: usize = 16;

/// How a client is told no when a lookup made for its request outlives
/// its deadline. The lookup keeps the connection's thread (NSS cannot be
/// interrupted), so the watchdog thread answers in its place.
pub trait EarlyAnswer: Send + Sync {
    /// Deny the request in flight, for `reason`, without blocking. Called
    /// from the watchdog thread, at most once per overdue lookup, before
    /// the lookup's caller learns that it was overdue.
    fn answer(&self, reason: &str);
}

thread_local! {
    /// The early answer of the request this thread is serving, if any.
    static EARLY_ANSWER: RefCell<Option<Arc<dyn EarlyAnswer>>> = const { RefCell::new(None) };
}

/// Run `serve` with `answer` as the early answer of every bounded lookup it
/// makes on this thread.
pub fn with_early_answer<R>(answer: Arc<dyn EarlyAnswer>, serve: impl FnOnce() -> R) -> R {
    /// Puts back the early answer there was, however `serve` ends.
    struct Restore(Option<Arc<dyn EarlyAnswer>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            EARLY_ANSWER.with(|current| *current.borrow_mut() = previous);
        }
    }
    let _restore = Restore(EARLY_ANSWER.with(|current| current.replace(Some(answer))));
    serve()
}

/// A directory whose every lookup answers within a deadline. A lookup
/// runs on its caller's thread (a hand-off to another thread would cost a
/// login two wakeups); a watchdog thread watches the deadlines, and when one
/// passes it gives the request its early answer (see [`with_early_answer`]),
/// and the lookup, whenever it returns, is an error.
pub struct DeadlineDirectory {
    inner: Arc<dyn Directory>,
    deadline: Duration,
    watch: Arc<Watch>,
}

/// The lookups in flight, shared with the watchdog thread.
struct Watch {
    clock: Arc<dyn Clock>,
    /// Every lookup's time limit; also how long the watchdog sleeps while
    /// no lookup runs, so that a lookup started meanwhile (whose deadline
    /// is later than that wakeup) needs no wakeup of its own.
    deadline: Duration,
    table: Mutex<Table>,
    /// Signalled when a lookup's deadline comes before the watchdog's next
    /// wakeup, and when the directory is dropped.
    changed: Condvar,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    running: HashMap<u64, Watched>,
    /// Lookups marked overdue whose caller has not returned yet.
    overdue: usize,
    /// When the watchdog wakes next (monotonic µs); `None` before it has
    /// started.
    wakes_at: Option<u64>,
    /// How many times the watchdog has looked at the table (for tests).
    rounds: u64,
    started: bool,
    stopped: bool,
}

struct Watched {
    deadline: u64,
    overdue: bool,
    answer: Option<Arc<dyn EarlyAnswer>>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// Note a lookup that must end by `deadline`; its id, or why it may
    /// not start.
    fn start(self: &Arc<Self>, deadline: u64) -> Result<u64, String> {
        let mut table = lock(&self.table);
        if table.overdue >= MAX_OVERDUE_LOOKUPS {
            return Err("the user directory is not answering (earlier lookups are still pending)".into());
        }
        if !table.started {
            let watch = self.clone();
            std::thread::Builder::new()
                .name("nss-watchdog".into())
                .spawn(move || watch.watchdog())
                .map_err(|err| format!("cannot start the lookup watchdog: {err}"))?;
            table.started = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        let answer = EARLY_ANSWER.with(|current| current.borrow().clone());
        table.running.insert(id, Watched { deadline, overdue: false, answer });
        if table.wakes_at.is_none_or(|at| at > deadline) {
            self.changed.notify_one();
        }
        Ok(id)
    }

    /// The lookup `id` has returned: whether it was in time.
    fn end(&self, id: u64) -> bool {
        let mut table = lock(&self.table);
        match table.running.remove(&id) {
            Some(Watched { overdue: true, .. }) => {
                table.overdue -= 1;
                false
            }
            _ => true,
        }
    }

    /// Mark the lookups past their deadline overdue and answer for them;
    /// sleep until the next deadline, or for one deadline's length while
    /// no lookup runs (a login's lookup then wakes no other thread).
    fn watchdog(&self) {
        // At least a millisecond: a zero deadline must not make it spin.
        let idle_wait = u64::try_from(self.deadline.as_micros()).unwrap_or(u64::MAX).max(1_000);
        let mut table = lock(&self.table);
        while !table.stopped {
            table.rounds += 1;
            let now = self.clock.monotonic_micros();
            let mut answers = Vec::new();
            let mut next = now.saturating_add(idle_wait);
            let mut newly_overdue = 0;
            for watched in table.running.values_mut().filter(|w| !w.overdue) {
                if watched.deadline <= now {
                    watched.overdue = true;
                    newly_overdue += 1;
                    answers.extend(watched.answer.clone());
                } else {
                    next = next.min(watched.deadline);
                }
            }
            table.overdue += newly_overdue;
            table.wakes_at = Some(next);
            // Answered while the table is held (an answer never blocks), so
            // that a lookup's caller, which takes the table on its return,
            // finds its request answered, not about to be.
            for answer in answers {
                answer.answer("the user directory did not answer in time");
            }
            let wait = Duration::from_micros(next.saturating_sub(now));
            table = self.changed.wait_timeout(table, wait).map_or_else(|p| p.into_inner().0, |(t, _)| t);
        }
    }
}

impl DeadlineDirectory {
    pub fn new(inner: Arc<dyn Directory>, deadline: Duration, clock: Arc<dyn Clock>) -> Self {
        let watch = Watch { clock, deadline, table: Mutex::new(Table::default()), changed: Condvar::new() };
        DeadlineDirectory { inner, deadline, watch: Arc::new(watch) }
    }

    fn bounded<T>(&self, lookup: impl FnOnce(&dyn Directory) -> Result<T, String>) -> Result<T, String> {
        /// Takes the lookup off the watch however it ends (a panic too).
        struct OnWatch<'a>(&'a Watch, Option<u64>);
        impl OnWatch<'_> {
            fn in_time(mut self) -> bool {
                self.1.take().is_none_or(|id| self.0.end(id))
            }
        }
        impl Drop for OnWatch<'_> {
            fn drop(&mut self) {
                if let Some(id) = self.1.take() {
                    self.0.end(id);
                }
            }
        }
        let deadline_us = u64::try_from(self.deadline.as_micros()).unwrap_or(u64::MAX);
        let id = self.watch.start(self.watch.clock.monotonic_micros().saturating_add(deadline_us))?;
        let on_watch = OnWatch(&self.watch, Some(id));
        let answer = lookup(self.inner.as_ref());
        if on_watch.in_time() {
            answer
        } else {
            Err(format!("the user directory did not answer within {} ms", self.deadline.as_millis()))
        }
    }
}

impl Drop for DeadlineDirectory {
    fn drop(&mut self) {
        lock(&self.watch.table).stopped = true;
        self.watch.changed.notify_all();
    }
}

impl Directory for DeadlineDirectory {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        self.bounded(|d| d.groups_of(user))
    }

    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        self.bounded(|d| d.account(name))
    }

    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        self.bounded(|d| d.name_of_uid(uid))
    }

    /// Both lookups within one deadline.
    fn account_and_first_name(&self, name: &str) -> Result<Option<(Account, Option<String>)>, String> {
        self.bounded(|d| d.account_and_first_name(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::mpsc;

    use crate::clock::SystemClock;

    /// A directory that never answers (a hung LDAP server) until released.
    struct Hung(std::sync::Mutex<mpsc::Receiver<()>>);

    impl Directory for Hung {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            let _ = self.0.lock().unwrap().recv();
            Ok(Vec::new())
        }
        fn account(&self, _: &str) -> Result<Option<Account>, String> {
            let _ = self.0.lock().unwrap().recv();
            Ok(None)
        }
        fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
            let _ = self.0.lock().unwrap().recv();
            Ok(None)
        }
    }

    /// Passes on every early answer it is asked to give.
    struct Told(std::sync::Mutex<mpsc::Sender<String>>);

    impl EarlyAnswer for Told {
        fn answer(&self, reason: &str) {
            self.0.lock().unwrap().send(reason.to_string()).unwrap();
        }
    }

    fn deadline_directory(inner: Arc<dyn Directory>, deadline: Duration) -> DeadlineDirectory {
        DeadlineDirectory::new(inner, deadline, Arc::new(SystemClock))
    }

    #[test]
    fn a_hung_lookup_is_answered_early_and_is_an_error_when_it_returns() {
        let (release, rx) = mpsc::channel();
        let hung = deadline_directory(Arc::new(Hung(std::sync::Mutex::new(rx))), Duration::from_millis(100));
        let (told, early) = mpsc::channel();
        let told: Arc<dyn EarlyAnswer> = Arc::new(Told(std::sync::Mutex::new(told)));
        std::thread::scope(|scope| {
            let lookups: Vec<_> = (0..MAX_OVERDUE_LOOKUPS)
                .map(|_| scope.spawn(|| with_early_answer(told.clone(), || hung.account("alice"))))
                .collect();
            // Every hung lookup is answered for, once, while it still hangs.
            for _ in 0..MAX_OVERDUE_LOOKUPS {
                let reason = early.recv_timeout(Duration::from_secs(10)).expect("an early answer");
                assert!(reason.contains("did not answer in time"), "{reason}");
            }
            assert!(early.try_recv().is_err(), "answered twice");
            // Past the limit of overdue lookups, a new one fails at once.
            assert!(hung.groups_of("alice").unwrap_err().contains("earlier lookups are still pending"));
            drop(release);
            for lookup in lookups {
                let err = lookup.join().unwrap().unwrap_err();
                assert!(err.contains("did not answer within 100 ms"), "{err}");
            }
        });
        // Returned, they no longer count.
        assert_eq!(hung.account("alice").unwrap(), None);
        assert!(early.try_recv().is_err(), "an answered lookup was answered for");
    }

    #[test]
    fn lookups_in_time_run_on_the_callers_thread_and_are_never_answered_for() {
        let (told, early) = mpsc::channel();
        let told: Arc<dyn EarlyAnswer> = Arc::new(Told(std::sync::Mutex::new(told)));
        let system = Arc::new(deadline_directory(Arc::new(SystemDirectory), Duration::from_millis(500)));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (system, told) = (system.clone(), told.clone());
                std::thread::spawn(move || with_early_answer(told, || system.account("root").unwrap().map(|a| a.uid)))
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap() == Some(0)));
        let recording = Arc::new(Recording::default());
        let directory = deadline_directory(recording.clone(), LOOKUP_DEADLINE);
        for _ in 0..100 {
            assert_eq!(directory.account("alice").unwrap(), None);
        }
        assert_eq!(*recording.0.lock().unwrap(), std::collections::HashSet::from([std::thread::current().id()]));
        // The watchdog wakes at the first deadline and finds nothing overdue.
        assert!(early.recv_timeout(Duration::from_millis(800)).is_err());
    }

    #[test]
    fn a_lookup_in_time_wakes_no_other_thread() {
        let directory = deadline_directory(Arc::new(Recording::default()), Duration::from_secs(60));
        // The first lookup starts the watchdog, which looks at the table once.
        assert_eq!(directory.account("alice").unwrap(), None);
        let rounds = || lock(&directory.watch.table).rounds;
        let mut spins = 0u64;
        while rounds() == 0 {
            assert!(spins < 100_000_000, "the watchdog never ran");
            spins += 1;
            std::thread::yield_now();
        }
        for _ in 0..200 {
            assert_eq!(directory.account("alice").unwrap(), None);
        }
        // Each of those lookups ends before the watchdog's next wakeup:
        // none of them woke it (one more round allows a spurious wakeup).
        assert!(rounds() <= 2, "the watchdog looked {} times", rounds());
    }

    /// Answers every lookup and notes which thread ran it.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<std::collections::HashSet<std::thread::ThreadId>>);

    impl Directory for Recording {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn account(&self, _: &str) -> Result<Option<Account>, String> {
            self.0.lock().unwrap().insert(std::thread::current().id());
            Ok(None)
        }
        fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
            Ok(None)
        }
    }

    /// Knows every name as uid 7, and notes what was looked up.
    #[derive(Default)]
    struct Known(std::sync::Mutex<Vec<&'static str>>);

    impl Directory for Known {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn account(&self, name: &str) -> Result<Option<Account>, String> {
            self.0.lock().unwrap().push("account");
            Ok(Some(Account { name: name.to_string(), uid: 7 }))
        }
        fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
            self.0.lock().unwrap().push("name_of_uid");
            Ok(Some("first".to_string()))
        }
    }

    #[test]
    fn a_name_and_its_uids_first_name_are_looked_up_together() {
        let known = Arc::new(Known::default());
        let directory = deadline_directory(known.clone(), LOOKUP_DEADLINE);
        let (account, first) = directory.account_and_first_name("alias").unwrap().unwrap();
        assert_eq!((account.name.as_str(), account.uid, first.as_deref()), ("alias", 7, Some("first")));
        assert_eq!(*known.0.lock().unwrap(), ["account", "name_of_uid"]);
    }

    #[test]
    fn root_is_known() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group_names("root").unwrap().iter().any(|g| g == "root"));
        assert!(group_names("no-such-user-mfad").unwrap().is_empty());
    }
}
