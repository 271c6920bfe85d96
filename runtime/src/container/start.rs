//! `start`: let a created container's init execute the command.

use std::path::Path;

use crate::container::client;
use crate::error::{Result, RuntimeError};
use crate::protocol::Frame;
use crate::state::Status;

/// Runs the command; returns once it is executing, or with the exec error (whose
/// [`RuntimeError::exit_code`] is 127 for a missing command, 126 for a non-executable one).
pub fn start(dir: &Path) -> Result<()> {
    let st = crate::state::state(dir)?;
    if st.status != Status::Created {
        return Err(RuntimeError::InvalidState {
            dir: dir.to_path_buf(),
            op: "start",
            status: st.status.to_string(),
        });
    }
    let mut s = client::request(dir, &Frame::Start)?;
    match client::answer(dir, &mut s)? {
        Frame::Ok => Ok(()),
        Frame::Error(f) => Err(f.into_error()),
        f => Err(client::unexpected(dir, f)),
    }
}
