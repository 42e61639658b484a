//! What a blocklist feed may never block: networks broader than a minimum
//! prefix, anything overlapping an allowlisted network (the operator's
//! trunks and peers), and the agent's own addresses. Feed input is data
//! from outside; one bad line (`0.0.0.0/0`, a trunk's range, our own
//! address) must not take a voice network down.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// The narrowest prefixes a feed may block by default: a /16 of IPv4 is
/// already 65 536 hosts; an IPv6 /32 is a whole provider.
pub const MIN_PREFIX_V4: u8 = 16;
pub const MIN_PREFIX_V6: u8 = 32;

#[derive(Clone, Debug, Default)]
pub struct Guards {
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// The allowlist at the time of the check.
    pub allow: Vec<IpNet>,
    /// The addresses of the host (the agent's network namespace).
    pub own: Vec<IpAddr>,
}

/// Why a feed entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Broader than the minimum prefix of its family.
    TooBroad { min: u8 },
    /// Overlaps this allowlisted network.
    Allowlisted(IpNet),
    /// Covers this address of the host.
    OwnAddress(IpAddr),
    /// Covers this source, which earned trust on the host (feeds of
    /// evidence a forger could produce only, see crowdsec.rs).
    Trusted(IpAddr),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooBroad { min } => write!(f, "broader than /{min}"),
            Refusal::Allowlisted(net) => write!(f, "overlaps the allowlisted {net}"),
            Refusal::OwnAddress(a) => write!(f, "covers this host's address {a}"),
            Refusal::Trusted(a) => write!(f, "covers {a}, which earned trust here"),
        }
    }
}

impl Guards {
    /// `Ok` if `net` may be blocked.
    pub fn check(&self, net: &IpNet) -> Result<(), Refusal> {
        let min = match net {
            IpNet::V4(_) => self.min_prefix_v4,
            IpNet::V6(_) => self.min_prefix_v6,
        };
        if net.prefix_len() < min {
            return Err(Refusal::TooBroad { min });
        }
        if let Some(a) = self.allow.iter().find(|a| overlap(a, net)) {
            return Err(Refusal::Allowlisted(*a));
        }
        if let Some(own) = self.own.iter().find(|o| net.contains(*o)) {
            return Err(Refusal::OwnAddress(*own));
        }
        Ok(())
    }
}

/// One network holds the other (CIDR blocks never partly overlap).
fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn guards() -> Guards {
        Guards {
            min_prefix_v4: MIN_PREFIX_V4,
            min_prefix_v6: MIN_PREFIX_V6,
            allow: vec![net("198.18.10.0/24"), net("2001:db8:1::/48")],
            own: vec![
                "198.18.0.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn refusals() {
        let g = guards();
        let rows = [
            ("198.19.7.0/24", Ok(())),
            ("198.19.7.7/32", Ok(())),
            ("2001:db8:2::/48", Ok(())),
            ("0.0.0.0/0", Err(Refusal::TooBroad { min: 16 })),
            ("198.0.0.0/8", Err(Refusal::TooBroad { min: 16 })),
            ("2001::/16", Err(Refusal::TooBroad { min: 32 })),
            (
                "198.18.0.0/16",
                Err(Refusal::Allowlisted(net("198.18.10.0/24"))),
            ),
            (
                "198.18.10.5/32",
                Err(Refusal::Allowlisted(net("198.18.10.0/24"))),
            ),
            (
                "2001:db8:1:5::/64",
                Err(Refusal::Allowlisted(net("2001:db8:1::/48"))),
            ),
            (
                "198.18.0.0/24",
                Err(Refusal::OwnAddress("198.18.0.1".parse().unwrap())),
            ),
            (
                "2001:db8::/64",
                Err(Refusal::OwnAddress("2001:db8::1".parse().unwrap())),
            ),
        ];
        for (entry, want) in rows {
            assert_eq!(g.check(&net(entry)), want, "{entry}");
        }
    }
}
