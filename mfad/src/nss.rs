//! Users and groups the standard way (NSS), so LDAP/SSSD accounts work.

use std::ffi::CString;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::unistd::{Group, Uid, User};

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
/// directory); past that, new ones fail at once instead of piling up
/// threads. Lookups that answer in time never count.
const MAX_OVERDUE_LOOKUPS: usize = 16;

/// Lookup threads kept waiting for the next lookup. Starting a thread per
/// lookup cost about 5 % of mfad's time per login; a burst may start more,
/// and those beyond this end when their lookup does.
const MAX_IDLE_LOOKUP_THREADS: usize = 4;

/// A lookup runs, then answers its caller with the reply it returns: the
/// thread counts itself idle in between, so that a caller's next lookup
/// finds it.
type Lookup = Box<dyn FnOnce(&dyn Directory) -> Reply + Send>;
type Reply = Box<dyn FnOnce() + Send>;

/// A directory whose every lookup answers within a deadline: it runs on a
/// lookup thread, and one that outlasts the deadline is an error (the
/// thread finishes on its own when the directory answers). A lookup never
/// waits for a thread that is busy: it takes an idle one or starts one.
pub struct DeadlineDirectory {
    inner: Arc<dyn Directory>,
    deadline: Duration,
    overdue: Arc<AtomicUsize>,
    threads: Arc<LookupThreads>,
    /// Dropped with the directory, which ends its idle threads.
    sender: mpsc::Sender<Lookup>,
}

/// The idle lookup threads: each waits on `queue`; `idle` counts those
/// not yet claimed by a caller, so a queued lookup always has its thread.
struct LookupThreads {
    queue: Mutex<mpsc::Receiver<Lookup>>,
    idle: AtomicUsize,
}

impl LookupThreads {
    /// Run `lookup` on an idle thread, or on a new one when none is idle.
    fn run(
        self: &Arc<Self>,
        sender: &mpsc::Sender<Lookup>,
        inner: Arc<dyn Directory>,
        lookup: Lookup,
    ) -> Result<(), ()> {
        if self.idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            // The claimed thread is in (or on its way to) `next`.
            return sender.send(lookup).map_err(drop);
        }
        let threads = self.clone();
        std::thread::Builder::new()
            .name("nss-lookup".into())
            .spawn(move || {
                let mut lookup = lookup;
                loop {
                    let reply = lookup(inner.as_ref());
                    let stays = threads.offer_idle();
                    reply();
                    match stays.then(|| threads.next()).flatten() {
                        Some(next) => lookup = next,
                        None => return,
                    }
                }
            })
            .map(drop)
            .map_err(drop)
    }

    /// Count this thread as idle unless enough already are.
    fn offer_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_IDLE_LOOKUP_THREADS).then_some(n + 1))
            .is_ok()
    }

    fn next(&self) -> Option<Lookup> {
        let queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.recv().ok()
    }
}

/// Where one lookup is: running, done, or given up on (overdue).
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const OVERDUE: u8 = 2;

impl DeadlineDirectory {
    pub fn new(inner: Arc<dyn Directory>, deadline: Duration) -> Self {
        let (sender, queue) = mpsc::channel();
        let threads = Arc::new(LookupThreads { queue: Mutex::new(queue), idle: AtomicUsize::new(0) });
        DeadlineDirectory { inner, deadline, overdue: Arc::new(AtomicUsize::new(0)), threads, sender }
    }

    fn bounded<T: Send + 'static>(
        &self,
        lookup: impl FnOnce(&dyn Directory) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        if self.overdue.load(Ordering::SeqCst) >= MAX_OVERDUE_LOOKUPS {
            return Err("the user directory is not answering (earlier lookups are still pending)".into());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let overdue = self.overdue.clone();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let finished = state.clone();
        let job: Lookup = Box::new(move |directory| {
            let answer = lookup(directory);
            Box::new(move || {
                let _ = tx.send(answer);
                if finished.swap(DONE, Ordering::SeqCst) == OVERDUE {
                    overdue.fetch_sub(1, Ordering::SeqCst);
                }
            })
        });
        if self.threads.run(&self.sender, self.inner.clone(), job).is_err() {
            return Err("cannot start a directory lookup".into());
        }
        rx.recv_timeout(self.deadline).unwrap_or_else(|_| {
            // Counted before the state changes hands, so the count never
            // goes below zero whichever side is first.
            self.overdue.fetch_add(1, Ordering::SeqCst);
            if state.compare_exchange(RUNNING, OVERDUE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                self.overdue.fetch_sub(1, Ordering::SeqCst);
            }
            Err(format!("the user directory did not answer within {} ms", self.deadline.as_millis()))
        })
    }
}

impl Directory for DeadlineDirectory {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        let user = user.to_string();
        self.bounded(move |d| d.groups_of(&user))
    }

    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        let name = name.to_string();
        self.bounded(move |d| d.account(&name))
    }

    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        self.bounded(move |d| d.name_of_uid(uid))
    }

    /// One trip to a lookup thread for both lookups, within one deadline.
    fn account_and_first_name(&self, name: &str) -> Result<Option<(Account, Option<String>)>, String> {
        let name = name.to_string();
        self.bounded(move |d| d.account_and_first_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that never answers (a hung LDAP server).
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

    #[test]
    fn a_hung_directory_is_an_error_within_the_deadline() {
        let (release, rx) = mpsc::channel();
        let hung = DeadlineDirectory::new(Arc::new(Hung(std::sync::Mutex::new(rx))), Duration::from_millis(100));
        let err = hung.account("alice").unwrap_err();
        assert!(err.contains("did not answer within 100 ms"), "{err}");
        for _ in 1..MAX_OVERDUE_LOOKUPS {
            let _ = hung.name_of_uid(1);
        }
        assert!(hung.groups_of("alice").unwrap_err().contains("earlier lookups are still pending"));
        drop(release);
        // Lookups that answer in time never count, however many run at once.
        let system = Arc::new(DeadlineDirectory::new(Arc::new(SystemDirectory), LOOKUP_DEADLINE));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let system = system.clone();
                std::thread::spawn(move || system.account("root").unwrap().map(|a| a.uid))
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap() == Some(0)));
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

    #[test]
    fn sequential_lookups_reuse_one_thread() {
        let recording = Arc::new(Recording::default());
        let directory = DeadlineDirectory::new(recording.clone(), LOOKUP_DEADLINE);
        for _ in 0..100 {
            assert_eq!(directory.account("alice").unwrap(), None);
        }
        let threads = recording.0.lock().unwrap();
        assert_eq!(threads.len(), 1);
        assert!(!threads.contains(&std::thread::current().id()));
    }

    /// Knows every name as uid 7, and notes which threads looked up what.
    #[derive(Default)]
    struct Known(std::sync::Mutex<Vec<(&'static str, std::thread::ThreadId)>>);

    impl Directory for Known {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn account(&self, name: &str) -> Result<Option<Account>, String> {
            self.0.lock().unwrap().push(("account", std::thread::current().id()));
            Ok(Some(Account { name: name.to_string(), uid: 7 }))
        }
        fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
            self.0.lock().unwrap().push(("name_of_uid", std::thread::current().id()));
            Ok(Some("first".to_string()))
        }
    }

    #[test]
    fn a_name_and_its_uids_first_name_are_one_trip_to_a_lookup_thread() {
        let known = Arc::new(Known::default());
        let directory = DeadlineDirectory::new(known.clone(), LOOKUP_DEADLINE);
        let (account, first) = directory.account_and_first_name("alias").unwrap().unwrap();
        assert_eq!((account.name.as_str(), account.uid, first.as_deref()), ("alias", 7, Some("first")));
        let calls = known.0.lock().unwrap();
        assert_eq!(calls.iter().map(|(what, _)| *what).collect::<Vec<_>>(), ["account", "name_of_uid"]);
        assert_eq!(calls[0].1, calls[1].1, "both on one thread");
        assert_ne!(calls[0].1, std::thread::current().id(), "not the caller's");
    }

    #[test]
    fn root_is_known() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group_names("root").unwrap().iter().any(|g| g == "root"));
        assert!(group_names("no-such-user-mfad").unwrap().is_empty());
    }
}
