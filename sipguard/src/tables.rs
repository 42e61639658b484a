//! Table sizes (`[tables]` in the config file): how many entries each of
//! the programs' large maps holds. Applied when the maps are created; an
//! agent that adopts pinned maps keeps their sizes (see `drift`).

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Result, bail};
use aya::{EbpfLoader, maps::MapData};
use serde::{Deserialize, Serialize};
use sipguard_common::maps::{ALLOW_MAX, BANS_MAX, BLOCK_MAX, SRC_STATE_MAX, TRUSTED_MAX};

use crate::maps::name;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Tables {
    /// Clients that earned trust (LRU: the oldest is forgotten when full).
    pub trusted: u32,
    /// Allowlist entries.
    pub allow: u32,
    /// Blocklist entries.
    pub block: u32,
    /// Dynamic bans (never evicted: a full table bans no one new).
    pub bans: u32,
    /// Sources with rate state (LRU).
    pub sources: u32,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            trusted: TRUSTED_MAX,
            allow: ALLOW_MAX,
            block: BLOCK_MAX,
            bans: BANS_MAX,
            sources: SRC_STATE_MAX,
        }
    }
}

/// Smallest and largest size of every table. Below the floor a table is
/// full at once; above the ceiling one table would take gigabytes.
const MIN: u32 = 1024;
const MAX: u32 = 16 * 1024 * 1024;

impl Tables {
    /// Each table: its config key, its map and its size.
    pub fn entries(&self) -> [(&'static str, &'static str, u32); 5] {
        [
            ("trusted", name::TRUSTED, self.trusted),
            ("allow", name::ALLOW, self.allow),
            ("block", name::BLOCK, self.block),
            ("bans", name::BANS, self.bans),
            ("sources", name::SRC_STATE, self.sources),
        ]
    }

    pub fn validate(&self) -> Result<()> {
        for (key, _, size) in self.entries() {
            if !(MIN..=MAX).contains(&size) {
                bail!("tables.{key}: {size} is not between {MIN} and {MAX}");
            }
        }
        Ok(())
    }

    /// Create the maps with these sizes (maps opened from pins keep theirs).
    pub fn apply_to(&self, loader: &mut EbpfLoader<'_>) {
        for (_, map, size) in self.entries() {
            loader.map_max_entries(map, size);
        }
    }
}

/// A map's capacity (`max_entries`) as the kernel reports it.
pub fn capacity(map: &MapData) -> Result<u32> {
    Ok(map.info()?.max_entries())
}

/// The memory the kernel charges for a map (`memlock` in its fdinfo).
pub fn memory_bytes(map: &MapData) -> Option<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}
