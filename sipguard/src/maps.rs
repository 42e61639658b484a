//! The operations the controller and the CLI perform on the program's maps,
//! through the typed handles of `Maps` (map_table.rs), opened either from a
//! freshly loaded object (the agent, the tests) or from the agent's pins
//! (client commands).

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{IterableMap as _, LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;
use sipguard_common::{
    Policy,
    maps::{
        ALLOW_HOLE, BLOCK_HOLE_EXPIRY, LIST_ALLOW, LIST_BLOCK, LIST_RESERVED, PORT_TCP, PORT_UDP,
        SCAN_BAN_SHARE_QUARTERS,
    },
    policy::POLICY_ENFORCE,
    source::{Ban, BanSlot, BlockEntry, SrcKey, Trust, TrustBits},
};

pub use crate::map_table::{ALL, Maps, UNPINNED, name};
use crate::{
    addr,
    config::Config,
    lock::ListsLock,
    tables::{self, Tables},
    time,
};

/// What a list operation changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub applied: usize,
    /// `del` of entries that were not there.
    pub missing: usize,
}

impl Maps {
    /// The sizes the tables were created with.
    pub fn table_sizes(&self) -> Result<Tables> {
        Ok(Tables {
            trusted: tables::capacity(self.trusted.map())?,
            allow: tables::capacity(self.allow.map())?,
            block: tables::capacity(self.block.map())?,
            bans: tables::capacity(self.bans.map())?,
            sources: tables::capacity(self.src_state.map())?,
        })
    }

    /// The maps of an object loaded with its maps pinned in `dir`
    /// (`loader::load_pinned`): list-flag updates then take `ListsLock`.
    pub fn pinned_at(mut self, dir: &Path) -> Self {
        self.pin_dir = Some(dir.to_path_buf());
        self
    }

    /// Write the SIP ports of `cfg` (clearing any others).
    pub fn set_ports(&mut self, cfg: &Config) -> Result<()> {
        let mut bits = vec![0u8; 65536];
        for p in &cfg.sip.udp_ports {
            bits[*p as usize] |= PORT_UDP;
        }
        for p in &cfg.sip.tcp_ports {
            bits[*p as usize] |= PORT_TCP;
        }
        let current: Vec<u8> = match self.ports_written.take() {
            Some(written) => written,
            None => self.sip_ports.iter().collect::<Result<_, _>>()?,
        };
        for (port, (want, have)) in bits.iter().zip(current).enumerate() {
            if *want != have {
                self.sip_ports.set(port as u32, want, 0)?;
            }
        }
        self.ports_written = Some(bits);
        Ok(())
    }

    pub fn policy(&self) -> Result<Policy> {
        Ok(self.policy.get(&0, 0)?)
    }

    pub fn set_policy(&mut self, policy: &Policy) -> Result<()> {
        Ok(self.policy.set(0, policy, 0)?)
    }

    /// Switch enforcement on (drop) or off (monitor: count would-drop).
    pub fn set_enforce(&mut self, on: bool) -> Result<()> {
        let mut p = self.policy()?;
        if on {
            p.flags |= POLICY_ENFORCE;
        } else {
            p.flags &= !POLICY_ENFORCE;
        }
        self.set_policy(&p)
    }

    /// Push a whole configuration into the maps: ports, policy, and the
    /// file's allow and block entries (added to what is there).
    /// Apply a config all or nothing: the lists, which can overflow, are
    /// written first and taken back if either cannot take its entries; the
    /// ports, policy and signatures after them cannot fail for lack of room.
    pub fn apply(&mut self, cfg: &Config) -> Result<()> {
        let allow_undo = insert_all(&mut self.allow, "allowlist", &cfg.allow, 0)?;
        let block = BlockEntry { expires_ns: 0 };
        if let Err(e) = insert_all(&mut self.block, "blocklist", &cfg.block, block) {
            undo(&mut self.allow, allow_undo);
            return Err(e);
        }
        self.refresh_list_flags()?;
        self.signatures_defaults()?;
        self.set_ports(cfg)?;
        self.set_policy(&cfg.policy())?;
        let bans = self.bans.keys().filter(|k| k.is_ok()).count();
        self.set_scan_ban_room(bans)
    }

    /// Give scanner bans the room left in their share of the ban table
    /// (`SCAN_BAN_ROOM`), with `bans` bans in it now.
    pub fn set_scan_ban_room(&mut self, bans: usize) -> Result<()> {
        let share = u64::from(tables::capacity(self.bans.map())?) * SCAN_BAN_SHARE_QUARTERS / 4;
        let room = share as i64 - bans as i64;
        self.scan_ban_room
            .set(0, room, 0)
            .context("updating the scanner bans' room")
    }

    /// Add allowlist entries: all of them, or none when the list cannot
    /// take them all.
    pub fn allow_add(&mut self, nets: &[IpNet]) -> Result<Changed> {
        insert_all(&mut self.allow, "allowlist", nets, 0)?;
        self.refresh_list_flags()?;
        Ok(Changed {
            applied: nets.len(),
            missing: 0,
        })
    }

    pub fn allow_del(&mut self, nets: &[IpNet]) -> Result<Changed> {
        let mut changed = Changed::default();
        for net in nets {
            let key = addr::cidr_key(*net);
            if self.allow.get(&key, 0).is_ok_and(|f| f & ALLOW_HOLE != 0) {
                changed.missing += 1;
                continue;
            }
            count_removal(self.allow.remove(&key), net, &mut changed)?;
        }
        self.refresh_list_flags()?;
        Ok(changed)
    }

    pub fn allow_list(&self) -> Result<Vec<IpNet>> {
        let mut out: Vec<IpNet> = self
            .allow
            .iter()
            .filter(|kv| !matches!(kv, Ok((_, f)) if f & ALLOW_HOLE != 0))
            .map(|kv| kv.map(|(k, _)| addr::cidr_of(&k)))
            .collect::<Result<_, _>>()?;
        out.sort();
        Ok(out)
    }

    /// Add blocklist entries, all or none; `expires_ns` 0 = permanent.
    pub fn block_add(&mut self, nets: &[IpNet], expires_ns: u64) -> Result<Changed> {
        insert_all(
            &mut self.block,
            "blocklist",
            nets,
            BlockEntry { expires_ns },
        )?;
        self.refresh_list_flags()?;
        Ok(Changed {
            applied: nets.len(),
            missing: 0,
        })
    }

    pub fn block_del(&mut self, nets: &[IpNet]) -> Result<Changed> {
        let mut changed = Changed::default();
        for net in nets {
            let key = addr::cidr_key(*net);
            if self
                .block
                .get(&key, 0)
                .is_ok_and(|e| e.expires_ns == BLOCK_HOLE_EXPIRY)
            {
                changed.missing += 1;
                continue;
            }
            count_removal(self.block.remove(&key), net, &mut changed)?;
        }
        self.refresh_list_flags()?;
        Ok(changed)
    }

    pub fn block_list(&self) -> Result<Vec<(IpNet, BlockEntry)>> {
        let mut out: Vec<(IpNet, BlockEntry)> = self
            .block
            .iter()
            .filter(|kv| !matches!(kv, Ok((_, e)) if e.expires_ns == BLOCK_HOLE_EXPIRY))
            .map(|kv| kv.map(|(k, v)| (addr::cidr_of(&k), v)))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Tell the program which lists are empty, so it skips their lookups.
    /// Called after every change to a list; an entry is added before its
    /// list is marked non-empty, so a rule is in force once its command
    /// returns. Under `ListsLock`: the flags written are those of the lists
    /// as they are when written, whatever other commands run meanwhile.
    pub fn refresh_list_flags(&mut self) -> Result<()> {
        let _lock = self
            .pin_dir
            .as_deref()
            .map(ListsLock::acquire)
            .transpose()?;
        self.mend_holes()?;
        let mut empty = 0;
        if self.allow.keys().next().is_none() {
            empty |= LIST_ALLOW;
        }
        if self.block.keys().next().is_none() {
            empty |= LIST_BLOCK;
        }
        self.empty_lists
            .set(0, empty, 0)
            .context("updating the list-empty flags")
    }

    /// Keep each list's hole at ::ffff:0:0/96 (`ALLOW_HOLE`) exactly while
    /// an IPv6 prefix of that list covers the IPv4 space and no IPv4 entry
    /// (0.0.0.0/0, the same key) takes the place.
    fn mend_holes(&mut self) -> Result<()> {
        mend_hole(
            &mut self.allow,
            |f| f & ALLOW_HOLE != 0,
            ALLOW_HOLE,
            "allowlist",
        )?;
        let hole = BlockEntry {
            expires_ns: BLOCK_HOLE_EXPIRY,
        };
        mend_hole(
            &mut self.block,
            |e| e.expires_ns == BLOCK_HOLE_EXPIRY,
            hole,
            "blocklist",
        )
    }

    /// The bans, each with the packets dropped for it by `BANS` and by its
    /// `BAN_SLOTS` slot together.
    pub fn bans_list(&self) -> Result<Vec<(SrcKey, Ban)>> {
        let mut out: Vec<(SrcKey, Ban)> = self.bans.iter().collect::<Result<_, _>>()?;
        for (key, ban) in &mut out {
            self.add_slot_drops(key, ban)?;
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// `key`'s ban, if it has one, counted as `bans_list` counts it.
    pub fn ban(&self, key: &SrcKey) -> Result<Option<Ban>> {
        let mut ban = match self.bans.get(key, 0) {
            Ok(b) => b,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(e).context("reading a ban"),
        };
        self.add_slot_drops(key, &mut ban)?;
        Ok(Some(ban))
    }

    /// The packets `key`'s `BAN_SLOTS` slot dropped for this very ban.
    fn add_slot_drops(&self, key: &SrcKey, ban: &mut Ban) -> Result<()> {
        let slot = self.ban_slot_of(key)?;
        if slot.holds(key, ban.expires_ns) {
            ban.dropped += slot.dropped;
        }
        Ok(())
    }

    pub fn ban_add(&mut self, key: SrcKey, ban: Ban) -> Result<()> {
        self.bans
            .insert(key, ban, 0)
            .context("adding the ban (is the ban table full? see `sipguard stats`)")?;
        let mut slot = self.ban_slot_of(&key)?;
        slot.record(&key, &ban, time::monotonic_ns());
        self.set_ban_slot(&key, &slot)
    }

    fn ban_slot_of(&self, key: &SrcKey) -> Result<BanSlot> {
        self.ban_slots
            .get(&key.ban_slot(), 0)
            .context("reading a ban slot")
    }

    fn set_ban_slot(&mut self, key: &SrcKey, slot: &BanSlot) -> Result<()> {
        self.ban_slots
            .set(key.ban_slot(), slot, 0)
            .context("writing a ban slot")
    }

    /// Make every live ban visible in its `BAN_SLOTS` slot again: a slot
    /// two writers updated at once (two CPUs banning, or a ban set while
    /// `bans clear` ran) may have lost one of them. Run at start (maps
    /// pinned by an older agent have none: it knew only `BAN_HINTS`) and by
    /// every sweep.
    /// Returns how many slots it mended.
    pub fn sync_ban_slots(&mut self, now_ns: u64) -> Result<usize> {
        let live: Vec<(SrcKey, Ban)> = self
            .bans
            .iter()
            .filter_map(|kv| kv.ok())
            .filter(|(_, b)| b.expires_ns > now_ns)
            .collect();
        self.mend_ban_slots(&live, now_ns)
    }

    /// `sync_ban_slots` for bans already read (all live at `now_ns`).
    fn mend_ban_slots(&mut self, live: &[(SrcKey, Ban)], now_ns: u64) -> Result<usize> {
        let mut mended = 0;
        for (key, ban) in live {
            let slot = self.ban_slot_of(key)?;
            let mut fixed = slot;
            fixed.record(key, ban, now_ns);
            // Keep the slot's drop count when it already held this ban.
            if slot.holds(key, ban.expires_ns) {
                fixed.dropped = slot.dropped;
            }
            if fixed != slot {
                self.set_ban_slot(key, &fixed)?;
                mended += 1;
            }
        }
        Ok(mended)
    }

    /// Lift bans, and forget the sources' rate history so they start clean.
    pub fn bans_del(&mut self, keys: &[SrcKey]) -> Result<Changed> {
        let mut changed = Changed::default();
        for key in keys {
            match self.bans.remove(key) {
                Ok(()) => changed.applied += 1,
                Err(e) if is_absent(&e) => changed.missing += 1,
                Err(e) => return Err(e).context("removing a ban"),
            }
            // The slot stops dropping for the key at once; its
            // `any_until_ns` may still cover other keys' bans.
            let mut slot = self.ban_slot_of(key)?;
            if slot.key == *key {
                slot.until_ns = 0;
                slot.dropped = 0;
                self.set_ban_slot(key, &slot)?;
            }
            let _ = self.src_state.remove(key);
        }
        Ok(changed)
    }

    /// Rebuild the trust hints: the bitmap the program does not read is
    /// cleared, given the bit of every live trust, and made the one it
    /// reads. The egress program sets bits in both as trust is earned, so
    /// one earned meanwhile is kept; only one earned in the moment between
    /// reading the bitmap back and writing it may miss it, until the next
    /// sweep (as two CPUs setting bits of one word at once may). Run at
    /// start (maps pinned by an older agent have no hints) and by every
    /// sweep. Returns how many live trusts it found.
    pub fn sync_trust_hints(&mut self, now_ns: u64) -> Result<usize> {
        let live = self.trust_live.get(&0, 0).context("reading TRUST_LIVE")? & 1;
        let spare = 1 - live;
        self.trust_hints
            .set(spare, TrustBits::default(), 0)
            .context("clearing a trust bitmap")?;
        let mut bits = TrustBits::default();
        let mut trusts = 0;
        for (key, t) in self.trusted.iter().filter_map(|kv| kv.ok()) {
            if t.expires_ns > now_ns {
                bits.set(key.trust_bit());
                trusts += 1;
            }
        }
        let mut hints = self
            .trust_hints
            .get(&spare, 0)
            .context("reading a trust bitmap")?;
        for (w, b) in hints.words.iter_mut().zip(bits.words) {
            *w |= b;
        }
        self.trust_hints
            .set(spare, hints, 0)
            .context("writing a trust bitmap")?;
        self.trust_live
            .set(0, spare, 0)
            .context("writing TRUST_LIVE")?;
        Ok(trusts)
    }

    pub fn trusted_list(&self) -> Result<Vec<(SrcKey, Trust)>> {
        let mut out: Vec<(SrcKey, Trust)> = self.trusted.iter().collect::<Result<_, _>>()?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Withdraw trust now; the source earns it back with its next 2xx.
    pub fn trusted_del(&mut self, keys: &[SrcKey]) -> Result<Changed> {
        let mut changed = Changed::default();
        for key in keys {
            match self.trusted.remove(key) {
                Ok(()) => changed.applied += 1,
                Err(e) if is_absent(&e) => changed.missing += 1,
                Err(e) => return Err(e).context("removing a trusted source"),
            }
            // The program reads trust from the source's rate state.
            if let Ok(mut st) = self.src_state.get(key, 0)
                && st.trusted_until_ns != 0
            {
                st.trusted_until_ns = 0;
                // A state evicted meanwhile needs no clearing.
                let _ = self.src_state.insert(key, st, BPF_EXIST);
            }
        }
        Ok(changed)
    }

    pub fn trusted_clear(&mut self) -> Result<usize> {
        let keys: Vec<SrcKey> = self.trusted.keys().collect::<Result<_, _>>()?;
        Ok(self.trusted_del(&keys)?.applied)
    }

    pub fn bans_clear(&mut self) -> Result<usize> {
        let keys: Vec<SrcKey> = self.bans.keys().collect::<Result<_, _>>()?;
        Ok(self.bans_del(&keys)?.applied)
    }

    /// Remove bans and blocklist entries whose time is up. The program ignores
    /// (and removes, for bans) expired entries it meets; this frees the room
    /// of those it never meets again.
    /// Remove expired bans (and, with `blocklist`, expired blocklist
    /// entries: a walk of the whole list, which the agent does less often;
    /// the programs ignore expired entries meanwhile).
    pub fn sweep_expired(
        &mut self,
        now_ns: u64,
        blocklist: bool,
    ) -> Result<(Vec<(SrcKey, Ban)>, usize)> {
        // One walk of BANS: the expired are removed, the live checked
        // against their hints below.
        let (expired, live): (Vec<_>, Vec<_>) = self
            .bans
            .iter()
            .filter_map(|kv| kv.ok())
            .partition(|(_, b)| b.expires_ns <= now_ns);
        for (k, _) in &expired {
            let _ = self.bans.remove(k);
        }
        let blocks: Vec<Key<[u8; 16]>> = self
            .block
            .iter()
            .take_while(|_| blocklist)
            .filter_map(|kv| kv.ok())
            .filter(|(_, e)| {
                e.expires_ns != 0 && e.expires_ns != BLOCK_HOLE_EXPIRY && e.expires_ns <= now_ns
            })
            .map(|(k, _)| k)
            .collect();
        for k in &blocks {
            let _ = self.block.remove(k);
        }
        // Also repairs a flag left stale by two CLI calls racing, and ban
        // hints left short by racing writers.
        self.refresh_list_flags()?;
        self.mend_ban_slots(&live, now_ns)?;
        self.sync_trust_hints(now_ns)?;
        self.set_scan_ban_room(live.len())?;
        Ok((expired, blocks.len()))
    }
}

/// What `insert_all` changed, to take it back: each key with the value it
/// had before (None: it was not there).
type Undo<V> = Vec<(Key<[u8; 16]>, Option<V>)>;

/// Write `value` for every one of `nets`, or change nothing: the list's
/// room is checked first, and if an insert fails all the same (another
/// process filled the list meanwhile) what was written is taken back.
fn insert_all<V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; 16], V>,
    list: &str,
    nets: &[IpNet],
    value: V,
) -> Result<Undo<V>> {
    let capacity = trie
        .map()
        .info()?
        .max_entries()
        .saturating_sub(LIST_RESERVED) as usize;
    // Each key with its value now: whether it is new, and what to restore.
    let keys: Vec<(Key<[u8; 16]>, IpNet, Option<V>)> = nets
        .iter()
        .map(|n| {
            let key = addr::cidr_key(*n);
            let before = trie.get(&key, 0).ok();
            (key, *n, before)
        })
        .collect();
    let new: std::collections::HashSet<[u8; 20]> = keys
        .iter()
        .filter(|(_, _, before)| before.is_none())
        .map(|(k, _, _)| key_bytes(k))
        .collect();
    let held = trie.keys().filter(|k| k.is_ok()).count();
    if held + new.len() > capacity {
        anyhow::bail!(
            "the {list} holds {held} of its {capacity} entries and {} of these are new: they do \
             not fit, nothing was added. Remove entries first",
            new.len()
        );
    }
    let mut done: Undo<V> = Vec::with_capacity(keys.len());
    // A key given twice restores its value from before this call twice,
    // newest first: the same end state.
    for (key, net, before) in keys {
        if let Err(e) = trie.insert(&key, value, 0) {
            undo(trie, done);
            return Err(e).with_context(|| {
                format!("adding {net} to the {list} (is it full?): nothing was added")
            });
        }
        done.push((key, before));
    }
    Ok(done)
}

/// Take back what `insert_all` wrote, newest first.
fn undo<V: aya::Pod>(trie: &mut LpmTrie<MapData, [u8; 16], V>, done: Undo<V>) {
    for (key, before) in done.into_iter().rev() {
        let _ = match before {
            Some(v) => trie.insert(&key, v, 0),
            None => trie.remove(&key),
        };
    }
}

fn key_bytes(key: &Key<[u8; 16]>) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&key.prefix_len().to_ne_bytes());
    out[4..].copy_from_slice(&key.data());
    out
}

/// One list's hole at ::ffff:0:0/96 (`Maps::mend_holes`): `is_hole` tells
/// a hole's value, `hole` is the one to write.
fn mend_hole<V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; 16], V>,
    is_hole: impl Fn(&V) -> bool,
    hole: V,
    list: &str,
) -> Result<()> {
    let v4 = addr::v4_space_key();
    let at_v4 = |k: &Key<[u8; 16]>| k.prefix_len() == v4.prefix_len() && k.data() == v4.data();
    // A lookup would be a longest-prefix match: walk for the exact key.
    let (mut covered, mut here) = (false, None);
    for (k, v) in trie.iter().filter_map(|kv| kv.ok()) {
        covered |= !is_hole(&v) && addr::covers_v4_space(&k);
        if at_v4(&k) {
            here = Some(is_hole(&v));
        }
    }
    match (here, covered) {
        (Some(true), false) => {
            let _ = trie.remove(&v4);
        }
        (None, true) => trie.insert(&v4, hole, 0).with_context(|| {
            format!("keeping IPv4 sources out of an IPv6 {list} prefix (is it full?)")
        })?,
        _ => {}
    }
    Ok(())
}

fn count_removal(res: Result<(), MapError>, net: &IpNet, changed: &mut Changed) -> Result<()> {
    match res {
        Ok(()) => changed.applied += 1,
        Err(e) if is_absent(&e) => changed.missing += 1,
        Err(e) => return Err(e).with_context(|| format!("removing {net}")),
    }
    Ok(())
}

/// The entry to remove was not there: aya reports a delete of an absent key
/// as the syscall's ENOENT, not as `KeyNotFound`.
fn is_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// BPF_EXIST (linux/bpf.h): update an entry only if it is still there.
const BPF_EXIST: u64 = 2;
