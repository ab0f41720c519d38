//! The command line.

use std::collections::BTreeMap;

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Each worker logs its own user in N times.
    Loop,
    /// Every worker offers the same code for the same user, N rounds.
    Contested,
    /// No code is asked: the round trip alone.
    NoCode,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Loop => "loop",
            Mode::Contested => "contested",
            Mode::NoCode => "no-code",
        }
    }
    pub(crate) fn parse(s: &str) -> Mode {
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
pub(crate) struct Cli {
    /// The PAM service (a file in PAM_WRAPPER_SERVICE_DIR). Several
    /// (comma-separated or repeated) spread the workers: worker i takes
    /// service i mod n, e.g. one service per daemon of a fleet
    #[arg(long, value_name = "S1,S2", required = true)]
    pub(crate) service: Vec<String>,
    /// Users, comma-separated; repeated options add up (worker i takes user i)
    #[arg(long, value_name = "U1,U2")]
    pub(crate) users: Vec<String>,
    /// A file of user names, one a line (`#` comments); repeated options add up
    #[arg(long, value_name = "F")]
    pub(crate) user_file: Vec<String>,
    /// Lines `USER BASE32SECRET FIRST_COUNTER` (`#` comments). Without
    /// --users/--user-file, its users are used in file order
    #[arg(long, value_name = "F")]
    pub(crate) secret_file: Vec<String>,
    /// Calls per worker (rounds with --contested)
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = at_least_one)]
    pub(crate) iterations: usize,
    /// Worker processes, all started at the same instant
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) procs: usize,
    /// Every worker offers the same code for the first user at once, N rounds
    #[arg(long, overrides_with = "no_code")]
    pub(crate) contested: bool,
    /// A login that asks no code: the round trip alone; a prompt is a failure
    #[arg(long, overrides_with = "contested")]
    pub(crate) no_code: bool,
    /// PAM_RHOST of every call
    #[arg(long, value_name = "HOST")]
    pub(crate) rhost: Option<String>,
    /// Copied into the JSON line
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub(crate) scenario: String,
    /// Copied into the JSON line
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub(crate) module: String,
    /// Also report where the machine's CPU time went while the workers ran
    /// (loop and no-code modes): busy and idle, and this process's share
    /// (the daemon's)
    #[arg(long, value_name = "PID")]
    pub(crate) cpu_of: Option<u32>,
}

pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number, at least 1".into()),
    }
}

pub(crate) struct Options {
    /// Worker i uses services[i % services.len()].
    pub(crate) services: Vec<String>,
    pub(crate) users: Vec<String>,
    /// user -> (base32 secret, first counter)
    pub(crate) secrets: BTreeMap<String, (String, u64)>,
    pub(crate) iterations: usize,
    pub(crate) procs: usize,
    pub(crate) mode: Mode,
    pub(crate) rhost: Option<String>,
    pub(crate) scenario: String,
    pub(crate) module: String,
    pub(crate) cpu_of: Option<u32>,
}

pub(crate) fn read_lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The users of every --users and --user-file, in command-line order.
pub(crate) fn users_in_order(cli: &Cli, matches: &ArgMatches) -> Vec<String> {
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
pub(crate) fn read_secrets(files: &[String]) -> (BTreeMap<String, (String, u64)>, Vec<String>) {
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
pub(crate) fn parse_options() -> Options {
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
    let services: Vec<String> =
        cli.service.iter().flat_map(|list| list.split(',')).filter(|s| !s.is_empty()).map(String::from).collect();
    if services.is_empty() {
        fail(ErrorKind::InvalidValue, "no service: give --service S".into());
    }
    let Cli { iterations, procs, rhost, scenario, module, cpu_of, .. } = cli;
    Options { services, users, secrets, iterations, procs, mode, rhost, scenario, module, cpu_of }
}

/// The libpam-wrapper environment must be in effect: never the machine's stacks.
pub(crate) fn check_pam_wrapper() -> Result<(), String> {
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
