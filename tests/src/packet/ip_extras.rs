//! IP-layer extras of a test packet: IPv4 options, IPv6 extension headers
//! and fragmentation.

use etherparse::{IpNumber, Ipv6RawExtHeader};

use super::addr::SERVER_V6;

/// IPv4 options made of NOPs and a closing EOL: `words` 32-bit words, so the
/// header's IHL becomes 5 + `words` (at most 15).
pub fn ipv4_nop_options(words: usize) -> Vec<u8> {
    assert!(
        words <= 10,
        "IPv4 has room for at most 10 option words (IHL 15)"
    );
    let mut opts = vec![1u8; words * 4];
    if let Some(last) = opts.last_mut() {
        *last = 0;
    }
    opts
}

/// The Router Alert option (RFC 2113), one word: IHL 6.
pub const IPV4_ROUTER_ALERT: [u8; 4] = [148, 4, 0, 0];

/// IPv6 extension headers. etherparse writes them in RFC 8200 order
/// (hop-by-hop, destination options, routing, fragment, final destination
/// options) whatever order they are added in; each kind at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext6 {
    /// 8 bytes: a PadN option.
    HopByHop,
    /// 16 bytes (header length 1): a PadN option, so parsers must honour the
    /// length field.
    DestOpts,
    /// 24 bytes: a type 2 routing header with one address.
    Routing,
    /// 8 bytes, after the routing and fragment headers. Needs `Routing`.
    FinalDestOpts,
}

impl Ext6 {
    /// The header's bytes after the next-header and length fields.
    fn body(self) -> Vec<u8> {
        match self {
            Ext6::HopByHop | Ext6::FinalDestOpts => vec![1, 4, 0, 0, 0, 0],
            Ext6::DestOpts => {
                let mut b = vec![1, 12];
                b.resize(14, 0);
                b
            }
            Ext6::Routing => {
                // Routing type 2, segments left 1, 4 reserved bytes, then the
                // home address.
                let mut b = vec![2, 1, 0, 0, 0, 0];
                b.extend_from_slice(&SERVER_V6.octets());
                b
            }
        }
    }

    pub(super) fn header(self) -> Ipv6RawExtHeader {
        // The next-header field is filled in by etherparse when it writes.
        Ipv6RawExtHeader::new_raw(IpNumber::UDP, &self.body()).expect("valid extension length")
    }

    /// Bytes on the wire.
    pub fn wire_len(self) -> usize {
        self.body().len() + 2
    }
}

/// Which piece of a fragmented datagram to build. `split` is where the
/// transport datagram (header + payload) is cut, a multiple of 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// Bytes `..split`, more-fragments set, offset 0: carries the transport
    /// header.
    First { split: usize },
    /// Bytes `split..`, offset `split`, last fragment: no transport header.
    Rest { split: usize },
    /// IPv6 only: a fragment header with offset 0 and no more fragments
    /// (RFC 6946 atomic fragment) around the whole datagram.
    Atomic,
}
