//! sipguard as a CrowdSec bouncer against Debian's own CrowdSec Local API
//! (1.4.6, unpacked by `cargo xtask setup --test-deps` under
//! target/crowdsec, run offline in a lab namespace): decisions added and
//! deleted with `cscli` reach the kernel's blocklist within a poll, with
//! their origin and scenario; the guards refuse what must never be
//! blocked; an outage of the Local API keeps the bans, and the agent
//! catches up once it is back.

use std::{
    fs,
    time::{Duration, Instant},
};

use sipguard_tests::{
    crowdsec::{Lapi, PORT, blocklist, until_listed},
    figures,
    flood::Ctl,
    harness::is_root,
    netns::Lab,
};

const BOUNCER_KEY: &str = "sipguard-test-bouncer-key-0123456789";

#[test]
fn crowdsec_decisions_reach_the_blocklist_and_leave_it() {
    assert!(is_root(), "run as root: the test builds network namespaces");
    let lab = Lab::new("crowdsec").unwrap();
    let node = lab.add_node("lapi").unwrap();
    let mut lapi = Lapi::new(&lab, node.clone());
    lapi.start();
    lapi.cscli(&["machines", "add", "local", "--auto"]);
    lapi.cscli(&["bouncers", "add", "sipguard", "-k", BOUNCER_KEY]);

    let key_file = lab.dir().join("bouncer.key");
    fs::write(&key_file, BOUNCER_KEY).unwrap();
    let config = lab.dir().join("sipguard.toml");
    fs::write(
        &config,
        format!(
            "[crowdsec]\nurl = \"http://{}:{PORT}\"\nkey_file = \"{}\"\npoll = \"500ms\"\n",
            node.v4,
            key_file.display()
        ),
    )
    .unwrap();
    let agent = lab
        .start_agent(&["--metrics", "off", "--config", config.to_str().unwrap()])
        .unwrap();
    let ctl = Ctl::new(lab.iface());

    lapi.cscli(&["decisions", "add", "--ip", "198.19.5.5", "--duration", "1h"]);
    let took = until_listed(&ctl, "198.19.5.5/32", true);
    figures::record(
        "e2e_crowdsec",
        &format!("cscli decision to the kernel's blocklist (poll 500 ms): {took:.0?}"),
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let (origin, scenario) = blocklist(&ctl)["198.19.5.5/32"].clone();
    assert_eq!(origin, "crowdsec");
    assert!(scenario.contains("manual 'ban'"), "scenario {scenario:?}");

    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.19.6.0/24",
        "--duration",
        "2h",
    ]);
    until_listed(&ctl, "198.19.6.0/24", true);

    // Refused: broader than /16, and the server's own address.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.16.0.0/14",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        &lab.server.v4.to_string(),
        "--duration",
        "1h",
    ]);
    lapi.cscli(&["decisions", "add", "--ip", "198.19.8.8", "--duration", "1h"]);
    until_listed(&ctl, "198.19.8.8/32", true);
    let list = blocklist(&ctl);
    assert!(
        !list.contains_key("198.16.0.0/14") && !list.contains_key("198.18.0.1/32"),
        "guards let through: {list:?}"
    );

    lapi.cscli(&["decisions", "delete", "--ip", "198.19.5.5"]);
    let took = until_listed(&ctl, "198.19.5.5/32", false);
    figures::record(
        "e2e_crowdsec",
        &format!("cscli deletion lifted in the kernel: {took:.0?}"),
    );

    // The Local API goes away: the bans stay; back, the agent catches up.
    lapi.stop();
    std::thread::sleep(Duration::from_secs(2));
    let list = blocklist(&ctl);
    assert!(
        list.contains_key("198.19.6.0/24") && list.contains_key("198.19.8.8/32"),
        "bans lost while the Local API was down: {list:?}"
    );
    lapi.start();
    lapi.cscli(&["decisions", "add", "--ip", "198.19.9.9", "--duration", "1h"]);
    lapi.cscli(&["decisions", "delete", "--ip", "198.19.8.8"]);
    until_listed(&ctl, "198.19.9.9/32", true);
    until_listed(&ctl, "198.19.8.8/32", false);
    assert!(blocklist(&ctl).contains_key("198.19.6.0/24"));

    // A clean stop forgets the blocklist; the next agent has the fleet's
    // decisions in the kernel before it attaches.
    let t = Instant::now();
    drop(agent);
    eprintln!("stop took {:?}", t.elapsed());
    let t = Instant::now();
    let _agent = lab
        .start_agent(&["--metrics", "off", "--config", config.to_str().unwrap()])
        .unwrap();
    eprintln!("start took {:?}", t.elapsed());
    let list = blocklist(&ctl);
    assert!(
        list.contains_key("198.19.6.0/24") && list.contains_key("198.19.9.9/32"),
        "decisions not in force when the agent attached: {list:?}"
    );
}
