//! Every map of the programs, declared once for the controller: a row names
//! a map (as its static in sipguard-ebpf/src/maps.rs, where each map is
//! described) and says whether it is pinned; a row with a field also gives
//! it a typed handle in `Maps`. The names, `ALL` (the pinned maps),
//! `Maps`, `Maps::from_ebpf` and `Maps::from_pins` follow from the table,
//! so a new map is its eBPF static and one row here. A unit test checks the
//! table against the maps of the built object.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
};
use sipguard_common::{
    Counter, Policy,
    signature::{SIG_NAME_MAX, SigEntry, SigIndex},
    source::{Ban, BanSlot, BlockEntry, SrcKey, SrcState, Trust, TrustBits},
};

macro_rules! map_table {
    (
        handles { $($field:ident: $name:ident => $kind:ident<$($t:ty),+>,)* }
        pinned { $($pinned:ident,)* }
        unpinned { $($unpinned:ident,)* }
    ) => {
        /// Map names as they appear in the object file and in the pin
        /// directory.
        pub mod name {
            $(pub const $name: &str = stringify!($name);)*
            $(pub const $pinned: &str = stringify!($pinned);)*
            $(pub const $unpinned: &str = stringify!($unpinned);)*
        }

        /// Every map the agent pins: all state the programs share, so a
        /// restarted or upgraded agent (same `LAYOUT_VERSION`) takes it over
        /// and the old and new programs use the same maps while the link is
        /// swapped.
        pub const ALL: &[&str] = &[$(name::$name,)* $(name::$pinned,)*];

        /// Maps each load has its own (per-CPU working memory, a calibration):
        /// their layout may change without a new `LAYOUT_VERSION`.
        pub const UNPINNED: &[&str] = &[$(name::$unpinned,)*];

        /// Typed handles on the maps the controller reads and writes.
        pub struct Maps {
            $(pub $field: $kind<MapData, $($t),+>,)*
            /// The pin directory, locked around list-flag updates
            /// (`ListsLock`); `None` for maps no other process can reach (an
            /// unpinned load).
            pub(crate) pin_dir: Option<PathBuf>,
            /// `SIP_PORTS` as this handle last wrote it: only the agent
            /// writes it, so a reload compares with this instead of reading
            /// 65 536 entries.
            pub(crate) ports_written: Option<Vec<u8>>,
        }

        impl Maps {
            /// Take the maps out of a loaded object.
            pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
                let mut take = |name: &str| {
                    ebpf.take_map(name)
                        .with_context(|| format!("map {name} missing from the eBPF object"))
                };
                Ok(Self {
                    $($field: take(name::$name)?.try_into()?,)*
                    pin_dir: None,
                    ports_written: None,
                })
            }

            /// Open the maps a running agent pinned in `dir`.
            pub fn from_pins(dir: &Path) -> Result<Self> {
                Ok(Self {
                    $($field: open_pinned(dir, name::$name)?.try_into()?,)*
                    pin_dir: Some(dir.to_path_buf()),
                    ports_written: None,
                })
            }
        }
    };
}

map_table! {
    handles {
        sip_ports: SIP_PORTS => Array<u8>,
        policy: POLICY => Array<Policy>,
        allow: ALLOW => LpmTrie<[u8; 16], u32>,
        block: BLOCK => LpmTrie<[u8; 16], BlockEntry>,
        bans: BANS => HashMap<SrcKey, Ban>,
        ban_slots: BAN_SLOTS => Array<BanSlot>,
        src_state: SRC_STATE => HashMap<SrcKey, SrcState>,
        global_state: GLOBAL_STATE => Array<u64>,
        reason_stats: REASON_STATS => PerCpuArray<Counter>,
        class_stats: CLASS_STATS => PerCpuArray<Counter>,
        table_stats: TABLE_STATS => PerCpuArray<u64>,
        signatures: SIGNATURES => HashMap<u64, SigEntry>,
        sig_index: SIG_INDEX => Array<SigIndex>,
        sig_names: SIG_NAMES => Array<[u8; SIG_NAME_MAX]>,
        sig_hits: SIG_HITS => PerCpuArray<u64>,
        trusted: TRUSTED => HashMap<SrcKey, Trust>,
        trust_hints: TRUST_HINTS => Array<TrustBits>,
        trust_live: TRUST_LIVE => Array<u32>,
        empty_lists: EMPTY_LISTS => Array<u32>,
        scan_ban_room: SCAN_BAN_ROOM => Array<i64>,
    }
    // Pinned, opened by their one user: the agent (`BAN_EVENTS`), `sipguard
    // capture` (`CAPTURE`, `CAPTURE_RING`), the loader (the program arrays),
    // and the programs alone (`PENDING*`: an adopted `sipguard_xdp` may
    // tail-call the new `sipguard_sip`).
    pinned {
        BAN_EVENTS,
        CAPTURE,
        CAPTURE_RING,
        PROGS,
        PROGS_TC,
        PENDING,
        PENDING_RESP,
    }
    unpinned {
        FRAGS,
        FRAG_PENDING,
        GLOBAL_SHARE,
        CLOCK,
        CLOCK_SAMPLE,
        SCAN_MSG,
        SCAN_STATE,
        TOKENIZE,
    }
}

/// A map a running agent pinned in `dir`, typed by what the kernel says it
/// is.
pub fn open_pinned(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening pinned map {}: is the agent running, and is this sipguard the same version \
             as the agent?",
            path.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("pinned map {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{ALL, UNPINNED};

    /// The table and the built object name the same maps (aya-log's and
    /// the compiler's own sections aside).
    #[test]
    fn the_table_names_every_map_of_the_object() {
        let obj = aya_obj::Object::parse(crate::loader::OBJECT).expect("the built object parses");
        let in_object: BTreeSet<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.') && !n.starts_with("AYA_"))
            .collect();
        let in_table: BTreeSet<&str> = ALL.iter().chain(UNPINNED).copied().collect();
        assert_eq!(in_object, in_table);
        assert_eq!(in_table.len(), ALL.len() + UNPINNED.len(), "a name twice");
    }
}
