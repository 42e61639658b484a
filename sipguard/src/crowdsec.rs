//! sipguard as a CrowdSec bouncer: the Local API's ban decisions (scope Ip
//! or Range) are kept in the blocklist as the named set `crowdsec`
//! (sets.rs), each entry expiring in the kernel when its decision does, so
//! an unreachable Local API never leaves a ban on past its time. Polled on
//! a thread of its own: `GET /v1/decisions/stream` with `startup=true` at
//! start and after every failure (the whole current list), deltas between.
//! Decisions pass the feed guards (guards.rs) first.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::IpNet;
use serde::Deserialize;
use tracing::{info, warn};

use sipguard_common::source::BanReason;

use crate::{
    addr,
    config::CrowdsecConfig,
    guards::{Guards, Refusal},
    maps::Maps,
    sets::{self, Sets},
    status, time,
};

/// The set CrowdSec's decisions are kept in.
pub const SET: &str = "crowdsec";
/// Longest wait between attempts while the Local API is unreachable.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A request to the Local API gives up after this long.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One decision as the stream reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Decision {
    pub id: u64,
    #[serde(default)]
    pub scenario: String,
    pub scope: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// `cscli` for an operator's decision; `crowdsec` for a watcher's
    /// (log parsers, sipguard), `CAPI` or `lists` for community lists.
    #[serde(default)]
    pub origin: String,
    /// Go-style, e.g. `59m59.05s`: how long it still holds.
    #[serde(default)]
    pub duration: String,
}

/// `GET /v1/decisions/stream`'s answer.
#[derive(Debug, Default, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<Decision>>,
    #[serde(default)]
    pub deleted: Option<Vec<Decision>>,
}

/// A decision sipguard can enforce: a ban of an address or a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub net: IpNet,
    pub expires_ns: u64,
    pub scenario: String,
    /// Made by an operator (`cscli decisions add`): not evidence a forger
    /// could have produced.
    pub by_operator: bool,
}

impl Decision {
    /// The ban this decision asks for at `now_ns`; `None` for what a packet
    /// filter cannot enforce (captchas, country or AS scopes).
    pub fn ban(&self, now_ns: u64) -> Result<Option<Ban>> {
        if !self.kind.eq_ignore_ascii_case("ban") {
            return Ok(None);
        }
        let net = match self.scope.to_ascii_lowercase().as_str() {
            "ip" => IpNet::from(self.value.parse::<IpAddr>().with_context(|| {
                format!("decision {}: {:?} is not an address", self.id, self.value)
            })?),
            "range" => self
                .value
                .parse::<IpNet>()
                .with_context(|| format!("decision {}: {:?} is not a range", self.id, self.value))?
                .trunc(),
            _ => return Ok(None),
        };
        let left = go_parse_duration::parse_duration(&self.duration)
            .map_err(|e| anyhow!("decision {}: duration {:?}: {e:?}", self.id, self.duration))?;
        Ok(Some(Ban {
            net,
            expires_ns: now_ns.saturating_add(left.max(0) as u64),
            scenario: self.scenario.clone(),
            by_operator: self.origin == "cscli",
        }))
    }
}

/// What the decisions ask of one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// When its last decision ends (`BlockEntry::expires_ns`).
    pub expires_ns: u64,
    /// That decision's scenario.
    pub scenario: String,
    /// Some decision of it is an operator's.
    pub by_operator: bool,
}

/// Per network, what its decisions ask.
pub type Wanted = BTreeMap<IpNet, Want>;

/// The decisions in force, by id.
#[derive(Debug, Default)]
pub struct Decisions {
    live: BTreeMap<u64, Ban>,
    /// Ids already reported as refused or unenforceable (logged once).
    told: BTreeSet<u64>,
}

impl Decisions {
    /// Take in one answer; `startup`: it is the whole list.
    pub fn update(&mut self, stream: Stream, startup: bool, now_ns: u64) {
        if startup {
            self.live.clear();
        }
        for d in stream.deleted.unwrap_or_default() {
            self.live.remove(&d.id);
        }
        for d in stream.new.unwrap_or_default() {
            match d.ban(now_ns) {
                Ok(Some(ban)) => {
                    self.live.insert(d.id, ban);
                }
                Ok(None) => {}
                Err(e) => {
                    if self.told.insert(d.id) {
                        warn!("CrowdSec decision ignored: {e:#}");
                    }
                }
            }
        }
    }

    /// Per network the latest expiry of its live decisions and a scenario.
    pub fn wanted(&self, now_ns: u64) -> Wanted {
        let mut out = Wanted::new();
        for ban in self.live.values().filter(|b| b.expires_ns > now_ns) {
            let w = out.entry(ban.net).or_default();
            if ban.expires_ns > w.expires_ns {
                (w.expires_ns, w.scenario) = (ban.expires_ns, ban.scenario.clone());
            }
            w.by_operator |= ban.by_operator;
        }
        out
    }
}

/// The bouncer's API key, from `[crowdsec] key_file`.
pub fn read_key(cfg: &CrowdsecConfig) -> Result<String> {
    let api_key = std::fs::read_to_string(&cfg.key_file)
        .with_context(|| {
            format!(
                "reading the CrowdSec bouncer key from {} ([crowdsec] key_file): create one with \
                 `cscli bouncers add sipguard` and write it there",
                cfg.key_file.display()
            )
        })?
        .trim()
        .to_string();
    if api_key.is_empty() {
        bail!(
            "{} is empty: it must hold the CrowdSec bouncer key",
            cfg.key_file.display()
        );
    }
    Ok(api_key)
}

/// The bouncer's thread, until `stop` is set. `polled`: when a poll last
/// succeeded, Unix seconds (a metric).
pub fn spawn(
    cfg: &CrowdsecConfig,
    api_key: String,
    pin_dir: PathBuf,
    key: String,
    stop: Arc<AtomicBool>,
    polled: Arc<AtomicU64>,
) -> Result<thread::JoinHandle<()>> {
    let url = format!("{}/v1/decisions/stream", cfg.url.trim_end_matches('/'));
    let cfg = cfg.clone();
    Ok(thread::Builder::new()
        .name("crowdsec".into())
        .spawn(move || {
            let mut bouncer = Bouncer::new(cfg, pin_dir, key);
            bouncer.run(&url, &api_key, &stop, &polled)
        })?)
}

/// Written again even when nothing changed, this often: the kernel's
/// blocklist may have been changed by hand meanwhile.
const RECONCILE: Duration = Duration::from_secs(60);

/// The decisions held and what was last written of them.
struct Bouncer {
    cfg: CrowdsecConfig,
    pin_dir: PathBuf,
    key: String,
    decisions: Decisions,
    /// Kept open between polls; opened again after an error.
    maps: Option<Maps>,
    /// What the last write made the set hold, and when.
    applied: Option<(Wanted, Instant)>,
}

impl Bouncer {
    fn new(cfg: CrowdsecConfig, pin_dir: PathBuf, key: String) -> Self {
        Bouncer {
            cfg,
            pin_dir,
            key,
            decisions: Decisions::default(),
            maps: None,
            applied: None,
        }
    }

    fn run(&mut self, url: &str, api_key: &str, stop: &AtomicBool, polled: &AtomicU64) {
        let agent = http(REQUEST_TIMEOUT);
        let mut startup = true;
        let mut failing = false;
        let mut wait = self.cfg.poll;
        info!(
            "CrowdSec bouncer polling {url} every {}",
            humantime::format_duration(self.cfg.poll)
        );
        while !stop.load(Ordering::Relaxed) {
            let done = poll(&agent, url, api_key, startup).and_then(|stream| {
                self.decisions.update(stream, startup, time::monotonic_ns());
                self.apply()
            });
            match done {
                Ok(()) => {
                    polled.store(crate::sets::unix_now(), Ordering::Relaxed);
                    if failing {
                        info!("CrowdSec Local API reachable again: decisions caught up");
                    }
                    (startup, failing, wait) = (false, false, self.cfg.poll);
                }
                Err(e) => {
                    if !failing {
                        warn!(
                            "CrowdSec Local API at {url}: {e:#}; filtering goes on with the \
                             decisions held (they expire on time), retrying with backoff"
                        );
                    }
                    // The whole list again once it answers: deletions missed
                    // meanwhile are then caught up.
                    (startup, failing) = (true, true);
                    self.maps = None;
                    wait = (wait * 2).min(BACKOFF_MAX).max(self.cfg.poll);
                }
            }
            let until = Instant::now() + wait;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50).min(wait));
            }
        }
    }

    /// Write the decisions in force when they differ from the last write
    /// (or it is `RECONCILE` old).
    fn apply(&mut self) -> Result<()> {
        let wanted = self.decisions.wanted(time::monotonic_ns());
        if let Some((last, at)) = &self.applied
            && *last == wanted
            && at.elapsed() < RECONCILE
        {
            return Ok(());
        }
        let maps = match &mut self.maps {
            Some(maps) => maps,
            None => self.maps.insert(Maps::from_pins(&self.pin_dir)?),
        };
        apply(&self.cfg, wanted.clone(), maps, &self.key)?;
        self.applied = Some((wanted, Instant::now()));
        Ok(())
    }
}

/// An HTTP client whose requests give up after `timeout`.
pub(crate) fn http(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(true)
            .build(),
    )
}

/// How long the agent's start waits for the Local API's first answer.
const FIRST_POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// One poll of the whole list, applied, before the program is attached: a
/// host that lost its blocklist (a reboot, a clean stop) drops the fleet's
/// banned sources from its first packet, when the Local API answers at
/// once. Returns the decisions in force.
pub fn first_poll(cfg: &CrowdsecConfig, api_key: &str, pin_dir: &Path, key: &str) -> Result<usize> {
    let url = format!("{}/v1/decisions/stream", cfg.url.trim_end_matches('/'));
    let stream = poll(&http(FIRST_POLL_TIMEOUT), &url, api_key, true)?;
    let mut decisions = Decisions::default();
    decisions.update(stream, true, time::monotonic_ns());
    let wanted = decisions.wanted(time::monotonic_ns());
    let n = wanted.len();
    apply(cfg, wanted, &mut Maps::from_pins(pin_dir)?, key)?;
    Ok(n)
}

fn poll(agent: &ureq::Agent, url: &str, api_key: &str, startup: bool) -> Result<Stream> {
    let mut res = agent
        .get(url)
        .query("startup", if startup { "true" } else { "false" })
        .header("X-Api-Key", api_key)
        .call()
        .context("polling decisions")?;
    res.body_mut()
        .read_json::<Stream>()
        .context("reading the decisions stream")
}

/// Make the blocklist's `crowdsec` set hold exactly `wanted`, behind the
/// guards, less what this host enforces already as its own bans.
fn apply(cfg: &CrowdsecConfig, mut wanted: Wanted, maps: &mut Maps, key: &str) -> Result<()> {
    let now = time::monotonic_ns();
    let guards = Guards {
        min_prefix_v4: cfg.min_prefix_v4,
        min_prefix_v6: cfg.min_prefix_v6,
        allow: maps.allow_list()?,
        own: status::own_addresses()?,
    };
    let v6_prefix = addr::mask_len(&maps.policy()?.v6_mask);
    // Sources that earned trust here: a decision on evidence a forger can
    // produce (a flood or scanner packet with a customer's address, seen
    // by another host) must not shut out a customer this host has seen
    // answered. Locally, trust lifts such a ban (`trust::learn`); a
    // blocklist entry would drop the customer before trust is looked at.
    let trusted: BTreeSet<IpAddr> = maps
        .trusted_list()?
        .into_iter()
        .filter(|(_, t)| t.expires_ns > now)
        .map(|(k, _)| addr::src_net(&k, v6_prefix).network())
        .collect();
    // Its own bans came back as the fleet's decisions: the kernel ban
    // already drops the source, and keeps its probation and its lifting by
    // trust (`policy::probation`), which a blocklist entry would not.
    let banned: BTreeSet<IpNet> = maps
        .bans_list()?
        .into_iter()
        .filter(|(_, b)| b.expires_ns > now && b.reason != BanReason::Manual as u32)
        .map(|(k, _)| addr::src_net(&k, v6_prefix))
        .collect();
    let mut refused = 0;
    wanted.retain(|net, want| {
        if banned.contains(net) {
            return false;
        }
        let why = guards.check(net).err().or_else(|| {
            let inside = trusted.range(net.network()..=net.broadcast()).next();
            inside
                .filter(|_| !want.by_operator)
                .map(|a| Refusal::Trusted(*a))
        });
        match why {
            None => true,
            Some(why) => {
                refused += 1;
                warn!(
                    "CrowdSec decision for {net} ({}) refused: {why}",
                    want.scenario
                );
                false
            }
        }
    });
    let sets = Sets::open(key)?;
    let prev = sets.load(SET)?;
    let others = sets.others(SET)?;
    let blocked: BTreeMap<IpNet, u64> = maps
        .block_list()?
        .into_iter()
        .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
        .map(|(n, e)| (n, e.expires_ns))
        .collect();
    let desired = wanted.iter().map(|(n, w)| (*n, w.expires_ns)).collect();
    let mut plan = sets::plan(&prev, &others, desired, &blocked);
    for (net, expires_ns) in &plan.add {
        maps.block_add(&[*net], *expires_ns)?;
    }
    if !plan.remove.is_empty() {
        maps.block_del(&plan.remove)?;
    }
    plan.file.refused = refused;
    plan.file.notes = wanted
        .into_iter()
        .map(|(net, w)| (net, w.scenario))
        .collect();
    sets.save(SET, &plan.file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(id: u64, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id,
            scenario: "test".into(),
            scope: scope.into(),
            kind: "ban".into(),
            value: value.into(),
            origin: "crowdsec".into(),
            duration: duration.into(),
        }
    }

    #[test]
    fn stream_answers_as_the_local_api_sends_them() {
        let text = r#"{"deleted":null,"new":[{"duration":"59m59.055351419s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'local'","scope":"Ip","type":"ban","value":"198.18.9.9"},{"duration":"1h59m59s","id":2,"origin":"cscli","scenario":"x","scope":"Range","type":"ban","value":"198.19.0.0/24"},{"duration":"4h","id":3,"origin":"cscli","scenario":"x","scope":"Ip","type":"captcha","value":"198.19.1.1"}]}"#;
        let stream: Stream = serde_json::from_str(text).unwrap();
        let mut d = Decisions::default();
        d.update(stream, true, 1_000);
        let wanted = d.wanted(1_000);
        let nets: Vec<String> = wanted.keys().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["198.18.9.9/32", "198.19.0.0/24"],
            "captcha is not a ban"
        );
        let want = &wanted[&"198.18.9.9/32".parse::<IpNet>().unwrap()];
        assert_eq!(want.expires_ns, 1_000 + 3_599_055_351_419);
        assert!(want.by_operator, "cscli's");
    }

    #[test]
    fn deltas_add_and_delete_and_startup_replaces() {
        let mut d = Decisions::default();
        let s = |new: Vec<Decision>, deleted: Vec<Decision>| Stream {
            new: Some(new),
            deleted: Some(deleted),
        };
        d.update(
            s(vec![decision(1, "Ip", "198.18.9.1", "1h")], vec![]),
            true,
            0,
        );
        d.update(
            s(vec![decision(2, "Ip", "198.18.9.2", "1h")], vec![]),
            false,
            0,
        );
        assert_eq!(d.wanted(0).len(), 2);
        d.update(
            s(vec![], vec![decision(1, "Ip", "198.18.9.1", "0s")]),
            false,
            0,
        );
        assert_eq!(d.wanted(0).len(), 1);
        // A decision that ran out no longer counts.
        assert!(d.wanted(3_600_000_000_001).is_empty());
        d.update(
            s(vec![decision(3, "Ip", "198.18.9.3", "1h")], vec![]),
            true,
            0,
        );
        let nets: Vec<String> = d.wanted(0).keys().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["198.18.9.3/32"]);
    }
}
