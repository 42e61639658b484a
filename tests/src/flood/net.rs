//! Counters the kernel keeps outside sipguard, to check sipguard's own:
//! interface packet counters (what was really sent) and the UDP MIB of a
//! namespace (what reached its sockets, and what a full socket lost).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::netns::{Lab, Node, stderr};

const SHORT: Duration = Duration::from_secs(10);

fn run_ok(lab: &Lab, node: &Node, program: &str, args: &[&str]) -> Result<String> {
    let out = lab.run(node, program, args, SHORT)?;
    ensure!(
        out.status.success(),
        "{program} {args:?} in {} failed: {}",
        node.ns,
        stderr(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Make sure nothing the server sends can leave the lab, whatever source a
/// spoofed packet claims: blackhole default routes (IPv4 and IPv6). Reverse
/// path filtering is turned off so packets from sources the server has no
/// route back to are still delivered (and counted) instead of discarded by
/// the stack after XDP passed them.
pub fn isolate_server(lab: &Lab) -> Result<()> {
    let s = &lab.server;
    run_ok(lab, s, "ip", &["route", "add", "blackhole", "default"])?;
    run_ok(
        lab,
        s,
        "ip",
        &["-6", "route", "add", "blackhole", "default"],
    )?;
    for scope in ["all", "default", s.iface.as_str()] {
        let key = format!("net.ipv4.conf.{scope}.rp_filter=0");
        run_ok(lab, s, "sysctl", &["-qw", &key])?;
    }
    Ok(())
}

/// A node's interface MAC address.
pub(super) fn mac(lab: &Lab, node: &Node) -> Result<String> {
    let out = run_ok(lab, node, "ip", &["-j", "link", "show", "dev", &node.iface])?;
    let v: Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no MAC for {} in {}", node.iface, node.ns))
}

/// Packet counters of a node's interface (`ip -s -j link`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCounters {
    pub tx_packets: u64,
    pub tx_dropped: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
}

impl LinkCounters {
    pub fn since(&self, earlier: &LinkCounters) -> LinkCounters {
        LinkCounters {
            tx_packets: self.tx_packets - earlier.tx_packets,
            tx_dropped: self.tx_dropped - earlier.tx_dropped,
            rx_packets: self.rx_packets - earlier.rx_packets,
            rx_dropped: self.rx_dropped - earlier.rx_dropped,
        }
    }
}

pub fn link_counters(lab: &Lab, node: &Node) -> Result<LinkCounters> {
    let out = run_ok(
        lab,
        node,
        "ip",
        &["-s", "-j", "link", "show", "dev", &node.iface],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    let st = &v[0]["stats64"];
    let n = |dir: &str, key: &str| {
        st[dir][key]
            .as_u64()
            .with_context(|| format!("ip -s -j link has no stats64.{dir}.{key}: {out}"))
    };
    Ok(LinkCounters {
        tx_packets: n("tx", "packets")?,
        tx_dropped: n("tx", "dropped")?,
        rx_packets: n("rx", "packets")?,
        rx_dropped: n("rx", "dropped")?,
    })
}

/// UDP datagrams a namespace's stack handled, IPv4 and IPv6 together.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpMib {
    /// Delivered to a socket.
    pub in_datagrams: u64,
    /// To a port nobody listens on.
    pub no_ports: u64,
    /// Discarded (bad checksum, full socket buffer, ...).
    pub in_errors: u64,
    /// Of those, a full socket receive buffer.
    pub rcvbuf_errors: u64,
}

impl UdpMib {
    pub fn since(&self, e: &UdpMib) -> UdpMib {
        UdpMib {
            in_datagrams: self.in_datagrams - e.in_datagrams,
            no_ports: self.no_ports - e.no_ports,
            in_errors: self.in_errors - e.in_errors,
            rcvbuf_errors: self.rcvbuf_errors - e.rcvbuf_errors,
        }
    }
}

/// The namespace's UDP counters, from /proc/net/snmp and /proc/net/snmp6 as
/// read from inside it.
pub fn udp_mib(lab: &Lab, node: &Node) -> Result<UdpMib> {
    let v4 = run_ok(lab, node, "cat", &["/proc/net/snmp"])?;
    let v6 = run_ok(lab, node, "cat", &["/proc/net/snmp6"])?;
    // snmp: a "Udp:" header line of names, then a "Udp:" line of values.
    let udp: Vec<&str> = v4.lines().filter(|l| l.starts_with("Udp: ")).collect();
    ensure!(udp.len() == 2, "no Udp lines in /proc/net/snmp:\n{v4}");
    let names = udp[0].split_whitespace().skip(1);
    let values = udp[1].split_whitespace().skip(1);
    let v4: Vec<(String, u64)> = names
        .zip(values)
        .map(|(n, v)| (n.to_string(), v.parse().unwrap_or(0)))
        .collect();
    // snmp6: "Udp6InDatagrams   123" lines.
    let v6: Vec<(String, u64)> = v6
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.strip_prefix("Udp6")?;
            Some((name.to_string(), it.next()?.parse().ok()?))
        })
        .collect();
    let get = |name: &str| -> u64 {
        v4.iter()
            .chain(v6.iter())
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    };
    Ok(UdpMib {
        in_datagrams: get("InDatagrams"),
        no_ports: get("NoPorts"),
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
    })
}
