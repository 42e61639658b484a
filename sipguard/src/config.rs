//! The TOML configuration file (`sipguard run --config FILE`).
//!
//! Every key has a default, so an empty file (or none) gives a working agent.
//! Unknown keys are refused: a typo must not silently leave a default in place.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Drop what the rules say to drop. `false` is monitor mode: everything is
    /// evaluated and counted as would-drop, nothing is dropped.
    pub enforce: bool,
    pub sip: SipPorts,
}

/// Which destination ports carry SIP. Only these are inspected; all other
/// traffic passes untouched.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipPorts {
    pub udp_ports: Vec<u16>,
    pub tcp_ports: Vec<u16>,
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
            sip: SipPorts::default(),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
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
        if self.sip.udp_ports.is_empty() && self.sip.tcp_ports.is_empty() {
            bail!("sip.udp_ports and sip.tcp_ports are both empty: sipguard would inspect nothing");
        }
        Ok(())
    }
}
