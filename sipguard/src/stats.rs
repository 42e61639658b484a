//! Reading the per-CPU counters and presenting them.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Result;
use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use serde::Serialize;
use sipguard_common::{
    Class, Counter, Reason, Verdict, class::CLASS_SLOTS, maps::TableStat, verdict::REASON_SLOTS,
};

use crate::{maps::Maps, tables};

/// Counters split by verdict.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ByVerdict {
    pub pass: Totals,
    pub drop: Totals,
    pub would_drop: Totals,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl ByVerdict {
    fn slot(&mut self, v: Verdict) -> &mut Totals {
        match v {
            Verdict::Pass => &mut self.pass,
            Verdict::Drop => &mut self.drop,
            Verdict::WouldDrop => &mut self.would_drop,
        }
    }

    pub fn get(&self, v: Verdict) -> Totals {
        match v {
            Verdict::Pass => self.pass,
            Verdict::Drop => self.drop,
            Verdict::WouldDrop => self.would_drop,
        }
    }

    pub fn packets(&self) -> u64 {
        self.pass.packets + self.drop.packets + self.would_drop.packets
    }
}

/// All counters at one instant, summed over CPUs. Every class and reason is
/// present (zero or not) so the JSON schema is stable for scripts.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Traffic to SIP ports by what it was classified as.
    pub classes: BTreeMap<&'static str, ByVerdict>,
    /// Every packet the interface received, by why it was passed or dropped.
    pub reasons: BTreeMap<&'static str, ByVerdict>,
    /// All packets seen, by verdict.
    pub total: ByVerdict,
    /// How full each table is, and what happened to it.
    pub tables: Tables,
    /// Hits per scanner signature token.
    pub signatures: BTreeMap<String, u64>,
}

/// Table fill and events, so an operator sees when a table is too small.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Tables {
    pub allow: Fill,
    pub block: Fill,
    pub bans: Fill,
    /// Sources with rate state (LRU: when full, the oldest are recycled).
    pub sources: Fill,
    /// Sources holding earned trust (LRU).
    pub trusted: Fill,
    /// Counters from the program: `src_state_new`, `ban_added`,
    /// `ban_table_full`, ...
    pub events: BTreeMap<&'static str, u64>,
    /// Rate states recycled by the LRU (new states beyond those alive).
    pub sources_evicted: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Fill {
    pub entries: u64,
    pub capacity: u64,
    /// What the kernel charges for the table (its `memlock`), in bytes.
    pub memory_bytes: u64,
}

impl Tables {
    fn read(maps: &Maps) -> Result<Self> {
        // Sizes are settings ([tables]): read them from the maps themselves.
        let fill = |n: usize, map: &MapData| -> Result<Fill> {
            Ok(Fill {
                entries: n as u64,
                capacity: u64::from(tables::capacity(map)?),
                memory_bytes: tables::memory_bytes(map).unwrap_or(0),
            })
        };
        let mut events: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in TableStat::ALL {
            let per_cpu = maps.table_stats.get(&(t as u32), 0)?;
            events.insert(t.name(), per_cpu.iter().sum());
        }
        let sources = maps.src_state.keys().filter(|k| k.is_ok()).count();
        let new = events[TableStat::SrcStateNew.name()];
        Ok(Tables {
            allow: fill(
                maps.allow.keys().filter(|k| k.is_ok()).count(),
                maps.allow.map(),
            )?,
            block: fill(
                maps.block.keys().filter(|k| k.is_ok()).count(),
                maps.block.map(),
            )?,
            bans: fill(
                maps.bans.keys().filter(|k| k.is_ok()).count(),
                maps.bans.map(),
            )?,
            sources: fill(sources, maps.src_state.map())?,
            trusted: fill(
                maps.trusted.keys().filter(|k| k.is_ok()).count(),
                maps.trusted.map(),
            )?,
            sources_evicted: new.saturating_sub(sources as u64),
            events,
        })
    }
}

fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Totals> {
    let per_cpu = map.get(&index, 0)?;
    Ok(per_cpu.iter().fold(Totals::default(), |t, c| Totals {
        packets: t.packets + c.packets,
        bytes: t.bytes + c.bytes,
    }))
}

impl Snapshot {
    pub fn read(maps: &Maps) -> Result<Self> {
        let mut snap = Snapshot::counters(maps)?;
        snap.tables = Tables::read(maps)?;
        snap.signatures = maps
            .signatures()?
            .into_iter()
            .map(|r| (r.token, r.hits))
            .collect();
        Ok(snap)
    }

    /// The packet counters only: no walk of the tables.
    pub fn counters(maps: &Maps) -> Result<Self> {
        let mut snap = Snapshot::default();
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let t = sum(&maps.reason_stats, v as u32 * REASON_SLOTS + r as u32)?;
                *snap.reasons.entry(r.name()).or_default().slot(v) = t;
                let total = snap.total.slot(v);
                total.packets += t.packets;
                total.bytes += t.bytes;
            }
            for c in Class::ALL {
                let t = sum(&maps.class_stats, v as u32 * CLASS_SLOTS + c as u32)?;
                *snap.classes.entry(c.name()).or_default().slot(v) = t;
            }
        }
        Ok(snap)
    }

    /// A table of the non-zero rows; with `prev` and `secs`, packet rates
    /// since the previous snapshot are shown beside the totals.
    pub fn table(&self, prev: Option<(&Snapshot, f64)>) -> String {
        let mut out = String::new();
        let rate = |name: &str, by: fn(&Snapshot) -> &BTreeMap<&'static str, ByVerdict>| {
            prev.map(|(p, secs)| {
                let before = by(p).get(name).map(|b| b.packets()).unwrap_or(0);
                let now = by(self).get(name).map(|b| b.packets()).unwrap_or(0);
                (now.saturating_sub(before)) as f64 / secs
            })
        };
        for (title, rows, by) in [
            (
                "CLASS",
                &self.classes,
                (|s: &Snapshot| &s.classes) as fn(&Snapshot) -> &BTreeMap<&'static str, ByVerdict>,
            ),
            ("REASON", &self.reasons, |s: &Snapshot| &s.reasons),
        ] {
            let _ = writeln!(
                out,
                "{title:<18} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}{}",
                "pass",
                "pass_bytes",
                "drop",
                "drop_bytes",
                "would_drop",
                "wd_bytes",
                if prev.is_some() { "        pkt/s" } else { "" }
            );
            for (name, b) in rows.iter().filter(|(_, b)| b.packets() > 0) {
                let _ = write!(
                    out,
                    "{name:<18} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}",
                    b.pass.packets,
                    b.pass.bytes,
                    b.drop.packets,
                    b.drop.bytes,
                    b.would_drop.packets,
                    b.would_drop.bytes
                );
                if let Some(r) = rate(name, by) {
                    let _ = write!(out, " {r:>12.0}");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        let tb = &self.tables;
        let _ = writeln!(
            out,
            "{:<18} {:>12} {:>12} {:>10}",
            "TABLE", "entries", "capacity", "memory"
        );
        for (name, f) in [
            ("allow", tb.allow),
            ("block", tb.block),
            ("bans", tb.bans),
            ("sources", tb.sources),
            ("trusted", tb.trusted),
        ] {
            let mib = f.memory_bytes as f64 / (1024.0 * 1024.0);
            let _ = writeln!(
                out,
                "{name:<18} {:>12} {:>12} {:>6.1} MiB",
                f.entries, f.capacity, mib
            );
        }
        let events: Vec<String> = tb
            .events
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !events.is_empty() {
            let _ = writeln!(out, "table events: {}", events.join(" "));
        }
        out.push('\n');
        let t = &self.total;
        let _ = writeln!(
            out,
            "total: {} packets passed, {} dropped, {} would drop (monitor)",
            t.pass.packets, t.drop.packets, t.would_drop.packets
        );
        out
    }
}
