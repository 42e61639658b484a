//! End to end with a real SIP server: Kamailio (tests/kamailio/proxy.cfg, a
//! stateful record-routing proxy) on the server's address relays legitimate
//! calls to a sipp UAS on the server's loopback, while the attacker floods
//! it with INVITEs. The same scenario runs without sipguard and with it, and
//! the call success ratios and Kamailio's CPU time are printed side by side.
//!
//! Needs root, kamailio (Debian's package), sipp, python3, iproute2 and
//! nsenter. Run with `--nocapture` to see the figures.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::{
        Ctl, Delta, SIP_PORT, Stream, StreamReport, UdpMib, ban_sources, isolate_server,
        spawn_send, udp_mib,
    },
    kamailio::{KNOWN_USER, Kamailio},
    netns::{Lab, stderr},
    sipp::{Calls, Uac, Uas, scenario},
};

/// Legitimate calls: a busy PBX placing 10 calls/s for 20 s, each held 1 s.
const CALLS: u64 = 200;
const CALL_RATE: u64 = 10;
/// The flood lasts as long as the calls are placed.
const FLOOD: Duration = Duration::from_secs(20);
/// The number the flood calls: not served by the proxy, so each INVITE
/// costs it a parse, a transaction lookup and a stateless 404, like a
/// toll-fraud scanner dialling numbers.
const FLOOD_USER: &str = "4021555";
/// A packet bound well above what one core can send in `FLOOD`.
const FLOOD_MAX_PACKETS: u64 = 10_000_000;
/// Where the proxy relays calls: a sipp UAS on an address of the server's
/// loopback (in the lab's 198.18.0.0/15 range, outside its subnet), so that
/// leg never crosses the protected interface.
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const UAS_PORT: u16 = 5070;
/// Limits for the protected run: sipguard's defaults, except the
/// per-source INVITE limit, raised from 10/s (burst 20) to 20/s (burst 40)
/// so a caller placing 10 calls/s has headroom for retransmissions; a
/// caller sending exactly at its limit has none and would be banned by its
/// first few retransmitted INVITEs.
const LIMITS: [&str; 2] = ["invite.rate=20/s", "invite.burst=40"];

struct Outcome {
    calls: Calls,
    /// sipp's exit: 0 only when every call succeeded.
    sipp_ok: bool,
    flood: StreamReport,
    kamailio_cpu: f64,
    /// The server namespace's UDP counters over the run: datagrams that
    /// reached a socket (Kamailio's, and both ways on the backend leg) and
    /// those a full receive buffer dropped (Kamailio's, under the flood).
    udp: UdpMib,
    attacker: IpAddr,
    /// sipguard's counters over the run, and its bans at the end.
    sipguard: Option<(String, Vec<String>)>,
}

/// Place the legitimate calls while the attacker floods, in a fresh lab,
/// with or without sipguard on the server's interface.
fn run(protected: bool) -> Result<Outcome> {
    let lab = Lab::new(if protected { "kamsg" } else { "kamraw" })?;
    // Kamailio answers every flood INVITE; make sure none of that can leave
    // the lab whatever the source.
    isolate_server(&lab)?;
    let server = IpAddr::V4(lab.server.v4);
    let agent = if protected {
        let agent = lab.start_agent(&["--mode", "native"])?;
        Ctl::new(lab.iface()).limits_set(&LIMITS)?;
        Some(agent)
    } else {
        None
    };
    let ctl = Ctl::new(lab.iface());
    let backend = SocketAddr::new(IpAddr::V4(BACKEND), UAS_PORT);
    let out = lab.run(
        &lab.server,
        "ip",
        ["addr", "add", &format!("{BACKEND}/32"), "dev", "lo"],
        Duration::from_secs(10),
    )?;
    ensure!(
        out.status.success(),
        "adding {BACKEND} to lo: {}",
        stderr(&out)
    );
    Uas {
        addr: backend.ip(),
        port: UAS_PORT,
        scenario: Some(scenario("uas_proxied.xml")),
    }
    .start(&lab, &lab.server, "uas")?;
    let kamailio = Kamailio::start(&lab, &lab.server, server, backend)?;

    let before = agent.as_ref().map(|_| ctl.stats()).transpose()?;
    let cpu0 = kamailio.cpu_seconds()?;
    let udp0 = udp_mib(&lab, &lab.server)?;
    // From one source, as fast as one core sends them.
    let flood = spawn_send(
        &lab,
        &lab.attacker,
        "flood",
        server,
        &[Stream::new(
            "flood",
            &[IpAddr::V4(lab.attacker.v4)],
            "INVITE",
            0,
            FLOOD_MAX_PACKETS,
        )
        .user(FLOOD_USER)],
        FLOOD,
    )?;
    let uac = Uac {
        target: SocketAddr::new(server, SIP_PORT),
        local: IpAddr::V4(lab.client.v4),
        local_port: SIP_PORT,
        calls: CALLS,
        rate: CALL_RATE,
        scenario: Some(scenario("uac_proxied.xml")),
        timeout: Duration::from_secs(50),
        recv_timeout: Some(Duration::from_secs(10)),
        bound: Duration::from_secs(70),
        name: "uac".into(),
    };
    let sipp = uac.run(&lab, &lab.client);
    let flood = flood.finish()?;
    let (status, calls) = sipp?;
    let kamailio_cpu = kamailio.cpu_seconds()? - cpu0;
    let udp = udp_mib(&lab, &lab.server)?.since(&udp0);
    let sipguard = match before {
        Some(before) => {
            let after: Value = ctl.stats()?;
            let reasons = Delta::new(&before, &after).reasons();
            Some((reasons, ban_sources(&ctl.bans()?)))
        }
        None => None,
    };
    Ok(Outcome {
        calls,
        sipp_ok: status.success(),
        flood: flood.stream("flood").clone(),
        kamailio_cpu,
        udp,
        attacker: IpAddr::V4(lab.attacker.v4),
        sipguard,
    })
}

/// Kamailio keeps serving legitimate calls while one source floods it with
/// INVITEs, when sipguard protects its interface: at least 99 % of the
/// calls complete (INVITE, 200, ACK, BYE, 200 through the proxy, by sipp's
/// own statistics), and the flooding source is banned. The same run
/// without sipguard is printed for comparison, not asserted.
#[test]
fn kamailio_serves_calls_during_an_invite_flood() -> Result<()> {
    assert_eq!(
        KNOWN_USER, "service",
        "sipp calls [service]; keep them in step"
    );
    let bare = run(false)?;
    let guarded = run(true)?;

    let line = |name: &str, o: &Outcome| {
        eprintln!(
            "{name:<16} calls {:>3}/{CALLS} ok ({:>5.1} %), {:>3} failed, {:>4} retransmissions \
             | flood {:>8} INVITEs at {:>6.0} pps | server UDP in {:>8}, socket \
             overflow {:>8} | Kamailio CPU {:>5.2} s",
            o.calls.successful,
            100.0 * o.calls.success_ratio(CALLS),
            o.calls.failed,
            o.calls.retransmissions,
            o.flood.sent,
            o.flood.pps(),
            o.udp.in_datagrams,
            o.udp.rcvbuf_errors,
            o.kamailio_cpu,
        )
    };
    eprintln!(
        "{CALLS} calls at {CALL_RATE}/s through Kamailio, INVITE flood from one source for \
         {FLOOD:?}:"
    );
    line("without sipguard", &bare);
    line("with sipguard", &guarded);
    let (reasons, bans) = guarded.sipguard.as_ref().expect("protected run has stats");
    eprintln!("sipguard: {reasons}; bans {bans:?}");

    let attacker = guarded.attacker.to_string();
    assert!(
        bans.contains(&attacker),
        "the flooding source {attacker} was not banned: {bans:?}"
    );
    let ratio = guarded.calls.success_ratio(CALLS);
    assert!(
        ratio >= 0.99,
        "with sipguard only {} of {CALLS} calls completed ({:.1} %, sipp exit ok: {})",
        guarded.calls.successful,
        100.0 * ratio,
        guarded.sipp_ok
    );
    Ok(())
}
