//! Scanner signatures: the shipped defaults and their management in the
//! maps (`SIGNATURES` hash, the `SIG_INDEX` the program reads, `SIG_NAMES`,
//! `SIG_HITS`).

use anyhow::{Result, bail};
use serde::Serialize;
use sipguard_common::signature::{
    SIG_NAME_MAX, SIGNATURES_MAX, SigEntry, SigIndex, TIER_BAN, TIER_COUNT, is_token_byte,
    token_hash,
};

use crate::maps::Maps;

/// A default signature: the token, its tier, and where it comes from.
pub struct Shipped {
    pub token: &'static str,
    pub tier: u32,
    pub source: &'static str,
}

/// Shipped signatures. Ban tier: tools that exist only to attack; count tier:
/// real products attackers also imitate, counted so the operator can decide.
pub const DEFAULTS: &[Shipped] = &[
    Shipped {
        token: "friendly-scanner",
        tier: TIER_BAN,
        source: "SIPVicious svmap/svwar/svcrack User-Agent (sipvicious/libs/svhelper.py); Suricata ET SCAN Sipvicious",
    },
    Shipped {
        token: "sipvicious",
        tier: TIER_BAN,
        source: "SIPVicious From display name (svmap --fromname default); Suricata ET SCAN Sipvicious",
    },
    Shipped {
        token: "sipcli",
        tier: TIER_BAN,
        source: "sipcli User-Agent; Kamailio secfilter examples, Suricata ET SCAN",
    },
    Shipped {
        token: "sundayddr",
        tier: TIER_BAN,
        source: "sundayddr scanner User-Agent; Suricata ET SCAN",
    },
    Shipped {
        token: "vaxsipuseragent",
        tier: TIER_BAN,
        source: "VaxSIPUserAgent (toll-fraud bots); Kamailio secfilter examples",
    },
    Shipped {
        token: "iwar",
        tier: TIER_BAN,
        source: "iWar war dialer User-Agent; Suricata ET SCAN",
    },
    Shipped {
        token: "sip-scan",
        tier: TIER_BAN,
        source: "sip-scan User-Agent; Suricata ET SCAN",
    },
    Shipped {
        token: "sivus",
        tier: TIER_BAN,
        source: "SIVuS scanner User-Agent; Suricata ET SCAN",
    },
    Shipped {
        token: "smap",
        tier: TIER_BAN,
        source: "smap fingerprinting tool User-Agent; Suricata ET SCAN",
    },
    Shipped {
        token: "sipsak",
        tier: TIER_BAN,
        source: "sipsak User-Agent (used by scanners); Kamailio secfilter examples",
    },
    Shipped {
        token: "pplsip",
        tier: TIER_BAN,
        source: "pplsip scanner User-Agent; Kamailio secfilter examples",
    },
    Shipped {
        token: "nmap",
        tier: TIER_BAN,
        source: "Nmap NSE sip scripts User-Agent (\"Nmap NSE\")",
    },
    Shipped {
        token: "nm",
        tier: TIER_COUNT,
        source: "Nmap NSE probe user (sip:nm@); count only: short token, could be a real user or host label",
    },
    Shipped {
        token: "cisco-sipgateway",
        tier: TIER_COUNT,
        source: "Cisco-SIPGateway User-Agent, a real product that toll-fraud bots imitate",
    },
    Shipped {
        token: "zoiper",
        tier: TIER_COUNT,
        source: "Zoiper softphone User-Agent, real and widely imitated",
    },
];

/// One signature as `signatures list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Row {
    pub token: String,
    pub tier: &'static str,
    pub id: u32,
    pub hits: u64,
}

pub fn tier_name(tier: u32) -> &'static str {
    match tier {
        TIER_BAN => "ban",
        TIER_COUNT => "count",
        _ => "unknown",
    }
}

pub fn parse_tier(s: &str) -> Result<u32> {
    match s {
        "ban" => Ok(TIER_BAN),
        "count" => Ok(TIER_COUNT),
        _ => bail!("tier '{s}' is not ban or count"),
    }
}

/// A signature token must be what the kernel tokenizer produces: letters,
/// digits, `-` and `_`, compared without case.
pub fn validate(token: &str) -> Result<String> {
    if token.is_empty() || token.len() > SIG_NAME_MAX {
        bail!("signature '{token}' must be 1 to {SIG_NAME_MAX} bytes long");
    }
    if let Some(c) = token.bytes().find(|c| !is_token_byte(*c)) {
        bail!(
            "signature '{token}' contains '{}': a signature is one token of letters, digits, '-' \
             and '_' (header values are split at every other byte, so a multi-word value \
             matches on any of its words, e.g. 'VaxSIPUserAgent/3.1' on 'vaxsipuseragent')",
            c as char
        );
    }
    Ok(token.to_ascii_lowercase())
}

fn name_bytes(token: &str) -> [u8; SIG_NAME_MAX] {
    let mut b = [0u8; SIG_NAME_MAX];
    b[..token.len()].copy_from_slice(token.as_bytes());
    b
}

fn name_of(b: &[u8; SIG_NAME_MAX]) -> String {
    let len = b.iter().position(|c| *c == 0).unwrap_or(SIG_NAME_MAX);
    String::from_utf8_lossy(&b[..len]).into_owned()
}

impl Maps {
    /// Every signature with its hits, by id.
    pub fn signatures(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for kv in self.signatures.iter() {
            let (_, e) = kv?;
            let name = self.sig_names.get(&e.id, 0)?;
            let hits: u64 = self.sig_hits.get(&e.id, 0)?.iter().sum();
            rows.push(Row {
                token: name_of(&name),
                tier: tier_name(e.tier),
                id: e.id,
                hits,
            });
        }
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Add (or re-tier) signatures, then rebuild the index.
    pub fn signatures_add(&mut self, tokens: &[String], tier: u32) -> Result<usize> {
        let tokens: Vec<String> = tokens.iter().map(|t| validate(t)).collect::<Result<_>>()?;
        let mut used: Vec<bool> = vec![false; SIGNATURES_MAX as usize];
        for kv in self.signatures.iter() {
            used[kv?.1.id as usize] = true;
        }
        for token in &tokens {
            let h = token_hash(token.as_bytes());
            let id = match self.signatures.get(&h, 0) {
                Ok(e) => e.id,
                Err(_) => {
                    let Some(free) = used.iter().position(|u| !u) else {
                        bail!("the signature table is full ({SIGNATURES_MAX}); delete some first");
                    };
                    used[free] = true;
                    // A reused id must not inherit the deleted one's hits.
                    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
                    self.sig_hits.set(
                        free as u32,
                        aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?,
                        0,
                    )?;
                    free as u32
                }
            };
            self.sig_names.set(id, name_bytes(token), 0)?;
            self.signatures.insert(h, SigEntry { id, tier }, 0)?;
        }
        self.rebuild_index()?;
        Ok(tokens.len())
    }

    /// Remove signatures; returns how many were present.
    pub fn signatures_del(&mut self, tokens: &[String]) -> Result<usize> {
        let mut removed = 0;
        for token in tokens {
            let token = validate(token)?;
            let h = token_hash(token.as_bytes());
            if let Ok(e) = self.signatures.get(&h, 0) {
                self.signatures.remove(&h)?;
                self.sig_names.set(e.id, [0u8; SIG_NAME_MAX], 0)?;
                removed += 1;
            }
        }
        self.rebuild_index()?;
        Ok(removed)
    }

    /// Load the shipped defaults (those not already present).
    pub fn signatures_defaults(&mut self) -> Result<usize> {
        for tier in [TIER_BAN, TIER_COUNT] {
            let tokens: Vec<String> = DEFAULTS
                .iter()
                .filter(|d| d.tier == tier)
                .map(|d| d.token.to_string())
                .collect();
            self.signatures_add(&tokens, tier)?;
        }
        Ok(DEFAULTS.len())
    }

    /// Rebuild `SIG_INDEX` from `SIGNATURES`, written in one map update:
    /// the kernel copies it over the old value in place, so a packet scanned
    /// during that copy may see a mix of the two (one token judged by the
    /// old set), never a broken table.
    fn rebuild_index(&mut self) -> Result<()> {
        let sigs = self
            .signatures
            .iter()
            .collect::<Result<Vec<(u64, SigEntry)>, _>>()?;
        let idx = Box::new(SigIndex::build(sigs).map_err(|h| {
            anyhow::anyhow!(
                "no free slot for signature hash {h:#x} in the index (a hash collision run); \
                 delete a signature and retry"
            )
        })?);
        self.sig_index.set(0, idx, 0)?;
        Ok(())
    }
}

impl Maps {
    /// What a ban's `detail` field means for its reason: the limit's bucket,
    /// or for scanner bans the signature token.
    pub fn ban_detail(&self, reason: u32, detail: u32) -> String {
        use sipguard_common::{
            policy::Bucket,
            source::{BAN_CONFIRMED, BanReason},
        };
        let detail = detail & !BAN_CONFIRMED;
        if reason == BanReason::Scanner as u32 {
            return self
                .sig_names
                .get(&detail, 0)
                .map(|n| name_of(&n))
                .unwrap_or_else(|_| format!("signature #{detail}"));
        }
        if reason != BanReason::Flood as u32 && reason != BanReason::Enumeration as u32 {
            return "-".to_string();
        }
        Bucket::ALL
            .get(detail as usize)
            .map_or("-", |b| b.name())
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32) -> SigEntry {
        SigEntry { id, tier: TIER_BAN }
    }

    /// A full table (SIGNATURES_MAX tokens) is indexed, every token is
    /// found with its entry, and other tokens are not.
    #[test]
    fn index_finds_every_signature_of_a_full_table() {
        let sigs: Vec<(u64, SigEntry)> = (0..SIGNATURES_MAX)
            .map(|i| (token_hash(format!("sig-{i}").as_bytes()), entry(i)))
            .collect();
        let idx = SigIndex::build(sigs.iter().copied()).expect("a full table fits");
        for (h, e) in &sigs {
            assert_eq!(idx.get(*h), Some(*e));
        }
        for i in 0..1000 {
            let other = token_hash(format!("user-{i}").as_bytes());
            assert_eq!(idx.get(other), None, "user-{i}");
        }
        for d in DEFAULTS {
            assert_eq!(idx.get(token_hash(d.token.as_bytes())), None, "{}", d.token);
        }
    }

    /// More hashes on one probe run than `SIG_PROBES` are refused, not
    /// silently left out.
    #[test]
    fn index_refuses_a_probe_run_it_cannot_hold() {
        use sipguard_common::signature::{SIG_PROBES, sig_slot};
        // Hashes whose first probes are taken: the first SIG_PROBES + 1 of
        // them that share a home slot.
        let home = sig_slot(1, 0);
        let run: Vec<u64> = (1u64..)
            .filter(|h| sig_slot(*h, 0) == home)
            .take(SIG_PROBES + 1)
            .collect();
        let sigs = run.iter().enumerate().map(|(i, h)| (*h, entry(i as u32)));
        assert_eq!(SigIndex::build(sigs), Err(run[SIG_PROBES]));
    }

    #[test]
    fn defaults_are_valid_tokens() {
        for d in DEFAULTS {
            assert_eq!(validate(d.token).unwrap(), d.token, "{}", d.token);
        }
    }

    #[test]
    fn multi_word_signatures_are_refused_with_advice() {
        let e = validate("Nmap NSE").unwrap_err().to_string();
        assert!(e.contains("one token"), "{e}");
        assert_eq!(validate("Friendly-Scanner").unwrap(), "friendly-scanner");
    }
}
