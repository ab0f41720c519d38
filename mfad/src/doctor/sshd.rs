//! sshd's configuration as it bears on pam_mfa: `UsePAM`,
//! `KbdInteractiveAuthentication` (alias `ChallengeResponseAuthentication`),
//! `AuthenticationMethods` and `PubkeyAuthentication`.
//!
//! Read as sshd reads it: keywords in any case, `keyword value` or
//! `keyword=value`, the first value of a keyword wins, `Include` (globs,
//! relative to /etc/ssh) read in place, and what follows a `Match` line
//! applies only to some logins (it is left out of the global values).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Finding, Machine};

const MAIN: &str = "/etc/ssh/sshd_config";
const MAX_DEPTH: usize = 16;

/// The global values of the keywords doctor looks at, and where each is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshdConfig {
    /// Lower-case keyword -> (value, `FILE:LINE`).
    values: BTreeMap<String, (String, String)>,
}

impl SshdConfig {
    /// The value of `keyword` (lower case) and where it is set, or sshd's
    /// default and `default`.
    fn get(&self, keyword: &str, default: &str) -> (String, String) {
        self.values.get(keyword).cloned().unwrap_or_else(|| (default.to_owned(), "sshd's default".to_owned()))
    }
}

/// Files as sshd would see them: `read` a file by its path on the machine,
/// `expand` an `Include` pattern to the paths it names, sorted.
pub struct Files<'a> {
    pub read: &'a dyn Fn(&str) -> Option<String>,
    pub expand: &'a dyn Fn(&str) -> Vec<String>,
}

/// Parse `/etc/ssh/sshd_config` with its includes; None when it does not exist.
pub fn parse(files: &Files<'_>) -> Option<SshdConfig> {
    let text = (files.read)(MAIN)?;
    let mut config = SshdConfig::default();
    parse_file(MAIN, &text, false, files, 0, &mut config);
    Some(config)
}

fn parse_file(path: &str, text: &str, in_match: bool, files: &Files<'_>, depth: usize, config: &mut SshdConfig) {
    let mut in_match = in_match;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
        let (keyword, rest) = line.split_at(split);
        let value = rest.trim_start().strip_prefix('=').unwrap_or(rest).trim();
        let keyword = match keyword.to_ascii_lowercase().as_str() {
            "challengeresponseauthentication" => "kbdinteractiveauthentication".to_owned(),
            other => other.to_owned(),
        };
        match keyword.as_str() {
            "match" => in_match = true,
            "include" if depth < MAX_DEPTH => {
                for pattern in value.split_whitespace() {
                    let pattern =
                        if pattern.starts_with('/') { pattern.to_owned() } else { format!("/etc/ssh/{pattern}") };
                    for included in (files.expand)(&pattern) {
                        if let Some(inner) = (files.read)(&included) {
                            parse_file(&included, &inner, in_match, files, depth + 1, config);
                        }
                    }
                }
            }
            _ if !in_match => {
                let place = format!("{path}:{}", i + 1);
                config.values.entry(keyword).or_insert_with(|| (value.to_owned(), place));
            }
            _ => {}
        }
    }
}

/// Read the machine's sshd_config (under its root).
pub fn load(machine: &Machine) -> Option<SshdConfig> {
    let read = |path: &str| std::fs::read_to_string(machine.path(Path::new(path))).ok();
    let expand = |pattern: &str| expand_glob(machine, pattern);
    parse(&Files { read: &read, expand: &expand })
}

/// The files a pattern names: a `*`/`?` glob in the last component only
/// (what sshd_config.d includes use), sorted as glob(3) sorts.
fn expand_glob(machine: &Machine, pattern: &str) -> Vec<String> {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let mut out: Vec<String> = std::fs::read_dir(machine.path(dir))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') && wildcard(name, n))
                .map(|n| PathBuf::from(dir).join(n).display().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `*` and `?` matching, as fnmatch(3) without brackets.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `sshd`: sshd runs the PAM stack and lets pam_mfa ask (keyboard-
/// interactive), and no allowed way to log in leaves keyboard-interactive out.
pub fn check(config: &Option<SshdConfig>) -> Vec<Finding> {
    const CHECK: &str = "sshd";
    let Some(config) = config else {
        return vec![Finding::ok(CHECK, format!("no {MAIN}: sshd is not installed here, nothing to check"))];
    };
    let mut findings = Vec::new();
    let (use_pam, place) = config.get("usepam", "no");
    if !use_pam.eq_ignore_ascii_case("yes") {
        findings.push(Finding::error(
            CHECK,
            format!(
                "UsePAM {use_pam} ({place}): sshd never runs its PAM stack, so pam_mfa never asks for a code. Set \
             `UsePAM yes` in {MAIN}"
            ),
        ));
    }
    let (kbd, place) = config.get("kbdinteractiveauthentication", "yes");
    if !kbd.eq_ignore_ascii_case("yes") {
        findings.push(Finding::error(
            CHECK,
            format!(
                "KbdInteractiveAuthentication {kbd} ({place}): pam_mfa's code prompt reaches SSH clients only through \
             keyboard-interactive, so users who need a code cannot log in. Set `KbdInteractiveAuthentication yes` \
             (Debian's sshd_config ships `no`)"
            ),
        ));
    }
    let (methods, place) = config.get("authenticationmethods", "any");
    if methods.eq_ignore_ascii_case("any") {
        let (pubkey, _) = config.get("pubkeyauthentication", "yes");
        if pubkey.eq_ignore_ascii_case("yes") {
            findings.push(Finding::warning(CHECK, format!(
                "AuthenticationMethods {methods} ({place}): a login with an SSH key alone (publickey) skips the PAM \
                 stack and so the code. Set `AuthenticationMethods publickey,keyboard-interactive` (key and code) \
                 or `keyboard-interactive` (password and code)"
            )));
        }
    } else {
        for list in methods.split_whitespace() {
            let asks = list.split(',').any(|m| m.split(':').next() == Some("keyboard-interactive"));
            if !asks {
                findings.push(Finding::error(
                    CHECK,
                    format!(
                        "AuthenticationMethods ({place}) allows `{list}`, which does not include keyboard-interactive: \
                     a login that way is never asked for a code. Add keyboard-interactive to every list (e.g. \
                     `publickey,keyboard-interactive`)"
                    ),
                ));
            }
        }
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            CHECK,
            format!(
                "sshd runs PAM through keyboard-interactive (UsePAM {use_pam}, KbdInteractiveAuthentication {kbd}, \
             AuthenticationMethods {methods})"
            ),
        ));
    }
    findings
}
