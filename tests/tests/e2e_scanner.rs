//! Scanner and protocol-abuse defence (GitHub issue 4) end to end, with the
//! real tools: `sipguard run` (enforcing, defaults) on the server's veth in
//! a namespace lab, Kamailio behind it (tests/kamailio/scanner.cfg, a PBX
//! front that answers scanners the way real ones leak), and SIPVicious,
//! sipp, hping3 and plain sockets on the other nodes.
//!
//! Every "sipguard stops it" assertion has its control: the same tool run
//! against the same Kamailio with no sipguard attached finds what it looks
//! for, so a test cannot pass because the tool or the lab is broken.
//!
//! Needs root, kamailio, sipp, sipvicious (sipvicious_svmap,
//! sipvicious_svwar on PATH), hping3, tshark, python3, iproute2, nsenter.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    kamailio,
    netns::{Bg, Lab, Node, packets, run_bounded, sipguard_bin, stderr, wait_until},
    sipp::{Calls, Uac},
};

const SIP_PORT: u16 = 5060;
/// Extensions Kamailio knows: 1001 is the legitimate phone (sipp), 2040 the
/// one the scans look for. 2040 sits past the first 16 targets of a scan of
/// 2000-2059, so the enumeration rule (16 distinct targets) has to stop the
/// scan before it gets there; an extension among a scan's first 15 targets
/// is answered before any threshold rule can act.
const KNOWN_USERS: &str = "^(1001|2040)$";
const HIDDEN_EXTENSION: &str = "2040";
const SCAN_RANGE: &str = "2000-2059";
/// The password of the known users (tests/scripts/sipp-register.xml).
const PASSWORD: &str = "lab-secret";
/// Bound for one scanner run; they end on their own well before.
const TOOL_BOUND: Duration = Duration::from_secs(90);
const SHORT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Lab helpers
// ---------------------------------------------------------------------------

/// Start Kamailio with tests/kamailio/scanner.cfg on the server's address,
/// UDP and TCP 5060. The lab stops it (by PID) when dropped.
fn start_kamailio(lab: &Lab) -> Result<Bg> {
    let listen = lab.server.v4.to_string();
    let subs = [
        ("@LISTEN@", listen.as_str()),
        ("@KNOWN_USERS@", KNOWN_USERS),
        ("@PASSWORD@", PASSWORD),
    ];
    let bg = kamailio::start_config(lab, &lab.server, "scanner.cfg", &subs, "64")?;
    lab.wait_tcp_port(&lab.server, SIP_PORT, SHORT)
        .with_context(|| format!("kamailio did not open TCP; its log:\n{}", bg.output()))?;
    Ok(bg)
}

/// Run a tool in `node`'s namespace; its stdout and stderr together.
fn tool(lab: &Lab, node: &Node, program: &str, args: &[&str]) -> Result<String> {
    let out = lab.run(node, program, args, TOOL_BOUND)?;
    Ok(text(&out))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn svmap(lab: &Lab, node: &Node) -> Result<String> {
    tool(lab, node, "sipvicious_svmap", &[&lab.server.v4.to_string()])
}

/// svwar over SCAN_RANGE; `extra` adds options (method, compact mode).
fn svwar(lab: &Lab, node: &Node, extra: &[&str]) -> Result<String> {
    let server = lab.server.v4.to_string();
    let mut args = vec!["-e", SCAN_RANGE, "--maximumtime", "3"];
    args.extend_from_slice(extra);
    args.push(&server);
    tool(lab, node, "sipvicious_svwar", &args)
}

/// svwar as above, sending `user_agent` instead of "friendly-scanner"
/// (tests/scripts/svwar-ua.py: svwar has no option for it).
fn svwar_as(lab: &Lab, node: &Node, user_agent: &str, extra: &[&str]) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/svwar-ua.py");
    let script = script.to_str().context("path is not UTF-8")?;
    let server = lab.server.v4.to_string();
    let mut args = vec![script, user_agent, "-e", SCAN_RANGE, "--maximumtime", "3"];
    args.extend_from_slice(extra);
    args.push(&server);
    tool(lab, node, "python3", &args)
}

/// The extensions an svwar report lists ("| 2040 | reqauth |" rows).
fn found_extensions(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", ext, auth, ""]
                    if ext.chars().all(|c| c.is_ascii_digit()) && !ext.is_empty() =>
                {
                    Some(format!("{ext} ({auth})"))
                }
                _ => None,
            }
        })
        .collect()
}

/// `sipguard <args> --iface <iface>`, which must succeed.
fn sipguard(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = run_bounded(
        Command::new(sipguard_bin()?)
            .args(args)
            .args(["--iface", lab.iface()]),
        SHORT,
    )?;
    ensure!(
        out.status.success(),
        "sipguard {args:?} failed: {}",
        stderr(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Active bans as (source, reason, detail) from `sipguard bans list --json`.
fn bans(lab: &Lab) -> Result<Vec<(String, String, String)>> {
    let rows: Value = serde_json::from_str(&sipguard(lab, &["bans", "list", "--json"])?)?;
    Ok(rows
        .as_array()
        .context("bans list --json is not an array")?
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("source"), s("reason"), s("detail"))
        })
        .collect())
}

fn ban_reason(bans: &[(String, String, String)], node: &Node) -> Option<String> {
    let src = node.v4.to_string();
    bans.iter()
        .find(|(s, _, _)| *s == src)
        .map(|(_, r, d)| format!("{r}/{d}"))
}

/// The change of one counter between two `stats --json` snapshots.
fn grew(before: &Value, after: &Value, group: &str, name: &str, verdict: &str) -> u64 {
    packets(after, group, name, verdict) - packets(before, group, name, verdict)
}

fn signature_hits(stats: &Value, token: &str) -> u64 {
    stats["signatures"][token].as_u64().unwrap_or(0)
}

/// A legitimate phone registering (with digest authentication) `n` times,
/// one a second, from the client node.
fn legit_registrations(lab: &Lab, n: u64) -> Result<Calls> {
    let uac = Uac {
        target: SocketAddr::new(IpAddr::V4(lab.server.v4), SIP_PORT),
        local: IpAddr::V4(lab.client.v4),
        local_port: 5070,
        calls: n,
        rate: 1,
        scenario: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sipp-register.xml")),
        timeout: Duration::from_secs(n + 30),
        recv_timeout: None,
        bound: Duration::from_secs(n + 60),
        name: "legit-register".into(),
    };
    let (_status, calls) = uac.run(lab, &lab.client)?;
    Ok(calls)
}

// ---------------------------------------------------------------------------
// SIPVicious with its own User-Agent
// ---------------------------------------------------------------------------

/// svmap and svwar, as shipped, against Kamailio: without sipguard they
/// find the PBX and the hidden extension; with sipguard their first request
/// is dropped as a scanner and they find nothing, while a legitimate phone
/// registers throughout.
#[test]
fn sipvicious_finds_nothing_while_a_phone_keeps_registering() -> Result<()> {
    let lab = Lab::new("scanvic")?;
    let scout = lab.add_node("scout")?;
    let attacker2 = lab.add_node("atk2")?;
    let _kamailio = start_kamailio(&lab)?;
    let server = format!("{}:{SIP_PORT}", lab.server.v4);

    // Control: no sipguard.
    let map = svmap(&lab, &scout)?;
    ensure!(
        map.contains(&server),
        "control: svmap did not find {server}:\n{map}"
    );
    let war = svwar(&lab, &scout, &[])?;
    let found = found_extensions(&war);
    ensure!(
        found.iter().any(|e| e.starts_with(HIDDEN_EXTENSION)),
        "control: svwar did not find {HIDDEN_EXTENSION}:\n{war}"
    );
    println!("control (no sipguard): svmap lists {server}; svwar finds {found:?}");

    let agent = lab.start_agent(&["--mode", "native"])?;
    let before = agent.stats()?;
    let (calls, map, war) = thread::scope(|s| -> Result<_> {
        let phone = s.spawn(|| legit_registrations(&lab, 10));
        let map = svmap(&lab, &lab.attacker)?;
        let war = svwar(&lab, &attacker2, &[])?;
        let calls = phone.join().expect("sipp thread")?;
        Ok((calls, map, war))
    })?;
    let after = agent.stats()?;

    println!("svmap behind sipguard:\n{map}");
    println!("svwar behind sipguard:\n{war}");
    // Each tool says so itself ("found nothing"), and lists nothing.
    assert!(
        !map.contains(&server) && map.contains("found nothing"),
        "svmap found the server through sipguard:\n{map}"
    );
    assert!(
        found_extensions(&war).is_empty() && war.contains("found nothing"),
        "svwar found extensions through sipguard:\n{war}"
    );
    let bans = bans(&lab)?;
    assert_eq!(
        ban_reason(&bans, &lab.attacker).as_deref(),
        Some("scanner/sipvicious"),
        "svmap's ban: {bans:?}"
    );
    assert_eq!(
        ban_reason(&bans, &attacker2).as_deref(),
        Some("scanner/friendly-scanner"),
        "svwar's ban: {bans:?}"
    );
    assert!(
        ban_reason(&bans, &lab.client).is_none(),
        "the phone was banned: {bans:?}"
    );
    let scanner = grew(&before, &after, "reasons", "scanner", "drop");
    let banned = grew(&before, &after, "reasons", "banned", "drop");
    let hits =
        signature_hits(&after, "friendly-scanner") - signature_hits(&before, "friendly-scanner");
    println!(
        "scanner drops {scanner}, banned drops {banned}, friendly-scanner hits {hits}; \
         phone: {} of 10 registrations succeeded, {} failed, {} retransmissions",
        calls.successful, calls.failed, calls.retransmissions
    );
    assert_eq!(
        scanner, 2,
        "one scanner drop per tool (each banned at once)"
    );
    assert_eq!(
        hits, 2,
        "friendly-scanner hits: one per tool's only scanned request"
    );
    assert_eq!(
        (calls.successful, calls.failed),
        (10, 0),
        "the legitimate phone's registrations"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// svwar with another User-Agent: the enumeration rule
// ---------------------------------------------------------------------------

/// svwar with another User-Agent (a real softphone's, count tier:
/// counted, never dropped) sweeping with INVITEs: no ban-tier signature
/// matches, and the enumeration rule (16 distinct targets) stops the sweep
/// before it reaches the hidden extension. svwar's own compact mode (`-c`,
/// no User-Agent at all) sweeping with REGISTERs is stopped too: its 404s
/// are counted by the credential rule (auth_fail.after, default 6), which
/// fires before the 16th target.
#[test]
fn svwar_with_another_user_agent_is_stopped_by_enumeration() -> Result<()> {
    const UA: &str = "Zoiper rv2.10.11.1";
    let lab = Lab::new("scanenum")?;
    let scout = lab.add_node("scout")?;
    let register_sweeper = lab.add_node("atk2")?;
    let _kamailio = start_kamailio(&lab)?;

    // Controls: no sipguard. Both sweeps find the extension.
    let war = svwar_as(&lab, &scout, UA, &["-m", "INVITE"])?;
    let control = found_extensions(&war);
    ensure!(
        control.iter().any(|e| e.starts_with(HIDDEN_EXTENSION)),
        "control: svwar -m INVITE as {UA} did not find {HIDDEN_EXTENSION}:\n{war}"
    );
    let war = svwar(&lab, &scout, &["-c"])?;
    let control_c = found_extensions(&war);
    ensure!(
        control_c.iter().any(|e| e.starts_with(HIDDEN_EXTENSION)),
        "control: svwar -c did not find {HIDDEN_EXTENSION}:\n{war}"
    );
    println!(
        "control (no sipguard): INVITE sweep as {UA} finds {control:?}, svwar -c finds {control_c:?}"
    );

    let agent = lab.start_agent(&["--mode", "native"])?;
    let before = agent.stats()?;
    let invite_sweep = svwar_as(&lab, &lab.attacker, UA, &["-m", "INVITE"])?;
    let mid = agent.stats()?;
    let register_sweep = svwar(&lab, &register_sweeper, &["-c"])?;
    let after = agent.stats()?;
    println!("INVITE sweep as {UA} behind sipguard:\n{invite_sweep}");
    println!("svwar -c (REGISTER) behind sipguard:\n{register_sweep}");

    let bans = bans(&lab)?;
    let passed = grew(&before, &mid, "classes", "invite", "pass");
    let enumeration = grew(&before, &mid, "reasons", "enumeration", "drop");
    let banned = grew(&before, &mid, "reasons", "banned", "drop");
    let scanner = grew(&before, &after, "reasons", "scanner", "drop");
    let zoiper = signature_hits(&mid, "zoiper") - signature_hits(&before, "zoiper");
    println!(
        "INVITE sweep: {passed} INVITEs passed, {enumeration} dropped as enumeration, \
         {banned} as banned, zoiper hits {zoiper}; bans: {bans:?}"
    );
    assert_eq!(scanner, 0, "no ban-tier signature matched");
    assert!(zoiper >= 1, "the count-tier User-Agent was counted");
    assert!(
        found_extensions(&invite_sweep).is_empty(),
        "the INVITE sweep found extensions through sipguard:\n{invite_sweep}"
    );
    assert_eq!(
        ban_reason(&bans, &lab.attacker).as_deref(),
        Some("enumeration/invite"),
        "the INVITE sweeper's ban: {bans:?}"
    );
    assert_eq!(enumeration, 1, "one enumeration drop, then the ban");
    // svwar's own probe is the first target; bits of the kernel's 128-bit
    // target map can collide, so the drop may come a few targets late.
    assert!(
        (15..=24).contains(&passed),
        "{passed} INVITEs passed before the enumeration drop (threshold 16 targets)"
    );

    assert!(
        found_extensions(&register_sweep).is_empty(),
        "svwar -c found extensions through sipguard:\n{register_sweep}"
    );
    let reason = ban_reason(&bans, &register_sweeper);
    let register_passed = grew(&mid, &after, "classes", "register", "pass");
    println!("REGISTER sweep: {register_passed} REGISTERs passed; ban {reason:?}");
    assert!(
        matches!(
            reason.as_deref(),
            Some("auth-failure/-") | Some("enumeration/register")
        ),
        "the REGISTER sweeper's ban: {bans:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// SYN flood
// ---------------------------------------------------------------------------

/// A bounded SYN flood (hping3, one source) on TCP 5060: sipguard lets the
/// per-source burst through, drops the rest as rate_source and, after
/// `ban.after` violations, as banned. The server's interface (tshark, after
/// XDP) sees at most the SYNs sipguard passed.
#[test]
fn syn_flood_from_one_source_is_limited() -> Result<()> {
    const SYNS: u64 = 400;
    let lab = Lab::new("scansyn")?;
    let _kamailio = start_kamailio(&lab)?;
    let agent = lab.start_agent(&["--mode", "native"])?;
    let limits: Value = serde_json::from_str(&sipguard(&lab, &["limits", "show", "--json"])?)?;
    let burst = limits["limits"]["syn"]["burst"]
        .as_u64()
        .context("syn.burst")?;
    let rate = limits["limits"]["syn"]["rate"]
        .as_str()
        .context("syn.rate")?
        .to_string();

    let pcap = lab.dir().join("syn.pcap");
    let capture = start_capture(
        &lab,
        &pcap,
        "tcp dst port 5060 and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    )?;
    let before = agent.stats()?;
    let started = Instant::now();
    // 500 SYNs a second for 0.8 s, bounded by timeout(1) as well.
    let (count, target) = (SYNS.to_string(), lab.server.v4.to_string());
    let flood = lab.run(
        &lab.attacker,
        "timeout",
        [
            "60", "hping3", "-S", "-p", "5060", "-c", &count, "-i", "u2000", &target,
        ],
        TOOL_BOUND,
    )?;
    let elapsed = started.elapsed();
    let sent = hping_sent(&text(&flood))?;
    let after = agent.stats()?;
    let seen = stop_capture(&lab, &capture, &pcap)?;

    let syn_passed = grew(&before, &after, "classes", "tcp", "pass");
    let tcp_dropped = grew(&before, &after, "classes", "tcp", "drop");
    let rate_source = grew(&before, &after, "reasons", "rate_source", "drop");
    let banned = grew(&before, &after, "reasons", "banned", "drop");
    let bans = bans(&lab)?;
    println!(
        "hping3: {sent} SYNs in {elapsed:.2?}; syn limit {rate} burst {burst}; server saw \
         {seen} SYNs; sipguard tcp pass {syn_passed} (SYNs and the attacker's RSTs), tcp drop \
         {tcp_dropped} (rate_source {rate_source}, banned {banned}); ban {:?}",
        ban_reason(&bans, &lab.attacker)
    );
    assert_eq!(sent, SYNS, "hping3 sent what it was asked to");
    assert!(
        seen >= 1,
        "no SYN reached the server: the control for the limit"
    );
    // The rate can refill the bucket only for as long as the flood lasted.
    let per_sec: f64 = rate
        .strip_suffix("/s")
        .and_then(|n| n.parse().ok())
        .context("syn.rate is not N/s")?;
    let allowed = burst + (per_sec * elapsed.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        seen <= allowed,
        "server saw {seen} SYNs, more than burst {burst} + {rate} over {elapsed:.2?}"
    );
    assert!(
        seen <= syn_passed,
        "the server saw SYNs sipguard did not pass"
    );
    assert!(
        tcp_dropped >= sent - seen,
        "every SYN the server did not see was dropped by sipguard"
    );
    assert!(rate_source >= 1 && banned >= 1, "rate_source then banned");
    assert_eq!(
        ban_reason(&bans, &lab.attacker).as_deref(),
        Some("flood/syn"),
        "{bans:?}"
    );
    Ok(())
}

/// Start tshark on the server's interface with a capture filter.
fn start_capture(lab: &Lab, pcap: &Path, filter: &str) -> Result<Bg> {
    let pcap_arg = pcap.to_str().context("lab dir is not UTF-8")?;
    let bg = lab.spawn(
        &lab.server,
        "tshark",
        "tshark",
        [
            "-i",
            lab.iface(),
            "-F",
            "pcap",
            "-w",
            pcap_arg,
            "-f",
            filter,
        ],
    )?;
    wait_until(SHORT, || Ok(bg.output().contains("Capturing on")))
        .with_context(|| format!("tshark did not start:\n{}", bg.output()))?;
    Ok(bg)
}

/// Stop the capture and count its packets.
fn stop_capture(lab: &Lab, bg: &Bg, pcap: &Path) -> Result<u64> {
    // Let the last packets in flight arrive before stopping.
    thread::sleep(Duration::from_millis(500));
    lab.stop(bg)?;
    let out = run_bounded(Command::new("tshark").arg("-r").arg(pcap), SHORT)?;
    ensure!(out.status.success(), "tshark -r: {}", stderr(&out));
    Ok(String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

/// "N packets transmitted" from hping3's summary.
fn hping_sent(out: &str) -> Result<u64> {
    out.lines()
        .find_map(|l| {
            let at = l.find(" packets transmitted")?;
            l[..at].trim().parse().ok()
        })
        .with_context(|| format!("no hping3 summary in:\n{out}"))
}

// ---------------------------------------------------------------------------
// Malformed payloads on UDP 5060
// ---------------------------------------------------------------------------

/// A UDP listener on the server's 5060 (instead of a SIP server), printing
/// the first bytes of every datagram it receives.
fn start_listener(lab: &Lab) -> Result<Bg> {
    let bg = lab.spawn(
        &lab.server,
        "listener",
        "python3",
        [
            "-u",
            "-c",
            &format!(
                "import socket\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)\n\
                 s.bind(('{}', {SIP_PORT}))\n\
                 while True:\n\
                 \x20   d, a = s.recvfrom(65535)\n\
                 \x20   what = 'garbage' if d[:1] == b'#' else \
                 ' '.join(d[:80].decode('latin-1').split(' ')[:2])\n\
                 \x20   print(len(d), what, flush=True)\n",
                lab.server.v4
            ),
        ],
    )?;
    lab.wait_udp_port(&lab.server, SIP_PORT, SHORT)?;
    Ok(bg)
}

/// The kinds of payload the attacker sends, as the listener names them.
const KINDS: [(&str, &str); 5] = [
    ("garbage", "garbage"),
    ("truncated", "INVITE sip:truncated@198.18.0.1"),
    ("missing_header", "INVITE sip:no-via@198.18.0.1"),
    ("oversized", "MESSAGE sip:oversized@198.18.0.1"),
    ("control", "OPTIONS sip:control@198.18.0.1"),
];

/// Python that sends `n` datagrams of each kind from the attacker, the
/// well-formed controls last: once they have arrived, every datagram sent
/// before them has been judged.
fn sender(lab: &Lab, n: u32, oversized_body: usize) -> String {
    format!(
        r#"import random, socket
random.seed(4)
server = ('{server}', {SIP_PORT})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def req(method, user, headers=True, end=True, body=''):
    m = f'{{method}} sip:{{user}}@{server_ip} SIP/2.0\r\n'
    if headers:
        m += 'Via: SIP/2.0/UDP {attacker}:5060;branch=z9hG4bK-{{}}\r\n'.format(random.getrandbits(32))
    m += f'From: <sip:lab@{server_ip}>;tag=1\r\nTo: <sip:{{user}}@{server_ip}>\r\n'
    m += 'Call-ID: {{}}@{attacker}\r\nCSeq: 1 {{}}\r\n'.format(random.getrandbits(32), method)
    m += 'User-Agent: lab-sender/1.0\r\nContent-Length: {{}}\r\n'.format(len(body))
    if end:
        m += '\r\n' + body
    return m.encode()
for i in range({n}):
    s.sendto(b'#' + bytes(random.getrandbits(8) for _ in range(199)), server)
    s.sendto(req('INVITE', 'truncated', end=False), server)
    s.sendto(req('INVITE', 'no-via', headers=False), server)
    s.sendto(req('MESSAGE', 'oversized', body='x' * {oversized_body}), server)
for i in range({n}):
    s.sendto(req('OPTIONS', 'control'), server)
"#,
        server = lab.server.v4,
        server_ip = lab.server.v4,
        attacker = lab.attacker.v4,
    )
}

/// Datagrams the listener has received so far, per kind.
fn received(listener: &Bg) -> [u64; 5] {
    let log = listener.output();
    let mut counts = [0u64; 5];
    for line in log.lines() {
        let Some((_len, what)) = line.split_once(' ') else {
            continue;
        };
        for (i, (_, prefix)) in KINDS.iter().enumerate() {
            if what == *prefix {
                counts[i] += 1;
            }
        }
    }
    counts
}

/// Send a round and wait until its controls have arrived; what arrived of
/// each kind in this round.
fn round(lab: &Lab, listener: &Bg, n: u32, oversized_body: usize) -> Result<[u64; 5]> {
    let start = received(listener);
    let out = lab.run(
        &lab.attacker,
        "python3",
        ["-c", &sender(lab, n, oversized_body)],
        SHORT,
    )?;
    ensure!(out.status.success(), "sender failed: {}", stderr(&out));
    wait_until(SHORT, || Ok(received(listener)[4] >= start[4] + n as u64))
        .with_context(|| format!("the controls did not arrive:\n{}", listener.output()))?;
    let end = received(listener);
    Ok(std::array::from_fn(|i| end[i] - start[i]))
}

/// Garbage, a request with no end of headers, one without Via and one over
/// `malformed.max_message_bytes`: counted and dropped when enforcing,
/// counted and passed (would_drop) in monitor mode. A UDP listener on the
/// server counts what arrives; well-formed requests sent after them arrive
/// in both modes.
#[test]
fn malformed_payloads_are_dropped_enforcing_and_passed_in_monitor_mode() -> Result<()> {
    const N: u32 = 5;
    // Below the link MTU, so the oversized request is one datagram.
    const MAX: usize = 1000;
    let lab = Lab::new("scanbad")?;
    let listener = start_listener(&lab)?;
    let agent = lab.start_agent(&["--mode", "native"])?;
    sipguard(
        &lab,
        &[
            "limits",
            "set",
            &format!("malformed.max_message_bytes={MAX}"),
        ],
    )?;

    let mut report = Vec::new();
    for enforce in [true, false] {
        if !enforce {
            sipguard(&lab, &["enforce", "off"])?;
        }
        let before = agent.stats()?;
        let got = round(&lab, &listener, N, MAX + 200)?;
        let after = agent.stats()?;
        let verdict = if enforce { "drop" } else { "would_drop" };
        let counted: Vec<u64> = ["not_sip", "truncated", "missing_header", "oversized"]
            .iter()
            .map(|r| grew(&before, &after, "reasons", r, verdict))
            .collect();
        report.push(format!(
            "enforce={enforce}: listener received {:?} of {N} each {:?}; {verdict} counted \
             not_sip/truncated/missing_header/oversized {counted:?}",
            got,
            KINDS.map(|k| k.0)
        ));
        let arrived = if enforce { 0 } else { N as u64 };
        assert_eq!(
            got,
            [arrived, arrived, arrived, arrived, N as u64],
            "enforce={enforce}: what reached the listener ({:?})",
            KINDS.map(|k| k.0)
        );
        assert_eq!(
            counted,
            vec![N as u64; 4],
            "enforce={enforce}: {verdict} counters"
        );
    }
    for line in &report {
        println!("{line}");
    }
    assert!(bans(&lab)?.is_empty(), "malformed payloads do not ban");
    Ok(())
}

/// verdict.rs: oversized is "a UDP SIP payload larger than
/// max_message_bytes" (default 8192). On a 1500-byte link a bigger datagram
/// arrives as IP fragments; the first one's UDP header states the full
/// length, and dropping it is what keeps the message from the server.
#[test]
fn a_fragmented_oversized_datagram_does_not_reach_the_server() -> Result<()> {
    const N: u32 = 3;
    let lab = Lab::new("scanfrag")?;
    let listener = start_listener(&lab)?;
    let agent = lab.start_agent(&["--mode", "native"])?;
    let max =
        serde_json::from_str::<Value>(&sipguard(&lab, &["limits", "show", "--json"])?)?["malformed"]
            ["max_message_bytes"]
            .as_u64()
            .context("max_message_bytes")? as usize;
    let before = agent.stats()?;
    let got = round(&lab, &listener, N, max + 1000)?;
    let after = agent.stats()?;
    let oversized = grew(&before, &after, "reasons", "oversized", "drop");
    let fragments = grew(&before, &after, "reasons", "fragment", "pass");
    println!(
        "MESSAGEs with a {}-byte body (limit {max}): listener received {} of {N}; oversized drops \
         {oversized}; fragments passed {fragments}",
        max + 1000,
        got[3]
    );
    assert_eq!(got[3], 0, "oversized MESSAGEs reached the server");
    assert_eq!(oversized, N as u64, "oversized drops");
    Ok(())
}
