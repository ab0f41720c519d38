//! Open login conversations, each waiting for one answer. Bounded in all
//! and per local caller, so that nobody can fill the table and keep other
//! people's logins out.

use std::collections::HashMap;

use mfa_shared::protocol::ErrorKind;

use super::login::Session;
use super::{Daemon, Refusal, no_random_bytes, refuse};

/// Login conversations waiting for an answer, at most.
const MAX_SESSIONS: usize = 10_000;
/// Open conversations one non-root caller (a screen locker) may have.
const SESSIONS_PER_USER: usize = 16;
/// Open conversations for one account, whoever began them: someone who
/// knows a password and leaves ssh prompts unanswered holds up only that
/// account.
const SESSIONS_PER_ACCOUNT: usize = 8;

/// Conversation id -> conversation.
#[derive(Debug, Default)]
pub(super) struct Sessions(HashMap<String, Session>);

impl Daemon {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `session` under a fresh id, which is returned.
    pub(super) fn sessions_insert(&self, session: Session, now: u64) -> Result<String, Refusal> {
        let id = new_session_id()?;
        let Sessions(sessions) = &mut *self.sessions();
        sessions.retain(|_, s| s.expires_at > now);
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
        if sessions.values().filter(|s| s.login.person == session.login.person).count() >= SESSIONS_PER_ACCOUNT {
            return busy(" for this account");
        }
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// The conversation `id` of `peer_uid`, if it is still open; a
    /// conversation is answered once, by the process that began it.
    pub(super) fn sessions_take(&self, id: &str, peer_uid: u32, now: u64) -> Option<Session> {
        let Sessions(sessions) = &mut *self.sessions();
        sessions.get(id).filter(|s| s.peer_uid == peer_uid && s.expires_at > now)?;
        sessions.remove(id)
    }

    /// The service of conversation `id` of `peer_uid`, if it is still open.
    pub(super) fn sessions_service(&self, id: &str, peer_uid: u32, now: u64) -> Option<String> {
        let Sessions(sessions) = &*self.sessions();
        sessions.get(id).filter(|s| s.peer_uid == peer_uid && s.expires_at > now).map(|s| s.login.service.clone())
    }

    /// Conversations waiting for an answer at `now`.
    pub(super) fn sessions_open(&self, now: u64) -> usize {
        let Sessions(sessions) = &*self.sessions();
        sessions.values().filter(|s| s.expires_at > now).count()
    }
}

fn new_session_id() -> Result<String, Refusal> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(no_random_bytes)?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}
