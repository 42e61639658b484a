//! The committed packet captures in tests/fixtures/captures (how each was
//! recorded is in the README there): a classic libpcap reader, and the few
//! facts about a captured frame the fixture tables need.
//!
//! The reader is small on purpose: the captures are written by
//! `tshark -F pcap` (classic format, Ethernet link type), so only that
//! format is accepted, in either byte order and with micro- or nanosecond
//! timestamps. Anything else is refused with a message saying why, so a
//! re-recorded capture in another format fails loudly instead of replaying
//! garbage.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// libpcap's link type for Ethernet (LINKTYPE_ETHERNET).
pub const LINKTYPE_ETHERNET: u32 = 1;

const GLOBAL_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
/// Magic numbers as read little-endian: microsecond and nanosecond files,
/// written little- or big-endian.
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// One capture file: its Ethernet frames in capture order.
#[derive(Clone, Debug)]
pub struct Capture {
    pub name: String,
    pub frames: Vec<Vec<u8>>,
}

/// Directory of the committed captures.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures")
}

/// Load `<dir>/<name>.pcap`.
pub fn load(name: &str) -> Result<Capture> {
    let path = dir().join(format!("{name}.pcap"));
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let frames = parse(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Capture {
        name: name.to_string(),
        frames,
    })
}

/// The frames of a classic pcap file with Ethernet link type.
pub fn parse(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    ensure!(
        bytes.len() >= GLOBAL_HEADER,
        "{} bytes: shorter than a pcap file header",
        bytes.len()
    );
    let le = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let be = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    let big_endian = match (le, be) {
        (MAGIC_US | MAGIC_NS, _) => false,
        (_, MAGIC_US | MAGIC_NS) => true,
        _ => bail!("magic {le:#010x} is not classic pcap (pcapng? record with `tshark -F pcap`)"),
    };
    let u32_at = |at: usize| -> u32 {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let link_type = u32_at(20) & 0x0fff_ffff;
    ensure!(
        link_type == LINKTYPE_ETHERNET,
        "link type {link_type} is not Ethernet: capture on the veth, not on `any`"
    );
    let mut frames = Vec::new();
    let mut at = GLOBAL_HEADER;
    while at < bytes.len() {
        ensure!(
            at + RECORD_HEADER <= bytes.len(),
            "record header of frame {} cut short",
            frames.len() + 1
        );
        let incl = u32_at(at + 8) as usize;
        let orig = u32_at(at + 12) as usize;
        // A frame cut by the snap length would replay as a different packet.
        ensure!(
            incl == orig,
            "frame {} was captured truncated ({incl} of {orig} bytes)",
            frames.len() + 1
        );
        let start = at + RECORD_HEADER;
        ensure!(
            start + incl <= bytes.len(),
            "frame {} runs past the end of the file",
            frames.len() + 1
        );
        frames.push(bytes[start..start + incl].to_vec());
        at = start + incl;
    }
    Ok(frames)
}

/// What the fixture tables check about a captured frame before replaying
/// it: who sent it where, and the SIP message it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub payload: Vec<u8>,
}

/// The addresses, destination port and payload of a UDP frame; `None` for
/// anything else (fragments included).
pub fn udp(frame: &[u8]) -> Option<UdpFrame> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = match p.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        _ => return None,
    };
    let Some(TransportSlice::Udp(u)) = p.transport else {
        return None;
    };
    Some(UdpFrame {
        src,
        dst,
        dport: u.destination_port(),
        payload: u.payload().to_vec(),
    })
}

/// The value of the first header `name` (case-insensitive, long form) in a
/// SIP message, trimmed.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// The method of a SIP request (its first word).
pub fn method(msg: &str) -> &str {
    msg.split(' ').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap file written by hand: one 3-byte frame.
    fn file(big_endian: bool, magic: u32, incl: u32, orig: u32) -> Vec<u8> {
        let w = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend(w(magic));
        f.extend([0u8; 4]); // version
        f.extend([0u8; 8]); // zone, sigfigs
        f.extend(w(65535));
        f.extend(w(LINKTYPE_ETHERNET));
        f.extend([0u8; 8]); // timestamp
        f.extend(w(incl));
        f.extend(w(orig));
        f.extend(b"abc");
        f
    }

    #[test]
    fn both_byte_orders_and_resolutions() {
        for be in [false, true] {
            for magic in [MAGIC_US, MAGIC_NS] {
                assert_eq!(
                    parse(&file(be, magic, 3, 3)).unwrap(),
                    vec![b"abc".to_vec()]
                );
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_replay() {
        let e = parse(&file(false, MAGIC_US, 3, 60)).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = parse(&file(false, 0x0a0d_0d0a, 3, 3)).unwrap_err();
        assert!(e.to_string().contains("pcapng"), "{e}");
        let mut f = file(false, MAGIC_US, 3, 3);
        f[20] = 113; // LINKTYPE_LINUX_SLL
        assert!(parse(&f).unwrap_err().to_string().contains("link type"));
        let mut f = file(false, MAGIC_US, 3, 3);
        f.truncate(f.len() - 1);
        assert!(parse(&f).is_err());
    }

    #[test]
    fn headers_by_name() {
        let m = "OPTIONS sip:a SIP/2.0\r\nUser-Agent: Nmap NSE\r\nfrom : <sip:nm@x>\r\n\r\nUser-Agent: body";
        assert_eq!(header(m, "user-agent"), Some("Nmap NSE"));
        assert_eq!(header(m, "From"), Some("<sip:nm@x>"));
        assert_eq!(header(m, "To"), None);
        assert_eq!(method(m), "OPTIONS");
    }
}
