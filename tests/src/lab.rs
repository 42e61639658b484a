//! The Kamailio call lab under a flood, shared by tests/e2e_kamailio.rs and
//! the peer comparison (`sipguard-lab`, `cargo xtask bench --lab`).
//!
//! The server runs Kamailio (tests/kamailio/proxy.cfg) relaying calls to a
//! sipp UAS on its loopback; the client places calls through it with sipp
//! while the attacker floods it with INVITEs, from real sources (bound
//! sockets) or spoofed random ones (raw frames). One `Defence` guards the
//! server: none, iptables, nftables or sipguard. Each run builds a fresh lab
//! and removes it afterwards.

pub mod cores;
mod cpus;
mod defence;
pub mod inplace;
mod measure;
mod pass;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::Value;

pub use cpus::{Split, allowed as allowed_cpus, pin as pin_cpus};
pub use defence::{
    Defence, GLOBAL_INVITE_BURST, GLOBAL_INVITE_RATE, INVITE_BURST, INVITE_RATE, LIMITS,
    SOURCE_TABLE, iptables_rules, nftables_rules,
};
pub use inplace::Runs;
pub use measure::{Machine, Sample, Used};

use crate::{
    flood::{
        Ctl, Delta, RawFlood, SIP_PORT, Stream, ban_sources, isolate_server, link_counters,
        raw_flood, spawn_send,
    },
    kamailio::Kamailio,
    netns::{Lab, group_packets, stderr, wait_until},
    sipp::{Calls, Uac, Uas, scenario},
};

/// Where the proxy relays calls: a sipp UAS on an address of the server's
/// loopback (in the lab's 198.18.0.0/15 range, outside its subnet), so that
/// leg never crosses the protected interface.
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const UAS_PORT: u16 = 5070;

/// Put `BACKEND` on the server's loopback and start the sipp UAS the proxy
/// relays calls to there; returns its address.
pub fn start_backend(lab: &Lab) -> Result<SocketAddr> {
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
    let backend = SocketAddr::new(IpAddr::V4(BACKEND), UAS_PORT);
    Uas {
        addr: backend.ip(),
        port: UAS_PORT,
        scenario: Some(scenario("uas_proxied.xml")),
    }
    .start(lab, &lab.server, "uas")?;
    Ok(backend)
}
/// The number the flood calls: not served by the proxy, so each INVITE
/// costs it a parse, a transaction lookup and a stateless 404, like a
/// toll-fraud scanner dialling numbers.
pub const FLOOD_USER: &str = "4021555";
/// A legitimate call waiting this long for an answer fails (sipp's
/// `-recv_timeout`); until then sipp retransmits its INVITE.
pub const CALL_RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra real attacker sources are 198.18.0.100, .101, ...: inside the lab
/// nodes' /24, which the spoofed flood never claims.
const FIRST_EXTRA_SOURCE: u8 = 100;

/// What floods the server.
#[derive(Clone, Copy, Debug)]
pub enum Flood {
    /// INVITEs from `sources` real addresses of the attacker (bound UDP
    /// sockets, taking turns, unpaced); the first is the attacker's own
    /// address. Ordinary User-Agent, so no scanner rule matches.
    Real { sources: u8 },
    /// The same with REGISTERs.
    Register { sources: u8 },
    /// Raw INVITE frames from `sources` random addresses in 198.18.0.0/15,
    /// each far under any per-source limit.
    Spoofed { sources: u32 },
    /// OPTIONS from `sources` real addresses at `rate` a second in all, as
    /// a scanner sweeps (SIPVicious sends ~100 a second): under every
    /// limit, so each request is read by the header scan.
    Scanned { sources: u8, rate: u64 },
}

impl Flood {
    pub fn describe(&self) -> String {
        match self {
            Flood::Real { sources: 1 } => "INVITE flood from one real source".into(),
            Flood::Real { sources } => {
                format!("INVITE flood from {sources} real sources, ordinary User-Agent")
            }
            Flood::Spoofed { sources } => {
                format!("spoofed INVITE flood from {sources} random sources")
            }
            Flood::Register { sources } => {
                format!("REGISTER flood from {sources} real sources, ordinary User-Agent")
            }
            Flood::Scanned { sources, rate } => {
                format!("OPTIONS from {sources} real sources, {rate}/s, each header-scanned")
            }
        }
    }
}

/// One run: legitimate calls during a flood.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Lab tag (1-12 letters or digits) naming the run's namespaces.
    pub tag: String,
    /// Calls placed (and counted), at `call_rate` calls/s, each held 1 s.
    pub calls: u64,
    pub call_rate: u64,
    /// Calls placed before the flood and not counted: the client has used
    /// the server before the attack, as real customers have.
    pub warmup_calls: u64,
    pub flood: Flood,
    /// The flood is bounded by both.
    pub flood_duration: Duration,
    pub flood_max_packets: u64,
    /// How long the flood runs before the counted calls start (0: both
    /// start together).
    pub lead: Duration,
    /// Run the attacker on a core of its own, the client and the server on
    /// the others (see `Split`); no effect on a one-CPU machine.
    pub split_cpus: bool,
}

pub struct Outcome {
    pub calls: Calls,
    /// sipp's exit: 0 only when every call succeeded.
    pub sipp_ok: bool,
    /// Flood packets sent, and at what rate while the sender was sending.
    pub flood_sent: u64,
    pub flood_pps: f64,
    /// The real flood sources (empty for a spoofed flood).
    pub flood_sources: Vec<IpAddr>,
    /// From just before the flood to the end of flood and calls: wall time,
    /// Kamailio's CPU, the machine's softirq time and the server's UDP
    /// counters (datagrams that reached a socket — Kamailio's, and both ways
    /// on the backend leg — and those a full receive buffer dropped).
    pub run: Used,
    /// The same from the flood's first packets to its end; measured only
    /// with a `lead` (the flood is seen starting before the calls do).
    pub flood_window: Option<Used>,
    /// Packets the defence dropped over the run.
    pub dropped: u64,
    /// sipguard's counters over the window, and its bans at the end.
    pub sipguard: Option<(String, Vec<String>)>,
    /// sipguard's rate states created and recycled (LRU) over the run.
    pub sources_new_evicted: Option<(u64, u64)>,
    /// sipguard's programs in place while the flood was on (see
    /// `inplace`): runs and run time per program; empty for the peers.
    pub in_place: Vec<Runs>,
}

/// Place the legitimate calls while the attacker floods, in a fresh lab,
/// with `defence` on the server.
pub fn run(sc: &Scenario, defence: Defence) -> Result<Outcome> {
    let split = if sc.split_cpus { Split::new()? } else { None };
    // Everything the lab starts from this thread inherits its CPUs: the
    // server's, except where the client or the attacker is started.
    let _server_cpus = split.as_ref().map(Split::pin_server).transpose()?;
    let client_cpus = || split.as_ref().map(Split::pin_client).transpose();
    let lab = Lab::new(&sc.tag)?;
    // Kamailio answers every flood INVITE; make sure none of that can leave
    // the lab whatever the source.
    isolate_server(&lab)?;
    if matches!(sc.flood, Flood::Spoofed { .. }) {
        discard_spoofed_replies(&lab)?;
    }
    let server = IpAddr::V4(lab.server.v4);
    let guard = defence.install(&lab)?;
    let backend = start_backend(&lab)?;
    let kamailio = Kamailio::start(&lab, &lab.server, server, backend)?;
    let sources = flood_sources(&lab, sc.flood)?;

    if sc.warmup_calls > 0 {
        let _client_cpus = client_cpus()?;
        let (_, warm) =
            uac(&lab, sc.warmup_calls, sc.call_rate, "warmup").run(&lab, &lab.client)?;
        ensure!(
            warm.successful == sc.warmup_calls,
            "only {} of {} warm-up calls (no flood yet) completed with {}: the lab or the \
             defence is broken; logs in {}",
            warm.successful,
            sc.warmup_calls,
            defence.name(),
            lab.dir().display()
        );
    }

    let ctl = Ctl::new(lab.iface());
    let before = guard.agent().map(|_| ctl.stats()).transpose()?;
    let in_place_on = guard.runs_xdp();
    let _run_time = in_place_on
        .then(inplace::RunTimeStats::enable)
        .transpose()?;
    let programs = || -> Result<_> {
        if in_place_on {
            inplace::sample()
        } else {
            Ok(Default::default())
        }
    };
    let start = Sample::take(&lab, &kamailio)?;
    let tx0 = link_counters(&lab, &lab.attacker)?.tx_packets;
    let (calls, sipp_ok, flood, flood_window, end, in_place) = thread::scope(|s| -> Result<_> {
        let flooding = s.spawn(|| -> Result<_> {
            let _attacker_cpu = split.as_ref().map(Split::pin_attacker).transpose()?;
            let sent = send_flood(&lab, sc, &sources)?;
            Ok((sent, Sample::take(&lab, &kamailio)?, programs()?))
        });
        let (flood_start, programs_start) = if sc.lead.is_zero() {
            (None, programs()?)
        } else {
            wait_flood_started(&lab, tx0)?;
            let (sample, progs) = (Sample::take(&lab, &kamailio)?, programs()?);
            thread::sleep(sc.lead);
            (Some(sample), progs)
        };
        let sipp = {
            let _client_cpus = client_cpus()?;
            uac(&lab, sc.calls, sc.call_rate, "uac").run(&lab, &lab.client)
        };
        let (flood, flood_end, programs_end) = flooding
            .join()
            .map_err(|_| anyhow!("the flood thread panicked"))??;
        let (status, calls) = sipp?;
        let end = Sample::take(&lab, &kamailio)?;
        let window = flood_start.map(|s| flood_end.since(&s));
        let in_place = inplace::since(&programs_start, &programs_end);
        Ok((calls, status.success(), flood, window, end, in_place))
    })?;
    let (dropped, sipguard, sources_new_evicted) = match before {
        Some(before) => {
            let after: Value = ctl.stats()?;
            let reasons = Delta::new(&before, &after).reasons();
            let dropped = sipguard_drops(&after) - sipguard_drops(&before);
            let grew = |v: &Value| v.as_u64().unwrap_or(0);
            let new = grew(&after["tables"]["events"]["src_state_new"])
                - grew(&before["tables"]["events"]["src_state_new"]);
            let evicted = grew(&after["tables"]["sources_evicted"])
                .saturating_sub(grew(&before["tables"]["sources_evicted"]));
            (
                dropped,
                Some((reasons, ban_sources(&ctl.bans()?))),
                Some((new, evicted)),
            )
        }
        None => (guard.rule_drops(&lab)?, None, None),
    };
    Ok(Outcome {
        calls,
        sipp_ok,
        flood_sent: flood.0,
        flood_pps: flood.1,
        flood_sources: sources,
        run: end.since(&start),
        flood_window,
        dropped,
        sipguard,
        sources_new_evicted,
        in_place,
    })
}

/// The legitimate caller: sipp through the proxy, bounded.
fn uac(lab: &Lab, calls: u64, rate: u64, name: &str) -> Uac {
    Uac {
        target: SocketAddr::new(IpAddr::V4(lab.server.v4), SIP_PORT),
        local: IpAddr::V4(lab.client.v4),
        local_port: SIP_PORT,
        calls,
        rate,
        scenario: Some(scenario("uac_proxied.xml")),
        timeout: Duration::from_secs(50),
        recv_timeout: Some(CALL_RECV_TIMEOUT),
        bound: Duration::from_secs(70),
        name: name.into(),
    }
}

/// The attacker's real flood sources, added to its interface.
fn flood_sources(lab: &Lab, flood: Flood) -> Result<Vec<IpAddr>> {
    let (Flood::Real { sources } | Flood::Register { sources } | Flood::Scanned { sources, .. }) =
        flood
    else {
        return Ok(Vec::new());
    };
    ensure!(
        (1..=100).contains(&sources),
        "a real flood needs 1-100 sources"
    );
    let mut out = vec![IpAddr::V4(lab.attacker.v4)];
    for i in 0..sources - 1 {
        let addr = Ipv4Addr::new(198, 18, 0, FIRST_EXTRA_SOURCE + i);
        lab.add_addr(&lab.attacker, &format!("{addr}/16"))?;
        out.push(IpAddr::V4(addr));
    }
    Ok(out)
}

/// Run the flood to its end; (packets sent, packets/s).
fn send_flood(lab: &Lab, sc: &Scenario, sources: &[IpAddr]) -> Result<(u64, f64)> {
    match sc.flood {
        Flood::Real { .. } | Flood::Register { .. } | Flood::Scanned { .. } => {
            let (method, rate) = match sc.flood {
                Flood::Register { .. } => ("REGISTER", 0),
                Flood::Scanned { rate, .. } => ("OPTIONS", rate),
                _ => ("INVITE", 0),
            };
            let report = spawn_send(
                lab,
                &lab.attacker,
                "flood",
                IpAddr::V4(lab.server.v4),
                &[
                    Stream::new("flood", sources, method, rate, sc.flood_max_packets)
                        .user(FLOOD_USER),
                ],
                sc.flood_duration,
            )?
            .finish()?;
            let s = report.stream("flood");
            Ok((s.sent, s.pps()))
        }
        Flood::Spoofed { sources } => {
            let report = raw_flood(
                lab,
                &lab.attacker,
                &lab.server,
                &RawFlood {
                    count: sc.flood_max_packets,
                    duration: sc.flood_duration,
                    sources,
                    seed: 5,
                    later_fragments: false,
                },
            )?;
            Ok((report.sent, report.pps()))
        }
    }
}

/// Wait until the attacker's interface has sent a burst of packets: the
/// sender has built its packets and the flood is on.
fn wait_flood_started(lab: &Lab, tx0: u64) -> Result<()> {
    wait_until(Duration::from_secs(40), || {
        Ok(link_counters(lab, &lab.attacker)?.tx_packets > tx0 + 1000)
    })
    .context("the flood did not start")
}

/// Kamailio answers each spoofed INVITE; send those answers into a discard
/// device instead of resolving thousands of made-up neighbours on the lab's
/// bridge: a bridge without ports and without ARP, which drops what it
/// transmits (this kernel has no dummy driver). Covers 198.18.0.0/15
/// except the lab nodes' 198.18.0.0/24.
pub(crate) fn discard_spoofed_replies(lab: &Lab) -> Result<()> {
    const DEV: &str = "discard0";
    const SPOOFED: [&str; 9] = [
        "198.18.1.0/24",
        "198.18.2.0/23",
        "198.18.4.0/22",
        "198.18.8.0/21",
        "198.18.16.0/20",
        "198.18.32.0/19",
        "198.18.64.0/18",
        "198.18.128.0/17",
        "198.19.0.0/16",
    ];
    let ip = |args: &[&str]| -> Result<()> {
        let out = lab.run(&lab.server, "ip", args, Duration::from_secs(10))?;
        ensure!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        Ok(())
    };
    ip(&["link", "add", DEV, "type", "bridge"])?;
    ip(&["link", "set", DEV, "arp", "off", "up"])?;
    for net in SPOOFED {
        ip(&["route", "add", net, "dev", DEV])?;
    }
    Ok(())
}

/// Total packets sipguard dropped in a stats snapshot.
fn sipguard_drops(stats: &Value) -> u64 {
    group_packets(stats, "reasons", "drop")
}
