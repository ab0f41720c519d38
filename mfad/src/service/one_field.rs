//! Clients that can answer only one field (IMAP/POP, FTP, VPN, RADIUS, web
//! applications calling PAM): they answer every prompt with the password.
//!
//! - With the module's `forward_pass`, mfad asks nothing: a login that needs
//!   a code is answered [`AuthStep::CodeInAnswer`] with the device's digits,
//!   the module splits the code off the one answer and sends only that; one
//!   answer, one try, and anything but the right code counts as a wrong one.
//!   Inline set-up cannot happen through one field: a mandatory one denies,
//!   an encouraged one is skipped.
//! - At the code prompt of the two-prompt mode, an answer that is no code
//!   (not shaped like one, or equal to the password the stack holds, which
//!   the module finds and never sends) is refused and audited without
//!   counting toward the lockout, so such a client cannot lock its user out.
//!   Code-shaped answers are counted as always.

use mfa_shared::protocol::{AuthStep, ErrorKind, Message, Outcome, Response};

use super::login::{Offer, Session, Stage};
use super::{Daemon, Peer, Reply, Snapshot, decision_response, refuse};
use crate::audit::AuditOutcome;

/// The audit reason of an answer that was no code.
pub const NOT_A_CODE_REASON: &str = "not a code: this client may be unable to answer a code prompt (see forward_pass)";

/// What the person sees after an answer that was no code.
const NOT_A_CODE_MESSAGE: &str = "That is not a verification code.";

impl Daemon {
    /// forward_pass: a code is needed; ask for it at the end of the answer.
    pub(super) fn ask_in_answer(&self, at: &Snapshot, mut session: Session, recovery: bool, digits: u32) -> Reply {
        session.stage = Stage::Code { recovery_allowed: recovery };
        session.tries = 0;
        session.expires_at = at.now.saturating_add(at.config.request_timeout.as_secs());
        let session_id = self.sessions_insert(session, at.now)?;
        Ok(Response::Auth(AuthStep::CodeInAnswer { session_id, digits, recovery }))
    }

    /// forward_pass: a role policy would offer inline set-up, which one
    /// field cannot hold. A mandatory one denies; an encouraged one lets the
    /// login go on, as skipping it would.
    pub(super) fn no_enrollment_in_one_field(&self, session: &Session, offer: Offer) -> Response {
        let policy = offer.policy.as_str();
        if offer.mandatory {
            let reason = format!(
                "enrollment required (role policy {policy}) but this service answers one field (forward_pass): \
                 enroll with mfactl setup over SSH"
            );
            self.log_session(session, AuditOutcome::Denied, &reason);
            let message = "Two-factor authentication must be set up first: log in over SSH and run `mfactl setup`.";
            return decision_response(Outcome::Denied, vec![Message::error(message)]);
        }
        let reason = format!("enrollment offer (role policy {policy}) skipped: this service answers one field");
        self.log_session(session, AuditOutcome::NotRequired, &reason);
        decision_response(Outcome::NotRequired, Vec::new())
    }

    /// The module found the answer equal to the password the stack holds.
    pub(super) fn auth_not_a_code(&self, at: &Snapshot, peer: &Peer, session_id: &str) -> Reply {
        let Some(session) = self.sessions_take(session_id, peer.uid, at.now) else {
            return Err(refuse(ErrorKind::NotFound, "no such login conversation (it may have timed out)"));
        };
        match session.stage {
            Stage::Code { .. } => self.not_a_code(at, session),
            // A set-up's code prompt: the set-up ends, nothing counted.
            Stage::ConfirmSetup(_) | Stage::AskBarcode(_) | Stage::AskType { .. } => {
                self.log_session(&session, AuditOutcome::NotACode, NOT_A_CODE_REASON);
                Ok(decision_response(Outcome::Failed, vec![Message::error(NOT_A_CODE_MESSAGE)]))
            }
        }
    }

    /// An answer to a code prompt that was no code: refused, audited, not
    /// counted; asked again while tries are left (a person who mistyped).
    pub(super) fn not_a_code(&self, at: &Snapshot, mut session: Session) -> Reply {
        session.tries += 1;
        self.log_session(&session, AuditOutcome::NotACode, NOT_A_CODE_REASON);
        if session.forward_pass {
            return Ok(decision_response(Outcome::Failed, vec![Message::error(NOT_A_CODE_MESSAGE)]));
        }
        if session.tries >= at.config.max_tries {
            return Ok(decision_response(Outcome::MaxTries, vec![Message::error(NOT_A_CODE_MESSAGE)]));
        }
        let stage = session.stage;
        self.ask(at, session, stage, vec![Message::error(format!("{NOT_A_CODE_MESSAGE} Try again."))])
    }
}
