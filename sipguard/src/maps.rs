//! Typed handles on the program's maps, opened either from a freshly loaded
//! object (the agent, the tests) or from the agent's pins (client commands).

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray},
};
use sipguard_common::{
    Counter, Policy,
    maps::{MAP_CLASS_STATS, MAP_POLICY, MAP_REASON_STATS, MAP_SIP_PORTS, PORT_TCP, PORT_UDP},
    policy::POLICY_ENFORCE,
};

use crate::config::Config;

pub struct Maps {
    pub sip_ports: Array<MapData, u8>,
    pub policy: Array<MapData, Policy>,
    pub reason_stats: PerCpuArray<MapData, Counter>,
    pub class_stats: PerCpuArray<MapData, Counter>,
}

/// Every map, by name, in the order they are pinned.
pub const ALL: [&str; 4] = [MAP_SIP_PORTS, MAP_POLICY, MAP_REASON_STATS, MAP_CLASS_STATS];

/// Pin every map of a freshly loaded object into `dir` (before
/// `Maps::from_ebpf` takes them out of it).
pub fn pin_all(ebpf: &Ebpf, dir: &Path) -> Result<()> {
    for name in ALL {
        let map = ebpf
            .map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?;
        let path = dir.join(name);
        map.pin(&path)
            .with_context(|| format!("pinning map {name} at {}", path.display()))?;
    }
    Ok(())
}

impl Maps {
    /// Take the maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        Ok(Self {
            sip_ports: take(MAP_SIP_PORTS)?.try_into()?,
            policy: take(MAP_POLICY)?.try_into()?,
            reason_stats: take(MAP_REASON_STATS)?.try_into()?,
            class_stats: take(MAP_CLASS_STATS)?.try_into()?,
        })
    }

    /// Open the maps a running agent pinned in `dir`.
    pub fn from_pins(dir: &Path) -> Result<Self> {
        let open = |name: &str| {
            let path = dir.join(name);
            MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening pinned map {}: is the agent running, and is this sipguard the same \
                     version as the agent?",
                    path.display()
                )
            })
        };
        Ok(Self {
            sip_ports: Map::Array(open(MAP_SIP_PORTS)?).try_into()?,
            policy: Map::Array(open(MAP_POLICY)?).try_into()?,
            reason_stats: Map::PerCpuArray(open(MAP_REASON_STATS)?).try_into()?,
            class_stats: Map::PerCpuArray(open(MAP_CLASS_STATS)?).try_into()?,
        })
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
        let current: Vec<u8> = self.sip_ports.iter().collect::<Result<_, _>>()?;
        for (port, (want, have)) in bits.iter().zip(current).enumerate() {
            if *want != have {
                self.sip_ports.set(port as u32, want, 0)?;
            }
        }
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

    /// Push a whole configuration into the maps.
    pub fn apply(&mut self, cfg: &Config) -> Result<()> {
        self.set_ports(cfg)?;
        self.set_enforce(cfg.enforce)
    }
}
