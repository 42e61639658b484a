//! Header parsing: Ethernet, up to two VLAN tags, IPv4 (with options) or IPv6
//! (skipping hop-by-hop, routing, destination-options and fragment headers),
//! then UDP or TCP. Produces a `Flow` for packets to a SIP port, or why the
//! packet is not inspected (`Skip`).

use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sipguard_common::{
    Reason,
    maps::{PORT_TCP, PORT_UDP},
};

use crate::{
    cursor::{Cursor, load_be16, load_u32, load_u64},
    frags,
    maps::SIP_PORTS,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// VLAN tags we look through (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers we skip before giving up; real traffic has 0-2.
const MAX_IPV6_EXT_HDRS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A packet to a SIP port (ingress) or from one (egress).
pub struct Flow {
    /// The peer's address: the source on ingress, the destination (the
    /// client being answered) on egress. IPv4 as an IPv4-mapped IPv6 address
    /// (::ffff:a.b.c.d) so one key type serves both families. Two
    /// native-endian words of the address bytes (`SrcKey::from_words`):
    /// built in registers, never as bytes on the stack, whose read back as
    /// words would stall on store forwarding.
    pub src: [u64; 2],
    pub is_v6: bool,
    pub transport: Transport,
    /// TCP SYN without ACK: a connection attempt.
    pub syn: bool,
    /// A first fragment: the message continues in later fragments, so the
    /// payload here is not the whole datagram.
    pub fragmented: bool,
    /// The IP identification of a fragmented datagram (frags.rs).
    pub frag_id: u32,
    /// Start of the transport payload in the packet.
    pub payload: usize,
    /// The same as an offset from the frame start.
    pub payload_off: usize,
    /// UDP payload length as the UDP header states it: the whole datagram,
    /// even when this frame is only its first fragment.
    pub stated_len: usize,
    /// Payload length as the UDP header states it, clamped to the frame (a
    /// short Ethernet frame is padded; the padding is not payload).
    pub payload_len: usize,
}

/// Why a packet is not a `Flow`.
pub enum Skip {
    /// Not inspected: not IP, not UDP/TCP, not to a SIP port, or headers
    /// shorter than they claim.
    Pass(Reason),
    /// The source is known but the transport header is out of reach (a
    /// non-first fragment, an over-long IPv6 header chain): the lists and
    /// bans still apply, whatever the headers (`policy::opaque`).
    Opaque {
        reason: Reason,
        src: [u64; 2],
        is_v6: bool,
        /// A later fragment's IP identification (frags.rs).
        frag_id: u32,
    },
}

impl From<Reason> for Skip {
    fn from(r: Reason) -> Skip {
        Skip::Pass(r)
    }
}

/// Parse the headers between `data` and `end`. `egress`: a packet the server
/// sends, matched on its source port and keyed by its destination.
#[inline(always)]
pub fn parse(data: usize, end: usize, egress: bool) -> Result<Flow, Skip> {
    let mut c = Cursor::new(data, end);
    let eth: *const EthHdr = c.take().ok_or(Reason::Malformed)?;
    // SAFETY: `take` checked the header lies in the packet (so below too).
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });

    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = c.take().ok_or(Reason::Malformed)?;
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
    }

    let mut ip = Ip {
        src: [0; 2],
        fragmented: false,
        frag_id: 0,
        end,
    };
    let (proto, is_v6) = match ether_type {
        ETH_P_IP => (ipv4(&mut c, &mut ip, egress)?, false),
        ETH_P_IPV6 => (ipv6(&mut c, &mut ip, egress)?, true),
        _ => return Err(Reason::NotSipPort.into()),
    };
    let Ip {
        src,
        fragmented,
        frag_id,
        end: l3_end,
    } = ip;
    // Every first fragment, whatever its port or protocol: its later
    // fragments pass only if it did (frags.rs).
    if fragmented && !egress {
        frags::first(src, frag_id);
    }

    let mut stated_len = 0;
    let (transport, dport, syn, payload_len) = match proto {
        IPPROTO_UDP => {
            let udp: *const UdpHdr = c.take().ok_or(Reason::Malformed)?;
            let udp = udp as usize;
            // SAFETY (the loads below): `take` checked the 8-byte header.
            let udp_len = unsafe { load_be16(udp + 4) } as usize;
            if udp_len < 8 {
                return Err(Reason::Malformed.into());
            }
            let dport = unsafe { load_be16(if egress { udp } else { udp + 2 }) };
            let in_frame = c.remaining();
            let in_ip = l3_end.saturating_sub(c.pos);
            let stated = udp_len - 8;
            stated_len = stated;
            let len = if stated < in_frame { stated } else { in_frame };
            let len = if in_ip < len { in_ip } else { len };
            (Transport::Udp, dport, false, len)
        }
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = c.take().ok_or(Reason::Malformed)?;
            // SAFETY: `take` checked the 20-byte header.
            let dport = u16::from_be_bytes(unsafe { (*tcp).dest });
            // Byte 13 of the TCP header holds the flags: SYN 0x02, ACK 0x10.
            let flags = unsafe { *((tcp as *const u8).add(13)) };
            (Transport::Tcp, dport, flags & 0x12 == 0x02, 0)
        }
        _ => return Err(Reason::NotSipPort.into()),
    };

    let want = match transport {
        Transport::Udp => PORT_UDP,
        Transport::Tcp => PORT_TCP,
    };
    match SIP_PORTS.get(dport as u32) {
        Some(bits) if *bits & want != 0 => {}
        _ => return Err(Reason::NotSipPort.into()),
    }

    Ok(Flow {
        src,
        is_v6,
        transport,
        syn,
        fragmented,
        frag_id,
        payload: c.pos,
        payload_off: c.pos - data,
        stated_len,
        payload_len,
    })
}

/// What the IP layer of a packet says, filled in by `ipv4` and `ipv6`.
struct Ip {
    /// The peer's address (see `Flow::src`).
    src: [u64; 2],
    /// A first fragment (see `Flow::fragmented`).
    fragmented: bool,
    /// Its datagram's IP identification.
    frag_id: u32,
    /// Where the IP packet ends by its own length field: a short frame is
    /// padded to 60 bytes, and the padding is neither IP nor UDP payload.
    end: usize,
}

/// IPv4: skip options, hand non-first fragments back with their source,
/// return the protocol.
#[inline(always)]
fn ipv4(c: &mut Cursor, ip: &mut Ip, egress: bool) -> Result<u8, Skip> {
    let start = c.pos;
    let hdr: *const Ipv4Hdr = c.take().ok_or(Reason::Malformed)?;
    // SAFETY (the loads below): `take` checked the 20-byte header.
    let total = unsafe { load_be16(start + 2) } as usize;
    // 0 is what segmentation offload leaves: no limit then.
    if total != 0 {
        ip.end = start + total;
    }
    let vihl = unsafe { (*hdr).vihl };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(Reason::Malformed.into());
    }
    c.skip(ihl - Ipv4Hdr::LEN).ok_or(Reason::Malformed)?;
    // ::ffff:a.b.c.d: bytes 10 and 11 are 0xff, the address is bytes 12-15
    // (the high half of the second little-endian word).
    // SAFETY (the loads below): `take` checked the 20-byte header.
    let peer = unsafe { load_u32(if egress { start + 16 } else { start + 12 }) };
    ip.src[1] = 0xffff_0000 | (peer as u64) << 32;
    let frags = unsafe { load_be16(start + 6) };
    ip.frag_id = unsafe { load_be16(start + 4) } as u32;
    if frags & 0x1fff != 0 {
        return Err(Skip::Opaque {
            reason: Reason::Fragment,
            src: ip.src,
            is_v6: false,
            frag_id: ip.frag_id,
        });
    }
    ip.fragmented = frags & 0x2000 != 0;
    // SAFETY: `take` checked the 20-byte header.
    Ok(unsafe { (*hdr).proto })
}

/// IPv6: walk the extension headers we know, hand non-first fragments and
/// over-long chains back with their source, return the upper-layer
/// protocol.
#[inline(always)]
fn ipv6(c: &mut Cursor, ip: &mut Ip, egress: bool) -> Result<u8, Skip> {
    let start = c.pos;
    let hdr: *const Ipv6Hdr = c.take().ok_or(Reason::Malformed)?;
    // SAFETY (the loads below): `take` checked the 40-byte header.
    let payload = unsafe { load_be16(start + 4) } as usize;
    // 0 means a jumbogram (hop-by-hop option): no limit then.
    if payload != 0 {
        ip.end = c.pos + payload;
    }
    let peer = if egress { start + 24 } else { start + 8 };
    ip.src = unsafe { [load_u64(peer), load_u64(peer + 8)] };
    let mut next = unsafe { (*hdr).next_hdr };
    for _ in 0..MAX_IPV6_EXT_HDRS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Generic extension header: next header, length in 8-octet
                // units not counting the first 8.
                let ext: *const [u8; 8] = c.take().ok_or(Reason::Malformed)?;
                // SAFETY: `take` checked these 8 bytes.
                next = unsafe { (*ext)[0] };
                let extra = unsafe { (*ext)[1] } as usize * 8;
                c.skip(extra).ok_or(Reason::Malformed)?;
            }
            IPPROTO_FRAGMENT => {
                let frag: *const [u8; 8] = c.take().ok_or(Reason::Malformed)?;
                // SAFETY: `take` checked these 8 bytes.
                next = unsafe { (*frag)[0] };
                let off_m = u16::from_be_bytes(unsafe { [(*frag)[2], (*frag)[3]] });
                ip.frag_id =
                    u32::from_be_bytes(unsafe { [(*frag)[4], (*frag)[5], (*frag)[6], (*frag)[7]] });
                if off_m >> 3 != 0 {
                    return Err(Skip::Opaque {
                        reason: Reason::Fragment,
                        src: ip.src,
                        is_v6: true,
                        frag_id: ip.frag_id,
                    });
                }
                ip.fragmented = off_m & 1 != 0;
            }
            _ => return Ok(next),
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Err(Skip::Opaque {
                reason: Reason::HeaderChain,
                src: ip.src,
                is_v6: true,
                frag_id: 0,
            })
        }
        _ => Ok(next),
    }
}
