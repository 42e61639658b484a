//! Named blocklist sets (`sipguard block sync --name NAME`): a feed's
//! entries, replaced whole by each sync, beside the operator's own entries
//! and other feeds'. The kernel's blocklist keeps no record of who added an
//! entry, so each set is kept in a file, `/run/sipguard/sets/KEY/NAME.json`:
//! gone at reboot like the pinned maps it describes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, DirBuilder, File},
    os::unix::fs::DirBuilderExt as _,
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::lock::{LOCK_DIR, ListsLock};

/// One set as last synced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFile {
    /// Its entries (those the guards let through).
    pub entries: BTreeSet<IpNet>,
    /// Of those, the ones that were blocked already, by hand or `block
    /// add`, when the set first listed them: the set never removes these.
    pub found: BTreeSet<IpNet>,
    /// Entries the guards refused at the last sync.
    pub refused: u64,
    /// When it was last synced, Unix seconds.
    pub synced_at: u64,
    /// A word on some entries (the scenario of a CrowdSec decision).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<IpNet, String>,
}

/// What one sync does to the kernel's blocklist, and the set's new file.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Entries to write, with their expiry (`BlockEntry::expires_ns`).
    pub add: Vec<(IpNet, u64)>,
    pub remove: Vec<IpNet>,
    pub file: SetFile,
}

/// Replace a set whose last sync was `prev` by `desired` (guarded
/// already), each entry with its expiry (0: never). `others`: every other
/// set's entries; `blocked`: the blocklist's live entries now with theirs.
/// An entry leaves the kernel only if this set put it there and no other
/// set lists it; an entry listed and already blocked for good by no set is
/// `found`, and stays when the set drops it.
pub fn plan(
    prev: &SetFile,
    others: &BTreeSet<IpNet>,
    desired: BTreeMap<IpNet, u64>,
    blocked: &BTreeMap<IpNet, u64>,
) -> Plan {
    let found: BTreeSet<IpNet> = desired
        .keys()
        .filter(|n| blocked.get(n) == Some(&0))
        .filter(|n| prev.found.contains(n) || (!prev.entries.contains(n) && !others.contains(n)))
        .copied()
        .collect();
    let add = desired
        .iter()
        .filter(|(n, e)| !found.contains(n) && blocked.get(n) != Some(e))
        .map(|(n, e)| (*n, *e))
        .collect();
    let remove = prev
        .entries
        .iter()
        .filter(|n| !desired.contains_key(n))
        .filter(|n| !prev.found.contains(n) && !others.contains(n) && blocked.contains_key(n))
        .copied()
        .collect();
    Plan {
        add,
        remove,
        file: SetFile {
            entries: desired.into_keys().collect(),
            found,
            synced_at: unix_now(),
            ..SetFile::default()
        },
    }
}

/// Now, in Unix seconds (`SetFile::synced_at`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A set name: 1-64 letters, digits, '-' or '_' (it names a file).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("set name {name:?}: use 1-64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// The sets of one agent (by its key), locked against other syncs while
/// this handle lives.
pub struct Sets {
    dir: PathBuf,
    _lock: ListsLock,
}

/// Where the sets of the agent `key` are kept.
fn dir_of(key: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join("sets").join(key)
}

/// Forget the agent `key`'s sets: its blocklist is gone (clean stop,
/// `sipguard detach`).
pub fn forget(key: &str) {
    let _ = fs::remove_dir_all(dir_of(key));
}

/// Every set of the agent `key` as last synced, without waiting for a sync
/// under way (each file is replaced whole): for the metrics.
pub fn read_all(key: &str) -> Vec<(String, SetFile)> {
    let Ok(entries) = fs::read_dir(dir_of(key)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, SetFile)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            let file = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
            Some((name, file))
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl Sets {
    pub fn open(key: &str) -> Result<Sets> {
        let dir = dir_of(key);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let lock = ListsLock::acquire(&dir)?;
        Ok(Sets { dir, _lock: lock })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Every set's name and file.
    pub fn all(&self) -> Result<Vec<(String, SetFile)>> {
        let mut out = Vec::new();
        for e in
            fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?
        {
            let path = e?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let name = name.to_string();
            let file = self.load(&name)?;
            out.push((name, file));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The entries every set but `name` lists.
    pub fn others(&self, name: &str) -> Result<BTreeSet<IpNet>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|(n, _)| n != name)
            .flat_map(|(_, s)| s.entries)
            .collect())
    }

    /// A set's file; empty if it was never synced.
    pub fn load(&self, name: &str) -> Result<SetFile> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}: remove it and sync again", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SetFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write a set's file whole (a new file renamed over the old one).
    pub fn save(&self, name: &str, file: &SetFile) -> Result<()> {
        let path = self.path(name);
        let tmp = self.dir.join(format!(".{name}.json.new"));
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        serde_json::to_writer(&mut f, file)?;
        f.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> BTreeSet<IpNet> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// Entries that never expire.
    fn forever(nets: &[&str]) -> BTreeMap<IpNet, u64> {
        nets.iter().map(|n| (n.parse().unwrap(), 0)).collect()
    }

    fn adds(nets: &[&str]) -> Vec<(IpNet, u64)> {
        forever(nets).into_iter().collect()
    }

    #[test]
    fn a_sync_adds_and_removes_only_its_own() {
        // First sync: .1 was blocked by hand, .2 and .3 are new.
        let blocked = forever(&["198.18.9.1/32"]);
        let p = plan(
            &SetFile::default(),
            &set(&[]),
            forever(&["198.18.9.1/32", "198.18.9.2/32", "198.18.9.3/32"]),
            &blocked,
        );
        assert_eq!(p.add, adds(&["198.18.9.2/32", "198.18.9.3/32"]));
        assert!(p.remove.is_empty());
        assert_eq!(p.file.found, set(&["198.18.9.1/32"]));

        // Second sync drops all three: the hand-made .1 stays, and .3,
        // which another set lists too, stays.
        let blocked = forever(&["198.18.9.1/32", "198.18.9.2/32", "198.18.9.3/32"]);
        let p2 = plan(
            &p.file,
            &set(&["198.18.9.3/32"]),
            forever(&["198.18.9.4/32"]),
            &blocked,
        );
        assert_eq!(p2.add, adds(&["198.18.9.4/32"]));
        assert_eq!(p2.remove, Vec::from_iter(set(&["198.18.9.2/32"])));
        assert!(p2.file.found.is_empty());
    }

    #[test]
    fn an_entry_another_set_added_is_not_found() {
        // Set B lists what set A added: not B's to keep when A drops it,
        // and A's drop leaves it while B lists it.
        let blocked = forever(&["198.18.9.5/32"]);
        let b = plan(
            &SetFile::default(),
            &set(&["198.18.9.5/32"]),
            forever(&["198.18.9.5/32"]),
            &blocked,
        );
        assert!(b.add.is_empty() && b.file.found.is_empty());
        // B drops it later, A no longer lists it: B removes it.
        let b2 = plan(&b.file, &set(&[]), forever(&[]), &blocked);
        assert_eq!(b2.remove, Vec::from_iter(set(&["198.18.9.5/32"])));
    }

    #[test]
    fn entries_gone_from_the_kernel_are_added_again() {
        let prev = SetFile {
            entries: set(&["198.18.9.6/32", "198.18.9.7/32"]),
            found: set(&["198.18.9.7/32"]),
            ..SetFile::default()
        };
        // The blocklist was emptied (`sipguard detach`, a new agent).
        let p = plan(
            &prev,
            &set(&[]),
            forever(&["198.18.9.6/32", "198.18.9.7/32"]),
            &forever(&[]),
        );
        assert_eq!(p.add, adds(&["198.18.9.6/32", "198.18.9.7/32"]));
        assert!(p.file.found.is_empty(), "what it adds now is its own");
    }

    #[test]
    fn expiring_entries_are_written_when_their_expiry_changes() {
        let expiring =
            |e: u64| -> BTreeMap<IpNet, u64> { [("198.18.9.8/32".parse().unwrap(), e)].into() };
        let p = plan(&SetFile::default(), &set(&[]), expiring(100), &forever(&[]));
        assert_eq!(p.add, vec![("198.18.9.8/32".parse().unwrap(), 100)]);
        // In force as planned: nothing to write.
        let p2 = plan(&p.file, &set(&[]), expiring(100), &expiring(100));
        assert!(p2.add.is_empty() && p2.remove.is_empty());
        // Extended: written again. Blocked for good by hand: left alone.
        let p3 = plan(&p.file, &set(&[]), expiring(200), &expiring(100));
        assert_eq!(p3.add, vec![("198.18.9.8/32".parse().unwrap(), 200)]);
        let p4 = plan(
            &SetFile::default(),
            &set(&[]),
            expiring(200),
            &forever(&["198.18.9.8/32"]),
        );
        assert!(p4.add.is_empty());
        assert_eq!(p4.file.found, set(&["198.18.9.8/32"]));
    }

    #[test]
    fn names() {
        for ok in ["voipbl", "apiban-2", "a_b"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "../x", "a b", "x.json", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
