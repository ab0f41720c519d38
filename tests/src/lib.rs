//! Fixtures for the end-to-end suites: a real mfad in a temp dir, mfactl run
//! as root or as a real Unix user, oathtool for codes, an audit sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// oathtool's TOTP code for the current time.
pub fn totp_now(secret: &str) -> String {
    let out = run(Command::new("oathtool").args(["-b", "--totp", secret]));
    assert!(out.status.success(), "oathtool failed (is it installed?): {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// oathtool's HOTP code at `counter`.
pub fn hotp(secret: &str, counter: u64) -> String {
    let out = run(Command::new("oathtool").args(["-b", "--hotp", "-c", &counter.to_string(), secret]));
    assert!(out.status.success(), "oathtool failed (is it installed?): {}", stderr(&out));
    stdout(&out).trim().to_string()
}

static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Create a Unix group if it does not exist.
pub fn ensure_group(group: &str) {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if run(Command::new("getent").args(["group", group])).status.success() {
        return;
    }
    let out = run(Command::new("groupadd").arg(group));
    assert!(out.status.success(), "groupadd {group}: {}", stderr(&out));
}

/// Create a Unix user (no home) with a known password, if it does not exist,
/// and add it to `groups`.
pub fn ensure_user(user: &str, groups: &[&str]) {
    for g in groups {
        ensure_group(g);
    }
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if !run(Command::new("id").arg(user)).status.success() {
        let out = run(Command::new("useradd").args(["-M", "-s", "/bin/sh", user]));
        assert!(out.status.success(), "useradd {user}: {}", stderr(&out));
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
        writeln!(chpasswd.stdin.take().unwrap(), "{user}:{}", password(user)).unwrap();
        assert!(chpasswd.wait().unwrap().success());
    }
    for g in groups {
        let out = run(Command::new("usermod").args(["-aG", g, user]));
        assert!(out.status.success(), "usermod -aG {g} {user}: {}", stderr(&out));
    }
}

/// The password the suites give their users.
pub fn password(user: &str) -> String {
    format!("pw-{user}-Secret1")
}

/// A running mfad in its own temp dir, stopped on drop.
pub struct Mfad {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    audit: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Mfad {
    /// Start mfad with `enabled = true` plus `extra` top-level TOML (placed
    /// before the tables; tables may follow in `extra` too).
    pub fn start(extra: &str) -> Mfad {
        let dir = tempfile::Builder::new().prefix("mfad-e2e-").tempdir().unwrap();
        // Other users must reach the socket and the copied mfactl.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(bin("mfactl"), dir.path().join("mfactl")).unwrap();
        let socket = dir.path().join("mfad.sock");
        let config_path = dir.path().join("mfad.toml");
        std::fs::write(&config_path, Self::config_text(dir.path(), extra)).unwrap();
        // A thread drains the audit socket so the daemon's lines never back up.
        let sink = UnixDatagram::bind(dir.path().join("log")).unwrap();
        let audit = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let lines = audit.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = sink.recv(&mut buf) {
                let (vec, cond) = &*lines;
                vec.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                cond.notify_all();
            }
        });
        let mut mfad = Mfad { dir, socket, config_path, child: None, audit };
        mfad.launch();
        mfad
    }

    pub fn config_text(dir: &Path, extra: &str) -> String {
        let d = dir.display();
        // Top-level keys must precede any table in TOML.
        let (top, tables) = match extra.find("\n[") {
            Some(i) => extra.split_at(i),
            None => (extra, ""),
        };
        format!(
            "enabled = true\nsocket = \"{d}/mfad.sock\"\nadmin_group = \"mfae2eadm\"\n{top}\n\
             [store]\npath = \"{d}/mfad.db\"\nkey_file = \"{d}/secret.key\"\n{tables}\n"
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
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mut buf = [0u8; 64];
        let n = notify.recv(&mut buf).expect("mfad did not become ready");
        assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("READY=1"));
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
        let (vec, cond) = &*self.audit;
        let guard = vec.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, Duration::from_secs(10), |lines| !lines.iter().any(|l| l.contains(needle)))
            .unwrap();
        assert!(guard.iter().any(|l| l.contains(needle)), "no audit line with {needle:?}; saw {:#?}", *guard);
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

/// The PAM module as cargo built it.
pub fn pam_module() -> PathBuf {
    bin("libpam_mfa.so")
}

/// libpam-wrapper, which lets a client read PAM stacks from a directory of
/// the test's own instead of /etc/pam.d.
pub fn pam_wrapper_lib() -> PathBuf {
    let out = run(Command::new("dpkg").args(["-L", "libpam-wrapper"]));
    let path = stdout(&out)
        .lines()
        .find(|l| l.ends_with("/libpam_wrapper.so"))
        .map(PathBuf::from)
        .expect("libpam-wrapper is not installed");
    assert!(path.exists());
    path
}

/// A directory of PAM service files, used through libpam-wrapper.
pub struct PamServices {
    pub dir: tempfile::TempDir,
}

impl PamServices {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pam-e2e-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        PamServices { dir }
    }

    /// Write service `name` with `auth` lines; account and session permit.
    pub fn add(&self, name: &str, auth_lines: &[String]) {
        let mut text = auth_lines.join("\n");
        text.push_str("\naccount required pam_permit.so\nsession required pam_permit.so\n");
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// A pamtester command for `service`/`user` under libpam-wrapper.
    pub fn pamtester(&self, service: &str, user: &str, items: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("pamtester");
        cmd.env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path())
            .env("LD_PRELOAD", pam_wrapper_lib());
        for (k, v) in items {
            cmd.arg("-I").arg(format!("{k}={v}"));
        }
        cmd.args([service, user, "authenticate"]);
        cmd
    }
}

impl Default for PamServices {
    fn default() -> Self {
        Self::new()
    }
}

/// Run `cmd` with `input` on stdin; returns its output.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Write from a thread: a client that stops reading must not block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

impl Mfad {
    /// The module line for this daemon's socket.
    pub fn module_line(&self, control: &str, options: &str) -> String {
        format!("auth {control} {} socket={} {options}", pam_module().display(), self.socket.display())
    }
}

// ---- policy suite: PAM clients driven step by step, sudo and su ----------

impl PamServices {
    /// The `pam_client` binary for `service`/`user` under libpam-wrapper,
    /// with PAM_RHOST / PAM_RUSER from `items` (`rhost`, `ruser`).
    pub fn pam_client(&self, service: &str, user: &str, items: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin("pam_client"));
        cmd.env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path())
            .env("LD_PRELOAD", pam_wrapper_lib())
            .args(["--service", service, "--user", user]);
        for (k, v) in items {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd
    }
}

/// One prompt of a conversation driven by [`Interactive`].
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The messages shown since the previous prompt (`info: ` / `error: `
    /// lines, multi-line texts as they came).
    pub shown: String,
    pub text: String,
    /// Echo on: a question, not a code.
    pub echo: bool,
}

/// `pam_client --interactive` read line by line: the test sees each prompt
/// and what came before it, then answers.
pub struct Interactive {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything the client printed so far.
    pub transcript: String,
    result: Option<String>,
}

impl Interactive {
    /// Start `cmd` (a [`PamServices::pam_client`] command) in interactive mode.
    pub fn start(mut cmd: Command) -> Interactive {
        let mut child = cmd
            .arg("--interactive")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let (tx, lines) = std::sync::mpsc::channel();
        // stdout lines as they come; stderr lines marked, for the transcript.
        for (stream, prefix) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, ""),
            (Box::new(child.stderr.take().unwrap()), "stderr: "),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Interactive { child, stdin, lines, transcript: String::new(), result: None }
    }

    /// The next prompt, or None when the conversation ended (see [`Self::finish`]).
    pub fn next_prompt(&mut self) -> Option<Prompt> {
        if self.result.is_some() {
            return None;
        }
        let mut shown = String::new();
        loop {
            let line = match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(e) => panic!("pam_client said nothing more ({e}); so far:\n{}", self.transcript),
            };
            self.transcript.push_str(&line);
            self.transcript.push('\n');
            if line.starts_with("stderr: ") {
                continue;
            }
            if let Some(text) = line.strip_prefix("prompt: ") {
                return Some(Prompt { shown, text: text.to_string(), echo: false });
            }
            if let Some(text) = line.strip_prefix("prompt-echo: ") {
                return Some(Prompt { shown, text: text.to_string(), echo: true });
            }
            if let Some(result) = line.strip_prefix("result: ") {
                self.result = Some(result.to_string());
                return None;
            }
            shown.push_str(&line);
            shown.push('\n');
        }
    }

    /// The next prompt, which must come.
    pub fn expect_prompt(&mut self) -> Prompt {
        match self.next_prompt() {
            Some(prompt) => prompt,
            None => panic!("the conversation ended; transcript:\n{}", self.transcript),
        }
    }

    pub fn answer(&mut self, answer: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{answer}").unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for the end: whether PAM said success, and the whole transcript.
    pub fn finish(mut self) -> (bool, String) {
        drop(self.stdin.take());
        if self.next_prompt().is_some() {
            panic!("an unexpected prompt; transcript:\n{}", self.transcript);
        }
        let status = self.child.wait().unwrap();
        let ok = self.result.as_deref() == Some("success");
        assert_eq!(ok, status.success(), "exit status and result line disagree:\n{}", self.transcript);
        (ok, self.transcript.clone())
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The secret of an enrollment as shown in a conversation: from the
/// otpauth URI when a QR code was shown, else the grouped key.
pub fn secret_from_setup_text(shown: &str) -> String {
    if let Some(start) = shown.find("secret=") {
        return shown[start + "secret=".len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    }
    let after = shown.split("Enter this key in your authenticator app:").nth(1).expect("no secret shown");
    let line = after.lines().map(str::trim).find(|l| !l.is_empty()).expect("no key line");
    line.replace(' ', "")
}

/// A file under /etc of the test's own, removed on drop.
pub struct EtcFile(pub PathBuf);

impl EtcFile {
    pub fn write(path: impl Into<PathBuf>, text: &str, mode: u32) -> EtcFile {
        let path = path.into();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        EtcFile(path)
    }
}

impl Drop for EtcFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Real sudo for `user` through a PAM service of the test's own: a sudoers
/// drop-in (`Defaults:USER pam_service=SERVICE`, `USER ALL=(ALL) ALL`) and
/// `/etc/pam.d/SERVICE` with the module; both removed on drop.
pub struct Sudo {
    pub user: String,
    pub service: String,
    _files: Vec<EtcFile>,
}

impl Sudo {
    /// `tag` tells apart the services of tests running at once; the
    /// service name is `mfae-PID-TAG`, to be listed in `[elevation] services`.
    pub fn service_name(tag: &str) -> String {
        format!("mfae-{}-{tag}", std::process::id())
    }

    pub fn new(mfad: &Mfad, user: &str, tag: &str) -> Sudo {
        let service = Self::service_name(tag);
        let pam = EtcFile::write(
            PathBuf::from("/etc/pam.d").join(&service),
            &format!(
                "{}\naccount required pam_permit.so\nsession required pam_permit.so\n",
                mfad.module_line("required", "")
            ),
            0o644,
        );
        // Validate in a temp file first: a broken drop-in would break sudo
        // for everyone. The name has no dot, or sudo would skip it.
        let draft = mfad.dir.path().join(format!("sudoers-{tag}"));
        std::fs::write(&draft, format!("Defaults:{user} pam_service={service}\n{user} ALL=(ALL) ALL\n")).unwrap();
        let check = run(Command::new("visudo").arg("-cf").arg(&draft));
        assert!(check.status.success(), "visudo -cf: {}{}", stdout(&check), stderr(&check));
        let sudoers = EtcFile::write(
            PathBuf::from("/etc/sudoers.d").join(&service),
            &std::fs::read_to_string(&draft).unwrap(),
            0o440,
        );
        Sudo { user: user.to_string(), service, _files: vec![sudoers, pam] }
    }

    /// `sudo -S -k true` as the user, with `input` on stdin.
    pub fn run(&self, input: &str) -> Output {
        run_with_input(
            Command::new("setpriv")
                .args(["--reuid", &self.user, "--regid", &self.user, "--init-groups", "--"])
                .args(["sudo", "-S", "-k", "true"])
                .current_dir("/"),
            input,
        )
    }
}

/// `su -c 'echo su-ok' root` run by `user`, with `stack` as su's PAM stack
/// (bind-mounted over /etc/pam.d/su in a private mount namespace).
impl Mfad {
    /// A stack for su of the test's own: root passes, everyone else needs
    /// this daemon's verdict.
    pub fn su_stack(&self) -> PathBuf {
        let stack = self.dir.path().join("su-stack");
        std::fs::write(
            &stack,
            format!(
                "auth sufficient pam_rootok.so\n{}\naccount required pam_permit.so\nsession required pam_permit.so\n",
                self.module_line("required", "")
            ),
        )
        .unwrap();
        stack
    }
}

pub fn su_with_stack(stack: &Path, user: &str, input: &str) -> Output {
    let script = format!(
        "mount --bind {} /etc/pam.d/su && exec setpriv --reuid={user} --regid={user} --init-groups su -c 'echo su-ok' root",
        stack.display()
    );
    run_with_input(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).current_dir("/"),
        input,
    )
}
