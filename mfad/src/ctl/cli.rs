//! mfactl's command line: the clap definitions, `--help` text and the
//! parsers of argument values. Nothing here talks to mfad.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mfa_shared::qr::Background;
use mfa_shared::{ChallengeLevel, OtpType};

use crate::enrollment::QrStyle;

const AFTER_HELP: &str = "\
Self-service commands act on the caller; root may add --user USER to act as
that user would. `user` and `ip` commands and `reload` need root or the
admin_group of mfad.toml.

The socket is --socket, else $MFAD_SOCKET, else /run/mfad/mfad.sock.

Every CODE (--code, --confirm) may be given as `-`: the code is then read
from standard input, one line, so that it does not appear in the process
list, where other local users can see command lines. For example:
  mfactl disable --code - <<<\"$code\"
With an interactive `setup --code -`, the current code is the first line
and the questions read the lines after it.

Exit status:
  0  success
  1  failure (other than below)
  2  usage error
  3  permission denied
  4  not found (user, rule)
  5  invalid code (wrong, already used, or account locked)
  6  mfad unreachable or not answering
  7  store unavailable (mfad cannot reach its database)
  8  doctor: at least one error found
  9  doctor: warnings found, no error";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "mfactl",
    version,
    about = "Manage two-factor authentication (mfad): your own device, or as an administrator every account",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// mfad's socket [env: MFAD_SOCKET] [default: /run/mfad/mfad.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print exactly one JSON document on stdout (errors too)
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for mfad to accept and to answer each request (give it
    /// before the subcommand: `ip add` has its own --timeout)
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86400)
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show your two-factor settings
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Set up a device (interactive), or complete a pending set-up with --confirm
    Setup {
        #[command(flatten)]
        options: SetupOptions,
        /// A code from the device already set up (needed to replace it); `-`
        /// reads it from standard input
        #[arg(long, value_name = "CURRENT", conflicts_with = "confirm")]
        code: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Set how often a code is asked; lowering it needs a current code
    Level {
        #[arg(value_enum)]
        level: LevelArg,
        /// A current code from the device (needed to lower the level); `-`
        /// reads it from standard input
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove your device (two-factor authentication off)
    Disable {
        /// A current code from the device; `-` reads it from standard input
        #[arg(long, value_name = "CODE")]
        code: String,
        #[command(flatten)]
        target: Target,
    },
    /// Issue a fresh set of recovery codes (the old ones stop working)
    RecoveryCodes {
        /// A current code from the device; `-` reads it from standard input
        #[arg(long, value_name = "CODE")]
        code: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check a code (for scripts and screen lockers); it counts as a use
    Verify {
        /// The code to check; `-` reads it from standard input
        #[arg(long, value_name = "CODE")]
        code: String,
        #[command(flatten)]
        target: Target,
    },
    /// Administer accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Administer IP bypass rules
    #[command(subcommand)]
    Ip(IpCommand),
    /// Make mfad re-read its configuration file (like SIGHUP)
    Reload,
    /// Check the set-up (PAM stacks, sshd, mfad, files, clock) and say what
    /// is wrong and how to fix it, one line each (run as root)
    Doctor {
        /// Read the machine's files under DIR instead of / (e.g. a copy of
        /// /etc); the socket is then --socket, or the config's under DIR
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

/// `--user` of the self-service commands.
#[derive(Debug, Args)]
pub struct Target {
    /// Act on USER as that user would (root only)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

/// Options shared by `setup` and `user setup`.
#[derive(Debug, Args)]
pub struct SetupOptions {
    /// OTP type (asked when not given)
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub otp_type: Option<TypeArg>,
    /// Show the secret to type in by hand instead of asking about a QR code
    #[arg(long)]
    pub no_barcode: bool,
    /// Challenge level to set with the new device
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub level: Option<LevelArg>,
    /// Draw the QR code as plain text for a terminal with this background
    /// [default: black on white in colours when standard output is a
    /// terminal, else dark]
    #[arg(long, value_enum, value_name = "BACKGROUND", conflicts_with = "no_barcode")]
    pub qr_background: Option<QrBackgroundArg>,
    /// Complete a pending set-up with a code from the new device; `-` reads
    /// it from standard input
    #[arg(long, value_name = "CODE", conflicts_with_all = ["otp_type", "no_barcode", "level", "qr_background"])]
    pub confirm: Option<String>,
}

impl SetupOptions {
    /// How to draw the QR code: as asked, else forced black on white on a
    /// terminal (it then scans whatever the theme), else for a dark
    /// background like mfad's default.
    pub fn qr_style(&self, stdout_is_tty: bool) -> QrStyle {
        match self.qr_background {
            Some(background) => QrStyle::Plain(background.into()),
            None if stdout_is_tty => QrStyle::BlackOnWhite,
            None => QrStyle::Plain(Background::Dark),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QrBackgroundArg {
    /// Light text on a dark background: light modules drawn
    Dark,
    /// Dark text on a light background: dark modules drawn
    Light,
}

impl From<QrBackgroundArg> for Background {
    fn from(arg: QrBackgroundArg) -> Self {
        match arg {
            QrBackgroundArg::Dark => Background::Dark,
            QrBackgroundArg::Light => Background::Light,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List every account with a record
    List,
    /// Show an account's settings
    Show { user: String },
    /// Set up a device for USER (interactive), or complete it with --confirm
    Setup {
        user: String,
        #[command(flatten)]
        options: SetupOptions,
    },
    /// Remove USER's device
    Disable { user: String },
    /// Set USER's challenge level
    Level {
        user: String,
        #[arg(value_enum)]
        level: LevelArg,
    },
    /// Print USER's check value (the code at counter 0)
    Verify { user: String },
    /// Approve USER's device for super-user functions
    Authorize {
        user: String,
        /// A current code from USER's device; `-` reads it from standard input
        #[arg(long, value_name = "CODE")]
        code: String,
    },
    /// Withdraw USER's super-user approval
    Revoke { user: String },
    /// Clear USER's failure count and lock
    Unlock { user: String },
    /// Enroll accounts from another tool's secrets (JSON lines, a pam_oath
    /// users file, or google-authenticator files). Malformed lines are
    /// listed with their numbers and nothing is imported, unless --keep-going.
    Import {
        /// JSON lines ({"user","type","secret","counter","level"}) or, with
        /// --format oath, a pam_oath users file
        #[arg(value_name = "FILE", required_unless_present = "google_authenticator")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: ImportFormat,
        /// A google-authenticator file, or a directory of them (DIR/USER or
        /// DIR/USER/.google_authenticator); scratch codes become recovery codes
        #[arg(long, value_name = "DIR_OR_FILE", conflicts_with = "file")]
        google_authenticator: Option<PathBuf>,
        /// Import the good lines even when some are malformed
        #[arg(long)]
        keep_going: bool,
        /// Replace the device of accounts that already have one
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One JSON object per line
    Json,
    /// pam_oath's users file (TYPE USER PIN SECRET_HEX [COUNTER])
    Oath,
}

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Add a runtime rule for a network (CIDR) or a single address
    Add {
        /// Network, e.g. 192.0.2.0/24 or 2001:db8::/32; a bare address is one host
        #[arg(value_parser = parse_cidr, value_name = "CIDR")]
        cidr: String,
        /// Logins from this network need no code
        #[arg(long)]
        bypass_2fa: bool,
        /// Lifetime of the rule, e.g. 90s, 15m, 8h, 7d (default: until removed)
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        timeout: Option<u64>,
    },
    /// List every rule, from the config file and runtime
    List,
    /// Remove a runtime rule
    Remove {
        /// The rule's id, as `ip list` shows it
        id: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// Time-based (TOTP), recommended
    Totp,
    /// Counter-based (HOTP)
    Hotp,
}

impl From<TypeArg> for OtpType {
    fn from(arg: TypeArg) -> Self {
        match arg {
            TypeArg::Totp => OtpType::Totp,
            TypeArg::Hotp => OtpType::Hotp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// A code at every login
    Always,
    /// A code when the source is not trusted
    Adaptive,
    /// A code only for super-user functions
    Superuser,
}

impl From<LevelArg> for ChallengeLevel {
    fn from(arg: LevelArg) -> Self {
        match arg {
            LevelArg::Always => ChallengeLevel::Always,
            LevelArg::Adaptive => ChallengeLevel::Adaptive,
            LevelArg::Superuser => ChallengeLevel::Superuser,
        }
    }
}

/// Validate a network on the command line; the text is sent as typed.
fn parse_cidr(text: &str) -> Result<String, String> {
    mfa_shared::bypass::parse_network(text)?;
    Ok(text.trim().to_owned())
}

/// "90s", "15m", "8h", "7d" (a bare number is seconds) into seconds.
pub fn parse_lifetime(text: &str) -> Result<u64, String> {
    let secs = mfa_shared::config::parse_duration(text)?.as_secs();
    if secs == 0 {
        return Err("the timeout must be longer than zero".to_owned());
    }
    Ok(secs)
}
