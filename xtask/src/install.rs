//! Running a long installer (rustup, cargo install, apt-get, pip) with a
//! spinner and its output in a log file, so the terminal stays readable and a
//! failure still shows what went wrong.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd;

/// Lines of the log shown when an installer fails.
const TAIL_LINES: usize = 25;

/// Where installers log: target/xtask/NAME.log.
fn log_path(name: &str) -> Result<PathBuf> {
    let dir = cmd::target_dir().join("xtask");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{name}.log")))
}

/// Run `cmd` as step `what`, appending its output to target/xtask/`log`.log.
/// Stdin is closed so an installer can never wait for an answer. On failure
/// the log's tail is printed with `hint` (what the user should do).
pub fn run(what: &str, log: &str, mut cmd: Command, hint: &str) -> Result<Duration> {
    let path = log_path(log)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    let line = format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "));
    writeln!(file, "\n$ {line}")?;
    let stderr = file.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr));

    // On a terminal the spinner shows progress; elsewhere (CI) this line does.
    let shown = path.strip_prefix(cmd::root()).unwrap_or(&path);
    eprintln!("  {what}: running (log: {})", shown.display());
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("  {spinner} {msg} [{elapsed}]")
            .expect("valid spinner template"),
    );
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));

    let start = Instant::now();
    let result = cmd.status();
    spinner.finish_and_clear();
    let elapsed = start.elapsed();

    let ok = match &result {
        Ok(st) => st.success(),
        Err(_) => false,
    };
    if !ok {
        let why = match result {
            Ok(st) => format!("exited with {st}"),
            Err(e) => format!("could not start: {e}"),
        };
        eprintln!(
            "  {what} failed after {}s ({why}). Last lines of {}:",
            elapsed.as_secs(),
            path.display()
        );
        for line in tail(&path) {
            eprintln!("    | {line}");
        }
        bail!("{what} failed: {hint}");
    }
    Ok(elapsed)
}

fn tail(path: &PathBuf) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
