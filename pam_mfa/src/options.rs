//! The module's arguments on its `auth` line, e.g.
//! `auth required pam_mfa.so socket=/run/mfad/mfad.sock failmode=secure timeout=10 debug`.
//!
//! - `socket=PATH`: mfad's socket (default `/run/mfad/mfad.sock`).
//! - `failmode=secure|safe`: what to do when mfad cannot be reached (connect
//!   fails, the socket is not served by root, or the first request gets no
//!   usable answer). `secure` (the default) denies with PAM_AUTHINFO_UNAVAIL;
//!   `safe` lets non-elevation logins through (PAM_IGNORE) with a syslog
//!   warning. Once mfad has prompted, any failure denies whatever the failmode.
//! - `elevation=SVC1,SVC2`: services added to the built-in elevation list
//!   ([`mfa_shared::DEFAULT_ELEVATION_SERVICES`], mfad's default list: sudo,
//!   sudo-i, su, su-l, pkexec, polkit-1, doas), which stay closed in `failmode=safe`. It only adds: a
//!   built-in service cannot be removed. Repeated options add up.
//! - `timeout=SECONDS`: for the connect and each read and write (default 10,
//!   at most 300).
//! - `debug`: log each step of the conversation (its kind, never its content).
//! - `forward_pass`: for services whose clients answer one field only (IMAP,
//!   FTP, VPN, RADIUS, web applications): the module comes first in the
//!   stack; when mfad says a code is needed it asks once for the password
//!   followed by the code (the trailing digits, as many as the user's device
//!   has, or a recovery code `xxxxx-xxxxx`), sends mfad only the code and,
//!   once it is verified, sets the rest as PAM_AUTHTOK for the next module
//!   (`pam_unix.so try_first_pass`). When no code is needed it asks nothing
//!   and returns PAM_IGNORE. See [`crate::one_field`].
//! - `prompt=TEXT`: the forward_pass prompt (default
//!   [`DEFAULT_FORWARD_PASS_PROMPT`]; `[prompt=Text with spaces: ]` in a PAM
//!   stack file).
//! - `try_first_pass` / `use_first_pass` (forward_pass only): take the
//!   password and code from PAM_AUTHTOK when an earlier module set it; with
//!   `try_first_pass` ask when it is unset, with `use_first_pass` fail.
//!
//! Parsing is a pure function: it never fails, it returns the options it
//! understood plus one warning per argument it ignored, which the shim logs.
//! A bad value keeps the default, and every default is the fail-closed one.

use std::path::PathBuf;
use std::time::Duration;

use mfa_shared::DEFAULT_SOCKET;

/// Seconds allowed for the connect and for each read or write, by default.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Largest `timeout=` accepted: a login must never wait for long on a daemon.
pub const MAX_TIMEOUT_SECS: u64 = 300;
/// What `forward_pass` asks, unless `prompt=` says otherwise.
pub const DEFAULT_FORWARD_PASS_PROMPT: &str = "Password and verification code: ";

/// forward_pass: where the one answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstPass {
    /// Always ask (the default).
    #[default]
    Ask,
    /// PAM_AUTHTOK when an earlier module set it, else ask.
    Try,
    /// PAM_AUTHTOK only; unset, the login fails.
    Use,
}

/// What to do when mfad cannot be reached or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Deny with PAM_AUTHINFO_UNAVAIL (the default).
    #[default]
    Secure,
    /// Let non-elevation logins through (PAM_IGNORE) with a syslog warning;
    /// elevation services (built-in and `elevation=`) still fail.
    Safe,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Secure => "secure",
            FailMode::Safe => "safe",
        }
    }
}

/// The module's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// mfad's socket.
    pub socket: PathBuf,
    pub failmode: FailMode,
    /// Elevation services added to the built-in list (`elevation=`).
    pub elevation: Vec<String>,
    /// Applies to the connect and to each read and write.
    pub timeout: Duration,
    /// Log each step of the conversation (its kind, never its content).
    pub debug: bool,
    /// Password and code in one answer (see the module docs).
    pub forward_pass: bool,
    /// The forward_pass prompt.
    pub prompt: String,
    pub first_pass: FirstPass,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from(DEFAULT_SOCKET),
            failmode: FailMode::Secure,
            elevation: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            debug: false,
            forward_pass: false,
            prompt: DEFAULT_FORWARD_PASS_PROMPT.to_string(),
            first_pass: FirstPass::Ask,
        }
    }
}

impl Options {
    /// Parse the module arguments. Returns the options and a warning for
    /// each argument that was ignored (unknown, or with a bad value).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> (Options, Vec<String>) {
        let mut options = Options::default();
        let mut warnings = Vec::new();
        for arg in args {
            let arg = arg.as_ref();
            match arg.split_once('=') {
                None if arg == "debug" => options.debug = true,
                None if arg == "forward_pass" => options.forward_pass = true,
                None if arg == "try_first_pass" => options.first_pass = FirstPass::Try,
                None if arg == "use_first_pass" => options.first_pass = FirstPass::Use,
                Some(("prompt", text)) if !text.trim().is_empty() => options.prompt = text.to_string(),
                Some(("prompt", _)) => warnings.push("ignoring empty prompt= option".to_string()),
                Some(("socket", path)) if !path.is_empty() => options.socket = PathBuf::from(path),
                Some(("socket", _)) => {
                    warnings.push("ignoring empty socket= option".to_string());
                }
                Some(("failmode", "secure")) => options.failmode = FailMode::Secure,
                Some(("failmode", "safe")) => options.failmode = FailMode::Safe,
                Some(("failmode", other)) => warnings.push(format!(
                    "ignoring failmode={other:?} (expected secure or safe); using failmode={}",
                    options.failmode.as_str()
                )),
                Some(("elevation", list)) => {
                    let services = list.split(',').map(str::trim).filter(|s| !s.is_empty());
                    let before = options.elevation.len();
                    options.elevation.extend(services.map(str::to_owned));
                    if options.elevation.len() == before {
                        warnings.push(format!("ignoring elevation={list:?} (no service named)"));
                    }
                }
                Some(("timeout", secs)) => match parse_timeout(secs) {
                    Some(timeout) => options.timeout = timeout,
                    None => warnings.push(format!(
                        "ignoring timeout={secs:?} (expected whole seconds from 1 to {MAX_TIMEOUT_SECS}); using {} s",
                        options.timeout.as_secs()
                    )),
                },
                _ => warnings.push(format!("ignoring unknown option {arg:?}")),
            }
        }
        let for_forward_pass = options.first_pass != FirstPass::Ask || options.prompt != DEFAULT_FORWARD_PASS_PROMPT;
        if for_forward_pass && !options.forward_pass {
            warnings.push("prompt=, try_first_pass and use_first_pass do nothing without forward_pass".to_string());
        }
        (options, warnings)
    }
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let secs: u64 = text.trim().parse().ok()?;
    (1..=MAX_TIMEOUT_SECS).contains(&secs).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_give_the_defaults() {
        let (options, warnings) = Options::parse::<&str>(&[]);
        assert_eq!(options, Options::default());
        assert_eq!(options.socket, PathBuf::from("/run/mfad/mfad.sock"));
        assert_eq!(options.failmode, FailMode::Secure);
        assert_eq!(options.timeout, Duration::from_secs(10));
        assert!(!options.debug);
        assert!(warnings.is_empty());
    }

    #[test]
    fn every_option_is_understood() {
        let (options, warnings) =
            Options::parse(&["socket=/tmp/x.sock", "failmode=safe", "elevation=run0", "timeout=3", "debug"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            options,
            Options {
                socket: PathBuf::from("/tmp/x.sock"),
                failmode: FailMode::Safe,
                elevation: vec!["run0".to_string()],
                timeout: Duration::from_secs(3),
                debug: true,
                ..Options::default()
            }
        );
    }

    #[test]
    fn forward_pass_options() {
        let (options, warnings) = Options::parse(&["forward_pass", "try_first_pass", "prompt=Password+code: "]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(options.forward_pass);
        assert_eq!(options.first_pass, FirstPass::Try);
        assert_eq!(options.prompt, "Password+code: ");
        let (options, warnings) = Options::parse(&["use_first_pass", "prompt= "]);
        assert_eq!((options.forward_pass, options.first_pass), (false, FirstPass::Use));
        assert_eq!(options.prompt, DEFAULT_FORWARD_PASS_PROMPT);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[1].contains("without forward_pass"), "{warnings:?}");
    }

    #[test]
    fn later_options_win() {
        let (options, _) = Options::parse(&["failmode=safe", "failmode=secure"]);
        assert_eq!(options.failmode, FailMode::Secure);
    }

    #[test]
    fn unknown_options_are_reported_and_ignored() {
        let (options, warnings) = Options::parse(&["nullok", "debug", "use_first_pass=1"]);
        assert!(options.debug);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("nullok"));
        assert!(warnings[1].contains("use_first_pass"));
    }

    #[test]
    fn bad_values_keep_the_fail_closed_defaults() {
        let (options, warnings) =
            Options::parse(&["failmode=open", "timeout=0", "timeout=-1", "timeout=ten", "timeout=100000", "socket="]);
        assert_eq!(options, Options::default());
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        assert!(warnings[0].contains("failmode"));
        assert!(warnings[1].contains("timeout"));
    }

    #[test]
    fn elevation_lists_services_and_adds_up() {
        let (options, warnings) = Options::parse(&["elevation=run0,sudo-rs", "elevation=,cockpit,", "elevation=ksu"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(options.elevation, ["run0", "sudo-rs", "cockpit", "ksu"]);
    }

    #[test]
    fn an_empty_elevation_list_is_reported() {
        let (options, warnings) = Options::parse(&["elevation=", "elevation=,,"]);
        assert!(options.elevation.is_empty());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("elevation"), "{warnings:?}");
    }

    #[test]
    fn debug_takes_no_value() {
        let (options, warnings) = Options::parse(&["debug=1"]);
        assert!(!options.debug);
        assert_eq!(warnings.len(), 1);
    }
}
