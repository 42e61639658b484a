//! An interface is its name *and* its network namespace (issue 16):
//!
//! * agents on two interfaces of the same name in two namespaces each keep
//!   their own program, maps and lock, and stopping one leaves the other;
//! * an interface deleted and created again while its agent was down gets a
//!   new filter from the next agent (not "Link has been severed"), with the
//!   bans pinned before kept.
//!
//! Needs root, iproute2 and nsenter. No traffic: veth pairs inside
//! namespaces made here, deleted on the way out.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use sipguard_tests::netns::{run_bounded, sipguard_bin, stderr};

const IFACE: &str = "sgid0";
const TIMEOUT: Duration = Duration::from_secs(90);

/// A network namespace holding a veth pair `sgid0`/`sgid1`, deleted (with
/// whatever agent runs in it stopped first) when dropped.
struct Ns {
    name: String,
    agent: Option<Child>,
    log: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = run_bounded(Command::new("ip").args(args), Duration::from_secs(20))?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        stderr(&out)
    );
    Ok(())
}

impl Ns {
    fn new(tag: &str) -> Result<Ns> {
        let name = format!("sgid{tag}-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Ns {
            log: std::env::temp_dir().join(format!("{name}.log")),
            name,
            agent: None,
        };
        ns.add_veth()?;
        Ok(ns)
    }

    fn add_veth(&self) -> Result<()> {
        ip(&[
            "-n", &self.name, "link", "add", IFACE, "type", "veth", "peer", "name", "sgid1",
        ])?;
        ip(&["-n", &self.name, "link", "set", IFACE, "up"])?;
        ip(&["-n", &self.name, "link", "set", "sgid1", "up"])
    }

    fn command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg(sipguard_bin()?)
            .args(args);
        Ok(cmd)
    }

    /// `sipguard ARGS` inside the namespace; its stdout.
    fn sipguard(&self, args: &[&str]) -> Result<String> {
        let out = run_bounded(&mut self.command(args)?, TIMEOUT)?;
        ensure!(
            out.status.success(),
            "in {}: sipguard {}: {}",
            self.name,
            args.join(" "),
            stderr(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start the agent (nsenter execs it: the child is the agent) and wait
    /// until its interface has an XDP program.
    fn start(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = self
            .command(&["run", "--iface", IFACE, "--metrics", "off"])?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.agent = Some(child);
        for _ in 0..1200 {
            let agent = self.agent.as_mut().context("agent")?;
            if let Some(status) = agent.try_wait()? {
                bail!("the agent exited ({status}); log:\n{}", self.log());
            }
            if self.xdp_prog()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nothing attached to {IFACE} in 60 s; log:\n{}", self.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (clean stop) or SIGKILL (crash) the agent; its exit status.
    fn stop(&mut self, signal: &str) -> Result<std::process::ExitStatus> {
        let mut child = self.agent.take().context("no agent running")?;
        Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()?;
        for _ in 0..300 {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        bail!("the agent in {} did not exit on {signal}", self.name)
    }

    /// The id of the XDP program on `sgid0`, if one is attached.
    fn xdp_prog(&self) -> Result<Option<u64>> {
        let out = run_bounded(
            Command::new("ip").args(["-n", &self.name, "-d", "-j", "link", "show", IFACE]),
            Duration::from_secs(20),
        )?;
        let links: Value = serde_json::from_slice(&out.stdout)?;
        Ok(links[0]["xdp"]["prog"]["id"].as_u64())
    }

    fn bans(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.sipguard(&[
            "bans", "list", "--json", "--iface", IFACE,
        ])?)?)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if self.agent.is_some() {
            let _ = self.stop("TERM");
        }
        // Clean up what a crashed agent left: detach removes pins and lock.
        if let Ok(mut cmd) = self.command(&["detach", "--iface", IFACE]) {
            let _ = run_bounded(cmd.stdout(Stdio::null()), TIMEOUT);
        }
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn banned(bans: &Value, source: &str) -> bool {
    bans.as_array()
        .is_some_and(|b| b.iter().any(|x| x["source"].as_str() == Some(source)))
}

#[test]
fn same_named_interfaces_in_two_namespaces_get_an_agent_each() -> Result<()> {
    let mut a = Ns::new("a")?;
    let mut b = Ns::new("b")?;
    a.start()?;
    b.start()?;
    let (pa, pb) = (a.xdp_prog()?, b.xdp_prog()?);
    ensure!(
        pa.is_some() && pb.is_some() && pa != pb,
        "XDP programs: {pa:?} in {}, {pb:?} in {}; each needs its own\nlog a:\n{}\nlog b:\n{}",
        a.name,
        b.name,
        a.log(),
        b.log()
    );
    a.sipguard(&["bans", "add", "198.18.9.9", "--iface", IFACE])?;
    ensure!(
        banned(&a.bans()?, "198.18.9.9"),
        "the ban is not in a's table"
    );
    ensure!(
        !banned(&b.bans()?, "198.18.9.9"),
        "a ban added in one namespace shows in the other's table"
    );

    let status = a.stop("TERM")?;
    ensure!(status.success(), "agent a exited with {status}");
    ensure!(a.xdp_prog()?.is_none(), "a clean stop left a's program");
    ensure!(
        b.xdp_prog()? == pb,
        "stopping a's agent changed b's program (was {pb:?})"
    );
    b.sipguard(&["stats", "--iface", IFACE])?;
    Ok(())
}

#[test]
fn an_interface_created_again_gets_a_new_filter_with_the_old_bans() -> Result<()> {
    let mut ns = Ns::new("c")?;
    ns.start()?;
    ns.sipguard(&[
        "bans",
        "add",
        "198.18.9.10",
        "--for",
        "1h",
        "--iface",
        IFACE,
    ])?;
    ns.stop("KILL")?;
    // The interface goes away and comes back while no agent runs.
    ip(&["-n", &ns.name, "link", "del", IFACE])?;
    ns.add_veth()?;
    ensure!(ns.xdp_prog()?.is_none(), "a new interface came with XDP");

    ns.start()?;
    ensure!(
        ns.xdp_prog()?.is_some(),
        "the agent started but nothing filters the new interface; log:\n{}",
        ns.log()
    );
    ensure!(
        banned(&ns.bans()?, "198.18.9.10"),
        "the ban pinned before the interface was created again is gone"
    );
    let status = ns.stop("TERM")?;
    ensure!(status.success(), "the agent exited with {status}");
    Ok(())
}
