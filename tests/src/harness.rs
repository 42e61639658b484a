//! Runs the embedded programs on test packets with BPF_PROG_TEST_RUN and
//! reads what they counted: the XDP program on what the server receives, the
//! TC egress program on what it sends (its responses). Each `Harness` loads
//! its own copy of the programs and maps, so tests running in parallel never
//! see each other's counters.

use std::{collections::BTreeMap, mem::ManuallyDrop, sync::Mutex, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    util::nr_cpus,
};
use sipguard::{
    config::Config,
    loader::{self, KernelLog},
    maps::{Maps, name},
    stats::{Snapshot, Totals},
};
use sipguard_common::{
    Class, Reason, Verdict,
    capture::{CaptureConf, CaptureRecord},
    maps::{PROG_BENCH_EMPTY, PROG_EGRESS, PROG_XDP, TableStat},
    policy::GlobalShare,
    source::{BanSlot, SrcKey, TrustBits},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC_ACT_OK: what the egress program always returns (it never changes
/// what the server sends).
pub const TC_ACT_OK: u32 = 0;

/// The kernel refuses BPF_PROG_TEST_RUN on less than an Ethernet header.
pub const MIN_TEST_RUN_LEN: usize = 14;

pub struct Harness {
    ebpf: ManuallyDrop<Ebpf>,
    maps: ManuallyDrop<Maps>,
}

/// Loaded objects of finished harnesses, their maps reset, for the next:
/// loading verifies every program again, which takes seconds (tens of
/// seconds on the kernel matrix's emulated VMs) and dominated the suites.
static POOL: Mutex<Vec<(Ebpf, Maps)>> = Mutex::new(Vec::new());

impl Drop for Harness {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the fields are not used after.
        let (mut ebpf, mut maps) = unsafe {
            (
                ManuallyDrop::take(&mut self.ebpf),
                ManuallyDrop::take(&mut self.maps),
            )
        };
        // A harness whose maps cannot be reset is dropped, not reused.
        if reset(&mut ebpf, &mut maps).is_ok() {
            POOL.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ebpf, maps));
        }
    }
}

/// Every map a test can change back to what a fresh load holds (the
/// programs' scratch maps excepted: each run overwrites them).
fn reset(ebpf: &mut Ebpf, maps: &mut Maps) -> Result<()> {
    fn clear_hash<K: aya::Pod, V: aya::Pod>(
        m: &mut aya::maps::HashMap<MapData, K, V>,
    ) -> Result<()> {
        let keys: Vec<K> = m.keys().collect::<Result<_, _>>()?;
        for k in keys {
            m.remove(&k)?;
        }
        Ok(())
    }
    fn clear_lpm<V: aya::Pod>(m: &mut aya::maps::LpmTrie<MapData, [u8; 16], V>) -> Result<()> {
        let keys: Vec<_> = m.keys().collect::<Result<_, _>>()?;
        for k in keys {
            m.remove(&k)?;
        }
        Ok(())
    }
    fn zero_array<V: aya::Pod + Default + PartialEq>(m: &mut Array<MapData, V>) -> Result<()> {
        for i in 0..m.len() {
            if m.get(&i, 0)? != V::default() {
                m.set(i, V::default(), 0)?;
            }
        }
        Ok(())
    }
    fn zero_per_cpu<V: aya::Pod + Default + PartialEq + Clone>(
        m: &mut PerCpuArray<MapData, V>,
    ) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for i in 0..m.len() {
            if m.get(&i, 0)?.iter().any(|v| *v != V::default()) {
                m.set(i, PerCpuValues::try_from(vec![V::default(); cpus])?, 0)?;
            }
        }
        Ok(())
    }
    clear_lpm(&mut maps.allow)?;
    clear_lpm(&mut maps.block)?;
    // The ban slots of live bans; a slot whose bans are all over only
    // costs the next ban's owner a `BANS` lookup (reading all 65 536 slots
    // takes seconds on an emulated kernel).
    let banned: Vec<SrcKey> = maps.bans.keys().collect::<Result<_, _>>()?;
    for k in banned {
        maps.ban_slots.set(k.ban_slot(), BanSlot::default(), 0)?;
    }
    clear_hash(&mut maps.bans)?;
    clear_hash(&mut maps.src_state)?;
    clear_hash(&mut maps.signatures)?;
    clear_hash(&mut maps.trusted)?;
    for i in 0..2 {
        maps.trust_hints.set(i, TrustBits::default(), 0)?;
    }
    maps.trust_live.set(0, 0, 0)?;
    zero_array(&mut maps.global_state)?;
    zero_array(&mut maps.sig_names)?;
    zero_per_cpu(&mut maps.reason_stats)?;
    zero_per_cpu(&mut maps.class_stats)?;
    zero_per_cpu(&mut maps.table_stats)?;
    zero_per_cpu(&mut maps.sig_hits)?;
    // Room for scanner bans as a config apply gives an empty ban table.
    maps.set_scan_ban_room(0)?;
    // A fresh load's list flags read 0 ("look"), its policy is all zero.
    maps.empty_lists.set(0, 0, 0)?;
    maps.policy.set(0, sipguard_common::Policy::default(), 0)?;
    // First fragments an earlier test sent (a map of the programs' own, not
    // pinned, so not among `maps`). Keys are `FragKey`s: 24 bytes.
    if let Some(map) = ebpf.map_mut(name::FRAGS) {
        let mut frags: aya::maps::HashMap<&mut MapData, [u8; 24], u32> = map.try_into()?;
        let keys: Vec<[u8; 24]> = frags.keys().collect::<Result<_, _>>()?;
        for k in keys {
            frags.remove(&k)?;
        }
    }
    // Each CPU's lease of the global buckets (the programs' own map).
    if let Some(map) = ebpf.map_mut(name::GLOBAL_SHARE) {
        let mut shares: PerCpuArray<&mut MapData, GlobalShare> = map.try_into()?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for i in 0..shares.len() {
            shares.set(
                i,
                PerCpuValues::try_from(vec![GlobalShare::default(); cpus])?,
                0,
            )?;
        }
    }
    // Ban events nobody read, and any capture with its packets.
    for ring in [name::BAN_EVENTS, name::CAPTURE_RING] {
        if let Some(map) = ebpf.map_mut(ring) {
            let mut ring = RingBuf::try_from(map)?;
            while ring.next().is_some() {}
        }
    }
    if let Some(map) = ebpf.map_mut(name::CAPTURE) {
        let mut conf: Array<&mut MapData, CaptureConf> = map.try_into()?;
        conf.set(0, CaptureConf::default(), 0)?;
    }
    Ok(())
}

impl Harness {
    /// Load the program with `Config::default()` (enforce on, UDP 5060, TCP
    /// 5060 and 5061, the default rate limits). Needs root.
    pub fn new() -> Result<Self> {
        Self::with_config(&Config::default())
    }

    pub fn with_config(cfg: &Config) -> Result<Self> {
        anyhow::ensure!(
            is_root(),
            "BPF_PROG_TEST_RUN needs root to load the XDP program: run as root \
             (e.g. sudo -E cargo test)"
        );
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (ebpf, mut maps) = match pooled {
            Some(loaded) => loaded,
            None => {
                let mut ebpf = loader::load(KernelLog::Off)?;
                let maps = Maps::from_ebpf(&mut ebpf)?;
                (ebpf, maps)
            }
        };
        maps.apply(cfg)?;
        Ok(Self {
            ebpf: ManuallyDrop::new(ebpf),
            maps: ManuallyDrop::new(maps),
        })
    }

    fn prog(&self) -> Result<&Xdp> {
        let prog = self
            .ebpf
            .program(PROG_XDP)
            .ok_or_else(|| anyhow!("program {PROG_XDP} missing from the object"))?;
        Ok(prog.try_into()?)
    }

    /// Run the program once on `pkt`; returns the XDP action.
    pub fn run(&self, pkt: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(pkt, 1)?.0)
    }

    /// Run the program `repeat` times on `pkt` in the kernel; returns the
    /// action and the kernel's average time per run.
    pub fn run_repeat(&self, pkt: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        test_run(self.prog()?, PROG_XDP, pkt, repeat)
    }

    /// Run the object's empty XDP program (`sipguard_bench_empty`, loaded on
    /// first use) `repeat` times on `pkt`: what BPF_PROG_TEST_RUN itself
    /// costs per run on this machine.
    pub fn empty_repeat(&mut self, pkt: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_BENCH_EMPTY)
            .ok_or_else(|| anyhow!("program {PROG_BENCH_EMPTY} missing from the object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("loading {PROG_BENCH_EMPTY}"))?;
        }
        test_run(prog, PROG_BENCH_EMPTY, pkt, repeat)
    }

    /// Instructions the verifier walked to accept each loaded program (the
    /// kernel's `verified_insns`; the budget is one million per program).
    pub fn verified_insns(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let n = p.info().ok()?.verified_instruction_count()?;
                Some((name.to_string(), n))
            })
            .collect()
    }

    /// Run the TC egress program (`sipguard_egress`, which tail-calls
    /// `sipguard_resp`) once on `frame`, a frame the server sends; returns
    /// the TC action.
    pub fn egress(&self, frame: &[u8]) -> Result<u32> {
        Ok(self.egress_repeat(frame, 1)?.0)
    }

    /// `egress` `repeat` times in the kernel; the action and the kernel's
    /// average time per run.
    pub fn egress_repeat(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROG_EGRESS)
            .ok_or_else(|| anyhow!("program {PROG_EGRESS} missing from the object"))?
            .try_into()?;
        test_run(prog, PROG_EGRESS, frame, repeat)
    }

    /// A table event counter (`TABLE_STATS`), summed over the CPUs. The
    /// egress program reports what it learnt only here and in the maps.
    pub fn table_stat(&self, stat: TableStat) -> Result<u64> {
        let per_cpu = self
            .maps
            .table_stats
            .get(&(stat as u32), 0)
            .with_context(|| format!("reading TABLE_STATS[{}]", stat.name()))?;
        Ok(per_cpu.iter().sum())
    }

    /// Run once and return the action with the counter changes it caused.
    pub fn run_counted(&self, pkt: &[u8]) -> Result<(u32, Delta)> {
        let before = self.snapshot()?;
        let action = self.run(pkt)?;
        Ok((action, Delta::between(&before, &self.snapshot()?)))
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::read(&self.maps)
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// For tests that change the configuration (ports, enforce) at run time.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Ban `ip` (its key as the policy groups it) by hand for `for_ns`.
    pub fn ban_for(&mut self, ip: std::net::IpAddr, for_ns: u64) -> Result<()> {
        let now = sipguard::time::monotonic_ns();
        let key = sipguard::addr::src_key(ip, &self.maps.policy()?.v6_mask);
        self.maps.ban_add(
            key,
            sipguard_common::source::Ban {
                expires_ns: now + for_ns,
                since_ns: now,
                reason: sipguard_common::source::BanReason::Manual as u32,
                detail: 0,
                dropped: 0,
            },
        )
    }

    /// Start a capture (`CaptureConf::default()` stops it), as `sipguard
    /// capture` does.
    pub fn set_capture(&mut self, conf: CaptureConf) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(name::CAPTURE)
            .ok_or_else(|| anyhow!("map {} missing from the object", name::CAPTURE))?;
        let mut a: Array<&mut MapData, CaptureConf> = map.try_into()?;
        a.set(0, conf, 0)?;
        Ok(())
    }

    /// The capture as the programs left it (`missed` counted).
    pub fn capture(&mut self) -> Result<CaptureConf> {
        let map = self
            .ebpf
            .map_mut(name::CAPTURE)
            .ok_or_else(|| anyhow!("map {} missing from the object", name::CAPTURE))?;
        let a: Array<&mut MapData, CaptureConf> = map.try_into()?;
        Ok(a.get(&0, 0)?)
    }

    /// The packets captured so far, taken out of the ring.
    pub fn captured(&mut self) -> Result<Vec<CaptureRecord>> {
        let map = self
            .ebpf
            .map_mut(name::CAPTURE_RING)
            .ok_or_else(|| anyhow!("map {} missing from the object", name::CAPTURE_RING))?;
        let mut ring = RingBuf::try_from(map)?;
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            anyhow::ensure!(item.len() >= std::mem::size_of::<CaptureRecord>());
            // SAFETY: the programs write whole records; length checked.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        Ok(out)
    }
}

/// One BPF_PROG_TEST_RUN call of `prog` (named `name` in errors): `repeat`
/// runs on `pkt`; its return value and the kernel's average time per run.
fn test_run<P>(prog: &P, name: &str, pkt: &[u8], repeat: u32) -> Result<(u32, Duration)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    anyhow::ensure!(
        pkt.len() >= MIN_TEST_RUN_LEN,
        "BPF_PROG_TEST_RUN needs at least {MIN_TEST_RUN_LEN} bytes, got {}",
        pkt.len()
    );
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            repeat,
            ..Default::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN on {name}"))?;
    Ok((r.return_value, r.duration))
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    // "Uid:\treal\teffective\tsaved\tfs"
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A (verdict name, reason or class name) counter key.
pub type Key = (&'static str, &'static str);

/// The counters that changed between two snapshots; unchanged ones are left
/// out, so equality with an expected `Delta` also proves nothing else moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub reasons: BTreeMap<Key, Totals>,
    pub classes: BTreeMap<Key, Totals>,
}

impl Delta {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        Self {
            reasons: changed(&before.reasons, &after.reasons),
            classes: changed(&before.classes, &after.classes),
        }
    }

    /// What one packet of `bytes` bytes should change: its reason counter
    /// and, for traffic to a SIP port, its class counter.
    pub fn one(verdict: Verdict, reason: Reason, class: Option<Class>, bytes: usize) -> Self {
        let t = Totals {
            packets: 1,
            bytes: bytes as u64,
        };
        let mut d = Self::default();
        d.reasons.insert((verdict.name(), reason.name()), t);
        if let Some(c) = class {
            d.classes.insert((verdict.name(), c.name()), t);
        }
        d
    }

    /// The same changes, `n` times over (for `run_repeat`).
    pub fn times(mut self, n: u64) -> Self {
        for t in self.reasons.values_mut().chain(self.classes.values_mut()) {
            t.packets *= n;
            t.bytes *= n;
        }
        self
    }
}

fn changed(
    before: &BTreeMap<&'static str, sipguard::stats::ByVerdict>,
    after: &BTreeMap<&'static str, sipguard::stats::ByVerdict>,
) -> BTreeMap<Key, Totals> {
    let mut out = BTreeMap::new();
    for (name, now) in after {
        let was = before.get(name).copied().unwrap_or_default();
        for v in Verdict::ALL {
            let (a, b) = (was.get(v), now.get(v));
            // Counters only grow; a shrink means the maps were swapped under us.
            let d = Totals {
                packets: b.packets.checked_sub(a.packets).expect("counter went down"),
                bytes: b.bytes.checked_sub(a.bytes).expect("counter went down"),
            };
            if d != Totals::default() {
                out.insert((v.name(), *name), d);
            }
        }
    }
    out
}
