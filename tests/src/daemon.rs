//! A real mfad in a temp dir, stopped on drop; mfactl run as root or as a user.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::*;

/// A running mfad in its own temp dir, stopped on drop.
pub struct Mfad {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    /// The SQLite store (`DIR/mfad.db` unless started with a store elsewhere).
    pub store: PathBuf,
    child: Option<Child>,
    audit: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Mfad {
    /// Start mfad with `enabled = true` plus `extra` top-level TOML (placed
    /// before the tables; tables may follow in `extra` too).
    pub fn start(extra: &str) -> Mfad {
        Self::start_with_store(extra, None)
    }

    /// [`Mfad::start`] with the store in `store_dir` (e.g. a small file
    /// system of the test's own) instead of the temp dir.
    pub fn start_with_store(extra: &str, store_dir: Option<&Path>) -> Mfad {
        Self::start_on(extra, |dir| {
            let store = store_dir.unwrap_or(dir).join("mfad.db");
            let section = format!("path = \"{}\"\nkey_file = \"{}/secret.key\"\n", store.display(), dir.display());
            (store, section)
        })
    }

    /// [`Mfad::start`] on a fleet's PostgreSQL database (`url`), with the
    /// fleet's key file; `store_extra` adds lines to `[store]`. `store` is
    /// then a SQLite path that does not exist (for `migrate-store`).
    pub fn start_fleet(extra: &str, url: &str, key_file: &Path, store_extra: &str) -> Mfad {
        Self::start_on(extra, |dir| {
            let section = format!(
                "backend = \"postgres\"\nurl = \"{url}\"\nkey_file = \"{}\"\n{store_extra}\n",
                key_file.display()
            );
            (dir.join("mfad.db"), section)
        })
    }

    /// Start with the `[store]` section (and the SQLite path) that
    /// `store_of` makes for the temp dir.
    fn start_on(extra: &str, store_of: impl FnOnce(&Path) -> (PathBuf, String)) -> Mfad {
        let dir = tempfile::Builder::new().prefix("mfad-e2e-").tempdir().unwrap();
        let (store, section) = store_of(dir.path());
        // Other users must reach the socket and the copied mfactl.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(bin("mfactl"), dir.path().join("mfactl")).unwrap();
        let socket = dir.path().join("mfad.sock");
        let config_path = dir.path().join("mfad.toml");
        std::fs::write(&config_path, Self::config_text_with_section(dir.path(), extra, &section)).unwrap();
        // A thread drains the audit socket so the daemon's lines never back up.
        let sink = UnixDatagram::bind(dir.path().join("log")).unwrap();
        let audit = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let lines = audit.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = recv_retrying(&sink, &mut buf) {
                let (vec, cond) = &*lines;
                vec.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                cond.notify_all();
            }
        });
        let mut mfad = Mfad { dir, socket, config_path, store, child: None, audit };
        mfad.launch();
        mfad
    }

    pub fn config_text(dir: &Path, extra: &str) -> String {
        Self::config_text_with_store(dir, extra, &dir.join("mfad.db"))
    }

    pub fn config_text_with_store(dir: &Path, extra: &str, store: &Path) -> String {
        let section = format!("path = \"{}\"\nkey_file = \"{}/secret.key\"\n", store.display(), dir.display());
        Self::config_text_with_section(dir, extra, &section)
    }

    /// The config file for a daemon in `dir`, `section` being the lines of
    /// its `[store]`.
    pub fn config_text_with_section(dir: &Path, extra: &str, section: &str) -> String {
        let d = dir.display();
        // Top-level keys must precede any table in TOML.
        let (top, tables) = match extra.find("\n[") {
            Some(i) => extra.split_at(i),
            None => (extra, ""),
        };
        format!(
            "enabled = true\nsocket = \"{d}/mfad.sock\"\nadmin_group = \"mfae2eadm\"\n{top}\n\
             [store]\n{section}{tables}\n"
        )
    }

    /// Start (or restart) the process and wait for its READY=1.
    pub fn launch(&mut self) {
        let notify_path = self.dir.path().join("notify");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let child = Command::new(bin("mfad"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--syslog-socket")
            .arg(self.dir.path().join("log"))
            // The machine's journald (if any) never gets the tests' events.
            .arg("--journal-socket")
            .arg(self.dir.path().join("journal"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mut buf = [0u8; 64];
        let n = recv_retrying(&notify, &mut buf).expect("mfad did not become ready");
        assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("READY=1"));
    }

    /// Run mfad on this config expecting it to refuse to start (within
    /// 10 s; one that starts is killed and fails the test); its stderr.
    pub fn launch_refused(&self) -> String {
        refused_start(&self.config_path, &self.dir.path().join("log"))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGKILL (a crash) and wait for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    pub fn mfactl(&self, args: &[&str]) -> Output {
        run(Command::new(bin("mfactl")).arg("--socket").arg(&self.socket).args(args))
    }

    /// mfactl run as `user` (a real Unix account), from the temp dir copy.
    pub fn mfactl_as(&self, user: &str, args: &[&str]) -> Output {
        run(Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .arg(self.dir.path().join("mfactl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .current_dir("/"))
    }

    /// mfactl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mfactl(args);
        assert!(out.status.success(), "mfactl {args:?} failed: {}{}", stdout(&out), stderr(&out));
        stdout(&out)
    }

    /// `mfactl --json` that must succeed; the parsed document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Enroll `user` as root with `otp_type`; returns the base32 secret.
    pub fn enroll(&self, user: &str, otp_type: &str) -> String {
        let setup = self.json(&["user", "setup", user, "--type", otp_type]);
        let secret = setup["secret"].as_str().unwrap().to_string();
        let code = if otp_type == "hotp" { hotp(&secret, 0) } else { totp_now(&secret) };
        self.ok(&["user", "setup", user, "--confirm", &code]);
        secret
    }

    /// Every audit line so far, once one contains `needle` (waits up to 10 s).
    pub fn audit_lines_until(&self, needle: &str) -> Vec<String> {
        self.audit_lines_until_count(needle, 1)
    }

    /// Wait (10 s at most) until `count` audit lines contain `needle`.
    pub fn audit_lines_until_count(&self, needle: &str, count: usize) -> Vec<String> {
        let (vec, cond) = &*self.audit;
        let seen = |lines: &Vec<String>| lines.iter().filter(|l| l.contains(needle)).count() >= count;
        let guard = vec.lock().unwrap();
        let (guard, _) = cond.wait_timeout_while(guard, Duration::from_secs(10), |lines| !seen(lines)).unwrap();
        assert!(seen(&guard), "not {count} audit lines with {needle:?}; saw {:#?}", *guard);
        guard.clone()
    }

    /// Send raw bytes on a fresh connection; returns what came back before
    /// the daemon closed or answered one frame.
    pub fn raw(&self, bytes: &[u8], shutdown_write: bool) -> Vec<u8> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        if shutdown_write {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut header = [0u8; 4];
        if s.read_exact(&mut header).is_err() {
            return Vec::new();
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        s.read_exact(&mut body).unwrap();
        body
    }
}

impl Drop for Mfad {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Mfad {
    /// The module line for this daemon's socket.
    pub fn module_line(&self, control: &str, options: &str) -> String {
        format!("auth {control} {} socket={} {options}", pam_module().display(), self.socket.display())
    }
}

/// Run mfad on `config` expecting it to refuse to start (within 15 s; one
/// that starts is killed and fails the test); its stderr.
pub fn refused_start(config: &Path, syslog_socket: &Path) -> String {
    let child = Command::new(bin("mfad"))
        .arg("--config")
        .arg(config)
        .arg("--syslog-socket")
        .arg(syslog_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, Duration::from_secs(15), "mfad started instead of refusing to");
    assert!(!out.status.success(), "mfad exited 0 instead of refusing: {}", stderr(&out));
    stderr(&out)
}

/// The output of `child` once it has exited, within `limit`; else it is
/// killed and the test fails with `what`.
pub fn wait_within(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(limit) else {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{what}");
    };
    out.unwrap()
}
