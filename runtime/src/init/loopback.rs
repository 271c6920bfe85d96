//! Bringing `lo` up in a fresh network namespace (`NetworkMode::None`).

use crate::error::StepFailure;

pub(crate) fn up() -> Result<(), StepFailure> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq that names "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(StepFailure::errno("socket", "lo", nix::Error::last()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = nix::Error::last();
        libc::close(sock);
        if r != 0 {
            return Err(StepFailure::errno("bring up", "lo", err));
        }
    }
    Ok(())
}
