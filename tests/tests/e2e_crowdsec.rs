//! sipguard as a CrowdSec bouncer against Debian's own CrowdSec Local API
//! (1.4.6, unpacked by `cargo xtask setup --test-deps` under
//! target/crowdsec, run offline in a lab namespace): decisions added and
//! deleted with `cscli` reach the kernel's blocklist within a poll, with
//! their origin and scenario; the guards refuse what must never be
//! blocked; an outage of the Local API keeps the bans, and the agent
//! catches up once it is back.

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use sipguard_tests::{
    flood::Ctl,
    harness::is_root,
    netns::{Bg, Lab, Node, stderr, wait_until},
};

const PORT: u16 = 8080;
const BOUNCER_KEY: &str = "sipguard-test-bouncer-key-0123456789";

/// The unpacked package: `SIPGUARD_CROWDSEC_ROOT`, or target/crowdsec/root
/// beside this test's own build.
fn crowdsec_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIPGUARD_CROWDSEC_ROOT") {
        return dir.into();
    }
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<test>
    let target = exe.ancestors().nth(3).unwrap();
    let root = target.join("crowdsec/root");
    assert!(
        root.join("usr/bin/crowdsec").is_file(),
        "CrowdSec is not unpacked at {}: run `cargo xtask setup --test-deps` (it downloads \
         Debian's crowdsec package and unpacks it there, installing nothing)",
        root.display()
    );
    root
}

/// A Local API in `node`'s namespace, with its own config, database and
/// credentials in `dir`.
struct Lapi<'a> {
    lab: &'a Lab,
    node: Node,
    root: PathBuf,
    config: PathBuf,
    bg: Option<Bg>,
}

impl<'a> Lapi<'a> {
    fn new(lab: &'a Lab, node: Node) -> Self {
        let root = crowdsec_root();
        let dir = lab.dir().join("crowdsec");
        for sub in ["data", "hub", "conf"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let etc = root.join("etc/crowdsec");
        for f in ["profiles.yaml", "simulation.yaml"] {
            fs::copy(etc.join(f), dir.join("conf").join(f)).unwrap();
        }
        fs::write(dir.join("conf/console.yaml"), "").unwrap();
        let d = dir.display();
        let config = dir.join("conf/config.yaml");
        fs::write(
            &config,
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  \
                 working_dir: {d}\nconfig_paths:\n  config_dir: {d}/conf/\n  data_dir: \
                 {d}/data/\n  simulation_path: {d}/conf/simulation.yaml\n  hub_dir: {d}/hub/\n  \
                 index_path: {d}/hub/.index.json\n  notification_dir: {d}/conf/notifications/\n  \
                 plugin_dir: {plugins}\ncrowdsec_service:\n  acquisition_path: \
                 {d}/conf/acquis.yaml\ndb_config:\n  log_level: info\n  type: sqlite\n  \
                 db_path: {d}/data/crowdsec.db\n  use_wal: true\napi:\n  client:\n    \
                 insecure_skip_verify: false\n    credentials_path: \
                 {d}/conf/local_api_credentials.yaml\n  server:\n    log_level: info\n    \
                 listen_uri: {addr}:{PORT}\n    profiles_path: {d}/conf/profiles.yaml\n    \
                 console_path: {d}/conf/console.yaml\n    online_client:\n    trusted_ips:\n      \
                 - {addr}\n      - 127.0.0.1\nprometheus:\n  enabled: false\n",
                plugins = root.join("usr/lib/crowdsec/plugins").display(),
                addr = node.v4,
            ),
        )
        .unwrap();
        Lapi {
            lab,
            node,
            root,
            config,
            bg: None,
        }
    }

    fn start(&mut self) {
        let bin = self.root.join("usr/bin/crowdsec");
        let config = self.config.to_string_lossy().into_owned();
        let bg = self
            .lab
            .spawn(
                &self.node,
                "crowdsec",
                bin.to_str().unwrap(),
                ["-c", &config, "-no-cs"],
            )
            .unwrap();
        self.lab
            .wait_tcp_port(&self.node, PORT, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the Local API did not listen: {e:#}\n{}", bg.output()));
        self.bg = Some(bg);
    }

    fn stop(&mut self) {
        if let Some(bg) = self.bg.take() {
            self.lab.stop(&bg).unwrap();
        }
    }

    /// `cscli ARGS` against this Local API; its stdout. Tried again a few
    /// times when SQLite reports the database locked (CrowdSec's own
    /// contention, between cscli's writes and the bouncer's reads).
    fn cscli(&self, args: &[&str]) -> String {
        let bin = self.root.join("usr/bin/cscli");
        let config = self.config.to_string_lossy().into_owned();
        let mut all = vec!["-c", config.as_str()];
        all.extend_from_slice(args);
        for tries in 1.. {
            let out = self
                .lab
                .run(
                    &self.node,
                    bin.to_str().unwrap(),
                    &all,
                    Duration::from_secs(30),
                )
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            let err = stderr(&out);
            assert!(
                err.contains("database is locked") && tries < 5,
                "cscli {args:?}: {err}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        unreachable!()
    }
}

/// `block list --json`: cidr -> (origin, scenario).
fn blocklist(ctl: &Ctl) -> BTreeMap<String, (String, String)> {
    ctl.block_list()
        .unwrap()
        .into_iter()
        .map(|(cidr, r)| {
            let origin = r["origin"][0].as_str().unwrap().to_string();
            (
                cidr,
                (origin, r["scenario"].as_str().unwrap_or("").to_string()),
            )
        })
        .collect()
}

/// How long until `cidr` is (or is not) in the blocklist.
fn until_listed(ctl: &Ctl, cidr: &str, listed: bool) -> Duration {
    let started = Instant::now();
    wait_until(Duration::from_secs(10), || {
        Ok(blocklist(ctl).contains_key(cidr) == listed)
    })
    .unwrap_or_else(|_| panic!("{cidr} listed={listed} not reached: {:?}", blocklist(ctl)));
    started.elapsed()
}

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
    eprintln!("decision to kernel: {took:?}");
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
    eprintln!("deletion to kernel: {took:?}");

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
