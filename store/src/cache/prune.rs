//! Dropping cached chunks no stored layer references any more (`system prune`).

use std::collections::HashSet;

use super::{bump, is_disk_full, ChunkCache};
use crate::Result;

impl ChunkCache {
    /// Chunks recorded on disk.
    pub fn chunk_count(&self) -> Result<u64> {
        Ok(self.disk.lock().unwrap().db.all()?.len() as u64)
    }

    /// Removes every cached chunk whose digest is not in `keep`, except chunks a reader
    /// holds right now; returns the bytes freed.
    pub fn prune_unreferenced(&self, keep: &HashSet<String>) -> Result<u64> {
        let mut disk = self.disk.lock().unwrap();
        // Record pending hits first so files re-adopted by a hit are on record too.
        let touched: Vec<(String, Option<u64>)> = self.touched.lock().unwrap().drain().collect();
        if !touched.is_empty() {
            let refs: Vec<(&str, Option<u64>)> =
                touched.iter().map(|(d, s)| (d.as_str(), *s)).collect();
            match disk.db.touch(&refs) {
                Ok(added) => disk.usage += added,
                Err(e) if is_disk_full(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let mut freed = 0;
        for (digest, size) in disk.db.all()? {
            if keep.contains(&digest) {
                continue;
            }
            let pins = self.pins.lock().unwrap();
            if pins.contains_key(&digest) {
                continue;
            }
            self.files.remove(&digest)?;
            drop(pins);
            disk.db.remove(&digest)?;
            self.mem.lock().unwrap().pop(&digest);
            disk.usage = disk.usage.saturating_sub(size);
            bump(&self.counters.evicted_chunks, 1);
            freed += size;
        }
        Ok(freed)
    }
}
