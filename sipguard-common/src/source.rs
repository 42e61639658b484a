//! Per-source state: map keys and values for the allow/block lists (LPM tries
//! keyed by prefix length + 16-byte IPv4-mapped address), bans
//! and rate-limit buckets, and the ban events sent to userspace.

use crate::policy::BUCKETS;

/// A source address. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) so one key
/// type and one map serve both families; IPv6 keys are masked to the
/// configured grouping prefix. Aligned to 8 so the program compares and
/// hashes it as two words (its layout is 16 bytes either way).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcKey {
    pub addr: [u8; 16],
}

impl SrcKey {
    /// The key of two native-endian words (the inverse of `words`).
    #[inline(always)]
    pub const fn from_words(w: [u64; 2]) -> Self {
        // SAFETY: 16 plain bytes either way.
        Self {
            addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(w) },
        }
    }

    /// The key as two native-endian words.
    #[inline(always)]
    pub const fn words(&self) -> [u64; 2] {
        // SAFETY: 16 plain bytes, read as two u64 from an 8-aligned struct.
        unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(self.addr) }
    }

    /// Equality word by word (`==` on the bytes may become a `memcmp` call,
    /// which BPF does not have).
    #[inline(always)]
    pub const fn same(&self, other: &SrcKey) -> bool {
        let (a, b) = (self.words(), other.words());
        a[0] == b[0] && a[1] == b[1]
    }

    /// The key of a group ban on the IPv6 /`bits` (64 or 48) holding the
    /// address whose first word is `first`: the prefix, and a marker for
    /// the width in the second word (where an address has its interface
    /// ID), so a /48 and the /64 with the same leading bits differ.
    #[inline(always)]
    pub const fn v6_group(first: u64, bits: u32) -> Self {
        // The first word is little-endian: its low `bits / 8` bytes are
        // the prefix.
        let keep = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Self::from_words([first & keep, GROUP_MARK | bits as u64])
    }

    /// The width of a group ban's key (64 or 48), `None` for an address.
    pub const fn group_bits(&self) -> Option<u32> {
        let [_, b] = self.words();
        if b & !0xff == GROUP_MARK && (b & 0xff == 64 || b & 0xff == 48) {
            Some((b & 0xff) as u32)
        } else {
            None
        }
    }

    /// This key's slot in `BAN_SLOTS`: a multiplicative hash of both words,
    /// the same in the program and the controller.
    #[inline(always)]
    pub const fn ban_slot(&self) -> u32 {
        let [a, b] = self.words();
        let h = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - BAN_SLOT_BITS)) as u32
    }

    /// This key's bit in a trust bitmap (`TrustBits`): the same hash, more
    /// of its bits.
    #[inline(always)]
    pub const fn trust_bit(&self) -> u32 {
        let [a, b] = self.words();
        let h = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - TRUST_BIT_BITS)) as u32
    }
}

/// Set in `Ban::detail` when a source is caught again while banned (on
/// probation, see `policy::probation`): it is no forger's victim, so its
/// REGISTERs get no more probation.
pub const BAN_CONFIRMED: u32 = 1 << 31;

/// The second word of a group key, above its width: an interface ID no
/// address assignment scheme hands out (all ones but the last byte).
pub const GROUP_MARK: u64 = 0xffff_ffff_ffff_ff00;
/// Distinct banned addresses of one /64 (or banned /64s of one /48) that
/// make the agent ban the whole prefix: grouping starts at the address and
/// widens only when many of a prefix misbehave.
pub const WIDEN_AFTER: usize = 8;

/// `BAN_SLOTS` has 2^BAN_SLOT_BITS slots: as many as the ban table holds
/// bans, so slots shared by two live bans stay rare.
pub const BAN_SLOT_BITS: u32 = 16;
pub const BAN_SLOT_COUNT: u32 = 1 << BAN_SLOT_BITS;

/// One slot of `BAN_SLOTS`, the bans' fast path: the program reads the slot
/// of a packet's source (an array read, inlined by the JIT) instead of
/// looking it up in `BANS` (a hash lookup, a function call). A banned source
/// that owns its slot is dropped from the slot alone, and its REGISTERs
/// are judged for probation there too; a source whose slot holds no
/// unexpired ban is known unbanned. Only a source sharing its slot with a
/// live ban of another key asks `BANS`, which stays the truth: a stale slot
/// only costs that lookup, never a wrong verdict, as long as `any_until_ns`
/// covers every ban of the slot (the controller's sweep repairs it if two
/// writers raced).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanSlot {
    /// The banned source this slot drops for.
    pub key: SrcKey,
    /// When `key`'s ban lifts; 0 when the slot drops for nobody.
    pub until_ns: u64,
    /// When the last ban of any key hashing to this slot lifts.
    pub any_until_ns: u64,
    /// Packets dropped from the slot while `key` was banned (`bans list`
    /// adds them to the ban's own count).
    pub dropped: u64,
    /// The GCRA bucket of the REGISTERs `key`'s ban lets through on
    /// probation (`policy::probation`).
    pub probation_tat_ns: u64,
    /// 1 while `key`'s ban gives its REGISTERs probation (`Ban::on_probation`).
    pub probation: u32,
    pub _pad: u32,
}

impl BanSlot {
    /// The slot holds this very ban of `key` (the one lifting at
    /// `expires_ns`), so its `dropped` belongs to that ban.
    #[inline(always)]
    pub fn holds(&self, key: &SrcKey, expires_ns: u64) -> bool {
        self.key.same(key) && self.until_ns == expires_ns
    }

    /// Record `ban` of `key`, at `now_ns`: take the slot if it is free,
    /// expired or already `key`'s (a live one made longer keeps its count
    /// and its probation bucket); always extend `any_until_ns`.
    #[inline(always)]
    pub fn record(&mut self, key: &SrcKey, ban: &Ban, now_ns: u64) {
        let mine = self.key.same(key);
        if self.until_ns <= now_ns || mine {
            // A live ban of `key` made longer keeps what it dropped.
            if !(mine && self.until_ns > now_ns) {
                self.dropped = 0;
                self.probation_tat_ns = 0;
            }
            self.key = *key;
            self.until_ns = ban.expires_ns;
            self.probation = ban.on_probation() as u32;
        }
        if self.any_until_ns < ban.expires_ns {
            self.any_until_ns = ban.expires_ns;
        }
    }
}

/// A blocklist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// CLOCK_MONOTONIC ns after which the entry no longer applies; 0 = never.
    pub expires_ns: u64,
}

/// A dynamic ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ban {
    /// CLOCK_MONOTONIC ns when the ban lifts.
    pub expires_ns: u64,
    /// When it was set.
    pub since_ns: u64,
    /// `BanReason`.
    pub reason: u32,
    /// What the reason names: the `Bucket` whose limit was exceeded (flood,
    /// enumeration), the signature id (scanner); 0 otherwise. Bit
    /// `BAN_CONFIRMED` marks a ban its source confirmed while banned.
    pub detail: u32,
    /// Packets dropped while banned (for `bans list`).
    pub dropped: u64,
}

impl Ban {
    /// Its source's REGISTERs get probation: it was set on evidence a
    /// forger can produce (any but a manual ban) and not confirmed since.
    #[inline(always)]
    pub fn on_probation(&self) -> bool {
        self.reason != BanReason::Manual as u32 && self.detail & BAN_CONFIRMED == 0
    }
}

/// Why a source was banned.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    /// Repeatedly over its per-source rate limit.
    Flood = 1,
    /// Added by an operator (`sipguard bans add`).
    Manual = 2,
    /// Sent a request carrying a ban-tier scanner signature.
    Scanner = 3,
    /// Asked for too many distinct targets (enumeration / sweep).
    Enumeration = 4,
    /// Collected too many 401/403/407 (or 404 to REGISTER) answers: password
    /// guessing or extension probing.
    AuthFailure = 5,
    /// An IPv6 prefix, after `WIDEN_AFTER` of its addresses (or /64s) were
    /// banned. Its trusted sources and REGISTERs still pass.
    Widened = 6,
}

impl BanReason {
    pub const fn name(v: u32) -> &'static str {
        match v {
            1 => "flood",
            2 => "manual",
            3 => "scanner",
            4 => "enumeration",
            5 => "auth-failure",
            6 => "widened",
            _ => "unknown",
        }
    }
}

/// Per-source rate state, in an LRU map: eviction under a spoofed-source flood
/// only forgets a source's rate history (it starts again with a full burst),
/// never a ban or a list entry, which live in maps without eviction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcState {
    /// GCRA theoretical arrival time per `Bucket`.
    pub tat_ns: [u64; BUCKETS],
    /// Start of the current violation-counting window.
    pub window_start_ns: u64,
    /// Packets seen from this source in the window (for the ban event's rate).
    pub window_pkts: u64,
    /// Rate violations in the window.
    pub violations: u32,
    pub _pad: u32,
    /// Distinct request targets seen since `targets_start_ns`, as a 128-bit
    /// linear-counting bitmap (bit = target hash mod 128).
    pub targets: [u64; 2],
    pub targets_start_ns: u64,
    /// Authentication failures the server answered this source with, since
    /// `auth_start_ns`.
    pub auth_fails: u64,
    pub auth_start_ns: u64,
    /// The source's `Trust::expires_ns`, cached here so a passed request
    /// needs no `TRUSTED` lookup: copied when the state is created, updated
    /// by the egress program with `TRUSTED`, cleared by `trusted del`.
    pub trusted_until_ns: u64,
}

/// Bits in one trust bitmap (`TrustBits`): 2^TRUST_BIT_BITS.
pub const TRUST_BIT_BITS: u32 = 17;
/// 64-bit words in one trust bitmap.
pub const TRUST_WORDS: usize = 1 << (TRUST_BIT_BITS - 6);

/// The sources that may hold trust, a bit each (`SrcKey::trust_bit`): a
/// clear bit means none of the sources hashing to it does. Small enough
/// (16 KiB) to stay in a CPU's cache under a flood, where a lookup in
/// `TRUSTED` for a new source is a cache miss.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustBits {
    pub words: [u64; TRUST_WORDS],
}

impl Default for TrustBits {
    fn default() -> Self {
        TrustBits {
            words: [0; TRUST_WORDS],
        }
    }
}

impl TrustBits {
    pub fn set(&mut self, bit: u32) {
        self.words[word_of(bit)] |= 1 << (bit & 63);
    }

    pub fn has(&self, bit: u32) -> bool {
        self.words[word_of(bit)] & (1 << (bit & 63)) != 0
    }
}

/// The word of `TrustBits` that holds `bit` (masked: a valid index whatever
/// `bit` is, which the verifier needs to see).
#[inline(always)]
pub const fn word_of(bit: u32) -> usize {
    (bit >> 6) as usize & (TRUST_WORDS - 1)
}

/// A trusted source (`TRUSTED` map), learned from the server's 2xx answers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// CLOCK_MONOTONIC ns when the trust lapses unless renewed.
    pub expires_ns: u64,
    /// When it was first earned (kept across renewals).
    pub since_ns: u64,
    /// 2xx answers that earned or renewed it.
    pub renewals: u64,
}

/// Sent on the `BAN_EVENTS` ring buffer each time the program bans a source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEvent {
    pub src: SrcKey,
    pub expires_ns: u64,
    /// Packets seen from the source during `window_ns`.
    pub window_pkts: u64,
    pub window_ns: u64,
    /// `BanReason`.
    pub reason: u32,
    /// As `Ban::detail`.
    pub detail: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] plain integers and arrays of them, no padding: any
    // bytes are a value.
    unsafe impl aya::Pod for SrcKey {}
    unsafe impl aya::Pod for BanSlot {}
    unsafe impl aya::Pod for BlockEntry {}
    unsafe impl aya::Pod for Ban {}
    unsafe impl aya::Pod for SrcState {}
    unsafe impl aya::Pod for BanEvent {}
    unsafe impl aya::Pod for Trust {}
    unsafe impl aya::Pod for TrustBits {}
}
