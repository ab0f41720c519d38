//! Checking a code: the device's code (replay-safe), or at login a recovery
//! code; every check goes through [`crate::lockout`] (refused while locked,
//! wrong codes counted) and a success makes its source trusted.

use mfa_shared::config::Config;
use mfa_shared::otp::{self, OtpParams};
use mfa_shared::protocol::{Code, ErrorKind, OtpType};

use super::{Daemon, Peer, Refusal, Snapshot, refuse};
use crate::audit::{AuditOutcome, Entry, Severity};
use crate::lockout;
use crate::metrics::LoginCounter;
use crate::recovery;
use crate::store::{Device, TrustedSource, UserRecord};

/// Most recent sources remembered per user for the adaptive level.
const MAX_TRUSTED_SOURCES: usize = 32;

/// Whether a recovery code may stand in for a code, and how far it was
/// checked.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recovery<'a> {
    NotAllowed,
    /// Allowed; a wrong code ends the check with [`CodeCheck::TryRecovery`].
    Unchecked,
    /// Looked up outside the transaction: the stored hash it matches.
    Checked(Option<&'a str>),
}

/// What an answer that is not shaped like a code (nor, where one may
/// stand in, like a recovery code) comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A wrong code like any other: counted toward the lockout.
    Counted,
    /// [`CodeCheck::NotACode`]: refused, not counted. Only for the code
    /// prompt of a login: a client that answers every prompt with its
    /// password must not lock its user out. Code-shaped answers are
    /// counted whatever this says.
    NotACodeUncounted,
    /// The code at the end of a one-answer service's answer
    /// (`forward_pass`): every wrong answer counts, in the one-answer
    /// services' own count ([`lockout::Count::OneAnswer`]).
    OneAnswer,
}

impl Shape {
    fn count(self) -> lockout::Count {
        match self {
            Shape::OneAnswer => lockout::Count::OneAnswer,
            Shape::Counted | Shape::NotACodeUncounted => lockout::Count::Account,
        }
    }
}

/// The result of checking a code against a record (which the check updates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CodeCheck {
    Accepted,
    AcceptedRecovery {
        left: usize,
    },
    Wrong {
        message: String,
        locked: bool,
    },
    Locked {
        until: u64,
    },
    NotEnrolled,
    /// Elevation without super-user approval (checked with the code).
    NotApproved,
    /// Not shaped like a code of the device nor like a recovery code, at a
    /// prompt that counts such answers for nothing ([`Shape`]).
    NotACode,
    /// Not the device's code; look it up among these recovery code hashes
    /// (slow, so outside the transaction) and check again.
    TryRecovery {
        hashes: Vec<String>,
    },
}

impl Daemon {
    /// Check `code` against the enabled device, updating replay state,
    /// failure count, lock and trust in `record`.
    pub(super) fn check_code(
        &self,
        at: &Snapshot,
        record: &mut UserRecord,
        code: &Code,
        source: Option<&str>,
        recovery: Recovery<'_>,
        shape: Shape,
    ) -> CodeCheck {
        clamp_to_now(record, at, self.clock.now());
        recovery::upgrade(&mut record.recovery_hashes, self.vault.pepper());
        if let Err(until) = lockout::admit(record, shape.count(), at.now) {
            return CodeCheck::Locked { until };
        }
        let Some(device) = record.device.clone() else {
            return CodeCheck::NotEnrolled;
        };
        let typed = otp::normalize_code(code.expose(), device.digits);
        let may_be_recovery = !matches!(recovery, Recovery::NotAllowed)
            && !record.recovery_hashes.is_empty()
            && recovery::is_shaped(code.expose());
        if shape == Shape::NotACodeUncounted && typed.is_err() && !may_be_recovery {
            return CodeCheck::NotACode;
        }
        let otp_match =
            typed.as_ref().ok().and_then(|typed| self.match_device(&record.user, &device, typed, &at.config, at.now));
        let recovery_left = match (otp_match, recovery) {
            (Some(advanced), _) => {
                record.device = Some(advanced);
                None
            }
            // Not shaped like a code of the device: it may be a recovery code
            // (ours are 10 letters and digits, imported scratch codes 8
            // digits), looked up outside the lock. A wrong code of the
            // device's shape costs no lookup.
            (None, Recovery::Unchecked) if !record.recovery_hashes.is_empty() && typed.is_err() => {
                return CodeCheck::TryRecovery { hashes: record.recovery_hashes.clone() };
            }
            (None, Recovery::Checked(Some(matched))) => match recovery::remove(&mut record.recovery_hashes, matched) {
                Some(left) => Some(left),
                None => return wrong_code(at, record, shape, typed.err(), recovery),
            },
            (None, _) => return wrong_code(at, record, shape, typed.err(), recovery),
        };
        record_success(record, source, at.now);
        match recovery_left {
            Some(left) => CodeCheck::AcceptedRecovery { left },
            None => CodeCheck::Accepted,
        }
    }

    /// Verify a well-formed code against a device; on success, the device
    /// with its replay state advanced.
    pub(super) fn match_device(
        &self,
        user: &str,
        device: &Device,
        typed: &str,
        config: &Config,
        now: u64,
    ) -> Option<Device> {
        let secret = match self.vault.open(user, &device.sealed_secret) {
            Ok(secret) => secret,
            Err(err) => {
                self.audit.event(Severity::Warning, &format!("user {user}: {err}"));
                return None;
            }
        };
        let params = device_params(device);
        let mut next = device.clone();
        match device.otp_type {
            OtpType::Totp => {
                let step = otp::verify_totp(&secret, &params, typed, now, config.totp_skew, device.last_step)?;
                next.last_step = Some(step);
            }
            OtpType::Hotp => {
                let counter = otp::verify_hotp(&secret, &params, typed, device.next_counter, config.hotp_window)?;
                next.next_counter = counter.saturating_add(1);
            }
        }
        Some(next)
    }

    /// Check a code outside a login (disable, authorize, ...): the same
    /// replay, failure and lock rules; returns a refusal when not accepted.
    /// `on_success` changes the record in the same transaction as the check,
    /// so nothing (a device change, say) can slip in between.
    pub(super) fn prove_code(
        &self,
        at: &Snapshot,
        peer: &Peer,
        user: &str,
        code: &Code,
        what: &str,
        mut on_success: impl FnMut(&mut UserRecord) + Send,
    ) -> Result<(), Refusal> {
        let check = self.with_record(user, |record| {
            let check = self.check_code(at, record, code, None, Recovery::NotAllowed, Shape::Counted);
            if check == CodeCheck::Accepted {
                on_success(record);
            }
            (check != CodeCheck::NotEnrolled, check)
        })?;
        if matches!(check, CodeCheck::Wrong { locked: true, .. }) {
            // mfad's own name for these checks, not a caller's claim.
            self.metrics.count_service("mfactl", 0, LoginCounter::Lockout);
        }
        let (outcome, result) = proof_outcome(user, check);
        let peer_uid = Some(peer.uid);
        self.audit.decision(&Entry {
            user,
            given: None,
            peer_uid,
            service: "mfactl",
            rhost: None,
            outcome,
            reason: what,
        });
        result
    }
}

/// A wrong code: counted toward the lockout; the message says why it was
/// not taken when that helps (a malformed code where no recovery code could
/// be meant).
fn wrong_code(
    at: &Snapshot,
    record: &mut UserRecord,
    shape: Shape,
    malformed: Option<otp::OtpError>,
    recovery: Recovery<'_>,
) -> CodeCheck {
    let locked = lockout::count_failure(record, shape.count(), &at.config.lockout, at.now);
    let message = match malformed {
        Some(err) if matches!(recovery, Recovery::NotAllowed) => format!("Invalid code: {err}."),
        _ => "Wrong code.".to_string(),
    };
    CodeCheck::Wrong { message, locked }
}

/// The audit outcome and the reply of a code check made outside a login.
fn proof_outcome(user: &str, check: CodeCheck) -> (AuditOutcome, Result<(), Refusal>) {
    match check {
        CodeCheck::Accepted | CodeCheck::AcceptedRecovery { .. } => (AuditOutcome::Success, Ok(())),
        CodeCheck::NotEnrolled => {
            (AuditOutcome::Failure, Err(refuse(ErrorKind::Conflict, format!("{user} has no enabled device"))))
        }
        // Not asked for: recovery codes are for logins only, and every
        // answer outside a login counts.
        CodeCheck::TryRecovery { .. } | CodeCheck::NotACode => {
            (AuditOutcome::Failure, Err(refuse(ErrorKind::Internal, "unexpected code check result")))
        }
        CodeCheck::NotApproved => {
            (AuditOutcome::Denied, Err(refuse(ErrorKind::PermissionDenied, "super-user approval is not granted")))
        }
        CodeCheck::Locked { until } => (
            AuditOutcome::Locked,
            Err(refuse(
                ErrorKind::InvalidCode,
                format!("{user} is locked until {} UTC after too many wrong codes", crate::timefmt::utc(until)),
            )),
        ),
        CodeCheck::Wrong { message, locked } => (
            if locked { AuditOutcome::Locked } else { AuditOutcome::Failure },
            Err(refuse(ErrorKind::InvalidCode, format!("{message} (wrong, reused or expired code)"))),
        ),
    }
}

/// Times in a record that lie beyond what `now` allows were written while
/// the clock ran ahead: bring them back, so that a clock that jumped and
/// was corrected cannot leave a source trusted, an account locked or every
/// code refused as a replay until real time catches up.
/// True when something was brought back (the record must be written, so
/// that the correction holds).
///
/// `now` is read when the record is in hand, not when the request arrived:
/// another login may have accepted a later step meanwhile, and that must
/// never be undone (it would reopen the code it accepted).
pub(super) fn clamp_to_now(record: &mut UserRecord, at: &Snapshot, now: u64) -> bool {
    let now = now.max(at.now);
    let longest_lock = now.saturating_add(at.config.lockout.duration.as_secs());
    let mut changed = false;
    for trusted in &mut record.trusted_sources {
        changed |= lower_to(&mut trusted.at, now);
    }
    for (time, limit) in [
        (&mut record.last_success, now),
        (&mut record.locked_until, longest_lock),
        (&mut record.one_answer_locked_until, longest_lock),
    ] {
        if let Some(time) = time {
            changed |= lower_to(time, limit);
        }
    }
    for device in record.device.iter_mut().chain(record.pending.iter_mut()) {
        changed |= lower_to(&mut device.created_at, now);
        if device.otp_type == OtpType::Totp
            && let Some(step) = &mut device.last_step
        {
            // Steps up to the end of the current window stay refused (a code
            // of those may have been accepted just before the jump).
            let newest = otp::totp_step(now, device.period).saturating_add(u64::from(at.config.totp_skew));
            changed |= lower_to(step, newest);
        }
    }
    changed
}

/// Bring `time` down to `limit`; whether it was above.
fn lower_to(time: &mut u64, limit: u64) -> bool {
    let above = *time > limit;
    *time = (*time).min(limit);
    above
}

/// A code was accepted: reset the failure count and remember when and from
/// where (the source is trusted by the adaptive level from now on).
pub(super) fn record_success(record: &mut UserRecord, source: Option<&str>, now: u64) {
    lockout::reset(record);
    record.failed_since_success = false;
    record.last_success = Some(now);
    if let Some(source) = source {
        record.last_source = Some(source.to_string());
        record.trusted_sources.retain(|t| t.source != source);
        record.trusted_sources.insert(0, TrustedSource { source: source.to_string(), at: now });
        record.trusted_sources.truncate(MAX_TRUSTED_SOURCES);
    }
}

pub(super) fn device_params(device: &Device) -> OtpParams {
    OtpParams { otp_type: device.otp_type, algorithm: device.algorithm, digits: device.digits, period: device.period }
}
