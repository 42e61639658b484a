//! An IPv6 phone sharing a /64 with an attacker (issue 15), end to end: a
//! sipp UAS on the server's IPv6 address, a sipp phone in the client
//! namespace (2001:db8::2), and the attacker (2001:db8::3, the same /64)
//! flooding OPTIONS from 50 addresses of that /64 (100/s each, twice the
//! per-source limit), as tenants of a hosting provider handing out single
//! addresses from a shared /64 can. (Not INVITEs: sipp's UAS answers every
//! INVITE with a 200, which would earn the attacker trust; a real server
//! challenges or refuses them.) Each
//! flooding address is banned on its own, then the /64 once 8 of them are
//! (bans widen, widen.rs); the phone, which earned trust with its first
//! calls, keeps placing calls through all of it.
//!
//! Needs root, sipp, python3, iproute2 and nsenter. Bounded: the flood runs
//! at most 20 s.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    thread,
    time::Duration,
};

use anyhow::{Result, anyhow, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::{Ctl, Delta, SIP_PORT, Stream, isolate_server, spawn_send},
    netns::{Lab, wait_until},
    sipp::{Calls, Uac, Uas},
};

/// Calls counted: 10/s for 15 s, while the flood runs.
const CALLS: u64 = 150;
const CALL_RATE: u64 = 10;
const FLOOD: Duration = Duration::from_secs(20);
const FLOOD_ADDRESSES: u16 = 50;

fn uac(lab: &Lab, calls: u64, name: &str) -> Uac {
    Uac {
        target: SocketAddr::new(IpAddr::V6(lab.server.v6), SIP_PORT),
        local: IpAddr::V6(lab.client.v6),
        local_port: SIP_PORT,
        calls,
        rate: CALL_RATE,
        scenario: None,
        timeout: Duration::from_secs(40),
        recv_timeout: Some(Duration::from_secs(10)),
        bound: Duration::from_secs(60),
        name: name.into(),
    }
}

fn rows(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["source"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_phone_keeps_its_calls_beside_an_attacker_in_its_64() -> Result<()> {
    let lab = Lab::new("shared64")?;
    isolate_server(&lab)?;
    let _agent = lab.start_agent(&["--mode", "native"])?;
    let ctl = Ctl::new(lab.iface());
    let _uas = Uas::builtin(IpAddr::V6(lab.server.v6), SIP_PORT).start(&lab, &lab.server, "uas")?;
    let phone = IpAddr::V6(lab.client.v6);

    // The phone's first calls earn it trust (the server's 200 to INVITE).
    let (status, warm) = uac(&lab, 5, "warmup").run(&lab, &lab.client)?;
    ensure!(
        status.success() && warm.successful == 5,
        "the phone's first calls failed ({status}, {warm:?})"
    );
    let trusted = rows(&serde_json::from_str(
        &ctl.run(&["trusted", "list", "--json"])?,
    )?);
    ensure!(
        trusted.contains(&phone.to_string()),
        "the phone earned no trust: {trusted:?}"
    );

    // The attacker's 50 addresses in the phone's /64 (2001:db8::/64).
    let mut sources = vec![IpAddr::V6(lab.attacker.v6)];
    for i in 0..FLOOD_ADDRESSES - 1 {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xa0, 0x100 + i);
        lab.add_addr(&lab.attacker, &format!("{a}/64"))?;
        sources.push(IpAddr::V6(a));
    }

    let before = ctl.stats()?;
    let (calls, flood) = thread::scope(|s| -> Result<(Calls, u64)> {
        let flood = s.spawn(|| {
            spawn_send(
                &lab,
                &lab.attacker,
                "flood",
                IpAddr::V6(lab.server.v6),
                &[Stream::new("flood", &sources, "OPTIONS", 5000, 100_000).user("flood")],
                FLOOD,
            )?
            .finish()
        });
        // The calls start once the /64 is banned as a whole.
        wait_until(Duration::from_secs(15), || {
            Ok(rows(&ctl.bans()?).iter().any(|s| s.ends_with("/64")))
        })
        .map_err(|e| {
            anyhow!(
                "the /64 was never banned: {e:#}; bans: {:?}; stats: {}",
                ctl.bans().map(|b| rows(&b)),
                ctl.stats()
                    .map(|after| Delta::new(&before, &after).reasons())
                    .unwrap_or_default()
            )
        })?;
        let (_, calls) = uac(&lab, CALLS, "calls").run(&lab, &lab.client)?;
        let report = flood
            .join()
            .map_err(|_| anyhow!("the flood thread panicked"))??;
        Ok((calls, report.stream("flood").sent))
    })?;
    let after = ctl.stats()?;
    let d = Delta::new(&before, &after);
    let bans = rows(&ctl.bans()?);
    eprintln!(
        "shared /64: {flood} flood OPTIONS from {FLOOD_ADDRESSES} addresses; phone calls {} of \
         {CALLS} ok, {} failed, {} retransmissions; bans {bans:?}; {}",
        calls.successful,
        calls.failed,
        calls.retransmissions,
        d.reasons()
    );
    ensure!(
        !bans.contains(&phone.to_string()),
        "the phone was banned: {bans:?}"
    );
    ensure!(
        calls.successful * 100 >= CALLS * 99,
        "the phone kept {} of {CALLS} calls beside the attacker",
        calls.successful
    );
    Ok(())
}
