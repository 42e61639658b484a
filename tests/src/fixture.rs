//! The fixture tables' one framework, in the style of Katran's: a `Row` is
//! a named packet and the `Want`ed outcome of one run of the XDP program on
//! it: the action, the one (verdict, reason) counter and the one (verdict,
//! class) counter (or none) it moves by exactly one packet and the packet's
//! length, and the signature hit counters it moves. Nothing else may move.
//!
//! `check` runs rows in order on one harness (they share its per-source
//! state: rate limits, bans, targets) and reports every mismatch at once.
//! Needs root, like the harness.

use std::collections::BTreeMap;

use sipguard_common::{Class, Reason, Verdict};

use crate::harness::{Delta, Harness, XDP_DROP, XDP_PASS};

/// A harness with `Config::default()`, or a panic saying why not.
pub fn harness() -> Harness {
    Harness::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// What one run of the program did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub action: u32,
    pub delta: Delta,
    /// Signature hit counters that moved, by token.
    pub hits: BTreeMap<String, u64>,
}

/// Run the program once on `pkt`; what it returned and every counter it
/// moved.
pub fn run(h: &Harness, pkt: &[u8]) -> Seen {
    let before = h.snapshot().unwrap_or_else(|e| panic!("snapshot: {e:#}"));
    let action = h.run(pkt).unwrap_or_else(|e| panic!("{e:#}"));
    let after = h.snapshot().unwrap_or_else(|e| panic!("snapshot: {e:#}"));
    let hits = after
        .signatures
        .iter()
        .filter_map(|(token, n)| {
            let was = before.signatures.get(token).copied().unwrap_or(0);
            (*n != was).then(|| (token.clone(), n - was))
        })
        .collect();
    Seen {
        action,
        delta: Delta::between(&before, &after),
        hits,
    }
}

/// A row's expectation: action, (verdict, reason, class) and signature hits
/// (none unless `hits` says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub action: u32,
    pub verdict: Verdict,
    pub reason: Reason,
    pub class: Option<Class>,
    pub hits: BTreeMap<String, u64>,
}

impl Want {
    pub fn new(action: u32, verdict: Verdict, reason: Reason, class: Option<Class>) -> Self {
        Self {
            action,
            verdict,
            reason,
            class,
            hits: BTreeMap::new(),
        }
    }

    /// SIP traffic that passes every rule.
    pub fn accepted(class: Class) -> Self {
        Self::new(XDP_PASS, Verdict::Pass, Reason::Accepted, Some(class))
    }

    /// A packet passed before classification (not to a SIP port, a later
    /// fragment, malformed headers).
    pub fn unclassified(reason: Reason) -> Self {
        Self::new(XDP_PASS, Verdict::Pass, reason, None)
    }

    /// A packet a rule drops (enforcing).
    pub fn dropped(reason: Reason, class: Class) -> Self {
        Self::new(XDP_DROP, Verdict::Drop, reason, Some(class))
    }

    /// A packet a rule would drop, passed because enforcement is off.
    pub fn would_drop(reason: Reason, class: Class) -> Self {
        Self::new(XDP_PASS, Verdict::WouldDrop, reason, Some(class))
    }

    /// Dropped when enforcing, would drop when not.
    pub fn denied(enforce: bool, reason: Reason, class: Class) -> Self {
        if enforce {
            Self::dropped(reason, class)
        } else {
            Self::would_drop(reason, class)
        }
    }

    /// The signature hit counters the packet moves, by token.
    pub fn hits(mut self, pairs: &[(&str, u64)]) -> Self {
        self.hits = pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        self
    }

    /// Compare with what a run of `pkt` did; a description of the mismatch
    /// if any.
    pub fn check(&self, pkt: &[u8], seen: &Seen) -> Option<String> {
        let delta = Delta::one(self.verdict, self.reason, self.class, pkt.len());
        (seen.action != self.action || seen.delta != delta || seen.hits != self.hits).then(|| {
            format!(
                "action {} (want {}), hits {:?} (want {:?})\n      got  {:?}\n      want {:?}",
                seen.action, self.action, seen.hits, self.hits, seen.delta, delta
            )
        })
    }
}

/// One case of a table: a named packet and what the program must do.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub packet: Vec<u8>,
    pub want: Want,
}

impl Row {
    pub fn new(name: impl Into<String>, packet: Vec<u8>, want: Want) -> Self {
        Self {
            name: name.into(),
            packet,
            want,
        }
    }

    /// `Want::accepted`.
    pub fn accepted(name: impl Into<String>, packet: Vec<u8>, class: Class) -> Self {
        Self::new(name, packet, Want::accepted(class))
    }

    /// `Want::unclassified`.
    pub fn unclassified(name: impl Into<String>, packet: Vec<u8>, reason: Reason) -> Self {
        Self::new(name, packet, Want::unclassified(reason))
    }

    /// `Want::dropped`.
    pub fn dropped(name: impl Into<String>, packet: Vec<u8>, reason: Reason, class: Class) -> Self {
        Self::new(name, packet, Want::dropped(reason, class))
    }

    /// `Want::would_drop`.
    pub fn would_drop(
        name: impl Into<String>,
        packet: Vec<u8>,
        reason: Reason,
        class: Class,
    ) -> Self {
        Self::new(name, packet, Want::would_drop(reason, class))
    }
}

/// Run `rows` in order on `h`; the mismatches, one entry each.
pub fn failures(h: &Harness, rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| {
            let seen = run(h, &row.packet);
            let why = row.want.check(&row.packet, &seen)?;
            Some(format!(
                "  {} ({} bytes): {why}",
                row.name,
                row.packet.len()
            ))
        })
        .collect()
}

/// Run `rows` in order on `h` and report every mismatch at once.
pub fn check(h: &Harness, rows: &[Row]) {
    let failures = failures(h, rows);
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
