//! The policy record the controller writes and the XDP program reads on
//! every packet (one entry in the `POLICY` array map).

/// `Policy::flags` bit: drop what the rules say to drop. When clear the
/// program runs in monitor mode and counts `WouldDrop` instead.
pub const POLICY_ENFORCE: u32 = 1 << 0;
/// Scan request headers for scanner signatures.
pub const POLICY_SCAN: u32 = 1 << 1;
/// Drop malformed SIP on SIP ports: not SIP, missing mandatory headers,
/// truncated, oversized.
pub const POLICY_MALFORMED: u32 = 1 << 2;
/// Earned trust: sources the server answered with a 2xx to REGISTER or
/// INVITE skip the global budgets (see `Policy::trusted`).
pub const POLICY_TRUST: u32 = 1 << 3;

/// Which rate-limit bucket a request is charged to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Invite = 0,
    Register = 1,
    /// Every other SIP request and responses.
    Other = 2,
    /// TCP connection attempts (SYN without ACK) to a SIP port.
    Syn = 3,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Invite, Bucket::Register, Bucket::Other, Bucket::Syn];

    pub const fn name(self) -> &'static str {
        match self {
            Bucket::Invite => "invite",
            Bucket::Register => "register",
            Bucket::Other => "other",
            Bucket::Syn => "syn",
        }
    }
}

pub const BUCKETS: usize = 4;

/// A rate limit in GCRA form (the "virtual scheduling" token bucket): one
/// packet is allowed every `interval_ns`, with bursts of up to
/// `burst_ns / interval_ns` packets. `interval_ns == 0` means unlimited.
/// GCRA needs one timestamp per bucket and no division on the hot path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub interval_ns: u64,
    pub burst_ns: u64,
}

impl Limit {
    pub const UNLIMITED: Limit = Limit {
        interval_ns: 0,
        burst_ns: 0,
    };

    /// `rate` packets per `per_ns` nanoseconds, bursts of `burst` packets.
    pub const fn new(rate: u64, per_ns: u64, burst: u64) -> Limit {
        if rate == 0 {
            return Limit::UNLIMITED;
        }
        let interval_ns = per_ns / rate;
        let interval_ns = if interval_ns == 0 { 1 } else { interval_ns };
        let burst = if burst == 0 { 1 } else { burst };
        Limit {
            interval_ns,
            burst_ns: interval_ns * burst,
        }
    }

    pub const fn unlimited(&self) -> bool {
        self.interval_ns == 0
    }

    /// Packets per second this limit allows (rounded).
    pub const fn rate_per_sec(&self) -> f64 {
        if self.interval_ns == 0 {
            0.0
        } else {
            1e9 / self.interval_ns as f64
        }
    }

    pub const fn burst(&self) -> u64 {
        match self.burst_ns.checked_div(self.interval_ns) {
            Some(b) => b,
            None => 0,
        }
    }

    /// Packets a CPU takes from this global bucket at a time (see
    /// `GlobalShare`): a `LEASE_BURST_SHARE`th of the burst, 1 to
    /// `LEASE_MAX`. Every CPU together may run ahead of the budget by the
    /// leases they hold: at most `LEASE_MAX` packets each.
    pub const fn lease(&self) -> u8 {
        let n = self.burst() / LEASE_BURST_SHARE;
        if n < 1 {
            1
        } else if n > LEASE_MAX {
            LEASE_MAX as u8
        } else {
            n as u8
        }
    }
}

/// Largest `Limit::lease`.
pub const LEASE_MAX: u64 = 16;
/// `Limit::lease` is this fraction of the burst: with up to this many CPUs
/// holding a lease, together they never hold more than the burst.
pub const LEASE_BURST_SHARE: u64 = 64;

/// One CPU's share of a global bucket (`GLOBAL_SHARE`, per CPU): packets it
/// took from the shared bucket at once and has not spent yet, and when the
/// shared bucket will next have room. A flood over the budget is then
/// decided on per-CPU memory, and the shared bucket's cache line is written
/// once per lease instead of once per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalShare {
    /// Packets leased and not spent.
    pub tokens: u64,
    /// The lease is void from then (a lease is good for one burst window).
    pub tokens_until_ns: u64,
    /// The shared bucket has no room before then: deny without reading it.
    pub dry_until_ns: u64,
    /// The limit the lease and `dry_until_ns` were taken under: a live
    /// change of the limit voids both.
    pub interval_ns: u64,
    pub burst_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `POLICY_*` bits.
    pub flags: u32,
    /// Sources reaching this many rate violations within `ban_window_ns`
    /// are banned for `ban_for_ns`. 0 disables automatic bans.
    pub ban_after: u32,
    pub ban_window_ns: u64,
    pub ban_for_ns: u64,
    /// IPv6 sources are grouped (bans, per-source limits) by this mask, the
    /// configured prefix length (default /64) as a 16-byte mask: one subscriber
    /// usually owns a whole /64, so per-address state would be trivial to evade.
    pub v6_mask: [u8; 16],
    /// Per-source limits, indexed by `Bucket`.
    pub source: [Limit; BUCKETS],
    /// Limits on all non-allowlisted sources together, indexed by `Bucket`.
    pub global: [Limit; BUCKETS],
    /// Distinct request targets (Request-URI + To) a source may ask for
    /// within `enum_window_ns` before it is banned; 0 disables the rule.
    pub enum_after: u32,
    /// Largest UDP SIP payload accepted when `POLICY_MALFORMED` is set.
    pub max_message_bytes: u32,
    pub enum_window_ns: u64,
    /// How long a 2xx to REGISTER/INVITE keeps a client trusted.
    pub trust_for_ns: u64,
    /// Per-source limits for trusted sources (they skip the global ones).
    pub trusted: [Limit; BUCKETS],
    /// 401/403/407 answers (and 404 to REGISTER) to one client within
    /// `auth_fail_window_ns` that ban it; 0 disables the rule.
    pub auth_fail_after: u32,
    /// `Limit::lease` of each `global` limit, by `Bucket` (0 reads as 1).
    pub global_lease: [u8; BUCKETS],
    pub auth_fail_window_ns: u64,
}

// `global_lease` took the place of a `u32` pad: same layout as before.
const _: () = assert!(BUCKETS == 4);
// `v6_mask_words` reads the mask as two aligned words.
const _: () = assert!(core::mem::offset_of!(Policy, v6_mask) % 8 == 0);

impl Policy {
    pub const fn enforcing(&self) -> bool {
        self.flags & POLICY_ENFORCE != 0
    }

    /// `v6_mask` as two native-endian words, to mask `SrcKey::words`.
    #[inline(always)]
    pub const fn v6_mask_words(&self) -> [u64; 2] {
        // SAFETY: 16 plain bytes at an 8-aligned offset of an 8-aligned struct.
        unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(self.v6_mask) }
    }
}

/// A 16-byte mask keeping the first `prefix` bits.
pub const fn prefix_mask(prefix: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let bits = prefix as i64 - 8 * i as i64;
        m[i] = if bits >= 8 {
            0xff
        } else if bits <= 0 {
            0
        } else {
            !(0xffu8 >> bits)
        };
        i += 1;
    }
    m
}

#[cfg(feature = "user")]
// SAFETY (both): #[repr(C)] plain integers, no padding: any bytes are a value.
unsafe impl aya::Pod for Policy {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for GlobalShare {}
