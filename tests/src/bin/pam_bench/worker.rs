//! One worker process: a PAM handle, a loop of pam_authenticate calls.

use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};
use std::process::{Command, ExitCode};
use std::time::Instant;

use pam_client::{Context, ConversationHandler, ErrorCode, Flag};

use crate::options::*;

/// Answers an echo-off prompt with the code set for this call; a second
/// prompt in the same call, or an echo-on prompt, ends the conversation.
pub(crate) struct Answerer {
    pub(crate) code: Option<CString>,
    pub(crate) prompts: u32,
}

impl ConversationHandler for Answerer {
    fn prompt_echo_on(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        self.prompts += 1;
        Err(ErrorCode::CONV_ERR)
    }
    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        self.prompts += 1;
        if self.prompts > 1 {
            return Err(ErrorCode::CONV_ERR);
        }
        self.code.clone().ok_or(ErrorCode::CONV_ERR)
    }
    fn text_info(&mut self, _msg: &CStr) {}
    fn error_msg(&mut self, _msg: &CStr) {}
}

/// `count` consecutive HOTP codes from `first`, from one oathtool call.
pub(crate) fn oathtool_codes(secret: &str, first: u64, count: usize) -> Vec<CString> {
    let out = Command::new("oathtool")
        // Not under libpam-wrapper: it makes a /tmp/pam.X dir for every process.
        .env_remove("LD_PRELOAD")
        .args(["-b", "--hotp", "-c", &first.to_string(), "-w", &(count - 1).to_string(), secret])
        .output()
        .expect("cannot run oathtool (is it installed?)");
    assert!(out.status.success(), "oathtool failed: {}", String::from_utf8_lossy(&out.stderr));
    let codes: Vec<CString> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| CString::new(l.trim()).unwrap()).collect();
    assert_eq!(codes.len(), count, "oathtool printed {} codes, expected {count}", codes.len());
    codes
}

/// How many of `codes` reappear among the next 9 (HOTP values are 6 digits,
/// so two counters a few apart share a code now and then): a validator that
/// takes the greatest match in a 10-counter window skips ahead on such a
/// code, and the codes in between then fail. Reported so that such failures
/// are not mistaken for anything else.
pub(crate) fn repeated_codes(codes: &[CString]) -> usize {
    (0..codes.len()).filter(|&i| codes[i + 1..codes.len().min(i + 10)].contains(&codes[i])).count()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across the workers.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits for the coordinator's next start time (a CLOCK_MONOTONIC instant,
/// one line on stdin) and sleeps until it: every worker is woken by the same
/// timer. False at EOF.
pub(crate) fn wait_go(stdin: &mut impl BufRead) -> bool {
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        return false;
    }
    let at: u64 = line.trim().parse().expect("a start time");
    let ts = libc::timespec { tv_sec: (at / 1_000_000_000) as libc::time_t, tv_nsec: (at % 1_000_000_000) as _ };
    // SAFETY: ts is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
    while unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) }
        == libc::EINTR
    {}
    true
}

/// `__worker SERVICE USER SECRET FIRST COUNT MODE RHOST`: one process of the
/// benchmark. Prints `ready REPEATED_CODES` once its PAM handle is open, waits
/// for a start time, then prints its results.
pub(crate) fn worker(args: &[String]) -> ExitCode {
    let [service, user, secret, first, count, mode, rhost] = args else { panic!("bad worker arguments {args:?}") };
    let count: usize = count.parse().unwrap();
    let mode = Mode::parse(mode);
    let codes = match mode {
        Mode::NoCode => Vec::new(),
        _ => oathtool_codes(secret, first.parse().unwrap(), count),
    };
    let mut ctx = Context::new(service, Some(user), Answerer { code: None, prompts: 0 }).expect("pam_start");
    if !rhost.is_empty() {
        ctx.set_rhost(Some(rhost)).expect("set rhost");
    }
    let mut out = std::io::stdout().lock();
    let mut stdin = std::io::stdin().lock();
    let call = |ctx: &mut Context<Answerer>, i: usize| -> (bool, u64) {
        let conv = ctx.conversation_mut();
        conv.code = codes.get(i).cloned();
        conv.prompts = 0;
        let started = Instant::now();
        let result = ctx.authenticate(Flag::NONE);
        let ns = started.elapsed().as_nanos() as u64;
        let asked = ctx.conversation().prompts;
        // A no-code login that prompted anyway is a failure.
        (result.is_ok() && (mode != Mode::NoCode || asked == 0), ns)
    };
    writeln!(out, "ready {}", repeated_codes(&codes)).unwrap();
    out.flush().unwrap();
    match mode {
        Mode::Loop | Mode::NoCode => {
            if !wait_go(&mut stdin) {
                return ExitCode::FAILURE;
            }
            let start = monotonic_ns();
            let results: Vec<(bool, u64)> = (0..count).map(|i| call(&mut ctx, i)).collect();
            let end = monotonic_ns();
            // `done OK FAIL START END LAT...`
            let ok = results.iter().filter(|r| r.0).count();
            let mut line = format!("done {ok} {} {start} {end}", results.len() - ok);
            for (_, ns) in &results {
                line.push_str(&format!(" {ns}"));
            }
            writeln!(out, "{line}").unwrap();
        }
        Mode::Contested => {
            for round in 0..count {
                if !wait_go(&mut stdin) {
                    break;
                }
                let begun = monotonic_ns();
                let (ok, ns) = call(&mut ctx, round);
                // `round OK LATENCY_NS BEGUN_NS`
                writeln!(out, "round {} {ns} {begun}", u8::from(ok)).unwrap();
                out.flush().unwrap();
            }
        }
    }
    out.flush().unwrap();
    ExitCode::SUCCESS
}
