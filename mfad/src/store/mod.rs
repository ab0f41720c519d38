//! Persistent state behind one trait, with two backends: SQLite (one host)
//! and PostgreSQL (a fleet of hosts sharing one database).
//!
//! A user's whole state is one [`UserRecord`]; every change goes through
//! [`Store::update_user`], a read-modify-write that the backend runs in one
//! transaction serialised against every other update of that user (SQLite:
//! `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE`). Reading the replay
//! state, checking a code and advancing the state therefore happen
//! atomically: of N concurrent logins offering one code, exactly one wins.

mod files;
pub mod postgres;
mod rows;
pub mod sqlite;
mod writer;

use ipnet::IpNet;
use mfa_shared::bypass::BypassRule;
use serde::{Deserialize, Serialize};

use mfa_shared::protocol::{Algorithm, ChallengeLevel, OtpType};

pub use files::OpenError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    /// This host's keys do not open the store (see [`crate::keys`]).
    #[error("{0}")]
    WrongKey(String),
    /// Too much in progress (every database connection in use): the
    /// client is told to try again, never let through.
    #[error("store busy: {0}")]
    Busy(String),
    #[error("stored record for {user} is corrupt: {reason}")]
    Corrupt { user: String, reason: String },
    /// The store as a whole cannot be used: every request that needs it is
    /// refused (fails closed) until the fault is gone.
    #[error("store {location}: {fault} ({cause}); {}", fault.advice())]
    Unusable { fault: StoreFault, location: String, cause: String },
}

impl StoreError {
    /// What went wrong, in words fit for a client (mfactl, a PAM
    /// conversation): no path, no database message, nothing of a record.
    pub fn summary(&self) -> String {
        match self {
            StoreError::Database(_) => "a database error".to_string(),
            StoreError::Busy(_) => "too many requests in progress; try again shortly".to_string(),
            // Key ids only: nothing secret.
            StoreError::WrongKey(why) => why.clone(),
            StoreError::Corrupt { .. } => "a stored record is corrupt".to_string(),
            StoreError::Unusable { fault, .. } => fault.to_string(),
        }
    }
}

/// Why the store cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreFault {
    #[error("the file system holding the store is full")]
    Full,
    #[error("the file system holding the store is read-only")]
    ReadOnly,
    #[error("the store file was deleted or replaced while mfad was running")]
    Missing,
    #[error("the store file is corrupt")]
    Damaged,
    #[error("the store file cannot be read or written")]
    Io,
    #[error("the database cannot be reached")]
    Unreachable,
}

impl StoreFault {
    /// What happens next, and what the administrator does about it.
    pub fn advice(self) -> &'static str {
        match self {
            StoreFault::Full => {
                "requests that write are refused until space is freed; mfad then resumes by itself, nothing acknowledged is lost"
            }
            StoreFault::ReadOnly => {
                "requests that write are refused until it is writable again; mfad then resumes by itself"
            }
            StoreFault::Missing => {
                "mfad refuses every request rather than serve from a store that is gone: restore the file from backup and restart mfad"
            }
            StoreFault::Damaged => "mfad refuses every request: restore the file from backup and restart mfad",
            StoreFault::Io => "mfad tries again at the next request",
            StoreFault::Unreachable => {
                "requests that need the store are answered `unavailable` (the PAM module's failmode decides); mfad reconnects by itself"
            }
        }
    }
}

/// One enrolled (or pending) device. The secret is sealed by the vault.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub otp_type: OtpType,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u64,
    /// nonce || ciphertext, bound to the user name.
    #[serde(with = "hex_bytes")]
    pub sealed_secret: Vec<u8>,
    /// HOTP: the next counter the device is expected to show.
    pub next_counter: u64,
    /// TOTP: the last accepted step; steps at or before it are replays.
    pub last_step: Option<u64>,
    pub created_at: u64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("otp_type", &self.otp_type)
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("next_counter", &self.next_counter)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A source (remote IP, or `local:TTY`) from which a code was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedSource {
    pub source: String,
    pub at: u64,
}

/// Everything mfad knows of one account. Stored as JSON with defaults left
/// out, which keeps a million-user store small.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// A set-up in progress; never replaces `device` until confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Device>,
    /// Level to apply when the pending set-up completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_level: Option<ChallengeLevel>,
    /// None: the configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<ChallengeLevel>,
    /// Super-user approval of the current device.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<u64>,
    /// Wrong codes at one-answer services (`forward_pass`), counted apart:
    /// there the code is checked before the password, so anyone who knows
    /// a user name can fail them, and they must not lock SSH or sudo.
    #[serde(skip_serializing_if = "is_zero")]
    pub one_answer_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_answer_locked_until: Option<u64>,
    /// A wrong code was given since the last success (adaptive level asks).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub failed_since_success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_source: Option<String>,
    /// Most recent first, bounded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_sources: Vec<TrustedSource>,
    /// Salted hashes of unused recovery codes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovery_hashes: Vec<String>,
}

/// Shows everything but the recovery code hashes (only their number).
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user", &self.user)
            .field("device", &self.device)
            .field("pending", &self.pending)
            .field("level", &self.level)
            .field("approved", &self.approved)
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .field("one_answer_failures", &self.one_answer_failures)
            .field("one_answer_locked_until", &self.one_answer_locked_until)
            .field("failed_since_success", &self.failed_since_success)
            .field("last_success", &self.last_success)
            .field("last_source", &self.last_source)
            .field("trusted_sources", &self.trusted_sources.len())
            .field("recovery_codes", &self.recovery_hashes.len())
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    pub fn new(user: &str) -> Self {
        UserRecord { user: user.to_string(), ..Default::default() }
    }

    pub fn is_enrolled(&self) -> bool {
        self.device.is_some()
    }
}

/// What an update does with the record it was shown.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
pub enum Change {
    Keep,
    Put(UserRecord),
    Delete,
}

pub trait Store: Send + Sync {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Atomic read-modify-write of one user's record. `change` may be called
    /// more than once if the backend retries; it must not have side effects
    /// other than computing its answer.
    fn update_user(
        &self,
        user: &str,
        change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError>;

    /// [`Store::update_user`] for many users in one durable write (bulk
    /// import): `change` is called once per name.
    fn update_users(
        &self,
        users: &[String],
        change: &mut (dyn FnMut(&str, Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError>;

    /// Up to `limit` records with names after `after` (from the first when
    /// none), ordered by user name.
    fn list_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError>;

    /// A runtime bypass rule (`mfactl ip add`); returns its id.
    fn add_ip_rule(&self, network: IpNet, bypass_2fa: bool, expires_at: Option<u64>) -> Result<i64, StoreError>;
    /// The runtime bypass rules, lapsed ones included, oldest first.
    fn list_ip_rules(&self) -> Result<Vec<BypassRule>, StoreError>;
    /// False when there was no such rule.
    fn remove_ip_rule(&self, id: i64) -> Result<bool, StoreError>;

    /// A store-wide setting (see [`crate::keys`]).
    fn get_meta(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Set a store-wide setting, or remove it with None.
    fn set_meta(&self, name: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// Set a store-wide setting unless it is set; the value in force after.
    /// Hosts starting at once agree on one value.
    fn init_meta(&self, name: &str, value: &str) -> Result<String, StoreError>;
}

/// A record from its stored JSON.
pub(crate) fn decode(user: &str, json: &str) -> Result<UserRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt { user: user.to_string(), reason: e.to_string() })
}

/// A record's stored JSON.
pub(crate) fn encode(record: &UserRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Database(e.to_string()))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        data_encoding::HEXLOWER.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}
