//! Whether a login needs a code: a pure function of (config, user record,
//! request, context, now). SPEC sections 5 (login), 6 (elevation), 7 (roles)
//! and 8 (bypass), in that order of precedence.

use mfa_shared::config::{Config, RolePolicy};
use mfa_shared::protocol::ChallengeLevel;

use crate::store::UserRecord;

/// The login being decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub service: String,
    /// The account whose code is asked: PAM_RUSER for elevation when set,
    /// else PAM_USER.
    pub person: String,
    /// `rhost`, or `local:TTY` for a local login.
    pub source: String,
    pub elevation: bool,
}

/// Facts looked up outside the store for this decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// Strictest role policy of the person's groups.
    pub role: Option<RolePolicy>,
    /// The bypass rule matching the remote host (global switch on, rule in
    /// force), described for the audit line.
    pub bypass: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No code needed; the reason goes to the audit line.
    Allow(AllowReason),
    /// Ask for a code (`reason` for the audit line).
    AskCode { reason: &'static str, recovery_allowed: bool },
    /// Offer inline set-up; `mandatory` for force/require.
    OfferEnrollment { policy: RolePolicy, mandatory: bool },
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowReason {
    MfaDisabled,
    Bypass(String),
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
            DenyReason::Locked { until } => format!(
                "Too many wrong codes: two-factor authentication is locked until {} UTC (an administrator can unlock it).",
                crate::timefmt::utc(*until)
            ),
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
    if let Some(until) = record.and_then(|r| r.locked_until).filter(|&until| until > now) {
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
    if let Some(rule) = &context.bypass {
        return Decision::Allow(AllowReason::Bypass(rule.clone()));
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
