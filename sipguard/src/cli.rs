//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sipguard::loader::KernelLog;

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
    /// Validate a configuration file without touching the kernel.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
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
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
}
