//! Driving an interactive CLI (`run -it`, `exec -it`) through a real pseudo-terminal.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

pub struct PtySession {
    master: std::fs::File,
    pub child: Child,
    pub transcript: Vec<u8>,
}

impl PtySession {
    /// Spawns `cmd` with a new pty as its stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Result<PtySession> {
        let pty = nix::pty::openpty(None, None)?;
        let slave: OwnedFd = pty.slave;
        let master: OwnedFd = pty.master;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // Non-blocking reads so `expect` can time out.
        let fd = master.as_raw_fd();
        // SAFETY: plain fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(PtySession {
            master: std::fs::File::from(master),
            child,
            transcript: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.master.write_all(bytes)?;
        Ok(())
    }

    /// Reads until `needle` appears in the transcript (after what was already matched).
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start_len = self.transcript.len();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let text =
                String::from_utf8_lossy(&self.transcript[start_len.saturating_sub(needle.len())..]);
            if text.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {needle:?}; transcript:\n{}",
                    String::from_utf8_lossy(&self.transcript)
                );
            }
            match self.master.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(20)),
                Ok(n) => self.transcript.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                // EIO: the slave side closed (the process exited).
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits for the child to exit (bounded), draining output meanwhile.
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "process did not exit; transcript:\n{}",
                    String::from_utf8_lossy(&self.transcript)
                );
            }
            if let Ok(n) = self.master.read(&mut buf) {
                self.transcript.extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
