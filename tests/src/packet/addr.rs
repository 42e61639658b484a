//! Addresses for test packets. Only 198.18.0.0/15 (RFC 2544 benchmarking)
//! and 2001:db8::/32 (documentation) are used, and the builders refuse any
//! other, so no fixture can ever name a real host.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Locally administered MACs: the program never looks at them.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];

pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Distinct client `n` (n < 2^17) in 198.18.0.0/15, for tests that need
/// many sources. `v4(0)` is 198.18.0.0.
pub fn v4(n: u32) -> Ipv4Addr {
    assert!(
        n < 1 << 17,
        "v4({n}): 198.18.0.0/15 holds only 131072 addresses"
    );
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n)
}

/// Distinct client `n` in 2001:db8:0:1::/64.
pub fn v6(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, (n >> 16) as u16, n as u16)
}

pub fn check_v4(a: Ipv4Addr) {
    let o = a.octets();
    assert!(
        o[0] == 198 && (o[1] & 0xfe) == 18,
        "{a} is outside 198.18.0.0/15: tests use only the benchmark range"
    );
}

pub fn check_v6(a: Ipv6Addr) {
    let s = a.segments();
    assert!(
        s[0] == 0x2001 && s[1] == 0xdb8,
        "{a} is outside 2001:db8::/32: tests use only the documentation range"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ranges() {
        assert_eq!(v4(0), Ipv4Addr::new(198, 18, 0, 0));
        assert_eq!(v4((1 << 17) - 1), Ipv4Addr::new(198, 19, 255, 255));
        check_v6(v6(123_456));
        assert_ne!(v6(1), v6(2));
    }

    #[test]
    #[should_panic(expected = "outside 198.18.0.0/15")]
    fn refuses_real_v4() {
        check_v4(Ipv4Addr::new(198, 20, 0, 1));
    }

    #[test]
    #[should_panic(expected = "outside 2001:db8::/32")]
    fn refuses_real_v6() {
        check_v6(Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1));
    }
}
