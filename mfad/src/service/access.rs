//! Who may do what: every request is authorized by the peer's credentials
//! (SO_PEERCRED), never by anything the peer says about itself.

use mfa_shared::config::{Config, RolePolicy};
use mfa_shared::protocol::{ErrorKind, is_valid_user_name};

use super::{Daemon, Peer, Refusal, Snapshot, refuse};
use crate::policy;

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
        let own = peer.name.clone();
        match (user, own) {
            (Some(user), Some(own)) if user == own => Ok(user),
            (Some(user), _) => {
                self.require_admin(at, peer)?;
                valid_user_name(&user)?;
                Ok(user)
            }
            (None, Some(own)) => Ok(own),
            (None, None) => Err(refuse(ErrorKind::NotFound, format!("uid {} has no account name", peer.uid))),
        }
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
