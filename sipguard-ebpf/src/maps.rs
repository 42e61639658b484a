//! Every map the XDP program uses. Sizes come from `sipguard_common::maps`
//! so the controller and the program cannot disagree.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use sipguard_common::{
    Counter, Policy,
    capture::{CAPTURE_RING_BYTES, CaptureConf},
    class::CLASS_SLOTS,
    clock::{Clock, ClockSample},
    maps::{
        ALLOW_MAX, BAN_EVENTS_BYTES, BANS_MAX, BLOCK_MAX, FRAGS_MAX, PROG_SLOTS, SIP_PORTS_LEN,
        SRC_STATE_MAX, TABLE_STAT_SLOTS, TRUSTED_MAX, VERDICT_SLOTS,
    },
    policy::{BUCKETS, GlobalShare},
    signature::{SIG_NAME_MAX, SIGNATURES_MAX, SigEntry, SigIndex},
    source::{BAN_SLOT_COUNT, Ban, BanSlot, BlockEntry, SrcKey, SrcState, Trust, TrustBits},
    verdict::REASON_SLOTS,
};

/// Destination port -> `PORT_UDP | PORT_TCP` bits. An array indexed by port
/// costs one bounds check instead of a hash; 64 Ki one-byte entries.
#[map]
pub static SIP_PORTS: Array<u8> = Array::with_max_entries(SIP_PORTS_LEN, 0);

/// The single live policy record (index 0), rewritten by the controller.
#[map]
pub static POLICY: Array<Policy> = Array::with_max_entries(1, 0);

/// Allowlist: CIDR (prefix over the IPv4-mapped address) -> flags
/// (`ALLOW_HOLE`). Matched on the full source address before anything else.
#[map]
pub static ALLOW: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(ALLOW_MAX, 0);

/// Static blocklist: CIDR -> expiry. Written only by the controller.
#[map]
pub static BLOCK: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(BLOCK_MAX, 0);

/// Dynamic bans by grouped source. A plain hash so a flood of new sources
/// cannot evict bans; the program deletes expired ones when it meets them and
/// the agent sweeps the rest.
#[map]
pub static BANS: HashMap<SrcKey, Ban> = HashMap::with_max_entries(BANS_MAX, 0);

/// The bans' fast path, slot `SrcKey::ban_slot` (see `BanSlot`): most
/// packets, banned or not, are decided by one array read instead of a
/// `BANS` lookup. Written with `BANS` by the program and the controller.
#[map]
pub static BAN_SLOTS: Array<BanSlot> = Array::with_max_entries(BAN_SLOT_COUNT, 0);

/// Per-source rate state by grouped source (LRU: see `SrcState`).
#[map]
pub static SRC_STATE: LruHashMap<SrcKey, SrcState> = LruHashMap::with_max_entries(SRC_STATE_MAX, 0);

/// GCRA theoretical arrival time of each global bucket (index `Bucket`),
/// shared by all CPUs: read, and advanced by atomic adds (limit.rs).
#[map]
pub static GLOBAL_STATE: Array<u64> = Array::with_max_entries(BUCKETS as u32, 0);

/// Each CPU's share of the global buckets (index `Bucket`; see
/// `GlobalShare`). Not pinned: a new program starts without leases, which
/// costs the budget at most one lease per CPU.
#[map]
pub static GLOBAL_SHARE: PerCpuArray<GlobalShare> =
    PerCpuArray::with_max_entries(BUCKETS as u32, 0);

/// One `BanEvent` per ban the program sets, read and logged by the agent.
#[map]
pub static BAN_EVENTS: RingBuf = RingBuf::with_byte_size(BAN_EVENTS_BYTES, 0);

/// The capture in force (`CaptureConf`), written by `sipguard capture`;
/// `until_ns` 0 when none runs, and then the only field read.
#[map]
pub static CAPTURE: Array<CaptureConf> = Array::with_max_entries(1, 0);

/// The packets a capture selected (`CaptureRecord`), read by `sipguard
/// capture`.
#[map]
pub static CAPTURE_RING: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);

/// Packets and bytes per (verdict, reason): index `verdict * REASON_SLOTS +
/// reason`. Per-CPU so the hot path never contends; userspace sums CPUs.
#[map]
pub static REASON_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_SLOTS * REASON_SLOTS, 0);

/// Packets and bytes per (verdict, class) for traffic to SIP ports: index
/// `verdict * CLASS_SLOTS + class`.
#[map]
pub static CLASS_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_SLOTS * CLASS_SLOTS, 0);

/// Events about the tables (`TableStat` indexes): inserts, full tables,
/// expiries, lost events.
#[map]
pub static TABLE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TABLE_STAT_SLOTS, 0);

/// Scanner signatures: FNV-1a hash of a lower-cased token -> id and tier.
/// The controller's record (the program reads `SIG_INDEX`).
#[map]
pub static SIGNATURES: HashMap<u64, SigEntry> = HashMap::with_max_entries(SIGNATURES_MAX, 0);

/// The signatures as the program reads them (`SigIndex`: bloom filter and
/// slot table in one value), rebuilt from `SIGNATURES` by the controller on
/// every change: a token costs two bit tests, a bloom hit a few slot reads,
/// and no hash-map lookup either way.
#[map]
pub static SIG_INDEX: Array<SigIndex> = Array::with_max_entries(1, 0);

/// Signature id -> its token (NUL-padded), so any `sipguard` process can name
/// a signature from the pins. Written by the controller only.
#[map]
pub static SIG_NAMES: Array<[u8; SIG_NAME_MAX]> = Array::with_max_entries(SIGNATURES_MAX, 0);

/// Hits per signature id (per CPU; userspace sums).
#[map]
pub static SIG_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SIGNATURES_MAX, 0);

/// The message being scanned, copied once from the packet (see scan.rs),
/// per CPU. Scratch only: not pinned, each program load has its own.
#[map]
pub static SCAN_MSG: PerCpuArray<crate::scratch::Msg> = PerCpuArray::with_max_entries(1, 0);

/// The header scan's state and results (`scratch::Scan`), per CPU: kept in map
/// memory so the verifier checks the scan callback once (see scan.rs).
/// Scratch only, like `SCAN_MSG`.
#[map]
pub static SCAN_STATE: PerCpuArray<crate::scratch::Scan> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call table: `PROG_SLOT_SIP` holds `sipguard_sip`, installed by the
/// controller after loading.
#[map]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// The same for the TC egress path (`PROG_SLOT_RESP` holds `sipguard_resp`):
/// a program array serves one program type only.
#[map]
pub static PROGS_TC: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// A request handed from `sipguard_xdp` to `sipguard_sip` across the tail
/// call (per CPU: the tail call runs on the same CPU, at once).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub src: SrcKey,
    pub class: u32,
    /// `Bucket` the packet is charged to.
    pub bucket: u32,
    /// Scan the headers first (a UDP request with scan rules on).
    pub deep: u32,
    pub fragmented: u32,
    pub _pad: u32,
    pub payload_off: u64,
    pub payload_len: u64,
    /// The clock (clock.rs), read once per packet and reused by the stage.
    pub now: u64,
}

/// A bit per list (`LIST_ALLOW`, `LIST_BLOCK`), set when the controller
/// knows that list's trie is empty, so the program skips its lookup (an LPM
/// lookup is a function call, the dearest step of a banned packet's path).
/// One word, so a packet reads both flags with one lookup. A fresh map
/// reads 0, "look": the skip is only ever an optimisation.
#[map]
pub static EMPTY_LISTS: Array<u32> = Array::with_max_entries(1, 0);

/// How many more scanner bans fit in their share of `BANS`
/// (`SCAN_BAN_SHARE_QUARTERS`): set by the controller from the table's fill
/// (at each config apply and sweep), decremented by each scanner ban. At 0
/// or below, a scanner packet is dropped without banning its source.
#[map]
pub static SCAN_BAN_ROOM: Array<i64> = Array::with_max_entries(1, 0);

#[map]
pub static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// The tokenizer's running state (`scratch::Tokenize`), per CPU, in map memory
/// for the same reason as `SCAN_STATE`. Scratch only, like `SCAN_MSG`.
#[map]
pub static TOKENIZE: PerCpuArray<crate::scratch::Tokenize> = PerCpuArray::with_max_entries(1, 0);

/// Trusted clients (see trust.rs), keyed like bans. LRU: an evicted entry only
/// sends that client back to the shared budgets until its next 2xx.
#[map]
pub static TRUSTED: LruHashMap<SrcKey, Trust> = LruHashMap::with_max_entries(TRUSTED_MAX, 0);

/// Trust's fast path: two bitmaps of the sources that may hold trust
/// (`TrustBits`), of which the program reads the one `TRUST_LIVE` names. A
/// clear bit lets a packet be dropped against a spent global budget without
/// a `TRUSTED` lookup (policy.rs). The egress program sets a client's bit
/// in both as it earns trust; the controller's sweep rebuilds the other one
/// from `TRUSTED` (dropping bits of trust that ran out or was withdrawn) and
/// makes it the live one, so the live bitmap is never cleared under the
/// program.
#[map]
pub static TRUST_HINTS: Array<TrustBits> = Array::with_max_entries(2, 0);

/// Which `TRUST_HINTS` bitmap the program reads (0 or 1).
#[map]
pub static TRUST_LIVE: Array<u32> = Array::with_max_entries(1, 0);

/// A response handed from `sipguard_egress` to `sipguard_resp`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingResp {
    /// The client (destination of the response), grouped like bans.
    pub client: SrcKey,
    pub status: u32,
    pub _pad: u32,
    pub payload_off: u64,
    pub payload_len: u64,
}

#[map]
pub static PENDING_RESP: PerCpuArray<PendingResp> = PerCpuArray::with_max_entries(1, 0);

/// How jiffies map onto CLOCK_MONOTONIC (see `sipguard_common::clock`),
/// written by the controller right after loading. Not pinned: each loaded
/// object calibrates its own.
#[map]
pub static CLOCK: Array<Clock> = Array::with_max_entries(1, 0);

/// One reading of both clocks by `sipguard_clock`, for the calibration.
#[map]
pub static CLOCK_SAMPLE: Array<ClockSample> = Array::with_max_entries(1, 0);

/// A fragmented datagram: its source (as in `Flow::src`) and IP
/// identification (16 bits in IPv4, 32 in the IPv6 fragment header).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragKey {
    pub src: [u64; 2],
    pub id: u32,
    pub _pad: u32,
}

/// First fragments seen and not dropped (frags.rs): a later fragment passes
/// only if its datagram's first fragment is here. LRU: a datagram's
/// fragments arrive within moments of each other. Not pinned: datagrams in
/// flight when an agent takes over lose their later fragments once.
#[map]
pub static FRAGS: LruHashMap<FragKey, u32> = LruHashMap::with_max_entries(FRAGS_MAX, 0);

/// The datagram of a first fragment handed to `sipguard_sip` (which gets
/// the grouped source only, in `PENDING`), so that a drop there forgets it.
/// Not pinned, like `FRAGS`.
#[map]
pub static FRAG_PENDING: PerCpuArray<FragKey> = PerCpuArray::with_max_entries(1, 0);
