//! Calibrates the programs' clock (`sipguard_common::clock`): how jiffies
//! map onto CLOCK_MONOTONIC on this boot. The kernel advances jiffies by
//! exactly one tick of CLOCK_MONOTONIC time, so `mono = jiffies * tick + C`
//! holds for the whole boot, with the reading lagging by less than a tick.

use std::{thread, time::Duration};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use sipguard_common::{
    clock::{Clock, ClockSample},
    maps::PROG_CLOCK,
};

use crate::maps::name;

/// CONFIG_HZ values Linux is built with on the machines sipguard targets.
const KNOWN_HZ: [u64; 4] = [100, 250, 300, 1000];
/// Readings of both clocks, `SAMPLE_GAP` apart: ~100 ms, long enough to
/// tell every `KNOWN_HZ` apart (their tick lengths drift apart by more than
/// two ticks over it).
const SAMPLES: usize = 25;
const SAMPLE_GAP: Duration = Duration::from_millis(4);

/// Measure the clock relation with `sipguard_clock` and write it to the
/// object's `CLOCK` map. On failure `CLOCK` stays zero, which keeps the
/// programs on the exact (dearer) clock; the caller logs why.
pub fn calibrate(ebpf: &mut Ebpf) -> Result<Clock> {
    probe(ebpf)?.load().context("loading the clock probe")?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        if i > 0 {
            thread::sleep(SAMPLE_GAP);
        }
        // The kernel wants at least an Ethernet header of input.
        probe(ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(&[0u8; 64]),
                repeat: 1,
                ..Default::default()
            })
            .context("running the clock probe (BPF_PROG_TEST_RUN)")?;
        let sample: Array<&MapData, ClockSample> = ebpf
            .map(name::CLOCK_SAMPLE)
            .ok_or_else(|| anyhow!("map {} missing", name::CLOCK_SAMPLE))?
            .try_into()?;
        samples.push(sample.get(&0, 0)?);
    }
    let clock = fit(&samples)?;
    let mut map: Array<&mut MapData, Clock> = ebpf
        .map_mut(name::CLOCK)
        .ok_or_else(|| anyhow!("map {} missing", name::CLOCK))?
        .try_into()?;
    map.set(0, clock, 0)?;
    Ok(clock)
}

fn probe(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROG_CLOCK)
        .ok_or_else(|| anyhow!("program {PROG_CLOCK} missing from the eBPF object"))?
        .try_into()?)
}

/// The tick length among `KNOWN_HZ` under which every sample's
/// `mono - jiffies * tick` stays within two ticks, and the offset that puts
/// the scaled jiffies mid-tick.
pub fn fit(samples: &[ClockSample]) -> Result<Clock> {
    let (first, last) = (samples.first(), samples.last());
    let (Some(first), Some(last)) = (first, last) else {
        return Err(anyhow!("no clock samples"));
    };
    ensure!(
        last.jiffies > first.jiffies,
        "jiffies did not advance over {} ms",
        (last.mono_ns - first.mono_ns) / 1_000_000
    );
    let offsets = |tick: u64| {
        samples
            .iter()
            .map(move |s| s.mono_ns as i128 - (s.jiffies * tick) as i128)
    };
    let best = KNOWN_HZ
        .iter()
        .map(|hz| (1_000_000_000 + hz / 2) / hz)
        .map(|tick| {
            let (lo, hi) =
                offsets(tick).fold((i128::MAX, i128::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
            (tick, lo, hi - lo)
        })
        .filter(|&(tick, _, spread)| spread < 2 * tick as i128)
        .min_by_key(|&(tick, _, spread)| spread * 1000 / tick as i128);
    let Some((tick, lo, _)) = best else {
        return Err(anyhow!(
            "jiffies advanced {} over {} ns, which matches no known CONFIG_HZ ({KNOWN_HZ:?})",
            last.jiffies - first.jiffies,
            last.mono_ns - first.mono_ns
        ));
    };
    Ok(Clock {
        tick_ns: tick,
        offset_ns: (lo + tick as i128 / 2) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of a kernel with `hz`, each read `lag` ns after a tick.
    fn samples(hz: u64, c: u64, lags: &[u64]) -> Vec<ClockSample> {
        let tick = 1_000_000_000 / hz;
        lags.iter()
            .enumerate()
            .map(|(i, lag)| {
                let jiffies = 4_294_000_000 + (i as u64) * 4 * hz / 1000 + 1;
                ClockSample {
                    jiffies,
                    mono_ns: (jiffies * tick).wrapping_add(c) + lag,
                }
            })
            .collect()
    }

    #[test]
    fn fits_each_known_hz() {
        for hz in KNOWN_HZ {
            let tick = (1_000_000_000 + hz / 2) / hz;
            let lags: Vec<u64> = (0..SAMPLES as u64).map(|i| (i * 7919) % tick).collect();
            let s = samples(hz, 123_456, &lags);
            let clock = fit(&s).unwrap();
            assert_eq!(clock.tick_ns, tick, "HZ={hz}");
            for x in &s {
                let err = clock.ns(x.jiffies) as i128 - x.mono_ns as i128;
                assert!(err.abs() <= tick as i128, "HZ={hz}: error {err} ns");
            }
        }
    }

    #[test]
    fn refuses_a_clock_that_does_not_tick() {
        let s = samples(250, 0, &[0, 0]);
        let frozen = [
            s[0],
            ClockSample {
                jiffies: s[0].jiffies,
                ..s[1]
            },
        ];
        assert!(fit(&frozen).is_err());
    }
}
