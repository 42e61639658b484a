//! The defences compared in the lab, each set up in the server's namespace
//! only: nothing, an iptables rule set, an nftables rule set, or sipguard;
//! and a reference for the in-place figures, an XDP program that passes
//! everything.
//! The three real ones get the same INVITE limits (per source and global),
//! as a competent operator would write them for this server.

use std::{fs, time::Duration};

use anyhow::{Context as _, Result, ensure};

use super::pass::{self, PassProgram};
use crate::{
    flood::{Ctl, SIP_PORT},
    netns::{Agent, Lab, stderr},
};

/// Per-source INVITE limit of every defence: sipguard's default (10/s,
/// burst 20) raised so a caller placing 10 calls/s has headroom for
/// retransmissions; a caller sending exactly at its limit has none and
/// would be banned by its first few retransmitted INVITEs.
pub const INVITE_RATE: u32 = 20;
pub const INVITE_BURST: u32 = 40;
/// The same for sipguard's `limits set`.
pub const LIMITS: [&str; 2] = ["invite.rate=20/s", "invite.burst=40"];
/// Ceiling on INVITEs from all sources together: sipguard's default
/// `global.invite`, written into the iptables and nftables rules too.
pub const GLOBAL_INVITE_RATE: u32 = 1000;
pub const GLOBAL_INVITE_BURST: u32 = 2000;
/// Sources whose rate state is kept: the size of sipguard's `sources` table,
/// and of the iptables hashlimit and nftables set. A quarter of sipguard's
/// default, so that the spoofed flood's sources (nearly all of the lab's
/// 198.18.0.0/15) overflow it, as a flood from the whole IPv4 space
/// overflows any table.
pub const SOURCE_TABLE: u32 = 65_536;

/// The ban-tier scanner tokens of sipguard's signature set that are safe as
/// plain substrings: the short ones (smap, nmap) would match inside
/// ordinary words, so an operator leaves them out of a string match.
const SCANNER_STRINGS: [&str; 10] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sundayddr",
    "VaxSIPUserAgent",
    "iWar",
    "sip-scan",
    "sivus",
    "sipsak",
    "pplsip",
];

const CMD_TIMEOUT: Duration = Duration::from_secs(15);
/// The nftables table the rules live in.
const NFT_TABLE: &str = "sipflood";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defence {
    None,
    Iptables,
    Nftables,
    Sipguard,
    /// Not a defence: the floor under sipguard's in-place figures (pass.rs).
    XdpPass,
}

impl Defence {
    /// Run only when asked for (`--defence xdp-pass`).
    pub const REFERENCES: [Defence; 1] = [Defence::XdpPass];

    pub const ALL: [Defence; 4] = [
        Defence::None,
        Defence::Iptables,
        Defence::Nftables,
        Defence::Sipguard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Defence::None => "none",
            Defence::Iptables => "iptables",
            Defence::Nftables => "nftables",
            Defence::Sipguard => "sipguard",
            Defence::XdpPass => "xdp-pass",
        }
    }

    /// One line on what it is, for the bench's header.
    pub fn describe(self) -> String {
        match self {
            Defence::None => "no filtering: every INVITE reaches Kamailio".into(),
            Defence::Iptables => format!(
                "iptables-legacy (xtables): INVITE start line by string match, hashlimit \
                 {INVITE_RATE}/s burst {INVITE_BURST} per source ({SOURCE_TABLE} sources) and \
                 {GLOBAL_INVITE_RATE}/s burst {GLOBAL_INVITE_BURST} for all, then {} scanner \
                 User-Agent strings (Boyer-Moore, any case)",
                SCANNER_STRINGS.len()
            ),
            Defence::Nftables => format!(
                "nftables: INVITE start line by raw payload match, a dynamic set limiting each \
                 source to {INVITE_RATE}/s burst {INVITE_BURST} ({SOURCE_TABLE} sources), \
                 {GLOBAL_INVITE_RATE}/s burst {GLOBAL_INVITE_BURST} for all; no User-Agent \
                 rules (nftables has no substring match: raw payload expressions compare at \
                 fixed offsets, and the User-Agent has none)"
            ),
            Defence::Sipguard => format!(
                "sipguard run --mode native, defaults except {} and a source table of \
                 {SOURCE_TABLE}: the same per-source and global INVITE limits, plus bans (20 violations in 10 s: 10 min), earned trust \
                 (a client the server answered 2xx skips the global budget) and the scanner \
                 signatures",
                LIMITS.join(" ")
            ),
            Defence::XdpPass => "not a defence: an XDP program that passes every packet, \
                                 attached in native mode as sipguard is; its XDP/pkt is the \
                                 floor under sipguard's (the run-time statistics' own clock \
                                 reads, the program call)"
                .into(),
        }
    }

    /// The name its XDP program's run-time statistics go by, if it has one.
    pub fn xdp_program(self) -> Option<&'static str> {
        match self {
            Defence::Sipguard => Some("sipguard_xdp"),
            Defence::XdpPass => Some(pass::PROGRAM),
            _ => None,
        }
    }

    /// Set the defence up on `lab`'s server; the returned guard keeps it
    /// (the agent stops when the guard is dropped, rules go with the lab).
    pub fn install(self, lab: &Lab) -> Result<Guard<'_>> {
        match self {
            Defence::None => Ok(Guard::Nothing),
            Defence::Iptables => {
                load(
                    lab,
                    "iptables.rules",
                    &iptables_rules(),
                    "iptables-legacy-restore",
                )?;
                Ok(Guard::Iptables)
            }
            Defence::Nftables => {
                load(lab, "nftables.rules", &nftables_rules(), "nft -f")?;
                Ok(Guard::Nftables)
            }
            Defence::Sipguard => {
                let config = lab.dir().join("sipguard.toml");
                fs::write(&config, format!("[tables]\nsources = {SOURCE_TABLE}\n"))
                    .with_context(|| format!("writing {}", config.display()))?;
                let config = config.to_string_lossy();
                let agent = lab.start_agent(&["--mode", "native", "--config", &config])?;
                Ctl::new(lab.iface()).limits_set(&LIMITS)?;
                Ok(Guard::Agent(agent))
            }
            Defence::XdpPass => Ok(Guard::Pass(pass::attach(lab)?)),
        }
    }
}

/// An installed defence.
pub enum Guard<'lab> {
    Nothing,
    Iptables,
    Nftables,
    Agent(Agent<'lab>),
    Pass(PassProgram),
}

impl Guard<'_> {
    /// It runs an XDP program whose in-place cost the lab reads.
    pub fn runs_xdp(&self) -> bool {
        matches!(self, Guard::Agent(_) | Guard::Pass(_))
    }

    pub fn agent(&self) -> Option<&Agent<'_>> {
        match self {
            Guard::Agent(a) => Some(a),
            _ => None,
        }
    }

    /// Packets the DROP rules matched so far (0 for no defence; sipguard
    /// counts its own, see `sipguard stats`).
    pub fn rule_drops(&self, lab: &Lab) -> Result<u64> {
        match self {
            Guard::Nothing | Guard::Agent(_) | Guard::Pass(_) => Ok(0),
            Guard::Iptables => {
                // `-L -v -x -n` rows: pkts bytes target prot opt in out src dst ...
                let out = run(lab, "iptables-legacy", &["-L", "-v", "-x", "-n"])?;
                Ok(out
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        if f.len() > 2 && f[2] == "DROP" {
                            f[0].parse::<u64>().ok()
                        } else {
                            None
                        }
                    })
                    .sum())
            }
            Guard::Nftables => {
                // Drop rules print "... counter packets N bytes M drop".
                let out = run(lab, "nft", &["list", "table", "inet", NFT_TABLE])?;
                Ok(out
                    .lines()
                    .filter(|l| l.trim_end().ends_with("drop"))
                    .filter_map(|l| {
                        let rest = &l[l.find("counter packets ")? + 16..];
                        rest.split_whitespace().next()?.parse::<u64>().ok()
                    })
                    .sum())
            }
        }
    }
}

/// The iptables rules (iptables-restore format), IPv4, loaded with
/// iptables-legacy: Debian's default iptables-nft would turn the per-source
/// hashlimit into an nftables meter, nearly the nftables defence again.
/// INVITEs are judged
/// first, because for a flood the rate limits are the cheapest verdict;
/// every request that gets past them is then searched for scanner strings.
/// No conntrack: a state table is one more thing a spoofed flood fills.
/// The IPv6 twin (ip6tables) is the same with `--from 48 --to 56` and
/// `--hashlimit-srcmask 64`; the lab's floods are IPv4.
pub fn iptables_rules() -> String {
    let mut r = String::from(
        "*filter\n\
         :INPUT ACCEPT [0:0]\n\
         :FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :SIP - [0:0]\n\
         :SIP_INVITE - [0:0]\n",
    );
    r += &format!("-A INPUT -p udp --dport {SIP_PORT} -j SIP\n");
    // "INVITE " at the start of the UDP payload: 20 bytes of IPv4 header
    // (no options) and 8 of UDP.
    r += "-A SIP -m string --algo bm --from 28 --to 36 --string \"INVITE \" -j SIP_INVITE\n";
    for s in SCANNER_STRINGS {
        r += &format!("-A SIP -m string --algo bm --icase --string \"{s}\" -j DROP\n");
    }
    r += &format!(
        "-A SIP_INVITE -m hashlimit --hashlimit-name sip_inv_src --hashlimit-mode srcip \
         --hashlimit-above {INVITE_RATE}/sec --hashlimit-burst {INVITE_BURST} \
         --hashlimit-htable-size 65536 --hashlimit-htable-max {SOURCE_TABLE} -j DROP\n"
    );
    r += &format!(
        "-A SIP_INVITE -m hashlimit --hashlimit-name sip_inv_all \
         --hashlimit-above {GLOBAL_INVITE_RATE}/sec --hashlimit-burst {GLOBAL_INVITE_BURST} -j DROP\n"
    );
    r += "COMMIT\n";
    r
}

/// The nftables rules (`nft -f`), IPv4 and IPv6 (per /64), in an inet table.
/// "INVITE " is matched at the start of the UDP payload (`@th,64,56`: after
/// the 8-byte UDP header, 7 bytes).
pub fn nftables_rules() -> String {
    format!(
        "table inet {NFT_TABLE} {{
\tset inv4 {{ type ipv4_addr; size {SOURCE_TABLE}; flags dynamic,timeout; timeout 60s; }}
\tset inv6 {{ type ipv6_addr; size {SOURCE_TABLE}; flags dynamic,timeout; timeout 60s; }}
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
\t\tudp dport {SIP_PORT} @th,64,56 0x494e5649544520 jump invite
\t}}
\tchain invite {{
\t\tmeta nfproto ipv4 update @inv4 {{ ip saddr limit rate over {INVITE_RATE}/second burst {INVITE_BURST} packets }} counter drop
\t\tmeta nfproto ipv6 update @inv6 {{ ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over {INVITE_RATE}/second burst {INVITE_BURST} packets }} counter drop
\t\tlimit rate over {GLOBAL_INVITE_RATE}/second burst {GLOBAL_INVITE_BURST} packets counter drop
\t}}
}}
"
    )
}

/// Write `rules` to the lab directory and load them with `loader FILE` in
/// the server's namespace.
fn load(lab: &Lab, file: &str, rules: &str, loader: &str) -> Result<()> {
    let path = lab.dir().join(file);
    fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
    let path = path.to_str().context("lab dir is not UTF-8")?;
    let mut words: Vec<&str> = loader.split(' ').collect();
    words.push(path);
    run(lab, words[0], &words[1..])
        .with_context(|| {
            format!(
                "loading the {file} rule set (are iptables and nftables installed? \
                 `cargo xtask setup --test-deps`)"
            )
        })
        .map(drop)
}

/// Run a command in the server's namespace; its stdout, or an error with
/// its stderr.
fn run(lab: &Lab, program: &str, args: &[&str]) -> Result<String> {
    let out = lab.run(&lab.server, program, args, CMD_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "{program} {args:?} in {} failed ({}): {}",
        lab.server.ns,
        out.status,
        stderr(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
