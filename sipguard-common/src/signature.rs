//! Scanner signatures: tokens of header values matched in the kernel.
//!
//! A signature is one token: a run of `[A-Za-z0-9_-]` compared without case
//! (`friendly-scanner`, `sipvicious`, `nm`). The program splits the
//! User-Agent, From, To and Contact values and the Request-URI into such
//! tokens, hashes each with FNV-1a over its lower-cased bytes, tests a bloom
//! filter, and only on a bloom hit looks the hash up in `SIGNATURES`.

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

/// The bloom filter (one array entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bloom {
    pub words: [u64; BLOOM_WORDS],
}

impl Default for Bloom {
    fn default() -> Self {
        Bloom {
            words: [0; BLOOM_WORDS],
        }
    }
}

impl Bloom {
    pub fn insert(&mut self, h: u64) {
        let (a, b) = bloom_bits(h);
        self.words[(a / 64) as usize] |= 1 << (a % 64);
        self.words[(b / 64) as usize] |= 1 << (b % 64);
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for SigEntry {}
    unsafe impl aya::Pod for Bloom {}
}
