//! A PAM client for the suites and benchmarks: authenticates USER on
//! SERVICE, answering every prompt with the next `--answer`, and prints each
//! prompt and message it was shown. Exit 0 on PAM_SUCCESS, 1 otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::{CStr, CString};
use std::process::ExitCode;

use pam_client::{Context, ConversationHandler, ErrorCode, Flag};

struct Scripted {
    answers: std::vec::IntoIter<String>,
}

impl Scripted {
    fn next(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        println!("prompt: {}", prompt.to_string_lossy());
        let answer = self.answers.next().ok_or(ErrorCode::CONV_ERR)?;
        CString::new(answer).map_err(|_| ErrorCode::CONV_ERR)
    }
}

impl ConversationHandler for Scripted {
    fn prompt_echo_on(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.next(prompt)
    }
    fn prompt_echo_off(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.next(prompt)
    }
    fn text_info(&mut self, msg: &CStr) {
        println!("info: {}", msg.to_string_lossy());
    }
    fn error_msg(&mut self, msg: &CStr) {
        println!("error: {}", msg.to_string_lossy());
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut service, mut user, mut rhost, mut ruser, mut answers) = (None, None, None, None, Vec::new());
    while let Some(flag) = args.next() {
        let value = args.next().expect("every flag takes a value");
        match flag.as_str() {
            "--service" => service = Some(value),
            "--user" => user = Some(value),
            "--rhost" => rhost = Some(value),
            "--ruser" => ruser = Some(value),
            "--answer" => answers.push(value),
            other => panic!("unknown flag {other}"),
        }
    }
    let conv = Scripted { answers: answers.into_iter() };
    let mut context = Context::new(&service.expect("--service"), user.as_deref(), conv).expect("pam_start");
    if let Some(rhost) = rhost {
        context.set_rhost(Some(&rhost)).expect("set rhost");
    }
    if let Some(ruser) = ruser {
        context.set_ruser(Some(&ruser)).expect("set ruser");
    }
    match context.authenticate(Flag::NONE) {
        Ok(()) => {
            println!("result: success");
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("result: {err}");
            ExitCode::FAILURE
        }
    }
}
