//! The files in packaging/ agree with the code: the shipped config parses
//! to the defaults, every PAM example uses only options the module knows,
//! the pam-auth-update profile is off by default, and the unit keeps its
//! hardening.

// A test crate: its helpers may fail loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mfa_shared::config::Config;
use pam_mfa::Options;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn read(relative: &str) -> String {
    let path = packaging().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The active (uncommented) lines of a PAM stack that load pam_mfa.
fn pam_mfa_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|line| !line.starts_with('#') && line.contains("pam_mfa.so")).collect()
}

#[test]
fn shipped_config_is_the_defaults_with_mfa_off() {
    let text = read("mfad.toml");
    let config = Config::parse(&text).unwrap_or_else(|err| panic!("mfad.toml: {err}"));
    assert!(!config.enabled);
    assert_eq!(config, Config::default());
    assert!(text.lines().any(|l| l.trim() == "enabled = false"));
}

#[test]
fn shipped_config_comments_show_valid_defaults() {
    // Uncommenting every `#key = value` line and every `#[[table]]` header
    // must still parse, and change nothing but the example-only values.
    let text = read("mfad.toml");
    let uncommented: String = text
        .lines()
        .map(|line| {
            let rest = line.trim_start().strip_prefix('#').map(str::trim_start);
            match rest {
                Some(rest) if rest.starts_with("[[") => rest.to_string(),
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest.to_string()
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = Config::parse(&uncommented).unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
    let mut expected = Config::default();
    // Values that have no default to show (examples only).
    assert!(all.issuer.is_some());
    assert_eq!(all.bypass.rules.len(), 1);
    assert_eq!(all.roles.len(), 1);
    assert!(all.metrics.textfile.is_some());
    expected.issuer = all.issuer.clone();
    expected.metrics.textfile = all.metrics.textfile.clone();
    expected.bypass.rules = all.bypass.rules.clone();
    expected.roles = all.roles.clone();
    assert_eq!(all, expected, "a commented value differs from the default");
}

#[test]
fn pam_examples_use_known_options_only() {
    let dir = packaging().join("pam.d");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = pam_mfa_lines(&text);
        assert!(!lines.is_empty(), "{} has no active pam_mfa line", path.display());
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], "auth", "{}: {line}", path.display());
            assert_eq!(fields[1], "required", "{}: {line}", path.display());
            assert_eq!(fields[2], "pam_mfa.so", "{}: {line}", path.display());
            let (_, warnings) = Options::parse(&fields[3..]);
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 4, "expected sshd, sudo, su and login examples");
    // The commented variants must be valid too.
    for line in read("pam.d/login").lines().chain(read("pam.d/sshd").lines()) {
        if let Some(idx) = line.find("pam_mfa.so") {
            let options: Vec<&str> = line[idx + "pam_mfa.so".len()..].split_whitespace().collect();
            let (_, warnings) = Options::parse(&options);
            assert!(warnings.is_empty(), "{line}: {warnings:?}");
        }
    }
}

#[test]
fn pam_auth_update_profile_is_off_and_additional() {
    let text = read("pam-configs/mfa");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} field"))
    };
    assert_eq!(field("Default"), "no");
    // Additional: after pam_unix's Primary block, for every service; a
    // Primary module would be an alternative to the password, not a second factor.
    assert_eq!(field("Auth-Type"), "Additional");
    let priority: i32 = field("Priority").parse().unwrap();
    assert!(priority < 256, "below pam_unix");
    let auth: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Auth:"))
        .skip(1)
        .take_while(|l| l.starts_with(char::is_whitespace))
        .map(str::trim)
        .collect();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(auth[0].split_whitespace().collect::<Vec<_>>(), ["required", "pam_mfa.so"]);
}

#[test]
fn systemd_unit_keeps_its_hardening() {
    let text = read("mfad.service");
    let active: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for needed in [
        "Type=notify",
        "ExecStart=/usr/local/sbin/mfad --config /etc/mfad/mfad.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=mfad",
        "RuntimeDirectoryMode=0755",
        "StateDirectory=mfad",
        "ConfigurationDirectory=mfad",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mfad /etc/mfad",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "Restart=on-failure",
    ] {
        assert!(active.contains(&needed), "mfad.service lacks {needed:?}");
    }
}

#[test]
fn systemd_unit_allows_no_core_dumps() {
    // mfad also makes itself non-dumpable at start; the limit keeps a core
    // (which would hold the key and secrets) from being written even before.
    let text = read("mfad.service");
    let limits: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.starts_with('#') && l.starts_with("LimitCORE=")).collect();
    assert_eq!(limits, ["LimitCORE=0"], "mfad.service must set LimitCORE=0 exactly once");
}

#[test]
fn installer_never_touches_pam_stacks_or_enables_mfa() {
    let text = read("install.sh");
    // The commands, without comments and without the closing message (a
    // here-document that names commands for the administrator to run).
    let code: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.starts_with('#')).take_while(|l| !l.starts_with("cat <<")).collect();
    assert!(code.contains(&"set -eu"));
    assert!(code.iter().any(|l| l.contains("cargo build --release --locked -p mfad -p pam_mfa")));
    for line in &code {
        assert!(!line.starts_with("systemctl"), "{line}");
        assert!(!line.starts_with("pam-auth-update"), "{line}");
        assert!(!line.contains("sed -i"), "{line}");
        assert!(!line.contains("/etc/pam.d"), "{line}");
    }
    // The config is installed only when absent.
    let config_install = code.iter().position(|l| l.contains("packaging/mfad.toml\" \"$DESTDIR/etc/mfad/mfad.toml"));
    let guard = code.iter().position(|l| l.contains("[ -e \"$DESTDIR/etc/mfad/mfad.toml\" ]"));
    assert!(matches!((guard, config_install), (Some(g), Some(c)) if g < c), "{guard:?} {config_install:?}");
}
