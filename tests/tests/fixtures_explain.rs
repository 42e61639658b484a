//! `sipguard explain` (sipguard/src/explain.rs) against the programs
//! themselves (BPF_PROG_TEST_RUN): for an allowlisted, a blocklisted, a
//! banned (each reason), a trusted, a rate-limited and an unknown source,
//! IPv4 and IPv6, what it reports, and that the verdict it foresees for the
//! next INVITE, REGISTER and OPTIONS is the one the program then gives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sipguard::{
    addr::src_key,
    config::{Config, Rate, RateLimit},
    explain::{Explanation, explain},
    time::monotonic_ns,
};
use sipguard_common::source::{Ban, BanReason, SrcKey, Trust};
use sipguard_tests::{
    harness::{Delta, Harness},
    packet::{Pkt, SERVER_V4, SERVER_V6, scanner_options, sip::Sip, v4, v6},
};

const HOUR: u64 = 3_600_000_000_000;

/// Default limits, INVITE per source down to a burst of 2, and IPv6 keyed
/// by `v6_prefix` bits.
fn harness(v6_prefix: u8) -> Harness {
    let mut cfg = Config {
        ipv6_prefix: v6_prefix,
        ..Config::default()
    };
    cfg.limits.invite = RateLimit {
        rate: Rate::per_sec(1),
        burst: 2,
    };
    Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"))
}

fn key(h: &Harness, ip: IpAddr) -> SrcKey {
    src_key(ip, &h.maps().policy().unwrap().v6_mask)
}

fn ban(h: &mut Harness, k: SrcKey, reason: BanReason, detail: u32) {
    let now = monotonic_ns();
    h.maps_mut()
        .ban_add(
            k,
            Ban {
                expires_ns: now + HOUR,
                since_ns: now - 1_000_000_000,
                reason: reason as u32,
                detail,
                dropped: 7,
            },
        )
        .unwrap();
}

fn trust(h: &mut Harness, ip: IpAddr) {
    let now = monotonic_ns();
    let k = key(h, ip);
    h.maps_mut()
        .trusted
        .insert(
            k,
            Trust {
                expires_ns: now + HOUR,
                // Backdated by a second only: a freshly booted VM's
                // monotonic clock may not have reached a minute yet.
                since_ns: now.saturating_sub(1_000_000_000),
                renewals: 3,
            },
            0,
        )
        .unwrap();
    h.maps_mut().sync_trust_hints(now).unwrap();
}

fn explained(h: &Harness, ip: IpAddr) -> Explanation {
    explain(h.maps(), ip, monotonic_ns(), |_| vec!["manual".into()]).unwrap()
}

fn packet(ip: IpAddr, method: &str) -> Vec<u8> {
    let sip = Sip::request(method).build();
    match ip {
        IpAddr::V4(a) => Pkt::udp_v4(a, SERVER_V4, 5060, sip).build(),
        IpAddr::V6(a) => Pkt::udp_v6(a, SERVER_V6, 5060, sip).build(),
    }
}

/// The (verdict, reason) the program gives one packet.
fn judged(h: &Harness, pkt: &[u8]) -> (&'static str, &'static str) {
    let (_, d): (u32, Delta) = h.run_counted(pkt).unwrap();
    let ((verdict, reason), _) = d
        .reasons
        .iter()
        .next()
        .unwrap_or_else(|| panic!("nothing counted: {d:?}"));
    (verdict, reason)
}

/// Every foreseen verdict is the program's: for each method, explain, then
/// send one request and compare. `probation` is the ban's first REGISTERs
/// going on to the limits, which pass it here.
fn foreseen_as_judged(h: &Harness, ip: IpAddr) -> Vec<String> {
    let mut got = Vec::new();
    for method in ["INVITE", "REGISTER", "OPTIONS"] {
        let e = explained(h, ip);
        let next = e.next.iter().find(|n| n.method == method).unwrap();
        let actual = judged(h, &packet(ip, method));
        let expected = match (next.verdict, next.reason) {
            ("probation", _) => ("pass", "accepted"),
            (v, r) => (v, r),
        };
        assert_eq!(
            actual, expected,
            "{ip} {method}: explain foresaw {next:?}, the program said {actual:?}"
        );
        got.push(format!("{method} {} {}", next.verdict, next.reason));
    }
    got
}

#[test]
fn an_unknown_source_is_accepted_with_whole_bursts() {
    let h = harness(128);
    let ip = IpAddr::V4(v4(200));
    let e = explained(&h, ip);
    assert!(e.allowlisted_by.is_none() && e.blocklisted_by.is_none());
    assert!(e.bans.is_empty() && e.trust.is_none() && e.rate.is_none());
    assert_eq!(
        foreseen_as_judged(&h, ip),
        [
            "INVITE pass accepted",
            "REGISTER pass accepted",
            "OPTIONS pass accepted"
        ]
    );
    // Its rate state now exists: one INVITE of the burst of 2 spent.
    let rate = explained(&h, ip).rate.expect("rate state");
    assert_eq!(rate.left[0].bucket, "invite");
    assert_eq!(rate.left[0].packets, Some(1));
}

#[test]
fn a_source_over_its_own_limit_is_foreseen_as_rate_source() {
    let h = harness(128);
    let ip = IpAddr::V4(v4(201));
    for _ in 0..2 {
        assert_eq!(judged(&h, &packet(ip, "INVITE")), ("pass", "accepted"));
    }
    let e = explained(&h, ip);
    let rate = e.rate.as_ref().unwrap();
    assert_eq!(rate.left[0].packets, Some(0));
    assert_eq!(rate.window_packets, 2);
    assert_eq!(
        foreseen_as_judged(&h, ip),
        [
            "INVITE drop rate_source",
            "REGISTER pass accepted",
            "OPTIONS pass accepted"
        ]
    );
    assert_eq!(explained(&h, ip).rate.unwrap().violations, 1);
}

#[test]
fn listed_sources_show_their_entry() {
    let mut h = harness(128);
    let allowed = IpAddr::V4(v4(202));
    let blocked = IpAddr::V6(v6(203));
    h.maps_mut()
        .allow_add(&["198.18.0.0/24".parse().unwrap()])
        .unwrap();
    // An expiring /48 and a permanent /64 inside it: the longest decides.
    h.maps_mut()
        .block_add(&["2001:db8::/48".parse().unwrap()], monotonic_ns() + HOUR)
        .unwrap();
    h.maps_mut()
        .block_add(&["2001:db8:0:1::/64".parse().unwrap()], 0)
        .unwrap();

    let e = explained(&h, allowed);
    assert_eq!(e.allowlisted_by, Some("198.18.0.0/24".parse().unwrap()));
    assert_eq!(
        foreseen_as_judged(&h, allowed),
        [
            "INVITE pass allowlisted",
            "REGISTER pass allowlisted",
            "OPTIONS pass allowlisted"
        ]
    );

    let e = explained(&h, blocked);
    let listed = e.blocklisted_by.expect("blocklisted");
    assert_eq!(listed.entry, "2001:db8:0:1::/64".parse().unwrap());
    assert_eq!(listed.expires_in_ns, None);
    assert_eq!(listed.origin, ["manual"]);
    assert_eq!(
        foreseen_as_judged(&h, blocked),
        [
            "INVITE drop blocklisted",
            "REGISTER drop blocklisted",
            "OPTIONS drop blocklisted"
        ]
    );
}

#[test]
fn each_ban_reason_is_shown_and_foreseen() {
    let mut h = harness(128);
    for (n, reason) in [
        BanReason::Flood,
        BanReason::Manual,
        BanReason::Scanner,
        BanReason::Enumeration,
        BanReason::AuthFailure,
    ]
    .into_iter()
    .enumerate()
    {
        let ip = IpAddr::V4(v4(210 + n as u32));
        let k = key(&h, ip);
        ban(&mut h, k, reason, 0);
        let e = explained(&h, ip);
        assert_eq!(e.bans.len(), 1, "{reason:?}");
        let b = &e.bans[0];
        assert_eq!(b.reason, BanReason::name(reason as u32));
        assert_eq!(b.key, ip.to_string());
        assert_eq!(b.dropped, 7);
        assert!(b.expires_in_ns > HOUR - 60_000_000_000 && b.since_ago_ns >= 1_000_000_000);
        // A REGISTER gets probation, but from a manual ban.
        let register = if reason == BanReason::Manual {
            "REGISTER drop banned"
        } else {
            "REGISTER probation banned"
        };
        assert_eq!(
            foreseen_as_judged(&h, ip),
            ["INVITE drop banned", register, "OPTIONS drop banned"],
            "{reason:?}"
        );
    }
}

/// A ban's dropped packets count those its `BAN_SLOTS` slot dropped (the
/// fast path), as `bans list` shows them.
#[test]
fn a_bans_drops_include_those_of_its_fast_path() {
    let mut h = harness(128);
    let ip = IpAddr::V4(v4(230));
    let k = key(&h, ip);
    ban(&mut h, k, BanReason::Flood, 0);
    for _ in 0..3 {
        assert_eq!(judged(&h, &packet(ip, "INVITE")), ("drop", "banned"));
    }
    assert_eq!(explained(&h, ip).bans[0].dropped, 7 + 3);
    let listed = h.maps().bans_list().unwrap();
    assert_eq!(
        listed.iter().find(|(b, _)| *b == k).unwrap().1.dropped,
        7 + 3
    );
}

#[test]
fn a_scanner_ban_names_its_signature() {
    let h = harness(128);
    let ip = Ipv4Addr::new(198, 18, 3, 3);
    assert_eq!(judged(&h, &scanner_options(ip)), ("drop", "scanner"));
    let e = explained(&h, IpAddr::V4(ip));
    assert_eq!(e.bans[0].reason, "scanner");
    assert!(
        e.bans[0].detail.contains("friendly-scanner"),
        "{:?}",
        e.bans[0]
    );
}

#[test]
fn trust_is_shown_and_a_trusted_source_passes() {
    let mut h = harness(128);
    let ip = IpAddr::V6(v6(220));
    trust(&mut h, ip);
    let e = explained(&h, ip);
    let t = e.trust.expect("trusted");
    assert_eq!(t.renewals, 3);
    assert!(t.since_ago_ns >= 1_000_000_000);
    assert_eq!(
        foreseen_as_judged(&h, ip),
        [
            "INVITE pass accepted",
            "REGISTER pass accepted",
            "OPTIONS pass accepted"
        ]
    );
}

#[test]
fn ipv6_sources_show_their_group_and_its_widened_bans() {
    // Keyed per /64: the group is what bans and rate state hold.
    let h = harness(64);
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 7, 1, 2, 3, 4));
    assert_eq!(explained(&h, ip).group, "2001:db8:7:7::/64");

    // Keyed per address, with the /64 widened: INVITEs banned, REGISTERs
    // and the /64's trusted sources pass it.
    let mut h = harness(128);
    let [first, _] = key(&h, ip).words();
    ban(&mut h, SrcKey::v6_group(first, 64), BanReason::Widened, 64);
    let e = explained(&h, ip);
    assert_eq!(e.group, "2001:db8:7:7:1:2:3:4");
    assert_eq!(e.bans.len(), 1);
    assert_eq!(e.bans[0].key, "2001:db8:7:7::/64");
    assert_eq!(e.bans[0].reason, "widened");
    assert_eq!(
        foreseen_as_judged(&h, ip),
        [
            "INVITE drop banned",
            "REGISTER pass accepted",
            "OPTIONS drop banned"
        ]
    );
    let neighbour = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 7, 9, 9, 9, 9));
    trust(&mut h, neighbour);
    assert_eq!(
        foreseen_as_judged(&h, neighbour),
        [
            "INVITE pass accepted",
            "REGISTER pass accepted",
            "OPTIONS pass accepted"
        ]
    );
}

#[test]
fn monitor_mode_foresees_would_drop() {
    let mut cfg = Config {
        enforce: false,
        ..Config::default()
    };
    cfg.block = vec!["198.18.4.0/24".parse().unwrap()];
    let h = Harness::with_config(&cfg).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 4, 4));
    let e = explained(&h, ip);
    assert!(!e.enforcing);
    assert_eq!(
        foreseen_as_judged(&h, ip)[0],
        "INVITE would_drop blocklisted"
    );
}
