//! `cargo xtask bench --lab`: setup with the test tools, build sipguard and
//! sipguard-lab (release), then become `sipguard-lab`, the peer comparison:
//! Kamailio under INVITE floods behind no defence, iptables, nftables and
//! sipguard, in namespace labs, printed as one table.

use std::ffi::OsString;

use anyhow::Result;

use crate::labbin;

/// `args` are the bench's arguments; `--lab` is dropped, the rest go to
/// sipguard-lab (e.g. `--flood spoofed --defence iptables`).
pub fn bench_lab(args: Vec<OsString>) -> Result<i32> {
    let args: Vec<OsString> = args.into_iter().filter(|a| a != "--lab").collect();
    labbin::exec(
        "sipguard-lab",
        "the lab builds network namespaces, loads netfilter rules and attaches XDP",
        &args,
    )?;
    Ok(0)
}
