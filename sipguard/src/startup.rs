//! Stop requests while the agent starts. SIGTERM and SIGINT are held
//! (blocked, so they stay pending) from the first line of `sipguard run`
//! until it has attached: a signal then neither kills a half-made agent nor
//! interrupts the verifier (which gives up on a pending signal and has to
//! start over). The agent asks `stop_requested` between its steps and
//! cleans up at once; released, a pending signal reaches the agent's
//! handlers and stops it like one that comes later.

use std::mem::MaybeUninit;

pub struct HeldSignals {
    set: libc::sigset_t,
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only sets bits.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

impl HeldSignals {
    /// Hold SIGTERM and SIGINT for the calling thread. Call it on the thread
    /// that starts the agent, before any other thread is spawned (new
    /// threads inherit the mask, so none of them takes the signal either).
    pub fn hold() -> HeldSignals {
        let set = stop_signals();
        // SAFETY: a valid set; the old mask is not needed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        HeldSignals { set }
    }

    /// Whether SIGTERM or SIGINT arrived since `hold`.
    pub fn stop_requested(&self) -> bool {
        // SAFETY: sigpending fills the set it is given.
        unsafe {
            let mut pending = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(pending.as_mut_ptr());
            let mut pending = pending.assume_init();
            if libc::sigpending(&mut pending) != 0 {
                return false;
            }
            libc::sigismember(&pending, libc::SIGTERM) == 1
                || libc::sigismember(&pending, libc::SIGINT) == 1
        }
    }
}

impl Drop for HeldSignals {
    /// Let the signals through: one that is pending is delivered now.
    fn drop(&mut self) {
        // SAFETY: a valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}
