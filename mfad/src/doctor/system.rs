//! What doctor asks the running system: mfad (is it answering, is root
//! enrolled) and the kernel (is the clock synchronised).

use std::path::Path;
use std::time::Duration;

use mfa_shared::config::Config;
use mfa_shared::{Client, ClientError, EnrollmentState, ErrorKind, Request, Response, UserStatus};

use super::Finding;

/// mfad's answer to "status of root".
#[derive(Debug)]
pub enum DaemonAnswer {
    Status(UserStatus),
    Failed(ClientError),
    /// It answered, but not with a status.
    Unexpected(&'static str),
}

/// Ask mfad for root's status (the request `mfactl user show root` sends):
/// it shows whether mfad answers and whether root is enrolled.
pub fn ask_root_status(socket: &Path, timeout: Duration) -> DaemonAnswer {
    ask_status(socket, timeout, "root")
}

/// Ask mfad for `user`'s status.
pub fn ask_status(socket: &Path, timeout: Duration, user: &str) -> DaemonAnswer {
    let request = Request::Status { user: Some(user.to_owned()) };
    match Client::connect(socket, timeout).and_then(|mut client| client.call(request)) {
        Ok(Response::Status(status)) => DaemonAnswer::Status(status),
        Ok(other) => DaemonAnswer::Unexpected(other.kind()),
        Err(e) => DaemonAnswer::Failed(e),
    }
}

/// `daemon`: mfad answers on its socket and reaches its store.
pub fn check_daemon(socket: &Path, answer: &DaemonAnswer) -> Vec<Finding> {
    const CHECK: &str = "daemon";
    let shown = socket.display();
    vec![match answer {
        DaemonAnswer::Status(_) | DaemonAnswer::Failed(ClientError::Daemon { .. }) => {
            Finding::ok(CHECK, format!("mfad answers on {shown}"))
        }
        DaemonAnswer::Failed(ClientError::StoreUnavailable(_)) => Finding::error(
            CHECK,
            format!(
                "mfad answers on {shown} but cannot reach its store: every login that needs a code is refused. See \
             mfad's log (`journalctl -u mfad`) for the store's error"
            ),
        ),
        DaemonAnswer::Failed(ClientError::Version(_)) | DaemonAnswer::Unexpected(_) => Finding::error(
            CHECK,
            format!(
                "mfad on {shown} speaks another protocol than this mfactl: restart mfad after an upgrade \
             (`systemctl restart mfad`)"
            ),
        ),
        DaemonAnswer::Failed(e) => Finding::error(
            CHECK,
            format!(
                "mfad is not answering on {shown} ({}): the PAM module refuses every login that needs a code \
             (failmode=secure). Start it (`systemctl start mfad`) and see why it stopped (`journalctl -u mfad`)",
                e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        ),
    }]
}

/// `root-enrolled`: with MFA on, root has a device: root logins are then
/// protected by a code, and a role that forces a set-up cannot stop root at
/// a login with no way to answer.
pub fn check_root_enrolled(config: &Config, answer: &DaemonAnswer) -> Vec<Finding> {
    const CHECK: &str = "root-enrolled";
    if !config.enabled {
        return vec![Finding::ok(CHECK, "MFA is off: root's enrollment not checked")];
    }
    vec![match answer {
        DaemonAnswer::Status(status) if status.state == EnrollmentState::Enabled => {
            Finding::ok(CHECK, "root has a device")
        }
        DaemonAnswer::Status(status) => Finding::warning(
            CHECK,
            format!(
                "MFA is on and root is {}: root logins get no second factor, and where a role forces a set-up root \
             is stopped at the next login. From a session already open, run `mfactl user setup root`",
                status.state.as_str()
            ),
        ),
        DaemonAnswer::Failed(ClientError::Daemon { kind: ErrorKind::PermissionDenied, .. }) => {
            Finding::warning(CHECK, "mfad does not tell this user whether root is enrolled: run doctor as root")
        }
        _ => Finding::warning(CHECK, "cannot ask mfad whether root is enrolled (see the `daemon` check)"),
    }]
}

/// The kernel's view of its clock (adjtimex(2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// `STA_*` bits.
    pub status: i32,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
}

/// Above this maximum error the kernel itself calls the clock
/// unsynchronised (NTP_PHASE_LIMIT, 16 s).
const MAX_ERROR_LIMIT_US: i64 = 16_000_000;

/// Read the clock's status (adjtimex with no change: any user may).
pub fn read_clock() -> Option<ClockState> {
    // SAFETY: timex is plain data; all zero is a valid value (modes 0 asks
    // for a read only), and the kernel writes into the buffer we own.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::adjtimex(&mut timex) };
    if rc < 0 {
        return None;
    }
    Some(ClockState { status: timex.status, maxerror_us: timex.maxerror })
}

/// `clock`: TOTP codes are the time; a clock off by more than
/// `totp_skew` steps refuses every right code.
pub fn check_clock(clock: Option<ClockState>) -> Finding {
    const CHECK: &str = "clock";
    let Some(clock) = clock else {
        return Finding::warning(CHECK, "cannot read the clock's status (adjtimex): check that NTP runs");
    };
    if clock.status & libc::STA_UNSYNC != 0 || clock.maxerror_us >= MAX_ERROR_LIMIT_US {
        return Finding::warning(
            CHECK,
            format!(
                "the clock is not synchronised (kernel status STA_UNSYNC, maximum error {} s): time-based codes \
             depend on it, and a clock off by more than totp_skew periods refuses every right code. Run an NTP \
             client (systemd-timesyncd, chrony or ntpsec)",
                clock.maxerror_us / 1_000_000
            ),
        );
    }
    Finding::ok(CHECK, format!("the clock is synchronised (maximum error {} ms)", clock.maxerror_us / 1000))
}
