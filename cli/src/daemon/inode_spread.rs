//! Spreads each container's directory to its own ext4 block group.
//!
//! ext2/3/4 place a new directory in its parent's block group, and a file's inode in its
//! directory's group; so every container's files (config, state, /etc files, upper and
//! work dirs) share one group with every other container's. Without a journal, ext4
//! allocates a new inode by scanning that group past every inode freed in the last ~30 s
//! (`recently_deleted` in fs/ext4/ialloc.c): with containers created and removed at a
//! steady rate that scan grew to a sixth of the machine's CPU in the throughput benchmark
//! (`run_bench --concurrent 100`). The "top of directory hierarchy" flag (FS_TOPDIR_FL,
//! `chattr +T`) makes ext4's Orlov allocator spread the directory's subdirectories over
//! the groups instead, as it does for directories made in a filesystem's root.

use std::os::fd::AsRawFd;
use std::path::Path;

/// `FS_TOPDIR_FL` from linux/fs.h (not in the libc crate).
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

// The kernel reads and writes an int, whatever the request number's encoded size says.
nix::ioctl_read_bad!(get_flags, libc::FS_IOC_GETFLAGS, libc::c_int);
nix::ioctl_write_ptr_bad!(set_flags, libc::FS_IOC_SETFLAGS, libc::c_int);

/// Sets FS_TOPDIR_FL on `dir`. A filesystem without inode flags or without this one
/// (anything but ext2/3/4) is left as it is, logged at debug level; other errors are
/// returned.
pub fn spread_subdirs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to the pointer, which is valid.
    match unsafe { get_flags(f.as_raw_fd(), &mut flags) } {
        Ok(_) => {}
        Err(e) if unsupported(e) => {
            tracing::debug!(dir = %dir.display(), "no inode flags here ({e}): subdirectories not spread");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    let wanted = flags | FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from the pointer, which is valid.
    match unsafe { set_flags(f.as_raw_fd(), &wanted) } {
        Ok(_) => Ok(()),
        Err(e) if unsupported(e) => {
            tracing::debug!(dir = %dir.display(), "FS_TOPDIR_FL refused ({e}): subdirectories not spread");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn unsupported(e: nix::Error) -> bool {
    matches!(
        e,
        nix::Error::ENOTTY | nix::Error::EOPNOTSUPP | nix::Error::EINVAL | nix::Error::ENOSYS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On ext4 (this project's machines) the flag is set and read back; elsewhere the call
    /// changes nothing and still succeeds.
    #[test]
    fn the_flag_is_set_where_the_filesystem_has_it() {
        let dir = tempfile::tempdir().unwrap();
        spread_subdirs(dir.path()).unwrap();
        let f = std::fs::File::open(dir.path()).unwrap();
        let mut flags: libc::c_int = 0;
        // SAFETY: as above.
        let read = unsafe { get_flags(f.as_raw_fd(), &mut flags) };
        let ext4 = nix::sys::statfs::statfs(dir.path())
            .map(|s| s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC)
            .unwrap_or(false);
        if ext4 {
            read.unwrap();
            assert_eq!(flags & FS_TOPDIR_FL, FS_TOPDIR_FL, "flags {flags:#x}");
        }
        // Twice is fine.
        spread_subdirs(dir.path()).unwrap();
    }
}
