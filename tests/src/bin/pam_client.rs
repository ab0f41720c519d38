//! A PAM client for the suites and benchmarks: authenticates USER on
//! SERVICE (PAM_RHOST, PAM_RUSER, PAM_TTY from `--rhost`, `--ruser`,
//! `--tty`; `--rhost-file` and `--tty-file` read a value from a file) and
//! prints each message and prompt it is shown, one per line (`info: `,
//! `error: `, `prompt: ` for echo-off prompts, `prompt-echo: ` for echo-on
//! questions), then `result: ...`. Exit 0 on PAM_SUCCESS, 1 otherwise.
//!
//! Answers come from the `--answer` flags in order, or with `--interactive`
//! from standard input, one line per prompt (read after the prompt line was
//! printed and flushed), so that a test can read what it was shown (a secret
//! to set up, say) before it answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};
use std::process::ExitCode;

use pam_client::{Context, ConversationHandler, ErrorCode, Flag};

enum Answers {
    Scripted(std::vec::IntoIter<String>),
    Interactive(std::io::StdinLock<'static>),
}

struct Conversation {
    answers: Answers,
}

impl Conversation {
    fn next(&mut self, label: &str, prompt: &CStr) -> Result<CString, ErrorCode> {
        show(label, prompt);
        let answer = match &mut self.answers {
            Answers::Scripted(answers) => answers.next().ok_or(ErrorCode::CONV_ERR)?,
            Answers::Interactive(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(n) if n > 0 => line.trim_end_matches(['\n', '\r']).to_string(),
                    _ => return Err(ErrorCode::CONV_ERR),
                }
            }
        };
        CString::new(answer).map_err(|_| ErrorCode::CONV_ERR)
    }
}

fn show(label: &str, text: &CStr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{label}: {}", text.to_string_lossy()).unwrap();
    out.flush().unwrap();
}

impl ConversationHandler for Conversation {
    fn prompt_echo_on(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.next("prompt-echo", prompt)
    }
    fn prompt_echo_off(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.next("prompt", prompt)
    }
    fn text_info(&mut self, msg: &CStr) {
        show("info", msg);
    }
    fn error_msg(&mut self, msg: &CStr) {
        show("error", msg);
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut service, mut user, mut rhost, mut ruser, mut tty, mut answers) =
        (None, None, None, None, None, Vec::new());
    let mut interactive = false;
    while let Some(flag) = args.next() {
        if flag == "--interactive" {
            interactive = true;
            continue;
        }
        let value = args.next().expect("every flag but --interactive takes a value");
        match flag.as_str() {
            "--service" => service = Some(value),
            "--user" => user = Some(value),
            "--rhost" => rhost = Some(value),
            "--ruser" => ruser = Some(value),
            "--tty" => tty = Some(value),
            // For values longer than one argument may be (128 KiB).
            "--tty-file" => tty = Some(std::fs::read_to_string(&value).expect("--tty-file")),
            "--rhost-file" => rhost = Some(std::fs::read_to_string(&value).expect("--rhost-file")),
            "--answer" => answers.push(value),
            other => panic!("unknown flag {other}"),
        }
    }
    let answers = if interactive {
        assert!(answers.is_empty(), "--answer and --interactive exclude each other");
        Answers::Interactive(std::io::stdin().lock())
    } else {
        Answers::Scripted(answers.into_iter())
    };
    let conv = Conversation { answers };
    let mut context = Context::new(&service.expect("--service"), user.as_deref(), conv).expect("pam_start");
    if let Some(rhost) = rhost {
        context.set_rhost(Some(&rhost)).expect("set rhost");
    }
    if let Some(ruser) = ruser {
        context.set_ruser(Some(&ruser)).expect("set ruser");
    }
    if let Some(tty) = tty {
        context.set_tty(Some(&tty)).expect("set tty");
    }
    let result = context.authenticate(Flag::NONE);
    let mut out = std::io::stdout().lock();
    match result {
        Ok(()) => {
            writeln!(out, "result: success").unwrap();
            ExitCode::SUCCESS
        }
        Err(err) => {
            writeln!(out, "result: {err}").unwrap();
            ExitCode::FAILURE
        }
    }
}
