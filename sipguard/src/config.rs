//! The TOML configuration file (`sipguard run --config FILE`) and the
//! `limits set KEY=VALUE` keys, which name the same settings.
//!
//! Every key has a default, so an empty file (or none) gives a working agent.
//! Unknown keys are refused: a typo must not silently leave a default in place.

use std::{fmt, fs, path::Path, str::FromStr, time::Duration};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sipguard_common::{
    Policy,
    maps::LIST_RESERVED,
    policy::{
        BUCKETS, Bucket, Limit, POLICY_ENFORCE, POLICY_MALFORMED, POLICY_SCAN, POLICY_TRUST,
        prefix_mask,
    },
};

use crate::tables::Tables;

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Drop what the rules say to drop. `false` is monitor mode: everything is
    /// evaluated and counted as would-drop, nothing is dropped.
    pub enforce: bool,
    /// IPv6 sources are banned and rate-limited per prefix of this length:
    /// 128 (the default) per address. Keyed narrower than a /64, bans widen
    /// by themselves: to the /64 once `WIDEN_AFTER` of its addresses are
    /// banned, to the /48 once as many of its /64s are.
    pub ipv6_prefix: u8,
    pub sip: SipPorts,
    pub limits: Limits,
    pub ban: BanConfig,
    pub scanner: ScannerConfig,
    pub malformed: MalformedConfig,
    pub trust: TrustConfig,
    pub auth_fail: AuthFailConfig,
    /// Sources that are never limited, banned or dropped (trunks, peers,
    /// your own networks). CIDR or address, IPv4 or IPv6.
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<IpNet>,
    /// Sources always dropped.
    #[serde(deserialize_with = "cidrs")]
    pub block: Vec<IpNet>,
    /// Table sizes, applied when an agent creates its maps.
    pub tables: Tables,
    /// CrowdSec: its Local API's ban decisions enforced in the blocklist.
    pub crowdsec: CrowdsecConfig,
}

/// sipguard as a CrowdSec bouncer (crowdsec.rs). Off while `url` is empty.
/// Read at start: a change takes a restart.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CrowdsecConfig {
    /// The Local API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A file holding the bouncer's API key (`cscli bouncers add NAME`).
    pub key_file: std::path::PathBuf,
    /// How often to ask for new and deleted decisions.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Decisions broader than these prefixes are refused (guards.rs).
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// The machine sipguard reports its bans as (watcher.rs); no alerts
    /// are sent while it is empty.
    pub watcher_login: String,
    /// A file holding that machine's password (`cscli machines add`).
    pub watcher_password_file: std::path::PathBuf,
}

impl Default for CrowdsecConfig {
    fn default() -> Self {
        CrowdsecConfig {
            url: String::new(),
            key_file: "/etc/sipguard/crowdsec-bouncer.key".into(),
            poll: Duration::from_secs(1),
            min_prefix_v4: crate::guards::MIN_PREFIX_V4,
            min_prefix_v6: crate::guards::MIN_PREFIX_V6,
            watcher_login: String::new(),
            watcher_password_file: "/etc/sipguard/crowdsec-watcher.password".into(),
        }
    }
}

/// Which destination ports carry SIP. Only these are inspected; all other
/// traffic passes untouched.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipPorts {
    pub udp_ports: Vec<u16>,
    pub tcp_ports: Vec<u16>,
}

/// Rate limits per source and for all sources together, per request kind.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub invite: RateLimit,
    pub register: RateLimit,
    /// Every other request (OPTIONS, SUBSCRIBE, in-dialog ACK/BYE, ...) and
    /// responses.
    pub other: RateLimit,
    /// TCP connection attempts (SYN) to SIP ports.
    pub syn: RateLimit,
    pub global: GlobalLimits,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalLimits {
    pub invite: RateLimit,
    pub register: RateLimit,
    pub other: RateLimit,
    pub syn: RateLimit,
}

/// Scanner defence: signatures in request headers, and enumeration
/// (one source asking for many distinct targets, whatever its User-Agent).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// Match User-Agent, From, To, Contact and Request-URI tokens against
    /// the signature set (`sipguard signatures`).
    pub signatures: bool,
    /// Distinct Request-URI/To targets one source may ask for within
    /// `enumeration_window` before it is banned; 0 disables the rule.
    pub enumeration_after: u32,
    #[serde(with = "humantime_serde")]
    pub enumeration_window: Duration,
}

/// Malformed SIP on SIP ports: not SIP at all, a request missing Via, From,
/// To, Call-ID or CSeq, a header section that never ends, or a datagram over
/// `max_message_bytes`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MalformedConfig {
    pub drop: bool,
    pub max_message_bytes: u32,
}

/// Earned trust: a client the server answered with a 2xx to REGISTER or
/// INVITE is trusted for `for`: it skips the global budgets and gets these
/// higher per-source limits. A spoofed source never receives the 2xx, so it
/// cannot earn trust.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    pub enabled: bool,
    #[serde(rename = "for", with = "humantime_serde")]
    pub duration: Duration,
    pub invite: RateLimit,
    pub register: RateLimit,
    pub other: RateLimit,
    pub syn: RateLimit,
}

/// Credential attacks: 401/403/407 answers (and 404 to REGISTER) to one
/// client within `window`; `after` of them ban it (0 = off). A 2xx clears
/// the count.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailConfig {
    pub after: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            enabled: true,
            // Registrations refresh every few minutes to an hour.
            duration: Duration::from_secs(3600),
            invite: RateLimit::new(50, 100),
            register: RateLimit::new(20, 50),
            other: RateLimit::new(200, 400),
            syn: RateLimit::new(20, 40),
        }
    }
}

impl Default for AuthFailConfig {
    fn default() -> Self {
        AuthFailConfig {
            // One 401 is the normal digest challenge; a mistyped password adds
            // one or two more before the 2xx clears the count.
            after: 6,
            window: Duration::from_secs(60),
        }
    }
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            signatures: true,
            // svwar/svmap ask for hundreds of targets a second; a phone
            // calling or registering to 16 different targets in 10 s is not
            // a phone.
            enumeration_after: 16,
            enumeration_window: Duration::from_secs(10),
        }
    }
}

impl Default for MalformedConfig {
    fn default() -> Self {
        MalformedConfig {
            drop: true,
            max_message_bytes: 8192,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// "20/s", "600/m", "0" (unlimited).
    pub rate: Rate,
    /// Packets allowed back to back above the rate.
    pub burst: u64,
}

/// Automatic bans for sources that keep exceeding their own limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    /// Violations (packets over the limit) that trigger a ban; 0 = never ban.
    pub after: u32,
    /// Window the violations are counted in.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a ban lasts.
    #[serde(rename = "for", with = "humantime_serde")]
    pub duration: Duration,
}

/// A rate: packets per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub packets: u64,
    pub per_ns: u64,
}

impl Rate {
    pub const fn per_sec(packets: u64) -> Self {
        Rate {
            packets,
            per_ns: NS_PER_SEC,
        }
    }
}

impl FromStr for Rate {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate {
                packets: 0,
                per_ns: NS_PER_SEC,
            });
        }
        let Some((n, unit)) = s.split_once('/') else {
            bail!(
                "'{s}' is not a rate: write packets/unit, e.g. 20/s, 600/m, 5000/h, or 0 for unlimited"
            );
        };
        let packets: u64 = n
            .trim()
            .parse()
            .with_context(|| format!("'{n}' in rate '{s}' is not a whole number"))?;
        let per_ns = match unit.trim() {
            "s" | "sec" => NS_PER_SEC,
            "m" | "min" => 60 * NS_PER_SEC,
            "h" | "hour" => 3600 * NS_PER_SEC,
            u => bail!("unknown unit '{u}' in rate '{s}': use s, m or h"),
        };
        Ok(Rate { packets, per_ns })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.packets == 0 {
            return write!(f, "0");
        }
        let unit = match self.per_ns {
            NS_PER_SEC => "s",
            x if x == 60 * NS_PER_SEC => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.packets)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Limits {
    fn by_name(&mut self, name: &str) -> Option<&mut RateLimit> {
        Some(match name {
            "invite" => &mut self.invite,
            "register" => &mut self.register,
            "other" => &mut self.other,
            "global.invite" => &mut self.global.invite,
            "global.register" => &mut self.global.register,
            "global.other" => &mut self.global.other,
            "syn" => &mut self.syn,
            "global.syn" => &mut self.global.syn,
            _ => return None,
        })
    }
}

impl TrustConfig {
    fn by_name(&mut self, name: &str) -> Option<&mut RateLimit> {
        Some(match name {
            "invite" => &mut self.invite,
            "register" => &mut self.register,
            "other" => &mut self.other,
            "syn" => &mut self.syn,
            _ => return None,
        })
    }
}

impl RateLimit {
    /// Read a kernel limit back; the unit is the smallest of s, m, h that
    /// expresses the rate in whole packets.
    pub fn from_limit(l: &Limit) -> Self {
        if l.unlimited() {
            return RateLimit {
                rate: Rate::per_sec(0),
                burst: 0,
            };
        }
        let mut rate = Rate::per_sec(0);
        for per_ns in [NS_PER_SEC, 60 * NS_PER_SEC, 3600 * NS_PER_SEC] {
            let packets = (per_ns as f64 / l.interval_ns as f64).round() as u64;
            rate = Rate { packets, per_ns };
            if packets > 0 && per_ns / packets == l.interval_ns {
                break;
            }
        }
        RateLimit {
            rate,
            burst: l.burst(),
        }
    }

    const fn new(per_sec: u64, burst: u64) -> Self {
        RateLimit {
            rate: Rate::per_sec(per_sec),
            burst,
        }
    }

    pub fn to_limit(self) -> Limit {
        Limit::new(self.rate.packets, self.rate.per_ns, self.burst)
    }
}

/// Defaults, chosen to never touch a normal endpoint while stopping floods;
/// README explains them. Trunks and peers that legitimately send more must be
/// allowlisted.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A phone or small PBX places a few calls a second at most.
            invite: RateLimit::new(10, 20),
            // A UA registers every few minutes; a PBX re-registering many
            // lines after a restart bursts.
            register: RateLimit::new(5, 20),
            // OPTIONS keepalives, SUBSCRIBE/NOTIFY, in-dialog requests and
            // responses to the server's own requests.
            other: RateLimit::new(50, 100),
            // A UA opens one TCP/TLS connection and keeps it.
            syn: RateLimit::new(5, 20),
            global: GlobalLimits::default(),
        }
    }
}

/// Ceilings on all non-allowlisted sources together: set them to what your
/// SIP server can handle. These defaults fit a mid-size Kamailio/SBC.
impl Default for GlobalLimits {
    fn default() -> Self {
        GlobalLimits {
            invite: RateLimit::new(1000, 2000),
            register: RateLimit::new(2000, 4000),
            other: RateLimit::new(10000, 20000),
            syn: RateLimit::new(1000, 2000),
        }
    }
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            after: 20,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(600),
        }
    }
}

impl Default for SipPorts {
    fn default() -> Self {
        Self {
            udp_ports: vec![5060],
            tcp_ports: vec![5060, 5061],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enforce: true,
            ipv6_prefix: 128,
            sip: SipPorts::default(),
            limits: Limits::default(),
            ban: BanConfig::default(),
            scanner: ScannerConfig::default(),
            malformed: MalformedConfig::default(),
            trust: TrustConfig::default(),
            auth_fail: AuthFailConfig::default(),
            allow: Vec::new(),
            block: Vec::new(),
            tables: Tables::default(),
            crowdsec: CrowdsecConfig::default(),
        }
    }
}

mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("'{s}' is not a duration ({e}); e.g. 30s, 10m, 1h"))
        })
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read as _;
        let mut text = String::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("reading config file {}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            bail!(
                "config file {} is larger than {} MiB: not a sipguard config (put long lists in \
                 a list file for `allow add -f` / `block add -f`)",
                path.display(),
                MAX_CONFIG_BYTES >> 20
            );
        }
        Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn validate(&self) -> Result<()> {
        for (key, ports) in [
            ("sip.udp_ports", &self.sip.udp_ports),
            ("sip.tcp_ports", &self.sip.tcp_ports),
        ] {
            if ports.contains(&0) {
                bail!("{key}: port 0 is not a valid SIP port");
            }
        }
        self.tables.validate()?;
        for (key, list, max) in [
            ("allow", &self.allow, self.tables.allow),
            ("block", &self.block, self.tables.block),
        ] {
            let room = (max - LIST_RESERVED) as usize;
            if list.len() > room {
                bail!(
                    "{key}: {} entries, more than the {room} the {key}list holds (raise \
                     tables.{key})",
                    list.len()
                );
            }
        }
        if self.sip.udp_ports.is_empty() && self.sip.tcp_ports.is_empty() {
            bail!("sip.udp_ports and sip.tcp_ports are both empty: sipguard would inspect nothing");
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            bail!(
                "ipv6_prefix: {} is not a prefix length between 1 and 128",
                self.ipv6_prefix
            );
        }
        for (key, l) in self.limit_entries() {
            if l.rate.packets > 0 && l.burst == 0 {
                bail!("{key}.burst: must be at least 1 when {key}.rate is set");
            }
            if l.rate.packets > 0 && l.rate.per_ns / l.rate.packets == 0 {
                bail!("{key}.rate: {} is above one packet per nanosecond", l.rate);
            }
            // The kernel holds the burst as burst × interval in ns.
            let interval = l.rate.per_ns.checked_div(l.rate.packets).unwrap_or(0);
            if l.burst > MAX_BURST
                || interval
                    .checked_mul(l.burst)
                    .is_none_or(|ns| ns > MAX_SPAN.as_nanos() as u64)
            {
                bail!(
                    "{key}.burst: {} is out of range: between 1 and {MAX_BURST}, and at {} \
                     no more than {} of credit",
                    l.burst,
                    l.rate,
                    humantime::format_duration(MAX_SPAN)
                );
            }
        }
        for (key, d, zero_ok) in [
            ("ban.for", self.ban.duration, self.ban.after == 0),
            ("ban.window", self.ban.window, self.ban.after == 0),
            (
                "scanner.enumeration_window",
                self.scanner.enumeration_window,
                self.scanner.enumeration_after == 0,
            ),
            ("trust.for", self.trust.duration, !self.trust.enabled),
            (
                "auth_fail.window",
                self.auth_fail.window,
                self.auth_fail.after == 0,
            ),
        ] {
            check_span(key, d, zero_ok)?;
        }
        if self.scanner.enumeration_after == 1 {
            bail!(
                "scanner.enumeration_after: 1 would ban every source at its first request; use \
                 0 (off) or a count from 2 to 128"
            );
        }
        if self.scanner.enumeration_after > 128 {
            bail!(
                "scanner.enumeration_after: {} is above 128, the most distinct targets the \
                 kernel counts",
                self.scanner.enumeration_after
            );
        }
        if self.auth_fail.after > 0 && self.auth_fail.window.is_zero() {
            bail!("auth_fail.window: must be longer than 0s when auth_fail.after is set");
        }
        if self.trust.enabled && self.trust.duration.is_zero() {
            bail!("trust.for: must be longer than 0s when trust is enabled");
        }
        if self.ban.after > 0 && self.ban.window.is_zero() {
            bail!("ban.window: must be longer than 0s when ban.after is set");
        }
        Ok(())
    }

    fn limit_entries(&self) -> [(&'static str, RateLimit); 12] {
        let l = &self.limits;
        let t = &self.trust;
        [
            ("trust.invite", t.invite),
            ("trust.register", t.register),
            ("trust.other", t.other),
            ("trust.syn", t.syn),
            ("invite", l.invite),
            ("register", l.register),
            ("other", l.other),
            ("syn", l.syn),
            ("global.invite", l.global.invite),
            ("global.register", l.global.register),
            ("global.other", l.global.other),
            ("global.syn", l.global.syn),
        ]
    }

    /// The kernel's policy record for this configuration.
    pub fn policy(&self) -> Policy {
        let l = &self.limits;
        let mut source = [Limit::UNLIMITED; BUCKETS];
        let mut global = [Limit::UNLIMITED; BUCKETS];
        for (b, src, glob) in [
            (Bucket::Invite, l.invite, l.global.invite),
            (Bucket::Register, l.register, l.global.register),
            (Bucket::Other, l.other, l.global.other),
            (Bucket::Syn, l.syn, l.global.syn),
        ] {
            source[b as usize] = src.to_limit();
            global[b as usize] = glob.to_limit();
        }
        let mut flags = 0;
        for (on, bit) in [
            (self.enforce, POLICY_ENFORCE),
            (self.scanner.signatures, POLICY_SCAN),
            (self.malformed.drop, POLICY_MALFORMED),
            (self.trust.enabled, POLICY_TRUST),
        ] {
            if on {
                flags |= bit;
            }
        }
        Policy {
            flags,
            ban_after: self.ban.after,
            ban_window_ns: self.ban.window.as_nanos() as u64,
            ban_for_ns: self.ban.duration.as_nanos() as u64,
            v6_mask: prefix_mask(u32::from(self.ipv6_prefix)),
            source,
            global,
            enum_after: self.scanner.enumeration_after,
            max_message_bytes: self.malformed.max_message_bytes,
            enum_window_ns: self.scanner.enumeration_window.as_nanos() as u64,
            trust_for_ns: self.trust.duration.as_nanos() as u64,
            trusted: {
                let t = &self.trust;
                let mut lim = [Limit::UNLIMITED; BUCKETS];
                for (b, rl) in [
                    (Bucket::Invite, t.invite),
                    (Bucket::Register, t.register),
                    (Bucket::Other, t.other),
                    (Bucket::Syn, t.syn),
                ] {
                    lim[b as usize] = rl.to_limit();
                }
                lim
            },
            auth_fail_after: self.auth_fail.after,
            global_lease: global.map(|g| g.lease()),
            auth_fail_window_ns: self.auth_fail.window.as_nanos() as u64,
        }
    }

    /// The policy settings (limits, bans, IPv6 grouping, enforcement) as the
    /// kernel holds them; other fields keep their defaults.
    pub fn from_policy(p: &Policy) -> Self {
        let rl = |l: &Limit| RateLimit::from_limit(l);
        let (s, g) = (&p.source, &p.global);
        Config {
            enforce: p.enforcing(),
            ipv6_prefix: p.v6_mask.iter().map(|b| b.count_ones() as u8).sum(),
            limits: Limits {
                invite: rl(&s[Bucket::Invite as usize]),
                register: rl(&s[Bucket::Register as usize]),
                other: rl(&s[Bucket::Other as usize]),
                syn: rl(&s[Bucket::Syn as usize]),
                global: GlobalLimits {
                    invite: rl(&g[Bucket::Invite as usize]),
                    register: rl(&g[Bucket::Register as usize]),
                    other: rl(&g[Bucket::Other as usize]),
                    syn: rl(&g[Bucket::Syn as usize]),
                },
            },
            ban: BanConfig {
                after: p.ban_after,
                window: Duration::from_nanos(p.ban_window_ns),
                duration: Duration::from_nanos(p.ban_for_ns),
            },
            scanner: ScannerConfig {
                signatures: p.flags & POLICY_SCAN != 0,
                enumeration_after: p.enum_after,
                enumeration_window: Duration::from_nanos(p.enum_window_ns),
            },
            malformed: MalformedConfig {
                drop: p.flags & POLICY_MALFORMED != 0,
                max_message_bytes: p.max_message_bytes,
            },
            trust: TrustConfig {
                enabled: p.flags & POLICY_TRUST != 0,
                duration: Duration::from_nanos(p.trust_for_ns),
                invite: rl(&p.trusted[Bucket::Invite as usize]),
                register: rl(&p.trusted[Bucket::Register as usize]),
                other: rl(&p.trusted[Bucket::Other as usize]),
                syn: rl(&p.trusted[Bucket::Syn as usize]),
            },
            auth_fail: AuthFailConfig {
                after: p.auth_fail_after,
                window: Duration::from_nanos(p.auth_fail_window_ns),
            },
            ..Config::default()
        }
    }

    /// Apply one `KEY=VALUE` setting (the keys of `sipguard limits set`).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let Some((key, value)) = assignment.split_once('=') else {
            bail!(
                "'{assignment}' is not KEY=VALUE (e.g. invite.rate=20/s); keys: {}",
                KEYS.join(", ")
            );
        };
        let (key, value) = (key.trim(), value.trim());
        // Keys are the config file's dotted paths (`limits.invite.rate`,
        // `ipv6_prefix`); `limits.` may be left out, and the older spelling
        // `ipv6.prefix` is still understood.
        let key = key.strip_prefix("limits.").unwrap_or(key);
        let key = if key == "ipv6.prefix" {
            "ipv6_prefix"
        } else {
            key
        };
        match key {
            "ban.after" => self.ban.after = parse_num(key, value)?,
            "ban.window" => self.ban.window = parse_duration(key, value)?,
            "ban.for" => self.ban.duration = parse_duration(key, value)?,
            "ipv6_prefix" => self.ipv6_prefix = parse_num(key, value)?,
            "enforce" => self.enforce = parse_switch(key, value)?,
            "scanner.signatures" => self.scanner.signatures = parse_switch(key, value)?,
            "scanner.enumeration_after" => self.scanner.enumeration_after = parse_num(key, value)?,
            "scanner.enumeration_window" => {
                self.scanner.enumeration_window = parse_duration(key, value)?
            }
            "malformed.drop" => self.malformed.drop = parse_switch(key, value)?,
            "trust.enabled" => self.trust.enabled = parse_switch(key, value)?,
            "trust.for" => self.trust.duration = parse_duration(key, value)?,
            "auth_fail.after" => self.auth_fail.after = parse_num(key, value)?,
            "auth_fail.window" => self.auth_fail.window = parse_duration(key, value)?,
            _ if key.starts_with("tables.") => bail!(
                "{key}: table sizes apply when the agent creates its maps: set [tables] in the \
                 config file, then `sipguard detach` and start the agent again"
            ),
            "malformed.max_message_bytes" => {
                self.malformed.max_message_bytes = parse_num(key, value)?
            }
            _ => {
                let unknown = || anyhow::anyhow!("unknown key '{key}'; keys: {}", KEYS.join(", "));
                let (name, field) = key.rsplit_once('.').ok_or_else(unknown)?;
                let rl = match name.strip_prefix("trust.") {
                    Some(bucket) => self.trust.by_name(bucket),
                    None => self.limits.by_name(name),
                }
                .ok_or_else(unknown)?;
                match field {
                    "rate" => rl.rate = value.parse().with_context(|| key.to_string())?,
                    "burst" => rl.burst = parse_num(key, value)?,
                    _ => return Err(unknown()),
                }
            }
        }
        self.validate()
    }
}

/// Keys `limits set` accepts: the config file's, the rate limits without
/// their `limits.` table.
pub const KEYS: [&str; 38] = [
    "trust.enabled",
    "trust.for",
    "trust.invite.rate",
    "trust.invite.burst",
    "trust.register.rate",
    "trust.register.burst",
    "trust.other.rate",
    "trust.other.burst",
    "trust.syn.rate",
    "trust.syn.burst",
    "auth_fail.after",
    "auth_fail.window",
    "invite.rate",
    "invite.burst",
    "register.rate",
    "register.burst",
    "other.rate",
    "other.burst",
    "syn.rate",
    "syn.burst",
    "global.invite.rate",
    "global.invite.burst",
    "global.register.rate",
    "global.register.burst",
    "global.other.rate",
    "global.other.burst",
    "global.syn.rate",
    "global.syn.burst",
    "ban.after",
    "ban.window",
    "ban.for",
    "ipv6_prefix",
    "enforce",
    "scanner.signatures",
    "scanner.enumeration_after",
    "scanner.enumeration_window",
    "malformed.drop",
    "malformed.max_message_bytes",
];

fn parse_switch(key: &str, value: &str) -> Result<bool> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => bail!("{key}: '{value}' is not on or off"),
    }
}

fn parse_num<T: FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{key}: '{value}' is not a whole number"))
}

/// The largest config file read: a config is a page of settings; a
/// device or a runaway file is refused before it fills memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// `allow`/`block` entries: CIDRs or bare addresses, as the CLI takes them.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items: Vec<String> = Deserialize::deserialize(d)?;
    items
        .iter()
        .map(|s| crate::addr::parse_cidr(s).map_err(|e| serde::de::Error::custom(format!("{e:#}"))))
        .collect()
}

/// The longest duration any setting takes (a ban, a window, trust): a
/// year. Nanoseconds from now then never overflow, and a typo such as
/// `ban.for = "18446744074s"` is refused instead of wrapping.
pub const MAX_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest burst a limit takes.
pub const MAX_BURST: u64 = 1_000_000_000;

/// `d` is within 1ns..=MAX_SPAN (0 too when `zero_ok`: the rule is off).
fn check_span(key: &str, d: Duration, zero_ok: bool) -> Result<()> {
    if d > MAX_SPAN {
        bail!(
            "{key}: {} is longer than {}, the longest a setting takes",
            humantime::format_duration(d),
            humantime::format_duration(MAX_SPAN)
        );
    }
    if d.is_zero() && !zero_ok {
        bail!("{key}: must be longer than 0s (0s would switch the rule off without saying so)");
    }
    Ok(())
}

/// `--for` of `sipguard bans add`: 1s to a year.
pub fn parse_ban_for(value: &str) -> Result<Duration> {
    let d = parse_duration("--for", value)?;
    if d < Duration::from_secs(1) {
        bail!("--for: {value} bans for nothing; give at least 1s");
    }
    check_span("--for", d, false)?;
    Ok(d)
}

fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value)
        .with_context(|| format!("{key}: '{value}' is not a duration (e.g. 30s, 10m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_enforcing_defaults() {
        let cfg = Config::from_toml("").unwrap();
        assert_eq!(cfg, Config::default());
        assert!(cfg.policy().enforcing());
    }

    #[test]
    fn full_file_parses() {
        let cfg = Config::from_toml(
            r#"
            enforce = false
            ipv6_prefix = 56
            allow = ["198.18.1.0/24", "2001:db8:1::/48"]
            block = ["198.19.0.0/16"]
            [sip]
            udp_ports = [5060, 5080]
            [limits]
            invite = { rate = "20/s", burst = 40 }
            [limits.global]
            invite = { rate = "600/m", burst = 10 }
            [ban]
            after = 5
            window = "30s"
            for = "1h"
            "#,
        )
        .unwrap();
        assert!(!cfg.enforce);
        assert_eq!(cfg.limits.invite.rate, Rate::per_sec(20));
        let p = cfg.policy();
        assert_eq!(p.source[Bucket::Invite as usize].interval_ns, 50_000_000);
        assert_eq!(p.source[Bucket::Invite as usize].burst(), 40);
        assert_eq!(p.global[Bucket::Invite as usize].interval_ns, 100_000_000);
        assert_eq!(p.ban_for_ns, 3600 * NS_PER_SEC);
        assert_eq!(p.v6_mask[6], 0xff);
        assert_eq!(p.v6_mask[7], 0);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = Config::from_toml("[limits]\ninvte = { rate = \"1/s\", burst = 1 }").unwrap_err();
        assert!(format!("{e:#}").contains("invte"), "{e:#}");
        let e = Config::from_toml("[limits]\ninvite = { rate = \"fast\", burst = 1 }").unwrap_err();
        assert!(format!("{e:#}").contains("not a rate"), "{e:#}");
        let e = Config::from_toml("[ban]\nfor = \"forever\"").unwrap_err();
        assert!(format!("{e:#}").contains("not a duration"), "{e:#}");
        let e = Config::from_toml("[sip]\nudp_ports = [0]").unwrap_err();
        assert!(format!("{e:#}").contains("sip.udp_ports"), "{e:#}");
    }

    #[test]
    fn list_entries_take_bare_addresses_and_huge_files_are_refused() {
        let cfg = Config::from_toml(
            "allow = [\"198.18.240.5\", \"2001:db8::/32\"]\nblock = [\"198.19.0.1\"]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["198.18.240.5/32", "2001:db8::/32"]
        );
        assert_eq!(cfg.block[0].to_string(), "198.19.0.1/32");
        let err = Config::from_toml("allow = [\"nonsense\"]").unwrap_err();
        assert!(format!("{err:#}").contains("'nonsense'"), "{err:#}");
        let err = Config::load(Path::new("/dev/zero")).unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    }

    #[test]
    fn lists_larger_than_their_tables_are_refused() {
        let allow: Vec<String> = (0..20_000u32)
            .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0xc612_0000 + i)))
            .collect();
        let text = format!("allow = [{}]\n", allow.join(", "));
        let err = Config::from_toml(&text).expect_err("20 000 allow entries");
        assert!(
            format!("{err:#}").contains("20000 entries, more than the 16383 the allowlist holds"),
            "{err:#}"
        );
    }

    #[test]
    fn table_sizes_are_checked_and_not_set_live() {
        let cfg = Config::from_toml("[tables]\nblock = 1048576\nallow = 1024\n").unwrap();
        assert_eq!((cfg.tables.block, cfg.tables.allow), (1 << 20, 1024));
        for (text, want) in [
            (
                "[tables]\nbans = 100\n",
                "tables.bans: 100 is not between 1024 and",
            ),
            (
                "[tables]\ntrusted = 4294967295\n",
                "tables.trusted: 4294967295 is not",
            ),
            ("[tables]\nallow = 1024\nallow_v6 = 3\n", "unknown field"),
        ] {
            let err = Config::from_toml(text).expect_err(text);
            assert!(format!("{err:#}").contains(want), "{text}: {err:#}");
        }
        let allow: Vec<String> = (0..1100u32)
            .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0xc612_0000 + i)))
            .collect();
        let text = format!("allow = [{}]\n[tables]\nallow = 1024\n", allow.join(", "));
        let err = Config::from_toml(&text).expect_err("1100 entries in 1024");
        assert!(format!("{err:#}").contains("raise tables.allow"), "{err:#}");
        let err = Config::default().set("tables.block=1048576").unwrap_err();
        assert!(format!("{err:#}").contains("sipguard detach"), "{err:#}");
    }

    #[test]
    fn numbers_and_durations_out_of_range_are_refused_with_the_range() {
        for (set, want) in [
            ("invite.burst=184467440738", "between 1 and"),
            ("ban.for=18446744074s", "longer than"),
            ("ban.for=0s", "longer than 0s"),
            ("scanner.enumeration_window=0s", "longer than 0s"),
            ("scanner.enumeration_after=1", "first request"),
            ("trust.for=0s", "longer than 0s"),
            ("auth_fail.window=400d", "longer than"),
        ] {
            let mut cfg = Config::default();
            let err = cfg.set(set).expect_err(set);
            assert!(format!("{err:#}").contains(want), "{set}: {err:#}");
        }
        let mut cfg = Config::default();
        cfg.set("ban.after=0").unwrap();
        cfg.set("ban.for=0s")
            .expect("ban.for=0s is fine with bans off");
        assert!(parse_ban_for("0s").is_err());
        assert!(parse_ban_for("500ms").is_err());
        assert!(parse_ban_for("400d").is_err());
        assert_eq!(parse_ban_for("10m").unwrap(), Duration::from_secs(600));
    }

    #[test]
    fn policy_reads_back_as_the_same_settings() {
        let mut cfg = Config::default();
        cfg.set("invite.rate=600/m").unwrap();
        cfg.set("register.rate=7/h").unwrap();
        cfg.set("ipv6_prefix=56").unwrap();
        let back = Config::from_policy(&cfg.policy());
        assert_eq!(back.limits.invite.rate, Rate::per_sec(10));
        assert_eq!(back.limits.register.rate.to_string(), "7/h");
        assert_eq!(back.limits.global, cfg.limits.global);
        assert_eq!(back.ipv6_prefix, 56);
        assert_eq!(back.ban, cfg.ban);
    }

    /// `limits set` takes the config file's keys, with or without the
    /// `limits.` table, and the older `ipv6.prefix`.
    #[test]
    fn set_takes_the_config_files_keys() {
        let file: Config = toml::from_str(
            "ipv6_prefix = 64\n[limits]\ninvite = { rate = \"600/m\", burst = 7 }\n\
             [limits.global]\nregister = { rate = \"9/s\", burst = 3 }\n",
        )
        .unwrap();
        file.validate().unwrap();
        let mut set = Config::default();
        for kv in [
            "ipv6_prefix=64",
            "limits.invite.rate=600/m",
            "invite.burst=7",
            "limits.global.register.rate=9/s",
            "global.register.burst=3",
        ] {
            set.set(kv).unwrap_or_else(|e| panic!("{kv}: {e:#}"));
        }
        assert_eq!(set, file);
        let mut old = Config::default();
        old.set("ipv6.prefix=64").unwrap();
        assert_eq!(old.ipv6_prefix, 64);
    }

    #[test]
    fn set_changes_one_setting_and_validates() {
        let mut cfg = Config::default();
        cfg.set("invite.rate=20/s").unwrap();
        cfg.set("global.register.burst=7").unwrap();
        cfg.set("ban.for=10m").unwrap();
        assert_eq!(cfg.limits.invite.rate, Rate::per_sec(20));
        assert_eq!(cfg.limits.global.register.burst, 7);
        assert_eq!(cfg.ban.duration, Duration::from_secs(600));
        assert!(cfg.set("invite.speed=3").is_err());
        assert!(cfg.set("invite.burst=0").is_err());
        assert!(cfg.set("nonsense").is_err());
    }
}
