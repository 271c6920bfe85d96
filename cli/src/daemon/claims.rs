//! Keys held by operations still in flight: container names claimed by creates and renames,
//! container ids being removed.
//!
//! A create picks its name first and writes its record last, after the runtime has forked
//! the shim and mounted the rootfs (milliseconds). Holding one lock over all of that made
//! concurrent `run`s queue behind each other; a claim makes the name unavailable to every
//! other create or rename from the moment it is picked until the claim is dropped (after
//! the record is written, or on failure), and nothing else waits. A removal claims its
//! container's id the same way, so a second removal (an auto-remove racing `rm -f`) is
//! refused instead of releasing the image mount and the network twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::DaemonError;
use super::records::Records;

type Held = Arc<Mutex<HashMap<String, String>>>;

/// The keys claimed and not yet released (key → the claiming container's id).
#[derive(Default)]
pub struct Claims {
    held: Held,
}

/// A claimed key; released on drop.
pub struct Claim {
    key: String,
    held: Held,
}

impl Claim {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Claims {
    /// Claims `key` for container `id` unless another claim or `owner_elsewhere` (asked
    /// under the claims' lock) has it; `Ok(Err(holder))` names who has it.
    fn claim_unless(
        &self,
        key: &str,
        id: &str,
        owner_elsewhere: impl FnOnce() -> Result<Option<String>, DaemonError>,
    ) -> Result<Result<Claim, String>, DaemonError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let holder = match held.get(key) {
            Some(other) => Some(other.clone()),
            None => owner_elsewhere()?,
        };
        if let Some(other) = holder {
            return Ok(Err(other));
        }
        held.insert(key.to_string(), id.to_string());
        Ok(Ok(Claim {
            key: key.to_string(),
            held: self.held.clone(),
        }))
    }

    /// Claims container name `name` for container `id` unless a record or another claim
    /// has it.
    ///
    /// Errors: [`DaemonError::NameInUse`] with the holder's id (Docker's 409), or the
    /// records' error when they cannot be read.
    pub fn claim_name(
        &self,
        records: &Records,
        name: &str,
        id: &str,
    ) -> Result<Claim, DaemonError> {
        self.claim_unless(name, id, || records.name_taken(name))?
            .map_err(|other| DaemonError::NameInUse {
                name: name.to_string(),
                id: other,
            })
    }

    /// Claims the first generated name (Docker's `adjective_surname`) that is free.
    pub fn claim_generated_name(&self, records: &Records, id: &str) -> Result<Claim, DaemonError> {
        let mut attempt = 0;
        loop {
            match self.claim_name(records, &super::names::generate_name(attempt), id) {
                Err(DaemonError::NameInUse { .. }) => attempt += 1,
                claimed => return claimed,
            }
        }
    }

    /// Claims container `id` for its removal.
    ///
    /// Errors: [`DaemonError::RemovalInProgress`] while another removal holds it.
    pub fn claim_removal(&self, id: &str) -> Result<Claim, DaemonError> {
        self.claim_unless(id, id, || Ok(None))?
            .map_err(|_| DaemonError::RemovalInProgress { id: id.to_string() })
    }
}
