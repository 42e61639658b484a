//! Map names, sizes and pin layout shared by the program and the controller.

/// Version of the pinned-map layout. Bump it whenever a key or value type
/// changes, so a new controller never misreads maps pinned by an old one.
pub const LAYOUT_VERSION: u32 = 4;

/// bpffs mount point and the directory under it that sipguard owns.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "/sys/fs/bpf/sipguard";

/// `EMPTY_LISTS` bits, set while that list is known to be empty: the
/// allowlist and the blocklist.
pub const LIST_ALLOW: u32 = 1 << 0;
pub const LIST_BLOCK: u32 = 1 << 1;

/// An allowlist value with this bit is a hole, not an entry: IPv4 sources
/// are keyed as ::ffff:a.b.c.d, so an IPv6 prefix covering ::ffff:0:0/96
/// (`::/0`, say) would also match every IPv4 source. While one does, the
/// controller keeps a hole at ::ffff:0:0/96, the longest match for IPv4
/// sources that no IPv4 entry covers. (Blocklist holes are entries that
/// expired at `BLOCK_HOLE_EXPIRY`, which the program already ignores.)
pub const ALLOW_HOLE: u32 = 1 << 0;
/// The expiry that marks a blocklist hole (see `ALLOW_HOLE`): long past.
pub const BLOCK_HOLE_EXPIRY: u64 = 1;

/// Trusted sources. LRU: losing a trust entry only sends that source back to
/// the shared budgets until its next 2xx; trust is never a reason to drop.
pub const TRUSTED_MAX: u32 = 64 * 1024;

/// Allowlist capacity: trunks, peers and the operator's own networks.
pub const ALLOW_MAX: u32 = 16 * 1024;
/// Blocklist capacity: room for large feeds (APIBAN, fail2ban exports).
pub const BLOCK_MAX: u32 = 256 * 1024;
/// Slots of each list the controller keeps free for the list's hole at
/// ::ffff:0:0/96 (`ALLOW_HOLE`, `BLOCK_HOLE_EXPIRY`), so a full list can
/// still be mended: the operator's entries get `*_MAX - LIST_RESERVED`.
pub const LIST_RESERVED: u32 = 1;
/// Concurrent dynamic bans. A plain hash, not LRU: a flood of new sources must
/// never push out a ban. When full, new bans fail and are counted.
pub const BANS_MAX: u32 = 64 * 1024;
/// The share of the ban table (in quarters) that bans on one packet's
/// scanner signature may hold at once. Any off-path forger can send such a
/// packet with any source, so without a share a forged sweep of the address
/// space would fill the table and leave no room to ban a real flood.
pub const SCAN_BAN_SHARE_QUARTERS: u64 = 3;
/// Sources with rate state. LRU: under a spoofed-source flood the oldest
/// state is recycled, which only resets that source's buckets.
pub const SRC_STATE_MAX: u32 = 256 * 1024;
/// First fragments remembered so that their later fragments pass (LRU: a
/// datagram's fragments arrive within moments of each other).
pub const FRAGS_MAX: u32 = 64 * 1024;
/// Ban event ring buffer size in bytes (power of two, page multiple).
pub const BAN_EVENTS_BYTES: u32 = 256 * 1024;

/// Counters about the tables themselves, `TABLE_STATS` indexes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStat {
    /// A new source got rate state (an LRU insert; may evict an old one).
    SrcStateNew = 0,
    /// A new source could not get rate state (insert failed).
    SrcStateFull = 1,
    /// The program banned a source.
    BanAdded = 2,
    /// A ban could not be stored: the ban table is full.
    BanTableFull = 3,
    /// The program found an expired ban and removed it.
    BanExpired = 4,
    /// A ban event was lost: the ring buffer was full.
    BanEventLost = 5,
    /// A server response to a SIP port's client was read (TC egress).
    ResponseSeen = 6,
    /// A client earned or renewed trust (2xx to REGISTER/INVITE).
    TrustEarned = 7,
    /// An authentication failure answer was counted against a client.
    AuthFailure = 8,
    /// A trusted source skipped the global budget.
    TrustedPass = 9,
    /// A client earned trust while banned on evidence a forger can produce
    /// (not a manual ban): the ban was lifted.
    BanLifted = 10,
    /// A banned source's REGISTER was let through on probation (one per
    /// `PROBATION` interval), so a client whose address a forger got
    /// banned can register, earn trust and lift the ban.
    ProbationPass = 11,
    /// A scanner packet was dropped without banning its source: scanner
    /// bans already hold their share of the ban table (`SCAN_BAN_SHARE`).
    ScannerBanNoRoom = 12,
}

impl TableStat {
    pub const ALL: [TableStat; 13] = [
        TableStat::SrcStateNew,
        TableStat::SrcStateFull,
        TableStat::BanAdded,
        TableStat::BanTableFull,
        TableStat::BanExpired,
        TableStat::BanEventLost,
        TableStat::ResponseSeen,
        TableStat::TrustEarned,
        TableStat::AuthFailure,
        TableStat::TrustedPass,
        TableStat::BanLifted,
        TableStat::ProbationPass,
        TableStat::ScannerBanNoRoom,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            TableStat::SrcStateNew => "src_state_new",
            TableStat::SrcStateFull => "src_state_full",
            TableStat::BanAdded => "ban_added",
            TableStat::BanTableFull => "ban_table_full",
            TableStat::BanExpired => "ban_expired",
            TableStat::BanEventLost => "ban_event_lost",
            TableStat::ResponseSeen => "response_seen",
            TableStat::TrustEarned => "trust_earned",
            TableStat::AuthFailure => "auth_failure",
            TableStat::TrustedPass => "trusted_pass",
            TableStat::BanLifted => "ban_lifted",
            TableStat::ProbationPass => "probation_pass",
            TableStat::ScannerBanNoRoom => "scanner_ban_no_room",
        }
    }
}

pub const TABLE_STAT_SLOTS: u32 = 16;

/// Name of the XDP program attached to the interface.
pub const PROG_XDP: &str = "sipguard_xdp";
/// The second-stage program (header scan), reached by tail call.
pub const PROG_SIP: &str = "sipguard_sip";
/// The TC egress program reading the server's responses, and its second
/// stage (reached by tail call).
pub const PROG_EGRESS: &str = "sipguard_egress";
pub const PROG_RESP: &str = "sipguard_resp";
/// An empty XDP program, timed by the benchmark as the test-run floor.
pub const PROG_BENCH_EMPTY: &str = "sipguard_bench_empty";
/// Reads both clocks into `CLOCK_SAMPLE`; run only to calibrate `CLOCK`.
pub const PROG_CLOCK: &str = "sipguard_clock";
/// Tail-call table and the slots `PROG_SIP` and `PROG_RESP` sit in.
pub const PROG_SLOTS: u32 = 2;
pub const PROG_SLOT_SIP: u32 = 0;
pub const PROG_SLOT_RESP: u32 = 0;

/// `SIP_PORTS` is indexed directly by destination port.
pub const SIP_PORTS_LEN: u32 = 65536;
/// `SIP_PORTS` value bits: which transports are SIP on that port.
pub const PORT_UDP: u8 = 1 << 0;
pub const PORT_TCP: u8 = 1 << 1;

/// Number of verdicts (pass, drop, would-drop) the stats maps are split by.
pub const VERDICT_SLOTS: u32 = 3;

/// Packets and bytes, one per CPU in the per-CPU stats maps; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] plain integers, no padding: any bytes are a value.
unsafe impl aya::Pod for Counter {}
