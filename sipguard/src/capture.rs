//! `sipguard capture`: the packets the programs dropped (or any verdict,
//! reason and source asked for), as pcapng with the verdict and reason in
//! each packet's comment. XDP drops happen before every packet tap
//! (tcpdump, sngrep, HOMER never see them), so the programs copy the
//! selected packets themselves into `CAPTURE_RING`, at most at a set rate
//! (capture.rs of the eBPF crate). The command writes the selection into
//! `CAPTURE` and renews it every second; if the command dies, the capture
//! stops on its own within `LEASE`.

use std::{
    borrow::Cow,
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, MapData, RingBuf};
use ipnet::IpNet;
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use sipguard_common::{
    Class, Reason, Verdict,
    capture::{CAPTURE_SNAP_MAX, CAPTURE_SOURCES, CaptureConf, CaptureRecord, NO_CLASS},
    policy::Limit,
    source::SrcKey,
};
use tokio::io::unix::AsyncFd;

use crate::{addr, map_table::open_pinned, maps::name, time};

/// How long a capture runs past the command's last renewal.
const LEASE: Duration = Duration::from_secs(3);
/// How often the command renews it.
const RENEW: Duration = Duration::from_secs(1);

/// Packets a capture may copy per second at most: each copy costs the
/// program several times a banned drop (the bench prints it), so this keeps
/// a capture to a small share of one core whatever the operator asks.
pub const RATE_MAX: u64 = 10_000;

/// What to capture.
#[derive(Clone, Debug)]
pub struct Selection {
    pub verdicts: Vec<Verdict>,
    pub reasons: Vec<Reason>,
    pub sources: Vec<IpNet>,
    pub snaplen: u32,
    /// Packets per second at most (and a burst of a tenth of a second).
    pub rate: u64,
}

impl Selection {
    /// The programs' form of it, running until `until_ns`.
    pub fn conf(&self, until_ns: u64) -> Result<CaptureConf> {
        if self.sources.len() > CAPTURE_SOURCES {
            bail!("at most {CAPTURE_SOURCES} --source filters");
        }
        if self.snaplen == 0 || self.snaplen as usize > CAPTURE_SNAP_MAX {
            bail!("--snaplen must be 1..={CAPTURE_SNAP_MAX}");
        }
        if self.rate == 0 || self.rate > RATE_MAX {
            bail!("--rate must be 1 to {RATE_MAX} packets/s");
        }
        let mut conf = CaptureConf {
            until_ns,
            verdicts: self.verdicts.iter().fold(0, |m, v| m | 1 << *v as u32),
            reasons: self.reasons.iter().fold(0, |m, r| m | 1 << *r as u32),
            snaplen: self.snaplen,
            sources: self.sources.len() as u32,
            limit: Limit::new(self.rate, 1_000_000_000, self.rate.div_ceil(10).max(1)),
            ..CaptureConf::default()
        };
        for (i, net) in self.sources.iter().enumerate() {
            let key = addr::cidr_key(*net);
            let mut mask = [0u8; 16];
            for bit in 0..key.prefix_len() {
                mask[bit as usize / 8] |= 0x80 >> (bit % 8);
            }
            let addr: [u8; 16] = key.data();
            let masked: [u8; 16] = std::array::from_fn(|j| addr[j] & mask[j]);
            conf.src_addr[i] = SrcKey { addr: masked }.words();
            conf.src_mask[i] = SrcKey { addr: mask }.words();
        }
        Ok(conf)
    }
}

/// The comment a captured packet carries: what sipguard did with it.
pub fn comment(rec: &CaptureRecord) -> String {
    let verdict = Verdict::ALL
        .iter()
        .find(|v| **v as u32 == rec.verdict)
        .map_or("?", |v| v.name());
    let reason = Reason::ALL
        .iter()
        .find(|r| **r as u32 == rec.reason)
        .map_or("?", |r| r.name());
    let class = if rec.class == NO_CLASS {
        String::new()
    } else {
        Class::ALL
            .iter()
            .find(|c| **c as u32 == rec.class)
            .map_or(String::new(), |c| format!(" class={}", c.name()))
    };
    format!("sipguard verdict={verdict} reason={reason}{class}")
}

/// Writes records as pcapng.
pub struct Writer<W: Write> {
    out: PcapNgWriter<W>,
    /// Wall-clock time minus CLOCK_MONOTONIC, for the timestamps.
    wall_offset: Duration,
}

impl<W: Write> Writer<W> {
    /// A pcapng section with one Ethernet interface, `iface`, and
    /// nanosecond timestamps.
    pub fn new(out: W, iface: &str, snaplen: u32, what: &str) -> Result<Self> {
        let mut out = PcapNgWriter::new(out).context("writing the pcapng header")?;
        out.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.to_string())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                    "sipguard capture: {what}"
                ))),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .context("writing the pcapng interface")?;
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mono = Duration::from_nanos(time::monotonic_ns());
        let mut w = Writer {
            out,
            wall_offset: wall.saturating_sub(mono),
        };
        // The header at once: a reader on a pipe starts from it.
        w.flush()?;
        Ok(w)
    }

    pub fn write(&mut self, rec: &CaptureRecord) -> Result<()> {
        let caplen = (rec.caplen as usize).min(CAPTURE_SNAP_MAX);
        self.out
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: self.wall_offset + Duration::from_nanos(rec.ts_ns),
                original_len: rec.len,
                data: Cow::Borrowed(&rec.data[..caplen]),
                options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment(rec)))],
            })
            .context("writing a packet")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.out.get_mut().flush()?)
    }
}

/// What a capture did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: u64,
    /// Selected but not copied: over the rate, or the ring was full.
    pub missed: u64,
}

/// Capture from the agent whose maps are pinned in `dir` into `out` until
/// `count` packets (0: no end) or `stop` resolves.
pub async fn run<W: Write>(
    dir: &Path,
    sel: &Selection,
    count: u64,
    out: &mut Writer<W>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Outcome> {
    let open = |name: &str| {
        open_pinned(dir, name).with_context(|| {
            format!(
                "{name}: the running agent may be older than this sipguard (restart it to capture)"
            )
        })
    };
    let mut conf_map: Array<MapData, CaptureConf> = open(name::CAPTURE)?.try_into()?;
    let ring: RingBuf<MapData> = open(name::CAPTURE_RING)?.try_into()?;
    let now = time::monotonic_ns();
    let running = conf_map.get(&0, 0)?;
    if running.until_ns > now {
        bail!(
            "another `sipguard capture` runs on this interface (stop it first; a capture whose \
             command died ends within {} s)",
            LEASE.as_secs()
        );
    }
    let lease = || time::monotonic_ns() + LEASE.as_nanos() as u64;
    let mut conf = sel.conf(lease())?;
    conf_map.set(0, conf, 0)?;
    let result = pump(&mut conf_map, &mut conf, ring, count, out, stop, lease).await;
    // Off, whatever happened: the programs stop copying at once.
    let missed = conf_map.get(&0, 0).map(|c| c.missed).unwrap_or(0);
    let _ = conf_map.set(0, CaptureConf::default(), 0);
    result.map(|written| Outcome { written, missed })
}

async fn pump<W: Write>(
    conf_map: &mut Array<MapData, CaptureConf>,
    conf: &mut CaptureConf,
    ring: RingBuf<MapData>,
    count: u64,
    out: &mut Writer<W>,
    stop: impl std::future::Future<Output = ()>,
    lease: impl Fn() -> u64,
) -> Result<u64> {
    // SAFETY: the ring buffer owns its fd and keeps it open while registered.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("watching the capture ring: {e}"))?;
    let mut renew = tokio::time::interval(RENEW);
    let mut written = 0;
    tokio::pin!(stop);
    while count == 0 || written < count {
        tokio::select! {
            _ = &mut stop => break,
            _ = renew.tick() => {
                // Keep what the programs count; renew the lease.
                let missed = conf_map.get(&0, 0).map(|c| c.missed).unwrap_or(0);
                conf.until_ns = lease();
                conf.missed = missed;
                conf_map.set(0, *conf, 0)?;
            }
            ready = fd.readable_mut() => {
                let mut guard = ready?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if item.len() < std::mem::size_of::<CaptureRecord>() {
                        continue;
                    }
                    // SAFETY: the programs write whole records; length checked.
                    let rec: CaptureRecord =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    drop(item);
                    out.write(&rec)?;
                    written += 1;
                    if count != 0 && written >= count {
                        break;
                    }
                }
                out.flush()?;
                guard.clear_ready();
            }
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(sources: &[&str]) -> Selection {
        Selection {
            verdicts: vec![Verdict::Drop],
            reasons: vec![Reason::Banned, Reason::Scanner],
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            snaplen: 256,
            rate: 1000,
        }
    }

    #[test]
    fn selection_in_the_programs_form() {
        let c = sel(&["198.18.5.0/24"]).conf(7).unwrap();
        assert_eq!(c.until_ns, 7);
        assert_eq!(c.verdicts, 1 << Verdict::Drop as u32);
        assert_eq!(
            c.reasons,
            1 << Reason::Banned as u32 | 1 << Reason::Scanner as u32
        );
        assert_eq!(c.limit, Limit::new(1000, 1_000_000_000, 100));
        // 198.18.5.9 as the program reads it matches; 198.18.6.9 does not.
        let words = |ip: &str| addr::src_key(ip.parse().unwrap(), &[0xff; 16]).words();
        let hit = |w: [u64; 2]| {
            w[0] & c.src_mask[0][0] == c.src_addr[0][0]
                && w[1] & c.src_mask[0][1] == c.src_addr[0][1]
        };
        assert!(hit(words("198.18.5.9")));
        assert!(!hit(words("198.18.6.9")));
        assert!(!hit(words("2001:db8::1")));
        assert!(sel(&["198.18.0.0/16"; 5]).conf(0).is_err());
    }

    #[test]
    fn the_rate_is_bounded() {
        let mut s = sel(&[]);
        s.rate = RATE_MAX;
        assert!(s.conf(0).is_ok());
        s.rate = RATE_MAX + 1;
        assert!(s.conf(0).is_err());
        s.rate = 0;
        assert!(s.conf(0).is_err());
    }

    #[test]
    fn comments_name_verdict_reason_and_class() {
        let mut rec = CaptureRecord {
            ts_ns: 0,
            len: 60,
            caplen: 60,
            verdict: Verdict::Drop as u32,
            reason: Reason::Scanner as u32,
            class: Class::Options as u32,
            _pad: 0,
            data: [0; CAPTURE_SNAP_MAX],
        };
        assert_eq!(
            comment(&rec),
            "sipguard verdict=drop reason=scanner class=options"
        );
        rec.class = NO_CLASS;
        assert_eq!(comment(&rec), "sipguard verdict=drop reason=scanner");
    }
}
