//! Fixture tables in the style of Katran's: each row is a packet, the XDP
//! action the program must return, and the one (verdict, reason) counter and
//! the one (verdict, class) counter (or none) it must move by exactly one
//! packet and the packet's length. Nothing else may move.
//!
//! Runs the real program through BPF_PROG_TEST_RUN, so it needs root.
//! To add a case, add a row; to add a table, add a `#[test]` that builds
//! rows and calls `check`. Rows of one table run in order on one harness and
//! share its per-source state (rate limits, bans): keep a table under the
//! default bursts, or give rows their own sources with `packet::v4(n)`.

use sipguard::config::{Config, SipPorts};
use sipguard_common::{Class, Reason, Verdict};
use sipguard_tests::{
    fixture::{Row, Want, check, harness},
    harness::{Delta, Harness, XDP_DROP, XDP_PASS},
    packet::{
        CLIENT_V4, CLIENT_V6, Cut, ETH_MIN_FRAME, Ext6, Frag, IPV4_ROUTER_ALERT, Pkt, SERVER_V4,
        SERVER_V6, Tcp, arp_request, garbage, ipv4_nop_options,
        sip::{Sip, keepalive, not_sip},
        v4,
    },
};

const SIP: u16 = 5060;
const SIPS: u16 = 5061;

fn udp4(dport: u16, payload: impl Into<Vec<u8>>) -> Pkt {
    Pkt::udp_v4(CLIENT_V4, SERVER_V4, dport, payload)
}

fn udp6(dport: u16, payload: impl Into<Vec<u8>>) -> Pkt {
    Pkt::udp_v6(CLIENT_V6, SERVER_V6, dport, payload)
}

/// Rows for one SIP payload over plain IPv4 and IPv6.
fn both_families(name: &str, payload: &[u8], class: Class) -> [Row; 2] {
    both_families_as(name, payload, |name, pkt| Row::accepted(name, pkt, class))
}

/// The same, with the expectation made by `row(name, packet)`.
fn both_families_as(name: &str, payload: &[u8], row: impl Fn(String, Vec<u8>) -> Row) -> [Row; 2] {
    [
        row(format!("{name} / IPv4"), udp4(SIP, payload).build()),
        row(format!("{name} / IPv6"), udp6(SIP, payload).build()),
    ]
}

const METHOD_CLASSES: [(&str, Class); 14] = [
    ("INVITE", Class::Invite),
    ("REGISTER", Class::Register),
    ("OPTIONS", Class::Options),
    ("ACK", Class::Ack),
    ("BYE", Class::Bye),
    ("CANCEL", Class::Cancel),
    ("SUBSCRIBE", Class::Subscribe),
    ("NOTIFY", Class::Notify),
    ("MESSAGE", Class::Message),
    ("INFO", Class::Info),
    ("PRACK", Class::Prack),
    ("UPDATE", Class::Update),
    ("REFER", Class::Refer),
    ("PUBLISH", Class::Publish),
];

#[test]
fn every_method_and_response() {
    assert_eq!(
        METHOD_CLASSES.map(|(m, _)| m),
        sipguard_tests::packet::sip::METHODS,
        "a method without a row"
    );
    let mut rows = Vec::new();
    for (method, class) in METHOD_CLASSES {
        rows.extend(both_families(method, &Sip::request(method).build(), class));
    }
    rows.extend(both_families(
        "INVITE with SDP",
        &Sip::invite_with_sdp().build(),
        Class::Invite,
    ));
    for (name, msg) in [
        ("FOO extension", Sip::request("FOO").user("x")),
        (
            "extension, sips: URI",
            Sip::request("PING").ruri("sips:x@example.com"),
        ),
        (
            "extension, tel: URI",
            Sip::request("DIAL").ruri("tel:+15550100"),
        ),
        ("10-letter extension", Sip::request("ABCDEFGHIJ").user("x")),
    ] {
        rows.extend(both_families(name, &msg.build(), Class::OtherRequest));
    }
    for (code, reason) in [(100, "Trying"), (200, "OK"), (401, "Unauthorized")] {
        rows.extend(both_families(
            &format!("{code} {reason}"),
            &Sip::response(code, reason).build(),
            Class::Response,
        ));
    }
    check(&harness(), &rows);
}

#[test]
fn encapsulations() {
    let invite = Sip::invite_with_sdp().build();
    let rows = vec![
        Row::accepted(
            "IPv4 options, IHL 6 (router alert)",
            udp4(SIP, invite.clone())
                .ipv4_options(&IPV4_ROUTER_ALERT)
                .build(),
            Class::Invite,
        ),
        Row::accepted(
            "IPv4 options, IHL 15",
            udp4(SIP, invite.clone())
                .ipv4_options(&ipv4_nop_options(10))
                .build(),
            Class::Invite,
        ),
        Row::accepted(
            "802.1Q",
            udp4(SIP, invite.clone()).vlan(100).build(),
            Class::Invite,
        ),
        Row::accepted(
            "802.1ad + 802.1Q",
            udp4(SIP, invite.clone()).vlan(100).vlan(200).build(),
            Class::Invite,
        ),
        Row::accepted(
            "802.1ad + 802.1Q + IPv4 options",
            udp4(SIP, invite.clone())
                .vlan(100)
                .vlan(200)
                .ipv4_options(&ipv4_nop_options(3))
                .build(),
            Class::Invite,
        ),
        Row::accepted(
            "IPv6 over 802.1Q",
            udp6(SIP, invite.clone()).vlan(100).build(),
            Class::Invite,
        ),
        Row::accepted(
            "IPv6 hop-by-hop + dest-opts + routing",
            udp6(SIP, invite.clone())
                .ext6(Ext6::HopByHop)
                .ext6(Ext6::Routing)
                .ext6(Ext6::DestOpts)
                .build(),
            Class::Invite,
        ),
        Row::accepted(
            "IPv6 4 extension headers (the most walked) over 802.1ad + 802.1Q",
            udp6(SIP, invite.clone())
                .vlan(100)
                .vlan(200)
                .ext6(Ext6::HopByHop)
                .ext6(Ext6::DestOpts)
                .ext6(Ext6::Routing)
                .ext6(Ext6::FinalDestOpts)
                .build(),
            Class::Invite,
        ),
        Row::accepted(
            "IPv6 atomic fragment",
            udp6(SIP, invite.clone()).fragment(Frag::Atomic).build(),
            Class::Invite,
        ),
        Row::new(
            "IPv6 5 extension headers (one more than walked): dropped, not passed",
            five_ext_headers(udp6(SIP, invite.clone())),
            Want::new(XDP_DROP, Verdict::Drop, Reason::HeaderChain, None),
        ),
    ];
    check(&harness(), &rows);
}

/// An IPv6 packet whose extension header chain is one longer than the
/// parser walks: its port is out of reach.
fn five_ext_headers(pkt: Pkt) -> Vec<u8> {
    pkt.ext6(Ext6::HopByHop)
        .ext6(Ext6::DestOpts)
        .ext6(Ext6::Routing)
        .ext6(Ext6::FinalDestOpts)
        .fragment(Frag::Atomic)
        .build()
}

/// What the parser cannot walk (later fragments, over-long IPv6 header
/// chains) still meets the lists and bans: a blocklisted or banned source
/// cannot walk past them with header tricks, an allowlisted one is not
/// dropped for them, and in monitor mode nothing is.
#[test]
fn header_tricks_do_not_bypass_lists_and_bans() {
    let mut h = harness();
    let invite = Sip::invite_with_sdp().build();
    let net = |s: &str| -> ipnet::IpNet { s.parse().unwrap() };
    let rest = Frag::Rest { split: 512 };
    let opaque = |name: &str, pkt: Vec<u8>, action, verdict, reason| {
        Row::new(name, pkt, Want::new(action, verdict, reason, None))
    };
    let (blocked4, banned4, allowed4) = (v4(21), v4(22), v4(23));
    let (blocked6, allowed6): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "2001:db8:b::1".parse().unwrap(),
        "2001:db8:a::1".parse().unwrap(),
    );
    h.maps_mut()
        .block_add(&[net(&format!("{blocked4}/32")), net("2001:db8:b::/48")], 0)
        .unwrap();
    h.maps_mut()
        .allow_add(&[net(&format!("{allowed4}/32")), net("2001:db8:a::/48")])
        .unwrap();
    h.ban_for(banned4.into(), 600_000_000_000).unwrap();
    let frag4 = |src| {
        Pkt::udp_v4(src, SERVER_V4, SIP, invite.clone())
            .fragment(rest)
            .build()
    };
    let rows = vec![
        opaque(
            "later fragment, blocklisted v4",
            frag4(blocked4),
            XDP_DROP,
            Verdict::Drop,
            Reason::Blocklisted,
        ),
        opaque(
            "later fragment, banned v4",
            frag4(banned4),
            XDP_DROP,
            Verdict::Drop,
            Reason::Banned,
        ),
        opaque(
            "later fragment, allowlisted v4",
            frag4(allowed4),
            XDP_PASS,
            Verdict::Pass,
            Reason::Allowlisted,
        ),
        opaque(
            "later fragment, blocklisted v6",
            Pkt::udp_v6(blocked6, SERVER_V6, SIP, invite.clone())
                .fragment(rest)
                .build(),
            XDP_DROP,
            Verdict::Drop,
            Reason::Blocklisted,
        ),
        opaque(
            "5 extension headers, blocklisted v6",
            five_ext_headers(Pkt::udp_v6(blocked6, SERVER_V6, SIP, invite.clone())),
            XDP_DROP,
            Verdict::Drop,
            Reason::Blocklisted,
        ),
        opaque(
            "5 extension headers, allowlisted v6",
            five_ext_headers(Pkt::udp_v6(allowed6, SERVER_V6, SIP, invite.clone())),
            XDP_PASS,
            Verdict::Pass,
            Reason::Allowlisted,
        ),
        opaque(
            "later fragment, unlisted v4, no first fragment: an orphan",
            frag4(v4(24)),
            XDP_DROP,
            Verdict::Drop,
            Reason::FragmentOrphan,
        ),
    ];
    check(&h, &rows);
    h.maps_mut().set_enforce(false).unwrap();
    check(
        &h,
        &[
            opaque(
                "monitor mode: later fragment, blocklisted v4",
                frag4(blocked4),
                XDP_PASS,
                Verdict::WouldDrop,
                Reason::Blocklisted,
            ),
            opaque(
                "monitor mode: 5 extension headers",
                five_ext_headers(udp6(SIP, invite.clone())),
                XDP_PASS,
                Verdict::WouldDrop,
                Reason::HeaderChain,
            ),
        ],
    );
}

#[test]
fn fragments() {
    let invite = Sip::invite_with_sdp().build();
    let split = Frag::First { split: 512 };
    let rest = Frag::Rest { split: 512 };
    let rows = vec![
        Row::accepted(
            "IPv4 first fragment of an INVITE",
            udp4(SIP, invite.clone()).fragment(split).build(),
            Class::Invite,
        ),
        Row::unclassified(
            "IPv4 non-first fragment of an INVITE",
            udp4(SIP, invite.clone()).fragment(rest).build(),
            Reason::Fragment,
        ),
        Row::unclassified(
            "IPv4 non-first fragment of a DNS answer (port unknowable)",
            udp4(53, garbage(900, 3)).fragment(rest).build(),
            Reason::Fragment,
        ),
        Row::accepted(
            "IPv6 first fragment of an INVITE",
            udp6(SIP, invite.clone()).fragment(split).build(),
            Class::Invite,
        ),
        Row::unclassified(
            "IPv6 non-first fragment of an INVITE",
            udp6(SIP, invite.clone()).fragment(rest).build(),
            Reason::Fragment,
        ),
        Row::unclassified(
            "IPv6 non-first fragment behind hop-by-hop, over 802.1Q",
            udp6(SIP, invite.clone())
                .vlan(7)
                .ext6(Ext6::HopByHop)
                .fragment(rest)
                .build(),
            Reason::Fragment,
        ),
    ];
    check(&harness(), &rows);
}

#[test]
fn transports_and_ports() {
    let mut rows = Vec::new();
    for port in [SIP, SIPS] {
        for flags in [Tcp::Syn, Tcp::SynAck, Tcp::Ack] {
            rows.push(Row::accepted(
                format!("TCP {flags:?} to {port} / IPv4"),
                Pkt::tcp_v4(CLIENT_V4, SERVER_V4, port, flags).build(),
                Class::Tcp,
            ));
            rows.push(Row::accepted(
                format!("TCP {flags:?} to {port} / IPv6"),
                Pkt::tcp_v6(CLIENT_V6, SERVER_V6, port, flags).build(),
                Class::Tcp,
            ));
        }
    }
    let invite = Sip::invite_with_sdp().build();
    rows.extend([
        Row::accepted(
            "TCP segment carrying an INVITE (streams are not classified)",
            Pkt::tcp_v4(CLIENT_V4, SERVER_V4, SIP, Tcp::Ack)
                .payload(invite.clone())
                .build(),
            Class::Tcp,
        ),
        Row::unclassified(
            "TCP SYN to 80",
            Pkt::tcp_v4(CLIENT_V4, SERVER_V4, 80, Tcp::Syn).build(),
            Reason::NotSipPort,
        ),
        Row::unclassified(
            "TCP SYN to 80 / IPv6",
            Pkt::tcp_v6(CLIENT_V6, SERVER_V6, 80, Tcp::Syn).build(),
            Reason::NotSipPort,
        ),
        Row::unclassified(
            "UDP to 53",
            udp4(53, garbage(40, 9)).build(),
            Reason::NotSipPort,
        ),
        Row::unclassified(
            "UDP to 53 / IPv6",
            udp6(53, garbage(40, 9)).build(),
            Reason::NotSipPort,
        ),
        Row::unclassified(
            "INVITE over UDP to 5061 (a TCP-only SIP port)",
            udp4(SIPS, invite.clone()).build(),
            Reason::NotSipPort,
        ),
        Row::unclassified(
            "INVITE over UDP to 5062",
            udp4(5062, invite).build(),
            Reason::NotSipPort,
        ),
    ]);
    check(&harness(), &rows);
}

#[test]
fn not_ip_and_malformed_headers() {
    let noise = garbage(64, 11);
    let ether_type = u16::from_be_bytes([noise[12], noise[13]]);
    assert!(
        ![0x0800, 0x86dd, 0x8100, 0x88a8].contains(&ether_type),
        "pick another seed: the noise frame must not claim to be IP or VLAN"
    );
    let mut ipv4_says_6 = udp4(SIP, Sip::request("OPTIONS").build()).build();
    ipv4_says_6[14] = 0x65; // version 6 behind the IPv4 EtherType
    let options = Sip::request("OPTIONS").build();
    let rows = vec![
        Row::unclassified(
            "ARP request",
            arp_request(CLIENT_V4, SERVER_V4),
            Reason::NotSipPort,
        ),
        Row::unclassified("64 bytes of noise", noise, Reason::NotSipPort),
        Row::unclassified(
            "Ethernet header alone (IPv4 EtherType)",
            udp4(SIP, options.clone()).cut(Cut::At(14)).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "802.1Q tag cut short",
            udp4(SIP, options.clone()).vlan(5).cut(Cut::At(16)).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv4 header cut short",
            udp4(SIP, options.clone()).cut(Cut::InIpHeader).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv6 header cut short",
            udp6(SIP, options.clone()).cut(Cut::InIpHeader).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv4 options cut short",
            udp4(SIP, options.clone())
                .ipv4_options(&ipv4_nop_options(10))
                .cut(Cut::At(14 + 20 + 12))
                .build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv6 extension header cut short",
            udp6(SIP, options.clone())
                .ext6(Ext6::DestOpts)
                .cut(Cut::At(14 + 40 + 12))
                .build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "UDP header cut short / IPv4",
            udp4(SIP, options.clone()).cut(Cut::InL4Header).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "UDP header cut short / IPv6",
            udp6(SIP, options.clone()).cut(Cut::InL4Header).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "TCP header cut short",
            Pkt::tcp_v4(CLIENT_V4, SERVER_V4, SIP, Tcp::Syn)
                .cut(Cut::InL4Header)
                .build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv4 IHL 4",
            udp4(SIP, options.clone()).ihl(4).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv4 IHL 0",
            udp4(SIP, options.clone()).ihl(0).build(),
            Reason::Malformed,
        ),
        Row::unclassified(
            "IPv4 IHL 15 on a 20-byte header, empty UDP (options run off the frame)",
            udp4(SIP, Vec::new()).ihl(15).build(),
            Reason::Malformed,
        ),
        Row::unclassified("IPv4 EtherType, version 6", ipv4_says_6, Reason::Malformed),
        Row::unclassified(
            "UDP length 4 (below the header's own 8)",
            udp4(SIP, options.clone()).udp_len(4).build(),
            Reason::Malformed,
        ),
    ];
    check(&harness(), &rows);
}

/// UDP payloads to a SIP port that are neither a request nor a response.
fn not_sip_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let noise = garbage(200, 5);
    assert!(
        !noise[0].is_ascii_uppercase() && !noise.starts_with(b"SIP/"),
        "pick another seed: the noise must not start like a SIP start line"
    );
    vec![
        ("zero-length UDP", not_sip::EMPTY.to_vec()),
        ("hello world", not_sip::HELLO.to_vec()),
        ("lower-case invite", not_sip::LOWERCASE_INVITE.to_vec()),
        ("SIP/2.0 999 x", not_sip::BAD_STATUS.to_vec()),
        (
            "three CRLFs (not a keep-alive)",
            not_sip::CRLF_TRIPLE.to_vec(),
        ),
        (
            "STUN binding response (not a request)",
            keepalive::stun(keepalive::BINDING_RESPONSE, 8, 8),
        ),
        (
            "STUN binding request whose length is not the datagram's",
            keepalive::stun(keepalive::BINDING_REQUEST, 8, 12),
        ),
        ("noise", noise),
        ("INVITE without a Request-URI", b"INVITE".to_vec()),
        (
            "extension token without a SIP URI",
            b"FOO http://x SIP/2.0\r\n".to_vec(),
        ),
        ("status line without a code", b"SIP/2.0 OK\r\n\r\n".to_vec()),
    ]
}

fn not_sip_rows(row: impl Fn(String, Vec<u8>) -> Row + Copy) -> Vec<Row> {
    not_sip_payloads()
        .iter()
        .flat_map(|(name, payload)| both_families_as(name, payload, row))
        .collect()
}

/// RFC 5626 keep-alives a registered client must send: the double-CRLF
/// ping, the CRLF pong and a STUN binding request pass and are counted as
/// `keepalive`, not dropped as `not_sip`.
#[test]
fn keepalives_pass_and_are_counted() {
    let mut rows = Vec::new();
    for (name, payload) in [
        ("CRLF CRLF ping", keepalive::PING.to_vec()),
        ("CRLF pong", keepalive::PONG.to_vec()),
        (
            "STUN binding request",
            keepalive::stun(keepalive::BINDING_REQUEST, 0, 0),
        ),
        (
            "STUN binding request with attributes",
            keepalive::stun(keepalive::BINDING_REQUEST, 24, 24),
        ),
    ] {
        rows.extend(both_families(name, &payload, Class::Keepalive));
    }
    check(&harness(), &rows);
}

/// A flood of keep-alives from one source is limited like other requests:
/// the per-source `other` bucket (default burst 100).
#[test]
fn a_keepalive_flood_is_limited_like_other_requests() {
    // The default burst at a rate too slow to refill while the test runs
    // (on an emulated kernel a test run takes milliseconds).
    let mut cfg = Config::default();
    cfg.set("other.rate=1/h").unwrap();
    let h = Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let burst = cfg.limits.other.burst as u32;
    let pkt = udp4(SIP, keepalive::PING).build();
    let (action, _) = h.run_repeat(&pkt, burst).unwrap();
    assert_eq!(action, XDP_PASS, "the burst passes");
    let (action, got) = h.run_counted(&pkt).unwrap();
    assert_eq!(
        (action, got),
        (
            XDP_DROP,
            Delta::one(
                Verdict::Drop,
                Reason::RateSource,
                Some(Class::Keepalive),
                pkt.len()
            )
        ),
        "keep-alive {} from one source",
        burst + 1
    );
}

/// The default configuration drops them (`malformed.drop`).
#[test]
fn payloads_that_are_not_sip_are_dropped() {
    let rows = not_sip_rows(|name, pkt| Row::dropped(name, pkt, Reason::NotSip, Class::NotSip));
    check(&harness(), &rows);
}

#[test]
fn payloads_that_are_not_sip_in_monitor_mode() {
    let mut h = harness();
    h.maps_mut().set_enforce(false).unwrap();
    let rows = not_sip_rows(|name, pkt| Row::would_drop(name, pkt, Reason::NotSip, Class::NotSip));
    check(&h, &rows);
}

/// With `malformed.drop` off they are still classified `not_sip`, and pass.
#[test]
fn payloads_that_are_not_sip_pass_when_not_judged() {
    let mut cfg = Config::default();
    cfg.malformed.drop = false;
    let h = Harness::with_config(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let rows = not_sip_rows(|name, pkt| Row::accepted(name, pkt, Class::NotSip));
    check(&h, &rows);
}

/// Frames shorter than 60 bytes are padded by the sender's NIC; the UDP
/// length, not the frame, says where the payload ends.
#[test]
fn ethernet_padding_is_not_payload() {
    let padded = |payload: &[u8], fill: &[u8]| {
        let frame = udp4(SIP, payload).pad_to(ETH_MIN_FRAME, fill).build();
        assert_eq!(frame.len(), ETH_MIN_FRAME);
        frame
    };
    // Under the default configuration a lone "ACK " is a truncated request
    // (no end of headers) and the rest are not SIP: the class counter shows
    // what each was read as.
    let rows = vec![
        Row::dropped(
            "\"ACK \" padded with zeros to 60 bytes",
            padded(b"ACK ", &[0]),
            Reason::Truncated,
            Class::Ack,
        ),
        Row::dropped(
            "\"ACK \" padded with a Request-URI and CRLFs",
            padded(b"ACK ", b"sip:x@example.com SIP/2.0\r\n\r\n"),
            Reason::Truncated,
            Class::Ack,
        ),
        Row::dropped(
            "\"INVI\" padded with \"TE sip:...\" (not an INVITE)",
            padded(b"INVI", b"TE sip:x@example.com "),
            Reason::NotSip,
            Class::NotSip,
        ),
        Row::dropped(
            "\"FOO \" padded with a Request-URI (not a request)",
            padded(b"FOO ", b"sip:x@example.com "),
            Reason::NotSip,
            Class::NotSip,
        ),
        Row::dropped(
            "\"SIP/2.0 \" padded with \"200 OK\" (not a response)",
            padded(b"SIP/2.0 ", b"200 OK "),
            Reason::NotSip,
            Class::NotSip,
        ),
        Row::dropped(
            "empty UDP padded with \"INVITE sip:...\"",
            padded(b"", b"INVITE sip:x@example.com "),
            Reason::NotSip,
            Class::NotSip,
        ),
        Row::accepted(
            "UDP length larger than the frame (clamped to what is there)",
            udp4(SIP, Sip::request("OPTIONS").build())
                .udp_len(1400)
                .build(),
            Class::Options,
        ),
    ];
    check(&harness(), &rows);
}

/// The SIP_PORTS map decides what is inspected, and the running program
/// follows changes to it.
#[test]
fn sip_ports_change_at_run_time() {
    let invite = Sip::invite_with_sdp().build();
    let on = |port| udp4(port, invite.clone()).build();
    let syn = Pkt::tcp_v4(CLIENT_V4, SERVER_V4, SIP, Tcp::Syn).build();
    let mut h = harness();

    check(
        &h,
        &[
            Row::accepted("default: UDP 5060 inspected", on(SIP), Class::Invite),
            Row::unclassified("default: UDP 5080 ignored", on(5080), Reason::NotSipPort),
        ],
    );

    let udp_5080_only = Config {
        sip: SipPorts {
            udp_ports: vec![5080],
            tcp_ports: vec![],
        },
        ..Config::default()
    };
    h.maps_mut().apply(&udp_5080_only).unwrap();
    check(
        &h,
        &[
            Row::accepted("5080 only: UDP 5080 inspected", on(5080), Class::Invite),
            Row::unclassified("5080 only: UDP 5060 ignored", on(SIP), Reason::NotSipPort),
            Row::unclassified(
                "5080 only: TCP 5060 ignored",
                syn.clone(),
                Reason::NotSipPort,
            ),
        ],
    );

    h.maps_mut().apply(&Config::default()).unwrap();
    check(
        &h,
        &[
            Row::accepted("restored: UDP 5060 inspected", on(SIP), Class::Invite),
            Row::unclassified("restored: UDP 5080 ignored", on(5080), Reason::NotSipPort),
            Row::accepted("restored: TCP 5060 inspected", syn, Class::Tcp),
        ],
    );
}

/// Monitor mode changes what a matching rule does (pass, counted as
/// would-drop), never what passes anyway: accepted traffic is still passed
/// and counted as accepted.
#[test]
fn monitor_mode_passes_accepted_traffic_the_same() {
    let mut h = harness();
    h.maps_mut().set_enforce(false).unwrap();
    assert!(!h.maps().policy().unwrap().enforcing());
    let mut rows = Vec::new();
    for (method, class) in METHOD_CLASSES {
        rows.extend(both_families(method, &Sip::request(method).build(), class));
    }
    rows.push(Row::unclassified(
        "UDP to 53",
        udp4(53, garbage(40, 9)).build(),
        Reason::NotSipPort,
    ));
    rows.push(Row::would_drop(
        "hello world (a rule matches: counted, passed)",
        udp4(SIP, not_sip::HELLO).build(),
        Reason::NotSip,
        Class::NotSip,
    ));
    check(&h, &rows);
}

/// Rows that once found bugs: the UDP length trusted past the IP length, and
/// a case-sensitive SIP-Version (RFC 3261 §7.1 makes it case-insensitive).
#[test]
fn udp_length_past_ip_and_lower_case_version() {
    // The UDP length reaches past the IP datagram into the Ethernet padding:
    // the kernel drops this datagram, and the padding is not payload, but
    // the program trusts the UDP length alone and reads "INVITE sip:...".
    let mut past_ip = udp4(SIP, &b"INVI"[..])
        .pad_to(ETH_MIN_FRAME, b"TE sip:x@example.com ")
        .build();
    past_ip[38..40].copy_from_slice(&(8u16 + 18).to_be_bytes());
    // RFC 3261 7.1: the SIP-Version string is case-insensitive.
    let lower_version = String::from_utf8(Sip::response(200, "OK").build())
        .unwrap()
        .replacen("SIP/2.0", "sip/2.0", 1);
    let rows = vec![
        Row::dropped(
            "UDP length past the IP total length (padding read as payload)",
            past_ip,
            Reason::NotSip,
            Class::NotSip,
        ),
        Row::accepted(
            "status line with a lower-case SIP-Version",
            udp4(SIP, lower_version).build(),
            Class::Response,
        ),
    ];
    check(&harness(), &rows);
}

/// `list`'s bit of `EMPTY_LISTS`, as the program reads it (1 = known empty,
/// lookup skipped).
fn list_empty(h: &Harness, list: u32) -> u32 {
    let word = h
        .maps()
        .empty_lists
        .get(&0, 0)
        .expect("reading EMPTY_LISTS");
    (word & list != 0) as u32
}

/// The allowlist and blocklist by CIDR over IPv4 and IPv6, and the flags
/// that let the program skip an empty list's lookup: every change to a list
/// updates them at once, so an entry is in force as soon as it is added,
/// and the agent's sweep repairs a flag left wrong (the backstop: commands
/// update the flags under `ListsLock`, see e2e_crash).
#[test]
fn lists_apply_at_once_and_their_empty_flags_follow() {
    use sipguard_common::maps::{LIST_ALLOW, LIST_BLOCK};
    let mut h = harness();
    let invite = || Sip::invite_with_sdp().build();
    let net = |s: &str| -> ipnet::IpNet { s.parse().unwrap() };
    assert_eq!(
        (list_empty(&h, LIST_ALLOW), list_empty(&h, LIST_BLOCK)),
        (1, 1),
        "a fresh agent's lists are empty and marked so"
    );

    let pkt = udp4(SIP, invite()).build();
    h.maps_mut()
        .allow_add(&[net(&format!("{CLIENT_V4}/24"))])
        .unwrap();
    assert_eq!(list_empty(&h, LIST_ALLOW), 0);
    check(
        &h,
        &[Row::new(
            "allowlisted /24, v4",
            pkt.clone(),
            Want::new(
                XDP_PASS,
                Verdict::Pass,
                Reason::Allowlisted,
                Some(Class::Invite),
            ),
        )],
    );
    h.maps_mut()
        .allow_del(&[net(&format!("{CLIENT_V4}/24"))])
        .unwrap();
    assert_eq!(list_empty(&h, LIST_ALLOW), 1, "the last entry is gone");
    check(
        &h,
        &[Row::accepted(
            "no longer allowlisted",
            pkt.clone(),
            Class::Invite,
        )],
    );

    h.maps_mut().block_add(&[net("2001:db8::/32")], 0).unwrap();
    assert_eq!(list_empty(&h, LIST_BLOCK), 0);
    check(
        &h,
        &[
            Row::dropped(
                "blocklisted /32, v6",
                udp6(SIP, invite()).build(),
                Reason::Blocklisted,
                Class::Invite,
            ),
            Row::accepted("v4 not in the v6 block", pkt.clone(), Class::Invite),
        ],
    );

    // A flag wrongly left "empty" would hide the entry; the sweep repairs it.
    h.maps_mut().empty_lists.set(0, LIST_BLOCK, 0).unwrap();
    check(
        &h,
        &[Row::accepted(
            "hidden by a stale flag",
            udp6(SIP, invite()).build(),
            Class::Invite,
        )],
    );
    h.maps_mut().sweep_expired(0, true).unwrap();
    assert_eq!(
        list_empty(&h, LIST_BLOCK),
        0,
        "the sweep re-checks the flags"
    );
    check(
        &h,
        &[Row::dropped(
            "blocked again",
            udp6(SIP, invite()).build(),
            Reason::Blocklisted,
            Class::Invite,
        )],
    );
    h.maps_mut().block_del(&[net("2001:db8::/32")]).unwrap();
    assert_eq!(list_empty(&h, LIST_BLOCK), 1);
}

/// IPv4 sources are keyed as ::ffff:a.b.c.d; an IPv6 prefix covering that
/// space (`::/0`) must still match IPv6 sources only, in both lists, and an
/// IPv4 entry (0.0.0.0/0 is the same key) must still work beside it.
#[test]
fn ipv6_prefixes_never_match_ipv4_sources() {
    use sipguard_common::maps::{LIST_ALLOW, LIST_BLOCK};
    let mut h = harness();
    let net = |s: &str| -> ipnet::IpNet { s.parse().unwrap() };
    let v4 = || udp4(SIP, Sip::invite_with_sdp().build()).build();
    let v6 = || udp6(SIP, Sip::invite_with_sdp().build()).build();
    let allowlisted = |name: &str, pkt: Vec<u8>| {
        Row::new(
            name,
            pkt,
            Want::new(
                XDP_PASS,
                Verdict::Pass,
                Reason::Allowlisted,
                Some(Class::Invite),
            ),
        )
    };

    h.maps_mut().block_add(&[net("::/0")], 0).unwrap();
    check(
        &h,
        &[
            Row::dropped(
                "v6 under block ::/0",
                v6(),
                Reason::Blocklisted,
                Class::Invite,
            ),
            Row::accepted("v4 under block ::/0", v4(), Class::Invite),
        ],
    );
    h.maps_mut()
        .block_add(&[net(&format!("{CLIENT_V4}/16"))], 0)
        .unwrap();
    check(
        &h,
        &[Row::dropped(
            "v4 /16 beside ::/0",
            v4(),
            Reason::Blocklisted,
            Class::Invite,
        )],
    );
    let listed: Vec<String> = h
        .maps()
        .block_list()
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(listed.len(), 2, "the hole is not an entry: {listed:?}");
    h.maps_mut().block_del(&[net("::/0")]).unwrap();
    h.maps_mut()
        .block_del(&[net(&format!("{CLIENT_V4}/16"))])
        .unwrap();
    assert_eq!(list_empty(&h, LIST_BLOCK), 1, "no hole left behind");

    h.maps_mut().allow_add(&[net("::/0")]).unwrap();
    check(
        &h,
        &[
            allowlisted("v6 under allow ::/0", v6()),
            Row::accepted("v4 under allow ::/0", v4(), Class::Invite),
        ],
    );
    h.maps_mut().allow_add(&[net("0.0.0.0/0")]).unwrap();
    check(&h, &[allowlisted("v4 under allow 0.0.0.0/0", v4())]);
    h.maps_mut().allow_del(&[net("0.0.0.0/0")]).unwrap();
    check(
        &h,
        &[Row::accepted(
            "v4 once 0.0.0.0/0 is gone",
            v4(),
            Class::Invite,
        )],
    );
    assert_eq!(
        h.maps().allow_list().unwrap(),
        vec![net("::/0")],
        "the list shows what was added"
    );
    h.maps_mut().allow_del(&[net("::/0")]).unwrap();
    assert_eq!(list_empty(&h, LIST_ALLOW), 1, "no hole left behind");
}

/// A later fragment passes only after its datagram's first fragment passed
/// (issue 15): a flood of later fragments whose first one never came (or
/// was dropped) would only fill the kernel's reassembly memory. Non-SIP
/// datagrams' later fragments pass after their first like SIP ones.
#[test]
fn later_fragments_pass_only_after_their_first() {
    let mut h = harness();
    let invite = Sip::invite_with_sdp().build();
    let split = 512;
    let (first, rest) = (Frag::First { split }, Frag::Rest { split });
    let v4_frag = |src, port, frag| {
        Pkt::udp_v4(src, SERVER_V4, port, invite.clone())
            .fragment(frag)
            .build()
    };
    let v6_frag = |port, frag| {
        Pkt::udp_v6(CLIENT_V6, SERVER_V6, port, invite.clone())
            .fragment(frag)
            .build()
    };
    let later = |name: &str, pkt, verdict, reason| {
        let action = if verdict == Verdict::Drop {
            XDP_DROP
        } else {
            XDP_PASS
        };
        Row::new(name, pkt, Want::new(action, verdict, reason, None))
    };
    let (a, b, c) = (v4(31), v4(32), v4(33));
    let net = |s: String| -> ipnet::IpNet { s.parse().unwrap() };
    h.maps_mut()
        .block_add(&[net(format!("{c}/32"))], 0)
        .unwrap();
    check(
        &h,
        &[
            later(
                "v4 later fragment first: an orphan",
                v4_frag(a, SIP, rest),
                Verdict::Drop,
                Reason::FragmentOrphan,
            ),
            Row::accepted("v4 first fragment", v4_frag(a, SIP, first), Class::Invite),
            later(
                "v4 later fragment after it",
                v4_frag(a, SIP, rest),
                Verdict::Pass,
                Reason::Fragment,
            ),
            later(
                "v4 later fragment from another source",
                v4_frag(b, SIP, rest),
                Verdict::Drop,
                Reason::FragmentOrphan,
            ),
            Row::unclassified(
                "first fragment to another port",
                v4_frag(b, 9, first),
                Reason::NotSipPort,
            ),
            later(
                "its later fragment",
                v4_frag(b, 9, rest),
                Verdict::Pass,
                Reason::Fragment,
            ),
            Row::new(
                "first fragment, blocklisted",
                v4_frag(c, SIP, first),
                Want::new(
                    XDP_DROP,
                    Verdict::Drop,
                    Reason::Blocklisted,
                    Some(Class::Invite),
                ),
            ),
            later(
                "its later fragment",
                v4_frag(c, SIP, rest),
                Verdict::Drop,
                Reason::Blocklisted,
            ),
            later(
                "v6 later fragment first: an orphan",
                v6_frag(SIP, rest),
                Verdict::Drop,
                Reason::FragmentOrphan,
            ),
            Row::accepted("v6 first fragment", v6_frag(SIP, first), Class::Invite),
            later(
                "v6 later fragment after it",
                v6_frag(SIP, rest),
                Verdict::Pass,
                Reason::Fragment,
            ),
        ],
    );
    // A first fragment a rule drops leaves its later fragments orphans.
    h.maps_mut().block_del(&[net(format!("{c}/32"))]).unwrap();
    check(
        &h,
        &[later(
            "the blocked first fragment's later fragment, once unblocked",
            v4_frag(c, SIP, rest),
            Verdict::Drop,
            Reason::FragmentOrphan,
        )],
    );
    h.maps_mut().set_enforce(false).unwrap();
    check(
        &h,
        &[later(
            "monitor mode: an orphan would be dropped",
            v4_frag(v4(34), SIP, rest),
            Verdict::WouldDrop,
            Reason::FragmentOrphan,
        )],
    );
}
