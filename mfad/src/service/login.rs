//! The login conversation a PAM module runs with mfad: begin with the PAM
//! items, answered by a prompt or a decision; each answer moves a session
//! through its stages (a code, or the questions of an inline set-up).

use std::net::IpAddr;

use mfa_shared::config::{Cidr, Config, normalize};
use mfa_shared::protocol::{AuthStep, Code, ErrorKind, Message, Outcome, Response};

use super::*;
use crate::policy::HOST_NAME_SOURCE;

/// Login conversations waiting for an answer, at most.
const MAX_SESSIONS: usize = 10_000;
/// Open conversations one non-root caller (a screen locker) may have.
const SESSIONS_PER_USER: usize = 16;

impl Daemon {
    pub(super) fn auth_begin(
        &self,
        peer: &Peer,
        service: String,
        user: String,
        ruser: Option<String>,
        rhost: Option<String>,
        tty: Option<String>,
    ) -> Reply {
        // A PAM stack runs as root; a user's own process (a screen locker)
        // may only ask about that user, as PAM_USER and as PAM_RUSER (else
        // it could spend another person's tries and lock them out).
        let own = peer.name.as_deref();
        let not_own = |name: &str| own != Some(name);
        if peer.uid != 0 && (not_own(&user) || ruser.as_deref().is_some_and(|r| !r.is_empty() && not_own(r))) {
            return Err(refuse(ErrorKind::PermissionDenied, "permission denied: not your account"));
        }
        let config = self.config();
        if !config.enabled {
            // A no-op until switched on: not even the names are judged.
            self.audit.decision(&Entry {
                user: &user,
                service: &service,
                rhost: rhost.as_deref(),
                outcome: "not_required",
                reason: "mfa disabled",
            });
            return Ok(decision_response(Outcome::NotRequired, Vec::new()));
        }
        valid_user_name(&user)?;
        let now = self.clock.now();
        let elevation = config.is_elevation(&service);
        let ruser = ruser.filter(|r| !r.is_empty());
        let rhost = rhost.filter(|r| !r.is_empty());
        let person = match (&ruser, elevation) {
            (Some(ruser), true) => ruser.clone(),
            _ => user.clone(),
        };
        valid_user_name(&person)?;
        let source = match &rhost {
            Some(rhost) => match rhost.parse::<IpAddr>() {
                Ok(addr) => normalize(addr).to_string(),
                // A name from reverse DNS is never trusted (see policy).
                Err(_) => format!("{HOST_NAME_SOURCE}{rhost}"),
            },
            None => format!("local:{}", tty.as_deref().unwrap_or("")),
        };
        let login = LoginRequest { service, person, source, elevation };
        let record = self.get_record(&login.person)?;
        let role = match self.role_of(&config, &login.person) {
            Ok(role) => role,
            Err(err) => {
                // Fail closed: a role we cannot read may be one that requires a code.
                self.audit.decision(&Entry {
                    user: &login.person,
                    service: &login.service,
                    rhost: rhost.as_deref(),
                    outcome: "denied",
                    reason: &format!("group membership unavailable: {err}"),
                });
                return Ok(decision_response(
                    Outcome::Denied,
                    vec![Message::error(
                        "Two-factor authentication cannot read your group membership; try again later.",
                    )],
                ));
            }
        };
        let context = Context { role, bypass: self.bypass_rule(&config, rhost.as_deref(), now)? };
        let decision = policy::decide(&config, record.as_ref(), &login, &context, now);
        let session = Session {
            peer_uid: peer.uid,
            user,
            login,
            rhost,
            stage: Stage::Code { recovery_allowed: false },
            tries: 0,
            expires_at: 0,
        };
        match decision {
            Decision::Allow(reason) => {
                self.log_session(&session, "not_required", &reason.describe());
                Ok(decision_response(Outcome::NotRequired, Vec::new()))
            }
            Decision::Deny(reason) => {
                self.log_session(&session, "denied", reason.describe());
                Ok(decision_response(Outcome::Denied, vec![Message::error(reason.message())]))
            }
            Decision::OfferEnrollment { policy, mandatory } => {
                let offer = Offer { policy, mandatory };
                self.log_session(&session, "enroll", &format!("enrollment offered (role policy {})", policy.as_str()));
                let intro = if mandatory {
                    format!(
                        "Your account must use two-factor authentication (role policy {}): set it up now to log in.",
                        policy.as_str()
                    )
                } else {
                    "Two-factor authentication is recommended for your account: you can set it up now. \
                     Press Enter at the first question to skip it this time."
                        .to_string()
                };
                self.ask(session, Stage::AskBarcode(offer), vec![Message::info(intro)], now)
            }
            Decision::AskCode { reason, recovery_allowed } => {
                self.log_session(&session, "challenge", reason);
                self.ask(session, Stage::Code { recovery_allowed }, Vec::new(), now)
            }
        }
    }

    /// One decision of a login conversation for the audit trail.
    fn log_session(&self, session: &Session, outcome: &str, reason: &str) {
        self.audit.decision(&Entry {
            user: &session.login.person,
            service: &session.login.service,
            rhost: session.rhost.as_deref(),
            outcome,
            reason,
        });
    }

    /// Keep the conversation going: store `session` at `stage` under a fresh
    /// id and ask the question of that stage after `messages`.
    fn ask(&self, mut session: Session, stage: Stage, messages: Vec<Message>, now: u64) -> Reply {
        if session.stage != stage {
            session.tries = 0;
        }
        session.stage = stage;
        let (prompt, echo) = match stage {
            Stage::Code { .. } => (code_prompt(&session), false),
            Stage::AskBarcode(_) => (BARCODE_QUESTION.to_string(), true),
            Stage::AskType { .. } => (TYPE_QUESTION.to_string(), true),
            Stage::ConfirmSetup(_) => (SETUP_CODE_PROMPT.to_string(), false),
        };
        let session_id = new_session_id()?;
        session.expires_at = now + self.config().request_timeout.as_secs();
        self.sessions_insert(session_id.clone(), session, now)?;
        Ok(Response::Auth(AuthStep::Prompt { session_id, messages, prompt, echo }))
    }

    fn sessions_insert(&self, id: String, session: Session, now: u64) -> Result<(), Refusal> {
        let mut sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sessions.retain(|_, s| s.expires_at > now);
        // Bounded, in all and per local user, so that nobody can fill the
        // table and keep others' logins out.
        let busy = |what: &str| {
            Err(refuse(ErrorKind::Busy, format!("too many login conversations in progress{what}; try again shortly")))
        };
        if sessions.len() >= MAX_SESSIONS {
            return busy("");
        }
        if session.peer_uid != 0
            && sessions.values().filter(|s| s.peer_uid == session.peer_uid).count() >= SESSIONS_PER_USER
        {
            return busy(" for your account");
        }
        sessions.insert(id, session);
        Ok(())
    }

    /// The conversation `id` of `peer_uid`, if it is still open; a
    /// conversation is answered once, by the process that began it.
    fn sessions_take(&self, id: &str, peer_uid: u32, now: u64) -> Option<Session> {
        let mut sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sessions.get(id).filter(|s| s.peer_uid == peer_uid && s.expires_at > now)?;
        sessions.remove(id)
    }

    pub(super) fn auth_answer(&self, peer: &Peer, session_id: &str, answer: &Code) -> Reply {
        let now = self.clock.now();
        let Some(session) = self.sessions_take(session_id, peer.uid, now) else {
            return Err(refuse(ErrorKind::NotFound, "no such login conversation (it may have timed out)"));
        };
        match session.stage {
            Stage::Code { recovery_allowed } => self.answer_code(session, recovery_allowed, answer, now),
            Stage::AskBarcode(offer) => self.answer_barcode(session, offer, answer.expose(), now),
            Stage::AskType { offer, barcode } => self.answer_type(session, offer, barcode, answer.expose(), now),
            Stage::ConfirmSetup(offer) => self.answer_setup_code(session, offer, answer, now),
        }
    }

    fn answer_code(&self, mut session: Session, recovery_allowed: bool, answer: &Code, now: u64) -> Reply {
        let config = self.config();
        let source = session.login.source.clone();
        let elevation = session.login.elevation;
        let person = session.login.person.clone();
        let attempt = |recovery: Recovery<'_>| {
            self.with_record(&person, |record| {
                // Approval is checked again with the code: a revoke, or a new
                // device, during the prompt takes effect at once.
                if elevation && config.elevation.require_approval && !record.approved {
                    return (false, CodeCheck::NotApproved);
                }
                let check = self.check_code(&config, record, answer, Some(&source), recovery, now);
                (check != CodeCheck::NotEnrolled, check)
            })
        };
        let first = if recovery_allowed { Recovery::Unchecked } else { Recovery::NotAllowed };
        let check = match attempt(first)? {
            CodeCheck::TryRecovery { hashes } => {
                let matched = recovery::find(&hashes, answer.expose());
                attempt(Recovery::Checked(matched.as_deref()))?
            }
            check => check,
        };
        match check {
            CodeCheck::Accepted => {
                self.log_session(&session, "success", "challenge passed");
                Ok(decision_response(Outcome::Verified, Vec::new()))
            }
            CodeCheck::AcceptedRecovery { left } => {
                self.log_session(&session, "success", &format!("challenge passed: recovery code used, {left} left"));
                Ok(decision_response(
                    Outcome::Verified,
                    vec![Message::info(format!(
                        "Recovery code accepted; {left} left. Issue new ones with `mfactl recovery-codes`."
                    ))],
                ))
            }
            CodeCheck::NotEnrolled => {
                self.log_session(&session, "denied", "device removed during the conversation");
                Ok(decision_response(Outcome::Denied, vec![Message::error("Two-factor authentication is not set up.")]))
            }
            // Cannot come back from a check that had the lookup done.
            CodeCheck::TryRecovery { .. } => Err(refuse(ErrorKind::Internal, "recovery code check did not finish")),
            CodeCheck::NotApproved => {
                let reason = policy::DenyReason::ElevationNotApproved;
                self.log_session(&session, "denied", reason.describe());
                Ok(decision_response(Outcome::Denied, vec![Message::error(reason.message())]))
            }
            CodeCheck::Locked { until } => {
                self.log_session(&session, "denied", "account locked");
                let reason = policy::DenyReason::Locked { until };
                Ok(decision_response(Outcome::Denied, vec![Message::error(reason.message())]))
            }
            CodeCheck::Wrong { message, locked } => {
                session.tries += 1;
                if locked {
                    self.log_session(&session, "failure", "challenge failed; account now locked");
                    let until = now + config.lockout.duration.as_secs();
                    let reason = policy::DenyReason::Locked { until };
                    return Ok(decision_response(Outcome::Failed, vec![Message::error(reason.message())]));
                }
                if session.tries >= config.max_tries {
                    self.log_session(&session, "failure", "challenge failed; too many tries");
                    return Ok(decision_response(Outcome::MaxTries, vec![Message::error(message)]));
                }
                self.log_session(&session, "failure", "challenge failed");
                let stage = session.stage;
                self.ask(session, stage, vec![Message::error(format!("{message} Try again."))], now)
            }
        }
    }

    /// An answer to a set-up question that was not understood: ask again,
    /// up to `max_tries` times; then a skippable offer lets the login go on
    /// and a mandatory one refuses it.
    fn reask(&self, mut session: Session, offer: Offer, hint: &str, now: u64) -> Reply {
        session.tries += 1;
        if session.tries < self.config().max_tries {
            let stage = session.stage;
            return self.ask(session, stage, vec![Message::error(hint)], now);
        }
        if offer.mandatory {
            self.log_session(&session, "denied", "enrollment not completed: no usable answer");
            Ok(decision_response(
                Outcome::Denied,
                vec![Message::error("Two-factor authentication must be set up before you can log in.")],
            ))
        } else {
            self.log_session(&session, "not_required", "enrollment skipped: no usable answer");
            Ok(decision_response(Outcome::NotRequired, Vec::new()))
        }
    }

    fn answer_barcode(&self, session: Session, offer: Offer, answer: &str, now: u64) -> Reply {
        let answer = answer.trim();
        if answer.is_empty() && !offer.mandatory {
            self.log_session(&session, "not_required", "enrollment skipped");
            return Ok(decision_response(
                Outcome::NotRequired,
                vec![Message::info("Set-up skipped; it will be offered again at your next login.")],
            ));
        }
        match yes_no(answer) {
            Some(barcode) => self.ask(session, Stage::AskType { offer, barcode }, Vec::new(), now),
            None if answer.is_empty() => {
                self.reask(session, offer, "Set-up is required to log in. Please answer y or n.", now)
            }
            None => self.reask(session, offer, YES_NO_HINT, now),
        }
    }

    fn answer_type(&self, session: Session, offer: Offer, barcode: bool, answer: &str, now: u64) -> Reply {
        let Some(otp_type) = time_or_counter(answer) else {
            return self.reask(session, offer, TYPE_HINT, now);
        };
        let config = self.config();
        let info = self.start_setup(&config, &session.login.person, otp_type, None)?;
        self.log_session(&session, "pending", &format!("inline set-up started ({otp_type})"));
        let shown = if barcode { format_barcode(&info) } else { format_manual_entry(&info) };
        self.ask(session, Stage::ConfirmSetup(offer), vec![Message::essential(shown)], now)
    }

    fn answer_setup_code(&self, mut session: Session, offer: Offer, answer: &Code, now: u64) -> Reply {
        let config = self.config();
        let person = session.login.person.clone();
        match self.complete_setup(&config, &person, answer, Some(&session.login.source), now) {
            Ok(codes) => {
                self.log_session(
                    &session,
                    "success",
                    &format!("enrollment completed (role policy {})", offer.policy.as_str()),
                );
                let text = format!("Two-factor authentication is enabled.{}", format_recovery_codes(&codes));
                Ok(decision_response(Outcome::Verified, vec![Message::essential(text)]))
            }
            Err(refusal) if refusal.kind == ErrorKind::InvalidCode => {
                session.tries += 1;
                if session.tries < config.max_tries {
                    self.log_session(&session, "failure", "enrollment code wrong");
                    let stage = session.stage;
                    return self.ask(
                        session,
                        stage,
                        vec![Message::error(format!("{}. Try again.", refusal.message))],
                        now,
                    );
                }
                self.log_session(&session, "failure", "enrollment failed: too many wrong codes; set-up stays pending");
                Ok(decision_response(
                    Outcome::Failed,
                    vec![Message::error(format!(
                        "{}. Set-up not completed: it will be offered again at your next login.",
                        refusal.message
                    ))],
                ))
            }
            Err(refusal) => {
                self.log_session(&session, "denied", &format!("enrollment failed: {}", refusal.message));
                Ok(decision_response(Outcome::Denied, vec![Message::error(refusal.message)]))
            }
        }
    }

    /// The bypass rule matching `rhost`, if the switch is on and one is in force.
    fn bypass_rule(&self, config: &Config, rhost: Option<&str>, now: u64) -> Result<Option<String>, Refusal> {
        if !config.bypass.enabled {
            return Ok(None);
        }
        // Only IP literals match: a host name or a local login never does.
        let Some(addr) = rhost.and_then(|r| r.parse::<IpAddr>().ok()) else {
            return Ok(None);
        };
        for rule in &config.bypass.rules {
            let lapsed = self.config_rule_expiry(rule).is_some_and(|t| t <= now);
            if rule.bypass_2fa && !lapsed && rule.cidr.contains(addr) {
                return Ok(Some(format!("{} (config)", rule.cidr)));
            }
        }
        let runtime = self.store.list_ip_rules().map_err(|e| self.internal(e))?;
        for rule in runtime {
            let lapsed = rule.expires_at.is_some_and(|t| t <= now);
            let matches = Cidr::parse(&rule.cidr).is_ok_and(|c| c.contains(addr));
            if rule.bypass_2fa && !lapsed && matches {
                return Ok(Some(format!("{} (runtime #{})", rule.cidr, rule.id)));
            }
        }
        Ok(None)
    }
}
