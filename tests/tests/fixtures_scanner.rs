//! Scanner and protocol-abuse defence (GitHub issue 4) through
//! BPF_PROG_TEST_RUN: real captures of SIPVicious, an Nmap-style probe and
//! legitimate sipp traffic (tests/fixtures/captures, see its README) are
//! replayed frame by frame, then crafted requests probe each rule: header
//! signatures (ban and count tiers, compact header forms, run-time changes),
//! mandatory headers, truncation, not-SIP, oversized payloads, enumeration,
//! and TCP SYN limits. Every row checks the XDP action, the one reason and
//! class counter it moves (nothing else may move), the signature hit
//! counters, and for bans the ban table itself.
//!
//! Each test loads its own program (its own maps), so tests run in
//! parallel. Rows inside a test share per-source state; rows that must not
//! see each other's bans or targets get their own source (`packet::v4(n)`).
//! Needs root.

use std::net::{IpAddr, Ipv4Addr};

use sipguard::config::Config;
use sipguard_common::{
    Class, Reason,
    signature::{TIER_BAN, TIER_COUNT},
    source::{Ban, BanReason},
};
use sipguard_tests::{
    captures::{self, Capture},
    fixture::{Row, Want, check, failures, harness, run},
    harness::Harness,
    packet::{CLIENT_V6, Frag, Pkt, SERVER_V4, SERVER_V6, Tcp, garbage, sip::Sip, v4},
};

const SIP: u16 = 5060;
/// The lab addresses the captures were recorded with
/// (tests/scripts/capture-scanners.sh).
const LAB_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const LAB_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LAB_ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

// ---------------------------------------------------------------------------
// Ban table, settings and method classes (rows: `sipguard_tests::fixture`)
// ---------------------------------------------------------------------------

/// The source's entry in the ban table, if any.
fn ban_of(h: &Harness, src: IpAddr) -> Option<Ban> {
    let mask = h.maps().policy().expect("policy").v6_mask;
    let key = sipguard::addr::src_key(src, &mask);
    h.maps()
        .bans_list()
        .expect("bans")
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| b)
}

/// Change settings the way `sipguard limits set KEY=VALUE...` does.
fn limits_set(h: &mut Harness, settings: &[&str]) {
    let mut cfg = Config::from_policy(&h.maps().policy().expect("policy"));
    for s in settings {
        cfg.set(s).unwrap_or_else(|e| panic!("{s}: {e:#}"));
    }
    h.maps_mut().set_policy(&cfg.policy()).expect("set policy");
}

fn class_of_method(method: &str) -> Class {
    match method {
        "INVITE" => Class::Invite,
        "REGISTER" => Class::Register,
        "OPTIONS" => Class::Options,
        "ACK" => Class::Ack,
        "BYE" => Class::Bye,
        "CANCEL" => Class::Cancel,
        "SUBSCRIBE" => Class::Subscribe,
        "MESSAGE" => Class::Message,
        other => panic!("no class for method {other} in these fixtures"),
    }
}

// ---------------------------------------------------------------------------
// Real captures
// ---------------------------------------------------------------------------

/// A capture of a scanning tool and what its first frame must trigger.
struct ScannerCapture {
    file: &'static str,
    /// The User-Agent the tool sent, as a check that the capture is what
    /// the README says.
    user_agent: &'static str,
    /// Signature hits of the first frame: every occurrence of a signature
    /// token in User-Agent, From, To, Contact and the Request-URI counts.
    first_hits: &'static [(&'static str, u64)],
    /// The signature the ban names: the first ban-tier token in the
    /// message (svmap's To display name comes before its User-Agent).
    ban_token: &'static str,
}

const SCANNER_CAPTURES: [ScannerCapture; 5] = [
    ScannerCapture {
        file: "svmap",
        user_agent: "friendly-scanner",
        // To and From both carry the display name "sipvicious".
        first_hits: &[("friendly-scanner", 1), ("sipvicious", 2)],
        ban_token: "sipvicious",
    },
    ScannerCapture {
        file: "svwar-register",
        user_agent: "friendly-scanner",
        first_hits: &[("friendly-scanner", 1)],
        ban_token: "friendly-scanner",
    },
    ScannerCapture {
        file: "svwar-invite",
        user_agent: "friendly-scanner",
        first_hits: &[("friendly-scanner", 1)],
        ban_token: "friendly-scanner",
    },
    ScannerCapture {
        file: "svcrack",
        user_agent: "friendly-scanner",
        first_hits: &[("friendly-scanner", 1)],
        ban_token: "friendly-scanner",
    },
    ScannerCapture {
        file: "nmap-options",
        user_agent: "Nmap NSE",
        // "nm" (count tier) is the user in the Request-URI, From, To and
        // Contact; "nmap" (ban tier) is in the User-Agent.
        first_hits: &[("nmap", 1), ("nm", 4)],
        ban_token: "nmap",
    },
];

/// The capture's frames with their SIP method, after checking each is a
/// complete UDP datagram from `src` to the lab server's 5060.
fn frames(cap: &Capture, src: Ipv4Addr) -> Vec<(Vec<u8>, String)> {
    assert!(!cap.frames.is_empty(), "{}: no frames", cap.name);
    cap.frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let u = captures::udp(f)
                .unwrap_or_else(|| panic!("{} frame {}: not a UDP datagram", cap.name, i + 1));
            assert_eq!(
                (u.src, u.dst, u.dport),
                (IpAddr::V4(src), IpAddr::V4(LAB_SERVER), SIP),
                "{} frame {}",
                cap.name,
                i + 1
            );
            let text = String::from_utf8_lossy(&u.payload).into_owned();
            (f.clone(), captures::method(&text).to_string())
        })
        .collect()
}

/// Replay a scanner capture: the first frame is dropped as a scanner and
/// bans the source; every later frame is dropped as banned without being
/// scanned again, but for the first later REGISTER: let through on
/// probation (a forger's victim must be able to register), it is scanned,
/// caught again, and confirms the ban. Returns the mismatches, so every
/// capture is checked.
fn replay_scanner(cap: &ScannerCapture, enforce: bool) -> Vec<String> {
    let capture = captures::load(cap.file).unwrap_or_else(|e| panic!("{e:#}"));
    let first = captures::udp(&capture.frames[0]).expect("UDP");
    let text = String::from_utf8_lossy(&first.payload).into_owned();
    assert_eq!(
        captures::header(&text, "User-Agent"),
        Some(cap.user_agent),
        "{}: first frame's User-Agent",
        cap.file
    );
    let mut h = harness();
    h.maps_mut().set_enforce(enforce).unwrap();
    let frames = frames(&capture, LAB_ATTACKER);
    let mut rows = Vec::new();
    let mut confirmed = false;
    let mut banned_frames = 0;
    for (i, (frame, method)) in frames.iter().enumerate() {
        let class = class_of_method(method);
        let want = if i == 0 {
            Want::denied(enforce, Reason::Scanner, class).hits(cap.first_hits)
        } else if method == "REGISTER" && !confirmed {
            confirmed = true;
            Want::denied(enforce, Reason::Scanner, class).hits(cap.first_hits)
        } else {
            banned_frames += 1;
            Want::denied(enforce, Reason::Banned, class)
        };
        rows.push(Row::new(
            format!("{} frame {} ({method})", cap.file, i + 1),
            frame.clone(),
            want,
        ));
    }
    let mut failures = failures(&h, &rows);

    let Some(ban) = ban_of(&h, IpAddr::V4(LAB_ATTACKER)) else {
        failures.push(format!(
            "  {}: the attacker is not in the ban table",
            cap.file
        ));
        return failures;
    };
    let ban_for = h.maps().policy().unwrap().ban_for_ns;
    let got = (
        BanReason::name(ban.reason),
        h.maps().ban_detail(ban.reason, ban.detail),
        // In whole seconds: a confirmation moves the expiry on a little.
        (ban.expires_ns - ban.since_ns) / 1_000_000_000,
        ban.dropped,
    );
    // Every later frame dropped as banned is counted against the ban.
    let want = (
        "scanner",
        cap.ban_token.to_string(),
        ban_for / 1_000_000_000,
        banned_frames,
    );
    if got != want {
        failures.push(format!(
            "  {}: ban (reason, detail, length s, dropped) {got:?}, want {want:?}",
            cap.file
        ));
    }
    println!(
        "{:<15} {:>2} frames: frame 1 {} as scanner, {} more as banned; ban {:?}; \
         mismatches: {}",
        cap.file,
        frames.len(),
        if enforce { "dropped" } else { "would drop" },
        frames.len() - 1,
        got,
        failures.len()
    );
    failures
}

fn replay_all(enforce: bool) {
    let failures: Vec<String> = SCANNER_CAPTURES
        .iter()
        .flat_map(|cap| replay_scanner(cap, enforce))
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn scanner_captures_are_dropped_and_banned() {
    replay_all(true);
}

/// Monitor mode drops nothing but judges, counts and bans the same.
#[test]
fn scanner_captures_in_monitor_mode_pass_as_would_drop() {
    replay_all(false);
}

/// Legitimate sipp traffic recorded in the same lab: every frame passes,
/// no signature hits, no ban.
#[test]
fn legitimate_captures_are_accepted() {
    for file in ["legit-sipp-register", "legit-sipp-invite"] {
        let capture = captures::load(file).unwrap_or_else(|e| panic!("{e:#}"));
        let frames = frames(&capture, LAB_CLIENT);
        let h = harness();
        let rows: Vec<Row> = frames
            .iter()
            .enumerate()
            .map(|(i, (f, m))| {
                Row::new(
                    format!("{file} frame {} ({m})", i + 1),
                    f.clone(),
                    Want::accepted(class_of_method(m)),
                )
            })
            .collect();
        check(&h, &rows);
        assert!(
            ban_of(&h, IpAddr::V4(LAB_CLIENT)).is_none(),
            "{file}: banned"
        );
        let methods: Vec<&str> = frames.iter().map(|(_, m)| m.as_str()).collect();
        println!("{file}: {} frames accepted: {methods:?}", frames.len());
    }
}

// ---------------------------------------------------------------------------
// Crafted requests
// ---------------------------------------------------------------------------

/// SIP text from lines, CRLF-terminated, with the empty line and `body`.
fn message(lines: &[String], body: &str) -> Vec<u8> {
    let mut m = lines.join("\r\n");
    m.push_str("\r\n\r\n");
    m.push_str(body);
    m.into_bytes()
}

/// A request's text without the header line(s) named `name` (long form).
fn without_header(msg: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8(msg.to_vec()).unwrap();
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let kept: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&prefix))
        .collect();
    assert_ne!(kept.join("\r\n"), text, "{name} was not in the message");
    kept.join("\r\n").into_bytes()
}

/// The lines of a neutral INVITE (no signature token anywhere) with the
/// mandatory headers in long or compact form.
fn invite_lines(compact: bool) -> Vec<String> {
    let (v, f, t, i, m) = if compact {
        ("v", "f", "t", "i", "m")
    } else {
        ("Via", "From", "To", "Call-ID", "Contact")
    };
    vec![
        "INVITE sip:alice@example.com SIP/2.0".into(),
        format!("{v}: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK74bf9;rport"),
        "Max-Forwards: 70".into(),
        format!("{f}: \"Bob\" <sip:bob@example.com>;tag=9fxced76sl"),
        format!("{t}: <sip:alice@example.com>"),
        format!("{i}: 3848276298220188511@198.18.0.2"),
        "CSeq: 1 INVITE".into(),
        format!("{m}: <sip:bob@198.18.0.2:5060>"),
        "User-Agent: Linphone/5.2.5 (belle-sip/5.2.4)".into(),
    ]
}

/// Replace the value of the line starting with `name:` in `lines`.
fn set_line(lines: &mut [String], name: &str, value: &str) {
    let prefix = format!("{name}:");
    let line = lines
        .iter_mut()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} line"));
    *line = format!("{name}: {value}");
}

/// A 1400-byte INVITE whose last header is `User-Agent: <ua>`: three Vias
/// and a proxy's worth of Record-Route and extension headers before it, so
/// the scan walks every line of the message to reach it. No line is longer
/// than 200 bytes (see `header_lines_longer_than_the_scan_window_are_read_and_scanned`).
fn invite_1400_ua_last(ua: &str) -> Vec<u8> {
    const SIZE: usize = 1400;
    let mut lines = invite_lines(false);
    lines.pop(); // the User-Agent goes last
    for p in 1..=2 {
        lines.insert(
            1,
            format!("Via: SIP/2.0/UDP 198.18.1.{p}:5060;branch=z9hG4bK-proxy{p}-8f3a1c;received=198.18.1.{p}"),
        );
    }
    for p in 1..=3 {
        lines.push(format!(
            "Record-Route: <sip:198.18.1.{p}:5060;transport=udp;lr;ftag=9fxced76sl;did=4a1.b31{p}>"
        ));
    }
    lines.push(
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO".into(),
    );
    lines.push("Supported: replaces, timer, 100rel, path, gruu".into());
    lines.push("Session-Expires: 1800;refresher=uac".into());
    let tail = ["Content-Length: 0".to_string(), format!("User-Agent: {ua}")];
    let with_tail = |l: &Vec<String>| {
        let mut all = l.clone();
        all.extend(tail.iter().cloned());
        all
    };
    let mut k = 0;
    while message(&with_tail(&lines), "").len() < SIZE - 120 {
        lines.push(format!("X-Trace-{k}: {}", "a1b2c3d4e5f6".repeat(5)));
        k += 1;
    }
    lines = with_tail(&lines);
    // Pad one extension header so the whole message is exactly SIZE bytes.
    let len = message(&lines, "").len();
    assert!(len <= SIZE - 20, "base message already {len} bytes");
    lines.insert(
        lines.len() - 2,
        format!("X-Pad: {}", "p".repeat(SIZE - len - 9)),
    );
    let msg = message(&lines, "");
    assert_eq!(msg.len(), SIZE);
    assert!(lines.len() < 40, "{} lines", lines.len());
    assert!(lines.iter().all(|l| l.len() <= 200));
    msg
}

/// A fresh source per row: no row sees another's ban or targets.
fn from(n: u32, payload: Vec<u8>) -> Vec<u8> {
    Pkt::udp_v4(v4(1000 + n), SERVER_V4, SIP, payload).build()
}

/// Requests each rule judges, with the expectation when enforcing or not.
fn crafted_rows(enforce: bool) -> Vec<Row> {
    let deny = |reason, class| Want::denied(enforce, reason, class);
    let invite = Sip::request("INVITE").build();
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |name: &str, payload: Vec<u8>, want: Want| {
        let n = rows.len() as u32;
        rows.push(Row::new(name.to_string(), from(n, payload), want));
    };

    // Signatures deep in a large message, and the same message without one.
    add(
        "1400-byte INVITE, scanner User-Agent as the last header",
        invite_1400_ua_last("friendly-scanner"),
        deny(Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]),
    );
    add(
        "1400-byte INVITE, neutral User-Agent as the last header",
        invite_1400_ua_last("Linphone/5.2.5 (belle-sip/5.2.4)"),
        Want::accepted(Class::Invite),
    );
    add(
        "lower-case header name: user-agent: sipcli/v1.8",
        message(
            &{
                let mut l = invite_lines(false);
                *l.last_mut().unwrap() = "user-agent: sipcli/v1.8".into();
                l
            },
            "",
        ),
        deny(Reason::Scanner, Class::Invite).hits(&[("sipcli", 1)]),
    );

    // Compact forms (RFC 3261 7.3.3): recognised as the mandatory headers
    // and scanned like the long ones.
    add(
        "compact v: f: t: i: m: headers, neutral",
        message(&invite_lines(true), ""),
        Want::accepted(Class::Invite),
    );
    for (short, long) in [("v", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID")] {
        add(
            &format!("compact headers without {short}: ({long})"),
            without_header(&message(&invite_lines(true), ""), short),
            deny(Reason::MissingHeader, Class::Invite),
        );
    }
    for (short, value, token) in [
        (
            "f",
            "\"sipvicious\" <sip:100@example.com>;tag=1",
            "sipvicious",
        ),
        ("t", "<sip:sipcli@example.com>", "sipcli"),
        (
            "m",
            "<sip:friendly-scanner@198.18.0.3:5060>",
            "friendly-scanner",
        ),
    ] {
        let mut lines = invite_lines(true);
        set_line(&mut lines, short, value);
        add(
            &format!("compact {short}: carrying '{token}'"),
            message(&lines, ""),
            deny(Reason::Scanner, Class::Invite).hits(&[(token, 1)]),
        );
    }

    // Count tier: counted, never dropped.
    add(
        "count tier: User-Agent Zoiper rv2.10.11.1",
        Sip::request("REGISTER")
            .user_agent(Some("Zoiper rv2.10.11.1"))
            .build(),
        Want::accepted(Class::Register).hits(&[("zoiper", 1)]),
    );
    add(
        "count tier in User-Agent, ban tier in From: the ban wins",
        message(
            &{
                let mut l = invite_lines(false);
                set_line(&mut l, "From", "\"sipvicious\" <sip:100@example.com>;tag=1");
                set_line(&mut l, "User-Agent", "Cisco-SIPGateway/IOS-12.x");
                l
            },
            "",
        ),
        deny(Reason::Scanner, Class::Invite).hits(&[("sipvicious", 1), ("cisco-sipgateway", 1)]),
    );

    // Mandatory headers (RFC 3261 8.1.1), each missing in turn.
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        add(
            &format!("INVITE without {name}"),
            without_header(&invite, name),
            deny(Reason::MissingHeader, Class::Invite),
        );
    }
    add(
        "OPTIONS without Call-ID",
        without_header(&Sip::request("OPTIONS").build(), "Call-ID"),
        deny(Reason::MissingHeader, Class::Options),
    );

    // The header section must end with an empty line.
    add(
        "INVITE without the empty line after the headers",
        invite[..invite.len() - 2].to_vec(),
        deny(Reason::Truncated, Class::Invite),
    );
    add(
        "INVITE cut in the middle of a header line",
        invite[..150].to_vec(),
        deny(Reason::Truncated, Class::Invite),
    );
    add(
        "REGISTER, headers only, no empty line",
        {
            let r = Sip::request("REGISTER").build();
            r[..r.len() - 2].to_vec()
        },
        deny(Reason::Truncated, Class::Register),
    );

    // Not SIP at all on the SIP port.
    add(
        "200 bytes of garbage",
        garbage(200, 4),
        deny(Reason::NotSip, Class::NotSip),
    );
    add(
        "an HTTP request",
        b"GET / HTTP/1.1\r\nHost: 198.18.0.1\r\n\r\n".to_vec(),
        deny(Reason::NotSip, Class::NotSip),
    );
    rows
}

#[test]
fn crafted_requests_enforcing() {
    check(&harness(), &crafted_rows(true));
}

/// The same requests with enforcement off: judged and counted the same,
/// all passed.
#[test]
fn crafted_requests_in_monitor_mode() {
    let mut h = harness();
    h.maps_mut().set_enforce(false).unwrap();
    check(&h, &crafted_rows(false));
}

/// A big INVITE (over 2 KB of headers) in fragments at a 1500-byte MTU:
/// the first fragment ends inside the header section, so it has no empty
/// line; it is a piece of a message, not a truncated one, and passes. A
/// scanner User-Agent in it is still caught. Later fragments carry no UDP
/// header and pass as `fragment`.
#[test]
fn first_fragment_of_a_big_invite_is_not_truncated() {
    fn big_invite(ua: &str) -> Vec<u8> {
        let mut lines = invite_lines(false);
        set_line(&mut lines, "User-Agent", ua);
        for k in 0..30 {
            lines.push(format!(
                "X-Route-Set-{k}: <sip:198.18.2.{k}:5060;lr;ftag=9fxced76sl>"
            ));
        }
        lines.push("Content-Length: 0".into());
        message(&lines, "")
    }
    // The largest multiples of 8 that fit a 1500-byte MTU after the IPv4
    // header, and after the IPv6 and fragment headers.
    const SPLIT_V4: usize = 1480;
    const SPLIT_V6: usize = 1448;
    let neutral = big_invite("Linphone/5.2.5 (belle-sip/5.2.4)");
    let text = String::from_utf8(neutral.clone()).unwrap();
    let headers = text.find("\r\n\r\n").unwrap();
    assert!(
        headers > SPLIT_V4 + 500,
        "the header section ({headers} bytes) must outlast the first fragment"
    );
    for enforce in [true, false] {
        let mut h = harness();
        h.maps_mut().set_enforce(enforce).unwrap();
        let v4_pkt = Pkt::udp_v4(v4(1), SERVER_V4, SIP, neutral.clone());
        let v6_pkt = Pkt::udp_v6(CLIENT_V6, SERVER_V6, SIP, neutral.clone());
        let size = neutral.len();
        let rows = vec![
            Row::new(
                format!("IPv4 first fragment of a {size}-byte INVITE"),
                v4_pkt
                    .clone()
                    .fragment(Frag::First { split: SPLIT_V4 })
                    .build(),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "IPv4 second fragment".to_string(),
                v4_pkt.fragment(Frag::Rest { split: SPLIT_V4 }).build(),
                Want::unclassified(Reason::Fragment),
            ),
            Row::new(
                format!("IPv6 first fragment of the {size}-byte INVITE"),
                v6_pkt
                    .clone()
                    .fragment(Frag::First { split: SPLIT_V6 })
                    .build(),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "IPv6 second fragment".to_string(),
                v6_pkt.fragment(Frag::Rest { split: SPLIT_V6 }).build(),
                Want::unclassified(Reason::Fragment),
            ),
            Row::new(
                "IPv4 first fragment, scanner User-Agent".to_string(),
                Pkt::udp_v4(v4(2), SERVER_V4, SIP, big_invite("friendly-scanner"))
                    .fragment(Frag::First { split: SPLIT_V4 })
                    .build(),
                Want::denied(enforce, Reason::Scanner, Class::Invite)
                    .hits(&[("friendly-scanner", 1)]),
            ),
        ];
        check(&h, &rows);
    }
}

/// `malformed.max_message_bytes`: a payload of exactly the limit passes,
/// one byte more is oversized; in monitor mode it would drop.
#[test]
fn payload_over_max_message_bytes_is_oversized() {
    const MAX: usize = 1000;
    // A MESSAGE of exactly `n` bytes: the body takes up what the headers
    // leave (Content-Length's own digits included).
    let sized = |n: usize| {
        let body = (1..n)
            .find(|b| Sip::request("MESSAGE").body_len(*b).build().len() >= n)
            .unwrap();
        let msg = Sip::request("MESSAGE").body_len(body).build();
        assert_eq!(msg.len(), n);
        msg
    };
    for enforce in [true, false] {
        let mut h = harness();
        limits_set(&mut h, &[&format!("malformed.max_message_bytes={MAX}")]);
        h.maps_mut().set_enforce(enforce).unwrap();
        check(
            &h,
            &[
                Row::new(
                    format!("MESSAGE of {MAX} bytes"),
                    from(0, sized(MAX)),
                    Want::accepted(Class::Message),
                ),
                Row::new(
                    format!("MESSAGE of {} bytes", MAX + 1),
                    from(1, sized(MAX + 1)),
                    Want::denied(enforce, Reason::Oversized, Class::Message),
                ),
                Row::new(
                    "oversized with a scanner User-Agent: oversized first, no scan".to_string(),
                    from(
                        2,
                        Sip::request("INVITE")
                            .user_agent(Some("friendly-scanner"))
                            .body_len(MAX)
                            .build(),
                    ),
                    Want::denied(enforce, Reason::Oversized, Class::Invite),
                ),
            ],
        );
        // The size rule does not ban: the same source is judged afresh.
        assert!(ban_of(&h, IpAddr::V4(v4(1001))).is_none());
    }
    // With malformed.drop off nothing is judged malformed.
    let mut h = harness();
    limits_set(
        &mut h,
        &[
            &format!("malformed.max_message_bytes={MAX}"),
            "malformed.drop=off",
        ],
    );
    check(
        &h,
        &[
            Row::new(
                "malformed.drop=off: oversized MESSAGE".to_string(),
                from(0, sized(MAX + 1)),
                Want::accepted(Class::Message),
            ),
            Row::new(
                "malformed.drop=off: garbage".to_string(),
                from(1, garbage(200, 4)),
                Want::accepted(Class::NotSip),
            ),
            Row::new(
                "malformed.drop=off: INVITE without Via".to_string(),
                from(2, without_header(&Sip::request("INVITE").build(), "Via")),
                Want::accepted(Class::Invite),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Signatures at run time
// ---------------------------------------------------------------------------

/// `signatures add/del` change the verdict on the next packet.
#[test]
fn signatures_added_and_deleted_at_run_time_change_the_verdict() {
    let mut h = harness();
    let tokens = |t: &str| vec![t.to_string()];
    let dialer = Sip::request("INVITE")
        .user_agent(Some("EvilDialer/2.1"))
        .build();
    let scanner = Sip::request("OPTIONS")
        .user_agent(Some("friendly-scanner"))
        .build();

    let mut rows = vec![Row::new(
        "unknown tool: EvilDialer".to_string(),
        from(0, dialer.clone()),
        Want::accepted(Class::Invite),
    )];
    check(&h, &std::mem::take(&mut rows));

    h.maps_mut()
        .signatures_add(&tokens("EvilDialer"), TIER_BAN)
        .unwrap();
    rows.push(Row::new(
        "after `signatures add evildialer`".to_string(),
        from(1, dialer.clone()),
        Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("evildialer", 1)]),
    ));
    check(&h, &std::mem::take(&mut rows));
    let ban = ban_of(&h, IpAddr::V4(v4(1001))).expect("banned");
    assert_eq!(h.maps().ban_detail(ban.reason, ban.detail), "evildialer");

    h.maps_mut().signatures_del(&tokens("evildialer")).unwrap();
    rows.push(Row::new(
        "after `signatures del evildialer`".to_string(),
        from(2, dialer.clone()),
        Want::accepted(Class::Invite),
    ));
    check(&h, &std::mem::take(&mut rows));

    h.maps_mut()
        .signatures_add(&tokens("evildialer"), TIER_COUNT)
        .unwrap();
    rows.push(Row::new(
        "after `signatures add --tier count evildialer`".to_string(),
        from(3, dialer),
        Want::accepted(Class::Invite).hits(&[("evildialer", 1)]),
    ));
    check(&h, &std::mem::take(&mut rows));

    // A shipped signature can be removed and restored too.
    h.maps_mut()
        .signatures_del(&tokens("friendly-scanner"))
        .unwrap();
    rows.push(Row::new(
        "after `signatures del friendly-scanner`".to_string(),
        from(4, scanner.clone()),
        Want::accepted(Class::Options),
    ));
    check(&h, &std::mem::take(&mut rows));
    h.maps_mut()
        .signatures_add(&tokens("friendly-scanner"), TIER_BAN)
        .unwrap();
    rows.push(Row::new(
        "after `signatures add friendly-scanner`".to_string(),
        from(5, scanner),
        Want::denied(true, Reason::Scanner, Class::Options).hits(&[("friendly-scanner", 1)]),
    ));
    check(&h, &rows);
}

/// Count tier: every request passes, the hits add up, nobody is banned.
#[test]
fn count_tier_signature_passes_and_counts() {
    let h = harness();
    let src = v4(7);
    const N: u64 = 5;
    let rows: Vec<Row> = (0..N)
        .map(|i| {
            Row::new(
                format!("Zoiper REGISTER {}", i + 1),
                Pkt::udp_v4(
                    src,
                    SERVER_V4,
                    SIP,
                    Sip::request("REGISTER")
                        .user_agent(Some("Zoiper rv2.10.11.1"))
                        .build(),
                )
                .build(),
                Want::accepted(Class::Register).hits(&[("zoiper", 1)]),
            )
        })
        .collect();
    check(&h, &rows);
    let row = h
        .maps()
        .signatures()
        .unwrap()
        .into_iter()
        .find(|r| r.token == "zoiper")
        .expect("zoiper is shipped");
    assert_eq!((row.tier, row.hits), ("count", N));
    assert!(ban_of(&h, IpAddr::V4(src)).is_none());
    println!(
        "zoiper: {} hits after {N} requests, tier {}",
        row.hits, row.tier
    );
}

// ---------------------------------------------------------------------------
// Enumeration
// ---------------------------------------------------------------------------

/// A request of `method` asking for target `user`: the Request-URI and To
/// user for dialog-creating requests, the To user for REGISTER (whose
/// Request-URI is the domain).
fn target_request(method: &str, user: &str) -> Vec<u8> {
    let sip = Sip::request(method).user_agent(Some("Linphone/5.2.5 (belle-sip/5.2.4)"));
    let sip = if method == "REGISTER" {
        sip.from_user(user).to_user(user)
    } else {
        sip.user(user)
    };
    sip.build()
}

/// Send requests for users `first..first+n` from `src`; returns the index
/// of the first dropped one (None if all passed) after checking that all
/// before it were accepted, it was dropped as enumeration, and all after it
/// as banned, but for REGISTERs on probation (two, within five seconds):
/// those are judged like anyone's, and pass.
fn sweep(h: &mut Harness, src: Ipv4Addr, method: &str, n: u32, enforce: bool) -> Option<usize> {
    let class = class_of_method(method);
    let mut dropped_at = None;
    let mut probation = if method == "REGISTER" { 2 } else { 0 };
    for i in 0..n {
        let user = format!("{}", 2000 + i);
        let pkt = Pkt::udp_v4(src, SERVER_V4, SIP, target_request(method, &user)).build();
        let seen = run(h, &pkt);
        let want = match dropped_at {
            None if seen.delta.reasons.keys().any(|(_, r)| *r == "enumeration") => {
                dropped_at = Some(i as usize);
                Want::denied(enforce, Reason::Enumeration, class)
            }
            None => Want::accepted(class),
            Some(_) if probation > 0 => {
                probation -= 1;
                Want::accepted(class)
            }
            Some(_) => Want::denied(enforce, Reason::Banned, class),
        };
        if let Some(why) = want.check(&pkt, &seen) {
            panic!("{method} to user {user} (target {}): {why}", i + 1);
        }
    }
    dropped_at
}

/// One source asking for 16 or more distinct targets within the window is
/// enumerating, whatever its User-Agent: dropped and banned. The kernel
/// counts targets in a 128-bit bitmap, so two targets can share a bit and
/// the drop can come a little after the 16th; never before it.
#[test]
fn sixteen_distinct_targets_are_enumeration() {
    for enforce in [true, false] {
        let mut h = harness();
        h.maps_mut().set_enforce(enforce).unwrap();
        let after = h.maps().policy().unwrap().enum_after as usize;
        assert_eq!(after, 16, "default scanner.enumeration_after");
        for (n, method) in ["INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "MESSAGE"]
            .iter()
            .enumerate()
        {
            let src = v4(100 + n as u32);
            let at = sweep(&mut h, src, method, 20, enforce)
                .unwrap_or_else(|| panic!("{method}: 20 distinct targets, none dropped"));
            assert!(
                at + 1 >= after,
                "{method}: dropped at target {}, before {after} distinct targets",
                at + 1
            );
            let ban = ban_of(&h, IpAddr::V4(src)).expect("enumeration bans");
            assert_eq!(ban.reason, BanReason::Enumeration as u32);
            println!(
                "{method:<9} enforce={enforce}: targets 1-{at} accepted, target {} dropped as \
                 enumeration, {} more banned",
                at + 1,
                19 - at
            );
        }
    }
}

/// Ten distinct targets, each asked for twice (a phone retransmitting),
/// stay well under the threshold.
#[test]
fn ten_distinct_targets_pass() {
    let h = harness();
    let src = v4(9);
    let mut rows = Vec::new();
    for round in 0..2 {
        for i in 0..10 {
            // INVITE: 20 requests is the default INVITE burst; use OPTIONS
            // for the repeats so the rate limit stays out of the picture.
            let method = if round == 0 { "INVITE" } else { "OPTIONS" };
            rows.push(Row::new(
                format!("{method} to user {} (round {})", 3000 + i, round + 1),
                Pkt::udp_v4(
                    src,
                    SERVER_V4,
                    SIP,
                    target_request(method, &format!("{}", 3000 + i)),
                )
                .build(),
                Want::accepted(class_of_method(method)),
            ));
        }
    }
    check(&h, &rows);
    assert!(ban_of(&h, IpAddr::V4(src)).is_none());
}

/// In-dialog requests (BYE, ACK, CANCEL) do not open targets: a proxy
/// relaying many calls' BYEs is not enumerating.
#[test]
fn in_dialog_requests_do_not_count_as_targets() {
    let h = harness();
    let src = v4(10);
    let rows: Vec<Row> = ["BYE", "ACK", "CANCEL"]
        .iter()
        .flat_map(|m| (0..12).map(move |i| (*m, i)))
        .map(|(m, i)| {
            Row::new(
                format!("{m} to user {}", 4000 + i),
                Pkt::udp_v4(
                    src,
                    SERVER_V4,
                    SIP,
                    target_request(m, &format!("{}", 4000 + i)),
                )
                .build(),
                Want::accepted(class_of_method(m)),
            )
        })
        .collect();
    check(&h, &rows);
}

/// `scanner.enumeration_after` is live: 0 turns the rule off, 5 lowers it.
#[test]
fn enumeration_threshold_follows_limits_set() {
    let mut h = harness();
    limits_set(&mut h, &["scanner.enumeration_after=0"]);
    assert_eq!(sweep(&mut h, v4(20), "OPTIONS", 40, true), None, "rule off");
    limits_set(&mut h, &["scanner.enumeration_after=5"]);
    let at = sweep(&mut h, v4(21), "OPTIONS", 12, true).expect("dropped with the rule at 5");
    assert!(at >= 4, "dropped at target {} of a threshold of 5", at + 1);
    println!("enumeration_after=5: dropped at target {}", at + 1);
}

// ---------------------------------------------------------------------------
// TCP SYN limits
// ---------------------------------------------------------------------------

/// SYNs (connection attempts) are limited per source by `syn.rate/burst`,
/// violations ban by `ban.after`; other segments pass. Globally by
/// `global.syn.rate/burst`.
#[test]
fn syn_limits_follow_limits_set() {
    let syn = |src: Ipv4Addr| Pkt::tcp_v4(src, SERVER_V4, SIP, Tcp::Syn).build();
    let ack = |src: Ipv4Addr| Pkt::tcp_v4(src, SERVER_V4, SIP, Tcp::Ack).build();
    let tcp_ok = || Want::accepted(Class::Tcp);
    let tcp_denied = |reason| Want::denied(true, reason, Class::Tcp);

    // The default burst (20 SYNs), then rate_source. The rate is lowered
    // to one an hour so no token comes back while the rows run.
    let mut h = harness();
    limits_set(&mut h, &["syn.rate=1/h"]);
    let burst = Config::from_policy(&h.maps().policy().unwrap())
        .limits
        .syn
        .burst;
    let src = v4(30);
    let mut rows: Vec<_> = (0..burst)
        .map(|i| Row::new(format!("default: SYN {}", i + 1), syn(src), tcp_ok()))
        .collect();
    rows.push(Row::new(
        format!("default: SYN {}", burst + 1),
        syn(src),
        tcp_denied(Reason::RateSource),
    ));
    rows.push(Row::new("default: ACK after the burst", ack(src), tcp_ok()));
    check(&h, &rows);

    // syn.burst=3, ban after 2 violations.
    let mut h = harness();
    limits_set(&mut h, &["syn.rate=1/m", "syn.burst=3", "ban.after=2"]);
    let src = v4(31);
    let mut rows = Vec::new();
    for i in 1..=3 {
        rows.push(Row::new(
            format!("SYN {i} of a burst of 3"),
            syn(src),
            tcp_ok(),
        ));
    }
    rows.push(Row::new(
        "ACK, not a connection attempt",
        ack(src),
        tcp_ok(),
    ));
    rows.push(Row::new(
        "SYN 4: first violation",
        syn(src),
        tcp_denied(Reason::RateSource),
    ));
    rows.push(Row::new(
        "SYN 5: second violation, banned",
        syn(src),
        tcp_denied(Reason::RateSource),
    ));
    rows.push(Row::new(
        "SYN 6: banned",
        syn(src),
        tcp_denied(Reason::Banned),
    ));
    rows.push(Row::new(
        "ACK from the banned source",
        ack(src),
        tcp_denied(Reason::Banned),
    ));
    rows.push(Row::new("SYN from another source", syn(v4(32)), tcp_ok()));
    check(&h, &rows);
    let ban = ban_of(&h, IpAddr::V4(src)).expect("banned");
    assert_eq!(
        (
            BanReason::name(ban.reason),
            h.maps().ban_detail(ban.reason, ban.detail).as_str()
        ),
        ("flood", "syn")
    );

    // Per source unlimited, two SYNs for everyone together.
    let mut h = harness();
    limits_set(
        &mut h,
        &["syn.rate=0", "global.syn.rate=1/m", "global.syn.burst=2"],
    );
    check(
        &h,
        &[
            Row::new("global: SYN from source A", syn(v4(40)), tcp_ok()),
            Row::new("global: SYN from source B", syn(v4(41)), tcp_ok()),
            Row::new(
                "global: SYN from source C",
                syn(v4(42)),
                tcp_denied(Reason::RateGlobal),
            ),
            Row::new("global: ACK from source C", ack(v4(42)), tcp_ok()),
        ],
    );
}

// ---------------------------------------------------------------------------
// The edges of the documented rules and of RFC 3261: fragments of oversized
// datagrams, long values and lines, many header lines, blanks before the
// colon, a signature's reused id.
// ---------------------------------------------------------------------------

/// verdict.rs: oversized is "a UDP SIP payload larger than
/// max_message_bytes". A 9000-byte datagram crosses a 1500-byte link as
/// fragments; its first fragment's UDP header states the full length.
#[test]
fn the_first_fragment_of_an_oversized_datagram_is_dropped_as_oversized() {
    let h = harness();
    let max = h.maps().policy().unwrap().max_message_bytes as usize;
    let big = Sip::request("MESSAGE").body_len(max + 800).build();
    assert!(big.len() > max);
    check(
        &h,
        &[Row::new(
            format!(
                "first fragment of a {}-byte MESSAGE (limit {max})",
                big.len()
            ),
            Pkt::udp_v4(v4(50), SERVER_V4, SIP, big)
                .fragment(Frag::First { split: 1480 })
                .build(),
            Want::denied(true, Reason::Oversized, Class::Message),
        )],
    );
}

/// scan.rs: "Tokens of one value checked against the signatures (the first
/// ones: tool names sit at the start of User-Agent ...)", eight of them. The
/// token slots are a ring: a ninth token, and with eight tokens the reset
/// hash stored after a trailing non-token byte (")", ">"), overwrite slot 0,
/// so the first token, where tool names sit, is the one lost. svmap's own
/// From header (display name, URI, then a long tag: nine tokens) shows it:
/// its "sipvicious" is not counted (see `scanner_captures_*`).
#[test]
fn a_signature_first_in_a_value_of_eight_or_nine_tokens_is_caught() {
    let mut rows = Vec::new();
    for (i, ua) in [
        "friendly-scanner (X11; Linux x86_64; rv 1 2 3)",
        "friendly-scanner (X11; Linux x86_64; rv 1 2 3 4)",
    ]
    .iter()
    .enumerate()
    {
        let tokens = ua.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let n = tokens.filter(|t| !t.is_empty()).count();
        rows.push(Row::new(
            format!("User-Agent: {ua} ({n} tokens)"),
            from(
                i as u32,
                Sip::request("OPTIONS").user_agent(Some(ua)).build(),
            ),
            Want::denied(true, Reason::Scanner, Class::Options).hits(&[("friendly-scanner", 1)]),
        ));
    }
    check(&harness(), &rows);
}

/// scan.rs reads a line in 256-byte windows and skips a line with no end
/// in its first window, name and all. RFC 3261 sets no line length limit:
/// a long Via or Request-URI is legitimate, and a long User-Agent must
/// still be scanned ("values are tokenized only within this window").
#[test]
fn header_lines_longer_than_the_scan_window_are_read_and_scanned() {
    let long_via = {
        let mut l = invite_lines(false);
        set_line(
            &mut l,
            "Via",
            &format!(
                "SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK74bf9;rport;x-trace={}",
                "0123456789abcdef".repeat(15)
            ),
        );
        message(&l, "")
    };
    let long_ruri = {
        let mut l = invite_lines(false);
        l[0] = format!(
            "INVITE sip:alice@example.com;x-token={} SIP/2.0",
            "0123456789abcdef".repeat(16)
        );
        message(&l, "")
    };
    let long_ua = {
        let mut l = invite_lines(false);
        set_line(
            &mut l,
            "User-Agent",
            &format!("friendly-scanner {}", " ".repeat(280)),
        );
        message(&l, "")
    };
    check(
        &harness(),
        &[
            Row::new(
                "INVITE with a 300-byte Via",
                from(0, long_via),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "INVITE with a 300-byte Request-URI",
                from(1, long_ruri),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "User-Agent: friendly-scanner padded to 300 bytes",
                from(2, long_ua),
                Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]),
            ),
        ],
    );
}

/// Values are tokenized 32 bytes a step (the first step with the line, the
/// rest in the scan loop's next iterations): a signature across a step
/// boundary, or wholly past the first step, is found like one at the start,
/// and one past the 128 bytes tokenized is not. The lines after a value of
/// several steps are read as before it.
#[test]
fn signatures_anywhere_in_the_tokenized_window() {
    let ua = |value: &str| {
        let mut l = invite_lines(false);
        set_line(&mut l, "User-Agent", value);
        message(&l, "")
    };
    // "friendly-scanner" at value offset 25: bytes 25..41 span steps 0 and 1.
    let straddling = ua(&format!("{} friendly-scanner", "x".repeat(24)));
    // "sipcli" at offset 100, in the fourth step.
    let fourth_step = ua(&format!("{} sipcli/1.0", "y".repeat(99)));
    // At offset 130: past the 128 bytes tokenized, so not seen.
    let past_window = ua(&format!("{} sipcli/1.0", "z".repeat(129)));
    // A From whose display name takes four steps, then the other headers.
    let long_from = |user_agent: &str| {
        let mut l = invite_lines(false);
        set_line(
            &mut l,
            "From",
            &format!("\"{}\" <sip:bob@example.com>;tag=1", "w".repeat(110)),
        );
        set_line(&mut l, "User-Agent", user_agent);
        message(&l, "")
    };
    check(
        &harness(),
        &[
            Row::new(
                "friendly-scanner across the first step boundary",
                from(0, straddling),
                Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]),
            ),
            Row::new(
                "sipcli in the fourth step",
                from(1, fourth_step),
                Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("sipcli", 1)]),
            ),
            Row::new(
                "sipcli past the tokenized window",
                from(2, past_window),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "a four-step From, then every mandatory header",
                from(3, long_from("Linphone/5.2.5")),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "a four-step From, then a scanner User-Agent",
                from(4, long_from("friendly-scanner")),
                Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]),
            ),
        ],
    );
}

/// scan.rs looks at 64 lines, then treats the message as having no end of
/// headers (truncated). RFC 3261 sets no header count limit; a request
/// that crossed many proxies carries one Via and Record-Route per hop.
#[test]
fn a_request_with_more_than_64_header_lines_is_accepted() {
    let mut lines = invite_lines(false);
    for k in 0..60 {
        lines.push(format!("Record-Route: <sip:198.18.3.{k}:5060;lr>"));
    }
    lines.push("Content-Length: 0".into());
    let msg = message(&lines, "");
    check(
        &harness(),
        &[Row::new(
            format!(
                "INVITE with {} header lines, {} bytes",
                lines.len() - 1,
                msg.len()
            ),
            from(0, msg),
            Want::accepted(Class::Invite),
        )],
    );
}

/// RFC 3261 7.3.1/25.1: HCOLON = *( SP / HTAB ) ":" SWS, so "Via :" and
/// "CSeq\t:" name the same headers as "Via:" and "CSeq:".
#[test]
fn whitespace_before_the_header_colon_names_the_same_header() {
    let spaced = |name: &str, sep: &str| {
        let lines: Vec<String> = invite_lines(false)
            .into_iter()
            .map(|l| match l.strip_prefix(&format!("{name}:")) {
                Some(rest) => format!("{name}{sep}:{rest}"),
                None => l,
            })
            .collect();
        message(&lines, "")
    };
    check(
        &harness(),
        &[
            Row::new(
                "\"Via :\"",
                from(0, spaced("Via", " ")),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "\"CSeq\\t:\"",
                from(1, spaced("CSeq", "\t")),
                Want::accepted(Class::Invite),
            ),
            Row::new(
                "\"User-Agent\\t: friendly-scanner\"",
                from(2, {
                    let mut l = invite_lines(false);
                    *l.last_mut().unwrap() = "User-Agent\t: friendly-scanner".into();
                    message(&l, "")
                }),
                Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]),
            ),
        ],
    );
}

/// signatures.rs reuses a deleted signature's id for the next new one but
/// not its hit counter's reset: a new signature must start at 0 hits.
#[test]
fn a_new_signature_reusing_a_deleted_ones_id_starts_with_no_hits() {
    let mut h = harness();
    let t = |s: &str| vec![s.to_string()];
    h.maps_mut()
        .signatures_add(&t("oldtool"), TIER_COUNT)
        .unwrap();
    let pkt = from(
        0,
        Sip::request("OPTIONS").user_agent(Some("OldTool")).build(),
    );
    for _ in 0..3 {
        h.run(&pkt).unwrap();
    }
    h.maps_mut().signatures_del(&t("oldtool")).unwrap();
    h.maps_mut()
        .signatures_add(&t("newtool"), TIER_COUNT)
        .unwrap();
    let rows = h.maps().signatures().unwrap();
    let new = rows.iter().find(|r| r.token == "newtool").expect("added");
    assert_eq!(
        new.hits, 0,
        "newtool (id {}) never matched a packet",
        new.id
    );
}

/// Evasions of the signature match an attacker controls with the header's
/// spelling (issue 15): a value folded onto continuation lines (RFC 3261
/// 7.3.1: "a header's value may be folded onto multiple lines if the
/// continuation line begins with a space or horizontal tab"), blanks
/// before the colon, any case in name and value, compact header names.
/// A signature past the tokenized window or cut by a NUL is not seen
/// (docs/operating.md, "Scanner signatures"; the server would not parse
/// such a request as that User-Agent either).
#[test]
fn signature_evasions_by_header_spelling_are_caught() {
    let with_lines = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l = invite_lines(false);
        f(&mut l);
        message(&l, "")
    };
    let replace_ua = |raw: &[&str]| {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        with_lines(&move |l: &mut Vec<String>| {
            let at = l
                .iter()
                .position(|x| x.starts_with("User-Agent:"))
                .expect("a User-Agent line");
            l.splice(at..=at, raw.clone());
        })
    };
    let scanner =
        || Want::denied(true, Reason::Scanner, Class::Invite).hits(&[("friendly-scanner", 1)]);
    check(
        &harness(),
        &[
            Row::new(
                "folded: value on the next line",
                from(0, replace_ua(&["User-Agent:", " friendly-scanner"])),
                scanner(),
            ),
            Row::new(
                "folded: value continued after a tab",
                from(1, replace_ua(&["User-Agent: x", "\tfriendly-scanner"])),
                scanner(),
            ),
            Row::new(
                "folded twice",
                from(2, replace_ua(&["User-Agent:", " ", " friendly-scanner"])),
                scanner(),
            ),
            Row::new(
                "blanks before the colon",
                from(3, replace_ua(&["User-Agent  \t : friendly-scanner"])),
                scanner(),
            ),
            Row::new(
                "upper-case name and value",
                from(4, replace_ua(&["USER-AGENT: FRIENDLY-SCANNER"])),
                scanner(),
            ),
            Row::new(
                "a folded line after the User-Agent does not hide the next header",
                from(5, replace_ua(&["User-Agent: Linphone", " 5.2.5"])),
                Want::accepted(Class::Invite),
            ),
        ],
    );
}
