//! The thin `fuser` glue over [`ImageFs`]: the only place that maps [`FsError`]s to errno.
//!
//! The image never changes, so entries, attributes, negative lookups and page-cache contents
//! are cached by the kernel for long (`TTL`, `FOPEN_KEEP_CACHE`, `FOPEN_CACHE_DIR`). Reads may
//! block on the network, so they run on a small pool of their own threads and reply later:
//! a slow read never stalls the session threads that answer metadata requests.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::image_fs::{Attr, ImageFs};
use crate::tree::NodeKind;
use crate::FsError;

/// How long the kernel may cache entries and attributes: the image is immutable.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Counters of a mounted filesystem, shared with its [`crate::MountHandle`].
#[derive(Debug, Default)]
pub struct FsStats {
    reads: AtomicU64,
    bytes_read: AtomicU64,
    read_errors: AtomicU64,
    passthrough_opens: AtomicU64,
    passthrough_enabled: AtomicBool,
    /// Inodes whose reads failed, so a reader retrying in a loop logs one error, not many.
    failed_inodes: Mutex<std::collections::HashSet<u64>>,
}

impl FsStats {
    /// Read requests answered (successfully or not).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Bytes returned by successful reads.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Reads answered with EIO because the content reader failed.
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// Opens handed to the kernel as passthrough to a local backing file.
    pub fn passthrough_opens(&self) -> u64 {
        self.passthrough_opens.load(Ordering::Relaxed)
    }

    /// Counts a failed read of `ino`; true the first time that inode fails.
    fn record_read_error(&self, ino: u64) -> bool {
        self.read_errors.fetch_add(1, Ordering::Relaxed);
        match self.failed_inodes.lock() {
            Ok(mut failed) => failed.insert(ino),
            Err(_) => true,
        }
    }

    /// Whether the kernel accepted FUSE passthrough for this mount.
    pub fn passthrough_enabled(&self) -> bool {
        self.passthrough_enabled.load(Ordering::Relaxed)
    }
}

/// How the open files of one inode are served. The kernel refuses to mix passthrough and
/// cached opens of an inode, so the first open decides until all are released.
enum OpenMode {
    Cached,
    /// Kept while open: dropping it closes the kernel's backing file reference.
    Passthrough(BackingId),
}

struct OpenInode {
    mode: OpenMode,
    opens: u64,
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run blocking reads and send their replies.
struct ReadPool {
    sender: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl ReadPool {
    fn new(threads: usize) -> std::io::Result<ReadPool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..threads.max(1))
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("skiff-read-{i}"))
                    .spawn(move || loop {
                        let job = match receiver.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ReadPool {
            sender: Some(sender),
            threads,
        })
    }

    /// Runs `job` on a pool thread (or here, if the pool is gone).
    fn run(&self, job: Job) {
        match &self.sender {
            Some(s) => {
                if let Err(mpsc::SendError(job)) = s.send(job) {
                    job();
                }
            }
            None => job(),
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.sender.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The `fuser::Filesystem` of one image.
pub struct FuseAdapter {
    fs: Arc<ImageFs>,
    stats: Arc<FsStats>,
    pool: ReadPool,
    /// Negotiated with the kernel; turned off after the kernel refuses a backing file (e.g.
    /// one on a stacked filesystem), so the refusal is logged once.
    passthrough: AtomicBool,
    open_inodes: Mutex<HashMap<u64, OpenInode>>,
}

impl FuseAdapter {
    /// Wraps `fs`, running reads on `read_threads` threads.
    pub fn new(
        fs: Arc<ImageFs>,
        stats: Arc<FsStats>,
        read_threads: usize,
    ) -> std::io::Result<FuseAdapter> {
        Ok(FuseAdapter {
            fs,
            stats,
            pool: ReadPool::new(read_threads)?,
            passthrough: AtomicBool::new(false),
            open_inodes: Mutex::new(HashMap::new()),
        })
    }

    /// Answers an open of a regular file: passthrough to a local backing file when the
    /// kernel and the reader allow it, else cached reads through the daemon.
    fn open_file(&self, ino: u64, reply: ReplyOpen) {
        let mut open = match self.open_inodes.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(state) = open.get_mut(&ino) {
            state.opens += 1;
            match &state.mode {
                OpenMode::Passthrough(id) => {
                    self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                    reply.opened_passthrough(FileHandle(0), FopenFlags::empty(), id)
                }
                OpenMode::Cached => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            }
            return;
        }
        let backing = if self.passthrough.load(Ordering::Relaxed) {
            self.fs.backing_file(ino).and_then(|file| {
                reply
                    .open_backing(&file)
                    .inspect_err(|e| {
                        tracing::warn!(ino, error = %e, "kernel refused a passthrough backing file; reading through the daemon from now on");
                        self.passthrough.store(false, Ordering::Relaxed);
                    })
                    .ok()
            })
        } else {
            None
        };
        let mode = match backing {
            Some(id) => {
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                reply.opened_passthrough(FileHandle(0), FopenFlags::empty(), &id);
                OpenMode::Passthrough(id)
            }
            None => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
                OpenMode::Cached
            }
        };
        open.insert(ino, OpenInode { mode, opens: 1 });
    }
}

/// The errno for an error of the core. Read failures are EIO: details go to the log.
fn errno(err: &FsError) -> Errno {
    match err {
        FsError::NoInode { .. } | FsError::NotFound { .. } => Errno::ENOENT,
        FsError::NotADirectory { .. } => Errno::ENOTDIR,
        FsError::IsADirectory { .. } => Errno::EISDIR,
        FsError::NotASymlink { .. } => Errno::EINVAL,
        FsError::NoXattr { .. } => Errno::NO_XATTR,
        FsError::Read { .. } => Errno::EIO,
        FsError::Mount { .. }
        | FsError::Unmount { .. }
        | FsError::Keeper { .. }
        | FsError::TreeChanged { .. } => Errno::EIO,
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Regular => FileType::RegularFile,
        NodeKind::Directory => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

fn system_time(secs: i64, nsec: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nsec));
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

/// The kernel's `new_encode_dev` format of a device number, which FUSE attributes carry.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn file_attr(a: &Attr) -> FileAttr {
    let t = system_time(a.mtime, a.mtime_nsec);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_dev(a.dev_major, a.dev_minor),
        blksize: crate::image_fs::BLOCK_SIZE,
        flags: 0,
    }
}

/// Sends the answer to `getxattr`/`listxattr`: the size when asked for it, ERANGE when the
/// caller's buffer is too small.
fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                tracing::debug!(?missing, "FUSE capability not offered by the kernel");
            }
        }
        let _ = config.set_max_background(64);
        // Passthrough needs a stacking depth of 1, which still lets overlayfs stack on top.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
            self.stats
                .passthrough_enabled
                .store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(FsError::NotFound { .. }) => {
                // A zero node id is a cached negative entry: the name stays absent.
                let none = file_attr(&Attr {
                    ino: 0,
                    kind: NodeKind::Regular,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    blocks: 0,
                    mtime: 0,
                    mtime_nsec: 0,
                    dev_major: 0,
                    dev_minor: 0,
                });
                reply.entry(&TTL, &none, Generation(0));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.fs.open(ino.0) {
            Ok(()) => self.open_file(ino.0, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Nothing is buffered for writing (the image is read-only): close always succeeds.
    /// `ENOSYS` says so for good: the kernel stops sending FLUSH on every close
    /// (`fc->no_flush`) and treats it as success.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// No ioctls (e.g. FS_IOC_GETFLAGS from `ls`): the "not a terminal" answer, quietly.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut open = match self.open_inodes.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(state) = open.get_mut(&ino.0) {
            state.opens = state.opens.saturating_sub(1);
            if state.opens == 0 {
                open.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let stats = self.stats.clone();
        self.pool.run(Box::new(move || {
            stats.reads.fetch_add(1, Ordering::Relaxed);
            let t0 = std::time::Instant::now();
            match fs.read(ino.0, offset, size) {
                Ok(data) => {
                    tracing::trace!(ino = ino.0, offset, size, ms = t0.elapsed().as_secs_f64() * 1e3, "read");
                    stats
                        .bytes_read
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    reply.data(&data);
                }
                Err(e) => {
                    if let FsError::Read {
                        layer,
                        offset,
                        path,
                        ..
                    } = &e
                    {
                        if stats.record_read_error(ino.0) {
                            tracing::error!(%layer, offset, %path, error = %e, "read failed: EIO");
                        } else {
                            tracing::debug!(%layer, offset, %path, error = %e, "read failed again: EIO");
                        }
                    }
                    reply.error(errno(&e));
                }
            }
        }));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.readdir(ino.0, u64::MAX) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for d in entries {
                    if reply.add(INodeNo(d.ino), d.next_offset, file_type(d.kind), d.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for d in entries {
                    let Ok(a) = self.fs.getattr(d.ino) else {
                        continue;
                    };
                    if reply.add(
                        INodeNo(d.ino),
                        d.next_offset,
                        d.name,
                        &TTL,
                        &file_attr(&a),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            0,
            0,
            s.files,
            0,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // An image without xattrs: `ENOSYS` makes the kernel stop asking (`no_getxattr`;
        // callers get EOPNOTSUPP), which saves a request per exec (`security.capability`)
        // and per overlayfs lookup of a lower directory, for every container.
        if !self.fs.has_xattrs() {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.getxattr(ino.0, name) {
            Ok(value) => reply_xattr(value, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.fs.has_xattrs() {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.listxattr(ino.0) {
            Ok(names) => reply_xattr(&names, size, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything that would change the image is refused: it is read-only.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        for (major, minor) in [(1, 3), (8, 17), (253, 300), (4095, 1 << 19)] {
            let dev = u64::from(encode_dev(major, minor));
            assert_eq!((libc::major(dev), libc::minor(dev)), (major, minor));
        }
    }

    #[test]
    fn times_before_the_epoch_keep_their_nanoseconds() {
        let t = system_time(-2, 500);
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(1, 999_999_500)
        );
    }
}
