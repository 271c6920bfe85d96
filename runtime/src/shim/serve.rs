//! The shim's single-threaded event loop (poll): container output to the log and attach
//! clients, client input to the container, start/resize/wait requests, and the exit.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::config::{ContainerConfig, WinSize};
use crate::error::StepFailure;
use crate::init::{self, InitMsg};
use crate::logs::{LogStream, LogWriter};
use crate::paths::ContainerPaths;
use crate::persist;
use crate::protocol::{AttachStreams, Frame};
use crate::shim::Built;
use crate::state::{StateFile, Status};

/// An attach client that cannot keep up is dropped once this much output is queued for it.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;
/// After the exit, output still buffered in pipes is drained for at most this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn bind(path: &Path) -> Result<UnixListener, StepFailure> {
    let _ = std::fs::remove_file(path);
    let l = crate::paths::with_socket_path(path, |p| UnixListener::bind(p))
        .map_err(|e| StepFailure::detail("bind", path.display(), e.to_string()))?;
    l.set_nonblocking(true)
        .map_err(|e| StepFailure::detail("bind", path.display(), e.to_string()))?;
    Ok(l)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    New,
    Attach(AttachStreams),
    Wait,
    Start,
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    role: Role,
    /// Close once `outbuf` is flushed.
    closing: bool,
    dead: bool,
}

impl Client {
    fn send(&mut self, f: &Frame) {
        if self.outbuf.len() > MAX_CLIENT_BACKLOG {
            self.dead = true;
            return;
        }
        self.outbuf.extend(f.encode());
    }
}

#[derive(Clone, Copy)]
enum Token {
    Listener,
    Init,
    Sync,
    Output(usize),
    Stdin,
    Client(usize),
}

pub(crate) struct Shim {
    cfg: ContainerConfig,
    paths: ContainerPaths,
    state: StateFile,
    b: Built,
    pidfd: Option<OwnedFd>,
    sync: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    close_stdin: bool,
    log: Option<LogWriter>,
    listener: UnixListener,
    clients: Vec<Client>,
    exit_code: Option<i32>,
    exited_at: Option<Instant>,
    /// Output slots that reached EOF this poll round, removed after it.
    closed_outputs: Vec<usize>,
    /// `START` was sent to init, so EOF on the sync socket means execve succeeded.
    start_sent: bool,
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn set_nonblocking(fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

impl Shim {
    pub(crate) fn new(
        cfg: ContainerConfig,
        paths: ContainerPaths,
        state: StateFile,
        mut b: Built,
        listener: UnixListener,
    ) -> Shim {
        let pidfd = pidfd_open(b.init.as_raw());
        let sync = b.sync.take();
        for (fd, _) in &b.outputs {
            set_nonblocking(fd.as_raw_fd());
        }
        if let Some(fd) = &b.stdin {
            set_nonblocking(fd.as_raw_fd());
        }
        let log = match LogWriter::open(&paths.log(), &cfg.log) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("container output will not be logged: {e}");
                None
            }
        };
        if let (Some(ws), Some(pty)) = (cfg.console_size, &b.pty) {
            init::set_winsize(pty.as_raw_fd(), ws);
        }
        Shim {
            cfg,
            paths,
            state,
            b,
            pidfd,
            sync,
            stdin_buf: Vec::new(),
            close_stdin: false,
            log,
            listener,
            clients: Vec::new(),
            exit_code: None,
            exited_at: None,
            closed_outputs: Vec::new(),
            start_sent: false,
        }
    }

    pub(crate) fn run(mut self) -> ! {
        loop {
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tokens = Vec::new();
            let mut add = |fd: RawFd, events: libc::c_short, t: Token| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tokens.push(t);
            };
            add(self.listener.as_raw_fd(), libc::POLLIN, Token::Listener);
            if let (Some(p), None) = (&self.pidfd, self.exit_code) {
                add(p.as_raw_fd(), libc::POLLIN, Token::Init);
            }
            if let Some(s) = &self.sync {
                add(s.as_raw_fd(), libc::POLLIN, Token::Sync);
            }
            for (i, (fd, _)) in self.b.outputs.iter().enumerate() {
                add(fd.as_raw_fd(), libc::POLLIN, Token::Output(i));
            }
            if let Some(fd) = &self.b.stdin {
                if !self.stdin_buf.is_empty() {
                    add(fd.as_raw_fd(), libc::POLLOUT, Token::Stdin);
                }
            }
            for (i, c) in self.clients.iter().enumerate() {
                let ev = libc::POLLIN
                    | if c.outbuf.is_empty() {
                        0
                    } else {
                        libc::POLLOUT
                    };
                add(c.sock.as_raw_fd(), ev, Token::Client(i));
            }
            let timeout = if self.exit_code.is_some() || self.pidfd.is_none() {
                100
            } else {
                -1
            };
            // SAFETY: fds is a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            // Sync first: an exec that succeeded and exited at once is still reported started.
            let mut order: Vec<usize> = (0..fds.len()).collect();
            order.sort_by_key(|&i| !matches!(tokens[i], Token::Sync));
            for i in order {
                let rev = fds[i].revents;
                if rev == 0 {
                    continue;
                }
                match tokens[i] {
                    Token::Listener => self.accept(),
                    Token::Init => self.reap(),
                    Token::Sync => self.on_sync(),
                    Token::Output(o) => self.on_output(o),
                    Token::Stdin => self.flush_stdin(),
                    Token::Client(c) => self.on_client(c, rev),
                }
            }
            if self.pidfd.is_none() && self.exit_code.is_none() {
                self.reap();
            }
            let mut closed = std::mem::take(&mut self.closed_outputs);
            closed.sort_unstable();
            closed.dedup();
            for i in closed.into_iter().rev() {
                self.b.outputs.remove(i);
            }
            self.clients
                .retain(|c| !(c.dead || c.closing && c.outbuf.is_empty()));
            if let Some(at) = self.exited_at {
                if self.b.outputs.is_empty() || at.elapsed() > DRAIN_TIMEOUT {
                    self.finish();
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            let _ = sock.set_nonblocking(true);
            self.clients.push(Client {
                sock,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                role: Role::New,
                closing: false,
                dead: false,
            });
        }
    }

    fn reap(&mut self) {
        match waitpid(self.b.init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => self.exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => self.exited(128 + sig as i32),
            Ok(_) => {}
            // WNOHANG: never EINTR; an error means the init is not ours to wait for.
            Err(e) => {
                tracing::error!("waiting for the container's init: {e}");
                self.exited(255)
            }
        }
    }

    fn exited(&mut self, code: i32) {
        self.exit_code = Some(code);
        self.exited_at = Some(Instant::now());
        self.b.stdin = None;
    }

    fn on_sync(&mut self) {
        let Some(sync) = &self.sync else { return };
        let reply = match crate::shim::recv_init(sync.as_raw_fd()) {
            // EOF: execve succeeded and closed init's end (close-on-exec).
            Err(_) => {
                self.sync = None;
                if !self.start_sent {
                    // Init died before it was told to start (killed while created).
                    return;
                }
                if self.state.state.status == Status::Created {
                    self.state.state.status = Status::Running;
                    self.state.state.started_at = Some(Utc::now());
                    self.save();
                }
                Frame::Ok
            }
            Ok((InitMsg::Failed(f), _)) => {
                self.sync = None;
                let err = f.clone().into_error();
                tracing::error!("container start failed: {err}");
                self.state.state.error = Some(err.to_string());
                Frame::Error(f)
            }
            Ok((InitMsg::Ready, _)) => return,
        };
        for c in self.clients.iter_mut().filter(|c| c.role == Role::Start) {
            c.send(&reply);
            c.closing = true;
        }
    }

    fn on_output(&mut self, i: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        let (fd, stream) = &self.b.outputs[i];
        let stream = *stream;
        // SAFETY: reading into a buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = nix::Error::last();
            if e == nix::Error::EAGAIN || e == nix::Error::EINTR {
                return;
            }
        }
        if n <= 0 {
            // EOF, or EIO from a pty master whose slave side is all closed.
            self.closed_outputs.push(i);
            return;
        }
        let data = &buf[..n as usize];
        if let Some(log) = &mut self.log {
            log.write(stream, data);
        }
        let frame = match stream {
            LogStream::Stdout => Frame::Stdout(data.to_vec()),
            LogStream::Stderr => Frame::Stderr(data.to_vec()),
        };
        for c in &mut self.clients {
            if let Role::Attach(s) = c.role {
                if (stream == LogStream::Stdout && s.stdout)
                    || (stream == LogStream::Stderr && s.stderr)
                {
                    c.send(&frame);
                }
            }
        }
    }

    fn flush_stdin(&mut self) {
        let Some(fd) = &self.b.stdin else {
            self.stdin_buf.clear();
            return;
        };
        // SAFETY: writing from a buffer of the given length.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                self.stdin_buf.as_ptr().cast(),
                self.stdin_buf.len(),
            )
        };
        if n > 0 {
            self.stdin_buf.drain(..n as usize);
        } else if n < 0 && nix::Error::last() != nix::Error::EAGAIN {
            self.stdin_buf.clear();
            self.b.stdin = None;
        }
        if self.stdin_buf.is_empty() && self.close_stdin {
            self.b.stdin = None;
        }
    }

    fn on_client(&mut self, i: usize, rev: libc::c_short) {
        if rev & libc::POLLOUT != 0 {
            let c = &mut self.clients[i];
            match c.sock.write(&c.outbuf) {
                Ok(n) => {
                    c.outbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => c.dead = true,
            }
        }
        if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        let n = match self.clients[i].sock.read(&mut buf) {
            Ok(0) => {
                self.clients[i].dead = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.clients[i].dead = true;
                return;
            }
        };
        self.clients[i].inbuf.extend_from_slice(&buf[..n]);
        loop {
            let parsed = Frame::parse(&self.clients[i].inbuf);
            match parsed {
                Ok(Some((frame, used))) => {
                    self.clients[i].inbuf.drain(..used);
                    self.on_frame(i, frame);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("dropping attach client: {e}");
                    self.clients[i].dead = true;
                    break;
                }
            }
        }
    }

    fn on_frame(&mut self, i: usize, frame: Frame) {
        let role = self.clients[i].role;
        match (role, frame) {
            (Role::New, Frame::Start) => {
                let busy = self.clients.iter().any(|c| c.role == Role::Start);
                let startable =
                    self.state.state.status == Status::Created && self.exit_code.is_none() && !busy;
                match (&self.sync, startable) {
                    (Some(sync), true) => {
                        let _ = nix::unistd::write(sync, &[init::START]);
                        self.start_sent = true;
                        self.clients[i].role = Role::Start;
                    }
                    _ => {
                        let status = if self.exit_code.is_some() {
                            Status::Exited
                        } else {
                            self.state.state.status
                        };
                        let f = StepFailure::detail(
                            "start",
                            self.paths.dir.display(),
                            format!("container is {status}"),
                        );
                        self.reply(i, Frame::Error(f));
                    }
                }
            }
            (Role::New, Frame::Attach(s)) => {
                self.clients[i].role = Role::Attach(s);
                if let Some(code) = self.exit_code.filter(|_| self.b.outputs.is_empty()) {
                    self.reply(i, Frame::Exit(code));
                }
            }
            (Role::New, Frame::Wait) => {
                self.clients[i].role = Role::Wait;
            }
            (Role::New, Frame::Resize { rows, cols }) => {
                self.resize(rows, cols);
                self.reply(i, Frame::Ok);
            }
            (Role::Attach(s), Frame::Stdin(data)) if s.stdin => {
                if self.b.stdin.is_some() {
                    self.stdin_buf.extend_from_slice(&data);
                }
            }
            (Role::Attach(s), Frame::CloseStdin) if s.stdin => {
                if !self.cfg.tty {
                    self.close_stdin = true;
                    if self.stdin_buf.is_empty() {
                        self.b.stdin = None;
                    }
                }
            }
            (Role::Attach(_), Frame::Resize { rows, cols }) => self.resize(rows, cols),
            (Role::Attach(_), _) => {}
            (_, f) => {
                tracing::warn!("unexpected frame {f:?} from client in role {role:?}");
                self.clients[i].dead = true;
            }
        }
    }

    fn reply(&mut self, i: usize, f: Frame) {
        self.clients[i].send(&f);
        self.clients[i].closing = true;
    }

    fn resize(&mut self, rows: u16, cols: u16) {
        if let Some(pty) = &self.b.pty {
            init::set_winsize(pty.as_raw_fd(), WinSize { rows, cols });
        }
    }

    fn save(&self) {
        if let Err(e) = self.state.save(&self.paths.dir) {
            tracing::error!("cannot record container state: {e}");
        }
    }

    /// Records the exit, tells every client, releases the cgroup and exits.
    fn finish(&mut self) -> ! {
        let code = self.exit_code.unwrap_or(255);
        if let Some(log) = &mut self.log {
            log.flush();
        }
        let oom = self.b.cgroup.oom_killed();
        let st = &mut self.state.state;
        st.status = Status::Exited;
        st.exit_code = Some(code);
        st.oom_killed = oom;
        st.finished_at = Some(Utc::now());
        st.pid = None;
        // Renamed into place now so waiters see it at once, flushed to disk below, after
        // they were told: disk flushes stay off the exit path the daemon waits on.
        if let Err(e) = self
            .state
            .save_with(&self.paths.dir, persist::Durability::Volatile)
        {
            tracing::error!("cannot record container exit: {e}");
        }
        // An ephemeral (`--rm`) container's record is removed with it: no flush.
        let record = (!self.cfg.ephemeral).then(|| persist::PendingSync::open(&self.paths.state()));
        let deadline = Instant::now() + Duration::from_secs(1);
        for c in &mut self.clients {
            if matches!(c.role, Role::Attach(_) | Role::Wait) {
                c.outbuf.extend(Frame::Exit(code).encode());
            }
            let _ = c.sock.set_nonblocking(false);
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            let _ = c.sock.set_write_timeout(Some(left));
            let _ = c.sock.write_all(&c.outbuf);
        }
        self.clients.clear();
        if self.cfg.ephemeral {
            // What is left (unmounts, cgroup removal, this process's exit) holds nobody up:
            // the daemon answers the removal without waiting for it, and an auto-removed
            // container is never started again on this cgroup. Let starting containers go
            // first.
            // SAFETY: setpriority has no memory effects.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        }
        let _ = std::fs::remove_file(self.paths.socket());
        // The container's mounts go now, after the exit was told (see `Built::mount_ns`).
        drop(self.b.mount_ns.take());
        self.b.cgroup.destroy();
        if let Some(Err(e)) = record.map(|r| r.and_then(persist::PendingSync::sync)) {
            tracing::error!("cannot flush container exit record: {e}");
        }
        std::process::exit(0)
    }
}
