//! Types shared between the XDP program (`sipguard-ebpf`) and the controller
//! (`sipguard`). Everything here is `#[repr(C)]` with explicit padding so both
//! sides agree on the byte layout of every map key and value.
#![no_std]

pub mod capture;
pub mod class;
pub mod clock;
pub mod maps;
pub mod policy;
pub mod signature;
pub mod source;
pub mod verdict;

pub use class::Class;
pub use maps::Counter;
pub use policy::Policy;
pub use verdict::{Reason, Verdict};
