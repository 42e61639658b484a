//! Prometheus metrics: the exporter (`sipguard::metrics`) scraped over HTTP
//! after real packets went through the XDP program, the alert rules
//! (`contrib/prometheus/alerts.yml`, checked and unit-tested with promtool)
//! and the Grafana dashboard (`contrib/grafana/sipguard.json`).
//!
//! promtool comes with the Debian package `prometheus`; these tests fail,
//! rather than skip, when it is missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;
use sipguard::{
    addr, bpffs,
    config::Config,
    loader::{self, KernelLog},
    maps::Maps,
    metrics::{self, AgentInfo, Reading},
    tables::Tables,
    time,
};
use sipguard_common::{
    maps::PROG_XDP,
    source::{Ban, BanReason},
};
use sipguard_tests::{
    harness::{XDP_DROP, XDP_PASS, is_root},
    packet::{CLIENT_V4, Pkt, SERVER_V4, scanner_options, sip::Sip, v4},
};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
}

const ALERTS: &str = "contrib/prometheus/alerts.yml";
const ALERT_TESTS: &str = "tests/prometheus/alerts.test.yml";
const DASHBOARD: &str = "contrib/grafana/sipguard.json";

// ---------------------------------------------------------------------------
// promtool

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found in PATH: install the Debian package `prometheus` \
             (`apt-get install prometheus`, or `cargo xtask setup --test-deps`); the alert \
             rules cannot be checked without it"
        )
    })
}

fn run_promtool(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .context("running promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    Ok(text)
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("sipguard-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn alert_rules_pass_promtool_check() -> Result<()> {
    let out = run_promtool(&["check", "rules", ALERTS], workspace())?;
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

/// The YAML text without `annotations:` blocks (indentation-based; the
/// rules file is plain block YAML).
fn strip_annotations(yaml: &str) -> String {
    let mut out = String::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(level) = skip_deeper_than {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skip_deeper_than = None;
        }
        if line.trim() == "annotations:" {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn alert_rules_fire_as_designed() -> Result<()> {
    // promtool compares annotations verbatim; the unit tests pin the alert
    // conditions and labels, not the operator-facing wording.
    let scratch = Scratch::new("alerts")?;
    let rules = fs::read_to_string(workspace().join(ALERTS))?;
    let stripped = strip_annotations(&rules);
    assert!(!stripped.contains("annotations:") && stripped.contains("alert: SipguardDown"));
    fs::write(scratch.0.join("alerts.yml"), stripped)?;
    fs::copy(
        workspace().join(ALERT_TESTS),
        scratch.0.join("alerts.test.yml"),
    )?;
    let out = run_promtool(&["test", "rules", "alerts.test.yml"], &scratch.0)?;
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Metric names: what the exporter produces, what the rules and dashboard use

/// Sample names the exporter writes, from its `# TYPE` lines (written for
/// every family, also when it has no samples).
fn exported_names() -> BTreeSet<String> {
    // With every optional family on (the CrowdSec bouncer's).
    let mut info = AgentInfo::new("eth0", "native");
    info.crowdsec_polled = Some(Default::default());
    let text = metrics::encode(&Reading::default(), &info).expect("encoding an empty reading");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
        names.insert(match kind {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            "gauge" => family.to_string(),
            other => panic!("unexpected metric type {other} for {family}"),
        });
    }
    names
}

/// Metrics every Prometheus has besides the exporter's.
const PROMETHEUS_SERIES: &[&str] = &["up"];

const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    // Aggregations: `sum by (x) (...)` is not followed by its parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Remove the text between `open` and the matching `close` (not nested).
fn drop_between(s: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            c if c == open && !inside => inside = true,
            c if c == close && inside => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// Metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names or Grafana variables.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, then label matchers and range selectors.
    let mut s = drop_between(expr, '"', '"');
    s = drop_between(&s, '{', '}');
    s = drop_between(&s, '[', ']');
    // Label lists after grouping and matching modifiers.
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut idents = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A Grafana variable: skip it.
            i += 1;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if call
                && matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                )
            {
                // Skip the label list.
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            if !call && !PROMQL_KEYWORDS.contains(&word.as_str()) {
                idents.push(word);
            }
            continue;
        }
        if c.is_ascii_digit() {
            // Numbers and durations (5m, 1h).
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    idents.into_iter().collect()
}

#[test]
fn promql_names_are_found() {
    let names = promql_metric_names(
        r#"sum by (reason, verdict) (rate(sipguard_packets_total{verdict=~"drop|x"}[5m])) > 5 * sum without (x) (rate(a_b[1h] offset 5m)) and on(instance) group_left(iface) sipguard_info * 8 - time()"#,
    );
    let want: BTreeSet<String> = ["sipguard_packets_total", "a_b", "sipguard_info"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

#[test]
fn exporter_names_follow_conventions() {
    let names = exported_names();
    for want in [
        "sipguard_packets_total",
        "sipguard_bytes_total",
        "sipguard_sip_packets_total",
        "sipguard_sip_bytes_total",
        "sipguard_bans_active",
        "sipguard_bans_total",
        "sipguard_bans_added_total",
        "sipguard_bans_expired_total",
        "sipguard_table_entries",
        "sipguard_table_capacity",
        "sipguard_table_events_total",
        "sipguard_sources_evicted_total",
        "sipguard_signature_hits_total",
        "sipguard_info",
        "sipguard_enforcing",
        "sipguard_start_time_seconds",
        "sipguard_config_reload_success",
        "sipguard_config_reload_timestamp_seconds",
        "sipguard_scrape_duration_seconds",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    for n in &names {
        assert!(n.starts_with("sipguard_"), "{n} lacks the sipguard_ prefix");
    }
}

/// The `expr:` values of a rules file (plain or folded block scalars).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(value) = line.trim_start().strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('>') || value.starts_with('|') {
                let mut body = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let ind = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && ind <= indent {
                        break;
                    }
                    if !l.trim_start().starts_with('#') {
                        body.push(l.trim());
                    }
                    i += 1;
                }
                exprs.push(body.join(" "));
                continue;
            }
            exprs.push(value.to_string());
        }
        i += 1;
    }
    exprs
}

#[test]
fn alert_rules_use_exported_metrics() -> Result<()> {
    let known = exported_names();
    let rules = fs::read_to_string(workspace().join(ALERTS))?;
    let exprs = rule_exprs(&rules);
    assert!(exprs.len() >= 10, "found only {} exprs", exprs.len());
    for expr in &exprs {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for n in names {
            assert!(
                known.contains(&n) || PROMETHEUS_SERIES.contains(&n.as_str()),
                "alert expr uses {n}, which sipguard does not export: {expr}"
            );
        }
    }
    Ok(())
}

/// Every panel, rows' nested panels included.
fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(p);
    }
    out
}

#[test]
fn dashboard_queries_use_exported_metrics() -> Result<()> {
    let text = fs::read_to_string(workspace().join(DASHBOARD))?;
    let dash: Value = serde_json::from_str(&text).context("parsing the dashboard JSON")?;
    let known = exported_names();

    // A Prometheus data source variable that every query goes through.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    let ds_var = Value::String("${datasource}".into());

    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in all_panels(&dash) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        titles.insert(p["title"].as_str().unwrap_or_default().to_string());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], ds_var, "panel {}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_var, "panel {}", p["title"]);
            let expr = t["expr"].as_str().expect("expr").to_string();
            let names = promql_metric_names(&expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            for n in names {
                assert!(
                    known.contains(&n),
                    "panel {:?} uses {n}, which sipguard does not export: {expr}",
                    p["title"]
                );
            }
            exprs.push(expr);
        }
    }
    for want in [
        "Drops/s by reason",
        "SIP packets/s by class and verdict",
        "Bans",
        "Table fill",
        "Signature hits/s",
        "Enforcement",
        "Agent",
    ] {
        assert!(titles.contains(want), "no panel {want:?} in {titles:?}");
    }

    // The queries are valid PromQL: promtool parses them as recording rules,
    // with Grafana's variables replaced by values.
    let scratch = Scratch::new("dashboard")?;
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {}\n",
            serde_json::to_string(&expr)?
        ));
    }
    fs::write(scratch.0.join("dashboard.yml"), rules)?;
    run_promtool(&["check", "rules", "dashboard.yml"], &scratch.0)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// OpenMetrics parsing

/// A sample: name and sorted labels.
type Series = (String, Vec<(String, String)>);

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| anyhow!("bad label in {s}"))?;
        ensure!(
            is_metric_name(key) && !key.contains(':'),
            "bad label name {key}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => bail!("bad escape {other:?} in {s}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value in {s}"),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels.sort();
    Ok(labels)
}

/// Parse an OpenMetrics text exposition strictly enough to catch what
/// Prometheus would refuse: every sample belongs to the family declared just
/// before it with a `# TYPE`, with the suffix its type requires; families are
/// declared once; units match the name; it ends with `# EOF`.
fn parse_openmetrics(text: &str) -> Result<BTreeMap<Series, f64>> {
    ensure!(text.ends_with("# EOF\n"), "does not end with # EOF");
    let mut samples = BTreeMap::new();
    let mut declared = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let at = || format!("line {}: {line}", n + 1);
        if *line == "# EOF" {
            ensure!(n == lines.len() - 1, "# EOF before the end ({})", at());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (kind, rest) = rest.split_once(' ').ok_or_else(|| anyhow!("{}", at()))?;
            let (name, arg) = rest.split_once(' ').ok_or_else(|| anyhow!("{}", at()))?;
            ensure!(is_metric_name(name), "bad family name ({})", at());
            match kind {
                "HELP" => {}
                "TYPE" => {
                    ensure!(
                        ["counter", "gauge", "info"].contains(&arg),
                        "type {arg} ({})",
                        at()
                    );
                    ensure!(
                        declared.insert(name.to_string()),
                        "declared twice ({})",
                        at()
                    );
                    current = Some((name.to_string(), arg.to_string()));
                }
                "UNIT" => ensure!(
                    name.ends_with(&format!("_{arg}")),
                    "unit {arg} is not the name's suffix ({})",
                    at()
                ),
                _ => bail!("unknown comment ({})", at()),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| anyhow!("{}", at()))?;
        let value: f64 = value.parse().with_context(at)?;
        let (name, labels) = match series.split_once('{') {
            Some((name, l)) => (
                name,
                parse_labels(l.strip_suffix('}').ok_or_else(|| anyhow!("{}", at()))?)?,
            ),
            None => (series, Vec::new()),
        };
        let (family, kind) = current
            .as_ref()
            .ok_or_else(|| anyhow!("sample before any # TYPE ({})", at()))?;
        let want = match kind.as_str() {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            _ => family.clone(),
        };
        ensure!(name == want, "sample {name} in family {family} ({})", at());
        if kind == "counter" {
            ensure!(value >= 0.0, "negative counter ({})", at());
        }
        if kind == "info" {
            ensure!(value == 1.0, "info value must be 1 ({})", at());
        }
        ensure!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "duplicate sample ({})",
            at()
        );
    }
    Ok(samples)
}

fn get(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *samples
        .get(&(name.to_string(), l))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[test]
fn openmetrics_parser_rejects_bad_expositions() {
    let good = "# HELP a_b x\n# TYPE a_b counter\na_b_total{k=\"v\"} 1\n# EOF\n";
    assert!(parse_openmetrics(good).is_ok());
    for bad in [
        "# TYPE a counter\na_total 1\n",                      // no EOF
        "# TYPE a counter\na 1\n# EOF\n",                     // counter without _total
        "a 1\n# EOF\n",                                       // no TYPE
        "# TYPE a gauge\na 1\n# TYPE a gauge\na 2\n# EOF\n",  // declared twice
        "# TYPE a_s gauge\n# UNIT a_s bytes\na_s 1\n# EOF\n", // unit not in name
        "# TYPE a gauge\na{k=\"v} 1\n# EOF\n",                // broken label
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted: {bad}");
    }
}

// ---------------------------------------------------------------------------
// HTTP

struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One request over a plain TCP connection (`Connection: close`).
fn http(addr: SocketAddr, method: &str, path: &str) -> Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {raw:?}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow!("bad status line {status_line}"))?
        .parse()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    ensure!(
        !headers.contains_key("transfer-encoding"),
        "unexpected chunked response"
    );
    if method != "HEAD" {
        let len: usize = headers
            .get("content-length")
            .ok_or_else(|| anyhow!("no content-length"))?
            .parse()?;
        ensure!(
            len == body.len(),
            "content-length {len}, body {}",
            body.len()
        );
    }
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `metrics::serve_on` on 127.0.0.1 (a free port) on its own runtime;
/// stopped through its shutdown future on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(pin_dir: PathBuf, info: AgentInfo) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = rt.block_on(metrics::bind("127.0.0.1:0".parse()?))?;
        let addr = listener.local_addr()?;
        assert!(addr.ip().is_loopback());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(metrics::serve_on(listener, pin_dir, info, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            rt,
        })
    }

    fn get(&self, path: &str) -> Result<HttpResponse> {
        http(self.addr, "GET", path)
    }

    /// Stop the server and return what `serve_on` returned.
    fn stop(mut self) -> Result<()> {
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
            .context("the metrics server did not stop within 10 s")??
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[test]
fn scrape_without_maps_is_503_and_other_paths_404() -> Result<()> {
    let missing = std::env::temp_dir().join(format!("sipguard-no-pins-{}", std::process::id()));
    let server = Server::start(missing, AgentInfo::new("eth0", "skb"))?;
    let r = server.get("/metrics")?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("cannot read its BPF maps"), "{}", r.body);
    let r = server.get("/")?;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/metrics"), "{}", r.body);
    let r = server.get("/metrics/x")?;
    assert_eq!(r.status, 404);
    let r = http(server.addr, "POST", "/metrics")?;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
    server.stop()
}

// ---------------------------------------------------------------------------
// End to end: packets through the program, scraped over HTTP

/// A pin directory on bpffs for this test process, removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Result<Self> {
        bpffs::ensure_mounted()?;
        let dir = Path::new(sipguard_common::maps::BPFFS)
            .join(format!("sipguard-test-{}", std::process::id()));
        // Our PID: anything there is a leftover of an earlier process with it.
        let _ = remove_pins(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

fn remove_pins(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        fs::remove_file(entry?.path())?;
    }
    fs::remove_dir(dir)?;
    Ok(())
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = remove_pins(&self.0) {
            eprintln!("could not remove {}: {e:#}", self.0.display());
        }
    }
}

fn ban(maps: &mut Maps, ip: IpAddr, expires_ns: u64) -> Result<()> {
    let policy = maps.policy()?;
    maps.ban_add(
        addr::src_key(ip, &policy.v6_mask),
        Ban {
            expires_ns,
            since_ns: time::monotonic_ns(),
            reason: BanReason::Manual as u32,
            detail: u32::MAX,
            dropped: 0,
        },
    )
}

#[test]
fn scrape_reports_what_the_program_counted() -> Result<()> {
    ensure!(
        is_root(),
        "this test loads the XDP program: run it as root (e.g. sudo -E cargo test)"
    );
    let pins = PinDir::new()?;
    let mut ebpf = loader::load_pinned(KernelLog::Off, &pins.0, &Tables::default())?;
    let mut maps = Maps::from_ebpf(&mut ebpf)?;
    maps.apply(&Config::default())?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(PROG_XDP)
        .ok_or_else(|| anyhow!("no {PROG_XDP}"))?
        .try_into()?;
    let run = |pkt: &[u8]| -> Result<u32> {
        use aya::programs::{TestRun, TestRunOptions};
        Ok(prog
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                repeat: 1,
                ..Default::default()
            })?
            .return_value)
    };

    let banned = v4(100);
    let expired = v4(101);
    let scanner = v4(102);
    let now = time::monotonic_ns();
    ban(&mut maps, banned.into(), now + 3600 * 1_000_000_000)?;
    // Well past: the program's clock is accurate to a tick (ARCHITECTURE.md).
    ban(&mut maps, expired.into(), now - 1_000_000_000)?;

    let invite = Pkt::udp_v4(banned, SERVER_V4, 5060, Sip::request("INVITE").build()).build();
    let options = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::request("OPTIONS").build()).build();
    let from_expired =
        Pkt::udp_v4(expired, SERVER_V4, 5060, Sip::request("OPTIONS").build()).build();
    let scan = scanner_options(scanner);
    for _ in 0..5 {
        assert_eq!(run(&invite)?, XDP_DROP, "banned INVITE");
    }
    for _ in 0..3 {
        assert_eq!(run(&options)?, XDP_PASS, "client OPTIONS");
    }
    // The program meets an expired ban, removes it and counts ban_expired.
    assert_eq!(
        run(&from_expired)?,
        XDP_PASS,
        "OPTIONS after the ban expired"
    );
    assert_eq!(run(&scan)?, XDP_DROP, "scanner OPTIONS");

    let info = AgentInfo::new("sgtest0", "skb");
    let server = Server::start(pins.0.clone(), info.clone())?;
    let r = server.get("/metrics")?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some(metrics::CONTENT_TYPE_OPENMETRICS)
    );
    println!("{}", r.body);
    let m = parse_openmetrics(&r.body)?;

    let n = invite.len() as f64;
    let packets = "sipguard_packets_total";
    assert_eq!(
        get(&m, packets, &[("verdict", "drop"), ("reason", "banned")]),
        5.0
    );
    assert_eq!(
        get(
            &m,
            "sipguard_bytes_total",
            &[("verdict", "drop"), ("reason", "banned")]
        ),
        5.0 * n
    );
    assert_eq!(
        get(&m, packets, &[("verdict", "drop"), ("reason", "scanner")]),
        1.0
    );
    assert_eq!(
        get(&m, packets, &[("verdict", "pass"), ("reason", "accepted")]),
        4.0
    );
    assert_eq!(
        get(
            &m,
            packets,
            &[("verdict", "would_drop"), ("reason", "banned")]
        ),
        0.0
    );
    let sip = "sipguard_sip_packets_total";
    assert_eq!(
        get(&m, sip, &[("verdict", "drop"), ("class", "invite")]),
        5.0
    );
    assert_eq!(
        get(
            &m,
            "sipguard_sip_bytes_total",
            &[("verdict", "drop"), ("class", "invite")]
        ),
        5.0 * n
    );
    assert_eq!(
        get(&m, sip, &[("verdict", "pass"), ("class", "options")]),
        4.0
    );
    assert_eq!(
        get(&m, sip, &[("verdict", "drop"), ("class", "options")]),
        1.0
    );
    // The manual ban and the scanner's; the expired one is gone.
    assert_eq!(
        get(&m, "sipguard_bans_active", &[("reason", "manual")]),
        1.0
    );
    assert_eq!(
        get(&m, "sipguard_bans_active", &[("reason", "scanner")]),
        1.0
    );
    assert_eq!(get(&m, "sipguard_bans_active", &[("reason", "flood")]), 0.0);
    assert_eq!(get(&m, "sipguard_table_entries", &[("table", "bans")]), 2.0);
    assert_eq!(
        get(&m, "sipguard_table_capacity", &[("table", "bans")]),
        65536.0
    );
    assert_eq!(get(&m, "sipguard_bans_added_total", &[]), 1.0);
    assert_eq!(
        get(
            &m,
            "sipguard_bans_expired_total",
            &[("removed_by", "program")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "sipguard_bans_expired_total",
            &[("removed_by", "agent")]
        ),
        0.0
    );
    assert_eq!(
        get(&m, "sipguard_table_events_total", &[("event", "ban_added")]),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "sipguard_signature_hits_total",
            &[("signature", "friendly-scanner"), ("tier", "ban")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "sipguard_info",
            &[
                ("version", &info.version),
                ("iface", "sgtest0"),
                ("mode", "skb"),
                ("kernel", &info.kernel),
                ("tc_egress", "off"),
            ]
        ),
        1.0
    );
    // This agent info says the egress program is off: so are its features.
    for feature in ["earned_trust", "auth_failure_bans"] {
        assert_eq!(
            get(&m, "sipguard_feature_enabled", &[("feature", feature)]),
            0.0,
            "{feature}"
        );
    }
    assert_eq!(get(&m, "sipguard_enforcing", &[]), 1.0);
    assert_eq!(get(&m, "sipguard_config_reload_success", &[]), 1.0);
    let started = get(&m, "sipguard_start_time_seconds", &[]);
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(
        started <= unix_now && started > unix_now - 600.0,
        "start time {started}"
    );
    assert!(get(&m, "sipguard_scrape_duration_seconds", &[]) > 0.0);
    let sources = get(&m, "sipguard_table_entries", &[("table", "sources")]);
    assert!(sources >= 1.0, "sources {sources}");

    // Everything is read at scrape time: monitor mode, more packets, a failed
    // reload and a swept ban all show in the next scrape.
    maps.set_enforce(false)?;
    for _ in 0..2 {
        assert_eq!(run(&invite)?, XDP_PASS, "banned INVITE in monitor mode");
    }
    info.reload.record(false);
    info.bans_swept.fetch_add(3, Ordering::Relaxed);
    let r = server.get("/metrics")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let m2 = parse_openmetrics(&r.body)?;
    assert_eq!(get(&m2, "sipguard_enforcing", &[]), 0.0);
    assert_eq!(
        get(
            &m2,
            packets,
            &[("verdict", "would_drop"), ("reason", "banned")]
        ),
        2.0
    );
    assert_eq!(
        get(&m2, packets, &[("verdict", "drop"), ("reason", "banned")]),
        5.0
    );
    assert_eq!(get(&m2, "sipguard_config_reload_success", &[]), 0.0);
    assert_eq!(
        get(&m2, "sipguard_config_reload_timestamp_seconds", &[]),
        get(&m, "sipguard_config_reload_timestamp_seconds", &[]),
        "a failed reload keeps the time of the last success"
    );
    assert_eq!(
        get(
            &m2,
            "sipguard_bans_expired_total",
            &[("removed_by", "agent")]
        ),
        3.0
    );
    // Counters never go down between scrapes.
    for ((name, labels), v) in &m {
        if name.ends_with("_total") {
            let now = m2[&(name.clone(), labels.clone())];
            assert!(now >= *v, "{name}{labels:?} went from {v} to {now}");
        }
    }

    // HEAD: headers only.
    let r = http(server.addr, "HEAD", "/metrics")?;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD with a body: {}", r.body);
    let len: usize = r.headers["content-length"].parse()?;
    assert!(len > 1000, "HEAD content-length {len}");

    server.stop()?;
    Ok(())
}

/// Connections that send nothing (or stop half-way through their headers)
/// do not keep a scrape out: more of them than the server keeps open, and a
/// scrape still gets its answer at once, long before the header timeout
/// would free a slot.
#[test]
fn idle_connections_do_not_block_scrapes() -> Result<()> {
    let missing = std::env::temp_dir().join(format!("sipguard-idle-{}", std::process::id()));
    let server = Server::start(missing, AgentInfo::new("eth0", "skb"))?;
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5))?;
        if i % 2 == 0 {
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
        }
        idle.push(s);
    }
    // The server has accepted them all before the scrape comes.
    std::thread::sleep(Duration::from_millis(300));
    let mut s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut head)
        .context("no answer within 5 s while idle connections were open")?;
    // 503: this test's server has no maps; any answer shows it was served.
    assert_eq!(&head, b"HTTP/1.1 503", "{}", String::from_utf8_lossy(&head));
    drop(idle);
    server.stop()
}
