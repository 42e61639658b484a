//! sipguard's developer tasks, run as `cargo xtask COMMAND` (an alias in
//! .cargo/config.toml). Written in Rust so a fresh machine needs only cargo.

mod cmd;
mod demo;
mod dist;
mod install;
mod kernels;
mod lab;
mod labbin;
mod lint;
mod setup;
mod tasks;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sipguard's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (pinned nightly + rust-src, bpf-linker);
    /// skips whatever is already there.
    Setup {
        /// Also install what the tests drive: Debian packages (sipp, kamailio,
        /// hping3, tshark, bpftool, iproute2, socat, iptables, nftables), PyPI
        /// sipvicious and scapy, and mount bpffs. Needs root.
        #[arg(long)]
        test_deps: bool,
    },
    /// Setup with test deps, build, then watch sipguard defend a real SIP
    /// server (Kamailio) from a SIPVicious scan and an INVITE flood in a
    /// namespace lab, live (about a minute). Needs root.
    Demo,
    /// Setup, then build sipguard (with its embedded XDP object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run sipguard with ARGS (as root), e.g.
    /// `cargo xtask run -- run --iface eth0`.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for sipguard.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Setup with test deps, then every host test, one test at a time per
    /// binary (end-to-end tests must not overlap). Needs root.
    Test {
        /// Passed to the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Setup, then the benchmarks (release build); they print their figures.
    /// With `--lab`: the peer comparison instead (Kamailio under INVITE
    /// floods behind no defence, iptables, nftables and sipguard; about 5
    /// minutes, needs root).
    Bench {
        /// Passed to sipguard-bench (or, with --lab, to sipguard-lab).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The kernel matrix: boot Debian's kernels (12's 6.1 and 6.12, 13's
    /// 6.12, 6.18 and the newest) in throwaway VMs (virtme-ng, qemu TCG),
    /// load every program, run the fixture suites and a real attach in
    /// each; one line per kernel. Downloads kernel packages into
    /// target/kernels (never installs them). Needs root; 10-20 minutes.
    Kernels {
        /// Only these kernels (labels as printed, e.g. debian12).
        #[arg(long = "kernel")]
        only: Vec<String>,
        /// VMs at once (each takes one core under emulation).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Also run the check on the running kernel, in namespaces.
        #[arg(long)]
        host: bool,
    },
    /// rustfmt check, clippy on the host crates and on the XDP program.
    Lint,
    /// Setup (plus cargo-deb), then the release binary and a Debian package
    /// of it with the systemd unit and the default config; prints the .deb's
    /// path on stdout.
    Dist,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup { test_deps } => setup::setup(test_deps).map(|()| 0),
        Task::Demo => demo::demo().map(|()| 0),
        Task::Build { release } => tasks::build(release).map(|()| 0),
        Task::Run { release, args } => tasks::run(release, args).map(|()| 0),
        Task::Test { args } => tasks::test(args),
        Task::Bench { args } => tasks::bench(args),
        Task::Kernels { only, jobs, host } => {
            kernels::kernels(kernels::Options { only, jobs, host })
        }
        Task::Lint => lint::lint().map(|()| 0),
        Task::Dist => dist::dist().map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::exit(1);
        }
    }
}
