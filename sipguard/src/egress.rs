//! Attaching the TC egress program (the server's responses, from which the
//! trust and credential-attack rules learn), on every kernel sipguard runs on.
//!
//! * Linux 6.6+: a TCX link (`bpf_link`), pinned beside the XDP link. A
//!   restarted agent swaps its program into the pinned link
//!   (`bpf_link_update`); removing the pin detaches it.
//! * Older kernels (Debian 12's 6.1): a classic `cls_bpf` filter on a clsact
//!   qdisc, made over netlink at a fixed priority and handle that name it as
//!   sipguard's. It cannot be pinned; it stays on the interface until it is
//!   deleted, so a restarted agent finds it at that priority and handle and
//!   replaces its program in place (one netlink change, no window), and a
//!   clean stop or `sipguard detach` deletes it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    links::{FdLink, Link as _},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
};
use serde::{Deserialize, Serialize};
use sipguard_common::maps::PROG_EGRESS;

use crate::links;

/// Name of the pinned TCX egress link in the interface's pin directory.
pub const LINK_PIN: &str = "egress_link";

/// The netlink filter's priority: high enough that filters an operator adds
/// with `tc` (which default to 49152 and count down) run after it; the
/// egress program never changes a packet's fate, so order only matters to
/// see every response.
pub const TC_PRIORITY: u16 = 0x5347;
/// The netlink filter's handle ("SG"), with the priority what identifies
/// sipguard's filter among others on the interface.
pub const TC_HANDLE: TcHandle = TcHandle::new(0, 0x5347);

/// How the egress program is attached: shown at start, in `sipguard stats`
/// and in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// A pinned TCX link (Linux 6.6+).
    Tcx,
    /// A cls_bpf filter on the clsact qdisc (kernels without TCX).
    Netlink,
    /// Not attached: trust and credential-attack bans are off.
    Off,
}

impl EgressMode {
    pub fn name(self) -> &'static str {
        match self {
            EgressMode::Tcx => "tcx",
            EgressMode::Netlink => "netlink",
            EgressMode::Off => "off",
        }
    }
}

/// How the operator wants the egress program attached (`--tc-egress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressChoice {
    /// TCX where the kernel has it, else netlink.
    #[default]
    Auto,
    /// TCX only; off when the kernel has none.
    Tcx,
    /// Netlink only (e.g. for tooling that lists `tc filter`s).
    Netlink,
}

/// What `attach` did, and how to undo it at a clean stop.
pub struct Egress {
    pub mode: EgressMode,
    /// Why it is off, when it is.
    pub why_off: Option<String>,
    iface: String,
    pin: PathBuf,
}

/// Attach the egress program to `iface`, adopting what a previous agent left
/// (a pinned TCX link, or sipguard's netlink filter). A kernel that offers
/// neither leaves it off: logged by the caller, everything else works.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    iface: &str,
    dir: &Path,
    choice: EgressChoice,
) -> Result<Egress> {
    let pin = dir.join(LINK_PIN);
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_EGRESS)
        .ok_or_else(|| anyhow!("program {PROG_EGRESS} missing"))?
        .try_into()?;
    let mut done = Egress {
        mode: EgressMode::Tcx,
        why_off: None,
        iface: iface.to_string(),
        pin: pin.clone(),
    };
    if pin.exists() {
        let old: SchedClassifierLink = links::pinned(&pin, "egress")?;
        let id = prog
            .attach_to_link(old)
            .context("replacing the program in the pinned egress link")?;
        // The pin keeps it attached; our handle may go.
        let _ = prog.take_link(id)?;
        return Ok(done);
    }
    let tcx_error = if choice == EgressChoice::Netlink {
        "not tried (--tc-egress netlink)".to_string()
    } else {
        match prog.attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => {
                let link = FdLink::try_from(prog.take_link(id)?)
                    .map_err(|_| anyhow!("the egress program was attached without a link"))?;
                let pinned = link.pin(&pin).context("pinning the egress link")?;
                drop(FdLink::from(pinned));
                // An agent that ran with netlink before left its filter:
                // two egress programs would count every answer twice.
                remove_filter(iface);
                return Ok(done);
            }
            Err(e) => format!("{e}; TCX needs Linux 6.6"),
        }
    };
    done.mode = EgressMode::Netlink;
    let netlink_error = if choice == EgressChoice::Tcx {
        "not tried (--tc-egress tcx)".to_string()
    } else {
        match attach_netlink(prog, iface) {
            Ok(()) => return Ok(done),
            Err(e) => format!("{e:#}"),
        }
    };
    done.mode = EgressMode::Off;
    done.why_off = Some(format!(
        "no TCX link ({tcx_error}) and no clsact filter ({netlink_error})"
    ));
    Ok(done)
}

/// The clsact qdisc (added if missing; one an operator made is shared) and
/// sipguard's filter on it: created, or its program replaced when a previous
/// agent left it.
fn attach_netlink(prog: &mut SchedClassifier, iface: &str) -> Result<()> {
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(anyhow::Error::new(e).context("adding the clsact qdisc")),
    }
    let options = || NlOptions {
        priority: TC_PRIORITY,
        handle: TC_HANDLE,
        classid: None,
    };
    let id = match prog.attach_with_options(
        iface,
        TcAttachType::Egress,
        TcAttachOptions::Netlink(options()),
    ) {
        Ok(id) => id,
        Err(e) if is_exists(&e) => {
            let old = SchedClassifierLink::attached(
                iface,
                TcAttachType::Egress,
                TC_PRIORITY,
                TC_HANDLE,
                None,
            )?;
            prog.attach_to_link(old)
                .context("replacing the program in sipguard's egress filter")?
        }
        Err(e) => return Err(anyhow::Error::new(e).context("adding the egress filter")),
    };
    // The filter lives on the interface, not in this handle: forget the
    // handle so dropping the program does not delete the filter.
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

fn is_exists(e: &ProgramError) -> bool {
    matches!(e, ProgramError::TcError(TcError::NetlinkError(n)) if n.raw_os_error() == Some(libc::EEXIST))
}

impl Egress {
    /// Detach at a clean stop.
    pub fn detach(self) {
        match self.mode {
            EgressMode::Tcx => {
                let _ = fs::remove_file(&self.pin);
            }
            EgressMode::Netlink => remove_filter(&self.iface),
            EgressMode::Off => {}
        }
    }
}

/// Delete sipguard's netlink egress filter from `iface`, if there is one
/// (`sipguard detach` after an agent died, and a clean stop). The clsact
/// qdisc stays: other filters may use it, and an empty one costs nothing.
pub fn remove_filter(iface: &str) {
    if let Ok(link) =
        SchedClassifierLink::attached(iface, TcAttachType::Egress, TC_PRIORITY, TC_HANDLE, None)
    {
        // ENOENT when there is none (TCX kernels, or never attached).
        let _ = link.detach();
    }
}
