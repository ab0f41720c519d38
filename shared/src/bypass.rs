//! IP bypass rules (SPEC 8): one type for a rule from the config file or
//! one added at run time, as the store keeps it, the protocol lists it and
//! the policy matches it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Skip the code for logins from `network` while the rule is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BypassRule {
    /// Host bits cleared; IPv4-mapped IPv6 written as IPv4.
    #[serde(rename = "cidr", with = "network_text")]
    pub network: IpNet,
    /// A rule without the flag is listed but bypasses nothing.
    pub bypass_2fa: bool,
    /// Unix time when the rule lapses; `None`: never.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(flatten)]
    pub origin: RuleOrigin,
}

/// Where a rule comes from: the config file (changed by editing it) or
/// `mfactl ip add` (kept in the store, removed by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum RuleOrigin {
    Config,
    Runtime { id: i64 },
}

impl BypassRule {
    /// Not lapsed at `now`. (Whether bypass is switched on at all is the
    /// config's `[bypass] enabled`.)
    pub fn in_force(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    /// Whether a login from `addr` skips the code under this rule.
    pub fn bypasses(&self, addr: IpAddr, now: u64) -> bool {
        self.bypass_2fa && self.in_force(now) && self.network.contains(&normalize(addr))
    }
}

impl fmt::Display for BypassRule {
    /// How the audit line names the rule: `10.0.0.0/8 (config)`,
    /// `10.0.0.0/8 (runtime #3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            RuleOrigin::Config => write!(f, "{} (config)", self.network),
            RuleOrigin::Runtime { id } => write!(f, "{} (runtime #{id})", self.network),
        }
    }
}

/// Parse a network: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32
/// or /128). IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is taken as IPv4.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let bad = |why: &str| format!("invalid network {text:?}: {why}");
    let (addr, prefix) = match text.trim().split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text.trim(), None),
    };
    let addr = normalize(addr.parse::<IpAddr>().map_err(|_| bad("not an IP address"))?);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().map_err(|_| bad("bad prefix length"))?,
        None => max,
    };
    let network = IpNet::new(addr, prefix).map_err(|_| bad("prefix length too long"))?;
    Ok(network.trunc())
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A network as its text, read with [`parse_network`].
pub mod network_text {
    use super::*;

    pub fn serialize<S: Serializer>(network: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(network)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        parse_network(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cidr: &str, expires_at: Option<u64>) -> BypassRule {
        BypassRule { network: parse_network(cidr).unwrap(), bypass_2fa: true, expires_at, origin: RuleOrigin::Config }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let host = rule("127.0.0.9", None);
        assert!(host.bypasses(ip("127.0.0.9"), 0));
        assert!(!host.bypasses(ip("127.0.0.10"), 0));
        assert!(host.bypasses(ip("::ffff:127.0.0.9"), 0));
        let net = rule("10.1.0.0/16", None);
        assert!(net.bypasses(ip("10.1.200.3"), 0));
        assert!(!net.bypasses(ip("10.2.0.1"), 0));
        let v6 = rule("2001:db8::/32", None);
        assert!(v6.bypasses(ip("2001:db8:1::5"), 0));
        assert!(!v6.bypasses(ip("10.1.0.1"), 0));
        assert!(rule("0.0.0.0/0", None).bypasses(ip("8.8.8.8"), 0));
        assert_eq!(parse_network("::ffff:10.0.0.1/32").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_network("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
        assert!(parse_network("10.0.0.0/x").is_err());
    }

    #[test]
    fn a_rule_lapses_and_the_flag_is_needed() {
        let lapsing = rule("10.0.0.0/8", Some(100));
        assert!(lapsing.in_force(99) && lapsing.bypasses(ip("10.0.0.1"), 99));
        assert!(!lapsing.in_force(100) && !lapsing.bypasses(ip("10.0.0.1"), 100));
        let listed_only = BypassRule { bypass_2fa: false, ..rule("10.0.0.0/8", None) };
        assert!(listed_only.in_force(0) && !listed_only.bypasses(ip("10.0.0.1"), 0));
    }

    #[test]
    fn wire_form_names_cidr_and_source() {
        let runtime = BypassRule { origin: RuleOrigin::Runtime { id: 3 }, ..rule("10.0.0.0/8", Some(5)) };
        let value = serde_json::to_value(runtime).unwrap();
        assert_eq!(value["cidr"], "10.0.0.0/8");
        assert_eq!(value["source"], "runtime");
        assert_eq!(value["id"], 3);
        assert_eq!(serde_json::from_value::<BypassRule>(value).unwrap(), runtime);
        assert_eq!(runtime.to_string(), "10.0.0.0/8 (runtime #3)");
        assert_eq!(serde_json::to_value(rule("10.0.0.0/8", None)).unwrap()["source"], "config");
    }
}
