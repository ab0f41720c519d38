//! Users and groups the standard way (NSS), so LDAP/SSSD accounts work.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

/// The account name of a uid, if NSS knows it.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// Names of every group `user` belongs to (primary and supplementary), via
/// getgrouplist(3). Empty for an unknown user.
pub fn group_names(user: &str) -> Vec<String> {
    let Ok(Some(account)) = User::from_name(user) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user) else {
        return Vec::new();
    };
    let gids = nix::unistd::getgrouplist(&name, account.gid).unwrap_or_else(|_| vec![account.gid]);
    gids.into_iter().filter_map(group_name).collect()
}

fn group_name(gid: Gid) -> Option<String> {
    Group::from_gid(gid).ok().flatten().map(|g| g.name)
}

/// Host name for the default issuer.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Group membership lookup, swappable in tests.
pub trait Directory: Send + Sync {
    fn groups_of(&self, user: &str) -> Vec<String>;
}

/// The system's NSS.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemDirectory;

impl Directory for SystemDirectory {
    fn groups_of(&self, user: &str) -> Vec<String> {
        group_names(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group_names("root").iter().any(|g| g == "root"));
        assert!(group_names("no-such-user-mfad").is_empty());
    }
}
