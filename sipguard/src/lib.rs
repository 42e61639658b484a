//! The sipguard controller as a library: the `sipguard` binary, the fixture
//! tests and the benchmarks all load and drive the XDP program through it.

pub mod addr;
pub mod bpffs;
pub mod capture;
pub mod clock;
pub mod config;
pub mod crowdsec;
pub mod egress;
pub mod explain;
pub mod guards;
pub mod ident;
pub mod kernel;
pub mod links;
pub mod loader;
pub mod lock;
pub mod map_table;
pub mod maps;
pub mod metrics;
pub mod preflight;
pub mod sets;
pub mod signatures;
pub mod startup;
pub mod stats;
pub mod status;
pub mod tables;
pub mod time;
pub mod watcher;
pub mod widen;
