//! The Debian package of packaging/build-deb.sh, as an administrator meets
//! it: `dpkg -i` on this machine, every file and mode checked, a login
//! through the installed module (pamtester, a service file of the test's
//! own) against the installed mfad, then `dpkg --purge`, which must leave
//! the machine as it was. Paths of the package that exist before (another
//! suite's `packaging/install.sh`) are moved aside meanwhile and put back.
//!
//! The .deb is $MFA_DEB when set (tests/run.sh builds it once), else built
//! here. The man pages, completions and lintian are in `package_docs.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod package_common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::*;
use package_common::*;

const MODULE: &str = "/usr/lib/x86_64-linux-gnu/security/pam_mfa.so";

/// Installed regular files with their modes; any file of the package not
/// listed must be a gzipped man page (0644).
const FILES: &[(&str, u32)] = &[
    ("/usr/sbin/mfad", 0o755),
    ("/usr/bin/mfactl", 0o755),
    (MODULE, 0o644),
    ("/lib/systemd/system/mfad.service", 0o644),
    ("/etc/mfad/mfad.toml", 0o644),
    ("/usr/share/pam-configs/mfa", 0o644),
    ("/usr/share/bash-completion/completions/mfactl", 0o644),
    ("/usr/share/zsh/vendor-completions/_mfactl", 0o644),
    ("/usr/share/fish/vendor_completions.d/mfactl.fish", 0o644),
    ("/usr/share/doc/libpam-mfa/copyright", 0o644),
    ("/usr/share/doc/libpam-mfa/changelog.Debian.gz", 0o644),
    ("/usr/share/doc/libpam-mfa/README.md.gz", 0o644),
    ("/usr/share/doc/libpam-mfa/examples/mfad.toml", 0o644),
    ("/usr/share/doc/libpam-mfa/examples/pam.d/login", 0o644),
    ("/usr/share/doc/libpam-mfa/examples/pam.d/sshd", 0o644),
    ("/usr/share/doc/libpam-mfa/examples/pam.d/su", 0o644),
    ("/usr/share/doc/libpam-mfa/examples/pam.d/sudo", 0o644),
    ("/usr/share/man/man1/mfactl.1.gz", 0o644),
    ("/usr/share/man/man8/mfad.8.gz", 0o644),
    ("/usr/share/man/man8/pam_mfa.8.gz", 0o644),
    ("/usr/share/man/man5/mfad.toml.5.gz", 0o644),
];

/// State the package makes or removes besides its files.
const STATE: &[&str] = &["/etc/mfad", "/var/lib/mfad"];

#[test]
fn package_installs_logs_in_through_the_installed_module_and_purges_clean() {
    let deb = deb();
    let pam_d_before = tree_digest(Path::new("/etc/pam.d"));
    let mut installed = Installed::new(deb);
    let listed = installed.listed_files();

    check_files(&listed);
    check_state_and_wiring();
    assert_eq!(tree_digest(Path::new("/etc/pam.d")), pam_d_before, "dpkg -i changed /etc/pam.d");

    login_through_installed_module();

    installed.remove_keeps_state();
    installed.purge_now();
    for path in listed.iter().map(PathBuf::from).chain(STATE.iter().map(PathBuf::from)) {
        assert!(std::fs::symlink_metadata(&path).is_err(), "{} is left after the purge", path.display());
    }
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let status = stdout(&out);
    assert!(status.is_empty() || status.ends_with("not-installed"), "dpkg status after the purge: {status}");
    let out = run(Command::new("dpkg").arg("--audit"));
    assert!(out.status.success() && stdout(&out).trim().is_empty(), "dpkg --audit: {}", stdout(&out));
    assert_eq!(tree_digest(Path::new("/etc/pam.d")), pam_d_before, "the package changed /etc/pam.d");
    drop(installed);
}

/// Every file dpkg lists is on disk, root's, with its mode; none is missing.
fn check_files(listed: &[String]) {
    let mut expected: BTreeMap<&str, u32> = FILES.iter().copied().collect();
    for path in listed {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} is not root's");
        let mode = meta.permissions().mode() & 0o7777;
        match expected.remove(path.as_str()) {
            Some(want) => assert_eq!(mode, want, "{path}: mode {mode:o}, expected {want:o}"),
            None => assert!(
                path.starts_with("/usr/share/man/man") && path.ends_with(".gz") && mode == 0o644,
                "unexpected file {path} (mode {mode:o}) in the package"
            ),
        }
    }
    assert!(expected.is_empty(), "not installed: {:?}", expected.keys());
}

/// postinst made the state directory, the key and the store; nothing
/// turned MFA on, enabled the profile or the service.
fn check_state_and_wiring() {
    let mode = |p: &str| std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}")).permissions().mode() & 0o7777;
    assert_eq!(mode("/var/lib/mfad"), 0o700);
    assert_eq!(mode("/etc/mfad/secret.key"), 0o600);
    assert_eq!(std::fs::metadata("/etc/mfad/secret.key").unwrap().len(), 32);
    assert!(Path::new("/var/lib/mfad/mfad.db").exists(), "postinst made no store");
    let config = std::fs::read_to_string("/etc/mfad/mfad.toml").unwrap();
    assert!(config.lines().any(|l| l.trim() == "enabled = false"));
    let out = run(Command::new("/usr/sbin/mfad").arg("--check-config"));
    assert!(out.status.success(), "installed mfad, installed config: {}", stderr(&out));
    let common_auth = std::fs::read_to_string("/etc/pam.d/common-auth").unwrap_or_default();
    assert!(!common_auth.contains("pam_mfa"), "the profile was enabled");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/mfad.service").exists());
    let unit = std::fs::read_to_string("/lib/systemd/system/mfad.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/mfad --config /etc/mfad/mfad.toml"), "{unit}");
    let out = run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/mfad.service"]));
    assert!(out.status.success(), "systemd-analyze verify: {}{}", stdout(&out), stderr(&out));
}

/// The installed mfad on a scratch config; a right and a wrong HOTP code
/// through the installed module.
fn login_through_installed_module() {
    let dir = tempfile::Builder::new().prefix("mfa-pkg-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path().display();
    let config = dir.path().join("mfad.toml");
    std::fs::write(
        &config,
        format!(
            "enabled = true\nsocket = \"{d}/mfad.sock\"\ndefault_level = \"always\"\nmax_tries = 1\n\
             [store]\npath = \"{d}/mfad.db\"\nkey_file = \"{d}/secret.key\"\n"
        ),
    )
    .unwrap();
    let socket = dir.path().join("mfad.sock");
    let daemon = Daemon(start_installed_mfad(dir.path(), &config));

    let mfactl = |args: &[&str]| {
        let out = run(Command::new("/usr/bin/mfactl").arg("--socket").arg(&socket).args(args));
        assert!(out.status.success(), "mfactl {args:?}: {}{}", stdout(&out), stderr(&out));
        stdout(&out)
    };
    let setup: serde_json::Value =
        serde_json::from_str(&mfactl(&["--json", "user", "setup", "pkg_user", "--type", "hotp"])).unwrap();
    let secret = setup["secret"].as_str().unwrap().to_string();
    mfactl(&["user", "setup", "pkg_user", "--confirm", &hotp(&secret, 0)]);

    let services = PamServices::new();
    services.add("mfa-pkg", &[format!("auth required {MODULE} socket={}", socket.display())]);
    let out = run_with_input(&mut services.pamtester("mfa-pkg", "pkg_user", &[]), &format!("{}\n", hotp(&secret, 1)));
    assert!(out.status.success(), "right code refused: {}{}", stdout(&out), stderr(&out));
    let out = run_with_input(&mut services.pamtester("mfa-pkg", "pkg_user", &[]), "000000\n");
    assert!(!out.status.success(), "wrong code accepted: {}", stdout(&out));
    drop(daemon);
}

/// /usr/sbin/mfad on `config`, once it said READY=1.
fn start_installed_mfad(dir: &Path, config: &Path) -> Child {
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let child = Command::new("/usr/sbin/mfad")
        .arg("--config")
        .arg(config)
        .arg("--syslog-socket")
        .arg(dir.join("no-log"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = recv_retrying(&notify, &mut buf).expect("the installed mfad did not become ready");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    child
}

/// The installed mfad, stopped (SIGTERM) however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Path -> (mode, content) of every file under `dir`.
fn tree_digest(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(tree_digest(&path));
        } else {
            out.insert(path.clone(), (meta.mode(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

/// The package installed by `dpkg -i`, purged on drop (also when an
/// assertion failed), with what was in its way put back.
struct Installed {
    backup: PathBuf,
    moved: Vec<(PathBuf, PathBuf)>,
    purged: bool,
}

impl Installed {
    fn new(deb: &Path) -> Installed {
        let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
        assert!(
            !stdout(&out).contains(" installed"),
            "{PACKAGE} is installed on this machine already; purge it before the test"
        );
        let backup = PathBuf::from(format!("/var/tmp/mfa-pkg-test-{}", std::process::id()));
        std::fs::create_dir_all(&backup).unwrap();
        let mut installed = Installed { backup, moved: Vec::new(), purged: false };
        // The state directories first: a file of the package inside one
        // goes with it.
        let in_the_way = STATE.iter().map(|s| s.to_string()).chain(deb_files(deb));
        for (i, path) in in_the_way.enumerate() {
            let path = PathBuf::from(path);
            if std::fs::symlink_metadata(&path).is_ok() {
                let saved = installed.backup.join(i.to_string());
                std::fs::rename(&path, &saved).unwrap_or_else(|e| panic!("moving {} aside: {e}", path.display()));
                installed.moved.push((path, saved));
            }
        }
        let out = run(Command::new("dpkg").arg("-i").arg(deb).env("DEBIAN_FRONTEND", "noninteractive"));
        assert!(out.status.success(), "dpkg -i: {}{}", stdout(&out), stderr(&out));
        installed
    }

    /// The regular files dpkg says the package installed.
    fn listed_files(&self) -> Vec<String> {
        let out = run(Command::new("dpkg").args(["-L", PACKAGE]));
        assert!(out.status.success(), "dpkg -L: {}", stderr(&out));
        stdout(&out).lines().filter(|l| Path::new(l).is_file()).map(str::to_string).collect()
    }

    /// `dpkg -r`: the programs go, the store, the key and the config stay.
    fn remove_keeps_state(&self) {
        let out = run(Command::new("dpkg").args(["-r", PACKAGE]));
        assert!(out.status.success(), "dpkg -r: {}{}", stdout(&out), stderr(&out));
        for gone in ["/usr/sbin/mfad", "/usr/bin/mfactl", MODULE] {
            assert!(!Path::new(gone).exists(), "{gone} is left after dpkg -r");
        }
        for kept in ["/var/lib/mfad/mfad.db", "/etc/mfad/secret.key", "/etc/mfad/mfad.toml"] {
            assert!(Path::new(kept).exists(), "dpkg -r removed {kept}");
        }
    }

    /// `dpkg --purge`; what was moved aside comes back only on drop, after
    /// the caller has checked that nothing of the package is left.
    fn purge_now(&mut self) {
        self.purged = true;
        let out = run(Command::new("dpkg").args(["--purge", PACKAGE]));
        assert!(out.status.success(), "dpkg --purge: {}{}", stdout(&out), stderr(&out));
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        }
        for (path, saved) in self.moved.iter().rev() {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::rename(saved, path) {
                eprintln!("could not put {} back from {}: {e}", path.display(), saved.display());
            }
        }
        let _ = std::fs::remove_dir(&self.backup);
    }
}
