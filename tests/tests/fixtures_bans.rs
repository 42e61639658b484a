//! Bans through BPF_PROG_TEST_RUN: the `BAN_SLOTS` fast path and its
//! fallback to `BANS`, lifting bans at once, expiry on the programs'
//! calibrated clock, and the sweep mending a slot a racing writer lost.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    thread,
    time::Duration,
};

use sipguard::{
    addr::src_key,
    config::{Config, Rate, RateLimit},
    time::monotonic_ns,
};
use sipguard_common::{
    Class, Reason, Verdict,
    maps::TableStat,
    policy::prefix_mask,
    source::{Ban, BanReason, BanSlot, SrcKey},
};
use sipguard_tests::{
    harness::{Delta, Harness},
    packet::{Pkt, SERVER_V4, SERVER_V6, Tcp, sip::Sip, v4, v6},
};

fn key(a: Ipv4Addr) -> SrcKey {
    src_key(std::net::IpAddr::V4(a), &[0xff; 16])
}

fn invite(from: Ipv4Addr) -> Vec<u8> {
    Pkt::udp_v4(from, SERVER_V4, 5060, Sip::invite_with_sdp().build()).build()
}

/// The reason `h` gave one INVITE from `from` (drop or pass).
fn verdict(h: &Harness, from: Ipv4Addr) -> (Verdict, Reason) {
    let pkt = invite(from);
    let (_, d) = h.run_counted(&pkt).unwrap();
    for v in [Verdict::Drop, Verdict::Pass] {
        for r in [Reason::Banned, Reason::Accepted, Reason::RateSource] {
            if d == Delta::one(v, r, Some(Class::Invite), pkt.len()) {
                return (v, r);
            }
        }
    }
    panic!("{from}: unexpected counters {d:?}");
}

const BANNED: (Verdict, Reason) = (Verdict::Drop, Reason::Banned);
const PASSED: (Verdict, Reason) = (Verdict::Pass, Reason::Accepted);

/// Limits no test packet reaches, so only bans decide.
fn harness() -> Harness {
    harness_keyed_by(Config::default().ipv6_prefix)
}

/// `harness()` with IPv6 sources keyed by `prefix` bits.
fn harness_keyed_by(prefix: u8) -> Harness {
    let mut cfg = Config {
        ipv6_prefix: prefix,
        ..Config::default()
    };
    let huge = RateLimit {
        rate: Rate::per_sec(1_000_000),
        burst: 1_000_000,
    };
    for l in [&mut cfg.limits.invite, &mut cfg.limits.global.invite] {
        *l = huge;
    }
    Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"))
}

fn ban(h: &mut Harness, a: Ipv4Addr, for_ns: u64) {
    ban_because(h, a, BanReason::Manual, for_ns);
}

/// A ban of `reason` on `a` for `for_ns`, set by hand as the program sets
/// one.
fn ban_because(h: &mut Harness, a: Ipv4Addr, reason: BanReason, for_ns: u64) {
    let now = monotonic_ns();
    let ban = Ban {
        expires_ns: now + for_ns,
        since_ns: now,
        reason: reason as u32,
        detail: 0,
        dropped: 0,
    };
    h.maps_mut().ban_add(key(a), ban).unwrap();
}

fn dropped(h: &Harness, a: Ipv4Addr) -> u64 {
    let k = key(a);
    h.maps()
        .bans_list()
        .unwrap()
        .into_iter()
        .find(|(b, _)| *b == k)
        .map(|(_, ban)| ban.dropped)
        .unwrap_or_else(|| panic!("{a} is not banned"))
}

/// Two test sources whose keys share a `BAN_SLOTS` slot, and one in
/// another slot.
fn colliding() -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    let mut seen = std::collections::HashMap::new();
    for n in 1..(1 << 17) {
        let a = v4(n);
        if let Some(b) = seen.insert(key(a).ban_slot(), a) {
            let other = (1..)
                .map(v4)
                .find(|c| key(*c).ban_slot() != key(a).ban_slot())
                .unwrap();
            return (b, a, other);
        }
    }
    panic!("no two test addresses share a ban slot");
}

const HOUR: u64 = 3_600_000_000_000;

/// An hour's manual ban from `now`.
fn manual_ban(now: u64) -> Ban {
    Ban {
        expires_ns: now + HOUR,
        since_ns: now,
        reason: BanReason::Manual as u32,
        detail: 0,
        dropped: 0,
    }
}

#[test]
fn bans_sharing_a_slot_each_drop_and_lift_alone() {
    let (a, b, c) = colliding();
    let mut h = harness();
    ban(&mut h, a, HOUR);
    ban(&mut h, b, HOUR);
    // a owns the slot (dropped from the slot), b is found in BANS.
    for _ in 0..3 {
        assert_eq!(verdict(&h, a), BANNED, "{a}");
        assert_eq!(verdict(&h, b), BANNED, "{b}");
        assert_eq!(verdict(&h, c), PASSED, "{c}");
    }
    assert_eq!(dropped(&h, a), 3, "drops counted in the slot");
    assert_eq!(dropped(&h, b), 3, "drops counted in BANS");
    h.maps_mut().bans_del(&[key(a)]).unwrap();
    assert_eq!(verdict(&h, a), PASSED, "{a} lifted at once");
    assert_eq!(verdict(&h, b), BANNED, "{b} still banned");
    h.maps_mut().bans_del(&[key(b)]).unwrap();
    assert_eq!(verdict(&h, b), PASSED, "{b} lifted at once");
    assert!(h.maps().bans_list().unwrap().is_empty());
}

#[test]
fn bans_clear_lifts_every_ban() {
    let (a, b, c) = colliding();
    let mut h = harness();
    for x in [a, b, c] {
        ban(&mut h, x, HOUR);
        assert_eq!(verdict(&h, x), BANNED, "{x}");
    }
    assert_eq!(h.maps_mut().bans_clear().unwrap(), 3);
    for x in [a, b, c] {
        assert_eq!(verdict(&h, x), PASSED, "{x}");
    }
}

/// The program reads a jiffies clock calibrated to CLOCK_MONOTONIC at load:
/// a ban set by the controller in CLOCK_MONOTONIC ns holds until its time
/// and lifts after it, give or take a tick.
#[test]
fn a_ban_expires_on_time() {
    let mut h = harness();
    let a = v4(7);
    // Checked against the time that really passed, not the sleeps: under
    // emulation (the kernel matrix) a test run can take tens of ms.
    let ban_for = Duration::from_secs(2);
    let margin = Duration::from_millis(300);
    let t0 = std::time::Instant::now();
    ban(&mut h, a, ban_for.as_nanos() as u64);
    assert_eq!(verdict(&h, a), BANNED);
    thread::sleep(Duration::from_millis(500));
    let seen = verdict(&h, a);
    if t0.elapsed() < ban_for - margin {
        assert_eq!(seen, BANNED, "{:?} into a {ban_for:?} ban", t0.elapsed());
    }
    thread::sleep((ban_for + margin).saturating_sub(t0.elapsed()));
    assert_eq!(
        verdict(&h, a),
        PASSED,
        "{:?} into a {ban_for:?} ban",
        t0.elapsed()
    );
    // The program met the expired ban and removed it (once).
    assert_eq!(verdict(&h, a), PASSED);
    assert!(h.maps().bans_list().unwrap().is_empty());
    assert_eq!(h.table_stat(TableStat::BanExpired).unwrap(), 1);
}

/// A ban the program sets itself (here: over the per-source limit) drops
/// the source's next packets from its ban slot, and they are counted on
/// the ban.
#[test]
fn a_ban_the_program_sets_drops_from_the_slot() {
    let mut cfg = Config::default();
    cfg.limits.invite = RateLimit {
        rate: Rate::per_sec(1),
        burst: 1,
    };
    cfg.ban.after = 2;
    let h = Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let a = v4(9);
    assert_eq!(verdict(&h, a), PASSED);
    assert_eq!(verdict(&h, a), (Verdict::Drop, Reason::RateSource));
    assert_eq!(
        verdict(&h, a),
        (Verdict::Drop, Reason::RateSource),
        "2nd violation bans"
    );
    for _ in 0..5 {
        assert_eq!(verdict(&h, a), BANNED);
    }
    let slot: BanSlot = h.maps().ban_slots.get(&key(a).ban_slot(), 0).unwrap();
    assert_eq!(slot.key, key(a), "the program took the slot");
    assert_eq!(dropped(&h, a), 5);
}

/// If two writers raced and a ban's slot lost it, the source would pass;
/// the sweep (every 5 s in the agent) puts it back.
#[test]
fn the_sweep_mends_a_lost_slot() {
    let mut h = harness();
    let a = v4(11);
    ban(&mut h, a, HOUR);
    assert_eq!(verdict(&h, a), BANNED);
    h.maps_mut()
        .ban_slots
        .set(key(a).ban_slot(), BanSlot::default(), 0)
        .unwrap();
    assert_eq!(
        verdict(&h, a),
        PASSED,
        "a lost slot lets the source through"
    );
    assert_eq!(h.maps_mut().sync_ban_slots(monotonic_ns()).unwrap(), 1);
    assert_eq!(verdict(&h, a), BANNED, "mended");
    assert_eq!(h.maps_mut().sync_ban_slots(monotonic_ns()).unwrap(), 0);
}

/// A ban keyed by its /64 (with `ipv6_prefix = 64`) drops every address of
/// that /64, on the slot's fast path and through `BANS` alike, and nothing
/// outside it; an IPv4 ban drops that one address. The program builds the
/// keys from the packet (parse.rs, `policy::group`) and the controller from
/// the address (`src_key`): this checks that both agree, word for word.
#[test]
fn bans_match_the_programs_keys_v6_by_64_and_v4() {
    let mut h = harness_keyed_by(64);
    let from6 =
        |a: Ipv6Addr| Pkt::udp_v6(a, SERVER_V6, 5060, Sip::invite_with_sdp().build()).build();
    let verdict6 = |h: &Harness, a: Ipv6Addr| {
        let pkt = from6(a);
        let (_, d) = h.run_counted(&pkt).unwrap();
        for (v, r) in [BANNED, PASSED] {
            if d == Delta::one(v, r, Some(Class::Invite), pkt.len()) {
                return (v, r);
            }
        }
        panic!("{a}: unexpected counters {d:?}");
    };
    let net = v6(7);
    let same_64 = Ipv6Addr::from(u128::from(net) ^ 0xffff_ffff_ffff_ffff);
    let next_64 = Ipv6Addr::from(u128::from(net) + (1 << 64));
    let v4_banned = v4(3);
    let now = monotonic_ns();
    let entry = manual_ban(now);
    let key64 = src_key(IpAddr::V6(net), &prefix_mask(64));
    h.maps_mut().ban_add(key64, entry).unwrap();
    h.maps_mut().ban_add(key(v4_banned), entry).unwrap();

    for a in [net, same_64] {
        assert_eq!(verdict6(&h, a), BANNED, "{a} is in the banned /64");
    }
    assert_eq!(verdict6(&h, next_64), PASSED, "{next_64} is in another /64");
    assert_eq!(verdict(&h, v4_banned), BANNED);
    assert_eq!(verdict(&h, v4(4)), PASSED);

    // The same with the /64's ban slot held by another key's live ban
    // (banned first, so the slot keeps it): `BANS` decides, by the same key.
    let mut h = harness_keyed_by(64);
    let squatter = (1..1 << 20)
        .map(v4)
        .find(|a| key(*a).ban_slot() == key64.ban_slot())
        .expect("an IPv4 key sharing the /64's ban slot");
    h.maps_mut().ban_add(key(squatter), entry).unwrap();
    h.maps_mut().ban_add(key64, entry).unwrap();
    let slot = h.maps().ban_slots.get(&key64.ban_slot(), 0).unwrap();
    assert!(slot.key.same(&key(squatter)), "the slot is the squatter's");
    assert_eq!(verdict6(&h, same_64), BANNED, "BANS holds the /64");
    assert_eq!(verdict6(&h, next_64), PASSED);
    assert_eq!(verdict(&h, squatter), BANNED);
}

/// Per-address keys (the default) with a widened ban on a /64 or /48 (the
/// agent sets those, widen.rs): the prefix's addresses are dropped, except
/// its REGISTERs and its trusted sources, which get through to the usual
/// rules; an address's own ban still drops everything from it; other
/// prefixes are untouched. An attacker and a customer sharing a /64 are
/// told apart.
#[test]
fn widened_bans_spare_trusted_sources_and_registrations() {
    let mut h = harness();
    let from6 = |a: Ipv6Addr, method: &str| {
        Pkt::udp_v6(a, SERVER_V6, 5060, Sip::request(method).build()).build()
    };
    let v6_of =
        |h: &Harness, a: Ipv6Addr, method: &str| h.run_counted(&from6(a, method)).unwrap().1;
    let is = |d: &Delta, (v, r): (Verdict, Reason)| d.reasons.contains_key(&(v.name(), r.name()));
    let attacker: Ipv6Addr = "2001:db8:77:1::a".parse().unwrap();
    let phone: Ipv6Addr = "2001:db8:77:1::b".parse().unwrap();
    let newcomer: Ipv6Addr = "2001:db8:77:1::c".parse().unwrap();
    let in_48: Ipv6Addr = "2001:db8:77:2::1".parse().unwrap();
    let elsewhere: Ipv6Addr = "2001:db8:78::1".parse().unwrap();
    let now = monotonic_ns();
    let ban = |reason: BanReason, bits: u32| Ban {
        expires_ns: now + HOUR,
        since_ns: now,
        reason: reason as u32,
        detail: bits,
        dropped: 0,
    };
    let mask = prefix_mask(128);
    let word0 = |a: Ipv6Addr| src_key(IpAddr::V6(a), &mask).words()[0];
    h.maps_mut()
        .ban_add(
            src_key(IpAddr::V6(attacker), &mask),
            ban(BanReason::Flood, 0),
        )
        .unwrap();
    h.maps_mut()
        .ban_add(
            SrcKey::v6_group(word0(attacker), 64),
            ban(BanReason::Widened, 64),
        )
        .unwrap();
    let phone_key = src_key(IpAddr::V6(phone), &mask);
    h.maps_mut()
        .trusted
        .insert(
            phone_key,
            sipguard_common::source::Trust {
                expires_ns: now + HOUR,
                since_ns: now,
                renewals: 1,
            },
            0,
        )
        .unwrap();

    let check = |h: &Harness, rows: &[(Ipv6Addr, &str, (Verdict, Reason), &str)]| {
        for (from, method, want, why) in rows {
            assert!(is(&v6_of(h, *from, method), *want), "{why}");
        }
    };
    check(
        &h,
        &[
            (attacker, "INVITE", BANNED, "its own ban drops it"),
            // Its REGISTERs are on probation: two, then none within 5 s.
            (attacker, "REGISTER", PASSED, "first REGISTER on probation"),
            (attacker, "REGISTER", PASSED, "second REGISTER on probation"),
            (attacker, "REGISTER", BANNED, "a third REGISTER"),
            (newcomer, "INVITE", BANNED, "the /64 is banned"),
            (newcomer, "REGISTER", PASSED, "but a REGISTER gets through"),
            (phone, "INVITE", PASSED, "and a trusted phone"),
            (in_48, "INVITE", PASSED, "another /64"),
        ],
    );
    h.maps_mut()
        .ban_add(
            SrcKey::v6_group(word0(in_48), 48),
            ban(BanReason::Widened, 48),
        )
        .unwrap();
    check(
        &h,
        &[
            (in_48, "INVITE", BANNED, "the /48 is banned"),
            (phone, "INVITE", PASSED, "its trusted phone is not"),
            (elsewhere, "INVITE", PASSED, "outside the /48"),
        ],
    );
    let shown: Vec<String> = h
        .maps()
        .bans_list()
        .unwrap()
        .iter()
        .map(|(k, _)| sipguard::addr::show_src(k, 128))
        .collect();
    assert!(
        shown.contains(&"2001:db8:77:1::/64".to_string()),
        "{shown:?}"
    );
    assert!(shown.contains(&"2001:db8:77::/48".to_string()), "{shown:?}");
}

/// Deleting entries that are not there is reported, not fatal: a present
/// entry named after an absent one is still removed (bans, trust, lists).
/// The verdict and reason `h` gave one packet of any class: what its
/// reason counters say.
fn judged(h: &Harness, pkt: &[u8]) -> (Verdict, Reason) {
    let (_, d) = h.run_counted(pkt).unwrap();
    let seen: Vec<_> = d.reasons.keys().collect();
    for v in [Verdict::Drop, Verdict::Pass] {
        for r in [Reason::Banned, Reason::Accepted, Reason::RateSource] {
            if seen == [&(v.name(), r.name())] {
                return (v, r);
            }
        }
    }
    panic!("unexpected counters {d:?}");
}

fn register(from: Ipv4Addr) -> Vec<u8> {
    Pkt::udp_v4(from, SERVER_V4, 5060, Sip::request("REGISTER").build()).build()
}

fn syn(from: Ipv4Addr) -> Vec<u8> {
    Pkt::tcp_v4(from, SERVER_V4, 5060, Tcp::Syn).build()
}

/// A ban's probation is the ban's own: the REGISTERs it lets through are
/// charged to its slot, not to the source's rate state, so once the ban
/// lifts the source's connection attempts (SYN) are limited as anyone's.
/// (They were charged to its SYN bucket, which then stayed seconds ahead.)
#[test]
fn probation_leaves_the_sources_own_limits_alone() {
    let mut h = harness();
    let a = v4(9);
    let ban_for = Duration::from_secs(1);
    ban_because(&mut h, a, BanReason::Flood, ban_for.as_nanos() as u64);
    assert_eq!(
        judged(&h, &register(a)),
        PASSED,
        "first REGISTER on probation"
    );
    assert_eq!(
        judged(&h, &register(a)),
        PASSED,
        "second REGISTER on probation"
    );
    assert_eq!(judged(&h, &register(a)), BANNED, "a third REGISTER");
    assert_eq!(h.table_stat(TableStat::ProbationPass).unwrap(), 2);
    assert_eq!(dropped(&h, a), 1, "the slot counts what probation dropped");
    // A second past the ban (the programs' clock ticks coarsely).
    thread::sleep(ban_for + Duration::from_secs(1));
    assert_eq!(judged(&h, &syn(a)), PASSED, "a SYN once the ban lifted");
}

/// Two bans sharing a slot: the slot's owner is judged for probation from
/// the slot, the other from `BANS`; each gets its two REGISTERs, and a
/// manual ban none.
#[test]
fn probation_holds_for_bans_sharing_a_slot() {
    let mut h = harness();
    let (a, b, c) = colliding();
    for x in [a, b] {
        ban_because(&mut h, x, BanReason::Scanner, HOUR);
    }
    ban_because(&mut h, c, BanReason::Manual, HOUR);
    for x in [a, b] {
        assert_eq!(judged(&h, &register(x)), PASSED, "{x}: first REGISTER");
        assert_eq!(judged(&h, &register(x)), PASSED, "{x}: second REGISTER");
        assert_eq!(judged(&h, &register(x)), BANNED, "{x}: a third REGISTER");
        assert_eq!(dropped(&h, x), 1, "{x}");
    }
    assert_eq!(
        judged(&h, &register(c)),
        BANNED,
        "a manual ban has no probation"
    );
    assert_eq!(h.table_stat(TableStat::ProbationPass).unwrap(), 4);
}

#[test]
fn deleting_absent_entries_goes_on_to_the_present_ones() {
    let mut h = harness();
    let (absent, present) = (v4(41), v4(42));
    let now = monotonic_ns();
    let entry = manual_ban(now);
    h.maps_mut().ban_add(key(present), entry).unwrap();
    let changed = h.maps_mut().bans_del(&[key(absent), key(present)]).unwrap();
    assert_eq!((changed.applied, changed.missing), (1, 1));
    assert!(
        h.maps().bans_list().unwrap().is_empty(),
        "the present ban is lifted"
    );
    assert_eq!(verdict(&h, present), PASSED);

    let trust = sipguard_common::source::Trust {
        expires_ns: now + HOUR,
        since_ns: now,
        renewals: 1,
    };
    h.maps_mut().trusted.insert(key(present), trust, 0).unwrap();
    let changed = h
        .maps_mut()
        .trusted_del(&[key(absent), key(present)])
        .unwrap();
    assert_eq!((changed.applied, changed.missing), (1, 1));
    assert!(h.maps().trusted_list().unwrap().is_empty());

    let net = |a: Ipv4Addr| -> ipnet::IpNet { format!("{a}/32").parse().unwrap() };
    h.maps_mut().allow_add(&[net(present)]).unwrap();
    h.maps_mut().block_add(&[net(present)], 0).unwrap();
    let changed = h
        .maps_mut()
        .allow_del(&[net(absent), net(present)])
        .unwrap();
    assert_eq!((changed.applied, changed.missing), (1, 1));
    let changed = h
        .maps_mut()
        .block_del(&[net(absent), net(present)])
        .unwrap();
    assert_eq!((changed.applied, changed.missing), (1, 1));
    assert!(h.maps().allow_list().unwrap().is_empty());
    assert!(h.maps().block_list().unwrap().is_empty());
}

/// A list change that does not fit changes nothing and says so, and so does
/// a config apply: its policy is not written when a list cannot take its
/// entries. What fits still goes in afterwards.
#[test]
fn changes_that_do_not_fit_change_nothing() {
    use sipguard_common::maps::{ALLOW_MAX, LIST_RESERVED};
    let mut h = harness();
    let room = (ALLOW_MAX - LIST_RESERVED) as usize;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let nets: Vec<ipnet::IpNet> = (0..room as u32 + 100)
        .map(|i| format!("{}/32", Ipv4Addr::from(base + i)).parse().unwrap())
        .collect();
    let (first, rest) = nets.split_at(room - 50);
    h.maps_mut().allow_add(first).unwrap();

    // 150 new entries, room for 50: none is added.
    let err = h.maps_mut().allow_add(rest).unwrap_err();
    assert!(
        format!("{err:#}").contains("nothing was added"),
        "the error says nothing was added: {err:#}"
    );
    assert_eq!(h.maps().allow_list().unwrap().len(), first.len());
    let not_added = Ipv4Addr::from(base + room as u32);
    assert_eq!(
        verdict(&h, not_added),
        PASSED,
        "{not_added} is not allowlisted"
    );

    // A config whose allowlist does not fit: its blocklist entry and its
    // policy are not written either.
    let policy = h.maps().policy().unwrap();
    let mut cfg = Config::default();
    cfg.set("invite.rate=1/s").unwrap();
    cfg.allow = rest.to_vec();
    cfg.block = vec!["198.19.0.0/16".parse().unwrap()];
    let err = h.maps_mut().apply(&cfg).unwrap_err();
    assert!(format!("{err:#}").contains("nothing was added"), "{err:#}");
    assert_eq!(h.maps().allow_list().unwrap().len(), first.len());
    assert!(h.maps().block_list().unwrap().is_empty());
    assert_eq!(
        Config::from_policy(&h.maps().policy().unwrap()),
        Config::from_policy(&policy),
        "the policy of a config that did not fit was written"
    );

    // Present entries again plus the 50 that fit: taken.
    h.maps_mut().allow_add(&nets[..room]).unwrap();
    assert_eq!(h.maps().allow_list().unwrap().len(), room);
}

/// Forged scanner packets cannot fill the ban table (issue 15): a sweep of
/// as many forged sources as the table holds, one packet each with a
/// scanner User-Agent, drops every packet but bans no more than the scanner
/// share (three quarters), and a real flood is still banned afterwards.
#[test]
fn forged_scanner_packets_leave_room_to_ban_a_flood() {
    use sipguard_common::maps::BANS_MAX;
    let mut h = harness();
    // The sweep is sent as fast as the machine can: without a global limit
    // on OPTIONS, every packet reaches the signature check.
    let mut cfg = Config::default();
    cfg.set("global.other.rate=0").unwrap();
    h.maps_mut().set_policy(&cfg.policy()).unwrap();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let scanner = |src: Ipv4Addr| {
        let sip = Sip::request("OPTIONS").user_agent(Some("friendly-scanner"));
        Pkt::udp_v4(src, SERVER_V4, 5060, sip.build()).build()
    };
    for i in 0..BANS_MAX {
        let action = h.run(&scanner(Ipv4Addr::from(base + i))).unwrap();
        assert_eq!(
            action,
            sipguard_tests::harness::XDP_DROP,
            "scanner packet {i} passed"
        );
    }
    let bans = h.maps().bans.keys().count() as u64;
    let share = u64::from(BANS_MAX) * 3 / 4;
    assert_eq!(bans, share, "scanner bans past their share of the table");
    assert_eq!(
        h.table_stat(TableStat::ScannerBanNoRoom).unwrap(),
        u64::from(BANS_MAX) - share
    );

    // A real flood from one more source: banned.
    let flooder = Ipv4Addr::from(base + BANS_MAX);
    for _ in 0..200 {
        h.run(&invite(flooder)).unwrap();
    }
    let ban = h
        .maps()
        .bans
        .get(&key(flooder), 0)
        .expect("the flood was not banned: the table is full of forged scanner bans");
    assert_eq!(ban.reason, BanReason::Flood as u32);
    assert_eq!(h.table_stat(TableStat::BanTableFull).unwrap(), 0);
}
