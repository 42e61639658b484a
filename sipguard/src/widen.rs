//! Widening IPv6 bans. Sources are keyed per address (`ipv6_prefix`, 128 by
//! default), so an attacker sharing a /64 with customers (hosting providers
//! hand out single addresses or /124s from one /64) is banned alone. One
//! that rotates addresses inside its prefix is caught here instead: once
//! `WIDEN_AFTER` addresses of one /64 are banned within the ban window, the
//! agent bans the /64; once as many /64s of one /48 are, the /48. So a /48
//! cannot fill the ban table either. The program lets a group ban's trusted
//! sources and REGISTERs through (`policy::group_banned`).

use std::{collections::HashMap, net::IpAddr};

use sipguard_common::source::{SrcKey, WIDEN_AFTER};

use crate::addr;

/// Recent bans per prefix, and which prefixes to ban.
#[derive(Default)]
pub struct Widener {
    /// /64 prefix (first word) -> banned addresses in it, with when.
    addrs: HashMap<u64, Vec<(SrcKey, u64)>>,
    /// /48 prefix -> banned /64s in it, with when.
    nets: HashMap<u64, Vec<(SrcKey, u64)>>,
}

impl Widener {
    /// `key` was banned at `now_ns`; the group keys to ban now (none, a /64,
    /// or a /64 and its /48), each once.
    pub fn on_ban(&mut self, key: &SrcKey, now_ns: u64, window_ns: u64) -> Vec<SrcKey> {
        if matches!(addr::from_mapped(key.addr), IpAddr::V4(_)) {
            return Vec::new();
        }
        let first = key.words()[0];
        let (table, group) = match key.group_bits() {
            None => (&mut self.addrs, SrcKey::v6_group(first, 64)),
            Some(64) => (&mut self.nets, SrcKey::v6_group(first, 48)),
            Some(_) => return Vec::new(),
        };
        let prefix = group.words()[0];
        let seen = table.entry(prefix).or_default();
        seen.retain(|(k, at)| now_ns.saturating_sub(*at) <= window_ns && !k.same(key));
        seen.push((*key, now_ns));
        if seen.len() < WIDEN_AFTER {
            return Vec::new();
        }
        table.remove(&prefix);
        let mut out = vec![group];
        out.extend(self.on_ban(&group, now_ns, window_ns));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn key(s: &str) -> SrcKey {
        SrcKey {
            addr: s.parse::<Ipv6Addr>().unwrap().octets(),
        }
    }

    const WINDOW: u64 = 10_000_000_000;

    #[test]
    fn widens_to_the_64_then_the_48_and_only_within_the_window() {
        let mut w = Widener::default();
        for i in 1..WIDEN_AFTER {
            let k = key(&format!("2001:db8:1:2::{i:x}"));
            assert!(w.on_ban(&k, 0, WINDOW).is_empty(), "{i} addresses");
            // The same address again is not another one.
            assert!(w.on_ban(&k, 0, WINDOW).is_empty());
        }
        let out = w.on_ban(&key("2001:db8:1:2::ff"), 0, WINDOW);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].group_bits(), Some(64));
        assert_eq!(addr::show_src(&out[0], 128), "2001:db8:1:2::/64");

        // Addresses of other /64s of the /48: each /64 widened adds to the /48.
        let mut widened = vec![out[0]];
        for net in 3..(2 + WIDEN_AFTER as u32) {
            let mut last = Vec::new();
            for i in 1..=WIDEN_AFTER {
                last = w.on_ban(&key(&format!("2001:db8:1:{net:x}::{i:x}")), 0, WINDOW);
            }
            widened.extend(last);
        }
        let bits: Vec<_> = widened.iter().map(|k| k.group_bits()).collect();
        assert_eq!(bits.iter().filter(|b| **b == Some(64)).count(), WIDEN_AFTER);
        assert_eq!(bits.last(), Some(&Some(48)), "{bits:?}");
        assert_eq!(
            addr::show_src(widened.last().unwrap(), 128),
            "2001:db8:1::/48"
        );

        // Bans spread over more than the window never add up.
        let mut w = Widener::default();
        for i in 0..3 * WIDEN_AFTER as u64 {
            let k = key(&format!("2001:db8:9:9::{i:x}"));
            assert!(w.on_ban(&k, i * WINDOW, WINDOW).is_empty(), "ban {i}");
        }
        // IPv4 never widens.
        let v4 = addr::src_key("198.18.0.1".parse().unwrap(), &[0xff; 16]);
        for _ in 0..2 * WIDEN_AFTER {
            assert!(w.on_ban(&v4, 0, WINDOW).is_empty());
        }
    }
}
