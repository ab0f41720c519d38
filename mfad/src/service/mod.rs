//! Request handlers: (daemon state, peer, request) -> response, synchronous
//! and testable without sockets. The server calls [`Daemon::handle`] for
//! every frame; each request is answered from one [`Snapshot`] of the
//! config and the clock, taken when it arrives.
//!
//! One file per concept:
//! - [`loaded`]: the config in force, reloads, the per-request snapshot;
//! - [`access`]: who may do what (peer credentials, admin group, roles);
//! - [`login`] and [`sessions`]: the PAM login conversation; [`one_field`]:
//!   clients that answer every prompt with one password (`forward_pass`);
//! - [`verify`]: checking a code (replay, lockout, recovery codes, trust);
//! - [`enroll`]: setting up a device, through mfactl or inline at login;
//! - [`account`]: self-service on one's own account;
//! - [`admin`]: administration of other accounts;
//! - [`bypass`]: IP bypass rules; [`import`]: bulk import.

mod access;
mod account;
mod admin;
mod bypass;
mod enroll;
mod import;
mod loaded;
mod login;
mod observe;
mod one_field;
mod sessions;
mod verify;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use mfa_shared::config::Config;
use mfa_shared::protocol::{AuthStep, ErrorKind, Message, Outcome, Request, Response};

use crate::audit::{Audit, Severity};
use crate::ceiling::Ceiling;
use crate::clock::Clock;
use crate::crypto::{KeyId, Vault};
use crate::metrics::Metrics;
use crate::nss::Directory;
use crate::store::{Change, Store, StoreError, UserRecord};

use loaded::Loaded;
pub use loaded::Snapshot;
pub(crate) use login::lookup_denied;
use sessions::Sessions;

/// Who is on the other end of the socket (SO_PEERCRED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The account name of `uid`, when NSS knows it.
    pub name: Option<String>,
}

/// Everything a request handler needs.
pub struct Daemon {
    loaded: RwLock<Loaded>,
    config_path: Option<PathBuf>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    directory: Arc<dyn Directory>,
    pub audit: Audit,
    /// Counters for the metrics textfile.
    pub metrics: Metrics,
    host_name: String,
    sessions: Mutex<Sessions>,
    /// Requests per second one non-root uid may make.
    requests: Ceiling,
    /// The store is out of reach: its outage and its return are each
    /// logged once, not at every request.
    store_down: AtomicBool,
}

/// Requests one non-root uid may make per second; a screen locker or
/// mfactl needs a handful.
pub const REQUESTS_PER_UID: u32 = 50;

/// Why a request was refused; becomes `Response::Error`, or
/// `Response::Unavailable` when the store is out of reach.
#[derive(Debug)]
struct Refusal {
    kind: ErrorKind,
    message: String,
    store_unavailable: bool,
}

impl Refusal {
    fn into_response(self) -> Response {
        if self.store_unavailable {
            Response::Unavailable { message: self.message }
        } else {
            Response::error(self.kind, self.message)
        }
    }
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal { kind, message: message.into(), store_unavailable: false }
}

type Reply = Result<Response, Refusal>;

impl Daemon {
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        directory: Arc<dyn Directory>,
        audit: Audit,
    ) -> Self {
        let now = clock.now();
        Daemon {
            loaded: RwLock::new(Loaded::new(config, None, now)),
            config_path,
            store,
            vault,
            clock,
            directory,
            audit,
            metrics: Metrics::default(),
            host_name: crate::nss::host_name(),
            sessions: Mutex::new(Sessions::default()),
            requests: Ceiling::new(REQUESTS_PER_UID),
            store_down: AtomicBool::new(false),
        }
    }

    /// Who is calling: `uid` and its account name, if the directory answers
    /// in time (without a name, a caller can act on no account).
    pub fn peer(&self, uid: u32) -> Peer {
        Peer { uid, name: self.directory.name_of_uid(uid).ok().flatten() }
    }

    /// Microseconds on the daemon's monotonic clock (see [`Clock`]).
    pub fn monotonic_micros(&self) -> u64 {
        self.clock.monotonic_micros()
    }

    /// Whether `uid` may make one more request now (root always may).
    pub fn admit_request(&self, uid: u32) -> bool {
        self.requests.admit(uid, self.clock.now())
    }

    /// Log what the ceilings dropped since the last call, one line per uid.
    pub fn report_ceilings(&self) {
        for (uid, refused) in self.requests.take_summaries() {
            let text = format!("uid {uid}: {refused} requests refused (more than {REQUESTS_PER_UID} a second)");
            self.audit.event(Severity::Warning, &text);
        }
        self.audit.summarize_suppressed();
    }

    /// Answer one request from `peer`, under one snapshot of config and time.
    pub fn handle(&self, peer: &Peer, request: Request) -> Response {
        let at = &self.snapshot();
        let result = match request {
            Request::AuthBegin { service, user, ruser, rhost, tty, forward_pass } => {
                let items = login::PamItems { service, user, ruser, rhost, tty, forward_pass };
                self.counted_begin(at, peer, items)
            }
            Request::AuthAnswer { session_id, answer } => {
                self.counted_answer(peer, &session_id, at.now, |d| d.auth_answer(at, peer, &session_id, &answer))
            }
            Request::AuthNotACode { session_id } => {
                self.counted_answer(peer, &session_id, at.now, |d| d.auth_not_a_code(at, peer, &session_id))
            }
            Request::Status { user } => self.status(at, peer, user),
            Request::SetupBegin { user, otp_type, level, current_code } => {
                self.setup_begin(at, peer, user, otp_type, level, current_code)
            }
            Request::SetupConfirm { user, code } => self.setup_confirm(at, peer, user, &code),
            Request::SetLevel { user, level, code } => self.set_level(at, peer, user, level, code),
            Request::Disable { user, code } => self.disable(at, peer, user, code),
            Request::VerifyCode { user, code } => self.verify_code(at, peer, user, &code),
            Request::RecoveryCodes { user, code } => self.recovery_codes(at, peer, user, &code),
            Request::ListUsers { after } => self.list_users(at, peer, after.as_deref()),
            Request::CheckValue { user } => self.check_value(at, peer, &user),
            Request::Authorize { user, code } => self.authorize(at, peer, &user, &code),
            Request::Revoke { user } => self.revoke(at, peer, &user),
            Request::Unlock { user } => self.unlock(at, peer, &user),
            Request::IpAdd { cidr, bypass_2fa, timeout_secs } => self.ip_add(at, peer, &cidr, bypass_2fa, timeout_secs),
            Request::IpList => self.ip_list(at, peer),
            Request::IpRemove { id } => self.ip_remove(at, peer, id),
            Request::Reload => self.reload_request(at, peer),
            Request::ImportUsers { users, replace } => self.import_users(at, peer, users, replace),
        };
        if matches!(&result, Err(refusal) if refusal.store_unavailable) {
            self.metrics.unavailable_answer();
        }
        result.unwrap_or_else(Refusal::into_response)
    }

    // ---- the store -------------------------------------------------------

    /// A store call's result, its error as a refusal. A store out of reach
    /// (the database down, the file system full) is `unavailable` to the
    /// client, logged when it starts (and, see [`Daemon::written`], when it
    /// ends) rather than at every request; any other error is logged each
    /// time.
    fn stored<T>(&self, result: Result<T, StoreError>) -> Result<T, Refusal> {
        if result.is_err() {
            self.metrics.store_error();
        }
        match result {
            Ok(value) => Ok(value),
            Err(err @ StoreError::Unusable { .. }) => {
                if !self.store_down.swap(true, Ordering::Relaxed) {
                    self.audit.event(Severity::Warning, &err.to_string());
                }
                let message = format!("mfad cannot use its store: {}", err.summary());
                Err(Refusal { kind: ErrorKind::Internal, message, store_unavailable: true })
            }
            Err(StoreError::Busy(why)) => {
                self.audit.event(Severity::Warning, &format!("store busy: {why}"));
                Err(refuse(ErrorKind::Busy, "mfad is busy; try again shortly"))
            }
            Err(err) => {
                self.audit.event(Severity::Warning, &format!("store error: {err}"));
                Err(refuse(ErrorKind::Internal, format!("mfad cannot use its store: {}; see its log", err.summary())))
            }
        }
    }

    /// [`Daemon::stored`] for a write: one that succeeds ends an outage
    /// (a read may succeed while writes still fail, on a full disk).
    fn written<T>(&self, result: Result<T, StoreError>) -> Result<T, Refusal> {
        let value = self.stored(result)?;
        if self.store_down.load(Ordering::Relaxed) && self.store_down.swap(false, Ordering::Relaxed) {
            self.audit.event(Severity::Notice, "store available again");
        }
        Ok(value)
    }

    /// Run `f` on the user's record (a fresh one if none) inside one store
    /// transaction; `f` returns whether to write and its result.
    fn with_record<R: Send>(
        &self,
        user: &str,
        mut f: impl FnMut(&mut UserRecord) -> (bool, R) + Send,
    ) -> Result<R, Refusal> {
        let mut out = None;
        let started = self.clock.monotonic_micros();
        let updated = self.store.update_user(user, &mut |current| {
            let mut record = current.cloned().unwrap_or_else(|| UserRecord::new(user));
            let (write, result) = f(&mut record);
            out = Some(result);
            if write { Change::Put(record) } else { Change::Keep }
        });
        self.metrics.observe_commit(self.clock.monotonic_micros().saturating_sub(started));
        self.written(updated)?;
        out.ok_or_else(|| refuse(ErrorKind::Internal, "internal error in mfad: update did not run"))
    }

    /// The key to seal new secrets with: the store's as it is now (see
    /// [`crate::keys::sealing_key`]).
    fn sealing_key(&self) -> Result<KeyId, Refusal> {
        let key = self.stored(crate::keys::sealing_key(&self.vault, &*self.store))?;
        Ok(key.unwrap_or_else(|| self.vault.sealing_key().clone()))
    }

    /// `secret` sealed for `user` with `key`.
    fn seal(&self, key: &KeyId, user: &str, secret: &[u8]) -> Result<Vec<u8>, Refusal> {
        self.vault
            .seal_using(key, user, secret)
            .map_err(|e| refuse(ErrorKind::Internal, format!("cannot seal the secret: {e}")))
    }

    fn get_record(&self, user: &str) -> Result<Option<UserRecord>, Refusal> {
        self.stored(self.store.get_user(user))
    }
}

fn decision_response(outcome: Outcome, messages: Vec<Message>) -> Response {
    Response::Auth(AuthStep::Decision { outcome, messages })
}

fn no_random_bytes<E>(_: E) -> Refusal {
    refuse(ErrorKind::Internal, "no random bytes from the OS")
}

#[cfg(test)]
mod tests;
