//! Client commands that change or read a running agent's policy through its
//! pinned maps: allow, block, bans, limits, enforce.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::Serialize;
use sipguard::{
    addr, bpffs,
    config::Config,
    crowdsec,
    guards::Guards,
    maps::{Changed, Maps},
    preflight,
    sets::{self, SetFile, Sets},
    status::AgentStatus,
    time,
};
use sipguard_common::source::{Ban, BanReason, SrcKey};

use crate::cli::{
    BansOp, BlockOp, CaptureArgs, Entries, LimitsOp, ListOp, OnOff, SigOp, Target, TrustedOp,
};

fn open(target: &Target) -> Result<Maps> {
    Ok(open_keyed(target)?.0)
}

fn entries(e: &Entries) -> Result<Vec<ipnet::IpNet>> {
    let nets = addr::collect_cidrs(&e.cidrs, &e.file)?;
    if nets.is_empty() {
        bail!("no addresses given: pass CIDRs, `--file FILE`, or `-` to read stdin");
    }
    Ok(nets)
}

fn report(what: &str, verb: &str, c: Changed) {
    if c.missing > 0 {
        println!(
            "{verb} {} {what} entries ({} were not present)",
            c.applied, c.missing
        );
    } else {
        println!("{verb} {} {what} entries", c.applied);
    }
}

pub fn allow(op: ListOp) -> Result<()> {
    match op {
        ListOp::Add { entries: e, target } => {
            let nets = entries(&e)?;
            report("allowlist", "added", open(&target)?.allow_add(&nets)?);
        }
        ListOp::Del { entries: e, target } => {
            let nets = entries(&e)?;
            report("allowlist", "removed", open(&target)?.allow_del(&nets)?);
        }
        ListOp::List { json, target } => {
            let list = open(&target)?.allow_list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                list.iter().for_each(|n| println!("{n}"));
            }
        }
    }
    Ok(())
}

/// Wall-clock time for a CLOCK_MONOTONIC instant, for humans and JSON.
fn wall_clock(mono_ns: u64) -> String {
    let now_mono = time::monotonic_ns();
    let at = if mono_ns >= now_mono {
        SystemTime::now() + Duration::from_nanos(mono_ns - now_mono)
    } else {
        SystemTime::now() - Duration::from_nanos(now_mono - mono_ns)
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

fn remaining(mono_ns: u64) -> String {
    let left = mono_ns.saturating_sub(time::monotonic_ns());
    humantime::format_duration(Duration::from_secs(left.div_ceil(1_000_000_000))).to_string()
}

#[derive(Serialize)]
struct BlockRow {
    cidr: String,
    expires: Option<String>,
    /// The named sets that list the entry (`set:NAME`; `crowdsec` for the
    /// CrowdSec bouncer's), or `manual`.
    origin: Vec<String>,
    /// What the set says of it (a CrowdSec decision's scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    scenario: Option<String>,
}

/// The named sets listing blocklist entry `n` (not those that found it
/// blocked already).
fn listing<'a>(
    sets: &'a [(String, SetFile)],
    n: &'a IpNet,
) -> impl Iterator<Item = &'a (String, SetFile)> {
    sets.iter()
        .filter(move |(_, s)| s.entries.contains(n) && !s.found.contains(n))
}

/// Who put blocklist entry `n` there: `set:NAME`, `crowdsec`, or `manual`.
fn origin_of(sets: &[(String, SetFile)], n: &IpNet) -> Vec<String> {
    let mut origin: Vec<String> = listing(sets, n)
        .map(|(name, _)| match name.as_str() {
            crowdsec::SET => crowdsec::SET.to_string(),
            _ => format!("set:{name}"),
        })
        .collect();
    if origin.is_empty() {
        origin.push("manual".into());
    }
    origin
}

pub fn explain(address: &str, json: bool, target: &Target) -> Result<()> {
    let ip = addr::parse_ip(address)?;
    let (maps, key) = open_keyed(target)?;
    let sets = Sets::open(&key)?.all()?;
    let e = sipguard::explain::explain(&maps, ip, time::monotonic_ns(), |n| origin_of(&sets, n))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(());
    }
    let ago = |ns: u64| humantime::format_duration(Duration::from_secs(ns / 1_000_000_000));
    let within =
        |ns: u64| humantime::format_duration(Duration::from_secs(ns.div_ceil(1_000_000_000)));
    println!("{} (kept as {})", e.address, e.group);
    match &e.allowlisted_by {
        Some(net) => println!("  1 allowlist   {net}: passes everything"),
        None => println!("  1 allowlist   no entry"),
    }
    match &e.blocklisted_by {
        Some(l) => println!(
            "  2 blocklist   {} ({}), {}",
            l.entry,
            l.origin.join(","),
            l.expires_in_ns.map_or("for good".to_string(), |n| format!(
                "lapses in {}",
                within(n)
            ))
        ),
        None => println!("  2 blocklist   no entry in force"),
    }
    if e.bans.is_empty() {
        println!("  3 bans        none");
    }
    for b in &e.bans {
        println!(
            "  3 ban         {} {} ({}), since {} ago, lifts in {}, {} packets dropped{}",
            b.key,
            b.reason,
            b.detail,
            ago(b.since_ago_ns),
            within(b.expires_in_ns),
            b.dropped,
            if b.confirmed {
                ", confirmed (caught again while banned)"
            } else {
                ""
            }
        );
    }
    match &e.trust {
        Some(t) => println!(
            "    trust       earned {} ago, lapses in {} unless renewed ({} renewals)",
            ago(t.since_ago_ns),
            within(t.expires_in_ns),
            t.renewals
        ),
        None => println!("    trust       none"),
    }
    let buckets = |l: &[sipguard::explain::BucketLeft]| {
        l.iter()
            .map(|b| match b.packets {
                Some(n) => format!("{} {n}", b.bucket),
                None => format!("{} unlimited", b.bucket),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &e.rate {
        Some(r) => {
            println!("  7 own limits  packets left: {}", buckets(&r.left));
            println!(
                "                violations {}/{} in the ban window ({} packets); targets {}/{}; \
                 auth failures {}/{}",
                r.violations,
                r.ban_after,
                r.window_packets,
                r.targets,
                r.enum_after,
                r.auth_failures,
                r.auth_fail_after
            );
        }
        None => println!("  7 own limits  no rate state (new, or recycled): a whole burst"),
    }
    println!(
        "  8 global      packets left: {}{}",
        buckets(&e.global_left),
        if e.trust.is_some() {
            " (trusted: not charged)"
        } else {
            ""
        }
    );
    for n in &e.next {
        let note = match (n.verdict, n.reason) {
            ("probation", _) => ": two, then one per 5 s, go on to the limits",
            ("pass", "accepted") => ", unless the header scan judges its content",
            _ => "",
        };
        println!("  next {:<9} {} ({}){note}", n.method, n.verdict, n.reason);
    }
    if !e.enforcing {
        println!("  (monitor mode: nothing is dropped, would_drop is counted)");
    }
    Ok(())
}

pub fn block(op: BlockOp) -> Result<()> {
    match op {
        BlockOp::Add {
            entries: e,
            ttl,
            target,
        } => {
            let nets = entries(&e)?;
            let expires = ttl.map_or(0, |t| time::monotonic_ns() + t.as_nanos() as u64);
            report(
                "blocklist",
                "added",
                open(&target)?.block_add(&nets, expires)?,
            );
        }
        BlockOp::Del { entries: e, target } => {
            let nets = entries(&e)?;
            report("blocklist", "removed", open(&target)?.block_del(&nets)?);
        }
        BlockOp::List { json, target } => {
            let now = time::monotonic_ns();
            let (maps, key) = open_keyed(&target)?;
            let sets = Sets::open(&key)?.all()?;
            let rows: Vec<BlockRow> = maps
                .block_list()?
                .into_iter()
                .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
                .map(|(n, e)| BlockRow {
                    cidr: n.to_string(),
                    expires: (e.expires_ns != 0).then(|| wall_clock(e.expires_ns)),
                    origin: origin_of(&sets, &n),
                    scenario: listing(&sets, &n).find_map(|(_, s)| s.notes.get(&n).cloned()),
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    let mut origin = r.origin.join(",");
                    if let Some(s) = &r.scenario {
                        origin += &format!(" ({s})");
                    }
                    match r.expires {
                        Some(t) => println!("{}\t{origin}\texpires {t}", r.cidr),
                        None => println!("{}\t{origin}", r.cidr),
                    }
                }
            }
        }
        BlockOp::Sync {
            name,
            entries: e,
            allow_empty,
            min_prefix_v4,
            min_prefix_v6,
            target,
        } => sync(
            &name,
            &e,
            allow_empty,
            (min_prefix_v4, min_prefix_v6),
            &target,
        )?,
    }
    Ok(())
}

/// The agent's maps and its key (what its lock, status and sets are filed
/// under).
fn open_keyed(target: &Target) -> Result<(Maps, String)> {
    preflight::require_root("this command")?;
    let dir = bpffs::find_agent(target.iface.as_deref())?;
    let key = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no agent key in {}", dir.display()))?;
    Ok((Maps::from_pins(&dir)?, key))
}

/// The items of `all` whose `name` is among `given` (in `all`'s order);
/// an unknown name is an error listing the known ones.
fn named<T: Copy>(
    what: &str,
    given: &[String],
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>> {
    if let Some(g) = given.iter().find(|g| !all.iter().any(|t| name(*t) == *g)) {
        let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
        bail!("unknown {what} {g:?}: one of {}", names.join(", "));
    }
    Ok(all
        .iter()
        .copied()
        .filter(|t| given.iter().any(|g| name(*t) == *g))
        .collect())
}

pub async fn capture(args: CaptureArgs) -> Result<()> {
    use sipguard::capture::{Selection, Writer};
    use sipguard_common::{Reason, Verdict};
    preflight::require_root("this command")?;
    let dir = bpffs::find_agent(args.target.iface.as_deref())?;
    let verdicts = if args.verdicts.is_empty() {
        vec![Verdict::Drop, Verdict::WouldDrop]
    } else {
        named("verdict", &args.verdicts, &Verdict::ALL, |v| v.name())?
    };
    let reasons = if args.reasons.is_empty() {
        Reason::ALL.to_vec()
    } else {
        named("reason", &args.reasons, &Reason::ALL, |r| r.name())?
    };
    let sel = Selection {
        verdicts,
        reasons,
        sources: args
            .sources
            .iter()
            .map(|s| addr::parse_cidr(s))
            .collect::<Result<_>>()?,
        snaplen: args.snaplen,
        rate: args.rate,
    };
    let list = |given: &[String], default: &str| {
        if given.is_empty() {
            default.to_string()
        } else {
            given.join("|")
        }
    };
    let what = format!(
        "verdict {}, reason {}, source {}",
        list(&args.verdicts, "drop|would_drop"),
        list(&args.reasons, "any"),
        list(&args.sources, "any")
    );
    let iface = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|k| sipguard::ident::iface_of(k).to_string())
        .unwrap_or_default();
    let out: Box<dyn std::io::Write> = if args.write == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.write)
                .with_context(|| format!("creating {}", args.write))?,
        ))
    };
    let mut writer = Writer::new(out, &iface, args.snaplen, &what)?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    eprintln!("capturing on {iface}: {what}");
    let done = sipguard::capture::run(&dir, &sel, args.count, &mut writer, stop).await?;
    eprintln!(
        "{} packets captured; {} selected but not copied (over --rate {}/s, or the ring full)",
        done.written, done.missed, args.rate
    );
    Ok(())
}

/// Refusals printed one by one before the rest are only counted.
const REFUSALS_SHOWN: usize = 20;

/// `block sync`: replace the named set `name` (sets.rs), behind the guards.
fn sync(
    name: &str,
    e: &Entries,
    allow_empty: bool,
    (min_prefix_v4, min_prefix_v6): (u8, u8),
    target: &Target,
) -> Result<()> {
    sets::check_name(name)?;
    if name == crowdsec::SET {
        bail!(
            "the set name {name} is the CrowdSec bouncer's ([crowdsec] in the config); pick another"
        );
    }
    let listed = addr::collect_cidrs(&e.cidrs, &e.file)?;
    if listed.is_empty() && !allow_empty {
        bail!(
            "set {name}: the list is empty; a failed download must not empty the set. To \
             empty it, pass --allow-empty"
        );
    }
    let (mut maps, key) = open_keyed(target)?;
    let addresses = match AgentStatus::read(&key) {
        Some(s) if !s.addresses.is_empty() => s.addresses,
        _ => {
            eprintln!(
                "warning: the agent did not publish its addresses (an older agent?): entries \
                 covering them are not refused"
            );
            Vec::new()
        }
    };
    let guards = Guards {
        min_prefix_v4,
        min_prefix_v6,
        allow: maps.allow_list()?,
        own: addresses,
    };
    let mut desired = BTreeMap::new();
    let mut refused = Vec::new();
    for net in listed.into_iter().map(|n| n.trunc()) {
        match guards.check(&net) {
            Ok(()) => {
                desired.insert(net, 0);
            }
            Err(why) => refused.push((net, why)),
        }
    }
    let sets = Sets::open(&key)?;
    let prev = sets.load(name)?;
    let others = sets.others(name)?;
    // Only the permanent entries: one a `block add --ttl` made is not the
    // set's to remove.
    let blocked: BTreeMap<IpNet, u64> = maps
        .block_list()?
        .into_iter()
        .filter(|(_, e)| e.expires_ns == 0)
        .map(|(n, _)| (n, 0))
        .collect();
    let mut plan = sets::plan(&prev, &others, desired, &blocked);
    // All the additions or none (`insert_all`), then the removals.
    if !plan.add.is_empty() {
        let add: Vec<IpNet> = plan.add.iter().map(|(n, _)| *n).collect();
        maps.block_add(&add, 0)?;
    }
    if !plan.remove.is_empty() {
        maps.block_del(&plan.remove)?;
    }
    plan.file.refused = refused.len() as u64;
    sets.save(name, &plan.file)?;
    for (net, why) in refused.iter().take(REFUSALS_SHOWN) {
        eprintln!("refused {net}: {why}");
    }
    if refused.len() > REFUSALS_SHOWN {
        eprintln!("... and {} more refused", refused.len() - REFUSALS_SHOWN);
    }
    println!(
        "set {name}: {} entries; added {}, removed {}, refused {}",
        plan.file.entries.len(),
        plan.add.len(),
        plan.remove.len(),
        refused.len()
    );
    Ok(())
}

#[derive(Serialize)]
struct BanRow {
    source: String,
    /// `sipguard` (its programs, or the agent widening IPv6 bans), `manual`
    /// (`bans add`) or `crowdsec` (the fleet's decision, kept in the
    /// blocklist).
    origin: &'static str,
    reason: &'static str,
    /// The limit exceeded (flood, enumeration), the signature (scanner), or
    /// the CrowdSec decision's scenario.
    detail: String,
    /// Unknown for CrowdSec's decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    expires: String,
    remaining: String,
    /// Packets dropped while banned (not counted per blocklist entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<u64>,
}

fn ban_keys(maps: &Maps, addrs: &[String]) -> Result<Vec<SrcKey>> {
    if addrs.is_empty() {
        bail!("no addresses given");
    }
    let mask = maps.policy()?.v6_mask;
    addrs
        .iter()
        .map(|a| addr::parse_ip(a).map(|ip: IpAddr| addr::src_key(ip, &mask)))
        .collect()
}

pub fn bans(op: BansOp) -> Result<()> {
    match op {
        BansOp::List { json, target } => {
            let (maps, key) = open_keyed(&target)?;
            let prefix = addr::mask_len(&maps.policy()?.v6_mask);
            let now = time::monotonic_ns();
            let mut rows: Vec<BanRow> = maps
                .bans_list()?
                .into_iter()
                .filter(|(_, b)| b.expires_ns > now)
                .map(|(k, b)| BanRow {
                    source: addr::show_src(&k, prefix),
                    origin: if b.reason == BanReason::Manual as u32 {
                        "manual"
                    } else {
                        "sipguard"
                    },
                    reason: BanReason::name(b.reason),
                    detail: maps.ban_detail(b.reason, b.detail),
                    since: Some(wall_clock(b.since_ns)),
                    expires: wall_clock(b.expires_ns),
                    remaining: remaining(b.expires_ns),
                    dropped: Some(b.dropped),
                })
                .collect();
            // The fleet's bans: CrowdSec's decisions in the blocklist.
            let fleet = Sets::open(&key)?.load(crowdsec::SET)?;
            for (net, e) in maps.block_list()? {
                if !fleet.entries.contains(&net) || fleet.found.contains(&net) {
                    continue;
                }
                if e.expires_ns != 0 && e.expires_ns <= now {
                    continue;
                }
                rows.push(BanRow {
                    source: addr::show_net(net),
                    origin: crowdsec::SET,
                    reason: "crowdsec",
                    detail: fleet.notes.get(&net).cloned().unwrap_or_default(),
                    since: None,
                    expires: wall_clock(e.expires_ns),
                    remaining: remaining(e.expires_ns),
                    dropped: None,
                });
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no active bans");
            } else {
                println!(
                    "{:<28} {:<9} {:<12} {:<18} {:>10} {:>12}  expires",
                    "SOURCE", "ORIGIN", "REASON", "DETAIL", "DROPPED", "REMAINING"
                );
                for r in rows {
                    let dropped = r.dropped.map_or("-".to_string(), |d| d.to_string());
                    println!(
                        "{:<28} {:<9} {:<12} {:<18} {:>10} {:>12}  {}",
                        r.source, r.origin, r.reason, r.detail, dropped, r.remaining, r.expires
                    );
                }
            }
        }
        BansOp::Add {
            addrs,
            duration,
            target,
        } => {
            let mut maps = open(&target)?;
            let policy = maps.policy()?;
            let keys = ban_keys(&maps, &addrs)?;
            let now = time::monotonic_ns();
            let dur = duration.map_or(policy.ban_for_ns, |d| d.as_nanos() as u64);
            for k in &keys {
                maps.ban_add(
                    *k,
                    Ban {
                        expires_ns: now + dur,
                        since_ns: now,
                        reason: BanReason::Manual as u32,
                        detail: u32::MAX,
                        dropped: 0,
                    },
                )?;
            }
            println!("banned {} sources", keys.len());
        }
        BansOp::Del { addrs, target } => {
            let mut maps = open(&target)?;
            let keys = ban_keys(&maps, &addrs)?;
            let c = maps.bans_del(&keys)?;
            if c.missing > 0 {
                println!("lifted {} bans ({} were not banned)", c.applied, c.missing);
            } else {
                println!("lifted {} bans", c.applied);
            }
        }
        BansOp::Clear { target } => {
            let n = open(&target)?.bans_clear()?;
            println!("lifted {n} bans");
        }
    }
    Ok(())
}

pub fn limits(op: LimitsOp) -> Result<()> {
    match op {
        LimitsOp::Show { json, target } => {
            let view = Config::from_policy(&open(&target)?.policy()?);
            print_limits(&view, json)?;
        }
        LimitsOp::Set { settings, target } => {
            let mut maps = open(&target)?;
            let mut view = Config::from_policy(&maps.policy()?);
            // Validate every setting before writing any.
            for s in &settings {
                view.set(s)?;
            }
            maps.set_policy(&view.policy())?;
            print_limits(&view, false)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct TrustRow {
    source: String,
    since: String,
    expires: String,
    remaining: String,
    renewals: u64,
}

pub fn trusted(op: TrustedOp) -> Result<()> {
    match op {
        TrustedOp::List { json, target } => {
            let maps = open(&target)?;
            let prefix = addr::mask_len(&maps.policy()?.v6_mask);
            let now = time::monotonic_ns();
            let rows: Vec<TrustRow> = maps
                .trusted_list()?
                .into_iter()
                .filter(|(_, t)| t.expires_ns > now)
                .map(|(k, t)| TrustRow {
                    source: addr::show_src(&k, prefix),
                    since: wall_clock(t.since_ns),
                    expires: wall_clock(t.expires_ns),
                    remaining: remaining(t.expires_ns),
                    renewals: t.renewals,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no trusted sources");
            } else {
                println!(
                    "{:<28} {:>9} {:>12}  expires",
                    "SOURCE", "RENEWALS", "REMAINING"
                );
                for r in rows {
                    println!(
                        "{:<28} {:>9} {:>12}  {}",
                        r.source, r.renewals, r.remaining, r.expires
                    );
                }
            }
        }
        TrustedOp::Del { addrs, target } => {
            let mut maps = open(&target)?;
            let keys = ban_keys(&maps, &addrs)?;
            let c = maps.trusted_del(&keys)?;
            println!(
                "withdrew trust from {} sources ({} were not trusted)",
                c.applied, c.missing
            );
        }
        TrustedOp::Clear { target } => {
            let n = open(&target)?.trusted_clear()?;
            println!("withdrew trust from {n} sources");
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct LimitsView<'a> {
    enforce: bool,
    ipv6_prefix: u8,
    limits: &'a sipguard::config::Limits,
    ban: &'a sipguard::config::BanConfig,
    scanner: &'a sipguard::config::ScannerConfig,
    malformed: &'a sipguard::config::MalformedConfig,
    trust: &'a sipguard::config::TrustConfig,
    auth_fail: &'a sipguard::config::AuthFailConfig,
}

fn print_limits(cfg: &Config, json: bool) -> Result<()> {
    let view = LimitsView {
        enforce: cfg.enforce,
        ipv6_prefix: cfg.ipv6_prefix,
        limits: &cfg.limits,
        ban: &cfg.ban,
        scanner: &cfg.scanner,
        malformed: &cfg.malformed,
        trust: &cfg.trust,
        auth_fail: &cfg.auth_fail,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", toml::to_string(&view)?);
    }
    Ok(())
}

pub fn signatures(op: SigOp) -> Result<()> {
    match op {
        SigOp::List { json, target } => {
            let rows = open(&target)?.signatures()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<24} {:<6} {:>12}", "TOKEN", "TIER", "HITS");
                for r in rows {
                    println!("{:<24} {:<6} {:>12}", r.token, r.tier, r.hits);
                }
            }
        }
        SigOp::Add {
            tokens,
            tier,
            target,
        } => {
            let tier = sipguard::signatures::parse_tier(&tier)?;
            let n = open(&target)?.signatures_add(&tokens, tier)?;
            println!("added {n} signatures");
        }
        SigOp::Del { tokens, target } => {
            let n = open(&target)?.signatures_del(&tokens)?;
            println!("deleted {n} of {} signatures", tokens.len());
        }
    }
    Ok(())
}

pub fn enforce(state: OnOff, target: Target) -> Result<()> {
    let on = state == OnOff::On;
    open(&target)?.set_enforce(on)?;
    if on {
        println!("enforcing: matching packets are dropped");
    } else {
        println!("monitor mode: nothing is dropped; matches count as would_drop");
    }
    Ok(())
}

/// The interface a command acts on: `--iface`, or the only one with pins.
fn target_key(target: &Target) -> Result<String> {
    let dir = bpffs::find_agent(target.iface.as_deref())?;
    Ok(dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string())
}

pub fn reload(target: Target) -> Result<()> {
    preflight::require_root("sipguard reload")?;
    let iface = target_key(&target)?;
    let Some(pid) = sipguard::lock::running_agent(&iface) else {
        bail!(
            "no agent process runs on {iface} (its pinned filter may still be active after a \
             crash); start one with `sipguard run --iface {iface} --config FILE`"
        );
    };
    // SAFETY: kill(2) takes plain integers.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "could not signal the agent (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    println!(
        "asked the agent on {iface} (pid {pid}) to reload; its log says whether the file was \
         accepted"
    );
    Ok(())
}

/// How long `detach` waits for a running agent to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub fn detach(target: Target) -> Result<()> {
    preflight::require_root("sipguard detach")?;
    let iface = target_key(&target)?;
    if let Some(pid) = sipguard::lock::running_agent(&iface) {
        // The agent detaches and cleans up itself on SIGTERM.
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while sipguard::lock::running_agent(&iface).is_some() {
            if std::time::Instant::now() > deadline {
                bail!("the agent (pid {pid}) did not stop within {STOP_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("stopped the agent on {iface} (pid {pid})");
    }
    for dir in [bpffs::iface_dir(&iface), bpffs::staging_dir(&iface)] {
        bpffs::remove_pins(&dir)?;
    }
    // On kernels without TCX the egress program is a netlink filter, which
    // no pin holds: an agent that died left it on the interface.
    sipguard::egress::remove_filter(sipguard::ident::iface_of(&iface));
    sipguard::status::AgentStatus::remove(&iface);
    sets::forget(&iface);
    println!("sipguard detached from {iface}; pinned state removed");
    Ok(())
}
