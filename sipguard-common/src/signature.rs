//! Scanner signatures: tokens of header values matched in the kernel.
//!
//! A signature is one token: a run of `[A-Za-z0-9_-]` compared without case
//! (`friendly-scanner`, `sipvicious`, `nm`). The program splits the
//! User-Agent, From, To and Contact values and the Request-URI into such
//! tokens, hashes each with FNV-1a over its lower-cased bytes, tests a bloom
//! filter, and only on a bloom hit looks the hash up in the index's slot
//! table (`SigIndex`: both in one array value, so a hit costs array reads,
//! not a hash-map lookup). `SIGNATURES` (hash -> entry) stays the
//! controller's record; the index is rebuilt from it on every change.

/// Most signatures the maps hold (also the size of the hit counters).
pub const SIGNATURES_MAX: u32 = 1024;
/// Longest signature token, in bytes.
pub const SIG_NAME_MAX: usize = 32;
/// Bloom filter size in 64-bit words (4096 bits): with a few hundred
/// signatures and two bits per token, legitimate tokens almost never reach the
/// hash lookup.
pub const BLOOM_WORDS: usize = 64;
pub const BLOOM_BITS: u64 = (BLOOM_WORDS * 64) as u64;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Drop the packet and ban the source: high-confidence attack tools.
pub const TIER_BAN: u32 = 1;
/// Count only: products attackers also imitate; the operator decides.
pub const TIER_COUNT: u32 = 2;

/// Whether `c` belongs to a token.
#[inline(always)]
pub const fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// FNV-1a of a token, lower-cased.
pub const fn token_hash(token: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < token.len() {
        h = (h ^ token[i].to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// The two bloom bits of a token hash.
#[inline(always)]
pub const fn bloom_bits(h: u64) -> (u64, u64) {
    (h % BLOOM_BITS, (h >> 32) % BLOOM_BITS)
}

/// `SIGNATURES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigEntry {
    /// Index into `SIG_HITS`.
    pub id: u32,
    /// `TIER_BAN` or `TIER_COUNT`.
    pub tier: u32,
}

/// Slots of the index's hash table: eight per possible signature, so
/// linear probes stay short.
pub const SIG_SLOTS: usize = 8 * SIGNATURES_MAX as usize;
/// Slots a lookup probes: the controller places every signature within
/// them (or refuses the change), and the program stops at an empty slot.
pub const SIG_PROBES: usize = 8;

/// One slot of the index's table; `entry.tier == 0` marks it empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigSlot {
    pub hash: u64,
    pub entry: SigEntry,
}

/// Probe `probe` of hash `h`: the top bits of a Fibonacci multiply, which
/// draw on all of `h` (FNV-1a's middle bits barely differ between tokens
/// that differ in their last letters, `sip-1`, `sip-2`, ...).
#[inline(always)]
pub const fn sig_slot(h: u64, probe: usize) -> usize {
    const SHIFT: u32 = 64 - SIG_SLOTS.trailing_zeros();
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> SHIFT) as usize + probe) & (SIG_SLOTS - 1)
}

/// The kernel's view of the signatures (one array entry): a bloom filter,
/// then an open-addressed table of their hashes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigIndex {
    pub bloom: [u64; BLOOM_WORDS],
    pub slots: [SigSlot; SIG_SLOTS],
}

impl SigIndex {
    /// False when the bloom filter rules `h` out (most tokens of legitimate
    /// traffic): two bit tests, before any slot is read.
    #[inline(always)]
    pub fn may_hold(&self, h: u64) -> bool {
        let (a, b) = bloom_bits(h);
        // The masks are no-ops (a, b < BLOOM_BITS) that bound the index for
        // the verifier.
        let hit_a = self.bloom[(a / 64) as usize & (BLOOM_WORDS - 1)] & (1 << (a % 64)) != 0;
        let hit_b = self.bloom[(b / 64) as usize & (BLOOM_WORDS - 1)] & (1 << (b % 64)) != 0;
        hit_a && hit_b
    }

    /// The entry of hash `h`: its probe run up to the first empty slot (the
    /// program's lookup; the index is in the program's map value).
    #[inline(always)]
    pub fn get(&self, h: u64) -> Option<SigEntry> {
        for p in 0..SIG_PROBES {
            let slot = &self.slots[sig_slot(h, p)];
            if slot.entry.tier == 0 {
                return None;
            }
            if slot.hash == h {
                return Some(slot.entry);
            }
        }
        None
    }
}

#[cfg(feature = "user")]
impl SigIndex {
    /// The index of `sigs` (hash, entry), or the hash of a signature that
    /// found no free slot within `SIG_PROBES` (never with the table this
    /// sparse, but refused rather than silently dropped).
    pub fn build(sigs: impl IntoIterator<Item = (u64, SigEntry)>) -> Result<Self, u64> {
        let mut idx = SigIndex {
            bloom: [0; BLOOM_WORDS],
            slots: [SigSlot::default(); SIG_SLOTS],
        };
        for (h, entry) in sigs {
            let (a, b) = bloom_bits(h);
            idx.bloom[(a / 64) as usize] |= 1 << (a % 64);
            idx.bloom[(b / 64) as usize] |= 1 << (b % 64);
            let free = (0..SIG_PROBES)
                .map(|p| sig_slot(h, p))
                .find(|&i| idx.slots[i].entry.tier == 0)
                .ok_or(h)?;
            idx.slots[free] = SigSlot { hash: h, entry };
        }
        Ok(idx)
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] plain integers and byte arrays, no padding: any
    // bytes are a value.
    unsafe impl aya::Pod for SigEntry {}
    unsafe impl aya::Pod for SigSlot {}
    unsafe impl aya::Pod for SigIndex {}
}
