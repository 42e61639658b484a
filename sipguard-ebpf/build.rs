use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker`
/// binary; rebuild when it changes, and say how to get it when it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            panic!("bpf-linker not found: run `cargo xtask setup` (installs bpf-linker 0.10.0)")
        }
    }
}
