//! IP bypass (SPEC 8): rules from the config file and from `mfactl ip add`,
//! both [`BypassRule`]s; at login the first in force that covers the remote
//! address skips the code.

use std::net::IpAddr;

use mfa_shared::bypass::{BypassRule, parse_network};
use mfa_shared::protocol::{ErrorKind, ListedRule, Response};

use super::{Daemon, Peer, Refusal, Reply, Snapshot, refuse};

impl Daemon {
    /// The bypass rule for a login from `rhost`, if the switch is on and a
    /// rule in force covers it. Only IP literals match: a host name or a
    /// local login never does.
    pub(super) fn bypass_rule(&self, at: &Snapshot, rhost: Option<&str>) -> Result<Option<BypassRule>, Refusal> {
        let Some(addr) = rhost.and_then(|r| r.parse::<IpAddr>().ok()).filter(|_| at.config.bypass.enabled) else {
            return Ok(None);
        };
        if let Some(rule) = config_bypass(at, addr) {
            return Ok(Some(rule));
        }
        let runtime = self.stored(self.store.list_ip_rules())?;
        Ok(runtime.into_iter().find(|rule| rule.bypasses(addr, at.now)))
    }

    /// [`Daemon::bypass_rule`] from the config file's rules alone: what can
    /// still be decided while the store is out of reach.
    pub(super) fn config_bypass_rule(&self, at: &Snapshot, rhost: Option<&str>) -> Option<BypassRule> {
        let addr = rhost.and_then(|r| r.parse::<IpAddr>().ok()).filter(|_| at.config.bypass.enabled)?;
        config_bypass(at, addr)
    }

    pub(super) fn ip_add(
        &self,
        at: &Snapshot,
        peer: &Peer,
        cidr: &str,
        bypass_2fa: bool,
        timeout_secs: Option<u64>,
    ) -> Reply {
        self.require_admin(at, peer)?;
        let network = parse_network(cidr).map_err(|e| refuse(ErrorKind::BadRequest, e))?;
        let expires_at = timeout_secs.map(|t| at.now.saturating_add(t));
        let id = self.written(self.store.add_ip_rule(network, bypass_2fa, expires_at))?;
        self.admin_event(peer, "-", &format!("ip rule #{id} {network} bypass_2fa={bypass_2fa} added"));
        Ok(Response::IpRuleAdded { id })
    }

    pub(super) fn ip_list(&self, at: &Snapshot, peer: &Peer) -> Reply {
        self.require_admin(at, peer)?;
        let runtime = self.stored(self.store.list_ip_rules())?;
        let listed =
            |rule: BypassRule| ListedRule { rule, in_force: at.config.bypass.enabled && rule.in_force(at.now) };
        let rules = at.config_rules.iter().copied().chain(runtime).map(listed).collect();
        Ok(Response::IpRules { rules })
    }

    pub(super) fn ip_remove(&self, at: &Snapshot, peer: &Peer, id: i64) -> Reply {
        self.require_admin(at, peer)?;
        if !self.written(self.store.remove_ip_rule(id))? {
            return Err(refuse(ErrorKind::NotFound, format!("no runtime ip rule #{id}")));
        }
        self.admin_event(peer, "-", &format!("ip rule #{id} removed"));
        Ok(Response::ok())
    }
}

fn config_bypass(at: &Snapshot, addr: IpAddr) -> Option<BypassRule> {
    at.config_rules.iter().find(|rule| rule.bypasses(addr, at.now)).copied()
}
