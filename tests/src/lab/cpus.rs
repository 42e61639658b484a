//! Splitting the machine's CPUs between the attacker, the client and the
//! server (Kamailio, its backend, the agent).
//!
//! On veth the receive path of a packet (the lab's bridge, XDP, netfilter,
//! the UDP stack) runs as softirq on the core that sent it, inline. So the
//! attacker gets a core of its own, where it pays for its own packets'
//! processing: a defence that drops them more cheaply lets it send more.
//! The flood must also be steady, as a flood from another machine is: the
//! attacker runs at the highest nice priority (-20), because at nice 0 any
//! other busy process on its core opened gaps of milliseconds in the flood,
//! a shared (global) rate budget refilled in them, and legitimate INVITEs
//! passed a global limit 30-40 % of the time instead of about 1 %. The
//! client stands for another machine too (nice -20), but must not share the
//! attacker's core, or the scheduler would run it in the flood's pauses;
//! with two CPUs it shares the server's. Processes inherit the affinity and
//! the nice value of the thread that starts them, so setting them on a
//! thread sets them for what it starts.

use std::{io, mem};

use anyhow::{Result, ensure};

/// The CPUs this thread may run on.
pub fn allowed() -> Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    ensure!(rc == 0, "sched_getaffinity: {}", io::Error::last_os_error());
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Restrict the calling thread (and what it starts) to `cpus`.
pub fn pin(cpus: &[usize]) -> Result<()> {
    // SAFETY: as above; CPU_SET only writes inside the set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    ensure!(
        rc == 0,
        "sched_setaffinity({cpus:?}): {}",
        io::Error::last_os_error()
    );
    Ok(())
}

/// Who runs where, when there are at least two CPUs.
#[derive(Clone, Debug)]
pub struct Split {
    pub attacker: usize,
    /// The server's cores.
    pub server: Vec<usize>,
    /// A core of its own from three CPUs on, else the server's.
    pub client: Vec<usize>,
}

impl Split {
    pub fn new() -> Result<Option<Split>> {
        let cpus = allowed()?;
        Ok(match cpus.as_slice() {
            [attacker, server] => Some(Split {
                attacker: *attacker,
                server: vec![*server],
                client: vec![*server],
            }),
            [attacker, client, server @ ..] if !server.is_empty() => Some(Split {
                attacker: *attacker,
                server: server.to_vec(),
                client: vec![*client],
            }),
            _ => None,
        })
    }

    /// Pin the calling thread to the attacker's core, at `OUTSIDE_NICE`,
    /// until the guard drops.
    pub fn pin_attacker(&self) -> Result<Restore> {
        pin_until_drop(&[self.attacker], OUTSIDE_NICE)
    }

    /// Pin the calling thread to the client's cores, at `OUTSIDE_NICE`,
    /// until the guard drops.
    pub fn pin_client(&self) -> Result<Restore> {
        pin_until_drop(&self.client, OUTSIDE_NICE)
    }

    /// Pin the calling thread to the server's cores until the guard drops.
    pub fn pin_server(&self) -> Result<Restore> {
        pin_until_drop(&self.server, nice()?)
    }
}

/// The attacker's and the client's nice value.
const OUTSIDE_NICE: i32 = -20;

/// The calling thread's nice value.
fn nice() -> Result<i32> {
    // getpriority can return -1 legitimately: tell it from an error by errno.
    unsafe { *libc::__errno_location() = 0 };
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let err = io::Error::last_os_error();
    ensure!(
        n != -1 || err.raw_os_error() == Some(0),
        "getpriority: {err}"
    );
    Ok(n)
}

/// Set the calling thread's nice value (on Linux it is per thread).
fn set_nice(n: i32) -> Result<()> {
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, n) };
    ensure!(rc == 0, "setpriority({n}): {}", io::Error::last_os_error());
    Ok(())
}

fn pin_until_drop(cpus: &[usize], nice_value: i32) -> Result<Restore> {
    let before = Restore {
        cpus: allowed()?,
        nice: nice()?,
    };
    pin(cpus)?;
    set_nice(nice_value)?;
    Ok(before)
}

/// Gives the thread back the CPUs and the nice value it had.
pub struct Restore {
    cpus: Vec<usize>,
    nice: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = pin(&self.cpus).and_then(|()| set_nice(self.nice)) {
            eprintln!("could not restore the CPU affinity and nice value: {e:#}");
        }
    }
}
