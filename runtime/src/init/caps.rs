//! The container's capability set (Docker's default, or as `--cap-add/--cap-drop` and
//! `--privileged` make it, see [`crate::config::Security::capabilities`]); every other
//! capability is dropped from all five sets.

use caps::Capability;

use crate::error::StepFailure;

fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0u64, |m, c| m | (1u64 << c.index()))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP, so before
/// the uid switch).
pub(crate) fn limit_bounding(keep: &[Capability]) -> Result<(), StepFailure> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep = mask(keep);
    for cap in 0..=last {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(StepFailure::errno(
                    "drop capability",
                    cap,
                    nix::Error::last(),
                ));
            }
        }
    }
    Ok(())
}

/// Clears the ambient set and sets effective = permitted = `keep`, inheritable = none.
/// `keep` must be within the permitted set (keep it across the uid switch with
/// PR_SET_KEEPCAPS).
pub(crate) fn set(keep: &[Capability]) -> Result<(), StepFailure> {
    let keep = mask(keep);
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(StepFailure::errno(
            "clear ambient capabilities",
            "",
            nix::Error::last(),
        ));
    }
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        },
        CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: header and a two-element data array as capset(2) expects for version 3.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(StepFailure::errno(
            "set capabilities",
            "",
            nix::Error::last(),
        ));
    }
    Ok(())
}
