//! Checks on the PAM stacks: which services call pam_mfa, with which
//! control and options, and whether anything lets a login skip the code or
//! the password.

use std::collections::BTreeSet;

use super::pam::{Stack, load_stack};
use super::{Finding, Machine, or_ok};

/// The services whose stacks must ask for a code.
pub const GUARDED_SERVICES: &[&str] = &["sshd", "sudo", "su", "login"];

/// Services that answer every PAM prompt with the one password their client
/// sent (IMAP/POP, FTP, VPN, RADIUS, SMTP AUTH, proxies): they need
/// `forward_pass`.
pub const SINGLE_PASSWORD_SERVICES: &[&str] = &[
    "dovecot",
    "imap",
    "imaps",
    "imapd",
    "pop",
    "pop3",
    "pop3s",
    "pop3d",
    "sieve",
    "cyrus",
    "courier",
    "vsftpd",
    "proftpd",
    "pure-ftpd",
    "ftp",
    "openvpn",
    "radiusd",
    "freeradius",
    "smtp",
    "exim",
    "squid",
];

/// Modules whose `sufficient` success before pam_mfa is intended (root
/// switching user with su).
const BENIGN_SUFFICIENT: &[&str] = &["pam_rootok.so"];

/// Every stack under `/etc/pam.d` (includes followed), by file name.
pub fn load_all(machine: &Machine) -> Vec<Stack> {
    let dir = machine.path(std::path::Path::new("/etc/pam.d"));
    let read = |name: &str| -> Option<String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        std::fs::read_to_string(dir.join(name)).ok()
    };
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names.iter().filter_map(|name| load_stack(name, &read)).collect()
}

fn find<'a>(all: &'a [Stack], service: &str) -> Option<&'a Stack> {
    all.iter().find(|s| s.service == service)
}

/// `pam-stack`: the services that matter call pam_mfa (directly or through
/// an include). An error when MFA is on, a warning while it is off.
pub fn check_missing(all: &[Stack], enabled: bool) -> Vec<Finding> {
    const CHECK: &str = "pam-stack";
    let mut findings = Vec::new();
    let mut guarded = Vec::new();
    for service in GUARDED_SERVICES {
        let Some(stack) = find(all, service) else { continue };
        for broken in &stack.broken_includes {
            findings.push(Finding::warning(CHECK, format!("{broken}: PAM cannot follow it; fix or remove the line")));
        }
        if stack.mfa_rules().next().is_some() {
            guarded.push(*service);
            continue;
        }
        let message = format!(
            "/etc/pam.d/{service} does not call pam_mfa.so (not even through an @include): {service} asks for no \
             code. Add `auth required pam_mfa.so` after the password module (for all of them at once: \
             `pam-auth-update --enable mfa`, which adds it to common-auth)"
        );
        findings.push(if enabled { Finding::error(CHECK, message) } else { Finding::warning(CHECK, message) });
    }
    let ok = if guarded.is_empty() {
        "none of sshd, sudo, su, login has a stack under /etc/pam.d".to_owned()
    } else {
        format!("pam_mfa.so is in the stacks of {}", guarded.join(", "))
    };
    or_ok(CHECK, findings, ok)
}

/// `pam-control`: no pam_mfa rule whose success skips what follows (the
/// password) or whose failure is ignored, and no earlier rule whose success
/// skips pam_mfa.
pub fn check_controls(all: &[Stack]) -> Vec<Finding> {
    const CHECK: &str = "pam-control";
    let mut findings = Vec::new();
    let mut seen = BTreeSet::new();
    let mut report = |place: String, finding: Finding| {
        if seen.insert((place, finding.message.clone())) {
            findings.push(finding);
        }
    };
    for stack in all {
        for (index, rule) in stack.auth.iter().enumerate() {
            if rule.is_pam_mfa() {
                if let Some(how) = rule.control.success_skips() {
                    report(
                        rule.place(),
                        Finding::error(
                            CHECK,
                            format!(
                                "{}: pam_mfa.so is {how}: a right code alone ends the stack with success, so a password \
                         module after it is never asked, and a code without the password lets someone in. Use \
                         `required`",
                                rule.place()
                            ),
                        ),
                    );
                }
                if rule.control.ignores_failure() {
                    report(
                        rule.place(),
                        Finding::error(
                            CHECK,
                            format!(
                                "{}: pam_mfa.so is `{}`: a wrong code does not fail the login. Use `required`",
                                rule.place(),
                                rule.control.text()
                            ),
                        ),
                    );
                }
                continue;
            }
            let base = rule.module.rsplit('/').next().unwrap_or(&rule.module);
            if BENIGN_SUFFICIENT.contains(&base) {
                continue;
            }
            if let Some(skipped) = skipped_mfa(stack, index) {
                let how = rule.control.success_skips().unwrap_or_default();
                report(
                    rule.place(),
                    Finding::warning(
                        CHECK,
                        format!(
                            "{}: {} is {how} and comes before pam_mfa.so ({}): when it succeeds, stack `{}` ends or \
                     jumps before a code is asked. Make it `required`, or move pam_mfa.so before it if this is \
                     intended",
                            rule.place(),
                            rule.module,
                            skipped.place(),
                            stack.service
                        ),
                    ),
                );
            }
        }
    }
    let users: Vec<&str> = all.iter().filter(|s| s.mfa_rules().next().is_some()).map(|s| s.service.as_str()).collect();
    let ok = if users.is_empty() {
        "no stack calls pam_mfa.so".to_owned()
    } else {
        format!("no rule lets a login skip the password or the code ({})", users.join(", "))
    };
    or_ok(CHECK, findings, ok)
}

/// The pam_mfa rule that a success of rule `index` skips, if any.
fn skipped_mfa(stack: &Stack, index: usize) -> Option<&super::pam::Rule> {
    let rule = stack.auth.get(index)?;
    let how = rule.control.success_skips()?;
    let jump = how.strip_prefix("`success=").and_then(|t| t.split('`').next()).and_then(|n| n.parse::<usize>().ok());
    let after = stack.auth.iter().enumerate().skip(index + 1);
    match jump {
        // The rules jumped over are index+1 ..= index+n.
        Some(n) => after.take(n).map(|(_, r)| r).find(|r| r.is_pam_mfa()),
        None => after.map(|(_, r)| r).find(|r| r.is_pam_mfa()),
    }
}

/// `pam-failmode`: `failmode=safe` lets logins through without a code while
/// mfad is down; say where.
pub fn check_failmode(all: &[Stack]) -> Vec<Finding> {
    const CHECK: &str = "pam-failmode";
    let mut findings = Vec::new();
    let mut seen = BTreeSet::new();
    for stack in all {
        for rule in stack.mfa_rules() {
            if !seen.insert(rule.place()) {
                continue;
            }
            match rule.arg_value("failmode") {
                None | Some("secure") => {}
                Some("safe") => findings.push(Finding::warning(
                    CHECK,
                    format!(
                        "{}: failmode=safe: while mfad is unreachable, logins through this rule need no code \
                     (elevation services still refuse). Remove it unless availability matters more than the \
                     second factor here",
                        rule.place()
                    ),
                )),
                Some(other) => findings.push(Finding::error(
                    CHECK,
                    format!("{}: failmode={other} is not a failmode (secure or safe)", rule.place()),
                )),
            }
        }
    }
    or_ok(CHECK, findings, "failmode secure: while mfad is unreachable, a login that needs a code is refused")
}

/// `legacy-service`: the stacks of services that can answer only one
/// password use `forward_pass`, followed by a password module that takes
/// the password handed on.
pub fn check_legacy_services(all: &[Stack]) -> Vec<Finding> {
    const CHECK: &str = "legacy-service";
    let mut findings = Vec::new();
    for stack in all.iter().filter(|s| SINGLE_PASSWORD_SERVICES.contains(&s.service.as_str())) {
        let service = &stack.service;
        for rule in stack.mfa_rules() {
            if !rule.has_arg("forward_pass") {
                findings.push(Finding::warning(
                    CHECK,
                    format!(
                        "/etc/pam.d/{service}: pam_mfa.so ({}) asks for the code in a second prompt, but {service} \
                     answers every prompt with the one password its client sent: users who need a code cannot log \
                     in. Give this stack its own rules: first `auth requisite pam_mfa.so forward_pass`, then \
                     `auth required pam_unix.so try_first_pass` (users type their password followed by the code)",
                        rule.place()
                    ),
                ));
            }
        }
    }
    for stack in all {
        let Some(index) = stack.auth.iter().position(|r| r.is_pam_mfa() && r.has_arg("forward_pass")) else {
            continue;
        };
        let hands_on = stack.auth.iter().skip(index + 1).any(|r| r.has_arg("try_first_pass"));
        if !hands_on {
            findings.push(Finding::warning(
                CHECK,
                format!(
                    "/etc/pam.d/{}: pam_mfa.so forward_pass ({}) hands the password on, but no rule after it has \
                 `try_first_pass`: the password module asks again, which a single-password client answers with \
                 password and code. Add `try_first_pass` to it (`use_first_pass` would refuse every login that \
                 needs no code, where the module hands nothing on)",
                    stack.service,
                    stack.auth.get(index).map(|r| r.place()).unwrap_or_default()
                ),
            ));
        }
    }
    or_ok(CHECK, findings, "no single-password service (IMAP/POP, FTP, VPN, RADIUS) uses the two-prompt mode")
}
