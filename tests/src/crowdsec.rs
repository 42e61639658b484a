//! Debian's own CrowdSec Local API (1.4.6, unpacked by `cargo xtask setup
//! --test-deps` under target/crowdsec, nothing installed) run offline in a
//! lab namespace, and the blocklist as `block list --json` shows it.

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    flood::Ctl,
    netns::{Bg, Lab, Node, stderr, wait_until},
};

/// The Local API's port.
pub const PORT: u16 = 8080;

/// The unpacked package: `SIPGUARD_CROWDSEC_ROOT`, or target/crowdsec/root
/// beside this test's own build.
pub fn crowdsec_root() -> PathBuf {
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
pub struct Lapi<'a> {
    lab: &'a Lab,
    node: Node,
    root: PathBuf,
    config: PathBuf,
    bg: Option<Bg>,
}

impl<'a> Lapi<'a> {
    pub fn new(lab: &'a Lab, node: Node) -> Self {
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

    pub fn start(&mut self) {
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

    pub fn stop(&mut self) {
        if let Some(bg) = self.bg.take() {
            self.lab.stop(&bg).unwrap();
        }
    }

    /// `cscli ARGS` against this Local API; its stdout. Tried again a few
    /// times when SQLite reports the database locked (CrowdSec's own
    /// contention, between cscli's writes and the bouncer's reads).
    pub fn cscli(&self, args: &[&str]) -> String {
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
pub fn blocklist(ctl: &Ctl) -> BTreeMap<String, (String, String)> {
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
pub fn until_listed(ctl: &Ctl, cidr: &str, listed: bool) -> Duration {
    let started = Instant::now();
    wait_until(Duration::from_secs(10), || {
        Ok(blocklist(ctl).contains_key(cidr) == listed)
    })
    .unwrap_or_else(|_| panic!("{cidr} listed={listed} not reached: {:?}", blocklist(ctl)));
    started.elapsed()
}
