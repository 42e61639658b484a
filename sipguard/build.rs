//! Builds the XDP object from `sipguard-ebpf` with the pinned nightly and
//! bpf-linker, for `include_bytes_aligned!` in `src/loader.rs`.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

/// The nightly that builds the eBPF object. Pinned (not plain `nightly`) so a
/// build is the same on every machine; bpf-linker 0.10.0 links its LLVM 22.
/// `cargo xtask setup` installs it with rust-src. Keep in step with
/// xtask/src/setup.rs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

/// BTF type names the kernel refuses and aya 0.14 does not sanitize
/// (aya-rs/aya#1490: Rust union names such as aya-log's `MaybeUninit<u8>`).
/// Replaced in place by names of the same length, so no offset moves.
const BTF_RENAMES: [(&[u8], &[u8]); 1] = [(b"MaybeUninit<u8>", b"MaybeUninit_u8_")];

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "sipguard-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../sipguard-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))?;

    if env::var_os("AYA_BUILD_SKIP").is_none() {
        let obj =
            PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?).join("sipguard");
        let mut bytes = fs::read(&obj).with_context(|| format!("reading {}", obj.display()))?;
        for (from, to) in BTF_RENAMES {
            replace_all(&mut bytes, from, to);
        }
        fs::write(&obj, bytes).with_context(|| format!("writing {}", obj.display()))?;
    }
    Ok(())
}

fn replace_all(hay: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len(), "BTF renames must keep the length");
    let mut i = 0;
    while i + from.len() <= hay.len() {
        if &hay[i..i + from.len()] == from {
            hay[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}
