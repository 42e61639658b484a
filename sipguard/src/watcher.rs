//! sipguard as a CrowdSec watcher: each ban the programs make (or the
//! agent, when it widens IPv6 bans) is pushed to the Local API as an alert
//! carrying its decision, so every bouncer of the fleet enforces it. The
//! agent's ban-event reader hands bans over a bounded queue; a thread of
//! its own logs in as a machine (`cscli machines add`) and posts them in
//! batches. While the Local API is unreachable, bans wait in the queue
//! (the oldest dropped past `QUEUE_MAX`) and those that have expired by
//! the time it answers are not sent. Decisions that came from CrowdSec
//! live in the blocklist, never in the ban table, so none is sent back.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sipguard_common::{policy::Bucket, source::BanReason};
use tracing::{info, warn};

use crate::{addr, config::CrowdsecConfig, crowdsec, time};

/// Bans waiting for the Local API, at most.
pub const QUEUE_MAX: usize = 10_000;
/// Alerts posted in one request, at most.
const BATCH_MAX: usize = 100;
/// How long the thread gathers bans into one request.
const GATHER: Duration = Duration::from_millis(50);

/// A ban to report.
#[derive(Clone, Debug)]
pub struct Notice {
    pub net: IpNet,
    /// `BanReason`.
    pub reason: u32,
    /// `Ban::detail`: the `Bucket` for floods, the signature id for
    /// scanners.
    pub code: u32,
    /// Signature name or bucket, as the log shows it.
    pub detail: String,
    /// Packets per second that earned the ban, when it was a rate.
    pub rate: Option<f64>,
    pub expires_ns: u64,
    pub at: SystemTime,
}

/// Alerts sent and lost, for the metrics.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Alerts the Local API accepted.
    pub sent: AtomicU64,
    /// Requests that failed (each retried while its bans hold).
    pub failed: AtomicU64,
    /// Bans never reported: the queue was full, or they expired first.
    pub dropped: AtomicU64,
}

/// The scenario name an alert carries: what happened, under `sipguard/`.
/// `None` for bans an operator made by hand: theirs to share.
pub fn scenario(reason: u32, detail: u32) -> Option<String> {
    let name = match reason {
        r if r == BanReason::Flood as u32 => {
            let bucket = Bucket::ALL
                .get((detail & !sipguard_common::source::BAN_CONFIRMED) as usize)
                .map_or("sip", |b| b.name());
            return Some(format!("sipguard/sip-{bucket}-flood"));
        }
        r if r == BanReason::Scanner as u32 => "sip-scanner",
        r if r == BanReason::Enumeration as u32 => "sip-enumeration",
        r if r == BanReason::AuthFailure as u32 => "sip-auth-failure",
        r if r == BanReason::Widened as u32 => "sip-ipv6-prefix-widened",
        _ => return None,
    };
    Some(format!("sipguard/{name}"))
}

/// Every scenario sipguard reports, for the machine's login.
fn scenarios() -> Vec<String> {
    let mut all: Vec<String> = Bucket::ALL
        .iter()
        .filter_map(|b| scenario(BanReason::Flood as u32, *b as u32))
        .collect();
    all.extend(
        [
            BanReason::Scanner,
            BanReason::Enumeration,
            BanReason::AuthFailure,
            BanReason::Widened,
        ]
        .iter()
        .filter_map(|r| scenario(*r as u32, 0)),
    );
    all
}

#[derive(Serialize)]
struct Login<'a> {
    machine_id: &'a str,
    password: &'a str,
    scenarios: Vec<String>,
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
}

#[derive(Debug, Serialize)]
struct Source {
    scope: &'static str,
    value: String,
}

#[derive(Debug, Serialize)]
struct Decision {
    origin: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    scope: &'static str,
    value: String,
    duration: String,
    scenario: String,
}

/// One alert as `POST /v1/alerts` takes it.
#[derive(Debug, Serialize)]
struct Alert {
    scenario: String,
    scenario_hash: &'static str,
    scenario_version: &'static str,
    message: String,
    events_count: u64,
    start_at: String,
    stop_at: String,
    capacity: u32,
    leakspeed: &'static str,
    simulated: bool,
    events: [(); 0],
    remediation: bool,
    source: Source,
    decisions: [Decision; 1],
}

/// The alert for `n` at `now_ns`; `None` once its ban has expired (or for
/// a ban made by hand).
fn alert(n: &Notice, host: &str, now_ns: u64) -> Option<Alert> {
    let scenario = scenario(n.reason, n.code)?;
    let left = n
        .expires_ns
        .checked_sub(now_ns)
        .filter(|l| *l >= 1_000_000_000)?;
    let scope = if addr::is_host(n.net) { "Ip" } else { "Range" };
    let value = addr::show_net(n.net);
    let rate = n
        .rate
        .map(|r| format!(" at {r:.0} packets/s"))
        .unwrap_or_default();
    let at = humantime::format_rfc3339_seconds(n.at).to_string();
    Some(Alert {
        message: format!(
            "sipguard on {host} banned {value}: {} ({}){rate}",
            BanReason::name(n.reason),
            n.detail
        ),
        scenario: scenario.clone(),
        scenario_hash: "",
        scenario_version: "",
        events_count: 1,
        start_at: at.clone(),
        stop_at: at,
        capacity: 0,
        leakspeed: "0",
        simulated: false,
        events: [],
        remediation: true,
        source: Source {
            scope,
            value: value.clone(),
        },
        decisions: [Decision {
            // What CrowdSec's own tools list by default (`cscli decisions
            // list` hides other origins); the scenario and the machine say
            // it was sipguard.
            origin: "crowdsec",
            kind: "ban",
            scope,
            value,
            duration: format!("{}s", left / 1_000_000_000),
            scenario,
        }],
    })
}

/// The machine's password, from `[crowdsec] watcher_password_file`.
pub fn read_password(cfg: &CrowdsecConfig) -> Result<String> {
    let path = &cfg.watcher_password_file;
    let password = std::fs::read_to_string(path)
        .with_context(|| {
            format!(
                "reading the CrowdSec machine password from {} ([crowdsec] \
                 watcher_password_file): create the machine with `cscli machines add {} \
                 --password PASSWORD -f /dev/null` and write PASSWORD there",
                path.display(),
                cfg.watcher_login
            )
        })?
        .trim()
        .to_string();
    if password.is_empty() {
        bail!(
            "{} is empty: it must hold the machine's password",
            path.display()
        );
    }
    Ok(password)
}

/// The queue bans are handed over on and the watcher's thread.
pub fn spawn(
    cfg: &CrowdsecConfig,
    password: String,
    stats: Arc<AlertStats>,
) -> Result<(SyncSender<Notice>, thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_MAX);
    let cfg = cfg.clone();
    let thread = thread::Builder::new()
        .name("crowdsec-alerts".into())
        .spawn(move || run(&cfg, &password, &rx, &stats))?;
    Ok((tx, thread))
}

/// Hand `notice` to the watcher without waiting; counted as dropped when
/// the queue is full.
pub fn offer(tx: &SyncSender<Notice>, notice: Notice, stats: &AlertStats) {
    if let Err(TrySendError::Full(_)) = tx.try_send(notice) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Until the sending side is dropped (the agent stops).
fn run(cfg: &CrowdsecConfig, password: &str, rx: &Receiver<Notice>, stats: &AlertStats) {
    let base = cfg.url.trim_end_matches('/');
    let host = hostname();
    let http = crowdsec::http(crowdsec::REQUEST_TIMEOUT);
    let mut token: Option<String> = None;
    let mut pending: Vec<Notice> = Vec::new();
    let mut failing = false;
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    info!(
        login = %cfg.watcher_login,
        "CrowdSec watcher: sipguard's bans go to {base} as alerts"
    );
    loop {
        // Wait for a ban (or the retry), then gather what follows it.
        let wait = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            retry_at.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(n) => pending.push(n),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let gather_until = Instant::now() + GATHER;
        while pending.len() < QUEUE_MAX {
            match rx.recv_timeout(gather_until.saturating_duration_since(Instant::now())) {
                Ok(n) => pending.push(n),
                Err(_) => break,
            }
        }
        if Instant::now() < retry_at {
            continue;
        }
        let now = time::monotonic_ns();
        let before = pending.len();
        pending.retain(|n| alert(n, &host, now).is_some());
        stats
            .dropped
            .fetch_add((before - pending.len()) as u64, Ordering::Relaxed);
        while !pending.is_empty() {
            let take = pending.len().min(BATCH_MAX);
            let batch: Vec<Alert> = pending[..take]
                .iter()
                .filter_map(|n| alert(n, &host, now))
                .collect();
            match post(&http, base, cfg, password, &mut token, &batch) {
                Ok(()) => {
                    stats.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    pending.drain(..take);
                    if failing {
                        info!("CrowdSec Local API reachable again: held bans sent");
                    }
                    (failing, backoff) = (false, Duration::ZERO);
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(
                            "sending bans to the CrowdSec Local API at {base}: {e:#}; they wait \
                             (up to {QUEUE_MAX}) and go when it answers"
                        );
                    }
                    failing = true;
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(500), crowdsec::BACKOFF_MAX);
                    retry_at = Instant::now() + backoff;
                    break;
                }
            }
        }
        if pending.len() > QUEUE_MAX {
            let over = pending.len() - QUEUE_MAX;
            pending.drain(..over);
            stats.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
    }
}

/// Post `alerts`, logging in first when there is no token or it was
/// refused.
fn post(
    http: &ureq::Agent,
    base: &str,
    cfg: &CrowdsecConfig,
    password: &str,
    token: &mut Option<String>,
    alerts: &[Alert],
) -> Result<()> {
    for attempt in 0..2 {
        let bearer = match token {
            Some(t) => t.clone(),
            None => {
                let t = login(http, base, &cfg.watcher_login, password)?;
                token.insert(t).clone()
            }
        };
        let res = http
            .post(format!("{base}/v1/alerts"))
            .header("Authorization", format!("Bearer {bearer}"))
            .send_json(alerts);
        match res {
            Ok(_) => return Ok(()),
            // The token expired (or the Local API restarted with a new
            // secret): log in again, once.
            Err(ureq::Error::StatusCode(401 | 403)) if attempt == 0 => *token = None,
            Err(e) => return Err(e).context("posting alerts"),
        }
    }
    bail!("the Local API refused the machine's token twice")
}

fn login(http: &ureq::Agent, base: &str, machine_id: &str, password: &str) -> Result<String> {
    let mut res = http
        .post(format!("{base}/v1/watchers/login"))
        .send_json(Login {
            machine_id,
            password,
            scenarios: scenarios(),
        })
        .with_context(|| {
            format!(
                "logging in as machine {machine_id:?} (check `cscli machines list` and \
                 [crowdsec] watcher_password_file)"
            )
        })?;
    Ok(res.body_mut().read_json::<LoginAnswer>()?.token)
}

fn hostname() -> String {
    std::fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(net: &str, reason: BanReason, bucket: u32) -> Notice {
        Notice {
            net: net.parse().unwrap(),
            reason: reason as u32,
            code: bucket,
            detail: "invite".into(),
            rate: Some(850.4),
            expires_ns: 301_500_000_000,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_669_668),
        }
    }

    #[test]
    fn alerts_say_what_happened_with_the_time_the_ban_has_left() {
        let a = alert(
            &notice("198.18.7.7/32", BanReason::Flood, 0),
            "sbc1",
            1_000_000_000,
        )
        .unwrap();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["scenario"], "sipguard/sip-invite-flood");
        assert_eq!(json["source"]["scope"], "Ip");
        assert_eq!(json["source"]["value"], "198.18.7.7");
        assert_eq!(json["decisions"][0]["duration"], "300s");
        assert_eq!(json["decisions"][0]["origin"], "crowdsec");
        assert_eq!(json["decisions"][0]["type"], "ban");
        assert_eq!(json["start_at"], "2026-12-07T18:54:28Z");
        assert_eq!(
            json["message"],
            "sipguard on sbc1 banned 198.18.7.7: flood (invite) at 850 packets/s"
        );
        let v6 = alert(&notice("2001:db8:1:2::/64", BanReason::Scanner, 3), "h", 0).unwrap();
        assert_eq!(v6.scenario, "sipguard/sip-scanner");
        assert_eq!(
            (v6.source.scope, v6.source.value.as_str()),
            ("Range", "2001:db8:1:2::/64")
        );
    }

    #[test]
    fn expired_and_manual_bans_are_not_sent() {
        let n = notice("198.18.7.7/32", BanReason::Flood, 0);
        assert!(alert(&n, "h", n.expires_ns).is_none());
        assert!(
            alert(&n, "h", n.expires_ns - 999_999_999).is_none(),
            "under a second left"
        );
        assert!(alert(&notice("198.18.7.7/32", BanReason::Manual, 0), "h", 0).is_none());
    }

    #[test]
    fn every_scenario_is_named_for_the_login() {
        let all = scenarios();
        assert_eq!(all.len(), Bucket::ALL.len() + 4);
        assert!(all.contains(&"sipguard/sip-register-flood".to_string()));
        assert!(all.iter().all(|s| s.starts_with("sipguard/sip-")));
    }
}
