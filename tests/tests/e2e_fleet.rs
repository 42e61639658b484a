//! Two sipguard hosts share bans through Debian's own CrowdSec Local API
//! (crowdsec.rs of the test support): host A is flooded and bans each
//! attacker source; as CrowdSec watchers both hosts report their bans, as
//! bouncers both enforce the fleet's decisions. Host B, which the attacker
//! never touched, drops its first packet. The time from A's ban to B's
//! kernel is printed (median over ten bans); a range decision added and
//! deleted with `cscli` reaches and leaves both; an outage of the Local API
//! loses nothing; a restarted host holds the fleet's bans before it passes
//! traffic; a ban forged onto a customer does not follow it to a host where
//! it earned trust.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;
use sipguard_tests::{
    crowdsec::{Lapi, PORT, blocklist, until_listed},
    figures,
    flood::{Ctl, Delta, SIP_PORT, Stream, send, spawn_send},
    harness::is_root,
    netns::{Lab, Node, wait_until},
    sipp::{Uac, Uas},
};

const PASSWORD: &str = "sipguard-test-machine-password-0123";
/// Bans whose propagation is timed.
const BANS: u8 = 10;

/// A host's config: bouncer `name`'s key, watcher machine `name`.
fn config(lab: &Lab, lapi: &Node, name: &str) -> PathBuf {
    let key = lab.dir().join(format!("{name}.key"));
    fs::write(&key, format!("sipguard-test-bouncer-key-{name}-0123456789")).unwrap();
    let password = lab.dir().join(format!("{name}.password"));
    fs::write(&password, PASSWORD).unwrap();
    let config = lab.dir().join(format!("{name}.toml"));
    fs::write(
        &config,
        format!(
            "[crowdsec]\nurl = \"http://{}:{PORT}\"\nkey_file = \"{}\"\nwatcher_login = \
             \"{name}\"\nwatcher_password_file = \"{}\"\n",
            lapi.v4,
            key.display(),
            password.display()
        ),
    )
    .unwrap();
    config
}

fn register(lapi: &Lapi, name: &str) {
    lapi.cscli(&[
        "machines",
        "add",
        name,
        "--password",
        PASSWORD,
        "-f",
        "/dev/null",
    ]);
    let key = format!("sipguard-test-bouncer-key-{name}-0123456789");
    lapi.cscli(&["bouncers", "add", name, "-k", &key]);
}

/// The row of `bans list --json` for `source`, if any.
fn ban_of(ctl: &Ctl, source: &str) -> Option<Value> {
    let bans = ctl.bans().unwrap();
    bans.as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == source)
        .cloned()
}

/// Flood host A from `src` until A bans it; when it did.
fn ban_on_a(lab: &Lab, a: &Ctl, src: IpAddr, n: u32) -> Instant {
    let flood = spawn_send(
        lab,
        &lab.attacker,
        &format!("flood-{n}"),
        IpAddr::V4(lab.server.v4),
        &[Stream::new("flood", &[src], "INVITE", 2000, 400)],
        Duration::from_secs(2),
    )
    .unwrap();
    let mut banned_at = None;
    wait_until(Duration::from_secs(10), || {
        let row = ban_of(a, &src.to_string());
        if let Some(row) = row {
            assert_eq!(row["origin"], "sipguard", "{row}");
            banned_at = Some(Instant::now());
        }
        Ok(banned_at.is_some())
    })
    .unwrap_or_else(|_| panic!("host A did not ban {src}: {}", a.bans().unwrap()));
    flood.finish().unwrap();
    banned_at.unwrap()
}

/// Wait until `ctl`'s `bans list` shows `source` as the fleet's ban.
fn until_fleet_ban(ctl: &Ctl, source: &str, within: Duration) -> Value {
    let mut found = None;
    wait_until(within, || {
        found = ban_of(ctl, source).filter(|r| r["origin"] == "crowdsec");
        Ok(found.is_some())
    })
    .unwrap_or_else(|_| panic!("{source} not a fleet ban: {}", ctl.bans().unwrap()));
    found.unwrap()
}

/// The agent's metrics page at `addr` (in the server's namespace).
fn scrape(lab: &Lab, addr: &str) -> String {
    let get = format!(
        "import urllib.request; print(urllib.request.urlopen('http://{addr}/metrics', \
         timeout=5).read().decode())"
    );
    let out = lab
        .run(
            &lab.server,
            "python3",
            ["-c", &get],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(out.status.success(), "scrape failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A Local API with cscli's machine and both hosts registered; host B's
/// node; both hosts' configs.
fn fleet(lab: &Lab) -> (Lapi<'_>, Node, PathBuf, PathBuf) {
    let lapi_node = lab.add_node("lapi").unwrap();
    let host_b = lab.add_server("sbcb").unwrap();
    let mut lapi = Lapi::new(lab, lapi_node.clone());
    lapi.start();
    // cscli's own credentials, for `decisions add`.
    lapi.cscli(&["machines", "add", "local", "--auto"]);
    register(&lapi, "sbca");
    register(&lapi, "sbcb");
    let config_a = config(lab, &lapi_node, "sbca");
    let config_b = config(lab, &lapi_node, "sbcb");
    (lapi, host_b, config_a, config_b)
}

#[test]
fn a_ban_on_one_host_drops_the_source_on_the_other() {
    assert!(is_root(), "run as root: the test builds network namespaces");
    let lab = Lab::new("fleet").unwrap();
    let (mut lapi, host_b, config_a, config_b) = fleet(&lab);
    let metrics_a = format!("{}:9464", lab.server.v4);
    let args_a = [
        "--metrics",
        &metrics_a,
        "--config",
        config_a.to_str().unwrap(),
    ];
    let args_b = ["--metrics", "off", "--config", config_b.to_str().unwrap()];
    let _agent_a = lab.start_agent(&args_a).unwrap();
    let mut agent_b = Some(lab.start_agent_on(&host_b, &args_b).unwrap());
    let (a, b) = (Ctl::new(lab.iface()), Ctl::new(&host_b.iface));
    a.limits_set(&[
        "invite.rate=20/s",
        "invite.burst=20",
        "ban.after=10",
        "ban.window=10s",
        "ban.for=10m",
    ])
    .unwrap();

    let sources: Vec<IpAddr> = (1..=BANS + 1)
        .map(|i| format!("198.18.2.{i}").parse().unwrap())
        .collect();
    for s in &sources {
        lab.add_addr(&lab.attacker, &format!("{s}/16")).unwrap();
    }

    let mut took = Vec::new();
    for (n, src) in sources[..BANS as usize].iter().enumerate() {
        let banned_at = ban_on_a(&lab, &a, *src, n as u32);
        let row = until_fleet_ban(&b, &src.to_string(), Duration::from_secs(10));
        took.push(banned_at.elapsed());
        assert_eq!(row["detail"], "sipguard/sip-invite-flood", "{row}");

        // B never saw the source: its first packet is dropped.
        let before = b.stats().unwrap();
        send(
            &lab,
            &lab.attacker,
            IpAddr::V4(host_b.v4),
            &[Stream::new("first", &[*src], "INVITE", 0, 1)],
            Duration::from_secs(5),
        )
        .unwrap();
        let after = b.stats().unwrap();
        let d = Delta::new(&before, &after);
        assert_eq!(
            d.reason("blocklisted", "drop"),
            1,
            "host B let {src}'s first packet through: {}",
            d.reasons()
        );
    }
    took.sort();
    let median = (took[BANS as usize / 2 - 1] + took[BANS as usize / 2]) / 2;
    figures::record(
        "e2e_fleet",
        &format!(
            "ban on host A to host B's kernel, {BANS} bans (watcher, Local API, bouncer poll \
             1 s): median {median:.0?}, min {:.0?}, max {:.0?}",
            took[0],
            took[BANS as usize - 1]
        ),
    );
    assert!(median < Duration::from_secs(2), "median {median:?}");

    // A range decision from cscli reaches both hosts; deleting it lifts it
    // on both.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.19.7.0/24",
        "--duration",
        "1h",
    ]);
    for ctl in [&a, &b] {
        until_listed(ctl, "198.19.7.0/24", true);
    }
    lapi.cscli(&["decisions", "delete", "--range", "198.19.7.0/24"]);
    for ctl in [&a, &b] {
        until_listed(ctl, "198.19.7.0/24", false);
    }

    // The Local API goes away while A bans: the fleet's bans stay in force,
    // A's new ban waits, and reaches B once the Local API is back.
    lapi.stop();
    let last = sources[BANS as usize];
    ban_on_a(&lab, &a, last, BANS as u32);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        blocklist(&b).contains_key(&format!("{}/32", sources[0])),
        "host B lost the fleet's bans while the Local API was down"
    );
    lapi.start();
    // The bouncers back off while it is down (up to 30 s between tries).
    until_fleet_ban(&b, &last.to_string(), Duration::from_secs(45));

    // Every ban was reported once: none came back from the fleet's
    // decisions, which both hosts hold in their blocklists.
    let alerts: Value =
        serde_json::from_str(&lapi.cscli(&["alerts", "list", "-o", "json", "-l", "0"])).unwrap();
    let ours = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["scenario"]
                .as_str()
                .unwrap_or("")
                .starts_with("sipguard/")
        })
        .count();
    assert_eq!(ours, BANS as usize + 1, "alerts: {alerts}");
    let metrics = scrape(&lab, &metrics_a);
    assert!(
        metrics.contains(&format!(
            "sipguard_crowdsec_alerts_total{{outcome=\"sent\"}} {}\n",
            BANS + 1
        )) && metrics.contains("sipguard_crowdsec_alerts_total{outcome=\"dropped\"} 0\n")
            && metrics.contains(&format!(
                "sipguard_bans_total{{reason=\"flood\"}} {}\n",
                BANS + 1
            ))
            && metrics.contains(&format!(
                "sipguard_bans_active{{reason=\"flood\"}} {}\n",
                BANS + 1
            )),
        "{metrics}"
    );
    // A's bouncer may still be backing off from the outage (up to 30 s
    // between tries): its last good poll is recent once it tried again.
    let last_poll_age = || {
        let metrics = scrape(&lab, &metrics_a);
        let polled = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sipguard_crowdsec_last_poll_timestamp_seconds "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no last poll: {metrics}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        now.saturating_sub(polled)
    };
    wait_until(Duration::from_secs(40), || Ok(last_poll_age() <= 5))
        .unwrap_or_else(|_| panic!("A's last poll is {} s old", last_poll_age()));

    // A restarted host holds the fleet's bans before it attaches.
    drop(agent_b.take());
    let _agent_b = lab.start_agent_on(&host_b, &args_b).unwrap();
    let list = blocklist(&b);
    for s in &sources {
        assert!(
            list.contains_key(&format!("{s}/32")),
            "{s} not in force when host B attached: {list:?}"
        );
    }
}

/// A scanner's OPTIONS forged with `victim`'s address, from the attacker's
/// namespace (scapy), to `server`.
const FORGE: &str = r#"
import sys
from scapy.all import IP, UDP, Raw, send
victim, server = sys.argv[1], sys.argv[2]
sip = ("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5062;branch=z9hG4bKforged1\r\n"
       "Max-Forwards: 70\r\nFrom: <sip:100@%s>;tag=f1\r\nTo: <sip:100@%s>\r\n"
       "Call-ID: forged1@%s\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\n"
       "Content-Length: 0\r\n\r\n" % (server, victim, server, server, victim))
send(IP(src=victim, dst=server)/UDP(sport=5062, dport=5060)/Raw(sip), verbose=False)
"#;

/// Off-path forging through the fleet (hostile issue): a scanner packet
/// forged with the address of a customer that earned trust on host B gets
/// it banned on host A, and A reports the ban. B refuses the decision (its
/// own evidence, the server's answers, outweighs a packet anyone can forge)
/// while an operator's decision for the same address applies; A keeps its
/// own kernel ban (with its probation) rather than a blocklist entry.
#[test]
fn a_forged_ban_does_not_shut_a_trusted_customer_out_of_the_fleet() {
    assert!(is_root(), "run as root: the test builds network namespaces");
    let lab = Lab::new("fleetforge").unwrap();
    let (lapi, host_b, config_a, config_b) = fleet(&lab);
    let _agent_a = lab
        .start_agent(&["--metrics", "off", "--config", config_a.to_str().unwrap()])
        .unwrap();
    let agent_b = lab
        .start_agent_on(
            &host_b,
            &["--metrics", "off", "--config", config_b.to_str().unwrap()],
        )
        .unwrap();
    let (a, b) = (Ctl::new(lab.iface()), Ctl::new(&host_b.iface));
    let customer = lab.client.v4.to_string();

    // The customer calls host B, whose server answers 200: trusted on B.
    let _uas = Uas::builtin(IpAddr::V4(host_b.v4), SIP_PORT)
        .start(&lab, &host_b, "uas")
        .unwrap();
    let (_, calls) = Uac {
        target: SocketAddr::new(IpAddr::V4(host_b.v4), SIP_PORT),
        local: IpAddr::V4(lab.client.v4),
        local_port: SIP_PORT,
        calls: 1,
        rate: 1,
        scenario: None,
        timeout: Duration::from_secs(20),
        recv_timeout: None,
        bound: Duration::from_secs(40),
        name: "uac".into(),
    }
    .run(&lab, &lab.client)
    .unwrap();
    assert_eq!(calls.successful, 1, "the customer's call to B: {calls:?}");
    let trusted = b.run(&["trusted", "list", "--json"]).unwrap();
    assert!(trusted.contains(&customer), "not trusted on B: {trusted}");

    // A forged scanner packet gets the customer banned on A.
    let out = lab
        .run(
            &lab.attacker,
            "python3",
            ["-c", FORGE, &customer, &lab.server.v4.to_string()],
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(out.status.success(), "scapy: {out:?}");
    wait_until(Duration::from_secs(10), || {
        Ok(ban_of(&a, &customer).is_some())
    })
    .unwrap_or_else(|_| panic!("A did not ban the forged source: {}", a.bans().unwrap()));
    // Reported: the decision reaches the Local API, then two polls pass.
    wait_until(Duration::from_secs(10), || {
        Ok(lapi
            .cscli(&["decisions", "list", "-o", "json"])
            .contains(&customer))
    })
    .expect("A's ban never reached the Local API");
    std::thread::sleep(Duration::from_secs(3));

    let row = ban_of(&b, &customer);
    assert!(row.is_none(), "B bans its trusted customer: {row:?}");
    assert!(
        agent_b.log().contains("which earned trust here"),
        "B did not log the refusal:\n{}",
        agent_b.log()
    );
    assert!(
        !blocklist(&a).contains_key(&format!("{customer}/32")),
        "A holds its own ban as a blocklist entry too: {:?}",
        blocklist(&a)
    );
    assert_eq!(ban_of(&a, &customer).unwrap()["origin"], "sipguard");

    // What each host's `explain` says of the customer.
    let on_a = a.run(&["explain", &customer]).unwrap();
    eprintln!("host A: sipguard explain {customer}\n{on_a}");
    assert!(
        on_a.contains("scanner (friendly-scanner)")
            && on_a.contains("next REGISTER  probation (banned)"),
        "{on_a}"
    );
    let on_b: Value =
        serde_json::from_str(&b.run(&["explain", &customer, "--json"]).unwrap()).unwrap();
    assert!(
        on_b["trust"]["renewals"].as_u64().is_some() && on_b["bans"] == serde_json::json!([]),
        "{on_b}"
    );
    assert_eq!(on_b["next"][0]["verdict"], "pass", "{on_b}");

    // An operator's decision is no forger's: it applies to the customer.
    lapi.cscli(&["decisions", "add", "--ip", &customer, "--duration", "1h"]);
    until_fleet_ban(&b, &customer, Duration::from_secs(10));
}
