//! Self-service (SPEC 11, "My Settings"): a user's status, level, disable
//! and recovery codes. Changes that weaken the account need a current code
//! (or an administrator).

use mfa_shared::protocol::{ChallengeLevel, Code, EnrollmentState, ErrorKind, Response, UserStatus};

use super::{Daemon, Peer, Reply, Snapshot, no_random_bytes, refuse};
use crate::recovery;
use crate::store::UserRecord;

impl Daemon {
    pub(super) fn status(&self, at: &Snapshot, peer: &Peer, user: Option<String>) -> Reply {
        let user = self.target(at, peer, user)?;
        let record = self.get_record(&user)?.unwrap_or_else(|| UserRecord::new(&user));
        Ok(Response::Status(self.user_status(at, &record, true)))
    }

    /// What `status` and `user show`/`list` say of an account; roles only
    /// when asked (a group lookup per account would slow a long list).
    pub(super) fn user_status(&self, at: &Snapshot, record: &UserRecord, with_roles: bool) -> UserStatus {
        let config = &at.config;
        let state = if record.device.is_some() {
            EnrollmentState::Enabled
        } else if record.pending.is_some() {
            EnrollmentState::Pending
        } else {
            EnrollmentState::NotEnrolled
        };
        let role_policy = if with_roles {
            self.role_of(config, &record.user).ok().flatten().map(|p| p.as_str().to_string())
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
            locked_until: crate::lockout::locked_until(record, at.now),
            one_answer_failures: record.one_answer_failures,
            one_answer_locked_until: crate::lockout::one_answer_locked_until(record, at.now),
            last_success: record.last_success,
            last_source: record.last_source.clone(),
            recovery_codes_left: u32::try_from(record.recovery_hashes.len()).unwrap_or(u32::MAX),
            role_policy,
        }
    }

    pub(super) fn set_level(
        &self,
        at: &Snapshot,
        peer: &Peer,
        user: Option<String>,
        level: ChallengeLevel,
        code: Option<Code>,
    ) -> Reply {
        let user = self.target(at, peer, user)?;
        let record = self.get_record(&user)?;
        let current = record.as_ref().and_then(|r| r.level).unwrap_or(at.config.default_level);
        let enrolled = record.as_ref().is_some_and(UserRecord::is_enrolled);
        let set = |record: &mut UserRecord| record.level = Some(level);
        match code {
            Some(code) => self.prove_code(at, peer, &user, &code, "level change proven with code", set)?,
            None if enrolled && level.strictness() < current.strictness() && !self.is_admin(at, peer) => {
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

    pub(super) fn disable(&self, at: &Snapshot, peer: &Peer, user: Option<String>, code: Option<Code>) -> Reply {
        let user = self.target(at, peer, user)?;
        match code {
            Some(code) => self.prove_code(at, peer, &user, &code, "disable proven with code", remove_device)?,
            None if self.is_admin(at, peer) => {
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

    pub(super) fn verify_code(&self, at: &Snapshot, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(at, peer, user)?;
        self.prove_code(at, peer, &user, code, "code verified on request", |_| {})?;
        Ok(Response::Ok { message: Some("code accepted".into()) })
    }

    pub(super) fn recovery_codes(&self, at: &Snapshot, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(at, peer, user)?;
        let (codes, hashes) = recovery::generate(self.vault.pepper()).map_err(no_random_bytes)?;
        self.prove_code(at, peer, &user, code, "new recovery codes proven with code", |record| {
            record.recovery_hashes = hashes.clone();
        })?;
        self.admin_event(peer, &user, "new recovery codes issued");
        Ok(Response::RecoveryCodes { recovery_codes: codes })
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
