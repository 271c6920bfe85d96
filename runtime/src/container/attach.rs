//! `attach` and `resize`: live output, stdin and terminal size through the shim.

use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::container::client;
use crate::error::{Result, RuntimeError};
use crate::protocol::{AttachStreams, Frame};
use crate::state::{self, Status};

/// Attaches to a created or running container. Read [`Frame`]s from the returned stream
/// (`Stdout`/`Stderr` output from now on, then `Exit(code)`), write `Stdin`, `CloseStdin`
/// and `Resize` frames to it. Earlier output is in the log ([`crate::LogReader`]).
pub fn attach(dir: &Path, streams: AttachStreams) -> Result<UnixStream> {
    let st = state::state(dir)?;
    if st.status == Status::Exited {
        return Err(RuntimeError::InvalidState {
            dir: dir.to_path_buf(),
            op: "attach",
            status: st.status.to_string(),
        });
    }
    client::request(dir, &Frame::Attach(streams))
}

/// Sets the container's pty size (no-op without a tty).
pub fn resize(dir: &Path, rows: u16, cols: u16) -> Result<()> {
    let mut s = client::request(dir, &Frame::Resize { rows, cols })?;
    match client::answer(dir, &mut s)? {
        Frame::Ok => Ok(()),
        Frame::Error(f) => Err(f.into_error()),
        f => Err(client::unexpected(dir, f)),
    }
}
