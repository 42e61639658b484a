//! Program links pinned on bpffs: the pin keeps a program attached while no
//! agent runs, and the next agent swaps its own program into the same link
//! (`bpf_link_update`), so the interface is never without it.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use aya::programs::links::{FdLink, PinnedLink};

/// The link pinned at `pin`, as the link type of the program that will
/// replace the one in it (`XdpLink`, `SchedClassifierLink`); `what` names
/// it in errors ("XDP", "egress").
pub fn pinned<L>(pin: &Path, what: &str) -> Result<L>
where
    L: TryFrom<FdLink>,
    L::Error: std::fmt::Display,
{
    let link: FdLink = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned {what} link {}", pin.display()))?
        .into();
    L::try_from(link).map_err(|e| anyhow!("the pinned {what} link is not of its kind: {e}"))
}
