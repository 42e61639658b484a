//! Frames that are not UDP or TCP over IP: ARP, and noise.

use std::net::Ipv4Addr;

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

use super::addr::{CLIENT_MAC, check_v4};

/// An ARP who-has request.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    check_v4(sender);
    check_v4(target);
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .expect("valid ARP lengths");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("etherparse builds ARP");
    out
}

/// `len` bytes of deterministic noise (xorshift), for garbage frames and
/// payloads that must not look like anything.
pub fn garbage(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{CLIENT_V4, SERVER_V4};

    #[test]
    fn arp_is_not_ip() {
        let frame = arp_request(CLIENT_V4, SERVER_V4);
        assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), 0x0806);
        assert_eq!(frame.len(), 14 + 28);
    }

    #[test]
    fn garbage_is_deterministic() {
        assert_eq!(garbage(32, 1), garbage(32, 1));
        assert_ne!(garbage(32, 1), garbage(32, 3));
    }
}
