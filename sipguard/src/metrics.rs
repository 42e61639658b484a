//! Prometheus metrics: `GET /metrics` in the OpenMetrics text format, served
//! by the agent on a small HTTP/1.1 server (default `127.0.0.1:9464`).
//!
//! Every scrape reads the BPF maps through the agent's pins at that moment
//! (`Snapshot::read` plus a walk of the bans): there is no background copy
//! that could go stale. The counters the program keeps (`REASON_STATS`,
//! `CLASS_STATS`, `TABLE_STATS`, `SIG_HITS`) only grow while the maps live, so
//! they are exported as counters; they start from zero when the maps are
//! created (not when an agent adopts pinned maps), which Prometheus treats as
//! an ordinary counter reset.
//!
//! Cost of one scrape: a few hundred per-CPU array lookups for the counters,
//! plus one `bpf_map_get_next_key` per entry of the allowlist, blocklist, bans
//! and per-source rate state (the table fill), and one lookup per ban (the
//! unexpired ones). Measured on 2 cores (release build): about 6 ms with small
//! tables, 0.5 s with the 262 144-entry sources table full, 0.8 s with the ban
//! table full too, and a full blocklist adds about 0.6 s;
//! `sipguard_scrape_duration_seconds` reports it. The walk runs on a blocking
//! thread, one scrape at a time, so it never stalls the agent's event loop.
//! (Counting the two hash tables with `BPF_MAP_LOOKUP_BATCH` in `stats.rs`
//! would make them about 5 times cheaper, for `sipguard stats` too; LPM tries
//! have no batch lookup.)
//!
//! The agent wires it up with one task (see `serve` and `serve_on`); the
//! handles in `AgentInfo` let it report config reloads and swept bans.

use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt,
    future::Future,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::{Registry, Unit},
};
use sipguard_common::{Verdict, maps::TableStat, source::BanReason};
use tokio::{
    net::TcpListener,
    task::{AbortHandle, JoinSet},
};
use tracing::{debug, info, warn};

use crate::{maps::Maps, signatures::Row, stats::Snapshot, time};

/// Where the agent serves metrics unless told otherwise: loopback only, so
/// nothing is exposed until the operator chooses an address. 9464 is the
/// port commonly used by exporters that have no port of their own.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The one path with content.
pub const PATH: &str = "/metrics";

/// Content type of the exposition (OpenMetrics 1.0 text).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Open HTTP connections kept; a new one beyond them replaces the oldest
/// that is not answering a request. Prometheus uses one per target.
const MAX_CONNECTIONS: usize = 16;

/// A client that does not send its request headers within this time is
/// disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Facts about the running agent, exported beside the map counters.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    /// The protected interface.
    pub iface: String,
    /// XDP attach mode: `native` or `skb` (`auto` when it was not determined).
    pub mode: String,
    /// sipguard's version.
    pub version: String,
    /// When the agent started.
    pub start_time: SystemTime,
    /// Outcome of the last configuration (re)load; the agent updates it.
    pub reload: Arc<ReloadStatus>,
    /// Expired bans the agent's periodic sweep removed (the program counts
    /// those it removes itself in `TABLE_STATS`); the agent adds to it.
    pub bans_swept: Arc<AtomicU64>,
    /// The running kernel (`uname -r`).
    pub kernel: String,
    /// How the TC egress program is attached: `tcx`, `netlink` or `off`.
    pub tc_egress: String,
    /// Bans set since the agent started, by reason; the ban-event reader
    /// adds to it.
    pub bans: Arc<BanCounts>,
    /// Bans reported to CrowdSec (watcher.rs); the watcher adds to it.
    pub alerts: Arc<crate::watcher::AlertStats>,
    /// When the CrowdSec bouncer last polled successfully, Unix seconds (0:
    /// not yet); `None` while it is off.
    pub crowdsec_polled: Option<Arc<AtomicU64>>,
}

/// `BanReason` codes are 1..=6; 0 holds what no reason names.
pub const BAN_REASONS: usize = 7;

/// Bans counted by `BanReason` code.
#[derive(Debug, Default)]
pub struct BanCounts([AtomicU64; BAN_REASONS]);

impl BanCounts {
    pub fn add(&self, reason: u32) {
        self.0[(reason as usize).min(BAN_REASONS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: u32) -> u64 {
        self.0[(reason as usize).min(BAN_REASONS - 1)].load(Ordering::Relaxed)
    }
}

impl AgentInfo {
    /// Info for an agent on `iface` attached in `mode`, starting now, with
    /// its configuration loaded successfully now.
    pub fn new(iface: impl Into<String>, mode: impl Into<String>) -> Self {
        Self {
            iface: iface.into(),
            mode: mode.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: SystemTime::now(),
            reload: Arc::new(ReloadStatus::new()),
            bans_swept: Arc::new(AtomicU64::new(0)),
            kernel: crate::kernel::Release::running().text,
            tc_egress: "off".to_string(),
            bans: Arc::default(),
            alerts: Arc::default(),
            crowdsec_polled: None,
        }
    }
}

/// The outcome of the last configuration (re)load, shared between the agent
/// (which records it, e.g. on SIGHUP) and the metrics server.
#[derive(Debug)]
pub struct ReloadStatus(Mutex<ReloadOutcome>);

/// See `ReloadStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Whether the last attempt succeeded.
    pub success: bool,
    /// When the configuration was last loaded successfully (the start counts).
    pub last_success: SystemTime,
}

impl ReloadStatus {
    /// A configuration loaded successfully now (at agent start).
    pub fn new() -> Self {
        Self(Mutex::new(ReloadOutcome {
            success: true,
            last_success: SystemTime::now(),
        }))
    }

    /// Record a reload attempt.
    pub fn record(&self, success: bool) {
        let mut o = self.0.lock().unwrap_or_else(|p| p.into_inner());
        o.success = success;
        if success {
            o.last_success = SystemTime::now();
        }
    }

    pub fn last(&self) -> ReloadOutcome {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ReloadStatus {
    fn default() -> Self {
        Self::new()
    }
}

/// What one scrape read from the maps.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub snapshot: Snapshot,
    /// Bans in the map that have not expired yet (expired ones wait there for
    /// the program or the agent's sweep to remove them), by reason
    /// (`BanReason` code).
    pub bans_active: [u64; BAN_REASONS],
    /// Whether `POLICY_ENFORCE` is set (drop) or not (monitor mode).
    pub enforcing: bool,
    /// Scanner signatures with their tier and hits.
    pub signatures: Vec<Row>,
    /// Time taken to read the maps.
    pub duration: Duration,
    /// The named blocklist sets (`block sync`) as last synced.
    pub sets: Vec<(String, crate::sets::SetFile)>,
}

impl Reading {
    pub fn read(maps: &Maps) -> Result<Self> {
        let started = Instant::now();
        let snapshot = Snapshot::read(maps)?;
        let now = time::monotonic_ns();
        // Entries deleted while we walk are skipped, like `Snapshot` does.
        let mut bans_active = [0; BAN_REASONS];
        for (_, ban) in maps.bans.iter().filter_map(|kv| kv.ok()) {
            if ban.expires_ns > now {
                bans_active[(ban.reason as usize).min(BAN_REASONS - 1)] += 1;
            }
        }
        let enforcing = maps.policy()?.enforcing();
        let signatures = maps.signatures()?;
        Ok(Self {
            snapshot,
            bans_active,
            enforcing,
            signatures,
            duration: started.elapsed(),
            sets: Vec::new(),
        })
    }
}

/// The OpenMetrics text for one reading, ending with `# EOF`.
pub fn encode(reading: &Reading, info: &AgentInfo) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        reading: reading.clone(),
        info: info.clone(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|_| anyhow!("encoding the metrics failed"))?;
    Ok(out)
}

/// Every metric family, written at scrape time from a `Reading`.
#[derive(Debug)]
struct Exposition {
    reading: Reading,
    info: AgentInfo,
}

type Labels2<'a> = [(&'static str, &'a str); 2];

fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(family)
}

fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> fmt::Result {
    let family = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family)
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let r = &self.reading;
        let s = &r.snapshot;
        let secs = Unit::Seconds;

        // Every packet: (verdict, reason). Families with a unit are named
        // after it (OpenMetrics): `sipguard` + bytes = `sipguard_bytes`.
        let by_reason = |f: fn(&crate::stats::Totals) -> u64| {
            s.reasons.iter().flat_map(move |(reason, by)| {
                Verdict::ALL.map(|v| {
                    let labels: Labels2 = [("verdict", v.name()), ("reason", reason)];
                    (labels, f(&by.get(v)))
                })
            })
        };
        counters(
            &mut enc,
            "sipguard_packets",
            "Packets the XDP program saw, by verdict (pass, drop, would_drop) and the rule or \
             parse outcome that decided it",
            None,
            by_reason(|t| t.packets),
        )?;
        counters(
            &mut enc,
            "sipguard",
            "Bytes of the packets in sipguard_packets_total",
            Some(&Unit::Bytes),
            by_reason(|t| t.bytes),
        )?;

        // Traffic to SIP ports: (verdict, class).
        let by_class = |f: fn(&crate::stats::Totals) -> u64| {
            s.classes.iter().flat_map(move |(class, by)| {
                Verdict::ALL.map(|v| {
                    let labels: Labels2 = [("verdict", v.name()), ("class", class)];
                    (labels, f(&by.get(v)))
                })
            })
        };
        counters(
            &mut enc,
            "sipguard_sip_packets",
            "Packets to SIP ports, by verdict and by what they were classified as (method, \
             response, not_sip, tcp)",
            None,
            by_class(|t| t.packets),
        )?;
        counters(
            &mut enc,
            "sipguard_sip",
            "Bytes of the packets in sipguard_sip_packets_total",
            Some(&Unit::Bytes),
            by_class(|t| t.bytes),
        )?;

        // Bans.
        let t = &s.tables;
        let event = |e: TableStat| t.events.get(e.name()).copied().unwrap_or(0);
        let reasons = || (1..BAN_REASONS as u32).map(|code| (code, BanReason::name(code)));
        gauges(
            &mut enc,
            "sipguard_bans_active",
            "Sources under a ban that has not expired, by reason",
            reasons().map(|(code, name)| ([("reason", name)], r.bans_active[code as usize])),
        )?;
        counters(
            &mut enc,
            "sipguard_bans",
            "Bans set since the agent started, by reason (from the programs' ban events, and \
             the agent's widened IPv6 bans; events lost in a ban storm are counted in \
             sipguard_table_events_total{event=\"ban_event_lost\"})",
            None,
            reasons().map(|(code, name)| ([("reason", name)], self.info.bans.get(code))),
        )?;
        counter(
            &mut enc,
            "sipguard_bans_added",
            "Bans the XDP program set (rate, scanner and enumeration bans; not bans added by \
             hand)",
            event(TableStat::BanAdded),
        )?;
        counters(
            &mut enc,
            "sipguard_bans_expired",
            "Expired bans removed from the ban table: by the XDP program when the banned source \
             sent again (removed_by=program), or by the agent's periodic sweep \
             (removed_by=agent)",
            None,
            [
                ([("removed_by", "program")], event(TableStat::BanExpired)),
                (
                    [("removed_by", "agent")],
                    self.info.bans_swept.load(Ordering::Relaxed),
                ),
            ],
        )?;

        // Tables.
        let fills = [
            ("allow", t.allow),
            ("block", t.block),
            ("bans", t.bans),
            ("sources", t.sources),
            ("trusted", t.trusted),
        ];
        gauges(
            &mut enc,
            "sipguard_table_entries",
            "Entries in each table (bans: including expired bans not yet removed)",
            fills.map(|(name, f)| ([("table", name)], f.entries)),
        )?;
        gauges(
            &mut enc,
            "sipguard_table_capacity",
            "Maximum entries of each table (`[tables]` in the config file)",
            fills.map(|(name, f)| ([("table", name)], f.capacity)),
        )?;
        gauges(
            &mut enc,
            "sipguard_table_memory_bytes",
            "Kernel memory charged for each table",
            fills.map(|(name, f)| ([("table", name)], f.memory_bytes)),
        )?;
        counters(
            &mut enc,
            "sipguard_table_events",
            "Table events counted by the XDP program, by event (src_state_new, src_state_full, \
             ban_added, ban_table_full, ban_expired, ban_event_lost, ...)",
            None,
            t.events.iter().map(|(name, n)| ([("event", *name)], *n)),
        )?;
        counter(
            &mut enc,
            "sipguard_sources_evicted",
            "Per-source rate states recycled by the LRU table (src_state_new minus live entries)",
            t.sources_evicted,
        )?;

        // Blocklist feeds (named sets).
        let sets = &r.sets;
        gauges(
            &mut enc,
            "sipguard_blocklist_set_entries",
            "Entries of each named blocklist set (sipguard block sync) at its last sync",
            sets.iter()
                .map(|(name, s)| ([("set", name.as_str())], s.entries.len() as u64)),
        )?;
        gauges(
            &mut enc,
            "sipguard_blocklist_set_refused",
            "Entries of each named blocklist set's last sync that its guards refused (too \
             broad, allowlisted, this host's address)",
            sets.iter()
                .map(|(name, s)| ([("set", name.as_str())], s.refused)),
        )?;
        gauges(
            &mut enc,
            "sipguard_blocklist_set_synced_timestamp_seconds",
            "When each named blocklist set was last synced (Unix time)",
            sets.iter()
                .map(|(name, s)| ([("set", name.as_str())], s.synced_at)),
        )?;

        // CrowdSec bouncer (crowdsec.rs) and watcher (watcher.rs).
        if let Some(polled) = &self.info.crowdsec_polled {
            gauge(
                &mut enc,
                "sipguard_crowdsec_last_poll_timestamp_seconds",
                "When the CrowdSec bouncer last polled the Local API successfully (Unix time; 0: \
                 not yet). Alert when it grows old: the fleet's new bans are not arriving",
                None,
                polled.load(Ordering::Relaxed),
            )?;
        }
        let alerts = &self.info.alerts;
        counters(
            &mut enc,
            "sipguard_crowdsec_alerts",
            "sipguard's bans reported to the CrowdSec Local API (outcome=sent), bans never \
             reported because the queue was full or they expired while it was unreachable \
             (outcome=dropped), and requests that failed and were retried (outcome=failed)",
            None,
            [
                ([("outcome", "sent")], alerts.sent.load(Ordering::Relaxed)),
                (
                    [("outcome", "dropped")],
                    alerts.dropped.load(Ordering::Relaxed),
                ),
                (
                    [("outcome", "failed")],
                    alerts.failed.load(Ordering::Relaxed),
                ),
            ],
        )?;

        // Signatures.
        counters(
            &mut enc,
            "sipguard_signature_hits",
            "Requests that matched a scanner signature, by signature token and tier (ban: \
             dropped and banned; count: counted only)",
            None,
            r.signatures.iter().map(|row| {
                let labels: Labels2 = [("signature", &row.token), ("tier", row.tier)];
                (labels, row.hits)
            }),
        )?;

        // The agent.
        let i = &self.info;
        let family = enc.encode_descriptor(
            "sipguard",
            "The running agent: sipguard version, protected interface, XDP attach mode, kernel, \
             how the TC egress program is attached (tcx, netlink or off)",
            None,
            MetricType::Info,
        )?;
        Info::new([
            ("version", i.version.clone()),
            ("iface", i.iface.clone()),
            ("mode", i.mode.clone()),
            ("kernel", i.kernel.clone()),
            ("tc_egress", i.tc_egress.clone()),
        ])
        .encode(family)?;
        // What the egress program carries: off on a kernel where it could
        // not be attached (the agent logs why at start).
        let egress_on = u64::from(i.tc_egress != "off");
        gauges(
            &mut enc,
            "sipguard_feature_enabled",
            "1 when this kernel runs the feature, 0 when it is off (the agent logs why at start): \
             earned_trust and auth_failure_bans need the TC egress program",
            [
                ([("feature", "earned_trust")], egress_on),
                ([("feature", "auth_failure_bans")], egress_on),
            ],
        )?;
        gauge(
            &mut enc,
            "sipguard_enforcing",
            "1 when rules drop packets, 0 in monitor mode (matches only counted as would_drop)",
            None,
            u64::from(r.enforcing),
        )?;
        gauge(
            &mut enc,
            "sipguard_start_time",
            "When the agent started, in seconds since the Unix epoch",
            Some(&secs),
            unix_seconds(i.start_time),
        )?;
        let reload = i.reload.last();
        gauge(
            &mut enc,
            "sipguard_config_reload_success",
            "1 when the last configuration (re)load succeeded, 0 when it failed (the previous \
             configuration stays in force)",
            None,
            u64::from(reload.success),
        )?;
        gauge(
            &mut enc,
            "sipguard_config_reload_timestamp",
            "When the configuration was last loaded successfully, in seconds since the Unix \
             epoch",
            Some(&secs),
            unix_seconds(reload.last_success),
        )?;
        gauge(
            &mut enc,
            "sipguard_scrape_duration",
            "Time this scrape took to read the BPF maps",
            Some(&secs),
            r.duration.as_secs_f64(),
        )?;
        Ok(())
    }
}

/// Reads the maps for scrapes, one at a time.
struct Scraper {
    pin_dir: PathBuf,
    info: AgentInfo,
    state: Mutex<ScrapeState>,
}

#[derive(Default)]
struct ScrapeState {
    /// Opened on the first scrape, and again after a failed read.
    maps: Option<Maps>,
    /// `sources_evicted` is derived (new states minus live ones, read at
    /// slightly different moments), so it can dip by a few between scrapes;
    /// a counter must not, so the highest value exported is kept.
    evicted_floor: u64,
}

impl Scraper {
    fn scrape(&self) -> Result<String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.maps.is_none() {
            st.maps = Some(Maps::from_pins(&self.pin_dir)?);
            st.evicted_floor = 0;
        }
        let maps = st.maps.as_ref().expect("opened above");
        let mut reading = match Reading::read(maps) {
            Ok(r) => r,
            Err(e) => {
                st.maps = None;
                return Err(e);
            }
        };
        let evicted = &mut reading.snapshot.tables.sources_evicted;
        *evicted = (*evicted).max(st.evicted_floor);
        st.evicted_floor = *evicted;
        drop(st);
        if let Some(key) = self.pin_dir.file_name().and_then(|k| k.to_str()) {
            reading.sets = crate::sets::read_all(key);
        }
        encode(&reading, &self.info)
    }
}

/// Bind the metrics address (fails at once when it is taken, so the agent
/// can refuse to start instead of running without metrics).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for metrics on {addr} (is another process using it?)")
    })
}

/// Serve `GET /metrics` on `addr` for the agent whose maps are pinned in
/// `pin_dir`, until `shutdown` completes. `bind` + `serve_on`.
pub async fn serve(
    addr: SocketAddr,
    pin_dir: PathBuf,
    info: AgentInfo,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    serve_on(bind(addr).await?, pin_dir, info, shutdown).await
}

/// Serve `GET /metrics` on an already bound listener until `shutdown`
/// completes; then open connections are closed and it returns.
pub async fn serve_on(
    listener: TcpListener,
    pin_dir: PathBuf,
    info: AgentInfo,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr()?;
    let scraper = Arc::new(Scraper {
        pin_dir,
        info,
        state: Mutex::new(ScrapeState::default()),
    });
    let mut conns = JoinSet::new();
    // Open connections, oldest first, each with whether it is answering a
    // request right now.
    let mut open: VecDeque<(AbortHandle, Arc<AtomicBool>)> = VecDeque::new();
    let mut shutdown = std::pin::pin!(shutdown);
    info!(address = %local, "serving metrics on http://{local}{PATH}");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of fds and the like: do not spin.
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        open.retain(|(conn, _)| !conn.is_finished());
        if open.len() >= MAX_CONNECTIONS {
            // Connections that hold no request (idle keep-alives, clients
            // that connect and send nothing) must not keep scrapes out: the
            // oldest of them makes room. When all are busy, the new one waits
            // for none and is closed.
            match open
                .iter()
                .position(|(_, busy)| !busy.load(Ordering::Relaxed))
            {
                Some(idle) => {
                    if let Some((conn, _)) = open.remove(idle) {
                        conn.abort();
                    }
                }
                None => continue,
            }
        }
        let busy = Arc::new(AtomicBool::new(false));
        let scraper = scraper.clone();
        let in_request = busy.clone();
        let conn = conns.spawn(async move {
            let service = service_fn(move |req| {
                let scraper = scraper.clone();
                let busy = in_request.clone();
                async move {
                    busy.store(true, Ordering::Relaxed);
                    let response = handle(req, scraper).await;
                    busy.store(false, Ordering::Relaxed);
                    response
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!("metrics: connection ended: {e}");
            }
        });
        open.push_back((conn, busy));
    }
    conns.shutdown().await;
    Ok(())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("valid header"),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    scraper: Arc<Scraper>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != PATH {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("not found: sipguard serves metrics at {PATH}\n"),
        ));
    }
    // For HEAD, hyper sends the headers (with the body's length) and no body.
    match *req.method() {
        Method::GET | Method::HEAD => {}
        _ => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            resp.headers_mut()
                .insert(ALLOW, "GET, HEAD".parse().expect("valid header"));
            return Ok(resp);
        }
    }
    let scraped = tokio::task::spawn_blocking(move || scraper.scrape()).await;
    let body = match scraped {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            warn!("metrics: cannot read the BPF maps: {e:#}");
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("sipguard cannot read its BPF maps: {e:#}\n"),
            ));
        }
        Err(e) => {
            warn!("metrics: the scrape task failed: {e}");
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the scrape failed\n",
            ));
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        CONTENT_TYPE_OPENMETRICS.parse().expect("valid header"),
    );
    Ok(resp)
}
