mod agent;
mod cli;
mod control;

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser as _;
use sipguard::{bpffs, config::Config, maps::Maps, preflight, stats::Snapshot};
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
        Command::Limits { op } => control::limits(op),
        Command::Trusted { op } => control::trusted(op),
        Command::Signatures { op } => control::signatures(op),
        Command::Enforce { state, target } => control::enforce(state, target),
        Command::Reload { target } => control::reload(target),
        Command::Detach { target } => control::detach(target),
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

async fn stats(args: StatsArgs) -> Result<()> {
    preflight::require_root("sipguard stats")?;
    let dir = bpffs::find_agent(args.iface.as_deref())?;
    let maps = Maps::from_pins(&dir)?;
    let Some(every) = args.watch else {
        let snap = Snapshot::read(&maps)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&snap)?);
        } else {
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
