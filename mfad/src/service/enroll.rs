//! Setting up a device (SPEC 4): `mfactl setup` and `setup --confirm`, and
//! the same flow inline in a login conversation (SPEC 7). A set-up creates a
//! pending device that never replaces an enabled one until a code from it
//! completes the set-up. The words shown are in [`crate::enrollment`].

use mfa_shared::otp::{self, OtpParams};
use mfa_shared::protocol::{ChallengeLevel, Code, ErrorKind, Message, OtpType, Outcome, Response, SetupInfo};

use super::login::{Offer, Session, Stage};
use super::verify::{clamp_to_now, record_success};
use super::{Daemon, Peer, Refusal, Reply, Snapshot, decision_response, no_random_bytes, refuse};
use crate::audit::{AuditOutcome, Entry};
use crate::enrollment::{
    QrStyle, TYPE_HINT, YES_NO_HINT, format_barcode, format_manual_entry, format_recovery_codes, time_or_counter,
    yes_no,
};
use crate::recovery;
use crate::store::{Device, UserRecord};
use crate::{lockout, timefmt};

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
                self.prove_code(at, peer, &user, &code, "device change proven with current code", |_| {})?
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
            given: None,
            peer_uid: Some(peer.uid),
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
        let sealed = self.seal(&self.sealing_key()?, user, &secret)?;
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
        let (outcome, result) = self.complete_setup(at, &user, code, None, SetupRoute::Mfactl);
        let reason = match &result {
            Ok(_) => "set-up completed".to_string(),
            Err(refusal) => format!("set-up not completed: {}", refusal.message),
        };
        self.audit.decision(&Entry {
            user: &user,
            given: None,
            peer_uid: Some(peer.uid),
            service: "mfactl",
            rhost: None,
            outcome,
            reason: &reason,
        });
        Ok(Response::SetupCompleted { recovery_codes: result? })
    }

    /// Complete `user`'s pending set-up with a code from the new device: it
    /// becomes the enabled device (dropping super-user approval) and fresh
    /// recovery codes are issued, returned to be shown once. The code check
    /// counts like any other: refused while locked, a wrong code counted
    /// toward the lockout (`ErrorKind::InvalidCode`, the set-up stays
    /// pending). `source` is where the code came from at a login, trusted
    /// from now on. Returns the audit outcome with the result.
    fn complete_setup(
        &self,
        at: &Snapshot,
        user: &str,
        code: &Code,
        source: Option<&str>,
        route: SetupRoute,
    ) -> (AuditOutcome, Result<Vec<Code>, Refusal>) {
        let (codes, hashes) = match recovery::generate(self.vault.pepper()) {
            Ok(generated) => generated,
            Err(err) => return (AuditOutcome::Denied, Err(no_random_bytes(err))),
        };
        let checked = self.with_record(user, |record| {
            clamp_to_now(record, at, self.clock.now());
            let Some(pending) = take_live_pending(record, at) else {
                let expired = record.pending.take().is_some();
                if expired {
                    record.pending_level = None;
                }
                let why = if expired { "the set-up has expired" } else { "no set-up is pending" };
                let refusal = refuse(ErrorKind::Conflict, format!("{why}: start one with `mfactl setup`"));
                return (expired, (AuditOutcome::Denied, Err(refusal)));
            };
            // An inline set-up is for an account without a device: one
            // enrolled meanwhile (another login, an administrator) wins.
            if route == SetupRoute::Inline && record.device.is_some() {
                let refusal = refuse(ErrorKind::Conflict, "a device was set up meanwhile: log in with its code");
                return (false, (AuditOutcome::Denied, Err(refusal)));
            }
            if let Err(until) = lockout::admit(record, lockout::Count::Account, at.now) {
                let message = format!("{user} is locked until {} UTC after too many wrong codes", timefmt::utc(until));
                return (true, (AuditOutcome::Locked, Err(refuse(ErrorKind::InvalidCode, message))));
            }
            let typed = otp::normalize_code(code.expose(), pending.digits);
            let device = typed.as_ref().ok().and_then(|t| self.match_device(user, &pending, t, &at.config, at.now));
            let Some(device) = device else {
                let locked = lockout::count_failure(record, lockout::Count::Account, &at.config.lockout, at.now);
                let message = match typed {
                    Err(err) => format!("{err}; the set-up is still pending"),
                    Ok(_) => "wrong code; the set-up is still pending".to_string(),
                };
                let outcome = if locked { AuditOutcome::Locked } else { AuditOutcome::Failure };
                return (true, (outcome, Err(refuse(ErrorKind::InvalidCode, message))));
            };
            record.device = Some(device);
            record.pending = None;
            if let Some(level) = record.pending_level.take() {
                record.level = Some(level);
            }
            // A new device is not the one an administrator approved.
            record.approved = false;
            record.recovery_hashes = hashes.clone();
            record_success(record, source, at.now);
            (true, (AuditOutcome::Enrolled, Ok(())))
        });
        match checked {
            Ok((outcome, result)) => (outcome, result.map(|()| codes)),
            Err(refusal) => (AuditOutcome::Denied, Err(refusal)),
        }
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
            self.skip_enrollment(&session, "enrollment skipped: no usable answer", Vec::new())
        }
    }

    /// Let the login go on without a set-up (an `encourage` offer), unless a
    /// device was enrolled while the offer was open: then its code is needed.
    fn skip_enrollment(&self, session: &Session, reason: &str, said: Vec<Message>) -> Reply {
        if self.get_record(&session.login.person)?.is_some_and(|r| r.is_enrolled()) {
            self.log_session(session, AuditOutcome::Denied, "enrollment offer outlived: a device was set up meanwhile");
            let message = "A device was set up meanwhile: log in again and give its code.";
            return Ok(decision_response(Outcome::Denied, vec![Message::error(message)]));
        }
        self.log_session(session, AuditOutcome::NotRequired, reason);
        Ok(decision_response(Outcome::NotRequired, said))
    }

    pub(super) fn answer_barcode(&self, at: &Snapshot, session: Session, offer: Offer, answer: &str) -> Reply {
        let answer = answer.trim();
        if answer.is_empty() && !offer.mandatory {
            let said = vec![Message::info("Set-up skipped; it will be offered again at your next login.")];
            return self.skip_enrollment(&session, "enrollment skipped", said);
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
        let style = QrStyle::Plain(at.config.qr_background.into());
        let shown = if barcode { format_barcode(&info, style) } else { format_manual_entry(&info) };
        self.ask(at, session, Stage::ConfirmSetup(offer), vec![Message::essential(shown)])
    }

    pub(super) fn answer_setup_code(&self, at: &Snapshot, mut session: Session, offer: Offer, answer: &Code) -> Reply {
        let person = session.login.person.clone();
        let source = session.login.trusted_source().map(str::to_string);
        let (outcome, result) = self.complete_setup(at, &person, answer, source.as_deref(), SetupRoute::Inline);
        match result {
            Ok(codes) => {
                let reason = format!("enrollment completed (role policy {})", offer.policy.as_str());
                self.log_session(&session, AuditOutcome::Success, &reason);
                let text = format!("Two-factor authentication is enabled.{}", format_recovery_codes(&codes));
                Ok(decision_response(Outcome::Verified, vec![Message::essential(text)]))
            }
            Err(refusal) if outcome == AuditOutcome::Failure => {
                session.tries += 1;
                if session.tries < at.config.max_tries {
                    self.log_session(&session, outcome, "enrollment code wrong");
                    let stage = session.stage;
                    let again = Message::error(format!("{}. Try again.", refusal.message));
                    return self.ask(at, session, stage, vec![again]);
                }
                let reason = "enrollment failed: too many wrong codes; set-up stays pending";
                self.log_session(&session, outcome, reason);
                Ok(decision_response(
                    Outcome::Failed,
                    vec![Message::error(format!(
                        "{}. Set-up not completed: it will be offered again at your next login.",
                        refusal.message
                    ))],
                ))
            }
            Err(refusal) => {
                self.log_session(&session, outcome, &format!("enrollment failed: {}", refusal.message));
                let decided = if outcome == AuditOutcome::Locked { Outcome::Failed } else { Outcome::Denied };
                Ok(decision_response(decided, vec![Message::error(refusal.message)]))
            }
        }
    }
}

/// Who completes a set-up: mfactl (which may replace an enabled device,
/// once proven with its code) or a login conversation (only for an account
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetupRoute {
    Mfactl,
    Inline,
}

/// The pending device, if its set-up has not lapsed (`setup_timeout`).
fn take_live_pending(record: &UserRecord, at: &Snapshot) -> Option<Device> {
    let pending = record.pending.as_ref()?;
    let lapses = pending.created_at.saturating_add(at.config.setup_timeout.as_secs());
    (at.now < lapses).then(|| pending.clone())
}
