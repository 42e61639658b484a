//! `sipguard capture`: what the command asks the programs to copy
//! (`CAPTURE`, one entry) and the records they hand it (`CAPTURE_RING`).

use crate::policy::Limit;

/// Source filters a capture takes at most.
pub const CAPTURE_SOURCES: usize = 4;
/// Bytes copied from a packet's start at most (a power of two: the copy's
/// length is masked to it for the verifier, see opaque.rs).
pub const CAPTURE_SNAP_MAX: usize = 2048;
/// Size of `CAPTURE_RING`: room for about 250 records in flight.
pub const CAPTURE_RING_BYTES: u32 = 512 * 1024;

/// The capture in force. The command renews `until_ns` while it runs, so a
/// capture whose command died stops on its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConf {
    /// CLOCK_MONOTONIC ns until which packets are copied; 0: no capture.
    pub until_ns: u64,
    /// One bit per `Reason` (bit `reason`).
    pub reasons: u64,
    /// One bit per `Verdict` (bit `verdict`).
    pub verdicts: u32,
    /// Bytes copied from each packet, 1..=`CAPTURE_SNAP_MAX`.
    pub snaplen: u32,
    /// Source filters, as words like `SrcKey::words` (IPv4-mapped), each
    /// an address and a mask: the first `sources` apply; none, any source.
    pub src_addr: [[u64; 2]; CAPTURE_SOURCES],
    pub src_mask: [[u64; 2]; CAPTURE_SOURCES],
    pub sources: u32,
    pub _pad: u32,
    /// Packets copied at most, at this rate and burst (GCRA, `tat_ns`).
    pub limit: Limit,
    pub tat_ns: u64,
    /// Selected packets not copied: over `limit`, or the ring full.
    pub missed: u64,
}

/// One packet, as the program copies it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRecord {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// The frame's length on the wire, and how much of it follows.
    pub len: u32,
    pub caplen: u32,
    /// `Verdict`, `Reason`, and the `Class` (or `NO_CLASS`).
    pub verdict: u32,
    pub reason: u32,
    pub class: u32,
    pub _pad: u32,
    pub data: [u8; CAPTURE_SNAP_MAX],
}

/// `CaptureRecord::class` of a packet no class was given (not to a SIP
/// port, or decided before classification).
pub const NO_CLASS: u32 = u32::MAX;

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain integers, no padding: any bytes are a value.
unsafe impl aya::Pod for CaptureConf {}
