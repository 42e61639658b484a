//! End to end with a real SIP server: Kamailio (tests/kamailio/proxy.cfg, a
//! stateful record-routing proxy) on the server's address relays legitimate
//! calls to a sipp UAS on the server's loopback, while the attacker floods
//! it with INVITEs. The same scenario runs without sipguard and with it, and
//! the call success ratios and Kamailio's CPU time are printed side by side.
//!
//! Needs root, kamailio (Debian's package), sipp, python3, iproute2 and
//! nsenter. Run with `--nocapture` to see the figures.

use std::time::Duration;

use anyhow::Result;
use sipguard_tests::{
    kamailio::KNOWN_USER,
    lab::{self, Defence, Flood, Outcome, Scenario},
};

/// Legitimate calls: a busy PBX placing 10 calls/s for 20 s, each held 1 s.
const CALLS: u64 = 200;
const CALL_RATE: u64 = 10;
/// The flood lasts as long as the calls are placed.
const FLOOD: Duration = Duration::from_secs(20);
/// A packet bound well above what one core can send in `FLOOD`.
const FLOOD_MAX_PACKETS: u64 = 10_000_000;

/// Place the legitimate calls while one source floods (as fast as one core
/// sends), in a fresh lab, with or without sipguard (`lab::LIMITS`: the
/// defaults with the per-source INVITE limit raised to 20/s, burst 40) on
/// the server's interface.
fn run(protected: bool) -> Result<Outcome> {
    let (tag, defence) = if protected {
        ("kamsg", Defence::Sipguard)
    } else {
        ("kamraw", Defence::None)
    };
    let scenario = Scenario {
        tag: tag.into(),
        calls: CALLS,
        call_rate: CALL_RATE,
        warmup_calls: 0,
        flood: Flood::Real { sources: 1 },
        flood_duration: FLOOD,
        flood_max_packets: FLOOD_MAX_PACKETS,
        lead: Duration::ZERO,
        split_cpus: false,
    };
    lab::run(&scenario, defence)
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
            o.flood_sent,
            o.flood_pps,
            o.run.udp.in_datagrams,
            o.run.udp.rcvbuf_errors,
            o.run.kamailio_cpu,
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

    let attacker = guarded.flood_sources[0].to_string();
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
