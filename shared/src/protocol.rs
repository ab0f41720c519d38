//! Messages exchanged between mfad and its clients (pam_mfa, mfactl).
//!
//! Every frame carries one JSON document: a [`RequestFrame`] from the client,
//! a [`ResponseFrame`] from the daemon. Enums are internally tagged
//! (`"type": "snake_case_name"`) so that the wire format reads well and
//! unknown requests are rejected by name.
//!
//! Authorization is never carried in a message: the daemon takes the caller's
//! identity from the socket's peer credentials (SO_PEERCRED).

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::account::*;
use crate::bypass::BypassRule;

/// Bumped on any incompatible change; the daemon refuses other versions with
/// [`ErrorKind::Version`] so a stale client says so clearly.
pub const PROTOCOL_VERSION: u32 = 1;

/// The PAM services that are super-user elevation unless the config says
/// otherwise: mfad's default `[elevation] services`, and the list the module
/// keeps closed in `failmode=safe` (it cannot ask mfad when that matters).
pub const DEFAULT_ELEVATION_SERVICES: &[&str] = &["sudo", "sudo-i", "su", "su-l", "pkexec", "polkit-1", "doas"];

/// A request as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    pub version: u32,
    pub request: Request,
}

/// A response as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseFrame {
    pub version: u32,
    pub response: Response,
}

impl RequestFrame {
    pub fn new(request: Request) -> Self {
        Self { version: PROTOCOL_VERSION, request }
    }
}

impl ResponseFrame {
    pub fn new(response: Response) -> Self {
        Self { version: PROTOCOL_VERSION, response }
    }
}

/// A request to mfad. Each variant's doc names the responses it can get;
/// any request can also get [`Response::Error`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start a login conversation (PAM). Root, or a user for their own
    /// account. -> [`Response::Auth`]
    AuthBegin {
        service: String,
        user: String,
        #[serde(default)]
        ruser: Option<String>,
        #[serde(default)]
        rhost: Option<String>,
        #[serde(default)]
        tty: Option<String>,
        /// The module's `forward_pass`: the client answers one field only.
        /// mfad then asks no question: a login that needs a code gets
        /// [`AuthStep::CodeInAnswer`], one that would offer inline set-up
        /// is decided without it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forward_pass: bool,
    },
    /// Answer the prompt of a conversation. -> [`Response::Auth`]
    AuthAnswer { session_id: String, answer: Code },
    /// The answer to a code prompt was not a code: the module found it
    /// equal to the password the stack holds, and sends nothing of it.
    /// Refused and audited, never counted toward the lockout.
    /// -> [`Response::Auth`]
    AuthNotACode { session_id: String },

    /// The caller's (or, for an administrator, `user`'s) settings.
    /// -> [`Response::Status`]
    Status {
        #[serde(default)]
        user: Option<String>,
    },
    /// Start setting up a device. An enabled device is only replaced when
    /// `current_code` verifies against it, or the caller administers.
    /// -> [`Response::SetupStarted`]
    SetupBegin {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        otp_type: Option<OtpType>,
        #[serde(default)]
        level: Option<ChallengeLevel>,
        #[serde(default)]
        current_code: Option<Code>,
    },
    /// Complete a pending set-up with a code from the new device.
    /// -> [`Response::SetupCompleted`]
    SetupConfirm {
        #[serde(default)]
        user: Option<String>,
        code: Code,
    },
    /// Set the challenge level. -> [`Response::Ok`]
    SetLevel {
        #[serde(default)]
        user: Option<String>,
        level: ChallengeLevel,
        /// A current code: a user lowering their own level must prove the
        /// device (else anyone at a trusted session could drop 2FA).
        #[serde(default)]
        code: Option<Code>,
    },
    /// Remove the device. A user needs a valid code; an administrator does not.
    /// -> [`Response::Ok`]
    Disable {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        code: Option<Code>,
    },
    /// Check a code without a login (screen lockers, scripts); counts as a
    /// use of the code. -> [`Response::Ok`]
    VerifyCode {
        #[serde(default)]
        user: Option<String>,
        code: Code,
    },
    /// Issue a fresh set of recovery codes, proven with a current code.
    /// -> [`Response::RecoveryCodes`]
    RecoveryCodes {
        #[serde(default)]
        user: Option<String>,
        code: Code,
    },

    /// Administration: accounts with a record, by name, a page at a time:
    /// those after `after` (all from the start when none). -> [`Response::Users`]
    ListUsers {
        #[serde(default)]
        after: Option<String>,
    },
    /// Administration: the check value (HOTP at counter 0). -> [`Response::CheckValue`]
    CheckValue { user: String },
    /// Administration: approve the user's device for super-user functions,
    /// proven with a current code from it. -> [`Response::Ok`]
    Authorize { user: String, code: Code },
    /// Administration: withdraw super-user approval. -> [`Response::Ok`]
    Revoke { user: String },
    /// Administration: clear the failure count and lock. -> [`Response::Ok`]
    Unlock { user: String },
    /// Administration: add a runtime IP rule. -> [`Response::IpRuleAdded`]
    IpAdd {
        cidr: String,
        bypass_2fa: bool,
        /// Lifetime in seconds; none = until removed.
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// Administration: every IP rule, from config and runtime. -> [`Response::IpRules`]
    IpList,
    /// Administration: remove a runtime IP rule. -> [`Response::Ok`]
    IpRemove { id: i64 },
    /// Administration: re-read the config file, like SIGHUP. -> [`Response::Ok`]
    Reload,
    /// Administration: enroll accounts from another tool's secrets. An
    /// account that already has a device is refused unless `replace`.
    /// -> [`Response::Imported`]
    ImportUsers {
        users: Vec<ImportUser>,
        #[serde(default)]
        replace: bool,
    },
}

impl Request {
    /// A short name for logs (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::AuthBegin { .. } => "auth_begin",
            Request::AuthAnswer { .. } => "auth_answer",
            Request::AuthNotACode { .. } => "auth_not_a_code",
            Request::Status { .. } => "status",
            Request::SetupBegin { .. } => "setup_begin",
            Request::SetupConfirm { .. } => "setup_confirm",
            Request::SetLevel { .. } => "set_level",
            Request::Disable { .. } => "disable",
            Request::VerifyCode { .. } => "verify_code",
            Request::RecoveryCodes { .. } => "recovery_codes",
            Request::ListUsers { .. } => "list_users",
            Request::CheckValue { .. } => "check_value",
            Request::Authorize { .. } => "authorize",
            Request::Revoke { .. } => "revoke",
            Request::Unlock { .. } => "unlock",
            Request::IpAdd { .. } => "ip_add",
            Request::IpList => "ip_list",
            Request::IpRemove { .. } => "ip_remove",
            Request::Reload => "reload",
            Request::ImportUsers { .. } => "import_users",
        }
    }
}

/// How a message of a conversation is shown; maps one-to-one onto PAM
/// message styles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MessageStyle {
    /// PAM_TEXT_INFO
    Info,
    /// PAM_ERROR_MSG
    Error,
}

/// A text shown to the person logging in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub style: MessageStyle,
    pub text: String,
    /// Shown even under PAM_SILENT: text the person cannot do without (the
    /// key of an inline set-up, recovery codes shown once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_show: bool,
}

impl Message {
    pub fn info(text: impl Into<String>) -> Self {
        Message { style: MessageStyle::Info, text: text.into(), must_show: false }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Message { style: MessageStyle::Error, text: text.into(), must_show: false }
    }
    /// Information that PAM_SILENT must not hide.
    pub fn essential(text: impl Into<String>) -> Self {
        Message { style: MessageStyle::Info, text: text.into(), must_show: true }
    }
}

/// The end of a login conversation. Mapped onto PAM return codes by the module.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A code (or an inline enrollment) was verified: PAM_SUCCESS.
    Verified,
    /// No code was needed (MFA off, not enrolled, trusted, bypassed): PAM_IGNORE.
    NotRequired,
    /// A wrong code: PAM_AUTH_ERR.
    Failed,
    /// Too many wrong codes in this conversation: PAM_MAXTRIES.
    MaxTries,
    /// Not permitted whatever the code (locked, elevation not approved,
    /// enrollment required): PAM_PERM_DENIED.
    Denied,
}

/// One step of a login conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum AuthStep {
    /// Show `messages`, then ask `prompt` and send the answer with
    /// [`Request::AuthAnswer`].
    Prompt {
        session_id: String,
        messages: Vec<Message>,
        prompt: String,
        /// false for codes (PAM_PROMPT_ECHO_OFF), true for questions.
        echo: bool,
    },
    /// Show `messages`; the conversation is over.
    Decision { outcome: Outcome, messages: Vec<Message> },
    /// `forward_pass` only: a code is needed. The module asks for the
    /// password and the code in one answer and sends only the code with
    /// [`Request::AuthAnswer`]: the trailing `digits` digits, or (when
    /// `recovery`) a recovery code `xxxxx-xxxxx` at the end. The password
    /// never leaves the module.
    CodeInAnswer { session_id: String, digits: u32, recovery: bool },
}

/// What `mfactl status` / `user show` print.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserStatus {
    pub user: String,
    pub state: EnrollmentState,
    #[serde(default)]
    pub otp_type: Option<OtpType>,
    /// True when a new device is waiting for `setup --confirm`.
    pub pending: bool,
    pub level: ChallengeLevel,
    /// True when the level is the configured default rather than set.
    pub level_is_default: bool,
    pub superuser_approved: bool,
    pub failures: u32,
    /// Unix time until which the account is locked, if it is.
    #[serde(default)]
    pub locked_until: Option<u64>,
    /// Wrong codes at one-answer services (`forward_pass`), counted apart:
    /// they lock only those services.
    #[serde(default)]
    pub one_answer_failures: u32,
    #[serde(default)]
    pub one_answer_locked_until: Option<u64>,
    #[serde(default)]
    pub last_success: Option<u64>,
    #[serde(default)]
    pub last_source: Option<String>,
    pub recovery_codes_left: u32,
    /// Role policy that applies through group membership, if any.
    #[serde(default)]
    pub role_policy: Option<String>,
}

/// A new device, as shown to the person setting it up.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SetupInfo {
    pub user: String,
    pub uri: String,
    /// Base32, without padding.
    pub secret: String,
    #[serde(rename = "type")]
    pub otp_type: OtpType,
    pub algorithm: Algorithm,
    pub digits: u32,
    /// Seconds, for TOTP.
    pub period: u64,
    /// Starting counter, for HOTP.
    pub counter: u64,
}

/// The secret and the URI that holds it are wiped from memory when dropped.
impl Drop for SetupInfo {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
        zeroize::Zeroize::zeroize(&mut self.uri);
    }
}

impl fmt::Debug for SetupInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetupInfo")
            .field("user", &self.user)
            .field("otp_type", &self.otp_type)
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// One enrollment brought from another tool (`mfactl user import`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImportUser {
    pub user: String,
    #[serde(rename = "type")]
    pub otp_type: OtpType,
    /// Base32; redacted in Debug like every code.
    pub secret: Code,
    /// HOTP: the next counter the device will show.
    #[serde(default)]
    pub counter: u64,
    #[serde(default)]
    pub level: Option<ChallengeLevel>,
    /// None: the configured default.
    #[serde(default)]
    pub digits: Option<u32>,
    #[serde(default)]
    pub period: Option<u64>,
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Single-use codes to keep as recovery codes (e.g. scratch codes).
    #[serde(default)]
    pub recovery_codes: Vec<Code>,
}

/// An account `mfactl user import` did not import, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportRefusal {
    pub user: String,
    pub reason: String,
}

/// A bypass rule as listed by `mfactl ip list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedRule {
    #[serde(flatten)]
    pub rule: BypassRule,
    /// Whether the rule applies now: not lapsed and bypass switched on.
    pub in_force: bool,
}

/// Why a request failed; lets clients pick an exit code and message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame could not be read as a request.
    BadRequest,
    /// The peer may not do this.
    PermissionDenied,
    /// No such user, device, session or rule.
    NotFound,
    /// The code was wrong, replayed, or the account is locked.
    InvalidCode,
    /// The request cannot apply in the current state (e.g. nothing pending).
    Conflict,
    /// Protocol version mismatch.
    Version,
    /// The daemon failed (store error); details are in its log.
    Internal,
    /// Too much in progress (for this caller, or in all); try again later.
    /// Never a reason to let a login through in failmode=safe.
    Busy,
}

impl ErrorKind {
    /// The wire name (`permission_denied`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidCode => "invalid_code",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Version => "version",
            ErrorKind::Internal => "internal",
            ErrorKind::Busy => "busy",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Ok {
        #[serde(default)]
        message: Option<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// mfad cannot reach its store (the fleet database is down or failing
    /// over): it can decide nothing that needs it. Clients treat it as an
    /// unreachable daemon (the PAM module applies its failmode).
    Unavailable {
        message: String,
    },
    Auth(AuthStep),
    Status(UserStatus),
    /// A struct variant, because `SetupInfo` has a field named `type`
    /// that would collide with the tag of a newtype variant.
    SetupStarted {
        setup: SetupInfo,
    },
    SetupCompleted {
        /// Shown once; stored only as hashes.
        recovery_codes: Vec<Code>,
    },
    RecoveryCodes {
        recovery_codes: Vec<Code>,
    },
    /// One page; `more` when accounts follow the last one listed.
    Users {
        users: Vec<UserStatus>,
        #[serde(default)]
        more: bool,
    },
    CheckValue {
        user: String,
        value: String,
    },
    IpRuleAdded {
        id: i64,
    },
    IpRules {
        rules: Vec<ListedRule>,
    },
    Imported {
        imported: u64,
        refused: Vec<ImportRefusal>,
    },
}

impl Response {
    /// The wire name of the response (its `type` tag), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Ok { .. } => "ok",
            Response::Error { .. } => "error",
            Response::Unavailable { .. } => "unavailable",
            Response::Auth(_) => "auth",
            Response::Status(_) => "status",
            Response::SetupStarted { .. } => "setup_started",
            Response::SetupCompleted { .. } => "setup_completed",
            Response::RecoveryCodes { .. } => "recovery_codes",
            Response::Users { .. } => "users",
            Response::CheckValue { .. } => "check_value",
            Response::IpRuleAdded { .. } => "ip_rule_added",
            Response::IpRules { .. } => "ip_rules",
            Response::Imported { .. } => "imported",
        }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error { kind, message: message.into() }
    }
    pub fn ok() -> Self {
        Response::Ok { message: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_the_wire_tag() {
        let responses = [
            Response::ok(),
            Response::error(ErrorKind::Busy, "x"),
            Response::Unavailable { message: "x".into() },
            Response::Auth(AuthStep::Decision { outcome: Outcome::Denied, messages: Vec::new() }),
            Response::SetupCompleted { recovery_codes: Vec::new() },
            Response::RecoveryCodes { recovery_codes: Vec::new() },
            Response::Users { users: Vec::new(), more: false },
            Response::CheckValue { user: "a".into(), value: "1".into() },
            Response::IpRuleAdded { id: 1 },
            Response::IpRules { rules: Vec::new() },
            Response::Imported { imported: 0, refused: Vec::new() },
        ];
        for response in responses {
            let value = serde_json::to_value(&response).unwrap();
            assert_eq!(value["type"], response.kind(), "{value}");
        }
        let kinds = [
            ErrorKind::BadRequest,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::InvalidCode,
            ErrorKind::Conflict,
            ErrorKind::Version,
            ErrorKind::Internal,
            ErrorKind::Busy,
        ];
        for kind in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn user_names_refused_only_when_no_account_can_have_them() {
        for ok in ["alice", "ALICE", "alice@corp.example", "CORP\\alice", "first last", "a+b"] {
            assert!(is_valid_user_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_USER_NAME_BYTES + 1);
        for bad in ["", "-alice", "a/b", "a\nb", "a\tb", "ali\u{202E}ec", "a\u{200B}b", long.as_str()] {
            assert!(!is_valid_user_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_internally_tagged() {
        let frame = RequestFrame::new(Request::Status { user: None });
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(json, r#"{"version":1,"request":{"type":"status","user":null}}"#);
        let back: RequestFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn unknown_request_is_rejected_by_name() {
        let err =
            serde_json::from_str::<RequestFrame>(r#"{"version":1,"request":{"type":"format_disk"}}"#).unwrap_err();
        assert!(err.to_string().contains("format_disk"), "{err}");
    }

    #[test]
    fn codes_never_show_in_debug() {
        let req = Request::AuthAnswer { session_id: "s".into(), answer: Code::new("123456") };
        assert!(!format!("{req:?}").contains("123456"));
        let info = SetupInfo {
            user: "alice".into(),
            uri: "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP".into(),
            secret: "JBSWY3DPEHPK3PXP".into(),
            otp_type: OtpType::Totp,
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            counter: 0,
        };
        assert!(!format!("{info:?}").contains("JBSWY3DPEHPK3PXP"));
    }

    #[test]
    fn setup_started_round_trips() {
        let setup = SetupInfo {
            user: "alice".into(),
            uri: "otpauth://hotp/x".into(),
            secret: "JBSWY3DPEHPK3PXP".into(),
            otp_type: OtpType::Hotp,
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            counter: 0,
        };
        let frame = ResponseFrame::new(Response::SetupStarted { setup });
        let json = serde_json::to_string(&frame).unwrap();
        assert!(json.contains(r#""type":"setup_started""#), "{json}");
        assert_eq!(serde_json::from_str::<ResponseFrame>(&json).unwrap(), frame);
    }

    #[test]
    fn auth_steps_round_trip() {
        let step = Response::Auth(AuthStep::Prompt {
            session_id: "abc".into(),
            messages: vec![Message::info("hello")],
            prompt: "Verification code: ".into(),
            echo: false,
        });
        let json = serde_json::to_string(&ResponseFrame::new(step.clone())).unwrap();
        let back: ResponseFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back.response, step);
    }
}
