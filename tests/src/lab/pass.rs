//! The in-place figures' floor: an XDP program that passes every packet
//! (the object's `sipguard_bench_empty`), attached to the server's
//! interface as sipguard is. Its run time per run in place is what the
//! kernel's run-time statistics cost by themselves (they read the clock
//! before and after every run) plus the program's call, on the same core
//! beside the same flood: the part of sipguard's in-place figure that is
//! not sipguard's.

use std::{fs::File, os::fd::AsRawFd, thread};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use sipguard::loader::{self, KernelLog};

use crate::netns::Lab;

/// The program's name in the object (the kernel keeps its first 15 bytes).
pub const PROGRAM: &str = "sipguard_bench_empty";

/// The attached program; detached when dropped (an XDP link's fd).
pub struct PassProgram(#[allow(dead_code)] Ebpf);

/// Load the object and attach its empty program to the server's
/// interface, in native mode as the lab's sipguard runs.
pub fn attach(lab: &Lab) -> Result<PassProgram> {
    let ns = File::open(lab.server.netns_path())
        .with_context(|| format!("opening {}", lab.server.netns_path().display()))?;
    let iface = lab.iface().to_string();
    // The interface is found by name in the calling thread's network
    // namespace: attach from a thread that has entered the server's. The
    // link it makes is a file descriptor, valid from any namespace.
    thread::spawn(move || -> Result<Ebpf> {
        // SAFETY: setns on this thread only, with a namespace fd it owns.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("entering the server's namespace");
        }
        let mut ebpf = loader::load(KernelLog::Off)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("program {PROGRAM} missing from the object"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {PROGRAM}"))?;
        prog.attach(&iface, XdpMode::Driver)
            .with_context(|| format!("attaching {PROGRAM} to {iface}"))?;
        Ok(ebpf)
    })
    .join()
    .map_err(|_| anyhow!("the attaching thread panicked"))?
    .map(PassProgram)
}
