//! The global budget with two receiving cores: spoofed floods sent from two
//! CPUs into a two-queue server interface pass XDP on both at once, and
//! together are admitted no more than the budget's rate, burst and per-CPU
//! leases allow (ARCHITECTURE.md, "Rate limiting: GCRA"), nor much less.

use std::time::Duration;

use sipguard_tests::{
    harness::is_root,
    lab::{allowed_cpus, cores},
};

#[test]
fn two_receiving_cores_share_the_global_budget_within_its_tolerance() {
    if !is_root() {
        panic!("run as root: the test builds network namespaces and attaches XDP");
    }
    if allowed_cpus().unwrap().len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let r = cores::run(2, Duration::from_secs(6)).unwrap_or_else(|e| panic!("{e:#}"));
    let (most, _) = cores::admitted_bound(r.secs, 2);
    // The budget's own share of the flood's time, less a second's worth for
    // the flood's start and end not lining up with the counter reads.
    let least = 1000.0 * (r.secs - 1.0);
    eprintln!("{r:?}; admitted at most {most:.0}, at least {least:.0}");
    assert!(
        r.dropped > 10 * r.admitted,
        "the flood was not over the budget: {r:?}"
    );
    assert!(
        (r.admitted as f64) <= most,
        "{} admitted in {:.1} s, more than the tolerance allows ({most:.0})",
        r.admitted,
        r.secs
    );
    assert!(
        r.admitted as f64 >= least,
        "{} admitted in {:.1} s: the leases starved the budget (want at least {least:.0})",
        r.admitted,
        r.secs
    );
}
