//! Addresses as the maps hold them: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)
//! so one 16-byte key serves both families, and CIDR lists read from the
//! command line, files or stdin.

use std::{
    fs,
    io::Read as _,
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sipguard_common::source::SrcKey;

/// Bits the IPv4-mapped prefix (::ffff:0:0/96) adds to an IPv4 prefix.
const V4_MAPPED_BITS: u8 = 96;

pub fn to_mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn from_mapped(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The LPM trie key of a CIDR.
pub fn cidr_key(net: IpNet) -> Key<[u8; 16]> {
    let net = net.trunc();
    let bits = match net {
        IpNet::V4(n) => u32::from(n.prefix_len() + V4_MAPPED_BITS),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    Key::new(bits, to_mapped(net.addr()))
}

/// The CIDR an LPM trie key stands for.
pub fn cidr_of(key: &Key<[u8; 16]>) -> IpNet {
    let len = key.prefix_len();
    match from_mapped(key.data()) {
        IpAddr::V4(v4) if len >= u32::from(V4_MAPPED_BITS) => IpNet::V4(
            Ipv4Net::new(v4, (len - u32::from(V4_MAPPED_BITS)) as u8).expect("prefix <= 32"),
        ),
        ip => IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(to_mapped(ip)), len.min(128) as u8).expect("prefix <= 128"),
        ),
    }
}

/// A ban / rate-state key for an address: IPv6 grouped by `v6_mask`.
pub fn src_key(ip: IpAddr, v6_mask: &[u8; 16]) -> SrcKey {
    let mut addr = to_mapped(ip);
    if ip.is_ipv6() {
        for (b, m) in addr.iter_mut().zip(v6_mask) {
            *b &= m;
        }
    }
    SrcKey { addr }
}

/// The network a ban key covers: the IPv4 address, or the IPv6 group (a
/// widened ban's own width, else the configured one).
pub fn src_net(key: &SrcKey, v6_prefix: u8) -> IpNet {
    if let Some(bits) = key.group_bits() {
        let [first, _] = key.words();
        let net = SrcKey::from_words([first, 0]);
        return IpNet::V6(Ipv6Net::new(Ipv6Addr::from(net.addr), bits as u8).expect("48 or 64"));
    }
    match from_mapped(key.addr) {
        IpAddr::V4(v4) => IpNet::V4(v4.into()),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, v6_prefix.min(128))
                .expect("prefix <= 128")
                .trunc(),
        ),
    }
}

/// How a ban key reads: the IPv4 address, or the IPv6 group as a prefix
/// (a widened ban's own width, else the configured one).
pub fn show_src(key: &SrcKey, v6_prefix: u8) -> String {
    show_net(src_net(key, v6_prefix))
}

/// A network as sources are shown: one address alone, a prefix otherwise.
pub fn show_net(net: IpNet) -> String {
    if is_host(net) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// `net` is one address (a /32 or a /128).
pub fn is_host(net: IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// Prefix length a 16-byte mask keeps.
pub fn mask_len(mask: &[u8; 16]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

/// Parse one address or CIDR; a bare address is a host route. IPv6 inside
/// ::ffff:0:0/96 is IPv4 written another way, and becomes the IPv4 entry.
pub fn parse_cidr(s: &str) -> Result<IpNet> {
    let net = match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
        (Ok(net), _) => net,
        (_, Ok(ip)) => IpNet::from(ip),
        _ => bail!("'{s}' is not an IPv4/IPv6 address or CIDR (e.g. 198.18.0.0/15, 2001:db8::/32)"),
    };
    Ok(unmap(net))
}

/// ::ffff:a.b.c.d/N (N >= 96) as a.b.c.d/(N - 96); anything else as is.
pub fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= V4_MAPPED_BITS => match n.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - V4_MAPPED_BITS).expect("prefix <= 32"))
            }
            None => net,
        },
        _ => net,
    }
}

/// The key of ::ffff:0:0/96: every IPv4 source, where the lists keep their
/// holes (`ALLOW_HOLE`).
pub fn v4_space_key() -> Key<[u8; 16]> {
    Key::new(
        u32::from(V4_MAPPED_BITS),
        std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets(),
    )
}

/// True when `key` is an IPv6 prefix shorter than /96 that contains
/// ::ffff:0:0/96, so that without a hole it would match IPv4 sources.
pub fn covers_v4_space(key: &Key<[u8; 16]>) -> bool {
    let len = key.prefix_len();
    if len >= u32::from(V4_MAPPED_BITS) {
        return false;
    }
    let want = u128::from_be_bytes(v4_space_key().data());
    let have = u128::from_be_bytes(key.data());
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    want & mask == have & mask
}

pub fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse::<IpAddr>()
        .with_context(|| format!("'{s}' is not an IPv4 or IPv6 address"))
}

/// Collect CIDRs from arguments and list files. An argument `-` or a file
/// `-` reads stdin. Files hold one address or CIDR a line; `#` starts a
/// comment. Every entry is checked before any is used, and a bad one is
/// reported with its file and line.
pub fn collect_cidrs(args: &[String], files: &[String]) -> Result<Vec<IpNet>> {
    let mut out = Vec::new();
    let mut read_stdin = false;
    for a in args {
        if a == "-" {
            read_stdin = true;
        } else {
            out.push(parse_cidr(a)?);
        }
    }
    for f in files {
        if f == "-" {
            read_stdin = true;
            continue;
        }
        let text = fs::read_to_string(f).with_context(|| format!("reading list file {f}"))?;
        parse_list(&text, f, &mut out)?;
    }
    if read_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the list from stdin")?;
        parse_list(&text, "stdin", &mut out)?;
    }
    Ok(out)
}

fn parse_list(text: &str, origin: &str, out: &mut Vec<IpNet>) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let net = parse_cidr(entry).with_context(|| format!("{origin} line {}", n + 1))?;
        out.push(net);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_cidr_round_trips_through_the_mapped_key() {
        let net: IpNet = "198.18.5.0/24".parse().unwrap();
        let key = cidr_key(net);
        assert_eq!(key.prefix_len(), 120);
        assert_eq!(cidr_of(&key), net);
    }

    #[test]
    fn v6_cidr_is_truncated_and_round_trips() {
        let key = cidr_key("2001:db8::1/32".parse().unwrap());
        assert_eq!(key.prefix_len(), 32);
        assert_eq!(cidr_of(&key).to_string(), "2001:db8::/32");
    }

    #[test]
    fn bare_address_is_a_host_prefix() {
        assert_eq!(
            parse_cidr("198.18.0.7").unwrap().to_string(),
            "198.18.0.7/32"
        );
        assert!(parse_cidr("198.18.0.256").is_err());
    }

    #[test]
    fn list_files_skip_comments_and_name_the_bad_line() {
        let mut out = Vec::new();
        parse_list(
            "# feed\n198.18.0.1\n\n2001:db8::/48 # peer\n",
            "f",
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        let err = parse_list("198.18.0.1\nnonsense\n", "feed.txt", &mut out).unwrap_err();
        assert!(format!("{err:#}").contains("feed.txt line 2"), "{err:#}");
    }

    #[test]
    fn mapped_ipv6_is_ipv4_and_v6_prefixes_that_cover_v4_are_known() {
        assert_eq!(
            parse_cidr("::ffff:198.19.0.0/112").unwrap().to_string(),
            "198.19.0.0/16"
        );
        assert_eq!(
            parse_cidr("::ffff:0:0/96").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            parse_cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        for (net, covers) in [
            ("::/0", true),
            ("::/80", true),
            ("::ffff:0:0/95", true),
            ("::/81", false),
            ("2001:db8::/32", false),
            ("0.0.0.0/0", false),
            ("198.18.0.0/15", false),
        ] {
            let key = cidr_key(net.parse().unwrap());
            assert_eq!(covers_v4_space(&key), covers, "{net}");
        }
    }

    #[test]
    fn v6_sources_group_by_prefix() {
        let mask = sipguard_common::policy::prefix_mask(64);
        let a = src_key("2001:db8:1:2::1".parse().unwrap(), &mask);
        let b = src_key("2001:db8:1:2:ffff::9".parse().unwrap(), &mask);
        assert_eq!(a, b);
        assert_eq!(show_src(&a, 64), "2001:db8:1:2::/64");
        let v4 = src_key("198.18.0.9".parse().unwrap(), &mask);
        assert_eq!(show_src(&v4, 64), "198.18.0.9");
    }
}
