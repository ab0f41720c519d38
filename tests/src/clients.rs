//! PAM clients driven step by step: pamtester and `pam_client`, one prompt at a time.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;

impl PamServices {
    /// The `pam_client` binary for `service`/`user` under libpam-wrapper,
    /// with PAM_RHOST / PAM_RUSER from `items` (`rhost`, `ruser`).
    pub fn pam_client(&self, service: &str, user: &str, items: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(for_every_user("pam_client"));
        cmd.env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path())
            .env("LD_PRELOAD", pam_wrapper_lib())
            .args(["--service", service, "--user", user]);
        for (k, v) in items {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd
    }

    /// [`Self::pam_client`] run by `as_user` (a real Unix account, not
    /// root): a PAM application of a user's own, whose items are claims.
    pub fn pam_client_as(&self, as_user: &str, service: &str, user: &str, items: &[(&str, &str)]) -> Command {
        let own = self.pam_client(service, user, items);
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", as_user, "--regid", as_user, "--init-groups", "--"])
            .arg(own.get_program())
            .args(own.get_args())
            .current_dir("/");
        for (key, value) in own.get_envs() {
            if let Some(value) = value {
                cmd.env(key, value);
            }
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
        let mut child = spawn_one_at_a_time(
            cmd.arg("--interactive").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()),
        );
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
