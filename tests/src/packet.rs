//! Test packets: Ethernet frames built with etherparse, plus the few
//! malformations etherparse will not build (a bad IHL, a lying UDP length,
//! truncation, padding), which are applied as byte edits afterwards.
//!
//! Every address is checked to lie in 198.18.0.0/15 or 2001:db8::/32 (see
//! `addr`), so no fixture can name a real host.
//!
//! ```no_run
//! use sipguard_tests::packet::{Pkt, sip::Sip, CLIENT_V4, SERVER_V4};
//! let frame = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::invite_with_sdp().build())
//!     .vlan(100)
//!     .build();
//! ```

pub mod addr;
pub mod frames;
pub mod ip_extras;
pub mod response;
pub mod sip;

pub use addr::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, SERVER_MAC, SERVER_V4, SERVER_V6, v4, v6};
pub use frames::{arp_request, garbage};
pub use ip_extras::{Ext6, Frag, IPV4_ROUTER_ALERT, ipv4_nop_options};

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FragmentHeader,
    Ipv6Header, Ipv6RoutingExtensions, PacketBuilder, UdpHeader, VlanId,
};

/// Source port of every fixture (an ephemeral-range port).
pub const CLIENT_PORT: u16 = 40000;

/// Ethernet's minimum frame length without the FCS: shorter frames are padded.
pub const ETH_MIN_FRAME: usize = 60;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const TCP_HLEN: usize = 20;
const TTL: u8 = 64;

/// TCP flag combinations the fixtures send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tcp {
    Syn,
    SynAck,
    Ack,
}

/// Where to cut a frame short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Keep the first `n` bytes.
    At(usize),
    /// Half way into the fixed IP header.
    InIpHeader,
    /// Half way into the UDP or TCP header.
    InL4Header,
}

#[derive(Clone, Debug)]
enum Net {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        options: Vec<u8>,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        exts: Vec<Ext6>,
    },
}

#[derive(Clone, Copy, Debug)]
enum L4 {
    Udp { dport: u16 },
    Tcp { dport: u16, flags: Tcp },
}

/// Byte edits etherparse cannot express, applied after it writes the frame.
#[derive(Clone, Debug, Default)]
struct Edits {
    ihl: Option<u8>,
    udp_len: Option<u16>,
    cut: Option<Cut>,
    pad: Option<(usize, Vec<u8>)>,
}

/// An Ethernet frame carrying UDP or TCP over IPv4 or IPv6.
#[derive(Clone, Debug)]
pub struct Pkt {
    vlans: Vec<u16>,
    net: Net,
    l4: L4,
    payload: Vec<u8>,
    frag: Option<Frag>,
    edits: Edits,
}

impl Pkt {
    fn new(net: Net, l4: L4, payload: Vec<u8>) -> Self {
        Self {
            vlans: Vec::new(),
            net,
            l4,
            payload,
            frag: None,
            edits: Edits::default(),
        }
    }

    pub fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: impl Into<Vec<u8>>) -> Self {
        let net = Net::V4 {
            src,
            dst,
            options: Vec::new(),
        };
        Self::new(net, L4::Udp { dport }, payload.into())
    }

    pub fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: impl Into<Vec<u8>>) -> Self {
        let net = Net::V6 {
            src,
            dst,
            exts: Vec::new(),
        };
        Self::new(net, L4::Udp { dport }, payload.into())
    }

    pub fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, flags: Tcp) -> Self {
        let net = Net::V4 {
            src,
            dst,
            options: Vec::new(),
        };
        Self::new(net, L4::Tcp { dport, flags }, Vec::new())
    }

    pub fn tcp_v6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, flags: Tcp) -> Self {
        let net = Net::V6 {
            src,
            dst,
            exts: Vec::new(),
        };
        Self::new(net, L4::Tcp { dport, flags }, Vec::new())
    }

    /// Add a VLAN tag. One tag is 802.1Q; a second call makes the first the
    /// 802.1ad outer tag and this one the 802.1Q inner tag.
    pub fn vlan(mut self, id: u16) -> Self {
        assert!(
            self.vlans.len() < 2,
            "etherparse builds at most two VLAN tags"
        );
        self.vlans.push(id);
        self
    }

    /// TCP payload (UDP payloads are given to the constructor).
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// IPv4 options (a multiple of 4 bytes, at most 40): IHL 5 + len/4.
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        match &mut self.net {
            Net::V4 { options, .. } => *options = opts.to_vec(),
            Net::V6 { .. } => panic!("ipv4_options() on an IPv6 packet"),
        }
        self
    }

    /// Add an IPv6 extension header (see `Ext6` for the order on the wire).
    pub fn ext6(mut self, ext: Ext6) -> Self {
        match &mut self.net {
            Net::V6 { exts, .. } => {
                assert!(!exts.contains(&ext), "{ext:?} added twice");
                exts.push(ext);
            }
            Net::V4 { .. } => panic!("ext6() on an IPv4 packet"),
        }
        self
    }

    /// Build one fragment of the datagram instead of the whole of it.
    pub fn fragment(mut self, frag: Frag) -> Self {
        if let Frag::First { split } | Frag::Rest { split } = frag {
            assert!(
                split > 0 && split % 8 == 0,
                "fragment split must be a positive multiple of 8"
            );
        }
        self.frag = Some(frag);
        self
    }

    /// Write `ihl` into the IPv4 header-length nibble (etherparse always
    /// writes the true one), e.g. 4 or 0 for a malformed header.
    pub fn ihl(mut self, ihl: u8) -> Self {
        assert!(ihl < 16, "IHL is a 4-bit field");
        self.edits.ihl = Some(ihl);
        self
    }

    /// Overwrite the UDP length field (etherparse writes the true length).
    pub fn udp_len(mut self, len: u16) -> Self {
        self.edits.udp_len = Some(len);
        self
    }

    /// Cut the finished frame short.
    pub fn cut(mut self, cut: Cut) -> Self {
        self.edits.cut = Some(cut);
        self
    }

    /// Pad the finished frame to `len` bytes with `fill` repeated, the way a
    /// NIC pads a short frame (the IP and UDP lengths do not cover it).
    pub fn pad_to(mut self, len: usize, fill: &[u8]) -> Self {
        self.edits.pad = Some((len, fill.to_vec()));
        self
    }

    /// Offset of the IP header in the frame.
    pub fn l3_offset(&self) -> usize {
        ETH_HLEN + VLAN_HLEN * self.vlans.len()
    }

    /// Offset of the UDP/TCP header (or, in a non-first fragment, of the
    /// fragment's data).
    pub fn l4_offset(&self) -> usize {
        let ip = match &self.net {
            Net::V4 { options, .. } => IPV4_HLEN + options.len(),
            Net::V6 { exts, .. } => {
                let frag = if self.frag.is_some() { 8 } else { 0 };
                IPV6_HLEN + exts.iter().map(|e| e.wire_len()).sum::<usize>() + frag
            }
        };
        self.l3_offset() + ip
    }

    /// Offset of the transport payload (unfragmented packets).
    pub fn payload_offset(&self) -> usize {
        self.l4_offset()
            + match self.l4 {
                L4::Udp { .. } => UDP_HLEN,
                L4::Tcp { .. } => TCP_HLEN,
            }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.check_addresses();
        let mut out = Vec::new();
        let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
        let ip = self.ip_headers();
        let step = match self.vlans.as_slice() {
            [] => eth.ip(ip),
            [id] => eth.single_vlan(vlan_id(*id)).ip(ip),
            [outer, inner] => eth.double_vlan(vlan_id(*outer), vlan_id(*inner)).ip(ip),
            _ => unreachable!("vlan() allows two tags"),
        };
        let written = match (self.frag, self.l4) {
            (Some(Frag::First { split }), l4) => {
                step.write(&mut out, l4.ip_number(), &self.datagram()[..split])
            }
            (Some(Frag::Rest { split }), l4) => {
                step.write(&mut out, l4.ip_number(), &self.datagram()[split..])
            }
            (_, L4::Udp { dport }) => step.udp(CLIENT_PORT, dport).write(&mut out, &self.payload),
            (_, L4::Tcp { dport, flags }) => {
                let t = step.tcp(CLIENT_PORT, dport, 1000, 64240);
                let t = match flags {
                    Tcp::Syn => t.syn(),
                    Tcp::SynAck => t.syn().ack(1),
                    Tcp::Ack => t.ack(1),
                };
                t.write(&mut out, &self.payload)
            }
        };
        written.expect("etherparse builds every packet Pkt can describe");
        self.apply_edits(&mut out);
        out
    }

    fn check_addresses(&self) {
        match &self.net {
            Net::V4 { src, dst, .. } => [src, dst].map(|a| addr::check_v4(*a)),
            Net::V6 { src, dst, .. } => [src, dst].map(|a| addr::check_v6(*a)),
        };
    }

    fn ipv4_header(&self) -> Ipv4Header {
        let Net::V4 { src, dst, options } = &self.net else {
            unreachable!()
        };
        let mut h = Ipv4Header::new(0, TTL, self.l4.ip_number(), src.octets(), dst.octets())
            .expect("empty payload fits");
        h.options = Ipv4Options::try_from(options.as_slice())
            .expect("IPv4 options must be a multiple of 4 bytes, at most 40");
        h.identification = 0x5147;
        match self.frag {
            Some(Frag::First { .. }) => {
                h.dont_fragment = false;
                h.more_fragments = true;
            }
            Some(Frag::Rest { split }) => {
                h.dont_fragment = false;
                h.fragment_offset = frag_offset(split);
            }
            Some(Frag::Atomic) => panic!("Frag::Atomic is IPv6 only"),
            None => {}
        }
        h
    }

    fn ipv6_header(&self) -> (Ipv6Header, Ipv6Extensions) {
        let Net::V6 { src, dst, exts } = &self.net else {
            unreachable!()
        };
        let h = Ipv6Header {
            next_header: self.l4.ip_number(),
            hop_limit: TTL,
            source: src.octets(),
            destination: dst.octets(),
            ..Default::default()
        };
        let mut e = Ipv6Extensions::default();
        let mut final_dest = None;
        for ext in exts {
            match ext {
                Ext6::HopByHop => e.hop_by_hop_options = Some(ext.header()),
                Ext6::DestOpts => e.destination_options = Some(ext.header()),
                Ext6::Routing => {
                    e.routing = Some(Ipv6RoutingExtensions {
                        routing: ext.header(),
                        final_destination_options: None,
                    })
                }
                Ext6::FinalDestOpts => final_dest = Some(ext.header()),
            }
        }
        if let Some(fd) = final_dest {
            e.routing
                .as_mut()
                .expect("Ext6::FinalDestOpts needs Ext6::Routing before it")
                .final_destination_options = Some(fd);
        }
        let (offset, more) = match self.frag {
            None => (None, false),
            Some(Frag::First { .. }) => (Some(0), true),
            Some(Frag::Rest { split }) => (Some(split), false),
            Some(Frag::Atomic) => (Some(0), false),
        };
        if let Some(off) = offset {
            e.fragment = Some(Ipv6FragmentHeader::new(
                self.l4.ip_number(),
                frag_offset(off),
                more,
                0x5147_0001,
            ));
        }
        (h, e)
    }

    fn ip_headers(&self) -> IpHeaders {
        match self.net {
            Net::V4 { .. } => IpHeaders::Ipv4(self.ipv4_header(), Default::default()),
            Net::V6 { .. } => {
                let (h, e) = self.ipv6_header();
                IpHeaders::Ipv6(h, e)
            }
        }
    }

    /// The whole transport datagram (header with a checksum over the whole
    /// payload, then payload), for cutting into fragments.
    fn datagram(&self) -> Vec<u8> {
        let mut out = match (self.l4, &self.net) {
            (L4::Udp { dport }, Net::V4 { .. }) => {
                let h = UdpHeader::with_ipv4_checksum(
                    CLIENT_PORT,
                    dport,
                    &self.ipv4_header(),
                    &self.payload,
                );
                h.expect("payload fits in a datagram").to_bytes().to_vec()
            }
            (L4::Udp { dport }, Net::V6 { .. }) => {
                let h = UdpHeader::with_ipv6_checksum(
                    CLIENT_PORT,
                    dport,
                    &self.ipv6_header().0,
                    &self.payload,
                );
                h.expect("payload fits in a datagram").to_bytes().to_vec()
            }
            (L4::Tcp { .. }, _) => panic!("only UDP datagrams are fragmented"),
        };
        out.extend_from_slice(&self.payload);
        out
    }

    fn apply_edits(&self, out: &mut Vec<u8>) {
        let l3 = self.l3_offset();
        if let Some(ihl) = self.edits.ihl {
            assert!(
                matches!(self.net, Net::V4 { .. }),
                "ihl() on an IPv6 packet"
            );
            out[l3] = 0x40 | ihl;
        }
        if let Some(len) = self.edits.udp_len {
            let at = self.l4_offset() + 4;
            out[at..at + 2].copy_from_slice(&len.to_be_bytes());
        }
        if let Some((len, fill)) = &self.edits.pad {
            let mut i = 0;
            while out.len() < *len {
                out.push(fill.get(i % fill.len().max(1)).copied().unwrap_or(0));
                i += 1;
            }
        }
        if let Some(cut) = self.edits.cut {
            let keep = match cut {
                Cut::At(n) => n,
                Cut::InIpHeader => l3 + 10,
                Cut::InL4Header => self.l4_offset() + 4,
            };
            out.truncate(keep);
        }
    }
}

impl L4 {
    fn ip_number(self) -> IpNumber {
        match self {
            L4::Udp { .. } => IpNumber::UDP,
            L4::Tcp { .. } => IpNumber::TCP,
        }
    }
}

fn vlan_id(id: u16) -> VlanId {
    VlanId::try_new(id).expect("VLAN ids are 12 bits")
}

fn frag_offset(bytes: usize) -> IpFragOffset {
    IpFragOffset::try_new((bytes / 8) as u16).expect("fragment offset fits in 13 bits")
}

/// A scanner's OPTIONS from `src` to the server: SIPVicious' User-Agent,
/// `friendly-scanner`, one of the ban-tier signatures.
pub fn scanner_options(src: std::net::Ipv4Addr) -> Vec<u8> {
    Pkt::udp_v4(
        src,
        SERVER_V4,
        5060,
        sip::Sip::request("OPTIONS")
            .user_agent(Some("friendly-scanner"))
            .build(),
    )
    .build()
}

#[cfg(test)]
mod tests {
    //! The builder is checked against etherparse's own parser, so fixtures
    //! describe the packets their names say.

    use etherparse::{LaxNetSlice, LaxSlicedPacket, SlicedPacket, TransportSlice};

    use super::*;

    #[test]
    fn udp_over_two_vlans_parses_back() {
        let frame = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, b"OPTIONS x".to_vec())
            .vlan(10)
            .vlan(20)
            .build();
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        assert_eq!(
            u16::from_be_bytes([frame[12], frame[13]]),
            0x88a8,
            "outer tag is 802.1ad"
        );
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 0x8100);
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            panic!("no UDP")
        };
        assert_eq!(udp.destination_port(), 5060);
        assert_eq!(udp.payload(), b"OPTIONS x");
        assert_eq!(
            frame.len(),
            Pkt::udp_v4(CLIENT_V4, SERVER_V4, 1, b"".to_vec())
                .build()
                .len()
                + 8
                + 9
        );
    }

    #[test]
    fn ipv4_options_set_ihl() {
        for words in [1usize, 10] {
            let pkt = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, b"x".to_vec())
                .ipv4_options(&ipv4_nop_options(words));
            let frame = pkt.build();
            assert_eq!(frame[14] & 0x0f, 5 + words as u8);
            let p = SlicedPacket::from_ethernet(&frame).unwrap();
            assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
            assert_eq!(pkt.payload_offset(), 14 + 20 + words * 4 + 8);
        }
    }

    #[test]
    fn ipv6_chain_in_rfc_order() {
        let pkt = Pkt::udp_v6(CLIENT_V6, SERVER_V6, 5060, b"INVITE x".to_vec())
            .ext6(Ext6::Routing)
            .ext6(Ext6::DestOpts)
            .ext6(Ext6::HopByHop);
        let frame = pkt.build();
        // IPv6 next header, then each header's next-header byte.
        assert_eq!(frame[14 + 6], 0, "hop-by-hop first");
        assert_eq!(frame[54], 60, "then destination options");
        assert_eq!(frame[62], 43, "then routing");
        assert_eq!(frame[78], 17, "then UDP");
        assert_eq!(pkt.payload_offset(), 14 + 40 + 8 + 16 + 24 + 8);
        assert_eq!(&frame[pkt.payload_offset()..], b"INVITE x");
    }

    #[test]
    fn fragments_reassemble() {
        let payload = garbage(100, 7);
        let base = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, payload.clone());
        let first = base.clone().fragment(Frag::First { split: 48 }).build();
        let rest = base.clone().fragment(Frag::Rest { split: 48 }).build();
        let whole = base.build();
        // MF set / offset 0, then MF clear / offset 6 words.
        assert_eq!(u16::from_be_bytes([first[20], first[21]]), 0x2000);
        assert_eq!(u16::from_be_bytes([rest[20], rest[21]]), 48 / 8);
        let mut joined = first[34..].to_vec();
        joined.extend_from_slice(&rest[34..]);
        assert_eq!(joined, whole[34..], "fragments carry the whole datagram");

        let v6 = Pkt::udp_v6(CLIENT_V6, SERVER_V6, 5060, payload)
            .fragment(Frag::Rest { split: 48 })
            .build();
        assert_eq!(v6[20], 44, "fragment header follows the IPv6 header");
        assert_eq!(u16::from_be_bytes([v6[56], v6[57]]) >> 3, 6);
    }

    #[test]
    fn edits() {
        let pkt = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, b"ACK ".to_vec());
        let padded = pkt.clone().pad_to(ETH_MIN_FRAME, b"Z").build();
        assert_eq!(padded.len(), 60);
        assert_eq!(&padded[46..], &[b'Z'; 14]);
        let p = LaxSlicedPacket::from_ethernet(&padded).unwrap();
        let Some(LaxNetSlice::Ipv4(ip)) = p.net else {
            panic!("no IPv4")
        };
        assert_eq!(ip.header().total_len(), 20 + 8 + 4);
        assert_eq!(pkt.clone().cut(Cut::InIpHeader).build().len(), 24);
        assert_eq!(pkt.clone().cut(Cut::InL4Header).build().len(), 38);
        assert_eq!(pkt.clone().ihl(4).build()[14], 0x44);
        assert_eq!(&pkt.udp_len(3).build()[38..40], &[0, 3]);
    }

    #[test]
    #[should_panic(expected = "outside 198.18.0.0/15")]
    fn refuses_real_addresses() {
        Pkt::udp_v4(Ipv4Addr::new(192, 0, 2, 1), SERVER_V4, 5060, Vec::new()).build();
    }
}
