//! What an operator graphs and alerts on: logins per service and how they
//! ended, lockouts, store trouble, store commit latency, open conversations
//! and connected clients. Counted with atomics on the request path (no
//! lock once a service is known); written as a Prometheus text file for
//! node_exporter's textfile collector (see [`exposition`]), never served on
//! a port.
//!
//! Service names come from clients, and a non-root client's are claims (a
//! local user's own PAM application may call itself `sshd`): only root's
//! (the PAM stacks of sshd, sudo, su, login...) are counted under their
//! name, at most [`MAX_SERVICES`] of them; everything else is counted under
//! [`OTHER`].

pub mod exposition;
pub mod publish;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Service names tracked at most.
pub const MAX_SERVICES: usize = 32;
/// Longer service names are cut to this many characters.
pub const MAX_SERVICE_LABEL: usize = 64;
/// The label of every service not in the table.
pub const OTHER: &str = "other";

/// A per-service counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCounter {
    /// A login conversation begun.
    Asked,
    /// Ended with a code (or an inline set-up) verified: PAM_SUCCESS.
    Passed,
    /// Ended refused: wrong codes, denied, or an error (the module fails closed).
    Failed,
    /// Ended with no code needed: PAM_IGNORE.
    Ignored,
    /// Among the ignored: let through by an IP bypass rule or a trusted source.
    Bypassed,
    /// Ended `unavailable` (store out of reach): the module's failmode decided.
    Unavailable,
    /// A wrong code that locked the account.
    Lockout,
}

impl LoginCounter {
    pub const ALL: [LoginCounter; 7] = [
        LoginCounter::Asked,
        LoginCounter::Passed,
        LoginCounter::Failed,
        LoginCounter::Ignored,
        LoginCounter::Bypassed,
        LoginCounter::Unavailable,
        LoginCounter::Lockout,
    ];

    /// The metric's name and help text.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            LoginCounter::Asked => ("mfad_logins_asked_total", "Login conversations begun."),
            LoginCounter::Passed => ("mfad_logins_passed_total", "Logins that ended with a code verified."),
            LoginCounter::Failed => {
                ("mfad_logins_failed_total", "Logins that ended refused (wrong codes, denied, or an error).")
            }
            LoginCounter::Ignored => {
                ("mfad_logins_ignored_total", "Logins that ended with no code needed (PAM_IGNORE).")
            }
            LoginCounter::Bypassed => {
                ("mfad_logins_bypassed_total", "Ignored logins let through by an IP bypass rule or a trusted source.")
            }
            LoginCounter::Unavailable => (
                "mfad_logins_unavailable_total",
                "Logins answered unavailable (store out of reach; the module's failmode decided).",
            ),
            LoginCounter::Lockout => ("mfad_lockouts_total", "Wrong codes that locked an account."),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const COUNTERS: usize = LoginCounter::ALL.len();

/// The counters of one service name.
#[derive(Debug, Default)]
struct ServiceCounters {
    name: OnceLock<String>,
    counts: [AtomicU64; COUNTERS],
}

/// Where a service's counts go: a slot of the table, or [`OTHER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSlot(Option<usize>);

/// Upper bounds of the commit latency histogram's buckets, in microseconds.
pub const LATENCY_BUCKETS_MICROS: [u64; 13] =
    [500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000];

#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// Every counter and gauge of the daemon.
#[derive(Debug)]
pub struct Metrics {
    services: Vec<ServiceCounters>,
    /// Slots of `services` whose name is set.
    used: AtomicUsize,
    /// Held only while a new name is added.
    adding: Mutex<()>,
    other: ServiceCounters,
    store_errors: AtomicU64,
    unavailable_answers: AtomicU64,
    connected_clients: AtomicU64,
    commit_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            services: (0..MAX_SERVICES).map(|_| ServiceCounters::default()).collect(),
            used: AtomicUsize::new(0),
            adding: Mutex::new(()),
            other: ServiceCounters::default(),
            store_errors: AtomicU64::new(0),
            unavailable_answers: AtomicU64::new(0),
            connected_clients: AtomicU64::new(0),
            commit_latency: Histogram::default(),
        }
    }
}

impl Metrics {
    /// The slot of `service` as named by a caller of uid `peer_uid`, added
    /// to the table if there is room for that caller.
    pub fn service(&self, service: &str, peer_uid: u32) -> ServiceSlot {
        if peer_uid != 0 {
            return ServiceSlot(None);
        }
        let name: String = service.chars().take(MAX_SERVICE_LABEL).collect();
        if let Some(slot) = self.find(&name, self.used.load(Ordering::Acquire)) {
            return slot;
        }
        let _adding = self.adding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let used = self.used.load(Ordering::Acquire);
        if let Some(slot) = self.find(&name, used) {
            return slot;
        }
        if used >= MAX_SERVICES || name == OTHER {
            return ServiceSlot(None);
        }
        let Some(entry) = self.services.get(used) else { return ServiceSlot(None) };
        if entry.name.set(name).is_err() {
            return ServiceSlot(None);
        }
        // Published after the name is set: a reader never sees an empty slot.
        self.used.store(used + 1, Ordering::Release);
        ServiceSlot(Some(used))
    }

    fn find(&self, name: &str, used: usize) -> Option<ServiceSlot> {
        let used = used.min(self.services.len());
        let index = self.services[..used].iter().position(|s| s.name.get().is_some_and(|n| n == name))?;
        Some(ServiceSlot(Some(index)))
    }

    pub fn count(&self, slot: ServiceSlot, counter: LoginCounter) {
        let counters = slot.0.and_then(|i| self.services.get(i)).unwrap_or(&self.other);
        counters.counts[counter.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// [`Metrics::count`] for a service by name.
    pub fn count_service(&self, service: &str, peer_uid: u32, counter: LoginCounter) {
        self.count(self.service(service, peer_uid), counter);
    }

    /// A store call that failed (out of reach, busy, or broken).
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request answered `unavailable`.
    pub fn unavailable_answer(&self) {
        self.unavailable_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// How long one account write took in the store, in microseconds.
    pub fn observe_commit(&self, micros: u64) {
        let bucket = LATENCY_BUCKETS_MICROS.iter().position(|&bound| micros <= bound);
        let bucket = bucket.unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.commit_latency.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.commit_latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A client connected; counted until the guard is dropped.
    pub fn connected(&self) -> Connected<'_> {
        self.connected_clients.fetch_add(1, Ordering::Relaxed);
        Connected(&self.connected_clients)
    }
}

/// A connected client, counted while it lives.
#[derive(Debug)]
pub struct Connected<'a>(&'a AtomicU64);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
