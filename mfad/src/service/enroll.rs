//! Setting up a device (SPEC 4): `mfactl setup` and `setup --confirm`, and
//! the same flow inline in a login conversation (SPEC 7). A set-up creates a
//! pending device that never replaces an enabled one until a code from it
//! completes the set-up. The words shown are in [`crate::enrollment`].

use mfa_shared::otp::{self, OtpParams};
use mfa_shared::protocol::{ChallengeLevel, Code, ErrorKind, Message, OtpType, Outcome, Response, SetupInfo};

use super::login::{Offer, Session, Stage};
use super::verify::record_success;
use super::{Daemon, Peer, Refusal, Reply, Snapshot, decision_response, no_random_bytes, refuse};
use crate::audit::{AuditOutcome, Entry};
use crate::enrollment::{
    TYPE_HINT, YES_NO_HINT, format_barcode, format_manual_entry, format_recovery_codes, time_or_counter, yes_no,
};
use crate::recovery;
use crate::store::Device;

impl Daemon {
    pub(super) fn setup_begin(
        &self,
        at: &Snapshot,
        peer: &Peer,
        user: Option<String>,
        otp_type: Option<OtpType>,
        level: Option<ChallengeLevel>,
        current_code: Option<Code>,
    ) -> Reply {
        let user = self.target(at, peer, user)?;
        let enrolled = self.get_record(&user)?.is_some_and(|r| r.is_enrolled());
        // Replacing a device needs the current one (or an administrator).
        match current_code {
            Some(code) if enrolled => {
                self.prove_code(at, &user, &code, "device change proven with current code", |_| {})?
            }
            _ if enrolled && !self.is_admin(at, peer) => {
                return Err(refuse(
                    ErrorKind::PermissionDenied,
                    "a device is already enabled: give a code from it with --code to set up a new one",
                ));
            }
            _ => {}
        }
        let otp_type = otp_type.unwrap_or(at.config.default_type);
        let setup = self.start_setup(at, &user, otp_type, level)?;
        self.audit.decision(&Entry {
            user: &user,
            service: "mfactl",
            rhost: None,
            outcome: AuditOutcome::Pending,
            reason: &format!("set-up started ({otp_type})"),
        });
        Ok(Response::SetupStarted { setup })
    }

    /// Create a pending device for `user` (an enabled one stays until the
    /// set-up completes) and return what the person needs to add it to an
    /// app. Shared by `mfactl setup` and inline enrollment at login.
    fn start_setup(
        &self,
        at: &Snapshot,
        user: &str,
        otp_type: OtpType,
        level: Option<ChallengeLevel>,
    ) -> Result<SetupInfo, Refusal> {
        let config = &at.config;
        let params = OtpParams { otp_type, algorithm: config.algorithm, digits: config.digits, period: config.period };
        let secret = zeroize::Zeroizing::new(otp::generate_secret().map_err(no_random_bytes)?);
        let sealed = self
            .vault
            .seal(user, &secret)
            .map_err(|e| refuse(ErrorKind::Internal, format!("cannot seal the secret: {e}")))?;
        let device = Device {
            otp_type,
            algorithm: params.algorithm,
            digits: params.digits,
            period: params.period,
            sealed_secret: sealed,
            next_counter: 0,
            last_step: None,
            created_at: at.now,
        };
        self.with_record(user, |record| {
            record.pending = Some(device.clone());
            record.pending_level = level;
            (true, ())
        })?;
        let secret_b32 = otp::base32_encode(&secret);
        let issuer = config.issuer_or(&self.host_name);
        let account = format!("{user}@{}", self.host_name);
        let uri = otp::otpauth_uri(&issuer, &account, &secret_b32, &params, 0);
        Ok(SetupInfo {
            user: user.to_string(),
            uri,
            secret: secret_b32,
            otp_type,
            algorithm: params.algorithm,
            digits: params.digits,
            period: params.period,
            counter: 0,
        })
    }

    pub(super) fn setup_confirm(&self, at: &Snapshot, peer: &Peer, user: Option<String>, code: &Code) -> Reply {
        let user = self.target(at, peer, user)?;
        let recovery_codes = self.complete_setup(at, &user, code, None)?;
        self.audit.decision(&Entry {
            user: &user,
            service: "mfactl",
            rhost: None,
            outcome: AuditOutcome::Enrolled,
            reason: "set-up completed",
        });
        Ok(Response::SetupCompleted { recovery_codes })
    }

    /// Complete `user`'s pending set-up with a code from the new device: it
    /// becomes the enabled device (dropping super-user approval) and fresh
    /// recovery codes are issued, returned to be shown once. A wrong code
    /// (`ErrorKind::InvalidCode`) leaves the set-up pending. `source` is
    /// where the code came from at a login, trusted from now on.
    fn complete_setup(
        &self,
        at: &Snapshot,
        user: &str,
        code: &Code,
        source: Option<&str>,
    ) -> Result<Vec<Code>, Refusal> {
        let (codes, hashes) = recovery::generate().map_err(no_random_bytes)?;
        let result = self.with_record(user, |record| {
            let Some(pending) = record.pending.clone() else {
                return (
                    false,
                    Err(refuse(ErrorKind::Conflict, "no set-up is pending: start one with `mfactl setup`")),
                );
            };
            let typed = match otp::normalize_code(code.expose(), pending.digits) {
                Ok(typed) => typed,
                Err(err) => {
                    return (false, Err(refuse(ErrorKind::InvalidCode, format!("{err}; the set-up is still pending"))));
                }
            };
            let Some(device) = self.match_device(user, &pending, &typed, &at.config, at.now) else {
                return (false, Err(refuse(ErrorKind::InvalidCode, "wrong code; the set-up is still pending")));
            };
            record.device = Some(device);
            record.pending = None;
            if let Some(level) = record.pending_level.take() {
                record.level = Some(level);
            }
            // A new device is not the one an administrator approved.
            record.approved = false;
            record.recovery_hashes = hashes.clone();
            record.locked_until = None;
            record_success(record, source, at.now);
            (true, Ok(()))
        })?;
        result.map(|()| codes)
    }

    // ---- inline, in a login conversation ----------------------------------

    /// Offer set-up at login: the first question, after a word on why.
    pub(super) fn offer_enrollment(&self, at: &Snapshot, session: Session, offer: Offer) -> Reply {
        let policy = offer.policy.as_str();
        self.log_session(
            &session,
            AuditOutcome::EnrollmentOffered,
            &format!("enrollment offered (role policy {policy})"),
        );
        let intro = if offer.mandatory {
            format!("Your account must use two-factor authentication (role policy {policy}): set it up now to log in.")
        } else {
            "Two-factor authentication is recommended for your account: you can set it up now. \
             Press Enter at the first question to skip it this time."
                .to_string()
        };
        self.ask(at, session, Stage::AskBarcode(offer), vec![Message::info(intro)])
    }

    /// An answer to a set-up question that was not understood: ask again,
    /// up to `max_tries` times; then a skippable offer lets the login go on
    /// and a mandatory one refuses it.
    fn reask(&self, at: &Snapshot, mut session: Session, offer: Offer, hint: &str) -> Reply {
        session.tries += 1;
        if session.tries < at.config.max_tries {
            let stage = session.stage;
            return self.ask(at, session, stage, vec![Message::error(hint)]);
        }
        if offer.mandatory {
            self.log_session(&session, AuditOutcome::Denied, "enrollment not completed: no usable answer");
            Ok(decision_response(
                Outcome::Denied,
                vec![Message::error("Two-factor authentication must be set up before you can log in.")],
            ))
        } else {
            self.log_session(&session, AuditOutcome::NotRequired, "enrollment skipped: no usable answer");
            Ok(decision_response(Outcome::NotRequired, Vec::new()))
        }
    }

    pub(super) fn answer_barcode(&self, at: &Snapshot, session: Session, offer: Offer, answer: &str) -> Reply {
        let answer = answer.trim();
        if answer.is_empty() && !offer.mandatory {
            self.log_session(&session, AuditOutcome::NotRequired, "enrollment skipped");
            return Ok(decision_response(
                Outcome::NotRequired,
                vec![Message::info("Set-up skipped; it will be offered again at your next login.")],
            ));
        }
        match yes_no(answer) {
            Some(barcode) => self.ask(at, session, Stage::AskType { offer, barcode }, Vec::new()),
            None if answer.is_empty() => {
                self.reask(at, session, offer, "Set-up is required to log in. Please answer y or n.")
            }
            None => self.reask(at, session, offer, YES_NO_HINT),
        }
    }

    pub(super) fn answer_type(
        &self,
        at: &Snapshot,
        session: Session,
        offer: Offer,
        barcode: bool,
        answer: &str,
    ) -> Reply {
        let Some(otp_type) = time_or_counter(answer) else {
            return self.reask(at, session, offer, TYPE_HINT);
        };
        let info = self.start_setup(at, &session.login.person, otp_type, None)?;
        self.log_session(&session, AuditOutcome::Pending, &format!("inline set-up started ({otp_type})"));
        let shown = if barcode { format_barcode(&info) } else { format_manual_entry(&info) };
        self.ask(at, session, Stage::ConfirmSetup(offer), vec![Message::essential(shown)])
    }

    pub(super) fn answer_setup_code(&self, at: &Snapshot, mut session: Session, offer: Offer, answer: &Code) -> Reply {
        let person = session.login.person.clone();
        match self.complete_setup(at, &person, answer, Some(&session.login.source)) {
            Ok(codes) => {
                let reason = format!("enrollment completed (role policy {})", offer.policy.as_str());
                self.log_session(&session, AuditOutcome::Success, &reason);
                let text = format!("Two-factor authentication is enabled.{}", format_recovery_codes(&codes));
                Ok(decision_response(Outcome::Verified, vec![Message::essential(text)]))
            }
            Err(refusal) if refusal.kind == ErrorKind::InvalidCode => {
                session.tries += 1;
                if session.tries < at.config.max_tries {
                    self.log_session(&session, AuditOutcome::Failure, "enrollment code wrong");
                    let stage = session.stage;
                    let again = Message::error(format!("{}. Try again.", refusal.message));
                    return self.ask(at, session, stage, vec![again]);
                }
                self.log_session(
                    &session,
                    AuditOutcome::Failure,
                    "enrollment failed: too many wrong codes; set-up stays pending",
                );
                Ok(decision_response(
                    Outcome::Failed,
                    vec![Message::error(format!(
                        "{}. Set-up not completed: it will be offered again at your next login.",
                        refusal.message
                    ))],
                ))
            }
            Err(refusal) => {
                self.log_session(&session, AuditOutcome::Denied, &format!("enrollment failed: {}", refusal.message));
                Ok(decision_response(Outcome::Denied, vec![Message::error(refusal.message)]))
            }
        }
    }
}
