//! Users and groups the standard way (NSS), so LDAP/SSSD accounts work.

use std::ffi::CString;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group_names("root").unwrap().iter().any(|g| g == "root"));
        assert!(group_names("no-such-user-mfad").unwrap().is_empty());
    }
}
