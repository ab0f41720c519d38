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

/// Under libpam-wrapper (PAM_WRAPPER=1), whether it set itself up. It
/// picks its directory `/tmp/pam.X` by looking for a free name and then
/// creating it, so two clients starting at once can collide; the loser runs
/// without the wrapper, on the machine's own PAM stacks. Such a client
/// starts itself again rather than authenticate against the wrong stack.
fn reexec_unless_wrapped() {
    if std::env::var_os("PAM_WRAPPER").is_none_or(|v| v != "1") {
        return;
    }
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; the symbol,
    // when present, is libpam-wrapper's `bool pam_wrapper_enabled(void)`.
    let enabled = unsafe {
        let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"pam_wrapper_enabled".as_ptr());
        !symbol.is_null() && std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> bool>(symbol)()
    };
    let tries: u32 = std::env::var("PAM_CLIENT_WRAPPER_TRIES").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    if enabled || tries >= 20 {
        assert!(enabled, "libpam-wrapper did not set itself up in 20 tries");
        return;
    }
    use std::os::unix::process::CommandExt;
    eprintln!("pam_client: libpam-wrapper did not set itself up; starting again");
    let err = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env("PAM_CLIENT_WRAPPER_TRIES", (tries + 1).to_string())
        .exec();
    panic!("cannot start again: {err}");
}

fn main() -> ExitCode {
    reexec_unless_wrapped();
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
