//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sipguard::{egress::EgressChoice, loader::KernelLog};

#[derive(Parser)]
#[command(
    name = "sipguard",
    version,
    about = "SIP flood and scanner defence in XDP",
    long_about = "sipguard drops SIP floods, banned sources and scanners in the kernel (XDP), \
                  before the SIP server spends a cycle on them.\n\n\
                  Start the agent on the SBC's interface with `sipguard run --iface IFACE`; \
                  every other command talks to that running agent through its pinned maps \
                  under /sys/fs/bpf/sipguard."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the XDP program, attach it to an interface and keep it running
    /// until SIGINT/SIGTERM (then detach and clean up).
    Run(RunArgs),
    /// Show the running agent's packet and byte counters.
    Stats(StatsArgs),
    /// Manage the allowlist: sources never limited, banned or dropped
    /// (trunks, peers, your own networks).
    Allow {
        #[command(subcommand)]
        op: ListOp,
    },
    /// Manage the static blocklist: sources always dropped.
    Block {
        #[command(subcommand)]
        op: BlockOp,
    },
    /// Everything that decides one source's fate now, in the order the
    /// program applies it, and the verdict of its next INVITE, REGISTER
    /// and OPTIONS.
    Explain {
        /// The source's address (IPv4 or IPv6).
        addr: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Copy the packets sipguard drops into a pcapng file, with the verdict
    /// and reason in each packet's comment (XDP drops happen before tcpdump
    /// sees anything). Selected in the kernel, at most `--rate` packets/s.
    Capture(CaptureArgs),
    /// List, add or lift dynamic bans.
    Bans {
        #[command(subcommand)]
        op: BansOp,
    },
    /// List or withdraw earned trust (clients the server answered with a 2xx
    /// to REGISTER or INVITE).
    Trusted {
        #[command(subcommand)]
        op: TrustedOp,
    },
    /// Show or change rate limits and ban settings of the running agent.
    Limits {
        #[command(subcommand)]
        op: LimitsOp,
    },
    /// List, add or delete scanner signatures (header tokens).
    Signatures {
        #[command(subcommand)]
        op: SigOp,
    },
    /// Switch enforcement on (drop) or off (monitor mode: count would-drop).
    Enforce {
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        target: Target,
    },
    /// Ask the running agent to re-read its config file (same as SIGHUP). A
    /// bad file is refused and the running policy kept.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Wait until the agent on an interface filters: for scripts that start
    /// `sipguard run` in the background (under systemd, `systemctl start`
    /// already returns only then).
    Wait {
        /// The interface the agent was started on.
        #[arg(long, short = 'i')]
        iface: String,
        /// Give up after this long (e.g. 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Remove sipguard from an interface: stop its agent if one runs, detach
    /// the XDP program and delete the pinned state (bans, lists, counters).
    Detach {
        #[command(flatten)]
        target: Target,
    },
    /// Validate a configuration file without touching the kernel.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Load every sipguard program into this kernel without attaching
    /// anything, and report what the verifier made of each: whether sipguard
    /// can run here, before you start it.
    CheckKernel {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Which running agent a control command talks to.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Interface of the agent; needed only when several run.
    #[arg(long, short = 'i', global = true)]
    pub iface: Option<String>,
}

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Only packets counted under this reason (e.g. banned, scanner,
    /// rate_source, blocklisted); may be repeated. Default: every reason.
    #[arg(long = "reason", value_name = "REASON")]
    pub reasons: Vec<String>,
    /// Only packets from this address or network (at most 4).
    #[arg(long = "source", value_name = "CIDR")]
    pub sources: Vec<String>,
    /// Only packets with this verdict: drop, pass or would_drop (monitor
    /// mode); may be repeated. Default: drop and would_drop.
    #[arg(long = "verdict", value_name = "VERDICT")]
    pub verdicts: Vec<String>,
    /// Stop after this many packets (default: at Ctrl-C or SIGTERM).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub count: u64,
    /// Bytes kept of each packet (1-2048).
    #[arg(short = 's', long, default_value_t = 512)]
    pub snaplen: u32,
    /// Packets copied per second at most (1-10000); selected packets over
    /// it are counted as missed.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// The pcapng file; `-` writes to stdout (`| tshark -r -`, `| sngrep -I -`).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: String,
    #[command(flatten)]
    pub target: Target,
}

/// Addresses or CIDRs, from arguments and list files.
#[derive(clap::Args)]
pub struct Entries {
    /// Addresses or CIDRs (IPv4 or IPv6); `-` reads a list from stdin.
    pub cidrs: Vec<String>,
    /// Read entries from a file: one address or CIDR a line, `#` comments;
    /// `-` is stdin. May be repeated.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Vec<String>,
}

#[derive(Subcommand)]
pub enum ListOp {
    /// Add entries.
    Add {
        #[command(flatten)]
        entries: Entries,
        #[command(flatten)]
        target: Target,
    },
    /// Remove entries.
    Del {
        #[command(flatten)]
        entries: Entries,
        #[command(flatten)]
        target: Target,
    },
    /// List entries.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum BlockOp {
    /// Add entries, optionally expiring.
    Add {
        #[command(flatten)]
        entries: Entries,
        /// Lift the entries after this long (e.g. 30m, 12h); default never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove entries.
    Del {
        #[command(flatten)]
        entries: Entries,
        #[command(flatten)]
        target: Target,
    },
    /// List entries with their expiry and origin (a named set, or manual).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Replace the named set NAME by these entries (a feed such as VoIPBL
    /// or an APIBAN export): the set's new entries are added, the ones it
    /// no longer lists removed, all other entries left alone. Entries
    /// broader than the minimum prefixes, overlapping the allowlist or
    /// covering the host's addresses are refused and reported.
    Sync {
        /// The set's name (letters, digits, '-', '_').
        #[arg(long)]
        name: String,
        #[command(flatten)]
        entries: Entries,
        /// Let an empty list empty the set (a failed download must not).
        #[arg(long)]
        allow_empty: bool,
        /// Refuse IPv4 entries broader than this prefix.
        #[arg(long, default_value_t = sipguard::guards::MIN_PREFIX_V4)]
        min_prefix_v4: u8,
        /// Refuse IPv6 entries broader than this prefix.
        #[arg(long, default_value_t = sipguard::guards::MIN_PREFIX_V6)]
        min_prefix_v6: u8,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum BansOp {
    /// List active bans.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Ban addresses by hand (IPv6: the whole grouping prefix).
    Add {
        addrs: Vec<String>,
        /// Ban duration; default: the agent's ban.for.
        #[arg(long = "for", value_parser = sipguard::config::parse_ban_for)]
        duration: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Lift bans now (IPv6: any address in the banned prefix).
    Del {
        addrs: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Lift every ban.
    Clear {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum TrustedOp {
    /// List trusted sources.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Withdraw trust from sources (IPv6: the whole grouping prefix).
    Del {
        addrs: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Withdraw all trust.
    Clear {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum LimitsOp {
    /// Show the limits the kernel is applying now.
    Show {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Change settings at once, without a restart, e.g.
    /// `invite.rate=20/s invite.burst=40 ban.after=5 ban.for=10m`.
    Set {
        /// KEY=VALUE pairs; keys are the config file's (`limits.` may be
        /// left out): invite|register|other|syn.{rate,burst},
        /// global.invite|register|other|syn.{rate,burst}, ban.after,
        /// ban.window, ban.for, ipv6_prefix, enforce, trust.*, auth_fail.*,
        /// scanner.*, malformed.*. Rates: N/s, N/m, N/h, 0 = unlimited.
        #[arg(required = true)]
        settings: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum SigOp {
    /// List signatures with their tier and hits.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Add signatures: single tokens of letters, digits, '-' and '_',
    /// matched without case in User-Agent, From, To, Contact and the
    /// Request-URI.
    Add {
        #[arg(required = true)]
        tokens: Vec<String>,
        /// ban: drop and ban the source; count: only count hits.
        #[arg(long, default_value = "ban", value_parser = ["ban", "count"])]
        tier: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete signatures.
    Del {
        #[arg(required = true)]
        tokens: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Interface to protect (the one SIP traffic arrives on).
    #[arg(long, short = 'i')]
    pub iface: String,
    /// How to attach: auto (native if the driver supports it, else generic),
    /// native (driver mode, fails if unsupported) or skb (generic mode).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// TOML configuration file; defaults apply without one.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Start in monitor mode: count what would be dropped, drop nothing.
    #[arg(long)]
    pub monitor: bool,
    /// Kernel-side log level (aya-log). Per-packet detail is logged only at
    /// debug and trace.
    #[arg(long, value_enum, default_value_t = KernelLog::Warn)]
    pub log_level: KernelLog,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off" to disable).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = metrics_addr)]
    pub metrics: MetricsAddr,
    /// How to attach the TC egress program (earned trust, credential-attack
    /// bans): auto (a TCX link on Linux 6.6+, else a netlink cls_bpf
    /// filter), tcx, or netlink.
    #[arg(long, value_enum, default_value_t = EgressChoice::Auto)]
    pub tc_egress: EgressChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Auto,
    Native,
    Skb,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Interface of the agent to read; needed only when several run.
    #[arg(long, short = 'i')]
    pub iface: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECONDS seconds, with packet rates.
    #[arg(long, value_name = "SECONDS", value_parser = watch_interval)]
    pub watch: Option<f64>,
}

/// `--watch SECONDS`: a number from 0.1 to 86400.
fn watch_interval(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{value}' is not a refresh interval: give seconds from 0.1 to 86400"
        )),
    }
}

/// Where the agent serves its metrics; `None` for off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

/// `--metrics ADDR|off`: where to serve, resolved before anything is
/// loaded or attached (`localhost:9464` works too).
pub fn metrics_addr(value: &str) -> Result<MetricsAddr, String> {
    use std::net::ToSocketAddrs as _;
    if value == "off" {
        return Ok(MetricsAddr(None));
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| MetricsAddr(Some(a)))
        .ok_or_else(|| format!("'{value}' is not an address like 127.0.0.1:9464 (or off)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_and_metrics_values_are_checked_when_parsed() {
        for bad in ["inf", "NaN", "-1", "0", "0.01", "1e9"] {
            assert!(watch_interval(bad).is_err(), "{bad}");
        }
        assert_eq!(watch_interval("2.5"), Ok(2.5));
        assert_eq!(metrics_addr("off"), Ok(MetricsAddr(None)));
        assert_eq!(
            metrics_addr("127.0.0.1:9464").unwrap().0.unwrap().port(),
            9464
        );
        assert!(metrics_addr("localhost:9464").unwrap().0.is_some());
        assert!(metrics_addr("nonsense").is_err());
        // The whole command line parses into the field's type.
        use clap::Parser as _;
        let cli =
            Cli::try_parse_from(["sipguard", "run", "--iface", "x", "--metrics", "off"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.metrics, MetricsAddr(None));
        let cli = Cli::try_parse_from(["sipguard", "run", "--iface", "x"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.metrics.0.map(|a| a.port()), Some(9464));
        let cli = Cli::try_parse_from(["sipguard", "stats", "--watch", "2"]).unwrap();
        let Command::Stats(stats) = cli.command else {
            panic!("not stats")
        };
        assert_eq!(stats.watch, Some(2.0));
    }
}
