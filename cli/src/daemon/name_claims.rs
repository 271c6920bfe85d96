//! Container names held by creates and renames still in flight.
//!
//! A create picks its name first and writes its record last, after the runtime has forked
//! the shim and mounted the rootfs (milliseconds). Holding one lock over all of that made
//! concurrent `run`s queue behind each other; a claim makes the name unavailable to every
//! other create or rename from the moment it is picked until the claim is dropped (after
//! the record is written, or on failure), and nothing else waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::DaemonError;
use super::records::Records;

type Held = Arc<Mutex<HashMap<String, String>>>;

/// The names claimed and not yet released (name → id of the claiming container).
#[derive(Default)]
pub struct NameClaims {
    held: Held,
}

/// A claimed name; released on drop.
pub struct NameClaim {
    name: String,
    held: Held,
}

impl NameClaim {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

impl NameClaims {
    /// Claims `name` for container `id` unless a record or another claim has it.
    ///
    /// Errors: [`DaemonError::NameInUse`] with the holder's id (Docker's 409), or the
    /// records' error when they cannot be read.
    pub fn claim(&self, records: &Records, name: &str, id: &str) -> Result<NameClaim, DaemonError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let holder = match held.get(name) {
            Some(other) => Some(other.clone()),
            None => records.name_taken(name)?,
        };
        if let Some(other) = holder {
            return Err(DaemonError::NameInUse {
                name: name.to_string(),
                id: other,
            });
        }
        held.insert(name.to_string(), id.to_string());
        Ok(NameClaim {
            name: name.to_string(),
            held: self.held.clone(),
        })
    }

    /// Claims the first generated name (Docker's `adjective_surname`) that is free.
    pub fn claim_generated(&self, records: &Records, id: &str) -> Result<NameClaim, DaemonError> {
        let mut attempt = 0;
        loop {
            match self.claim(records, &super::names::generate_name(attempt), id) {
                Err(DaemonError::NameInUse { .. }) => attempt += 1,
                claimed => return claimed,
            }
        }
    }
}
