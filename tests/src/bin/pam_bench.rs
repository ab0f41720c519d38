//! Benchmark client: calls pam_authenticate in a loop on one PAM handle per
//! process, for any PAM service (pam_mfa, pam_google_authenticator,
//! pam_oath, ...), answering each echo-off prompt with the next HOTP code.
//! Codes come from `oathtool` (one call per process, before the timed loop),
//! so the harness trusts no code of ours. Prints one JSON line.
//!
//! ```text
//! pam_bench --service S (--users u1,u2 | --user-file F) --secret-file F
//!           [--iterations N] [--procs P] [--contested | --no-code]
//!           [--rhost HOST] [--scenario TEXT] [--module TEXT]
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
//!
//! The JSON line: scenario, module, service, mode, procs, iterations,
//! successes, failures, median_us and p99_us (of every pam_authenticate call),
//! wall_s and throughput_per_s (successes per second of wall time, from the
//! first worker's start to the last one's end), repeated_codes (see
//! `repeated_codes`); contested runs add rounds, rounds_exactly_one,
//! accepted_per_round ({accepted: rounds}), max_accepted_in_a_round and
//! start_spread_{median,max}_us (how far apart a round's calls began).
//!
//! Refuses to run unless libpam-wrapper is in effect (PAM_WRAPPER=1,
//! PAM_WRAPPER_SERVICE_DIR, LD_PRELOAD=...libpam_wrapper.so), so it never
//! reads the machine's own /etc/pam.d stacks; the workers inherit that
//! environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Instant;

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use pam_client::{Context, ConversationHandler, ErrorCode, Flag};

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Each worker logs its own user in N times.
    Loop,
    /// Every worker offers the same code for the same user, N rounds.
    Contested,
    /// No code is asked: the round trip alone.
    NoCode,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Loop => "loop",
            Mode::Contested => "contested",
            Mode::NoCode => "no-code",
        }
    }
    fn parse(s: &str) -> Mode {
        match s {
            "loop" => Mode::Loop,
            "contested" => Mode::Contested,
            "no-code" => Mode::NoCode,
            other => panic!("unknown mode {other}"),
        }
    }
}

/// The command line, as clap reads it. `parse_options` turns it into
/// [`Options`].
#[derive(Parser, Debug)]
#[command(
    name = "pam_bench",
    about = "Benchmark client: pam_authenticate in a loop, answering each prompt with the next HOTP code; \
             prints one JSON line",
    // A repeated option keeps its last value, as before clap.
    args_override_self = true
)]
struct Cli {
    /// The PAM service (a file in PAM_WRAPPER_SERVICE_DIR)
    #[arg(long, value_name = "S")]
    service: String,
    /// Users, comma-separated; repeated options add up (worker i takes user i)
    #[arg(long, value_name = "U1,U2")]
    users: Vec<String>,
    /// A file of user names, one a line (`#` comments); repeated options add up
    #[arg(long, value_name = "F")]
    user_file: Vec<String>,
    /// Lines `USER BASE32SECRET FIRST_COUNTER` (`#` comments). Without
    /// --users/--user-file, its users are used in file order
    #[arg(long, value_name = "F")]
    secret_file: Vec<String>,
    /// Calls per worker (rounds with --contested)
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = at_least_one)]
    iterations: usize,
    /// Worker processes, all started at the same instant
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = at_least_one)]
    procs: usize,
    /// Every worker offers the same code for the first user at once, N rounds
    #[arg(long, overrides_with = "no_code")]
    contested: bool,
    /// A login that asks no code: the round trip alone; a prompt is a failure
    #[arg(long, overrides_with = "contested")]
    no_code: bool,
    /// PAM_RHOST of every call
    #[arg(long, value_name = "HOST")]
    rhost: Option<String>,
    /// Copied into the JSON line
    #[arg(long, value_name = "TEXT", default_value = "")]
    scenario: String,
    /// Copied into the JSON line
    #[arg(long, value_name = "TEXT", default_value = "")]
    module: String,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number, at least 1".into()),
    }
}

struct Options {
    service: String,
    users: Vec<String>,
    /// user -> (base32 secret, first counter)
    secrets: BTreeMap<String, (String, u64)>,
    iterations: usize,
    procs: usize,
    mode: Mode,
    rhost: Option<String>,
    scenario: String,
    module: String,
}

fn read_lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The users of every --users and --user-file, in command-line order.
fn users_in_order(cli: &Cli, matches: &ArgMatches) -> Vec<String> {
    let mut given: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, list) in matches.indices_of("users").into_iter().flatten().zip(&cli.users) {
        given.push((i, list.split(',').filter(|u| !u.is_empty()).map(String::from).collect()));
    }
    for (i, file) in matches.indices_of("user_file").into_iter().flatten().zip(&cli.user_file) {
        given.push((i, read_lines(file)));
    }
    given.sort_by_key(|(i, _)| *i);
    given.into_iter().flat_map(|(_, users)| users).collect()
}

/// user -> (secret, first counter) of every --secret-file, and its users in
/// file order.
fn read_secrets(files: &[String]) -> (BTreeMap<String, (String, u64)>, Vec<String>) {
    let (mut secrets, mut order) = (BTreeMap::new(), Vec::new());
    for line in files.iter().flat_map(|f| read_lines(f)) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [user, secret, counter] = fields[..] else {
            panic!("secret file line {line:?}: expected USER BASE32SECRET FIRST_COUNTER")
        };
        let counter = counter.parse().unwrap_or_else(|_| panic!("bad counter in {line:?}"));
        order.push(user.to_string());
        secrets.insert(user.to_string(), (secret.to_string(), counter));
    }
    (secrets, order)
}

/// The options of the command line; exits with a usage message (status 2)
/// when they do not make a run.
fn parse_options() -> Options {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let fail = |kind, message: String| -> ! { Cli::command().error(kind, message).exit() };
    let mut users = users_in_order(&cli, &matches);
    let (secrets, secret_order) = read_secrets(&cli.secret_file);
    if users.is_empty() {
        users = secret_order;
    }
    if users.is_empty() {
        fail(ErrorKind::MissingRequiredArgument, "no users: give --users, --user-file or --secret-file".into());
    }
    let mode = match (cli.contested, cli.no_code) {
        (true, _) => Mode::Contested,
        (_, true) => Mode::NoCode,
        _ => Mode::Loop,
    };
    if mode == Mode::Loop && users.len() < cli.procs {
        let message = format!("{} workers need {} distinct users, got {}", cli.procs, cli.procs, users.len());
        fail(ErrorKind::InvalidValue, message);
    }
    if mode != Mode::NoCode
        && let Some(user) = users.iter().find(|u| !secrets.contains_key(*u))
    {
        fail(ErrorKind::InvalidValue, format!("no secret for user {user} (--secret-file)"));
    }
    let Cli { service, iterations, procs, rhost, scenario, module, .. } = cli;
    Options { service, users, secrets, iterations, procs, mode, rhost, scenario, module }
}

/// The libpam-wrapper environment must be in effect: never the machine's stacks.
fn check_pam_wrapper() -> Result<(), String> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("PAM_WRAPPER") != "1"
        || var("PAM_WRAPPER_SERVICE_DIR").is_empty()
        || !var("LD_PRELOAD").contains("pam_wrapper")
    {
        return Err("refusing to run without libpam-wrapper: set PAM_WRAPPER=1, \
                    PAM_WRAPPER_SERVICE_DIR=DIR and LD_PRELOAD=libpam_wrapper.so"
            .into());
    }
    Ok(())
}

// ---------------------------------------------------------------- worker

/// Answers an echo-off prompt with the code set for this call; a second
/// prompt in the same call, or an echo-on prompt, ends the conversation.
struct Answerer {
    code: Option<CString>,
    prompts: u32,
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
fn oathtool_codes(secret: &str, first: u64, count: usize) -> Vec<CString> {
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
fn repeated_codes(codes: &[CString]) -> usize {
    (0..codes.len()).filter(|&i| codes[i + 1..codes.len().min(i + 10)].contains(&codes[i])).count()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across the workers.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits for the coordinator's next start time (a CLOCK_MONOTONIC instant,
/// one line on stdin) and sleeps until it: every worker is woken by the same
/// timer. False at EOF.
fn wait_go(stdin: &mut impl BufRead) -> bool {
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
fn worker(args: &[String]) -> ExitCode {
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

// ---------------------------------------------------------------- coordinator

struct Worker {
    child: Child,
    /// Start times go down this pipe, one line each.
    go: ChildStdin,
    lines: BufReader<ChildStdout>,
    /// See `repeated_codes`.
    repeated_codes: usize,
}

impl Worker {
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.lines.read_line(&mut line).unwrap();
        assert!(n > 0, "a worker exited early (pid {})", self.child.id());
        line.trim_end().to_string()
    }
}

/// Starts the workers one at a time, each once the previous one is ready:
/// libpam-wrapper picks each process's private copy of the service dir
/// (`/tmp/pam.X`) with an lstat-then-mkdir that races between processes
/// starting at once.
fn spawn_workers(o: &Options) -> Vec<Worker> {
    let exe = std::env::current_exe().unwrap();
    (0..o.procs)
        .map(|i| {
            let user = match o.mode {
                Mode::Contested => &o.users[0],
                _ => &o.users[i % o.users.len()],
            };
            let (secret, first) = o.secrets.get(user).cloned().unwrap_or_default();
            let mut child = Command::new(&exe)
                .arg("__worker")
                .args([&o.service, user, &secret, &first.to_string(), &o.iterations.to_string()])
                .args([o.mode.name(), o.rhost.as_deref().unwrap_or("")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("cannot spawn a worker");
            let go = child.stdin.take().unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap());
            let mut worker = Worker { child, go, lines, repeated_codes: 0 };
            let line = worker.line();
            let repeats = line.strip_prefix("ready ").unwrap_or_else(|| panic!("worker said {line:?}"));
            worker.repeated_codes = repeats.parse().unwrap();
            worker
        })
        .collect()
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Every worker is told the same start instant, far enough ahead for all of
/// them to be asleep waiting for it.
fn release(workers: &mut [Worker]) {
    let lead_ns = 1_000_000 + 100_000 * workers.len() as u64;
    let at = monotonic_ns() + lead_ns;
    for w in workers.iter_mut() {
        writeln!(w.go, "{at}").unwrap();
        w.go.flush().unwrap();
    }
}

/// The numbers of a worker's line `PREFIX N N ...`.
fn numbers(line: &str, prefix: &str) -> Vec<u64> {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("worker said {line:?}"))
        .split(' ')
        .map(|f| f.parse().unwrap())
        .collect()
}

/// What the workers reported, over all of them.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    /// Of every pam_authenticate call, in nanoseconds.
    latencies: Vec<u64>,
}

/// Loop and no-code modes: one start for all, then each worker's `done`
/// line. Returns the wall time, from the first worker's start to the last
/// one's end, in seconds.
fn collect_loop(workers: &mut [Worker], tally: &mut Tally) -> f64 {
    release(workers);
    let (mut first_start, mut last_end) = (u64::MAX, 0u64);
    for w in workers {
        let fields = numbers(&w.line(), "done ");
        tally.ok += fields[0] as usize;
        tally.failed += fields[1] as usize;
        first_start = first_start.min(fields[2]);
        last_end = last_end.max(fields[3]);
        tally.latencies.extend_from_slice(&fields[4..]);
    }
    (last_end - first_start) as f64 / 1e9
}

/// The rounds of a contested run.
struct Contest {
    wall_s: f64,
    /// distribution[k] = rounds in which exactly k workers were accepted.
    distribution: Vec<usize>,
    /// How far apart the workers' pam_authenticate calls began, per round.
    spreads: Vec<u64>,
}

/// Contested mode: `rounds` starts, each answered by one `round` line per
/// worker.
fn collect_contested(workers: &mut [Worker], rounds: usize, tally: &mut Tally) -> Contest {
    let mut distribution = vec![0usize; workers.len() + 1];
    let mut spreads = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        release(workers);
        let (mut accepted, mut first, mut last) = (0, u64::MAX, 0);
        for w in workers.iter_mut() {
            let f = numbers(&w.line(), "round ");
            let won = f[0] == 1;
            tally.latencies.push(f[1]);
            (first, last) = (first.min(f[2]), last.max(f[2]));
            accepted += usize::from(won);
            if won { tally.ok += 1 } else { tally.failed += 1 }
        }
        distribution[accepted] += 1;
        spreads.push(last - first);
    }
    Contest { wall_s: started.elapsed().as_secs_f64(), distribution, spreads }
}

/// The contested run's own fields of the JSON line.
fn add_contest_fields(doc: &mut serde_json::Value, contest: Contest, rounds: usize) {
    let Contest { distribution, mut spreads, .. } = contest;
    spreads.sort_unstable();
    doc["start_spread_median_us"] = round1(percentile_us(&spreads, 50.0)).into();
    doc["start_spread_max_us"] = round1(percentile_us(&spreads, 100.0)).into();
    let dist: serde_json::Map<String, serde_json::Value> =
        distribution.iter().enumerate().filter(|(_, n)| **n > 0).map(|(k, n)| (k.to_string(), (*n).into())).collect();
    doc["rounds"] = rounds.into();
    doc["rounds_exactly_one"] = distribution[1].into();
    doc["accepted_per_round"] = dist.into();
    doc["max_accepted_in_a_round"] = distribution.iter().rposition(|n| *n > 0).unwrap_or(0).into();
}

/// Closes the workers' start pipes and waits for each to exit successfully.
fn reap(workers: Vec<Worker>) {
    for Worker { mut child, go, .. } in workers {
        drop(go);
        let status = child.wait().unwrap();
        assert!(status.success(), "worker {} exited with {status}", child.id());
    }
}

/// The counts, latency percentiles and throughput of the JSON line.
fn add_tally_fields(doc: &mut serde_json::Value, mut tally: Tally, wall_s: f64) {
    tally.latencies.sort_unstable();
    doc["successes"] = tally.ok.into();
    doc["failures"] = tally.failed.into();
    doc["median_us"] = round1(percentile_us(&tally.latencies, 50.0)).into();
    doc["p99_us"] = round1(percentile_us(&tally.latencies, 99.0)).into();
    doc["wall_s"] = ((wall_s * 1000.0).round() / 1000.0).into();
    doc["throughput_per_s"] = round1(if wall_s > 0.0 { tally.ok as f64 / wall_s } else { 0.0 }).into();
}

/// Runs the workers and returns the JSON line.
fn coordinate(o: &Options) -> serde_json::Value {
    let mut workers = spawn_workers(o);
    let mut doc = serde_json::json!({
        "scenario": o.scenario,
        "module": o.module,
        "service": o.service,
        "mode": o.mode.name(),
        "procs": o.procs,
        "iterations": o.iterations,
        // Contested workers all offer the same codes: count them once.
        "repeated_codes": match o.mode {
            Mode::Contested => workers[0].repeated_codes,
            _ => workers.iter().map(|w| w.repeated_codes).sum(),
        },
    });
    let mut tally = Tally::default();
    let wall_s = match o.mode {
        Mode::Loop | Mode::NoCode => collect_loop(&mut workers, &mut tally),
        Mode::Contested => {
            let contest = collect_contested(&mut workers, o.iterations, &mut tally);
            let wall_s = contest.wall_s;
            add_contest_fields(&mut doc, contest, o.iterations);
            wall_s
        }
    };
    reap(workers);
    add_tally_fields(&mut doc, tally, wall_s);
    doc
}

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
