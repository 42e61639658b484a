//! Builds the XDP object from `sipguard-ebpf` with the pinned nightly and
//! bpf-linker, for `include_bytes_aligned!` in `src/ebpf.rs`.

/// The nightly that builds the eBPF object. Pinned (not plain `nightly`) so a
/// build is the same on every machine; bpf-linker 0.10.0 links its LLVM 22.
/// `cargo xtask setup` installs it with rust-src. Keep in step with
/// xtask/src/setup.rs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "sipguard-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../sipguard-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
