//! Members of `admin_group` and of `force`/`require` roles without a
//! device: an administrator who cannot answer a code when MFA turns on, a
//! user stopped at the next login until a device is set up.
//!
//! Members are read from `/etc/group` (the member list) and `/etc/passwd`
//! (users whose primary group it is) under the root; groups that only a
//! directory service (LDAP, sssd) knows are not listed.

use std::collections::BTreeSet;

use mfa_shared::config::{Config, RolePolicy};
use mfa_shared::{ClientError, EnrollmentState};

use super::system::DaemonAnswer;
use super::{Finding, or_ok};

/// At most this many members are asked about per group, so a huge group
/// cannot make doctor slow; the rest is said to be unchecked.
pub const MAX_MEMBERS: usize = 200;

/// The members of `group` from the texts of /etc/group and /etc/passwd;
/// None when the group is not in /etc/group.
pub fn members(group: &str, group_file: &str, passwd_file: &str) -> Option<Vec<String>> {
    let entry = group_file.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.first() == Some(&group))?;
    let gid = entry.get(2).copied().unwrap_or("");
    let mut names: BTreeSet<String> = entry
        .get(3)
        .map(|m| m.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    for fields in passwd_file.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
        if let (Some(name), Some(user_gid)) = (fields.first(), fields.get(3))
            && !gid.is_empty()
            && *user_gid == gid
        {
            names.insert((*name).to_owned());
        }
    }
    Some(names.into_iter().collect())
}

/// The groups to check: `admin_group`, then each `force`/`require` role.
fn groups(config: &Config) -> Vec<(String, String)> {
    let mut out = vec![(config.admin_group.clone(), "admin_group".to_owned())];
    for role in &config.roles {
        if matches!(role.policy, RolePolicy::Force | RolePolicy::Require) {
            out.push((role.group.clone(), format!("role with policy {}", role.policy.as_str())));
        }
    }
    out
}

/// `members-enrolled`: with MFA on, every member of `admin_group` and of a
/// `force`/`require` role has a device. `ask` asks mfad about one user.
pub fn check(config: &Config, group_file: &str, passwd_file: &str, ask: &dyn Fn(&str) -> DaemonAnswer) -> Vec<Finding> {
    const CHECK: &str = "members-enrolled";
    if !config.enabled {
        return vec![Finding::ok(CHECK, "MFA is off: the enrollment of administrators and roles not checked")];
    }
    let mut findings = Vec::new();
    let mut checked = 0;
    for (group, what) in groups(config) {
        let Some(names) = members(&group, group_file, passwd_file) else { continue };
        if names.len() > MAX_MEMBERS {
            findings.push(Finding::warning(
                CHECK,
                format!(
                    "group {group} ({what}) has {} members: only the first {MAX_MEMBERS} were checked",
                    names.len()
                ),
            ));
        }
        for user in names.iter().take(MAX_MEMBERS) {
            checked += 1;
            let finding = match ask(user) {
                DaemonAnswer::Status(s) if s.state == EnrollmentState::Enabled => continue,
                DaemonAnswer::Status(s) => Finding::warning(CHECK, member_message(user, &group, &what, s.state)),
                DaemonAnswer::Failed(ClientError::Daemon { message, .. }) => {
                    Finding::warning(CHECK, format!("cannot ask mfad about {user} (group {group}): {message}"))
                }
                _ => return vec![Finding::warning(CHECK, "cannot ask mfad who is enrolled (see the `daemon` check)")],
            };
            findings.push(finding);
        }
    }
    or_ok(CHECK, findings, format!("the {checked} members of admin_group and of force/require roles are enrolled"))
}

fn member_message(user: &str, group: &str, what: &str, state: EnrollmentState) -> String {
    let why = if what == "admin_group" {
        "an administrator with no device logs in without a second factor, and cannot approve or help others \
         with one"
    } else {
        "at the next login they must set up a device inside the login (a service that cannot show the key, such \
         as IMAP or FTP, refuses them)"
    };
    format!("{user} (group {group}, {what}) is {}: {why}. Run `mfactl user setup {user}`", state.as_str())
}
