//! `cargo xtask demo`: setup with the test tools, build sipguard and the demo
//! (release), then become `sipguard-demo`, which shows sipguard defending
//! Kamailio from a SIPVicious scan and an INVITE flood in a namespace lab.

use anyhow::Result;

use crate::labbin;

pub fn demo() -> Result<()> {
    labbin::exec(
        "sipguard-demo",
        "the demo builds network namespaces and attaches XDP",
        &[],
    )
}
