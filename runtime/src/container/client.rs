//! Talking to a container's shim over `shim.sock`.

use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::paths::ContainerPaths;
use crate::protocol::Frame;

/// Connects and sends the request frame.
pub(crate) fn request(dir: &Path, req: &Frame) -> Result<UnixStream> {
    let sock = ContainerPaths::new(dir).socket();
    let mut s = crate::paths::with_socket_path(&sock, |p| UnixStream::connect(p))
        .map_err(|e| RuntimeError::io("connect", &sock, e))?;
    req.write_to(&mut s)
        .map_err(|e| RuntimeError::io("send request", &sock, e))?;
    Ok(s)
}

/// Reads the shim's one-frame answer.
pub(crate) fn answer(dir: &Path, s: &mut UnixStream) -> Result<Frame> {
    let sock = ContainerPaths::new(dir).socket();
    match Frame::read_from(s) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(RuntimeError::Protocol {
            path: sock,
            reason: "shim closed the connection without answering".into(),
        }),
        Err(e) => Err(RuntimeError::io("read answer", sock, e)),
    }
}

pub(crate) fn unexpected(dir: &Path, f: Frame) -> RuntimeError {
    RuntimeError::Protocol {
        path: ContainerPaths::new(dir).socket(),
        reason: format!("unexpected answer {f:?}"),
    }
}
