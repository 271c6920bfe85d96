//! Docker's default capability set; every other capability is dropped from all five sets.

use crate::error::StepFailure;

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub(crate) const DEFAULT_CAPS: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0u64, |m, &c| m | (1u64 << c))
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

/// Drops the bounding set and ambient set to the default and sets effective = permitted =
/// default, inheritable = none. Must run as root before the uid switch (which then clears
/// permitted/effective for non-root users, as on Docker).
pub(crate) fn apply_default() -> Result<(), StepFailure> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep = mask(DEFAULT_CAPS);
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
