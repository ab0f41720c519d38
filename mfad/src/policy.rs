//! Whether a login needs a code: a pure function of (config, user record,
//! request, context, now). SPEC sections 5 (login), 6 (elevation), 7 (roles)
//! and 8 (bypass), in that order of precedence.

use mfa_shared::config::{Config, RolePolicy};
use mfa_shared::protocol::ChallengeLevel;

use mfa_shared::bypass::BypassRule;

use crate::lockout;
use crate::store::UserRecord;

/// Prefix of a source that is a host name rather than an IP literal
/// (PAM_RHOST from reverse DNS): never a trusted source, since whoever runs
/// the DNS for an address can claim any name.
pub const HOST_NAME_SOURCE: &str = "host:";

/// The login being decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub service: String,
    /// The account whose code is asked: PAM_RUSER for elevation when set,
    /// else PAM_USER.
    pub person: String,
    /// `rhost`, or `local:HOST:TTY` for a local login.
    pub source: String,
    pub elevation: bool,
    /// The PAM items came from a non-root caller (a PAM application of a
    /// user's own): its source is a claim, never trusted.
    pub local_claim: bool,
    /// Why this login's source can never be trusted, whoever asks (the
    /// adaptive level's reason to ask), if it cannot.
    pub never_trusted: Option<&'static str>,
}

impl LoginRequest {
    /// The source a success makes trusted: none for a non-root caller's
    /// claim, nor for a source that is never trusted.
    pub fn trusted_source(&self) -> Option<&str> {
        (!self.local_claim && self.never_trusted.is_none()).then_some(self.source.as_str())
    }
}

/// [`LoginRequest::never_trusted`]: a service that sets neither PAM_RHOST
/// nor PAM_TTY (RADIUS, web applications) gives one source for every
/// client it has, anywhere.
pub const NO_SOURCE: &str = "adaptive: no remote host and no terminal, nothing to trust";
/// [`LoginRequest::never_trusted`]: a one-answer service (`forward_pass`)
/// cannot log in without the code at the end of its answer once it is
/// trusted, and its code is checked before the password.
pub const ONE_ANSWER: &str = "adaptive: a one-answer service (forward_pass) is never trusted";

/// Facts looked up outside the store for this decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// Strictest role policy of the person's groups.
    pub role: Option<RolePolicy>,
    /// The bypass rule matching the remote host (global switch on, rule in
    /// force).
    pub bypass: Option<BypassRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No code needed; the reason goes to the audit line.
    Allow(AllowReason),
    /// Ask for a code (`reason` for the audit line).
    AskCode {
        reason: &'static str,
        recovery_allowed: bool,
    },
    /// Offer inline set-up; `mandatory` for force/require.
    OfferEnrollment {
        policy: RolePolicy,
        mandatory: bool,
    },
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowReason {
    MfaDisabled,
    Bypass(BypassRule),
    NotEnrolled,
    TrustedSource,
    LevelSuperuser,
}

impl AllowReason {
    pub fn describe(&self) -> String {
        match self {
            AllowReason::MfaDisabled => "mfa disabled".into(),
            AllowReason::Bypass(rule) => format!("ip bypass by rule {rule}"),
            AllowReason::NotEnrolled => "not enrolled, no role policy".into(),
            AllowReason::TrustedSource => "trusted source".into(),
            AllowReason::LevelSuperuser => "level superuser: no code at login".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Locked { until: u64 },
    ElevationNotEnrolled,
    ElevationNotApproved,
}

impl DenyReason {
    pub fn describe(&self) -> &'static str {
        match self {
            DenyReason::Locked { .. } => "account locked",
            DenyReason::ElevationNotEnrolled => "elevation denied: not enrolled",
            DenyReason::ElevationNotApproved => "elevation denied: super-user approval not granted",
        }
    }

    /// What the person sees.
    pub fn message(&self) -> String {
        match self {
            DenyReason::Locked { until } => crate::lockout::message(*until),
            DenyReason::ElevationNotEnrolled => {
                "Super-user access needs two-factor authentication: set it up with `mfactl setup`.".into()
            }
            DenyReason::ElevationNotApproved => {
                "Your device is not approved for super-user access: ask an administrator to run `mfactl user authorize`.".into()
            }
        }
    }
}

/// Strictest policy among the roles of someone in `groups`.
pub fn strictest_role(config: &Config, groups: &[String]) -> Option<RolePolicy> {
    config.roles.iter().filter(|r| groups.contains(&r.group)).map(|r| r.policy).max()
}

pub fn decide(
    config: &Config,
    record: Option<&UserRecord>,
    request: &LoginRequest,
    context: &Context,
    now: u64,
) -> Decision {
    if !config.enabled {
        return Decision::Allow(AllowReason::MfaDisabled);
    }
    if let Some(until) = record.and_then(|r| lockout::locked_until(r, now)) {
        return Decision::Deny(DenyReason::Locked { until });
    }
    let enrolled = record.filter(|r| r.is_enrolled());
    if request.elevation {
        // Whatever the level, never bypassed, never a recovery code.
        let Some(record) = enrolled else {
            return Decision::Deny(DenyReason::ElevationNotEnrolled);
        };
        if config.elevation.require_approval && !record.approved {
            return Decision::Deny(DenyReason::ElevationNotApproved);
        }
        return Decision::AskCode { reason: "elevation", recovery_allowed: false };
    }
    if let Some(rule) = context.bypass {
        return Decision::Allow(AllowReason::Bypass(rule));
    }
    let Some(record) = enrolled else {
        return match context.role {
            None => Decision::Allow(AllowReason::NotEnrolled),
            Some(policy) => Decision::OfferEnrollment { policy, mandatory: policy != RolePolicy::Encourage },
        };
    };
    let ask = |reason| Decision::AskCode { reason, recovery_allowed: true };
    if context.role == Some(RolePolicy::Require) {
        return ask("role policy require");
    }
    match record.level.unwrap_or(config.default_level) {
        ChallengeLevel::Always => ask("level always"),
        ChallengeLevel::Superuser => Decision::Allow(AllowReason::LevelSuperuser),
        ChallengeLevel::Adaptive => match adaptive_reason(config, record, request, now) {
            Some(reason) => ask(reason),
            None => Decision::Allow(AllowReason::TrustedSource),
        },
    }
}

/// Why the adaptive level asks for a code, or None for a trusted source.
fn adaptive_reason(config: &Config, record: &UserRecord, request: &LoginRequest, now: u64) -> Option<&'static str> {
    if config.always_challenge_services.contains(&request.service) {
        return Some("adaptive: service always challenged");
    }
    if record.failed_since_success {
        return Some("adaptive: failed code since last success");
    }
    if request.source.starts_with(HOST_NAME_SOURCE) {
        return Some("adaptive: a host name is never a trusted source");
    }
    if request.local_claim {
        return Some("adaptive: a non-root caller's source is never trusted");
    }
    if let Some(why) = request.never_trusted {
        return Some(why);
    }
    let within = |at: u64, window: u64| now.saturating_sub(at) < window;
    match record.last_success {
        Some(at) if within(at, config.max_trust.as_secs()) => {}
        _ => return Some("adaptive: no success within max_trust"),
    }
    let trusted = record
        .trusted_sources
        .iter()
        .any(|t| t.source == request.source && within(t.at, config.trust_window.as_secs()));
    if !trusted {
        return Some("adaptive: new or expired source");
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mfa_shared::config::{ConfigDuration, RoleConfig};
    use mfa_shared::protocol::{Algorithm, OtpType};

    use super::*;
    use crate::store::{Device, TrustedSource};

    const NOW: u64 = 1_700_000_000;
    const SOURCE: &str = "10.0.0.1";
    fn rule() -> BypassRule {
        BypassRule {
            network: mfa_shared::bypass::parse_network("10.0.0.0/8").unwrap(),
            bypass_2fa: true,
            expires_at: None,
            origin: mfa_shared::bypass::RuleOrigin::Config,
        }
    }
    const LOCKED_UNTIL: u64 = NOW + 600;

    fn config() -> Config {
        Config { enabled: true, ..Config::default() }
    }

    fn device() -> Device {
        Device {
            otp_type: OtpType::Totp,
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            sealed_secret: Vec::new(),
            next_counter: 0,
            last_step: None,
            created_at: 0,
        }
    }

    fn login(service: &str, source: &str) -> LoginRequest {
        LoginRequest {
            service: service.into(),
            person: "alice".into(),
            source: source.into(),
            elevation: false,
            local_claim: false,
            never_trusted: None,
        }
    }

    /// An enrolled adaptive user whose last code came from `SOURCE` a minute ago.
    fn trusted_record() -> UserRecord {
        UserRecord {
            device: Some(device()),
            level: Some(ChallengeLevel::Adaptive),
            last_success: Some(NOW - 60),
            trusted_sources: vec![TrustedSource { source: SOURCE.into(), at: NOW - 60 }],
            ..UserRecord::new("alice")
        }
    }

    // ---- the decision matrix ---------------------------------------------

    const LEVELS: [ChallengeLevel; 3] = [ChallengeLevel::Superuser, ChallengeLevel::Adaptive, ChallengeLevel::Always];
    const ROLES: [Option<RolePolicy>; 4] =
        [None, Some(RolePolicy::Encourage), Some(RolePolicy::Force), Some(RolePolicy::Require)];
    const BOOLS: [bool; 2] = [false, true];

    /// One cell of the matrix.
    #[derive(Debug, Clone, Copy)]
    struct Cell {
        level: ChallengeLevel,
        role: Option<RolePolicy>,
        enrolled: bool,
        elevation: bool,
        bypass: bool,
        locked: bool,
        /// Super-user approval of the device.
        approved: bool,
        /// The source had a code accepted within trust_window.
        trusted: bool,
    }

    impl Cell {
        fn record(&self) -> UserRecord {
            UserRecord {
                device: self.enrolled.then(device),
                level: Some(self.level),
                approved: self.approved,
                locked_until: self.locked.then_some(LOCKED_UNTIL),
                failures: if self.locked { 5 } else { 0 },
                last_success: Some(NOW - 60),
                trusted_sources: if self.trusted {
                    vec![TrustedSource { source: SOURCE.into(), at: NOW - 60 }]
                } else {
                    vec![TrustedSource { source: "10.9.9.9".into(), at: NOW - 60 }]
                },
                ..UserRecord::new("alice")
            }
        }

        fn request(&self) -> LoginRequest {
            let service = if self.elevation { "sudo" } else { "sshd" };
            LoginRequest { elevation: self.elevation, ..login(service, SOURCE) }
        }

        fn context(&self) -> Context {
            Context { role: self.role, bypass: self.bypass.then(rule) }
        }
    }

    /// The expected outcome of a row of the rule table.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        DenyLocked,
        DenyElevationNotEnrolled,
        DenyElevationNotApproved,
        AskElevation,
        AllowBypass,
        AllowNotEnrolled,
        Offer(RolePolicy, bool),
        AskRoleRequire,
        AskAlways,
        AllowSuperuser,
        AllowTrusted,
        AskAdaptive,
    }

    impl Expect {
        fn decision(self) -> Decision {
            let ask = |reason| Decision::AskCode { reason, recovery_allowed: true };
            match self {
                Expect::DenyLocked => Decision::Deny(DenyReason::Locked { until: LOCKED_UNTIL }),
                Expect::DenyElevationNotEnrolled => Decision::Deny(DenyReason::ElevationNotEnrolled),
                Expect::DenyElevationNotApproved => Decision::Deny(DenyReason::ElevationNotApproved),
                Expect::AskElevation => Decision::AskCode { reason: "elevation", recovery_allowed: false },
                Expect::AllowBypass => Decision::Allow(AllowReason::Bypass(rule())),
                Expect::AllowNotEnrolled => Decision::Allow(AllowReason::NotEnrolled),
                Expect::Offer(policy, mandatory) => Decision::OfferEnrollment { policy, mandatory },
                Expect::AskRoleRequire => ask("role policy require"),
                Expect::AskAlways => ask("level always"),
                Expect::AllowSuperuser => Decision::Allow(AllowReason::LevelSuperuser),
                Expect::AllowTrusted => Decision::Allow(AllowReason::TrustedSource),
                Expect::AskAdaptive => ask("adaptive: new or expired source"),
            }
        }
    }

    /// A row of the rule table: `None` columns match anything.
    struct Row {
        locked: Option<bool>,
        elevation: Option<bool>,
        enrolled: Option<bool>,
        approved: Option<bool>,
        bypass: Option<bool>,
        role: Option<Option<RolePolicy>>,
        level: Option<ChallengeLevel>,
        trusted: Option<bool>,
        expect: Expect,
    }

    const ANY: Row = Row {
        locked: None,
        elevation: None,
        enrolled: None,
        approved: None,
        bypass: None,
        role: None,
        level: None,
        trusted: None,
        expect: Expect::DenyLocked,
    };

    /// SPEC sections 5 to 8 written out as a table, in the spec's order:
    /// the first row that matches a cell gives its expected decision.
    const RULES: &[Row] = &[
        // 5.2: a locked account is refused, whatever else holds.
        Row { locked: Some(true), expect: Expect::DenyLocked, ..ANY },
        // 6: elevation needs enrollment, approval and a code; never bypassed,
        // never a recovery code, whatever the level or role.
        Row { elevation: Some(true), enrolled: Some(false), expect: Expect::DenyElevationNotEnrolled, ..ANY },
        Row { elevation: Some(true), approved: Some(false), expect: Expect::DenyElevationNotApproved, ..ANY },
        Row { elevation: Some(true), expect: Expect::AskElevation, ..ANY },
        // 5.3 / 8: IP bypass skips the code and any inline enrollment.
        Row { bypass: Some(true), expect: Expect::AllowBypass, ..ANY },
        // 5.4 / 7: not enrolled: the strictest role decides.
        Row { enrolled: Some(false), role: Some(None), expect: Expect::AllowNotEnrolled, ..ANY },
        Row {
            enrolled: Some(false),
            role: Some(Some(RolePolicy::Encourage)),
            expect: Expect::Offer(RolePolicy::Encourage, false),
            ..ANY
        },
        Row {
            enrolled: Some(false),
            role: Some(Some(RolePolicy::Force)),
            expect: Expect::Offer(RolePolicy::Force, true),
            ..ANY
        },
        Row {
            enrolled: Some(false),
            role: Some(Some(RolePolicy::Require)),
            expect: Expect::Offer(RolePolicy::Require, true),
            ..ANY
        },
        // 5.5: role require asks at every login, whatever the level.
        Row { role: Some(Some(RolePolicy::Require)), expect: Expect::AskRoleRequire, ..ANY },
        Row { level: Some(ChallengeLevel::Always), expect: Expect::AskAlways, ..ANY },
        // 5.7: superuser: codes only for elevation.
        Row { level: Some(ChallengeLevel::Superuser), expect: Expect::AllowSuperuser, ..ANY },
        // 5.6: adaptive: a trusted source skips the code.
        Row { level: Some(ChallengeLevel::Adaptive), trusted: Some(true), expect: Expect::AllowTrusted, ..ANY },
        Row { level: Some(ChallengeLevel::Adaptive), trusted: Some(false), expect: Expect::AskAdaptive, ..ANY },
    ];

    impl Row {
        fn matches(&self, c: &Cell) -> bool {
            self.locked.is_none_or(|v| v == c.locked)
                && self.elevation.is_none_or(|v| v == c.elevation)
                && self.enrolled.is_none_or(|v| v == c.enrolled)
                && self.approved.is_none_or(|v| v == c.approved)
                && self.bypass.is_none_or(|v| v == c.bypass)
                && self.role.is_none_or(|v| v == c.role)
                && self.level.is_none_or(|v| v == c.level)
                && self.trusted.is_none_or(|v| v == c.trusted)
        }
    }

    fn all_cells() -> Vec<Cell> {
        let mut cells = Vec::new();
        for level in LEVELS {
            for role in ROLES {
                for enrolled in BOOLS {
                    for elevation in BOOLS {
                        for bypass in BOOLS {
                            for locked in BOOLS {
                                for approved in BOOLS {
                                    for trusted in BOOLS {
                                        cells.push(Cell {
                                            level,
                                            role,
                                            enrolled,
                                            elevation,
                                            bypass,
                                            locked,
                                            approved,
                                            trusted,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        cells
    }

    #[test]
    fn every_cell_of_the_matrix_follows_the_rule_table() {
        let config = config();
        let cells = all_cells();
        assert_eq!(cells.len(), 3 * 4 * 2 * 2 * 2 * 2 * 2 * 2);
        let mut used = vec![0usize; RULES.len()];
        for cell in &cells {
            let row = RULES.iter().position(|r| r.matches(cell)).unwrap_or_else(|| panic!("no rule for {cell:?}"));
            used[row] += 1;
            let record = cell.record();
            let got = decide(&config, Some(&record), &cell.request(), &cell.context(), NOW);
            assert_eq!(got, RULES[row].expect.decision(), "cell {cell:?} (rule {row})");
        }
        // Every rule of the table decides some cell: none is dead.
        assert!(used.iter().all(|&n| n > 0), "rules never used: {used:?}");
    }

    #[test]
    fn no_record_is_not_enrolled() {
        let config = config();
        for elevation in BOOLS {
            for role in ROLES {
                for bypass in BOOLS {
                    let cell = Cell {
                        level: ChallengeLevel::Always,
                        role,
                        enrolled: false,
                        elevation,
                        bypass,
                        locked: false,
                        approved: false,
                        trusted: false,
                    };
                    let row = RULES.iter().position(|r| r.matches(&cell)).unwrap();
                    let got = decide(&config, None, &cell.request(), &cell.context(), NOW);
                    assert_eq!(got, RULES[row].expect.decision(), "{cell:?}");
                }
            }
        }
    }

    #[test]
    fn hand_picked_cells() {
        let config = config();
        let cell = |level, role, enrolled, elevation, bypass, locked, approved| Cell {
            level,
            role,
            enrolled,
            elevation,
            bypass,
            locked,
            approved,
            trusted: true,
        };
        let check = |c: Cell, want: Decision| {
            assert_eq!(decide(&config, Some(&c.record()), &c.request(), &c.context(), NOW), want, "{c:?}");
        };
        use ChallengeLevel::*;
        // A bypassed, approved superuser-level admin still gives a code for sudo.
        check(
            cell(Superuser, None, true, true, true, false, true),
            Decision::AskCode { reason: "elevation", recovery_allowed: false },
        );
        // A locked account is refused even from a bypassed address.
        check(
            cell(Always, None, true, false, true, true, true),
            Decision::Deny(DenyReason::Locked { until: LOCKED_UNTIL }),
        );
        // Bypass skips a mandatory enrollment.
        check(
            cell(Always, Some(RolePolicy::Force), false, false, true, false, false),
            Decision::Allow(AllowReason::Bypass(rule())),
        );
        // require beats a superuser level; force does not.
        check(
            cell(Superuser, Some(RolePolicy::Require), true, false, false, false, false),
            Decision::AskCode { reason: "role policy require", recovery_allowed: true },
        );
        check(
            cell(Superuser, Some(RolePolicy::Force), true, false, false, false, false),
            Decision::Allow(AllowReason::LevelSuperuser),
        );
        // An unenrolled encourage member gets a skippable offer, never at sudo.
        check(
            cell(Adaptive, Some(RolePolicy::Encourage), false, false, false, false, false),
            Decision::OfferEnrollment { policy: RolePolicy::Encourage, mandatory: false },
        );
        check(
            cell(Adaptive, Some(RolePolicy::Encourage), false, true, false, false, false),
            Decision::Deny(DenyReason::ElevationNotEnrolled),
        );
    }

    #[test]
    fn mfa_disabled_allows_every_cell() {
        let config = Config::default();
        assert!(!config.enabled);
        for cell in all_cells() {
            let got = decide(&config, Some(&cell.record()), &cell.request(), &cell.context(), NOW);
            assert_eq!(got, Decision::Allow(AllowReason::MfaDisabled), "{cell:?}");
        }
    }

    #[test]
    fn approval_is_not_needed_when_not_required() {
        let mut config = config();
        config.elevation.require_approval = false;
        let record = UserRecord { approved: false, ..trusted_record() };
        let request = LoginRequest { elevation: true, ..login("sudo", SOURCE) };
        assert_eq!(
            decide(&config, Some(&record), &request, &Context::default(), NOW),
            Decision::AskCode { reason: "elevation", recovery_allowed: false }
        );
    }

    #[test]
    fn a_lapsed_lock_no_longer_denies() {
        let config = config();
        let record = UserRecord { locked_until: Some(NOW), failures: 5, ..trusted_record() };
        assert_eq!(
            decide(&config, Some(&record), &login("sshd", SOURCE), &Context::default(), NOW),
            Decision::Allow(AllowReason::TrustedSource)
        );
        let record = UserRecord { locked_until: Some(NOW + 1), ..record };
        assert_eq!(
            decide(&config, Some(&record), &login("sshd", SOURCE), &Context::default(), NOW),
            Decision::Deny(DenyReason::Locked { until: NOW + 1 })
        );
    }

    #[test]
    fn the_default_level_applies_when_none_is_set() {
        let mut config = config();
        let record = UserRecord { level: None, ..trusted_record() };
        for (default, want) in [
            (ChallengeLevel::Always, Decision::AskCode { reason: "level always", recovery_allowed: true }),
            (ChallengeLevel::Superuser, Decision::Allow(AllowReason::LevelSuperuser)),
            (ChallengeLevel::Adaptive, Decision::Allow(AllowReason::TrustedSource)),
        ] {
            config.default_level = default;
            assert_eq!(decide(&config, Some(&record), &login("sshd", SOURCE), &Context::default(), NOW), want);
        }
    }

    // ---- adaptive ----------------------------------------------------------

    fn adaptive(config: &Config, record: &UserRecord, request: &LoginRequest) -> Decision {
        decide(config, Some(record), request, &Context::default(), NOW)
    }

    fn asks(reason: &'static str) -> Decision {
        Decision::AskCode { reason, recovery_allowed: true }
    }

    #[test]
    fn adaptive_first_code_ever_is_asked() {
        let record = UserRecord { last_success: None, trusted_sources: Vec::new(), ..trusted_record() };
        assert_eq!(adaptive(&config(), &record, &login("sshd", SOURCE)), asks("adaptive: no success within max_trust"));
    }

    #[test]
    fn adaptive_same_source_within_trust_window_is_trusted() {
        let config = config();
        let window = config.trust_window.as_secs();
        let at = |at| UserRecord {
            last_success: Some(at),
            trusted_sources: vec![TrustedSource { source: SOURCE.into(), at }],
            ..trusted_record()
        };
        let request = login("sshd", SOURCE);
        assert_eq!(adaptive(&config, &at(NOW - 60), &request), Decision::Allow(AllowReason::TrustedSource));
        assert_eq!(adaptive(&config, &at(NOW - window + 1), &request), Decision::Allow(AllowReason::TrustedSource));
        // At the end of the window the source is no longer trusted.
        assert_eq!(adaptive(&config, &at(NOW - window), &request), asks("adaptive: new or expired source"));
    }

    #[test]
    fn adaptive_other_source_is_asked() {
        let config = config();
        let record = trusted_record();
        assert_eq!(adaptive(&config, &record, &login("sshd", "10.0.0.2")), asks("adaptive: new or expired source"));
        // Local logins are told apart by terminal.
        let record = UserRecord {
            trusted_sources: vec![TrustedSource { source: "local:pts/1".into(), at: NOW - 60 }],
            ..record
        };
        assert_eq!(
            adaptive(&config, &record, &login("login", "local:pts/1")),
            Decision::Allow(AllowReason::TrustedSource)
        );
        assert_eq!(adaptive(&config, &record, &login("login", "local:pts/2")), asks("adaptive: new or expired source"));
    }

    #[test]
    fn adaptive_asks_after_a_failure() {
        let record = UserRecord { failed_since_success: true, failures: 1, ..trusted_record() };
        assert_eq!(
            adaptive(&config(), &record, &login("sshd", SOURCE)),
            asks("adaptive: failed code since last success")
        );
    }

    #[test]
    fn adaptive_always_challenge_services_are_asked() {
        let config = Config { always_challenge_services: vec!["vpn".into()], ..config() };
        let record = trusted_record();
        assert_eq!(adaptive(&config, &record, &login("vpn", SOURCE)), asks("adaptive: service always challenged"));
        assert_eq!(adaptive(&config, &record, &login("sshd", SOURCE)), Decision::Allow(AllowReason::TrustedSource));
    }

    #[test]
    fn adaptive_asks_when_the_last_success_is_older_than_max_trust() {
        // A trust window longer than max_trust: max_trust still bounds it.
        let config = Config {
            trust_window: ConfigDuration(Duration::from_secs(30 * 86400)),
            max_trust: ConfigDuration(Duration::from_secs(7 * 86400)),
            ..config()
        };
        let at = |at| UserRecord {
            last_success: Some(at),
            trusted_sources: vec![TrustedSource { source: SOURCE.into(), at }],
            ..trusted_record()
        };
        let request = login("sshd", SOURCE);
        assert_eq!(adaptive(&config, &at(NOW - 8 * 86400), &request), asks("adaptive: no success within max_trust"));
        assert_eq!(adaptive(&config, &at(NOW - 6 * 86400), &request), Decision::Allow(AllowReason::TrustedSource));
    }

    #[test]
    fn the_strictest_role_wins() {
        let config = Config {
            roles: vec![
                RoleConfig { group: "staff".into(), policy: RolePolicy::Encourage },
                RoleConfig { group: "wheel".into(), policy: RolePolicy::Require },
                RoleConfig { group: "ops".into(), policy: RolePolicy::Force },
            ],
            ..config()
        };
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(strictest_role(&config, &groups(&["users"])), None);
        assert_eq!(strictest_role(&config, &groups(&["staff"])), Some(RolePolicy::Encourage));
        assert_eq!(strictest_role(&config, &groups(&["staff", "ops"])), Some(RolePolicy::Force));
        assert_eq!(strictest_role(&config, &groups(&["ops", "wheel", "staff"])), Some(RolePolicy::Require));
    }

    #[test]
    fn a_non_root_callers_source_and_some_others_are_never_trusted() {
        for why in [NO_SOURCE, ONE_ANSWER] {
            let request = LoginRequest { never_trusted: Some(why), ..login("radiusd", SOURCE) };
            assert_eq!(request.trusted_source(), None);
            assert_eq!(adaptive(&config(), &trusted_record(), &request), asks(why));
        }
        let request = LoginRequest { local_claim: true, ..login("sshd", SOURCE) };
        assert_eq!(request.trusted_source(), None);
        assert_eq!(
            decide(&config(), Some(&trusted_record()), &request, &Context::default(), NOW),
            Decision::AskCode {
                reason: "adaptive: a non-root caller's source is never trusted",
                recovery_allowed: true
            }
        );
        assert_eq!(
            decide(&config(), Some(&trusted_record()), &login("sshd", SOURCE), &Context::default(), NOW),
            Decision::Allow(AllowReason::TrustedSource)
        );
    }
}
