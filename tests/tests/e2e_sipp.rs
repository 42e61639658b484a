//! End to end with real SIP traffic, no mocks: `sipguard run` on the server's
//! veth in a namespace lab, sipp's UAS in the server namespace, sipp's UAC in
//! the client namespace, and the verdicts read back through
//! `sipguard stats --json`.
//!
//! XDP sees the server's ingress only: the UAC's INVITE, ACK and BYE. The
//! UAS's responses leave through the same interface (egress) and are not
//! counted.
//!
//! Needs root, sipp, python3, iproute2 and nsenter. Each test builds its own
//! lab (unique namespace and interface names), so they can run in parallel.

use std::{
    net::{IpAddr, SocketAddr},
    process::ExitStatus,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    netns::{
        Lab, XdpAttach, group_packets, packets, pin_dir, sipguard_bin, sipguard_stats, stderr,
        wait_until,
    },
    sipp::{Calls, Uac, Uas},
};

const SIP_PORT: u16 = 5060;
/// Calls per sipp run, and the rate they are placed at (calls per second):
/// a busy phone or small PBX, below the default per-source INVITE limit
/// (10/s, burst 20). Normal traffic under the defaults must pass untouched;
/// if the defaults are lowered below this, these tests say so.
const CALLS: u64 = 40;
const RATE: u64 = 8;
/// sipp's own global timeout, and our harder bound around it.
const SIPP_TIMEOUT: Duration = Duration::from_secs(30);
const SIPP_BOUND: Duration = Duration::from_secs(45);
const SHORT: Duration = Duration::from_secs(10);

/// The SIP request classes the default sipp UAC sends to the server.
const CALL_CLASSES: [&str; 3] = ["invite", "ack", "bye"];

#[test]
fn sipp_calls_over_ipv4_pass_native() -> Result<()> {
    let lab = Lab::new("sippv4")?;
    let agent = lab.start_agent(&["--mode", "native"])?;
    assert_eq!(
        lab.xdp_attach_mode()?,
        Some(XdpAttach::Native),
        "not attached in native mode"
    );
    let server = IpAddr::V4(lab.server.v4);
    start_uas(&lab, server)?;
    let calls = run_uac(&lab, server, IpAddr::V4(lab.client.v4))?;
    check_calls_passed(&agent.stats()?, &calls)?;
    Ok(())
}

#[test]
fn sipp_calls_over_ipv6_pass_native() -> Result<()> {
    let lab = Lab::new("sippv6")?;
    let agent = lab.start_agent(&["--mode", "native"])?;
    assert_eq!(
        lab.xdp_attach_mode()?,
        Some(XdpAttach::Native),
        "not attached in native mode"
    );
    let server = IpAddr::V6(lab.server.v6);
    start_uas(&lab, server)?;
    let calls = run_uac(&lab, server, IpAddr::V6(lab.client.v6))?;
    check_calls_passed(&agent.stats()?, &calls)?;
    Ok(())
}

/// Generic (skb) XDP, both address families through one agent: the
/// counters are cumulative, so they must cover both runs' calls.
#[test]
fn sipp_calls_over_both_families_pass_skb() -> Result<()> {
    let lab = Lab::new("sippskb")?;
    let agent = lab.start_agent(&["--mode", "skb"])?;
    assert_eq!(
        lab.xdp_attach_mode()?,
        Some(XdpAttach::Skb),
        "not attached in skb (generic) mode"
    );
    let v4 = IpAddr::V4(lab.server.v4);
    let v6 = IpAddr::V6(lab.server.v6);
    start_uas(&lab, v4)?;
    start_uas(&lab, v6)?;
    let first = run_uac(&lab, v4, IpAddr::V4(lab.client.v4))?;
    let second = run_uac(&lab, v6, IpAddr::V6(lab.client.v6))?;
    check_calls_passed(&agent.stats()?, &first.plus(&second))?;
    Ok(())
}

/// Traffic not to a SIP port is counted under not_sip_port, passed, and
/// reaches the server's sockets; no SIP counter moves. Sent from the client
/// and from a node added to the lab, over both address families.
#[test]
fn non_sip_traffic_is_passed_as_not_sip_port() -> Result<()> {
    const DATAGRAMS_PER_FAMILY: u64 = 5;
    const UDP_PORT: u16 = 9999;
    const CLOSED_TCP_PORT: u16 = 9998;

    let lab = Lab::new("notsip")?;
    let peer = lab.add_node("peer")?;
    let agent = lab.start_agent(&["--mode", "native"])?;

    // Dual-stack listener: one line per datagram received.
    let listener = lab.spawn(
        &lab.server,
        "udp-listener",
        "python3",
        [
            "-c",
            &format!(
                "import socket\n\
                 s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
                 s.bind(('::', {UDP_PORT}))\n\
                 while True:\n\
                 \x20   d, a = s.recvfrom(65535)\n\
                 \x20   print(len(d), a[0], flush=True)\n"
            ),
        ],
    )?;
    lab.wait_udp_port(&lab.server, UDP_PORT, SHORT)?;

    // Per family: the datagrams, then a connect to a closed TCP port.
    let sender = format!(
        "import socket\n\
         for fam, addr in ((socket.AF_INET, '{v4}'), (socket.AF_INET6, '{v6}')):\n\
         \x20   u = socket.socket(fam, socket.SOCK_DGRAM)\n\
         \x20   for i in range({DATAGRAMS_PER_FAMILY}):\n\
         \x20       u.sendto(b'not sip %d' % i, (addr, {UDP_PORT}))\n\
         \x20   t = socket.socket(fam, socket.SOCK_STREAM)\n\
         \x20   t.settimeout(5)\n\
         \x20   try:\n\
         \x20       t.connect((addr, {CLOSED_TCP_PORT}))\n\
         \x20       print('connected', addr)\n\
         \x20   except ConnectionRefusedError:\n\
         \x20       print('refused', addr)\n",
        v4 = lab.server.v4,
        v6 = lab.server.v6,
    );
    let senders = [&lab.client, &peer];
    let before = agent.stats()?;
    for node in senders {
        let out = lab.run(node, "python3", ["-c", &sender], SHORT)?;
        ensure!(
            out.status.success(),
            "sender in {} failed: {}",
            node.ns,
            stderr(&out)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        // A refusal means the SYN reached the server's stack and its RST
        // came back.
        assert_eq!(
            said.matches("refused").count(),
            2,
            "both TCP connects from {} should be refused by the server: {said}",
            node.ns
        );
    }
    let sent = senders.len() as u64 * 2 * DATAGRAMS_PER_FAMILY;
    let syns = senders.len() as u64 * 2;

    let received = || listener.output().lines().count() as u64;
    wait_until(Duration::from_secs(5), || Ok(received() >= sent)).with_context(|| {
        format!(
            "listener got {} of {sent} datagrams:\n{}",
            received(),
            listener.output()
        )
    })?;
    let after = agent.stats()?;
    // Stopped before the final count, so a late extra datagram cannot hide.
    lab.stop(&listener)?;

    let delta = |group: &str, name: &str, verdict: &str| {
        packets(&after, group, name, verdict) - packets(&before, group, name, verdict)
    };
    let not_sip = delta("reasons", "not_sip_port", "pass");
    eprintln!(
        "non-SIP: {sent} datagrams sent, {} received, {syns} SYNs refused; \
         not_sip_port pass +{not_sip}",
        received()
    );
    assert_eq!(
        received(),
        sent,
        "the listener got more datagrams than were sent"
    );
    // The datagrams and the SYNs, plus any neighbour discovery on the way.
    assert!(
        not_sip >= sent + syns,
        "not_sip_port pass grew by {not_sip}, expected at least {}",
        sent + syns
    );
    for group in ["reasons", "classes"] {
        for name in after[group].as_object().unwrap().keys() {
            for verdict in ["pass", "drop", "would_drop"] {
                if (group, name.as_str(), verdict) == ("reasons", "not_sip_port", "pass") {
                    continue;
                }
                assert_eq!(
                    delta(group, name, verdict),
                    0,
                    "{group}.{name}.{verdict} moved on non-SIP traffic"
                );
            }
        }
    }
    Ok(())
}

/// One agent per interface: a second `sipguard run` is refused naming the
/// first one's PID, and leaves the first one working.
#[test]
fn second_agent_on_same_iface_is_refused() -> Result<()> {
    let lab = Lab::new("twoagents")?;
    let agent = lab.start_agent(&["--mode", "native"])?;

    let bin = sipguard_bin()?;
    let bin = bin.to_str().context("non-UTF-8 path to sipguard")?;
    let out = lab.run(&lab.server, bin, ["run", "--iface", lab.iface()], SHORT)?;
    let err = stderr(&out);
    eprintln!("second agent: {} / {}", out.status, err.trim());
    assert!(
        !out.status.success(),
        "a second agent started on the same interface"
    );
    assert!(
        err.contains(&format!("(pid {})", agent.pid)) && err.contains("already running"),
        "the refusal should name the running agent (pid {}): {err}",
        agent.pid
    );
    assert!(
        err.contains(lab.iface()),
        "the refusal should name the interface: {err}"
    );

    // The first agent is untouched: still attached, its pins still readable.
    assert_eq!(lab.xdp_attach_mode()?, Some(XdpAttach::Native));
    agent.stats()?;

    // And on SIGTERM it detaches and removes its pins.
    let status = agent.stop()?;
    assert!(status.success(), "agent exited with {status}");
    assert!(
        !pin_dir(lab.iface()).exists(),
        "pins left behind after SIGTERM"
    );
    assert_eq!(
        lab.xdp_attach_mode()?,
        None,
        "XDP still attached after SIGTERM"
    );
    Ok(())
}

#[test]
fn stats_without_agent_says_none_is_running() -> Result<()> {
    let lab = Lab::new("noagent")?;
    let err = sipguard_stats(lab.iface()).expect_err("stats succeeded with no agent");
    let msg = format!("{err:#}");
    eprintln!("stats without agent: {msg}");
    assert!(
        msg.contains(&format!("no sipguard agent is running on {}", lab.iface())),
        "unexpected error: {msg}"
    );
    Ok(())
}

/// Start sipp's built-in UAS on `addr`:5060 in the server namespace.
fn start_uas(lab: &Lab, addr: IpAddr) -> Result<()> {
    let name = format!("uas-{}", if addr.is_ipv4() { "v4" } else { "v6" });
    Uas::builtin(addr, SIP_PORT)
        .start(lab, &lab.server, &name)
        .map(drop)
}

/// Place `CALLS` calls from the client namespace to `server` and return
/// sipp's final statistics. Fails unless every call succeeded.
fn run_uac(lab: &Lab, server: IpAddr, local: IpAddr) -> Result<Calls> {
    let family = if server.is_ipv4() { "v4" } else { "v6" };
    let uac = Uac {
        target: SocketAddr::new(server, SIP_PORT),
        local,
        local_port: SIP_PORT,
        calls: CALLS,
        rate: RATE,
        scenario: None,
        timeout: SIPP_TIMEOUT,
        recv_timeout: None,
        bound: SIPP_BOUND,
        name: format!("uac-{family}"),
    };
    let (status, calls) = uac.run(lab, &lab.client)?;
    eprintln!("sipp uac over {family}: exit {status}, {calls:?}");
    // sipp exits 0 only when every call succeeded.
    ensure_success(status, &calls)?;
    Ok(calls)
}

fn ensure_success(status: ExitStatus, calls: &Calls) -> Result<()> {
    ensure!(
        status.success() && calls.successful == CALLS && calls.failed == 0,
        "sipp exited {status}, {} of {CALLS} calls succeeded ({} failed)",
        calls.successful,
        calls.failed
    );
    Ok(())
}

/// Every successful call's INVITE, ACK and BYE reached XDP and was passed;
/// nothing was dropped; no response was seen on ingress.
fn check_calls_passed(stats: &Value, calls: &Calls) -> Result<()> {
    let counted: Vec<(&str, u64)> = CALL_CLASSES
        .iter()
        .map(|c| (*c, packets(stats, "classes", c, "pass")))
        .collect();
    eprintln!(
        "sipguard: {counted:?}, accepted {}, responses {}, total pass {} drop {} would_drop {}",
        packets(stats, "reasons", "accepted", "pass"),
        packets(stats, "classes", "response", "pass"),
        stats["total"]["pass"]["packets"],
        group_packets(stats, "reasons", "drop"),
        group_packets(stats, "reasons", "would_drop"),
    );
    // Each class is sent once per call, plus retransmissions at most.
    let most = calls.outgoing + calls.retransmissions;
    for (class, n) in counted {
        assert!(
            n >= calls.successful,
            "{class}: {n} passed, but sipp completed {} calls",
            calls.successful
        );
        assert!(
            n <= most,
            "{class}: {n} passed, but sipp sent at most {most}"
        );
    }
    assert_eq!(
        group_packets(stats, "reasons", "drop"),
        0,
        "something was dropped: {stats}"
    );
    assert_eq!(
        group_packets(stats, "reasons", "would_drop"),
        0,
        "something would have been dropped: {stats}"
    );
    assert_eq!(
        packets(stats, "classes", "response", "pass"),
        0,
        "responses leave through the server's egress and must not be counted on ingress"
    );
    Ok(())
}
