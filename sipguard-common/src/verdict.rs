//! Why the XDP program let a packet through or dropped it.
//!
//! Every exit of the program records exactly one (verdict, reason) pair, so the
//! counters always add up to the packets the interface received.

/// What the program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
    /// Monitor mode: a rule matched and would have dropped the packet, but
    /// enforcement is off so it was passed.
    WouldDrop = 2,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
        }
    }
}

/// The rule or parse outcome that decided a packet's fate.
///
/// Part of the shared map layout: append before the end, never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6, not UDP/TCP, or not to a SIP port: never inspected.
    NotSipPort = 0,
    /// A non-first IP fragment of a datagram whose first fragment passed:
    /// it carries no transport header to judge, so only the lists and bans
    /// apply to it.
    Fragment = 1,
    /// Headers shorter than they claim (truncated frame, bad IHL, an IPv6
    /// extension header running past the frame): left for the kernel stack
    /// to discard.
    Malformed = 2,
    /// SIP traffic that passed every rule.
    Accepted = 3,
    /// Source in the allowlist: passed without any other check.
    Allowlisted = 4,
    /// Source in the static blocklist.
    Blocklisted = 5,
    /// Source under a dynamic ban (set by the rate limits).
    Banned = 6,
    /// Over the source's own rate for this method.
    RateSource = 7,
    /// Over the global (all sources together) rate for this method.
    RateGlobal = 8,
    /// A ban-tier scanner signature matched (the source is banned too).
    Scanner = 9,
    /// The source asked for too many distinct targets (extension or
    /// address enumeration); it is banned too.
    Enumeration = 10,
    /// UDP to a SIP port that is neither a SIP request nor a response.
    NotSip = 11,
    /// A complete, unfragmented request without Via, From, To, Call-ID or
    /// CSeq.
    MissingHeader = 12,
    /// An unfragmented request whose header section does not end (no empty
    /// line before the end of the datagram).
    Truncated = 13,
    /// A UDP SIP payload larger than `max_message_bytes`.
    Oversized = 14,
    /// An IPv6 extension header chain longer than the parser walks: its
    /// transport header (and port) is out of reach, and no real traffic
    /// needs such a chain. Dropped unless the source is allowlisted.
    HeaderChain = 15,
    /// A non-first IP fragment whose first fragment was not seen, or was
    /// dropped: the kernel could never complete the datagram, so it would
    /// only hold reassembly memory that legitimate fragmented requests need.
    /// Dropped unless the source is allowlisted.
    FragmentOrphan = 16,
}

impl Reason {
    pub const ALL: [Reason; 17] = [
        Reason::NotSipPort,
        Reason::Fragment,
        Reason::Malformed,
        Reason::Accepted,
        Reason::Allowlisted,
        Reason::Blocklisted,
        Reason::Banned,
        Reason::RateSource,
        Reason::RateGlobal,
        Reason::Scanner,
        Reason::Enumeration,
        Reason::NotSip,
        Reason::MissingHeader,
        Reason::Truncated,
        Reason::Oversized,
        Reason::HeaderChain,
        Reason::FragmentOrphan,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::NotSipPort => "not_sip_port",
            Reason::Fragment => "fragment",
            Reason::Malformed => "malformed_headers",
            Reason::Accepted => "accepted",
            Reason::Allowlisted => "allowlisted",
            Reason::Blocklisted => "blocklisted",
            Reason::Banned => "banned",
            Reason::RateSource => "rate_source",
            Reason::RateGlobal => "rate_global",
            Reason::Scanner => "scanner",
            Reason::Enumeration => "enumeration",
            Reason::NotSip => "not_sip",
            Reason::MissingHeader => "missing_header",
            Reason::Truncated => "truncated",
            Reason::Oversized => "oversized",
            Reason::HeaderChain => "header_chain",
            Reason::FragmentOrphan => "fragment_orphan",
        }
    }
}

/// Room reserved per verdict in the reason counter map.
pub const REASON_SLOTS: u32 = 32;
