//! Administration of other accounts (root or `admin_group`): list, show
//! the check value, approve for super-user access, revoke, unlock.

use mfa_shared::otp;
use mfa_shared::protocol::{Code, ErrorKind, Response};

use super::verify::device_params;
use super::{Daemon, Peer, Refusal, Reply, Snapshot, refuse};
use crate::audit::{AuditOutcome, Entry, Severity};
use crate::lockout;
use crate::store::UserRecord;

/// Accounts per `user list` page, well under the frame limit.
const USERS_PER_PAGE: usize = 1000;

impl Daemon {
    /// A change to an account (or a rule) for the audit trail, naming who
    /// made it.
    pub(super) fn admin_event(&self, peer: &Peer, user: &str, what: &str) {
        let by = peer.name.clone().unwrap_or_else(|| format!("uid {}", peer.uid));
        self.audit.decision(&Entry {
            user,
            given: None,
            peer_uid: Some(peer.uid),
            service: "mfactl",
            rhost: None,
            outcome: AuditOutcome::Changed,
            reason: &format!("{what} by {by}"),
        });
    }

    pub(super) fn list_users(&self, at: &Snapshot, peer: &Peer, after: Option<&str>) -> Reply {
        self.require_admin(at, peer)?;
        // One more than a page tells whether another page follows.
        let mut records = self.stored(self.store.list_users(after, USERS_PER_PAGE + 1))?;
        let more = records.len() > USERS_PER_PAGE;
        records.truncate(USERS_PER_PAGE);
        Ok(Response::Users { users: records.iter().map(|r| self.user_status(at, r, false)).collect(), more })
    }

    /// The record of the account `user` stands for (see `resolve`).
    fn existing_record(&self, user: &str) -> Result<UserRecord, Refusal> {
        let account = self.account_of(user)?;
        self.get_record(&account)?
            .ok_or_else(|| refuse(ErrorKind::NotFound, format!("{account} has no two-factor record")))
    }

    pub(super) fn check_value(&self, at: &Snapshot, peer: &Peer, user: &str) -> Reply {
        self.require_admin(at, peer)?;
        let record = self.existing_record(user)?;
        let user = record.user.as_str();
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

    pub(super) fn authorize(&self, at: &Snapshot, peer: &Peer, user: &str, code: &Code) -> Reply {
        self.require_admin(at, peer)?;
        let record = self.existing_record(user)?;
        let user = record.user.as_str();
        if !record.is_enrolled() {
            return Err(refuse(ErrorKind::Conflict, format!("{user} has no enabled device to approve")));
        }
        self.prove_code(at, peer, user, code, "super-user approval proven with code", |record| record.approved = true)?;
        self.admin_event(peer, user, "super-user approval granted");
        Ok(Response::Ok { message: Some(format!("super-user access approved for {user}'s device")) })
    }

    pub(super) fn revoke(&self, at: &Snapshot, peer: &Peer, user: &str) -> Reply {
        self.require_admin(at, peer)?;
        let record = self.existing_record(user)?;
        let user = record.user.as_str();
        self.with_record(user, |record| {
            record.approved = false;
            (true, ())
        })?;
        self.admin_event(peer, user, "super-user approval revoked");
        Ok(Response::Ok { message: Some(format!("super-user approval revoked for {user}")) })
    }

    pub(super) fn unlock(&self, at: &Snapshot, peer: &Peer, user: &str) -> Reply {
        self.require_admin(at, peer)?;
        let record = self.existing_record(user)?;
        let user = record.user.as_str();
        self.with_record(user, |record| {
            lockout::unlock(record);
            (true, ())
        })?;
        self.admin_event(peer, user, "unlocked");
        Ok(Response::Ok { message: Some(format!("{user} unlocked")) })
    }
}
