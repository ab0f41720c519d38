//! Who may do what: every request is authorized by the peer's credentials
//! (SO_PEERCRED), never by anything the peer says about itself.

use mfa_shared::config::{Config, RolePolicy};
use mfa_shared::protocol::{ErrorKind, MAX_FIELD_BYTES, is_valid_field, is_valid_user_name};

use super::{Daemon, Peer, Refusal, Snapshot, refuse};
use crate::policy;

/// The account a name given by a client stands for (SPEC 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    /// The name as given (PAM_USER, `--user`, ...).
    pub given: String,
    /// The record's key: the canonical NSS name, or the given name when NSS
    /// does not know it (virtual users of legacy services).
    pub account: String,
    /// The uid, when NSS knows the name.
    pub uid: Option<u32>,
}

impl Daemon {
    /// Root, or a member of `admin_group`; a failed lookup grants nothing.
    pub(super) fn is_admin(&self, at: &Snapshot, peer: &Peer) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let admin_group = &at.config.admin_group;
        peer.name
            .as_deref()
            .is_some_and(|name| self.directory.groups_of(name).is_ok_and(|groups| groups.contains(admin_group)))
    }

    pub(super) fn require_admin(&self, at: &Snapshot, peer: &Peer) -> Result<(), Refusal> {
        if self.is_admin(at, peer) {
            return Ok(());
        }
        Err(refuse(
            ErrorKind::PermissionDenied,
            format!("permission denied: administration needs root or membership of group {}", at.config.admin_group),
        ))
    }

    /// The account a self-service request acts on: the caller's own, or
    /// (for an administrator) the one named.
    pub(super) fn target(&self, at: &Snapshot, peer: &Peer, user: Option<String>) -> Result<String, Refusal> {
        let Some(own) = peer.name.as_deref() else {
            return match user {
                Some(user) => self.require_admin(at, peer).and_then(|()| self.account_of(&user)),
                None => Err(refuse(ErrorKind::NotFound, format!("uid {} has no account name", peer.uid))),
            };
        };
        let own = self.resolve(own).map_err(lookup_refusal)?;
        match user {
            None => Ok(own.account),
            Some(user) => {
                valid_user_name(&user)?;
                let named = self.resolve(&user).map_err(lookup_refusal)?;
                if named.account != own.account {
                    self.require_admin(at, peer)?;
                }
                Ok(named.account)
            }
        }
    }

    /// The record key of a name an administrator gave.
    pub(super) fn account_of(&self, user: &str) -> Result<String, Refusal> {
        valid_user_name(user)?;
        Ok(self.resolve(user).map_err(lookup_refusal)?.account)
    }

    /// The account `given` stands for: of the uid's first name, the
    /// canonical NSS name and the name as given, the first that holds an
    /// enrolled device (else the uid's first name), so that no second name,
    /// nor a record written under a spelling that is not the canonical one,
    /// reaches an account without its rules; a name NSS does not know,
    /// literally.
    pub(super) fn resolve(&self, given: &str) -> Result<Identity, String> {
        let Some((found, first)) = self.directory.account_and_first_name(given)? else {
            return Ok(Identity { given: given.to_string(), account: given.to_string(), uid: None });
        };
        let first = first.unwrap_or_else(|| found.name.clone());
        let mut candidates: Vec<&str> = Vec::with_capacity(3);
        for name in [first.as_str(), found.name.as_str(), given] {
            if !candidates.contains(&name) {
                candidates.push(name);
            }
        }
        // With no device anywhere, the uid's first name: a second name sets
        // up the account itself, not a record of its own.
        let mut account = first.clone();
        if candidates.len() > 1 {
            for name in candidates {
                let record = self.store.get_user(name).map_err(|e| format!("store: {e}"))?;
                if record.is_some_and(|r| r.is_enrolled()) {
                    account = name.to_string();
                    break;
                }
            }
        }
        Ok(Identity { given: given.to_string(), account, uid: Some(found.uid) })
    }

    /// The strictest role policy of `user`'s groups; no lookup when no role
    /// is configured.
    pub(super) fn role_of(&self, config: &Config, user: &str) -> Result<Option<RolePolicy>, String> {
        if config.roles.is_empty() {
            return Ok(None);
        }
        Ok(policy::strictest_role(config, &self.directory.groups_of(user)?))
    }
}

/// Refuse a name no account can have (see [`is_valid_user_name`]).
pub(super) fn valid_user_name(user: &str) -> Result<(), Refusal> {
    if is_valid_user_name(user) { Ok(()) } else { Err(refuse(ErrorKind::BadRequest, "invalid user name")) }
}

/// Refuse a PAM item that would reach a terminal or a log badly (see
/// [`is_valid_field`]); `what` names it, the value is never echoed.
pub(super) fn valid_field(what: &str, value: Option<&str>) -> Result<(), Refusal> {
    match value {
        Some(value) if !is_valid_field(value) => Err(refuse(
            ErrorKind::BadRequest,
            format!("invalid {what}: control characters or over {MAX_FIELD_BYTES} bytes"),
        )),
        _ => Ok(()),
    }
}

fn lookup_refusal(err: String) -> Refusal {
    refuse(ErrorKind::Internal, format!("account lookup failed: {err}"))
}
