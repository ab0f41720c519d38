//! `mfactl doctor` run for real against scratch `/etc`-like trees (`--root`)
//! and a real mfad: every finding is reported on a broken tree and absent
//! from the sound one. The clock test sets and restores the kernel's
//! STA_UNSYNC bit (adjtimex, as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use e2e::*;
use serde_json::Value;

const COMMON_AUTH: &str = "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
                           auth required pam_permit.so\nauth required pam_mfa.so\n";
const SSHD_CONFIG: &str = "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\nKbdInteractiveAuthentication yes\n\
                           AuthenticationMethods publickey,keyboard-interactive\n";

/// A scratch root holding a sound set-up: the stacks of sshd, sudo, su and
/// login through common-auth, sshd_config asking keyboard-interactive,
/// mfad.toml with MFA on, the key file 0600.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn sound() -> Tree {
        let tree = Tree { dir: tempfile::Builder::new().prefix("mfa-doctor-").tempdir().unwrap() };
        tree.write("etc/pam.d/common-auth", COMMON_AUTH);
        tree.write("etc/pam.d/sshd", "@include common-auth\naccount required pam_nologin.so\n");
        tree.write("etc/pam.d/sudo", "@include common-auth\n");
        tree.write("etc/pam.d/su", "auth sufficient pam_rootok.so\n@include common-auth\n");
        tree.write("etc/pam.d/login", "auth optional pam_faildelay.so delay=3000000\n@include common-auth\n");
        tree.write("etc/ssh/sshd_config", SSHD_CONFIG);
        tree.write("etc/ssh/sshd_config.d/README", "KbdInteractiveAuthentication no\n");
        tree.write("etc/mfad/mfad.toml", "enabled = true\n");
        tree.write("etc/mfad/secret.key", &"k".repeat(32));
        tree.chmod("etc/mfad/secret.key", 0o600);
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// mfactl doctor on this tree, asking mfad on `socket`.
    fn doctor(&self, socket: &Path, extra: &[&str]) -> Output {
        run(Command::new(bin("mfactl"))
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .arg("doctor")
            .arg("--root")
            .arg(self.dir.path()))
    }

    /// `doctor --json`: the findings document and the exit status.
    fn report(&self, socket: &Path) -> Report {
        let out = self.doctor(socket, &["--json"]);
        let doc: Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(&out), stderr(&out)));
        Report { doc, status: out.status.code().unwrap() }
    }
}

struct Report {
    doc: Value,
    status: i32,
}

impl Report {
    /// (severity, message) of each finding of `check`.
    fn of(&self, check: &str) -> Vec<(String, String)> {
        let findings = self.doc["findings"].as_array().unwrap();
        let found: Vec<(String, String)> = findings
            .iter()
            .filter(|f| f["check"] == check)
            .map(|f| (f["severity"].as_str().unwrap().to_owned(), f["message"].as_str().unwrap().to_owned()))
            .collect();
        assert!(!found.is_empty(), "check {check} printed nothing: {}", self.doc);
        found
    }

    fn assert_ok(&self, check: &str) {
        let found = self.of(check);
        assert!(found.iter().all(|(s, _)| s == "ok"), "{check}: {found:?}");
    }

    /// The findings of `check` with `severity`; at least one.
    fn assert_has(&self, check: &str, severity: &str, needle: &str) -> String {
        let found = self.of(check);
        let hit = found.iter().find(|(s, m)| s == severity && m.contains(needle));
        hit.unwrap_or_else(|| panic!("{check}: no {severity} with {needle:?} in {found:?}")).1.clone()
    }
}

#[test]
fn a_stack_without_the_module_is_an_error() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.report(&mfad.socket).assert_ok("pam-stack");
    // sudo with its own auth rules instead of common-auth's.
    tree.write("etc/pam.d/sudo", "auth required pam_unix.so\n");
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("pam-stack", "error", "/etc/pam.d/sudo");
    assert!(message.contains("auth required pam_mfa.so"), "says what to do: {message}");
    assert_eq!(report.of("pam-stack").len(), 1, "sshd, su, login still have it through common-auth");
    assert_eq!(report.status, 8);
}

#[test]
fn a_sufficient_line_is_an_error() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.report(&mfad.socket).assert_ok("pam-control");
    tree.write("etc/pam.d/common-auth", &COMMON_AUTH.replace("required pam_mfa.so", "sufficient pam_mfa.so"));
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("pam-control", "error", "/etc/pam.d/common-auth:4");
    assert!(message.contains("sufficient") && message.contains("required"), "{message}");
    assert_eq!(report.of("pam-control").len(), 1, "one line for a rule included by four stacks");
    assert_eq!(report.status, 8);
}

#[test]
fn sshd_without_keyboard_interactive_is_an_error() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.report(&mfad.socket).assert_ok("sshd");
    // A drop-in read before the main file's own line wins, as in sshd.
    tree.write("etc/ssh/sshd_config.d/50-cloud.conf", "KbdInteractiveAuthentication no\n");
    let report = tree.report(&mfad.socket);
    report.assert_has("sshd", "error", "KbdInteractiveAuthentication no (/etc/ssh/sshd_config.d/50-cloud.conf:1)");
    assert_eq!(report.status, 8);

    tree.write("etc/ssh/sshd_config.d/50-cloud.conf", "ChallengeResponseAuthentication yes\n");
    tree.report(&mfad.socket).assert_ok("sshd");
    tree.write("etc/ssh/sshd_config", &SSHD_CONFIG.replace("UsePAM yes", "UsePAM no"));
    tree.report(&mfad.socket).assert_has("sshd", "error", "UsePAM no");
    tree.write("etc/ssh/sshd_config", &SSHD_CONFIG.replace("publickey,keyboard-interactive", "publickey password"));
    let report = tree.report(&mfad.socket);
    report.assert_has("sshd", "error", "`publickey`");
    report.assert_has("sshd", "error", "`password`");
}

#[test]
fn a_loose_key_file_is_an_error() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.report(&mfad.socket).assert_ok("key-file");
    tree.chmod("etc/mfad/secret.key", 0o644);
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("key-file", "error", "mode 0644");
    assert!(message.contains("chmod 600 /etc/mfad/secret.key"), "{message}");
    assert_eq!(report.status, 8);
    // A key file named in the config, owned by another user.
    tree.chmod("etc/mfad/secret.key", 0o600);
    tree.write("etc/mfad/mfad.toml", "enabled = true\n[store]\nkey_file = \"/srv/key\"\n");
    tree.write("srv/key", "k");
    tree.chmod("srv/key", 0o600);
    std::os::unix::fs::chown(tree.path("srv/key"), Some(65534), None).unwrap();
    tree.report(&mfad.socket).assert_has("key-file", "error", "/srv/key is owned by uid 65534");
}

#[test]
fn a_daemon_that_is_down_is_an_error() {
    let mut mfad = Mfad::start("");
    let tree = Tree::sound();
    let report = tree.report(&mfad.socket);
    report.assert_ok("daemon");
    report.assert_ok("socket");
    mfad.stop();
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("daemon", "error", "mfad is not answering");
    assert!(message.contains(&mfad.socket.display().to_string()) && message.contains("systemctl start mfad"));
    assert_eq!(report.status, 8);
    // Without --socket, the config's socket is looked for under the root.
    let out = run(Command::new(bin("mfactl")).args(["--json", "doctor", "--root"]).arg(tree.dir.path()));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let daemon = doc["findings"].as_array().unwrap().iter().find(|f| f["check"] == "daemon").unwrap().clone();
    let expected = tree.path("run/mfad/mfad.sock").display().to_string();
    assert!(daemon["message"].as_str().unwrap().contains(&expected), "{daemon}");
}

#[test]
fn root_not_enrolled_with_mfa_on_is_reported() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("root-enrolled", "warning", "root is not enrolled");
    assert!(message.contains("mfactl user setup root"), "{message}");
    assert!(report.status != 0);
    // With MFA off in the config, it is not a finding.
    tree.write("etc/mfad/mfad.toml", "enabled = false\n");
    tree.report(&mfad.socket).assert_ok("root-enrolled");
    tree.write("etc/mfad/mfad.toml", "enabled = true\n");
    mfad.enroll("root", "totp");
    tree.report(&mfad.socket).assert_ok("root-enrolled");
}

#[test]
fn a_single_password_service_in_the_two_prompt_mode_is_reported() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.write("etc/pam.d/dovecot", "@include common-auth\n@include common-account\n");
    let report = tree.report(&mfad.socket);
    let message = report.assert_has("legacy-service", "warning", "/etc/pam.d/dovecot");
    assert!(message.contains("forward_pass") && message.contains("try_first_pass"), "{message}");
    tree.write(
        "etc/pam.d/dovecot",
        "auth requisite pam_mfa.so forward_pass\nauth required pam_unix.so try_first_pass\n",
    );
    tree.report(&mfad.socket).assert_ok("legacy-service");
    // sshd in the two-prompt mode is not a single-password service.
    tree.report(&mfad.socket).assert_ok("pam-stack");
}

#[test]
fn unenrolled_administrators_and_forced_role_members_are_reported() {
    ensure_user("mfadocadm", &[]);
    ensure_user("mfadocfrc", &[]);
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    tree.report(&mfad.socket).assert_ok("members-enrolled");
    tree.write("etc/group", "root:x:0:\nmfa-admins:x:4901:mfadocadm\nmfadocforce:x:4902:mfadocfrc\n");
    tree.write("etc/mfad/mfad.toml", "enabled = true\n[[role]]\ngroup = \"mfadocforce\"\npolicy = \"force\"\n");
    let report = tree.report(&mfad.socket);
    report.assert_has("members-enrolled", "warning", "mfadocadm (group mfa-admins, admin_group) is not enrolled");
    let message =
        report.assert_has("members-enrolled", "warning", "mfadocfrc (group mfadocforce, role with policy force)");
    assert!(message.contains("mfactl user setup mfadocfrc"), "{message}");
    mfad.enroll("mfadocadm", "totp");
    mfad.enroll("mfadocfrc", "hotp");
    tree.report(&mfad.socket).assert_ok("members-enrolled");
}

/// Holds the kernel's clock status as a test set it, and puts back the
/// status and error estimates found, even when the test fails.
struct ClockGuard {
    saved: libc::timex,
    _lock: std::sync::MutexGuard<'static, ()>,
}

/// Tests that set the clock's status, or need it as set, run one at a time.
static CLOCK: Mutex<()> = Mutex::new(());

fn adjtimex(modes: u32, status: i32, maxerror: i64, esterror: i64) -> libc::timex {
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    timex.modes = modes;
    timex.status = status;
    timex.maxerror = maxerror;
    timex.esterror = esterror;
    let rc = unsafe { libc::adjtimex(&mut timex) };
    assert!(rc >= 0, "adjtimex: {}", std::io::Error::last_os_error());
    timex
}

impl ClockGuard {
    /// Set the clock synchronised (a small error) or not (STA_UNSYNC).
    fn set(synchronised: bool) -> ClockGuard {
        let lock = CLOCK.lock().unwrap_or_else(|p| p.into_inner());
        let saved = adjtimex(0, 0, 0, 0);
        let guard = ClockGuard { saved, _lock: lock };
        let status = if synchronised { saved.status & !libc::STA_UNSYNC } else { saved.status | libc::STA_UNSYNC };
        let all = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        adjtimex(all, status, 100_000, 1_000);
        guard
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        let all = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        let s = self.saved;
        adjtimex(all, s.status, s.maxerror, s.esterror);
        let now = adjtimex(0, 0, 0, 0);
        assert_eq!(now.status & libc::STA_UNSYNC, s.status & libc::STA_UNSYNC, "clock status restored");
    }
}

#[test]
fn an_unsynchronised_clock_is_reported() {
    let mfad = Mfad::start("");
    let tree = Tree::sound();
    {
        let _clock = ClockGuard::set(false);
        let message = tree.report(&mfad.socket).assert_has("clock", "warning", "not synchronised");
        assert!(message.contains("NTP"), "{message}");
    }
    let _clock = ClockGuard::set(true);
    tree.report(&mfad.socket).assert_ok("clock");
}

#[test]
fn a_sound_set_up_exits_zero_and_prints_one_line_per_finding() {
    let mfad = Mfad::start("");
    mfad.enroll("root", "totp");
    let tree = Tree::sound();
    {
        let _clock = ClockGuard::set(true);
        let report = tree.report(&mfad.socket);
        let findings = report.doc["findings"].as_array().unwrap();
        assert!(findings.iter().all(|f| f["severity"] == "ok"), "{}", report.doc);
        assert_eq!(report.status, 0);
        assert_eq!((report.doc["errors"].as_u64(), report.doc["warnings"].as_u64()), (Some(0), Some(0)));
        let text = tree.doctor(&mfad.socket, &[]);
        assert!(text.status.success());
        let lines: Vec<String> = stdout(&text).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), findings.len() + 1, "{lines:?}");
        assert!(lines.iter().take(findings.len()).all(|l| l.starts_with("ok ")), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "0 error(s), 0 warning(s)");
    }
    // Warnings only: exit 9.
    let _clock = ClockGuard::set(false);
    assert_eq!(tree.report(&mfad.socket).status, 9);
    let text = tree.doctor(&mfad.socket, &[]);
    assert_eq!(text.status.code(), Some(9));
    assert!(stdout(&text).lines().any(|l| l.starts_with("warning  clock  ")), "{}", stdout(&text));
}
