//! The global budgets through BPF_PROG_TEST_RUN: a packet they drop leaves
//! no per-source state, each CPU's lease of a budget, and live changes.
//! (Per-source limits and bans: fixtures.rs and fixtures_bans.rs.)

use std::{net::IpAddr, thread};

use sipguard::{
    addr::src_key,
    config::{Config, Rate, RateLimit},
    time::monotonic_ns,
};
use sipguard_common::{
    Class, Reason, Verdict,
    maps::{SRC_STATE_MAX, TableStat},
    policy::LEASE_BURST_SHARE,
    source::Trust,
};
use sipguard_tests::{
    harness::{Delta, Harness, XDP_DROP, XDP_PASS},
    lab::{allowed_cpus, pin_cpus},
    packet::{Pkt, SERVER_V4, SERVER_V6, sip::Sip, v4, v6},
};

fn invite(from: IpAddr) -> Vec<u8> {
    let sip = Sip::invite_with_sdp().build();
    match from {
        IpAddr::V4(a) => Pkt::udp_v4(a, SERVER_V4, 5060, sip).build(),
        IpAddr::V6(a) => Pkt::udp_v6(a, SERVER_V6, 5060, sip).build(),
    }
}

/// `packets` per hour, bursts of `burst`: nothing refills during a test.
fn per_hour(packets: u64, burst: u64) -> RateLimit {
    RateLimit {
        rate: Rate {
            packets,
            per_ns: 3_600_000_000_000,
        },
        burst,
    }
}

/// The default configuration with the global INVITE budget `global`.
fn harness(global: RateLimit) -> Harness {
    let mut cfg = Config::default();
    cfg.limits.global.invite = global;
    Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run one INVITE from `from`; the reason it got (drop or pass).
fn reason(h: &Harness, from: IpAddr) -> (Verdict, Reason) {
    reason_of(h, &invite(from), Class::Invite)
}

/// Run `pkt` (of `class`); the reason it got (drop or pass).
fn reason_of(h: &Harness, pkt: &[u8], class: Class) -> (Verdict, Reason) {
    let (action, d) = h.run_counted(pkt).unwrap();
    for (v, r) in [
        (Verdict::Drop, Reason::NotSip),
        (Verdict::Pass, Reason::Accepted),
        (Verdict::Drop, Reason::RateGlobal),
        (Verdict::Drop, Reason::RateSource),
    ] {
        if d == Delta::one(v, r, Some(class), pkt.len()) {
            let want = if v == Verdict::Pass {
                XDP_PASS
            } else {
                XDP_DROP
            };
            assert_eq!(action, want, "{v:?} {r:?}");
            return (v, r);
        }
    }
    panic!("unexpected counters {d:?}");
}

const PASSED: (Verdict, Reason) = (Verdict::Pass, Reason::Accepted);
const GLOBAL: (Verdict, Reason) = (Verdict::Drop, Reason::RateGlobal);
const OWN: (Verdict, Reason) = (Verdict::Drop, Reason::RateSource);

#[test]
fn new_sources_over_the_global_budget_leave_no_rate_state() {
    let h = harness(per_hour(1, 1));
    let first = IpAddr::V4(v4(1000));
    assert_eq!(reason(&h, first), PASSED);
    let new_before = h.table_stat(TableStat::SrcStateNew).unwrap();
    for n in 1001..1301 {
        assert_eq!(reason(&h, IpAddr::V4(v4(n))), GLOBAL, "{}", v4(n));
    }
    assert_eq!(
        h.table_stat(TableStat::SrcStateNew).unwrap() - new_before,
        0,
        "a packet the global budget dropped created rate state"
    );
    let keys: Vec<_> = h.maps().src_state.keys().map(Result::unwrap).collect();
    assert_eq!(keys, [src_key(first, &[0xff; 16])], "rate state kept");
}

/// A spoofed flood from more new sources than the rate-state table holds
/// (IPv6 sources, keyed per address by default) while the global budget is
/// spent: a real source's state (here, its spent INVITE burst) survives.
#[test]
fn real_sources_keep_their_rate_state_through_a_spoofed_flood_larger_than_the_table() {
    let mut cfg = Config::default();
    cfg.limits.invite = per_hour(1, 2);
    cfg.limits.global.invite = per_hour(1, 3);
    let h = Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let real = IpAddr::V4(v4(7));
    let real_key = src_key(real, &[0xff; 16]);
    assert_eq!(reason(&h, real), PASSED);
    assert_eq!(reason(&h, real), PASSED);
    assert_eq!(reason(&h, real), OWN, "its burst of 2 is spent");
    let state = h.maps().src_state.get(&real_key, 0).unwrap();
    // The last global packet goes to the first forged source.
    let flood = SRC_STATE_MAX + SRC_STATE_MAX / 8;
    let mut forged = Forged::new();
    let mut reasons = std::collections::BTreeMap::new();
    for n in 0..flood {
        *reasons.entry(forged.run(&h, n)).or_insert(0u32) += 1;
    }
    assert_eq!(
        reasons,
        [(XDP_PASS, 1), (XDP_DROP, flood - 1)].into_iter().collect(),
        "one forged INVITE takes the last of the global budget, the rest are dropped"
    );
    let kept = h.maps().src_state.get(&real_key, 0);
    assert!(kept.is_ok(), "the real source's rate state was evicted");
    assert_eq!(kept.unwrap(), state, "the real source's rate state changed");
    // With room in the global budget again, its own limit still holds it.
    cfg.limits.global.invite = per_hour(1, 1_000);
    let mut h = h;
    h.maps_mut().apply(&cfg).unwrap();
    assert_eq!(reason(&h, real), OWN);
}

/// INVITEs from IPv6 source `v6(n)`, built once and re-addressed for each
/// run (the program reads no checksum), without counter snapshots: fast
/// enough for floods of runs.
struct Forged(Vec<u8>);

impl Forged {
    /// Where the IPv6 source address sits in the frame.
    const SRC: std::ops::Range<usize> = 14 + 8..14 + 24;

    fn new() -> Self {
        Forged(invite(IpAddr::V6(v6(0))))
    }

    /// The XDP action for an INVITE from `v6(n)`.
    fn run(&mut self, h: &Harness, n: u32) -> u32 {
        self.0[Self::SRC].copy_from_slice(&v6(n).octets());
        h.run(&self.0).unwrap()
    }
}

/// A CPU takes a lease of the budget (a 64th of the burst) and spends it
/// alone; every lease is charged to the shared bucket, so one CPU gets the
/// burst exactly.
#[test]
fn one_cpu_gets_the_global_burst_exactly_through_its_leases() {
    let cpus = allowed_cpus().unwrap();
    let burst = 10 * LEASE_BURST_SHARE; // leases of 10
    let h = harness(per_hour(1, burst));
    let passed = on_cpu(cpus[0], || count_passed(&h, 0, 2 * burst as u32));
    assert_eq!(passed, burst, "passed of {}", 2 * burst);
}

/// Two CPUs flooding at once: together they admit the burst, less what a
/// CPU leased and never spent (under one lease each), plus at most one lease
/// per other CPU: a CPU decides on the shared bucket as it read it, and
/// another CPU's lease may land between its read and its add (the target
/// has no compare-and-swap; see `limit::conform_global`).
#[test]
fn two_cpus_share_the_global_burst_within_a_lease_each() {
    let cpus = allowed_cpus().unwrap();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs, this process may use {cpus:?}");
        return;
    }
    let lease = 10;
    let burst = lease * LEASE_BURST_SHARE;
    let h = harness(per_hour(1, burst));
    // One packet first, so the shared bucket is no longer idle when the
    // CPUs race: the bound below is the one for a busy bucket (an idle one
    // is reset by a plain store, whose race ARCHITECTURE states apart).
    let first = on_cpu(cpus[0], || count_passed(&h, 1 << 20, 1));
    assert_eq!(first, 1);
    let per_cpu = 2 * burst as u32;
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| on_cpu(cpus[0], || count_passed(&h, 0, per_cpu)));
        let b = s.spawn(|| on_cpu(cpus[1], || count_passed(&h, per_cpu, per_cpu)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let total = first + a + b;
    let (least, most) = (burst - 2 * (lease - 1), burst + lease);
    assert!(
        (least..=most).contains(&total),
        "CPU {} admitted {a}, CPU {} {b}, after 1: {total} in all, want {least} to {most}",
        cpus[0],
        cpus[1],
    );
}

fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    pin_cpus(&[cpu]).unwrap();
    f()
}

/// INVITEs from `n` new IPv6 sources from number `first`; how many passed.
fn count_passed(h: &Harness, first: u32, n: u32) -> u64 {
    let mut forged = Forged::new();
    (first..first + n)
        .filter(|&i| forged.run(h, i) == XDP_PASS)
        .count() as u64
}

/// A CPU that found the budget spent denies without looking again until it
/// refills; a live change of the limit voids that note at once.
#[test]
fn a_raised_global_limit_applies_at_once_while_the_budget_is_spent() {
    let mut h = harness(per_hour(1, 1));
    assert_eq!(reason(&h, IpAddr::V4(v4(1))), PASSED);
    assert_eq!(reason(&h, IpAddr::V4(v4(2))), GLOBAL);
    let mut cfg = Config::default();
    cfg.limits.global.invite = per_hour(1, 5);
    h.maps_mut().apply(&cfg).unwrap();
    for n in 3..7 {
        assert_eq!(reason(&h, IpAddr::V4(v4(n))), PASSED, "{}", v4(n));
    }
    assert_eq!(reason(&h, IpAddr::V4(v4(7))), GLOBAL);
}

const HOUR: u64 = 3_600_000_000_000;

/// Spend the global INVITE budget (one packet) and let this CPU find it
/// spent, so its next packets take the first stage's fast path.
fn spend_the_budget(h: &Harness) {
    assert_eq!(reason(h, IpAddr::V4(v4(1))), PASSED);
    assert_eq!(reason(h, IpAddr::V4(v4(2))), GLOBAL);
}

/// A spent budget is decided in the first stage for sources whose trust
/// hint is out; trust in `TRUSTED` without a hint (maps pinned by an agent
/// without hints) is seen once the controller syncs the hints, which it
/// does at start and on every sweep.
#[test]
fn trust_without_a_hint_counts_once_the_hints_are_synced() {
    let cpus = allowed_cpus().unwrap();
    on_cpu(cpus[0], || {
        let mut h = harness(per_hour(1, 1));
        spend_the_budget(&h);
        let client = IpAddr::V4(v4(3));
        let key = src_key(client, &[0xff; 16]);
        let now = monotonic_ns();
        let trust = Trust {
            expires_ns: now + HOUR,
            since_ns: now,
            renewals: 1,
        };
        h.maps_mut().trusted.insert(key, trust, 0).unwrap();
        assert_eq!(reason(&h, client), GLOBAL, "no hint: judged as untrusted");
        assert_eq!(h.maps_mut().sync_trust_hints(monotonic_ns()).unwrap(), 1);
        assert_eq!(reason(&h, client), PASSED, "hint synced: trusted");
        assert_eq!(
            reason(&h, IpAddr::V4(v4(4))),
            GLOBAL,
            "others still dropped"
        );
    });
}

/// The fast path leaves to the first stage what it judges itself: with
/// the budget spent, a non-SIP payload is still dropped as `not_sip`.
#[test]
fn a_spent_budget_leaves_malformed_packets_their_reason() {
    let cpus = allowed_cpus().unwrap();
    on_cpu(cpus[0], || {
        let mut cfg = Config::default();
        cfg.limits.global.other = per_hour(1, 1);
        let h = Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
        let options =
            |n: u32| Pkt::udp_v4(v4(n), SERVER_V4, 5060, Sip::request("OPTIONS").build()).build();
        assert_eq!(reason_of(&h, &options(1), Class::Options), PASSED);
        assert_eq!(reason_of(&h, &options(2), Class::Options), GLOBAL);
        let not_sip = Pkt::udp_v4(v4(3), SERVER_V4, 5060, vec![b'x'; 64]).build();
        assert_eq!(
            reason_of(&h, &not_sip, Class::NotSip),
            (Verdict::Drop, Reason::NotSip)
        );
        assert_eq!(reason_of(&h, &options(4), Class::Options), GLOBAL);
    });
}
