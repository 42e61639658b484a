//! Shared test support for sipguard: packet builders, the BPF_PROG_TEST_RUN
//! harness and network-namespace labs. Tests live in `tests/tests/`.

pub mod captures;
pub mod crowdsec;
pub mod figures;
pub mod fixture;
pub mod flood;
pub mod harness;
pub mod kamailio;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod sipp;
