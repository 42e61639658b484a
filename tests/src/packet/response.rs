//! What the server sends: SIP responses as frames from the server to a
//! client, for the TC egress program (earned trust, auth failures), which
//! reads responses leaving from a SIP port.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

use super::addr::{CLIENT_MAC, SERVER_MAC, check_v4, check_v6};

/// A response with status `code` to a request whose CSeq method is
/// `method`, as a registrar sends it (a challenge header included, so a
/// 401 reads like Kamailio's and a 200 is as long).
pub fn response(code: u16, reason: &str, method: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:40000;branch=z9hG4bK-trust-1;rport=40000\r\n\
         From: <sip:1001@example.com>;tag=a1b2c3\r\n\
         To: <sip:1001@example.com>;tag=srv-77\r\n\
         Call-ID: 0f3c2a@198.18.0.2\r\n\
         CSeq: 2 {method}\r\n\
         WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc123\"\r\n\
         Server: kamailio\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A UDP/IPv4 frame from the server's MAC to the client's.
pub fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    for a in [src, dst] {
        check_v4(a);
    }
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("build frame");
    out
}

/// A UDP/IPv6 frame from the server's MAC to the client's.
pub fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    for a in [src, dst] {
        check_v6(a);
    }
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("build frame");
    out
}
