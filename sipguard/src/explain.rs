//! `sipguard explain ADDR`: everything the maps hold that decides one
//! source's fate, in the order the program applies it (ARCHITECTURE.md,
//! "policy"), and the verdict its next INVITE, REGISTER and OPTIONS would
//! get from those rules. Read-only: nothing here touches a map's state.
//!
//! Two steps cannot be foreseen from the maps: the per-CPU view of the
//! global budget (`GLOBAL_SHARE`, see "Rate limiting") and the header scan,
//! which judges a request's content. The shared global bucket is shown as
//! it stands; the scan is named when the request would reach it.

use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use serde::Serialize;
use sipguard_common::{
    policy::{Bucket, Limit, POLICY_TRUST},
    source::{BAN_CONFIRMED, BanReason, SrcKey, SrcState},
};

use crate::{addr, maps::Maps};

/// What decides a source's fate now.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub address: IpAddr,
    /// The key its bans and rate state are kept under (an IPv6 address's
    /// group, `ipv6_prefix`).
    pub group: String,
    /// The allowlist entry covering it (the longest).
    pub allowlisted_by: Option<IpNet>,
    /// The blocklist entry covering it (the longest), in force.
    pub blocklisted_by: Option<Listed>,
    /// Its bans in force: its own, and its /64 and /48 when widened.
    pub bans: Vec<BanNow>,
    pub trust: Option<TrustNow>,
    /// Its rate state, if it has one (new and recycled sources have none).
    pub rate: Option<RateNow>,
    /// The shared global budgets, per bucket: packets left before they
    /// drop unknown sources (less what CPUs hold as leases).
    pub global_left: Vec<BucketLeft>,
    pub enforcing: bool,
    /// The verdict its next request of each method would get.
    pub next: Vec<Next>,
}

#[derive(Debug, Serialize)]
pub struct Listed {
    pub entry: IpNet,
    /// The named sets that list it (`set:NAME`, `crowdsec`), or `manual`.
    pub origin: Vec<String>,
    /// Nanoseconds until it lapses (CLOCK_MONOTONIC), `None`: never.
    pub expires_in_ns: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct BanNow {
    /// The key banned: the source's own, or its /64 or /48.
    pub key: String,
    pub reason: &'static str,
    /// The limit exceeded (flood, enumeration) or the signature (scanner).
    pub detail: String,
    /// Caught again while banned: its REGISTERs get no probation.
    pub confirmed: bool,
    pub since_ago_ns: u64,
    pub expires_in_ns: u64,
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct TrustNow {
    pub since_ago_ns: u64,
    pub expires_in_ns: u64,
    pub renewals: u64,
}

#[derive(Debug, Serialize)]
pub struct RateNow {
    /// Packets each bucket would let through now, at once.
    pub left: Vec<BucketLeft>,
    /// Rate violations in the current ban window, against `ban_after`.
    pub violations: u32,
    pub ban_after: u32,
    pub window_packets: u64,
    /// Distinct request targets seen (linear-counting estimate), against
    /// `enum_after`.
    pub targets: u32,
    pub enum_after: u32,
    /// Authentication failures the server answered it with, against
    /// `auth_fail_after`.
    pub auth_failures: u64,
    pub auth_fail_after: u32,
}

#[derive(Debug, Serialize)]
pub struct BucketLeft {
    pub bucket: &'static str,
    /// `None`: the bucket has no limit.
    pub packets: Option<u64>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Next {
    pub method: &'static str,
    /// `pass`, `drop` or `would_drop` (monitor mode); `probation` for a
    /// banned source's REGISTER (two, then one per 5 s, are judged by the
    /// rules after the bans).
    pub verdict: &'static str,
    /// The counter it would be counted under.
    pub reason: &'static str,
}

/// The methods `next` judges, with their buckets.
const METHODS: [(&str, Bucket); 3] = [
    ("INVITE", Bucket::Invite),
    ("REGISTER", Bucket::Register),
    ("OPTIONS", Bucket::Other),
];

/// Explain `ip` at `now_ns` (CLOCK_MONOTONIC); `origin` names who listed
/// a blocklist entry.
pub fn explain(
    maps: &Maps,
    ip: IpAddr,
    now_ns: u64,
    origin: impl Fn(&IpNet) -> Vec<String>,
) -> Result<Explanation> {
    let policy = maps.policy()?;
    let v6_prefix = addr::mask_len(&policy.v6_mask);
    let src = addr::src_key(ip, &policy.v6_mask);
    let mapped = addr::to_mapped(ip);

    let allowlisted_by =
        longest(maps.allow_list()?.into_iter().map(|n| (n, ())), ip).map(|(net, ())| net);
    // The kernel takes the longest entry and then looks at its expiry.
    let blocklisted_by = longest(maps.block_list()?, ip)
        .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now_ns)
        .map(|(entry, e)| Listed {
            entry,
            origin: origin(&entry),
            expires_in_ns: (e.expires_ns != 0).then(|| e.expires_ns - now_ns),
        });

    let mut keys = vec![src];
    if ip.is_ipv6() && v6_prefix > 64 {
        let [first, _] = SrcKey { addr: mapped }.words();
        keys.extend([SrcKey::v6_group(first, 64), SrcKey::v6_group(first, 48)]);
    }
    let bans: Vec<BanNow> = keys
        .iter()
        .filter_map(|k| Some((k, maps.ban(k).ok()??)))
        .filter(|(_, b)| b.expires_ns > now_ns)
        .map(|(k, b)| BanNow {
            key: addr::show_src(k, v6_prefix),
            reason: BanReason::name(b.reason),
            detail: maps.ban_detail(b.reason, b.detail),
            confirmed: b.detail & BAN_CONFIRMED != 0,
            since_ago_ns: now_ns.saturating_sub(b.since_ns),
            expires_in_ns: b.expires_ns - now_ns,
            dropped: b.dropped,
        })
        .collect();

    let trust = maps
        .trusted
        .get(&src, 0)
        .ok()
        .filter(|t| policy.flags & POLICY_TRUST != 0 && t.expires_ns > now_ns)
        .map(|t| TrustNow {
            since_ago_ns: now_ns.saturating_sub(t.since_ns),
            expires_in_ns: t.expires_ns - now_ns,
            renewals: t.renewals,
        });
    let state: Option<SrcState> = maps.src_state.get(&src, 0).ok();
    let limits = if trust.is_some() {
        &policy.trusted
    } else {
        &policy.source
    };
    let rate = state.as_ref().map(|st| RateNow {
        left: Bucket::ALL
            .iter()
            .map(|b| BucketLeft {
                bucket: b.name(),
                packets: left(st.tat_ns[*b as usize], now_ns, &limits[*b as usize]),
            })
            .collect(),
        violations: if now_ns.saturating_sub(st.window_start_ns) > policy.ban_window_ns {
            0
        } else {
            st.violations
        },
        ban_after: policy.ban_after,
        window_packets: st.window_pkts,
        targets: linear_count(st.targets),
        enum_after: policy.enum_after,
        auth_failures: st.auth_fails,
        auth_fail_after: policy.auth_fail_after,
    });
    let global_left = Bucket::ALL
        .iter()
        .map(|b| BucketLeft {
            bucket: b.name(),
            packets: left(
                maps.global_state.get(&(*b as u32), 0).unwrap_or(0),
                now_ns,
                &policy.global[*b as usize],
            ),
        })
        .collect();

    let mut out = Explanation {
        address: ip,
        group: addr::show_src(&src, v6_prefix),
        allowlisted_by,
        blocklisted_by,
        bans,
        trust,
        rate,
        global_left,
        enforcing: policy.enforcing(),
        next: Vec::new(),
    };
    out.next = METHODS.iter().map(|(m, b)| next(&out, m, *b)).collect();
    Ok(out)
}

/// The rules of `policy::front` and `policy::limits` for a request of
/// `method`, from what `e` found.
fn next(e: &Explanation, method: &'static str, bucket: Bucket) -> Next {
    let deny = if e.enforcing { "drop" } else { "would_drop" };
    let verdict = |verdict, reason| Next {
        method,
        verdict,
        reason,
    };
    if e.allowlisted_by.is_some() {
        return verdict("pass", "allowlisted");
    }
    if e.blocklisted_by.is_some() {
        return verdict(deny, "blocklisted");
    }
    let b = bucket as usize;
    // Before the bans: a spent global budget drops an untrusted source's
    // packet at once (`policy::over_spent_budget`).
    let global_spent = e.trust.is_none() && e.global_left[b].packets == Some(0);
    if global_spent {
        return verdict(deny, "rate_global");
    }
    let own = e.bans.iter().find(|b| b.key == e.group);
    if let Some(ban) = own {
        let forgeable = ban.reason != BanReason::name(BanReason::Manual as u32);
        if bucket == Bucket::Register && forgeable && !ban.confirmed {
            return verdict("probation", "banned");
        }
        return verdict(deny, "banned");
    }
    // A /64 or /48 ban: its trusted sources and REGISTERs still pass it.
    let group_banned = e.bans.iter().any(|b| b.key != e.group);
    if group_banned && e.trust.is_none() && bucket != Bucket::Register {
        return verdict(deny, "banned");
    }
    if let Some(rate) = &e.rate
        && rate.left[b].packets == Some(0)
    {
        return verdict(deny, "rate_source");
    }
    // The header scan may still judge its content (signatures,
    // enumeration, malformed requests).
    verdict("pass", "accepted")
}

/// Packets a GCRA bucket at `tat` lets through at once at `now`; `None`
/// for no limit (limit.rs: a packet conforms while `max(tat, now) +
/// interval - now <= burst`).
fn left(tat: u64, now: u64, limit: &Limit) -> Option<u64> {
    if limit.unlimited() {
        return None;
    }
    let owed = tat.saturating_sub(now);
    Some(limit.burst_ns.saturating_sub(owed) / limit.interval_ns)
}

/// The distinct targets a 128-bit linear-counting bitmap stands for.
fn linear_count(bits: [u64; 2]) -> u32 {
    let m = 128.0_f64;
    let zeros = m - f64::from(bits[0].count_ones() + bits[1].count_ones());
    if zeros == 0.0 {
        return 128;
    }
    (m * (m / zeros).ln()).round() as u32
}

/// The longest list entry covering `ip`, as the trie's lookup finds it.
/// An IPv6 entry never covers an IPv4 source (the controller keeps a hole
/// at ::ffff:0:0/96, see ARCHITECTURE.md), as `IpNet::contains` has it.
fn longest<T>(entries: impl IntoIterator<Item = (IpNet, T)>, ip: IpAddr) -> Option<(IpNet, T)> {
    entries
        .into_iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_left_in_a_bucket() {
        let l = Limit::new(10, 1_000_000_000, 20);
        assert_eq!(left(0, 1_000, &l), Some(20), "idle: the whole burst");
        assert_eq!(left(1_000 + 2_000_000_000, 1_000, &l), Some(0), "spent");
        assert_eq!(left(1_000 + 500_000_000, 1_000, &l), Some(15));
        assert_eq!(left(0, 0, &Limit::UNLIMITED), None);
    }

    #[test]
    fn targets_counted() {
        assert_eq!(linear_count([0, 0]), 0);
        assert_eq!(linear_count([1, 0]), 1);
        assert_eq!(linear_count([0xff, 0]), 8);
    }
}
