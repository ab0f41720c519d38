//! Request handlers: (daemon state, peer, request) -> response, synchronous
//! and testable without sockets. The server calls [`Daemon::handle`] for
//! every frame. The login conversation (PAM) is in [`login`].

mod login;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use mfa_shared::config::{Cidr, Config, RolePolicy};
use mfa_shared::otp::{self, OtpParams};
use mfa_shared::protocol::{
    AuthStep, ChallengeLevel, Code, EnrollmentState, ErrorKind, ImportRefusal, ImportUser, IpRuleInfo, Message,
    OtpType, Outcome, Request, Response, SetupInfo, UserStatus, is_valid_user_name,
};

use crate::audit::{Audit, Entry, Severity};
use crate::clock::Clock;
use crate::crypto::Vault;
use crate::enrollment::{
    BARCODE_QUESTION, SETUP_CODE_PROMPT, TYPE_HINT, TYPE_QUESTION, YES_NO_HINT, format_barcode, format_manual_entry,
    format_recovery_codes, time_or_counter, yes_no,
};
use crate::nss::Directory;
use crate::policy::{self, Context, Decision, LoginRequest};
use crate::recovery;
use crate::store::{Change, Device, Store, StoreError, TrustedSource, UserRecord};

/// Accounts per `user list` page, well under the frame limit.
const USERS_PER_PAGE: usize = 1000;

/// Most recent sources remembered per user for the adaptive level.
const MAX_TRUSTED_SOURCES: usize = 32;

/// Who is on the other end of the socket (SO_PEERCRED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The account name of `uid`, when NSS knows it.
    pub name: Option<String>,
}

/// The configuration in force, with when each config bypass rule was first
/// loaded: a rule's `timeout` counts from then, across reloads (a config
/// management tool rewriting the file must not keep renewing it).
#[derive(Debug)]
struct Loaded {
    config: Arc<Config>,
    /// Rule (as [`rule_key`]) -> when it first appeared.
    first_seen: HashMap<String, u64>,
}

impl Loaded {
    fn new(config: Config, previous: Option<&Loaded>, now: u64) -> Loaded {
        let first_seen = config
            .bypass
            .rules
            .iter()
            .map(|rule| {
                let key = rule_key(rule);
                let since = previous.and_then(|p| p.first_seen.get(&key).copied()).unwrap_or(now);
                (key, since)
            })
            .collect();
        Loaded { config: Arc::new(config), first_seen }
    }
}

fn rule_key(rule: &mfa_shared::config::BypassRuleConfig) -> String {
    format!("{} {} {:?}", rule.cidr, rule.bypass_2fa, rule.timeout.map(|t| t.as_secs()))
}

/// Everything a request handler needs.
pub struct Daemon {
    loaded: RwLock<Loaded>,
    config_path: Option<PathBuf>,
    store: Arc<dyn Store>,
    vault: Vault,
    clock: Arc<dyn Clock>,
    directory: Arc<dyn Directory>,
    pub audit: Audit,
    host_name: String,
    sessions: Mutex<HashMap<String, Session>>,
}

/// A login conversation waiting for an answer.
#[derive(Debug, Clone)]
struct Session {
    peer_uid: u32,
    login: LoginRequest,
    user: String,
    rhost: Option<String>,
    stage: Stage,
    /// Unusable answers given at the current stage.
    tries: u32,
    expires_at: u64,
}

/// What the open prompt of a conversation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A code from the enabled device (or, at login, a recovery code).
    Code { recovery_allowed: bool },
    /// Inline set-up: "Does your device support scanning a barcode?"
    AskBarcode(Offer),
    /// Inline set-up: "Time-based or counter-based?"
    AskType { offer: Offer, barcode: bool },
    /// Inline set-up: the first code of the pending device.
    ConfirmSetup(Offer),
}

/// Why inline set-up is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offer {
    policy: RolePolicy,
    /// force/require: no set-up, no login; encourage: may be skipped.
    mandatory: bool,
}

/// Why a request was refused; becomes `Response::Error`.
#[derive(Debug)]
struct Refusal {
    kind: ErrorKind,
    message: String,
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal { kind, message: message.into() }
}

type Reply = Result<Response, Refusal>;

/// Whether a recovery code may stand in for a code, and how far it was
/// checked.
#[derive(Debug, Clone, Copy)]
enum Recovery<'a> {
    NotAllowed,
    /// Allowed; a wrong code ends the check with [`CodeCheck::TryRecovery`].
    Unchecked,
    /// Looked up outside the transaction: the stored hash it matches.
    Checked(Option<&'a str>),
}

/// The result of checking a code against a record (which the check updates).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CodeCheck {
    Accepted,
    AcceptedRecovery {
        left: usize,
    },
    Wrong {
        message: String,
        locked: bool,
    },
    Locked {
        until: u64,
    },
    NotEnrolled,
    /// Elevation without super-user approval (checked with the code).
    NotApproved,
    /// Not the device's code; look it up among these recovery code hashes
    /// (slow, so outside the transaction) and check again.
    TryRecovery {
        hashes: Vec<String>,
    },
}

impl Daemon {
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        store: Arc<dyn Store>,
        vault: Vault,
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
            host_name: crate::nss::host_name(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        match self.loaded.read() {
            Ok(l) => l.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    /// When a config bypass rule lapses, if it has a timeout.
    fn config_rule_expiry(&self, rule: &mfa_shared::config::BypassRuleConfig) -> Option<u64> {
        let timeout = rule.timeout?.as_secs();
        let loaded = match self.loaded.read() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let since = loaded.first_seen.get(&rule_key(rule)).copied().unwrap_or_else(|| self.clock.now());
        Some(since.saturating_add(timeout))
    }

    /// Re-read the config file. A bad file is refused and the old config
    /// kept; either way the outcome is logged.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload".into());
        };
        let result = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Config::parse(&text).map_err(|e| format!("{}: {e}", path.display())));
        match result {
            Ok(config) => {
                let old = self.config();
                if old.socket != config.socket || old.store != config.store {
                    self.audit.event(
                        Severity::Warning,
                        "config reloaded; changes to socket and [store] take effect at the next restart",
                    );
                } else {
                    self.audit.event(Severity::Info, "config reloaded");
                }
                let mut loaded = match self.loaded.write() {
                    Ok(l) => l,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let next = Loaded::new(config, Some(&loaded), self.clock.now());
                *loaded = next;
                Ok(())
            }
            Err(err) => {
                self.audit.event(Severity::Warning, &format!("config reload refused, keeping the old config: {err}"));
                Err(err)
            }
        }
    }

    /// Answer one request from `peer`.
    pub fn handle(&self, peer: &Peer, request: Request) -> Response {
        let result = match request {
            Request::AuthBegin { service, user, ruser, rhost, tty } => {
                self.auth_begin(peer, service, user, ruser, rhost, tty)
            }
            Request::AuthAnswer { session_id, answer } => self.auth_answer(peer, &session_id, &answer),
            Request::Status { user } => self.status(peer, user),
            Request::SetupBegin { user, otp_type, level, current_code } => {
                self.setup_begin(peer, user, otp_type, level, current_code)
            }
            Request::SetupConfirm { user, code } => self.setup_confirm(peer, user, &code),
            Request::SetLevel { user, level, code } => self.set_level(peer, user, level, code),
            Request::Disable { user, code } => self.disable(peer, user, code),
            Request::VerifyCode { user, code } => self.verify_code(peer, user, &code),
            Request::RecoveryCodes { user, code } => self.recovery_codes(peer, user, &code),
            Request::ListUsers { after } => self.list_users(peer, after.as_deref()),
            Request::CheckValue { user } => self.check_value(peer, &user),
            Request::Authorize { user, code } => self.authorize(peer, &user, &code),
            Request::Revoke { user } => self.revoke(peer, &user),
            Request::Unlock { user } => self.unlock(peer, &user),
            Request::IpAdd { cidr, bypass_2fa, timeout_secs } => self.ip_add(peer, &cidr, bypass_2fa, timeout_secs),
            Request::IpList => self.ip_list(peer),
            Request::IpRemove { id } => self.ip_remove(peer, id),
            Request::Reload => self.reload_request(peer),
            Request::ImportUsers { users, replace } => self.import_users(peer, users, replace),
        };
        result.unwrap_or_else(|r| Response::error(r.kind, r.message))
    }

    // ---- authorization -------------------------------------------------

    fn is_admin(&self, peer: &Peer) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let admin_group = self.config().admin_group.clone();
        // A failed lookup grants nothing.
        peer.name
            .as_deref()
            .is_some_and(|name| self.directory.groups_of(name).is_ok_and(|groups| groups.contains(&admin_group)))
    }

    /// The strictest role policy of `user`'s groups; no lookup when no role
    /// is configured.
    fn role_of(&self, config: &Config, user: &str) -> Result<Option<RolePolicy>, String> {
        if config.roles.is_empty() {
            return Ok(None);
        }
        Ok(policy::strictest_role(config, &self.directory.groups_of(user)?))
    }

    fn require_admin(&self, peer: &Peer) -> Result<(), Refusal> {
        if self.is_admin(peer) {
            Ok(())
        } else {
            Err(refuse(
                ErrorKind::PermissionDenied,
                format!(
                    "permission denied: administration needs root or membership of group {}",
                    self.config().admin_group
                ),
            ))
        }
    }

    /// The account a self-service request acts on: the caller's own, or
    /// (for an administrator) the one named.
    fn target(&self, peer: &Peer, user: Option<String>) -> Result<String, Refusal> {
        let own = peer.name.clone();
        match (user, own) {
            (Some(user), Some(own)) if user == own => Ok(user),
            (Some(user), _) => {
                self.require_admin(peer)?;
                valid_user_name(&user)?;
                Ok(user)
            }
            (None, Some(own)) => Ok(own),
            (None, None) => Err(refuse(ErrorKind::NotFound, format!("uid {} has no account name", peer.uid))),
        }
    }

    // ---- store helpers -------------------------------------------------

    fn internal(&self, err: StoreError) -> Refusal {
        self.audit.event(Severity::Warning, &format!("store error: {err}"));
        refuse(ErrorKind::Internal, "internal error in mfad; see its log")
    }

    /// Run `f` on the user's record (a fresh one if none) inside one store
    /// transaction; `f` returns whether to write and its result.
    fn with_record<R>(&self, user: &str, mut f: impl FnMut(&mut UserRecord) -> (bool, R)) -> Result<R, Refusal> {
        let mut out = None;
        self.store
            .update_user(user, &mut |current| {
                let mut record = current.cloned().unwrap_or_else(|| UserRecord::new(user));
                let (write, result) = f(&mut record);
                out = Some(result);
                if write { Change::Put(record) } else { Change::Keep }
            })
            .map_err(|e| self.internal(e))?;
        out.ok_or_else(|| refuse(ErrorKind::Internal, "internal error in mfad: update did not run"))
    }

    fn get_record(&self, user: &str) -> Result<Option<UserRecord>, Refusal> {
        self.store.get_user(user).map_err(|e| self.internal(e))
    }

    /// Check `code` against the enabled device, updating replay state,
    /// failure count, lock and trust in `record`.
    fn check_code(
        &self,
        config: &Config,
        record: &mut UserRecord,
        code: &Code,
        source: Option<&str>,
        recovery: Recovery<'_>,
        now: u64,
    ) -> CodeCheck {
        if let Some(until) = record.locked_until {
            if until > now {
                return CodeCheck::Locked { until };
            }
            // The lock has lapsed: start counting afresh.
            record.locked_until = None;
            record.failures = 0;
        }
        let Some(device) = record.device.clone() else {
            return CodeCheck::NotEnrolled;
        };
        let params = device_params(&device);
        let otp_match = otp::normalize_code(code.expose(), device.digits)
            .ok()
            .and_then(|typed| self.match_device(&record.user, &device, &typed, config, now));
        let accepted = match (otp_match, recovery) {
            (Some(advanced), _) => {
                record.device = Some(advanced);
                Some(None)
            }
            // Not shaped like a code of the device: it may be a recovery code
            // (ours are 10 letters and digits, imported scratch codes 8
            // digits), looked up outside the lock. A wrong code of the
            // device's shape costs no lookup.
            (None, Recovery::Unchecked)
                if !record.recovery_hashes.is_empty() && otp::normalize_code(code.expose(), device.digits).is_err() =>
            {
                return CodeCheck::TryRecovery { hashes: record.recovery_hashes.clone() };
            }
            (None, Recovery::Checked(Some(matched))) => {
                recovery::remove(&mut record.recovery_hashes, matched).map(Some)
            }
            (None, _) => None,
        };
        match accepted {
            Some(recovery_left) => {
                record_success(record, source, now);
                match recovery_left {
                    Some(left) => CodeCheck::AcceptedRecovery { left },
                    None => CodeCheck::Accepted,
                }
            }
            None => {
                record.failures = record.failures.saturating_add(1);
                record.failed_since_success = true;
                let locked = record.failures >= config.lockout.max_failures;
                if locked {
                    record.locked_until = Some(now + config.lockout.duration.as_secs());
                }
                let message = match otp::normalize_code(code.expose(), params.digits) {
                    Err(err) if matches!(recovery, Recovery::NotAllowed) => format!("Invalid code: {err}."),
                    _ => "Wrong code.".to_string(),
                };
                CodeCheck::Wrong { message, locked }
            }
        }
    }

    /// Verify a well-formed code against a device; on success, the device
    /// with its replay state advanced.
    fn match_device(&self, user: &str, device: &Device, typed: &str, config: &Config, now: u64) -> Option<Device> {
        let secret = match self.vault.open(user, &device.sealed_secret) {
            Ok(secret) => secret,
            Err(err) => {
                self.audit.event(Severity::Warning, &format!("user {user}: {err}"));
                return None;
            }
        };
        let params = device_params(device);
        let mut next = device.clone();
        match device.otp_type {
            OtpType::Totp => {
                let step = otp::verify_totp(&secret, &params, typed, now, config.totp_skew, device.last_step)?;
                next.last_step = Some(step);
            }
            OtpType::Hotp => {
                let counter = otp::verify_hotp(&secret, &params, typed, device.next_counter, config.hotp_window)?;
                next.next_counter = counter + 1;
            }
        }
        Some(next)
    }

    /// Check a code outside a login (disable, authorize, ...): the same
    /// replay, failure and lock rules; returns a refusal when not accepted.
    /// `on_success` changes the record in the same transaction as the check,
    /// so nothing (a device change, say) can slip in between.
    fn prove_code(
        &self,
        user: &str,
        code: &Code,
        what: &str,
        mut on_success: impl FnMut(&mut UserRecord),
    ) -> Result<(), Refusal> {
        let config = self.config();
        let now = self.clock.now();
        let check = self.with_record(user, |record| {
            let check = self.check_code(&config, record, code, None, Recovery::NotAllowed, now);
            if check == CodeCheck::Accepted {
                on_success(record);
            }
            (check != CodeCheck::NotEnrolled, check)
        })?;
        let (outcome, result) = match check {
            CodeCheck::Accepted | CodeCheck::AcceptedRecovery { .. } => ("success", Ok(())),
            CodeCheck::NotEnrolled => {
                ("failure", Err(refuse(ErrorKind::Conflict, format!("{user} has no enabled device"))))
            }
            // Not asked for: recovery codes are for logins only.
            CodeCheck::TryRecovery { .. } => ("failure", Err(refuse(ErrorKind::Internal, "unexpected recovery check"))),
            CodeCheck::NotApproved => {
                ("denied", Err(refuse(ErrorKind::PermissionDenied, "super-user approval is not granted")))
            }
            CodeCheck::Locked { until } => (
                "locked",
                Err(refuse(
                    ErrorKind::InvalidCode,
                    format!("{user} is locked until {} UTC after too many wrong codes", crate::timefmt::utc(until)),
                )),
            ),
            CodeCheck::Wrong { message, locked } => (
                if locked { "locked" } else { "failure" },
                Err(refuse(ErrorKind::InvalidCode, format!("{message} (wrong, reused or expired code)"))),
            ),
        };
        self.audit.decision(&Entry { user, service: "mfactl", rhost: None, outcome, reason: what });
        result
    }

    // ---- self-service -------------------------------------------------

    fn status(&self, peer: &Peer, user: Option<String>) -> Reply {
        let user = self.target(peer, user)?;
        let record = self.get_record(&user)?.unwrap_or_else(|| UserRecord::new(&user));
        Ok(Response::Status(self.user_status(&record, true)))
    }

    fn user_status(&self, record: &UserRecord, with_roles: bool) -> UserStatus {
        let config = self.config();
        let now = self.clock.now();
        let state = if record.device.is_some() {
            EnrollmentState::Enabled
        } else if record.pending.is_some() {
            EnrollmentState::Pending
        } else {
            EnrollmentState::NotEnrolled
        };
        let role_policy = if with_roles {
            self.role_of(&config, &record.user).ok().flatten().map(|p| p.as_str().to_string())
        } else {
            None
        };
        UserStatus {
            user: record.user.clone(),
            state,
            otp_type: record.device.as_ref().or(record.pending.as_ref()).map(|d| d.otp_type),
            pending: record.pending.is_some(),
            level: record.level.unwrap_or(config.default_level),
            level_is_default: record.level.is_none(),
            superuser_approved: record.approved,
            failures: record.failures,
            locked_until: record.locked_until.filter(|&u| u > now),
            last_success: record.last_success,
            last_source: record.last_source.clone(),
            recovery_codes_left: u32::try_from(record.recovery_hashes.len()).unwrap_or(u32::MAX),
            role_policy,
        }
    }

    fn setup_begin(
        &self,
        peer: &Peer,
        user: Option<String>,
        otp_type: Option<OtpType>,
        level: Option<ChallengeLevel>,
        current_code: Option<Code>,
    ) -> Reply {
        let user = self.target(peer, user)?;
        let config = self.config();
        let enrolled = self.get_record(&user)?.is_some_and(|r| r.is_enrolled());
        // Replacing a device needs the current one (or an administrator).
        match current_code {
            Some(code) if enrolled => {
                self.prove_code(&user, &code, "device change proven with current code", |_| {})?
            }
            _ if enrolled && !self.is_admin(peer) => {
                return Err(refuse(
                    ErrorKind::PermissionDenied,
                    "a device is already enabled: give a code from it with --code to set up a new one",
                ));
            }
            _ => {}
        }
        let otp_type = otp_type.unwrap_or(config.default_type);
        let setup = self.start_setup(&config, &user, otp_type, level)?;
        self.audit.decision(&Entry {
            user: &user,
            service: "mfactl",
            rhost: None,
            outcome: "pending",
            reason: &format!("set-up started ({otp_type})"),
        });
        Ok(Response::SetupStarted { setup })
    }

    /// Create a pending device for `user` (an enabled one stays until the
    /// set-up completes) and return what the person needs to add it to an
    /// app. Shared by `mfactl setup` and inline enrollment at login.
    fn start_setup(
        &self,
        config: &Config,
        user: &str,
        otp_type: OtpType,
        level: Option<ChallengeLevel>,
    ) -> Result<SetupInfo, Refusal> {
        let params = OtpParams { otp_type, algorithm: config.algorithm, digits: config.digits, period: config.period };
        let secret = zeroize::Zeroizing::new(
            otp::generate_secret().map_err(|_| refuse(ErrorKind::Internal, "no random bytes from the OS"))?,
        );
        let sealed = self
            .vault
            .seal(user, &secret)
            .map_err(|e| refuse(ErrorKind::Internal, format!("cannot seal the secret: {e}")))?;
        let device = Device {
            otp_type,
            algorithm: params.algorithm,
            digits: params.digits,
            period: params.period,
            sealed_secret: sealed,
            next_counter: 0,
            last_step: None,
            created_at: self.clock.now(),
        };
        self.with_record(user, |record| {
            record.pending = Some(device.clone());
            record.pending_level = level;
            (true, ())
        })?;
        let secret_b32 = otp::base32_encode(&secret);
        let issuer = config.issuer_or(&self.host_name);
        let account = format!("{user}@{}", self.host_name);
        let uri = otp::otpauth_uri(&issuer, &account, &secret_b32, &params, 0);
        Ok(SetupInfo {
            user: user.to_string(),
            uri,
            secret: secret_b32,
            otp_type,
            algorithm: params.algorithm,
            digits: params.digits,
            period: params.period,
            counter: 0,
        })
    }

    fn setup_confirm(&self, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(peer, user)?;
        let config = self.config();
        let recovery_codes = self.complete_setup(&config, &user, code, None, self.clock.now())?;
        self.audit.decision(&Entry {
            user: &user,
            service: "mfactl",
            rhost: None,
            outcome: "enrolled",
            reason: "set-up completed",
        });
        Ok(Response::SetupCompleted { recovery_codes })
    }

    /// Complete `user`'s pending set-up with a code from the new device: it
    /// becomes the enabled device (dropping super-user approval) and fresh
    /// recovery codes are issued, returned to be shown once. A wrong code
    /// (`ErrorKind::InvalidCode`) leaves the set-up pending. `source` is
    /// where the code came from at a login, trusted from now on.
    fn complete_setup(
        &self,
        config: &Config,
        user: &str,
        code: &Code,
        source: Option<&str>,
        now: u64,
    ) -> Result<Vec<Code>, Refusal> {
        let (codes, hashes) =
            recovery::generate().map_err(|_| refuse(ErrorKind::Internal, "no random bytes from the OS"))?;
        let result = self.with_record(user, |record| {
            let Some(pending) = record.pending.clone() else {
                return (
                    false,
                    Err(refuse(ErrorKind::Conflict, "no set-up is pending: start one with `mfactl setup`")),
                );
            };
            let typed = match otp::normalize_code(code.expose(), pending.digits) {
                Ok(typed) => typed,
                Err(err) => {
                    return (false, Err(refuse(ErrorKind::InvalidCode, format!("{err}; the set-up is still pending"))));
                }
            };
            let Some(device) = self.match_device(user, &pending, &typed, config, now) else {
                return (false, Err(refuse(ErrorKind::InvalidCode, "wrong code; the set-up is still pending")));
            };
            record.device = Some(device);
            record.pending = None;
            if let Some(level) = record.pending_level.take() {
                record.level = Some(level);
            }
            // A new device is not the one an administrator approved.
            record.approved = false;
            record.recovery_hashes = hashes.clone();
            record.locked_until = None;
            record_success(record, source, now);
            (true, Ok(()))
        })?;
        result.map(|()| codes)
    }

    fn set_level(&self, peer: &Peer, user: Option<String>, level: ChallengeLevel, code: Option<Code>) -> Reply {
        let user = self.target(peer, user)?;
        let config = self.config();
        let record = self.get_record(&user)?;
        let current = record.as_ref().and_then(|r| r.level).unwrap_or(config.default_level);
        let enrolled = record.as_ref().is_some_and(UserRecord::is_enrolled);
        let set = |record: &mut UserRecord| record.level = Some(level);
        match code {
            Some(code) => self.prove_code(&user, &code, "level change proven with code", set)?,
            None if enrolled && level.strictness() < current.strictness() && !self.is_admin(peer) => {
                return Err(refuse(
                    ErrorKind::PermissionDenied,
                    format!("lowering the level from {current} to {level} needs a current code: --code CODE"),
                ));
            }
            None => self.with_record(&user, |record| {
                set(record);
                (true, ())
            })?,
        }
        self.admin_event(peer, &user, &format!("level set to {level}"));
        Ok(Response::Ok { message: Some(format!("level of {user} is now {level}")) })
    }

    fn disable(&self, peer: &Peer, user: Option<String>, code: Option<Code>) -> Reply {
        let user = self.target(peer, user)?;
        match code {
            Some(code) => self.prove_code(&user, &code, "disable proven with code", remove_device)?,
            None if self.is_admin(peer) => {
                let existed = self.with_record(&user, |record| {
                    let existed = record.device.is_some() || record.pending.is_some();
                    remove_device(record);
                    (existed, existed)
                })?;
                if !existed {
                    return Err(refuse(ErrorKind::NotFound, format!("{user} has no device")));
                }
            }
            None => {
                return Err(refuse(ErrorKind::PermissionDenied, "disabling needs a current code: --code CODE"));
            }
        }
        self.admin_event(peer, &user, "device disabled");
        Ok(Response::Ok { message: Some(format!("two-factor authentication disabled for {user}")) })
    }

    fn verify_code(&self, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(peer, user)?;
        self.prove_code(&user, code, "code verified on request", |_| {})?;
        Ok(Response::Ok { message: Some("code accepted".into()) })
    }

    fn recovery_codes(&self, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(peer, user)?;
        let (codes, hashes) =
            recovery::generate().map_err(|_| refuse(ErrorKind::Internal, "no random bytes from the OS"))?;
        self.prove_code(&user, code, "new recovery codes proven with code", |record| {
            record.recovery_hashes = hashes.clone();
        })?;
        self.admin_event(peer, &user, "new recovery codes issued");
        Ok(Response::RecoveryCodes { recovery_codes: codes })
    }

    // ---- administration ---------------------------------------------------

    fn admin_event(&self, peer: &Peer, user: &str, what: &str) {
        let by = peer.name.clone().unwrap_or_else(|| format!("uid {}", peer.uid));
        self.audit.decision(&Entry {
            user,
            service: "mfactl",
            rhost: None,
            outcome: "changed",
            reason: &format!("{what} by {by}"),
        });
    }

    fn list_users(&self, peer: &Peer, after: Option<&str>) -> Reply {
        self.require_admin(peer)?;
        // One more than a page tells whether another page follows.
        let mut records = self.store.list_users(after, USERS_PER_PAGE + 1).map_err(|e| self.internal(e))?;
        let more = records.len() > USERS_PER_PAGE;
        records.truncate(USERS_PER_PAGE);
        Ok(Response::Users { users: records.iter().map(|r| self.user_status(r, false)).collect(), more })
    }

    fn existing_record(&self, user: &str) -> Result<UserRecord, Refusal> {
        valid_user_name(user)?;
        self.get_record(user)?.ok_or_else(|| refuse(ErrorKind::NotFound, format!("{user} has no two-factor record")))
    }

    fn check_value(&self, peer: &Peer, user: &str) -> Reply {
        self.require_admin(peer)?;
        let record = self.existing_record(user)?;
        let Some(device) = record.device.as_ref().or(record.pending.as_ref()) else {
            return Err(refuse(ErrorKind::NotFound, format!("{user} has no device")));
        };
        let secret = self.vault.open(user, &device.sealed_secret).map_err(|e| {
            self.audit.event(Severity::Warning, &format!("user {user}: {e}"));
            refuse(ErrorKind::Internal, "internal error in mfad; see its log")
        })?;
        let value = otp::check_value(&secret, &device_params(device));
        self.admin_event(peer, user, "check value shown");
        Ok(Response::CheckValue { user: user.to_string(), value })
    }

    fn authorize(&self, peer: &Peer, user: &str, code: &Code) -> Reply {
        self.require_admin(peer)?;
        let record = self.existing_record(user)?;
        if !record.is_enrolled() {
            return Err(refuse(ErrorKind::Conflict, format!("{user} has no enabled device to approve")));
        }
        self.prove_code(user, code, "super-user approval proven with code", |record| record.approved = true)?;
        self.admin_event(peer, user, "super-user approval granted");
        Ok(Response::Ok { message: Some(format!("super-user access approved for {user}'s device")) })
    }

    fn revoke(&self, peer: &Peer, user: &str) -> Reply {
        self.require_admin(peer)?;
        self.existing_record(user)?;
        self.with_record(user, |record| {
            record.approved = false;
            (true, ())
        })?;
        self.admin_event(peer, user, "super-user approval revoked");
        Ok(Response::Ok { message: Some(format!("super-user approval revoked for {user}")) })
    }

    fn unlock(&self, peer: &Peer, user: &str) -> Reply {
        self.require_admin(peer)?;
        self.existing_record(user)?;
        self.with_record(user, |record| {
            record.failures = 0;
            record.locked_until = None;
            (true, ())
        })?;
        self.admin_event(peer, user, "unlocked");
        Ok(Response::Ok { message: Some(format!("{user} unlocked")) })
    }

    fn ip_add(&self, peer: &Peer, cidr: &str, bypass_2fa: bool, timeout_secs: Option<u64>) -> Reply {
        self.require_admin(peer)?;
        let cidr = Cidr::parse(cidr).map_err(|e| refuse(ErrorKind::BadRequest, e))?;
        let expires_at = timeout_secs.map(|t| self.clock.now().saturating_add(t));
        let id = self.store.add_ip_rule(&cidr.to_string(), bypass_2fa, expires_at).map_err(|e| self.internal(e))?;
        self.admin_event(peer, "-", &format!("ip rule #{id} {cidr} bypass_2fa={bypass_2fa} added"));
        Ok(Response::IpRuleAdded { id })
    }

    fn ip_list(&self, peer: &Peer) -> Reply {
        self.require_admin(peer)?;
        let config = self.config();
        let now = self.clock.now();
        let mut rules: Vec<IpRuleInfo> = config
            .bypass
            .rules
            .iter()
            .map(|r| {
                let expires_at = self.config_rule_expiry(r);
                IpRuleInfo {
                    id: None,
                    cidr: r.cidr.to_string(),
                    bypass_2fa: r.bypass_2fa,
                    source: "config".into(),
                    expires_at,
                    in_force: config.bypass.enabled && expires_at.is_none_or(|t| t > now),
                }
            })
            .collect();
        let runtime = self.store.list_ip_rules().map_err(|e| self.internal(e))?;
        rules.extend(runtime.into_iter().map(|r| IpRuleInfo {
            id: Some(r.id),
            cidr: r.cidr,
            bypass_2fa: r.bypass_2fa,
            source: "runtime".into(),
            expires_at: r.expires_at,
            in_force: config.bypass.enabled && r.expires_at.is_none_or(|t| t > now),
        }));
        Ok(Response::IpRules { rules })
    }

    fn ip_remove(&self, peer: &Peer, id: i64) -> Reply {
        self.require_admin(peer)?;
        if !self.store.remove_ip_rule(id).map_err(|e| self.internal(e))? {
            return Err(refuse(ErrorKind::NotFound, format!("no runtime ip rule #{id}")));
        }
        self.admin_event(peer, "-", &format!("ip rule #{id} removed"));
        Ok(Response::ok())
    }

    fn import_users(&self, peer: &Peer, users: Vec<ImportUser>, replace: bool) -> Reply {
        self.require_admin(peer)?;
        let config = self.config();
        let now = self.clock.now();
        let mut refused = Vec::new();
        let mut records: HashMap<String, UserRecord> = HashMap::with_capacity(users.len());
        for import in users {
            match self.imported_record(&config, &import, now) {
                Ok(record) => {
                    records.insert(import.user.clone(), record);
                }
                Err(reason) => refused.push(ImportRefusal { user: import.user.clone(), reason }),
            }
        }
        let names: Vec<String> = records.keys().cloned().collect();
        let mut imported = 0u64;
        self.store
            .update_users(&names, &mut |user, current| {
                let Some(new) = records.get(user) else { return Change::Keep };
                match current {
                    Some(existing) if existing.is_enrolled() && !replace => {
                        refused.push(ImportRefusal {
                            user: user.to_string(),
                            reason: "already has a device (use --replace)".into(),
                        });
                        Change::Keep
                    }
                    _ => {
                        imported += 1;
                        let mut record = current.cloned().unwrap_or_else(|| UserRecord::new(user));
                        record.device = new.device.clone();
                        record.pending = None;
                        record.approved = false;
                        record.recovery_hashes = new.recovery_hashes.clone();
                        record.level = new.level.or(record.level);
                        Change::Put(record)
                    }
                }
            })
            .map_err(|e| self.internal(e))?;
        self.admin_event(peer, "-", &format!("imported {imported} accounts, refused {}", refused.len()));
        Ok(Response::Imported { imported, refused })
    }

    /// The record an import creates: the secret sealed, defaults filled in.
    fn imported_record(&self, config: &Config, import: &ImportUser, now: u64) -> Result<UserRecord, String> {
        if valid_user_name(&import.user).is_err() {
            return Err("invalid user name".into());
        }
        let secret = zeroize::Zeroizing::new(
            otp::base32_decode(import.secret.expose()).map_err(|_| "the secret is not base32".to_string())?,
        );
        if secret.len() < 10 {
            return Err("the secret is shorter than 80 bits".into());
        }
        let digits = import.digits.unwrap_or(config.digits);
        let period = import.period.unwrap_or(config.period);
        if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) {
            return Err("digits must be 6-8 and period 1-3600 seconds".into());
        }
        let sealed = self.vault.seal(&import.user, &secret).map_err(|e| e.to_string())?;
        let recovery_hashes = import
            .recovery_codes
            .iter()
            .map(recovery::hash_existing)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut record = UserRecord::new(&import.user);
        record.device = Some(Device {
            otp_type: import.otp_type,
            algorithm: import.algorithm.unwrap_or(config.algorithm),
            digits,
            period,
            sealed_secret: sealed,
            next_counter: import.counter,
            // Codes of earlier steps may have been used with the old tool.
            last_step: match import.otp_type {
                OtpType::Totp => otp::totp_step(now, period).checked_sub(1),
                OtpType::Hotp => None,
            },
            created_at: now,
        });
        record.level = import.level;
        record.recovery_hashes = recovery_hashes;
        Ok(record)
    }

    fn reload_request(&self, peer: &Peer) -> Reply {
        self.require_admin(peer)?;
        self.reload().map_err(|e| refuse(ErrorKind::Conflict, format!("config not reloaded: {e}")))?;
        Ok(Response::Ok { message: Some("config reloaded".into()) })
    }
}

/// A code was accepted: reset the failure count and remember when and from
/// where (the source is trusted by the adaptive level from now on).
fn record_success(record: &mut UserRecord, source: Option<&str>, now: u64) {
    record.failures = 0;
    record.failed_since_success = false;
    record.last_success = Some(now);
    if let Some(source) = source {
        record.last_source = Some(source.to_string());
        record.trusted_sources.retain(|t| t.source != source);
        record.trusted_sources.insert(0, TrustedSource { source: source.to_string(), at: now });
        record.trusted_sources.truncate(MAX_TRUSTED_SOURCES);
    }
}

/// Disabling: the device, any set-up in progress, the approval and the
/// recovery codes go; the level stays.
fn remove_device(record: &mut UserRecord) {
    record.device = None;
    record.pending = None;
    record.pending_level = None;
    record.approved = false;
    record.recovery_hashes.clear();
}

fn device_params(device: &Device) -> OtpParams {
    OtpParams { otp_type: device.otp_type, algorithm: device.algorithm, digits: device.digits, period: device.period }
}

fn decision_response(outcome: Outcome, messages: Vec<Message>) -> Response {
    Response::Auth(AuthStep::Decision { outcome, messages })
}

fn code_prompt(session: &Session) -> String {
    if session.login.elevation && session.login.person != session.user {
        format!("Verification code for {}: ", session.login.person)
    } else {
        "Verification code: ".to_string()
    }
}

fn new_session_id() -> Result<String, Refusal> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| refuse(ErrorKind::Internal, "no random bytes from the OS"))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

/// Refuse a name no account can have (see [`is_valid_user_name`]).
fn valid_user_name(user: &str) -> Result<(), Refusal> {
    if is_valid_user_name(user) { Ok(()) } else { Err(refuse(ErrorKind::BadRequest, "invalid user name")) }
}

#[cfg(test)]
mod tests;
