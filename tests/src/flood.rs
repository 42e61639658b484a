//! Tools for flood tests in a namespace lab: a counting UDP listener at the
//! server (what really reached it), bounded UDP and spoofed-source senders,
//! interface and UDP counters, and the `sipguard` control commands.
//!
//! Every sender is bounded twice, by a packet count and by a deadline, and
//! runs under `run_bounded` or as a lab process, so it is stopped by PID on
//! drop even if the test fails. Addresses stay inside 198.18.0.0/15 and
//! 2001:db8::/32: the spoofed sender draws its sources from 198.18.0.0/15
//! only, and `isolate_server` gives the server a blackhole default route so
//! nothing it might answer can leave the lab.

mod ctl;
mod listener;
mod net;
mod raw;
mod sender;

pub use ctl::{Ctl, Delta, ban_sources};
pub use listener::{Counts, Listener};
pub use net::{LinkCounters, UdpMib, isolate_server, link_counters, udp_mib};
pub use raw::{RawFlood, RawReport, RawRunning, raw_flood, spawn_raw_flood};
pub use sender::{SendReport, Stream, StreamReport, send, spawn_send};

/// The SIP port the lab's server listens on and sipguard inspects.
pub const SIP_PORT: u16 = 5060;
