mod agent;
mod cli;
mod control;

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser as _;
use sipguard::{
    bpffs, config::Config, kernel, maps::Maps, preflight, stats::Snapshot, status::AgentStatus,
};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, StatsArgs};

/// Log filter unless `SIPGUARD_LOG` says otherwise (tracing-subscriber
/// EnvFilter syntax, e.g. `debug` or `info,aya=debug`).
const DEFAULT_LOG_FILTER: &str = "info";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SIPGUARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_target(false)
        // Colour only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(dispatch(cli.command)));
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

async fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run(args) => agent::run(args).await,
        Command::Stats(args) => stats(args).await,
        Command::Allow { op } => control::allow(op),
        Command::Block { op } => control::block(op),
        Command::Bans { op } => control::bans(op),
        Command::Capture(args) => control::capture(args).await,
        Command::Explain { addr, json, target } => control::explain(&addr, json, &target),
        Command::Limits { op } => control::limits(op),
        Command::Trusted { op } => control::trusted(op),
        Command::Signatures { op } => control::signatures(op),
        Command::Enforce { state, target } => control::enforce(state, target),
        Command::Reload { target } => control::reload(target),
        Command::Detach { target } => control::detach(target),
        Command::Wait { iface, timeout } => {
            preflight::require_root("sipguard wait")?;
            let status = AgentStatus::wait(&iface, timeout)?;
            println!("{}", status.line());
            Ok(())
        }
        Command::CheckKernel { json } => check_kernel(json),
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

fn check_kernel(json: bool) -> Result<()> {
    preflight::require_root("sipguard check-kernel")?;
    let report = kernel::check();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "kernel {}: {}",
            report.kernel,
            if report.ok {
                "sipguard loads"
            } else {
                "sipguard does NOT load"
            }
        );
        for p in &report.programs {
            let insns = p.verified_insns.map_or("?".to_string(), |n| n.to_string());
            println!("  {:<18} verified in {insns} instructions", p.name);
        }
        println!("  tc egress via     {}", report.tc_egress.name());
        println!("  load time         {} ms", report.load_ms);
    }
    match report.error {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}

async fn stats(args: StatsArgs) -> Result<()> {
    preflight::require_root("sipguard stats")?;
    let dir = bpffs::find_agent(args.iface.as_deref())?;
    let maps = Maps::from_pins(&dir)?;
    let iface = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let status = AgentStatus::read(&iface);
    let Some(every) = args.watch else {
        let snap = Snapshot::read(&maps)?;
        if args.json {
            let mut v = serde_json::to_value(&snap)?;
            v["agent"] = serde_json::to_value(&status)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            if let Some(s) = &status {
                println!("{}", s.line());
            }
            print!("{}", snap.table(None));
        }
        return Ok(());
    };
    let every = Duration::from_secs_f64(every.max(0.1));
    let mut prev: Option<(Snapshot, Instant)> = None;
    loop {
        let snap = Snapshot::read(&maps)?;
        let now = Instant::now();
        if args.json {
            println!("{}", serde_json::to_string(&snap)?);
        } else {
            let p = prev
                .as_ref()
                .map(|(s, t)| (s, now.duration_since(*t).as_secs_f64()));
            print!("\x1b[2J\x1b[H{}", snap.table(p));
        }
        prev = Some((snap, now));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
