//! Benchmark client: calls pam_authenticate in a loop on one PAM handle per
//! process, for any PAM service (pam_mfa, pam_google_authenticator,
//! pam_oath, ...), answering each echo-off prompt with the next HOTP code.
//! Codes come from `oathtool` (one call per process, before the timed loop),
//! so the harness trusts no code of ours. Prints one JSON line.
//!
//! ```text
//! pam_bench --service S[,S2] (--users u1,u2 | --user-file F) --secret-file F
//!           [--iterations N] [--procs P] [--contested | --no-code]
//!           [--rhost HOST] [--scenario TEXT] [--module TEXT] [--cpu-of PID]
//! ```
//! - `--secret-file`: lines `USER BASE32SECRET FIRST_COUNTER` (`#` comments).
//!   Without `--users`/`--user-file`, its users are used in file order.
//! - default mode: P worker processes, worker i on user i, each making N
//!   calls; all start together. P = 1 is the sequential scenario.
//! - `--contested`: P workers offer the same code for the first user at the
//!   same instant, N rounds; the distribution of "how many accepted the
//!   code" per round is reported.
//! - `--no-code`: a login that asks no code; the round trip is measured and
//!   any prompt counts as a failure.
//! - several services (`--service A,B` or repeated): worker i uses service
//!   i mod n (e.g. one PAM service per daemon of a fleet), all still
//!   released together.
//!
//! The JSON line: scenario, module, service, mode, procs, iterations,
//! successes, failures, median_us and p99_us (of every pam_authenticate call),
//! wall_s and throughput_per_s (successes per second of wall time, from the
//! first worker's start to the last one's end), repeated_codes (see
//! `repeated_codes`); contested runs add rounds, rounds_exactly_one,
//! accepted_per_round ({accepted: rounds}), max_accepted_in_a_round and
//! start_spread_{median,max}_us (how far apart a round's calls began);
//! with several services, `service` is their comma-separated list and
//! successes_by_service ({service: successes}, acceptances when contested)
//! says which service each went through; with `--cpu-of PID` (loop and
//! no-code modes), `cpu` holds the clock ticks from just before the start to
//! the last worker's end: the machine's busy and idle time and PID's own
//! (busy_ticks, idle_ticks, process_ticks, ticks_per_s).
//!
//! Refuses to run unless libpam-wrapper is in effect (PAM_WRAPPER=1,
//! PAM_WRAPPER_SERVICE_DIR, LD_PRELOAD=...libpam_wrapper.so), so it never
//! reads the machine's own /etc/pam.d stacks; the workers inherit that
//! environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod coordinator;
mod options;
mod worker;

use std::process::ExitCode;

use coordinator::coordinate;
use options::{check_pam_wrapper, parse_options};
use worker::worker;

/// libpam-wrapper gives every process it is preloaded into a private copy of
/// the service dir (`/tmp/pam.X`), and does not remove the coordinator's,
/// which never calls PAM: remove it here (only when its pid file is ours).
fn drop_own_wrapper_dir() {
    let Some(dir) = std::env::var_os("PAM_WRAPPER_RUNTIME_DIR") else { return };
    let dir = std::path::PathBuf::from(dir);
    let ours = std::fs::read_to_string(dir.join("pid")).is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // SAFETY: single-threaded here; the workers must pick their own dirs.
    unsafe { std::env::remove_var("PAM_WRAPPER_RUNTIME_DIR") };
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(msg) = check_pam_wrapper() {
        eprintln!("pam_bench: {msg}");
        return ExitCode::from(2);
    }
    if args.first().map(String::as_str) == Some("__worker") {
        return worker(&args[1..]);
    }
    let options = parse_options();
    drop_own_wrapper_dir();
    println!("{}", coordinate(&options));
    ExitCode::SUCCESS
}
