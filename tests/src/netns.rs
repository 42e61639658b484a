//! Network-namespace labs for end-to-end tests: a SIP server, a client and an
//! attacker, each in its own namespace, joined by a bridge in a fourth
//! "switch" namespace. The server has exactly one interface (a veth whose
//! peer is a bridge port), so every packet from any other node arrives on the
//! interface sipguard protects.
//!
//! ```text
//!   client (eth0) ──┐
//!                   ├── br0 (switch ns) ── server (Lab::iface, sipguard here)
//! attacker (eth0) ──┘
//! ```
//!
//! Addresses are from the benchmarking ranges only: 198.18.0.0/16 and
//! 2001:db8::/64. Namespaces isolate them, so concurrent labs reuse them.
//!
//! Everything a lab creates is torn down on drop, also when a test panics:
//! processes it started are stopped by PID (SIGTERM, then SIGKILL), then its
//! namespaces are deleted. Commands run in a namespace through
//! `nsenter --net=/run/netns/NAME`, not `ip netns exec`: the latter remounts
//! /sys and would hide /sys/fs/bpf, where sipguard pins its maps.

mod agent;
mod process;

use std::{
    ffi::OsStr,
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, ensure};

pub use agent::{
    Agent, XdpAttach, agent_key, group_packets, packets, pin_dir, sipguard_bin, sipguard_stats,
    staging_dir,
};

pub use process::{exited, run_bounded, stderr, terminate, wait_until};

/// Host number of each node: its addresses are 198.18.0.N and 2001:db8::N.
pub const SERVER_HOST: u8 = 1;
pub const CLIENT_HOST: u8 = 2;
pub const ATTACKER_HOST: u8 = 3;
/// Nodes added with `Lab::add_node` are numbered from here.
const FIRST_EXTRA_HOST: u8 = 10;

/// Prefix lengths of the lab subnets.
pub const V4_PREFIX: u8 = 16;
pub const V6_PREFIX: u8 = 64;

/// Bound for short helper commands (ip, ss, sysctl, sipguard stats).
const SHORT_TIMEOUT: Duration = Duration::from_secs(15);

/// One node of the lab: a namespace with one interface on the lab subnet.
#[derive(Clone, Debug)]
pub struct Node {
    /// Namespace name (under /run/netns).
    pub ns: String,
    /// The node's interface inside its namespace.
    pub iface: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Node {
    /// The namespace file `nsenter --net=` takes.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }

    /// A `Command` that runs `program` inside this node's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.netns_path());
        let mut cmd = Command::new("nsenter");
        // nsenter setns()es and then execs `program` (no fork without --pid),
        // so the child's PID is the program's own PID.
        cmd.arg(net).arg(program);
        cmd
    }
}

/// A process started with `Lab::spawn`; the lab keeps it and stops it on drop.
#[derive(Clone, Debug)]
pub struct Bg {
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Bg {
    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Lab {
    /// `sg-<tag>-<pid>-<n>`; every namespace of the lab starts with it.
    pub name: String,
    pub server: Node,
    pub client: Node,
    pub attacker: Node,
    switch: String,
    next_host: AtomicU8,
    teardown: Teardown,
}

impl Lab {
    /// Build a lab with a server, a client and an attacker. `tag` (a few
    /// letters naming the test) goes into the namespace names so a leftover
    /// can be traced to its test.
    pub fn new(tag: &str) -> Result<Self> {
        Self::with_queues(tag, 1)
    }

    /// `new`, with the server's interface given `queues` receive queues:
    /// the bridge sends a packet on to it through the queue of the CPU it
    /// runs on (XPS), so floods sent from different CPUs are received (and
    /// pass XDP) on those CPUs at once, as on a multi-queue NIC.
    pub fn with_queues(tag: &str, queues: u8) -> Result<Self> {
        ensure!(
            !tag.is_empty() && tag.len() <= 12 && tag.chars().all(|c| c.is_ascii_alphanumeric()),
            "lab tag {tag:?}: use 1-12 ASCII letters or digits"
        );
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("sg-{tag}-{pid}-{n}");
        // sipguard pins and locks by interface name in host-wide paths
        // (/sys/fs/bpf/sipguard, /run/sipguard), so the server's interface
        // name must be unique across concurrent labs, not just in its
        // namespace: "sg" + pid + counter, at most 2+7+1+5 = 15 bytes.
        let server_iface = format!("sg{pid:x}x{n:x}");
        ensure!(
            server_iface.len() <= 15,
            "interface name {server_iface} too long"
        );

        let dir = std::env::temp_dir().join(&name);
        // The PID is ours, so anything already carrying this name is a
        // leftover of a killed earlier process that had the same PID.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let teardown = Teardown {
            dir,
            server_ifaces: Mutex::new(vec![server_iface.clone()]),
            namespaces: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
        };

        let switch = format!("{name}-sw");
        teardown.add_netns(&switch)?;
        let sw = |args: &[&str]| ip(&switch, args);
        // No IPv6 on the switch: its link-local chatter (router and MLD
        // solicitations) would only add noise to the server's counters.
        sysctl(&switch, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(&switch, "net.ipv6.conf.default.disable_ipv6", "1")?;
        sw(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        sw(&["link", "set", "br0", "up"])?;

        let mut lab = Lab {
            server: placeholder(),
            client: placeholder(),
            attacker: placeholder(),
            name,
            switch,
            next_host: AtomicU8::new(FIRST_EXTRA_HOST),
            teardown,
        };
        lab.server = lab.attach_queues("srv", &server_iface, SERVER_HOST, queues)?;
        lab.client = lab.attach("cli", "eth0", CLIENT_HOST)?;
        lab.attacker = lab.attach("atk", "eth0", ATTACKER_HOST)?;
        Ok(lab)
    }

    /// The interface sipguard protects: the server's veth.
    pub fn iface(&self) -> &str {
        &self.server.iface
    }

    /// Directory for this lab's logs and scratch files (removed on drop
    /// unless the test panicked).
    pub fn dir(&self) -> &Path {
        &self.teardown.dir
    }

    /// Add another node on the bridge (e.g. a second attacker). `short` names
    /// it (1-8 letters or digits, unique in the lab).
    pub fn add_node(&self, short: &str) -> Result<Node> {
        ensure!(
            !short.is_empty()
                && short.len() <= 8
                && short.chars().all(|c| c.is_ascii_alphanumeric()),
            "node name {short:?}: use 1-8 ASCII letters or digits"
        );
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        ensure!(host < 255, "too many nodes in one lab");
        self.attach(short, "eth0", host)
    }

    /// Add another server (a second SBC of a fleet): a node whose interface
    /// name is unique on the machine, as sipguard's state is filed by it.
    /// `start_agent_on` protects it.
    pub fn add_server(&self, short: &str) -> Result<Node> {
        let mut ifaces = self.teardown.server_ifaces.lock().unwrap();
        let iface = format!("{}s{}", self.server.iface, ifaces.len());
        ensure!(iface.len() <= 15, "interface name {iface} too long");
        ifaces.push(iface.clone());
        drop(ifaces);
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        ensure!(host < 255, "too many nodes in one lab");
        self.attach(short, &iface, host)
    }

    /// Create a namespace `<lab>-<short>` with interface `iface` cabled to the
    /// bridge, addressed 198.18.0.<host>/16 and 2001:db8::<host>/64.
    fn attach(&self, short: &str, iface: &str, host: u8) -> Result<Node> {
        self.attach_queues(short, iface, host, 1)
    }

    /// `attach` with `queues` queues each way on both ends of the veth, and
    /// the bridge's end sending from CPU `n` on queue `n % queues`.
    fn attach_queues(&self, short: &str, iface: &str, host: u8, queues: u8) -> Result<Node> {
        let ns = format!("{}-{short}", self.name);
        self.teardown.add_netns(&ns)?;
        let port = format!("p-{short}");
        let q = queues.max(1).to_string();
        let queue_args = ["numtxqueues", &q, "numrxqueues", &q];
        // Create each end directly in its namespace: nothing touches the host.
        run_ok(
            Command::new("ip")
                .args(["link", "add", iface, "netns", &ns])
                .args(queue_args)
                .args(["type", "veth", "peer", "name", &port, "netns", &self.switch])
                .args(queue_args),
        )?;
        if queues > 1 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            for queue in 0..usize::from(queues) {
                // One bit per CPU whose number is `queue` modulo `queues`.
                let mask: u64 = (0..cpus.min(64))
                    .filter(|c| c % usize::from(queues) == queue)
                    .map(|c| 1u64 << c)
                    .sum();
                let file = format!("/sys/class/net/{port}/queues/tx-{queue}/xps_cpus");
                run_ok(Command::new("ip").args([
                    "netns",
                    "exec",
                    &self.switch,
                    "sh",
                    "-c",
                    &format!("echo {mask:x} > {file}"),
                ]))?;
            }
        }
        ip(&self.switch, &["link", "set", &port, "master", "br0", "up"])?;

        let node = Node {
            ns,
            iface: iface.to_string(),
            v4: Ipv4Addr::new(198, 18, 0, host),
            v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host as u16),
        };
        self.add_addr(&node, &format!("{}/{V4_PREFIX}", node.v4))?;
        self.add_addr(&node, &format!("{}/{V6_PREFIX}", node.v6))?;
        ip(&node.ns, &["link", "set", "lo", "up"])?;
        ip(&node.ns, &["link", "set", iface, "up"])?;
        Ok(node)
    }

    /// Add an address (CIDR) to a node's interface, e.g. extra attacker
    /// sources. Stay inside 198.18.0.0/15 and 2001:db8::/32. IPv6 addresses
    /// get `nodad` so they are usable at once.
    pub fn add_addr(&self, node: &Node, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", &node.iface];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&node.ns, &args)
    }

    /// Run `program args` in `node`'s namespace and capture its output; fails
    /// only if it cannot be started or outlives `timeout` (then it is killed).
    pub fn run<I, S>(
        &self,
        node: &Node,
        program: &str,
        args: I,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = node.command(program);
        cmd.args(args);
        run_bounded(&mut cmd, timeout)
    }

    /// Start `program args` in `node`'s namespace in the background, output
    /// to `<lab dir>/<name>.log`. The lab stops it on drop.
    pub fn spawn<I, S>(&self, node: &Node, name: &str, program: &str, args: I) -> Result<Bg>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = self.dir().join(format!("{name}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = node.command(program);
        cmd.args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {program} in {} (is it installed?)", node.ns))?;
        let bg = Bg {
            pid: child.id(),
            log,
        };
        self.teardown.procs.lock().unwrap().push(child);
        Ok(bg)
    }

    /// Stop a background process now (SIGTERM, SIGKILL after a grace period)
    /// and return how it exited.
    pub fn stop(&self, bg: &Bg) -> Result<ExitStatus> {
        let mut child = {
            let mut procs = self.teardown.procs.lock().unwrap();
            let i = procs
                .iter()
                .position(|c| c.id() == bg.pid)
                .ok_or_else(|| anyhow!("pid {} was not started by this lab", bg.pid))?;
            procs.swap_remove(i)
        };
        terminate(&mut child)
    }

    /// Wait until something in `node`'s namespace listens on UDP `port`.
    pub fn wait_udp_port(&self, node: &Node, port: u16, timeout: Duration) -> Result<()> {
        self.wait_port(node, "-Hlun", port, timeout)
    }

    /// Wait until something in `node`'s namespace listens on TCP `port`.
    pub fn wait_tcp_port(&self, node: &Node, port: u16, timeout: Duration) -> Result<()> {
        self.wait_port(node, "-Hltn", port, timeout)
    }

    fn wait_port(&self, node: &Node, flags: &str, port: u16, timeout: Duration) -> Result<()> {
        let filter = format!("sport = :{port}");
        wait_until(timeout, || {
            let out = self.run(node, "ss", [flags, filter.as_str()], SHORT_TIMEOUT)?;
            ensure!(out.status.success(), "ss failed: {}", stderr(&out));
            Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
        })
        .with_context(|| format!("nothing listens on port {port} ({flags}) in {}", node.ns))
    }
}

/// What a lab must undo: its processes, its namespaces, its scratch dir.
struct Teardown {
    dir: PathBuf,
    /// The servers' interfaces: sipguard state keyed by them is cleaned too.
    server_ifaces: Mutex<Vec<String>>,
    namespaces: Mutex<Vec<String>>,
    procs: Mutex<Vec<Child>>,
}

impl Teardown {
    fn add_netns(&self, ns: &str) -> Result<()> {
        // A namespace of this name can only be left over from a killed
        // process that had our PID: remove it.
        if Path::new("/run/netns").join(ns).exists() {
            let _ = run_ok(Command::new("ip").args(["netns", "del", ns]));
        }
        run_ok(Command::new("ip").args(["netns", "add", ns]))
            .with_context(|| format!("creating network namespace {ns} (needs root)"))?;
        self.namespaces.lock().unwrap().push(ns.to_string());
        Ok(())
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for mut child in self.procs.get_mut().unwrap().drain(..) {
            if let Err(e) = terminate(&mut child) {
                eprintln!("could not stop pid {}: {e:#}", child.id());
            }
        }
        for iface in self.server_ifaces.get_mut().unwrap().drain(..) {
            agent::remove_leftovers(&iface);
        }
        // Deleting a namespace deletes its interfaces and their veth peers.
        for ns in self.namespaces.get_mut().unwrap().drain(..).rev() {
            if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", &ns])) {
                eprintln!("could not delete network namespace {ns}: {e:#}");
            }
        }
        if thread::panicking() {
            eprintln!("lab logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn placeholder() -> Node {
    Node {
        ns: String::new(),
        iface: String::new(),
        v4: Ipv4Addr::UNSPECIFIED,
        v6: Ipv6Addr::UNSPECIFIED,
    }
}

/// `ip -n NS args...`, failing with its stderr.
fn ip(ns: &str, args: &[&str]) -> Result<()> {
    run_ok(Command::new("ip").arg("-n").arg(ns).args(args))
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    // /proc/sys/net shows the namespace of the process reading it, so an
    // nsenter'ed sysctl writes the namespace's own settings.
    run_ok(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["sysctl", "-qw", &format!("{key}={value}")]),
    )
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, SHORT_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    Ok(())
}
