//! The programs' side of `sipguard capture` (BPF_PROG_TEST_RUN): a capture
//! copies exactly the packets its verdicts, reasons and sources select, the
//! first `snaplen` bytes of each with its verdict, reason and class; no
//! more than its rate (the rest counted as missed); nothing once its lease
//! ran out; and a packet it does not select is judged as without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sipguard::{capture::Selection, config::Config, time::monotonic_ns};
use sipguard_common::{
    Class, Reason, Verdict,
    capture::{CaptureConf, CaptureRecord},
};
use sipguard_tests::{
    harness::Harness,
    packet::{Pkt, SERVER_V4, SERVER_V6, sip::Sip},
};

const HOUR: u64 = 3_600_000_000_000;

fn harness() -> Harness {
    Harness::with_config(&Config::default()).unwrap_or_else(|e| panic!("{e:#}"))
}

fn invite(src: IpAddr) -> Vec<u8> {
    let sip = Sip::invite_with_sdp().build();
    match src {
        IpAddr::V4(a) => Pkt::udp_v4(a, SERVER_V4, 5060, sip).build(),
        IpAddr::V6(a) => Pkt::udp_v6(a, SERVER_V6, 5060, sip).build(),
    }
}

fn ban(h: &mut Harness, src: IpAddr) {
    h.ban_for(src, HOUR).unwrap();
}

fn selection(reasons: &[Reason], sources: &[&str]) -> Selection {
    Selection {
        verdicts: vec![Verdict::Drop],
        reasons: reasons.to_vec(),
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        snaplen: 64,
        rate: 1000,
    }
}

fn start(h: &mut Harness, sel: &Selection) {
    let conf = sel.conf(monotonic_ns() + HOUR).unwrap();
    h.set_capture(conf).unwrap();
}

fn reasons(recs: &[CaptureRecord]) -> Vec<u32> {
    recs.iter().map(|r| r.reason).collect()
}

const BANNED: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 1));
const BLOCKED: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 2));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 3));

#[test]
fn a_capture_copies_what_it_selects_and_only_that() {
    let mut h = harness();
    ban(&mut h, BANNED);
    h.maps_mut()
        .block_add(&["198.18.7.2/32".parse().unwrap()], 0)
        .unwrap();
    start(&mut h, &selection(&[Reason::Banned], &[]));
    let pkt = invite(BANNED);
    for _ in 0..3 {
        h.run(&pkt).unwrap();
    }
    // Dropped for another reason, and passed: not selected.
    h.run(&invite(BLOCKED)).unwrap();
    h.run(&invite(CLIENT)).unwrap();
    let recs = h.captured().unwrap();
    assert_eq!(reasons(&recs), vec![Reason::Banned as u32; 3]);
    let r = &recs[0];
    assert_eq!(r.verdict, Verdict::Drop as u32);
    assert_eq!(r.class, Class::Invite as u32);
    assert_eq!((r.len as usize, r.caplen), (pkt.len(), 64));
    assert_eq!(&r.data[..64], &pkt[..64], "the frame's first bytes");
    assert!(r.ts_ns > 0);
}

#[test]
fn sources_select_by_network_ipv4_and_ipv6() {
    let mut h = harness();
    let v6_in = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1));
    let v6_out = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1));
    for src in [BANNED, BLOCKED, v6_in, v6_out] {
        ban(&mut h, src);
    }
    start(
        &mut h,
        &selection(&[Reason::Banned], &["198.18.7.1/32", "2001:db8:9::/48"]),
    );
    for src in [BANNED, BLOCKED, v6_in, v6_out] {
        h.run(&invite(src)).unwrap();
    }
    let recs = h.captured().unwrap();
    assert_eq!(recs.len(), 2, "{:?}", reasons(&recs));
    // The IPv6 one: its source address in the frame (after 14 + 8 bytes).
    let v6 = recs
        .iter()
        .find(|r| r.data[12..14] == [0x86, 0xdd])
        .unwrap();
    assert_eq!(v6.data[22..24], [0x20, 0x01]);
    assert_eq!(v6.data[26..28], [0x00, 0x09]);
}

#[test]
fn a_capture_keeps_to_its_rate_and_counts_what_it_missed() {
    let mut h = harness();
    ban(&mut h, BANNED);
    let mut sel = selection(&[Reason::Banned], &[]);
    sel.rate = 10; // a burst of 1
    start(&mut h, &sel);
    let pkt = invite(BANNED);
    for _ in 0..20 {
        h.run(&pkt).unwrap();
    }
    let recs = h.captured().unwrap();
    assert!(recs.len() <= 2, "{} copied at 10/s", recs.len());
    let missed = h.capture().unwrap().missed;
    assert_eq!(recs.len() as u64 + missed, 20);
}

#[test]
fn a_lapsed_or_stopped_capture_copies_nothing() {
    let mut h = harness();
    ban(&mut h, BANNED);
    // Lapsed a second ago: well past the programs' clock tick.
    let conf = selection(&[Reason::Banned], &[])
        .conf(monotonic_ns() - 1_000_000_000)
        .unwrap();
    h.set_capture(conf).unwrap();
    h.run(&invite(BANNED)).unwrap();
    h.set_capture(CaptureConf::default()).unwrap();
    h.run(&invite(BANNED)).unwrap();
    assert!(h.captured().unwrap().is_empty());
}
