//! The `sipguard` control commands of a lab's agent, and differences between
//! two `sipguard stats --json` snapshots.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::netns::{packets, run_bounded, sipguard_bin, sipguard_stats, stderr};

const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `sipguard <command> ... --iface IFACE` against one agent.
pub struct Ctl {
    iface: String,
}

impl Ctl {
    pub fn new(iface: &str) -> Self {
        Ctl {
            iface: iface.to_string(),
        }
    }

    /// Run a command, fail with its stderr unless it succeeds, return stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_within(args, CLI_TIMEOUT)
    }

    /// `run`, bounded by `timeout` instead (a million list entries take
    /// longer than a control command's seconds).
    pub fn run_within(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = Command::new(sipguard_bin()?);
        cmd.args(args).args(["--iface", &self.iface]);
        self.finish(cmd, args, timeout)
    }

    /// Run a command with `input` piped to its stdin (`block add -`).
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let bin = sipguard_bin()?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("printf '%s\\n' \"$SG_STDIN\" | \"$0\" \"$@\"")
            .arg(bin)
            .args(args)
            .args(["--iface", &self.iface])
            .env("SG_STDIN", input);
        self.finish(cmd, args, CLI_TIMEOUT)
    }

    fn finish(&self, mut cmd: Command, args: &[&str], timeout: Duration) -> Result<String> {
        let out = run_bounded(&mut cmd, timeout)?;
        ensure!(
            out.status.success(),
            "`sipguard {}` failed ({}): {}",
            args.join(" "),
            out.status,
            stderr(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `sipguard limits set KEY=VALUE...`.
    pub fn limits_set(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["limits", "set"];
        args.extend_from_slice(settings);
        self.run(&args).map(drop)
    }

    /// `sipguard limits show --json`, parsed.
    pub fn limits(&self) -> Result<Value> {
        let out = self.run(&["limits", "show", "--json"])?;
        serde_json::from_str(&out).context("parsing `limits show --json`")
    }

    /// `sipguard block list --json`, parsed: (cidr, row) pairs.
    pub fn block_list(&self) -> Result<Vec<(String, Value)>> {
        let out = self.run(&["block", "list", "--json"])?;
        let rows: Vec<Value> = serde_json::from_str(&out).context("parsing `block list --json`")?;
        Ok(rows
            .into_iter()
            .map(|r| (r["cidr"].as_str().unwrap_or_default().to_string(), r))
            .collect())
    }

    /// `sipguard bans list --json`, parsed (a list of ban rows).
    pub fn bans(&self) -> Result<Value> {
        let out = self.run(&["bans", "list", "--json"])?;
        serde_json::from_str(&out).context("parsing `bans list --json`")
    }

    /// `sipguard stats --json`, parsed.
    pub fn stats(&self) -> Result<Value> {
        sipguard_stats(&self.iface)
    }
}

/// The `source` column of each ban in `bans list --json`.
pub fn ban_sources(bans: &Value) -> Vec<String> {
    bans.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["source"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What changed between two stats snapshots.
pub struct Delta<'a> {
    pub before: &'a Value,
    pub after: &'a Value,
}

impl<'a> Delta<'a> {
    pub fn new(before: &'a Value, after: &'a Value) -> Self {
        Delta { before, after }
    }

    fn of(&self, group: &str, name: &str, verdict: &str) -> u64 {
        packets(self.after, group, name, verdict) - packets(self.before, group, name, verdict)
    }

    /// Packets counted under reason `name` with `verdict` (pass, drop,
    /// would_drop).
    pub fn reason(&self, name: &str, verdict: &str) -> u64 {
        self.of("reasons", name, verdict)
    }

    /// Packets of class `name` (invite, register, ...) with `verdict`.
    pub fn class(&self, name: &str, verdict: &str) -> u64 {
        self.of("classes", name, verdict)
    }

    /// Packets of class `name`, whatever the verdict.
    pub fn class_all(&self, name: &str) -> u64 {
        ["pass", "drop", "would_drop"]
            .iter()
            .map(|v| self.class(name, v))
            .sum()
    }

    /// A table event counter (`ban_added`, `ban_expired`, ...).
    pub fn event(&self, name: &str) -> u64 {
        let get = |v: &Value| {
            v["tables"]["events"][name]
                .as_u64()
                .unwrap_or_else(|| panic!("stats have no tables.events.{name}: {v}"))
        };
        get(self.after) - get(self.before)
    }

    /// Every non-zero reason counter, for printing.
    pub fn reasons(&self) -> String {
        let mut out = Vec::new();
        if let Some(names) = self.after["reasons"].as_object() {
            for name in names.keys() {
                for verdict in ["pass", "drop", "would_drop"] {
                    let n = self.reason(name, verdict);
                    if n > 0 {
                        out.push(format!("{name}.{verdict}={n}"));
                    }
                }
            }
        }
        out.join(" ")
    }
}
