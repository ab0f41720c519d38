//! Login conversations counted for the metrics: each begun one, and how it
//! ended, read from the reply the module gets (so every path is counted by
//! the same rule).

use mfa_shared::protocol::{AuthStep, Outcome, Response};

use super::login::PamItems;
use super::{Daemon, Peer, Reply, Snapshot};
use crate::metrics::LoginCounter;
use crate::metrics::exposition::Gauges;

impl Daemon {
    /// [`Daemon::auth_begin`], counted.
    pub(super) fn counted_begin(&self, at: &Snapshot, peer: &Peer, items: PamItems) -> Reply {
        let slot = self.metrics.service(&items.service, peer.uid);
        self.metrics.count(slot, LoginCounter::Asked);
        let reply = self.auth_begin(at, peer, items);
        if let Some(end) = login_end(&reply) {
            self.metrics.count(slot, end);
        }
        reply
    }

    /// `answer` (a step in the conversation `session_id`), counted when the
    /// conversation is found.
    pub(super) fn counted_answer(
        &self,
        peer: &Peer,
        session_id: &str,
        now: u64,
        answer: impl FnOnce(&Self) -> Reply,
    ) -> Reply {
        let service = self.sessions_service(session_id, peer.uid, now);
        let reply = answer(self);
        if let (Some(service), Some(end)) = (service, login_end(&reply)) {
            self.metrics.count_service(&service, peer.uid, end);
        }
        reply
    }

    /// Every metric, in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let open_conversations = self.sessions_open(self.clock.now());
        self.metrics.render(Gauges { open_conversations })
    }
}

/// How a login conversation ended with this reply; None while it goes on.
fn login_end(reply: &Reply) -> Option<LoginCounter> {
    match reply {
        Ok(Response::Auth(AuthStep::Decision { outcome, .. })) => Some(match outcome {
            Outcome::Verified => LoginCounter::Passed,
            Outcome::NotRequired => LoginCounter::Ignored,
            Outcome::Failed | Outcome::MaxTries | Outcome::Denied => LoginCounter::Failed,
        }),
        Ok(_) => None,
        Err(refusal) if refusal.store_unavailable => Some(LoginCounter::Unavailable),
        // The module fails closed on any error.
        Err(_) => Some(LoginCounter::Failed),
    }
}
