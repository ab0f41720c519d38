//! The login conversation a PAM module runs with mfad: begin with the PAM
//! items, answered by a prompt or a decision; each answer moves a session
//! through its stages (a code, or the questions of an inline set-up, which
//! are in [`super::enroll`]).

use std::net::IpAddr;

use mfa_shared::bypass::normalize;
use mfa_shared::config::RolePolicy;
use mfa_shared::protocol::{AuthStep, Code, ErrorKind, Message, Outcome, Response};

use super::access::{Identity, valid_field, valid_user_name};
use super::verify::{CodeCheck, Recovery, Shape, clamp_to_now};
use super::{Daemon, Peer, Refusal, Reply, Snapshot, decision_response, refuse};
use crate::audit::{AuditOutcome, Entry};
use crate::enrollment::{BARCODE_QUESTION, SETUP_CODE_PROMPT, TYPE_QUESTION};
use crate::metrics::LoginCounter;
use crate::policy::{self, AllowReason, Context, Decision, DenyReason, HOST_NAME_SOURCE, LoginRequest};
use crate::recovery;

/// The PAM items a login begins with, as the module sent them.
#[derive(Debug)]
pub(super) struct PamItems {
    pub service: String,
    pub user: String,
    pub ruser: Option<String>,
    pub rhost: Option<String>,
    pub tty: Option<String>,
    /// The module's `forward_pass`: a client that answers one field only.
    pub forward_pass: bool,
}

/// A login conversation waiting for an answer.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub peer_uid: u32,
    pub login: LoginRequest,
    /// PAM_USER (the person is PAM_RUSER for elevation).
    pub user: String,
    /// The person's name as the module gave it (the account may differ).
    pub person_given: String,
    pub rhost: Option<String>,
    pub stage: Stage,
    /// Unusable answers given at the current stage.
    pub tries: u32,
    pub expires_at: u64,
    /// The module's `forward_pass`: the code comes at the end of the one
    /// answer (see [`super::one_field`]).
    pub forward_pass: bool,
}

/// What the open prompt of a conversation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// A code from the enabled device (or, at login, a recovery code).
    Code { recovery_allowed: bool },
    /// Inline set-up: "Does your device support scanning a barcode?"
    AskBarcode(Offer),
    /// Inline set-up: "Time-based or counter-based?"
    AskType { offer: Offer, barcode: bool },
    /// Inline set-up: the first code of the pending device.
    ConfirmSetup(Offer),
}

/// Why inline set-up is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offer {
    pub policy: RolePolicy,
    /// force/require: no set-up, no login; encourage: may be skipped.
    pub mandatory: bool,
}

impl Daemon {
    pub(super) fn auth_begin(&self, at: &Snapshot, peer: &Peer, items: PamItems) -> Reply {
        if !at.config.enabled {
            // A no-op until switched on: not even the names are judged.
            self.audit.decision(&Entry {
                user: &items.user,
                given: None,
                peer_uid: Some(peer.uid),
                service: &items.service,
                rhost: items.rhost.as_deref(),
                outcome: AuditOutcome::NotRequired,
                reason: "mfa disabled",
            });
            return Ok(decision_response(Outcome::NotRequired, Vec::new()));
        }
        valid_field("service", Some(&items.service))?;
        valid_field("rhost", items.rhost.as_deref())?;
        valid_field("tty", items.tty.as_deref())?;
        valid_user_name(&items.user)?;
        if let Some(ruser) = items.ruser.as_deref().filter(|r| !r.is_empty()) {
            valid_user_name(ruser)?;
        }
        let session = match self.new_session(at, peer, items)? {
            Ok(session) => session,
            Err(denied) => return Ok(denied),
        };
        let mut record = match self.get_record(&session.login.person) {
            Ok(record) => record,
            Err(refusal) if refusal.store_unavailable => return self.begin_without_store(at, &session, refusal),
            Err(refusal) => return Err(refusal),
        };
        if record.as_mut().is_some_and(|record| clamp_to_now(record, at, self.clock.now())) {
            self.with_record(&session.login.person, |record| (clamp_to_now(record, at, self.clock.now()), ()))?;
        }
        // Elevation does not depend on roles: no group lookup for it.
        let role = if session.login.elevation { Ok(None) } else { self.role_of(&at.config, &session.login.person) };
        let role = match role {
            Ok(role) => role,
            // Fail closed: a role we cannot read may be one that requires a code.
            Err(err) => {
                self.log_session(&session, AuditOutcome::Denied, &format!("group membership unavailable: {err}"));
                let message = "Two-factor authentication cannot read your group membership; try again later.";
                return Ok(decision_response(Outcome::Denied, vec![Message::error(message)]));
            }
        };
        // A non-root caller's rhost is its claim: it never matches a rule.
        let rhost = if session.login.local_claim { None } else { session.rhost.as_deref() };
        let context = Context { role, bypass: self.bypass_rule(at, rhost)? };
        let decision = policy::decide(&at.config, record.as_ref(), &session.login, &context, at.now);
        let digits = record.as_ref().and_then(|record| record.device.as_ref()).map(|device| device.digits);
        self.begin_with(at, session, decision, digits.unwrap_or(at.config.digits))
    }

    /// A login while the store is out of reach: a rule of the config file
    /// still lets a login (not an elevation) through, as it would without
    /// the store's record (the lockout cannot be read); anything else is
    /// answered `unavailable`, for the module's failmode to decide.
    fn begin_without_store(&self, at: &Snapshot, session: &Session, unavailable: Refusal) -> Reply {
        let rhost = if session.login.local_claim { None } else { session.rhost.as_deref() };
        match self.config_bypass_rule(at, rhost).filter(|_| !session.login.elevation) {
            Some(rule) => {
                let reason = format!("ip bypass by rule {rule} (store unavailable)");
                self.log_session(session, AuditOutcome::NotRequired, &reason);
                self.metrics.count_service(&session.login.service, session.peer_uid, LoginCounter::Bypassed);
                Ok(decision_response(Outcome::NotRequired, Vec::new()))
            }
            None => {
                self.log_session(
                    session,
                    AuditOutcome::Unavailable,
                    "store unavailable; the module's failmode decides",
                );
                Err(unavailable)
            }
        }
    }

    /// The conversation for these PAM items: the accounts they name (the
    /// person asked is PAM_RUSER for elevation), and the source a code would
    /// come from. A non-root caller may begin a login only as itself, as
    /// PAM_USER and as PAM_RUSER (else it could spend another person's tries
    /// and lock them out). The inner error is a denial for a failed lookup.
    fn new_session(&self, at: &Snapshot, peer: &Peer, items: PamItems) -> Result<Result<Session, Response>, Refusal> {
        let PamItems { service, user, ruser, rhost, tty, forward_pass } = items;
        let elevation = at.config.is_elevation(&service);
        let ruser = ruser.filter(|r| !r.is_empty());
        let rhost = rhost.filter(|r| !r.is_empty());
        // PAM_RUSER names the person only for elevation; a non-root
        // caller's is checked to be its own.
        let ruser_needed = elevation || peer.uid != 0;
        let names = [Some(user.as_str()), ruser.as_deref().filter(|_| ruser_needed)];
        let mut identities = Vec::with_capacity(2);
        for name in names.into_iter().flatten() {
            match self.resolve(name) {
                Ok(identity) => identities.push(identity),
                Err(err) => {
                    let reason = format!("account lookup failed: {err}");
                    self.audit.decision(&Entry {
                        user: name,
                        given: None,
                        peer_uid: Some(peer.uid),
                        service: &service,
                        rhost: rhost.as_deref(),
                        outcome: AuditOutcome::Denied,
                        reason: &reason,
                    });
                    return Ok(Err(lookup_denied()));
                }
            }
        }
        if peer.uid != 0 && !identities.iter().all(|identity| is_own(peer, identity)) {
            return Err(refuse(ErrorKind::PermissionDenied, "permission denied: not your account"));
        }
        let mut named = identities.into_iter();
        let (user_identity, ruser_identity) = (named.next(), named.next());
        let person = if elevation { ruser_identity.or(user_identity) } else { user_identity };
        let Some(person) = person else {
            return Err(refuse(ErrorKind::Internal, "internal error in mfad: no account to ask"));
        };
        let source = match &rhost {
            Some(rhost) => match rhost.parse::<IpAddr>() {
                Ok(addr) => normalize(addr).to_string(),
                // A name from reverse DNS is never trusted (see policy).
                Err(_) => format!("{HOST_NAME_SOURCE}{rhost}"),
            },
            // A console is this host's: with a fleet's shared store, tty1
            // trusted on one host must not be trusted on every other.
            None => format!("local:{}:{}", self.host_name, tty.as_deref().unwrap_or("")),
        };
        let never_trusted = match (&rhost, tty.as_deref()) {
            _ if forward_pass => Some(policy::ONE_ANSWER),
            (None, None | Some("")) => Some(policy::NO_SOURCE),
            _ => None,
        };
        let login = LoginRequest {
            service,
            person: person.account,
            source,
            elevation,
            local_claim: peer.uid != 0,
            never_trusted,
        };
        Ok(Ok(Session {
            peer_uid: peer.uid,
            user,
            person_given: person.given,
            login,
            rhost,
            stage: Stage::Code { recovery_allowed: false },
            tries: 0,
            expires_at: 0,
            forward_pass,
        }))
    }

    /// Act on the policy's decision for a new conversation; `digits` are
    /// those of the person's device.
    fn begin_with(&self, at: &Snapshot, session: Session, decision: Decision, digits: u32) -> Reply {
        match decision {
            Decision::Allow(reason) => {
                self.log_session(&session, AuditOutcome::NotRequired, &reason.describe());
                if matches!(reason, AllowReason::Bypass(_) | AllowReason::TrustedSource) {
                    self.metrics.count_service(&session.login.service, session.peer_uid, LoginCounter::Bypassed);
                }
                Ok(decision_response(Outcome::NotRequired, Vec::new()))
            }
            Decision::Deny(reason) => {
                self.log_session(&session, AuditOutcome::Denied, reason.describe());
                Ok(decision_response(Outcome::Denied, vec![Message::error(reason.message())]))
            }
            Decision::OfferEnrollment { policy, mandatory } if session.forward_pass => {
                Ok(self.no_enrollment_in_one_field(&session, Offer { policy, mandatory }))
            }
            Decision::OfferEnrollment { policy, mandatory } => {
                self.offer_enrollment(at, session, Offer { policy, mandatory })
            }
            Decision::AskCode { reason, recovery_allowed } => {
                self.log_session(&session, AuditOutcome::Challenge, reason);
                if session.forward_pass {
                    return self.ask_in_answer(at, session, recovery_allowed, digits);
                }
                self.ask(at, session, Stage::Code { recovery_allowed }, Vec::new())
            }
        }
    }

    /// One decision of a login conversation for the audit trail.
    pub(super) fn log_session(&self, session: &Session, outcome: AuditOutcome, reason: &str) {
        self.audit.decision(&Entry {
            user: &session.login.person,
            given: Some(&session.person_given),
            peer_uid: Some(session.peer_uid),
            service: &session.login.service,
            rhost: session.rhost.as_deref(),
            outcome,
            reason,
        });
    }

    /// Keep the conversation going: store `session` at `stage` under a fresh
    /// id and ask the question of that stage after `messages`.
    pub(super) fn ask(&self, at: &Snapshot, mut session: Session, stage: Stage, messages: Vec<Message>) -> Reply {
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
        session.expires_at = at.now.saturating_add(at.config.request_timeout.as_secs());
        let session_id = self.sessions_insert(session, at.now)?;
        Ok(Response::Auth(AuthStep::Prompt { session_id, messages, prompt, echo }))
    }

    pub(super) fn auth_answer(&self, at: &Snapshot, peer: &Peer, session_id: &str, answer: &Code) -> Reply {
        let Some(session) = self.sessions_take(session_id, peer.uid, at.now) else {
            return Err(refuse(ErrorKind::NotFound, "no such login conversation (it may have timed out)"));
        };
        match session.stage {
            Stage::Code { recovery_allowed } => self.answer_code(at, session, recovery_allowed, answer),
            Stage::AskBarcode(offer) => self.answer_barcode(at, session, offer, answer.expose()),
            Stage::AskType { offer, barcode } => self.answer_type(at, session, offer, barcode, answer.expose()),
            Stage::ConfirmSetup(offer) => self.answer_setup_code(at, session, offer, answer),
        }
    }

    /// Check the answer to a code prompt in one transaction with its effect;
    /// a recovery code is looked up between two transactions (it is slow).
    fn answer_code(&self, at: &Snapshot, session: Session, recovery_allowed: bool, answer: &Code) -> Reply {
        let login = &session.login;
        let attempt = |recovery: Recovery<'_>| {
            self.with_record(&login.person, |record| {
                // Approval is checked again with the code: a revoke, or a new
                // device, during the prompt takes effect at once.
                if login.elevation && at.config.elevation.require_approval && !record.approved {
                    return (false, CodeCheck::NotApproved);
                }
                // At a prompt of its own, an answer that is no code is the
                // password of a one-field client: not counted.
                let shape = if session.forward_pass { Shape::OneAnswer } else { Shape::NotACodeUncounted };
                let check = self.check_code(at, record, answer, login.trusted_source(), recovery, shape);
                (check != CodeCheck::NotEnrolled, check)
            })
        };
        let first = if recovery_allowed { Recovery::Unchecked } else { Recovery::NotAllowed };
        let check = match attempt(first)? {
            CodeCheck::TryRecovery { hashes } => {
                let matched = recovery::find(&hashes, answer.expose(), self.vault.pepper());
                attempt(Recovery::Checked(matched.as_deref()))?
            }
            check => check,
        };
        self.code_checked(at, session, check)
    }

    /// Tell the person how the code check went, and ask again after a wrong
    /// code while tries are left.
    fn code_checked(&self, at: &Snapshot, mut session: Session, check: CodeCheck) -> Reply {
        let deny = |reason: DenyReason| decision_response(Outcome::Denied, vec![Message::error(reason.message())]);
        match check {
            CodeCheck::Accepted => {
                self.log_session(&session, AuditOutcome::Success, "challenge passed");
                Ok(decision_response(Outcome::Verified, Vec::new()))
            }
            CodeCheck::AcceptedRecovery { left } => {
                let reason = format!("challenge passed: recovery code used, {left} left");
                self.log_session(&session, AuditOutcome::Success, &reason);
                let text = format!("Recovery code accepted; {left} left. Issue new ones with `mfactl recovery-codes`.");
                Ok(decision_response(Outcome::Verified, vec![Message::info(text)]))
            }
            CodeCheck::NotEnrolled => {
                self.log_session(&session, AuditOutcome::Denied, "device removed during the conversation");
                Ok(decision_response(Outcome::Denied, vec![Message::error("Two-factor authentication is not set up.")]))
            }
            // Cannot come back from a check that had the lookup done.
            CodeCheck::TryRecovery { .. } => Err(refuse(ErrorKind::Internal, "recovery code check did not finish")),
            CodeCheck::NotApproved => {
                let reason = DenyReason::ElevationNotApproved;
                self.log_session(&session, AuditOutcome::Denied, reason.describe());
                Ok(deny(reason))
            }
            CodeCheck::Locked { until } => {
                self.log_session(&session, AuditOutcome::Denied, "account locked");
                Ok(deny(DenyReason::Locked { until }))
            }
            CodeCheck::NotACode => self.not_a_code(at, session),
            CodeCheck::Wrong { message, locked } => {
                session.tries += 1;
                if locked {
                    self.log_session(&session, AuditOutcome::Failure, "challenge failed; account now locked");
                    self.metrics.count_service(&session.login.service, session.peer_uid, LoginCounter::Lockout);
                    let until = at.now.saturating_add(at.config.lockout.duration.as_secs());
                    let text = DenyReason::Locked { until }.message();
                    return Ok(decision_response(Outcome::Failed, vec![Message::error(text)]));
                }
                // One answer holds the password: no second try.
                if session.forward_pass {
                    self.log_session(&session, AuditOutcome::Failure, "challenge failed (forward_pass)");
                    return Ok(decision_response(Outcome::Failed, vec![Message::error(message)]));
                }
                if session.tries >= at.config.max_tries {
                    self.log_session(&session, AuditOutcome::Failure, "challenge failed; too many tries");
                    return Ok(decision_response(Outcome::MaxTries, vec![Message::error(message)]));
                }
                self.log_session(&session, AuditOutcome::Failure, "challenge failed");
                let stage = session.stage;
                self.ask(at, session, stage, vec![Message::error(format!("{message} Try again."))])
            }
        }
    }
}

/// Whether `identity` is the caller's own account: its uid, or (a name NSS
/// does not know) the caller's name.
fn is_own(peer: &Peer, identity: &Identity) -> bool {
    match identity.uid {
        Some(uid) => uid == peer.uid,
        None => peer.name.as_deref() == Some(identity.account.as_str()),
    }
}

/// The denial of a login whose account could not be looked up (the
/// directory failed, or did not answer in time).
pub(crate) fn lookup_denied() -> Response {
    let message = "Two-factor authentication cannot look up your account; try again later.";
    decision_response(Outcome::Denied, vec![Message::error(message)])
}

fn code_prompt(session: &Session) -> String {
    if session.login.elevation && session.person_given != session.user {
        format!("Verification code for {}: ", session.person_given)
    } else {
        "Verification code: ".to_string()
    }
}
