//! Running other programs: the workspace's paths, cargo, and the three ways
//! xtask calls a program (probe its output, run it in the foreground, run it
//! and hand its exit code back to the user).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask/ sits directly under it).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
}

/// cargo's target directory, honouring CARGO_TARGET_DIR like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo that started xtask (so host builds use the same toolchain), run
/// from the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Run `program args` quietly and return its stdout, or `None` if it cannot
/// start or fails. For cheap "is it installed?" checks.
pub fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = quiet_output(program, args)?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `probe`, but keeps stdout even when the program exits non-zero
/// (dpkg-query lists what it knows and fails for what it does not).
pub fn probe_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = quiet_output(program, args)?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet_output(program: &str, args: &[&str]) -> Option<std::process::Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
}

/// Print the command line so the user can rerun it by hand.
pub fn echo(cmd: &Command) {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    eprintln!(
        "$ {} {}",
        Path::new(cmd.get_program()).display(),
        args.join(" ")
    );
}

/// Run a command in the foreground (its output goes to the terminal) and
/// return how it ended.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    echo(cmd);
    cmd.status()
        .with_context(|| format!("could not start {}", cmd.get_program().to_string_lossy()))
}

/// Run a command in the foreground; an error if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!(
            "{} failed ({st}); see its output above",
            cmd.get_program().to_string_lossy()
        );
    }
    Ok(())
}

/// The exit code to hand back to the user for a finished child (128 + signal
/// number when it was killed by a signal, as shells report it).
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}
