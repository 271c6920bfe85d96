//! `wait`: block until the container has exited and return its final state.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::container::client;
use crate::error::Result;
use crate::protocol::Frame;
use crate::state::{self, ContainerState, Status};

/// Waits for the exit (as long as it takes).
pub fn wait(dir: &Path) -> Result<ContainerState> {
    loop {
        if let Some(st) = wait_timeout(dir, Duration::from_secs(3600))? {
            return Ok(st);
        }
    }
}

/// Waits at most `timeout`; `None` if the container still runs then.
pub fn wait_timeout(dir: &Path, timeout: Duration) -> Result<Option<ContainerState>> {
    let deadline = Instant::now() + timeout;
    let st = state::state(dir)?;
    if st.status == Status::Exited {
        return Ok(Some(st));
    }
    if let Ok(mut s) = client::request(dir, &Frame::Wait) {
        let _ = s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        // Exit frame, EOF (shim finished) or timeout: in each case the state file decides.
        let _ = Frame::read_from(&mut s);
    }
    // The shim records the exit before closing its socket; poll briefly for a lost shim.
    loop {
        let st = state::state(dir)?;
        if st.status == Status::Exited {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
