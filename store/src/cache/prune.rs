//! Dropping cached chunks no stored layer references any more (`system prune`).

use std::collections::HashSet;

use super::{bump, CacheCore};
use crate::Result;

impl CacheCore {
    /// Chunks recorded on disk.
    pub fn chunk_count(&self) -> Result<u64> {
        Ok(self.disk.lock().unwrap().db.all()?.len() as u64)
    }

    /// Removes every cached chunk whose digest is not in `keep`, except chunks a reader
    /// holds right now; returns the bytes freed.
    pub fn prune_unreferenced(&self, keep: &HashSet<String>) -> Result<u64> {
        let mut disk = self.disk.lock().unwrap();
        // Record pending hits first so files re-adopted by a hit are on record too.
        self.record_touched(&mut disk)?;
        let mut freed = 0;
        let mut packs = std::collections::BTreeSet::new();
        for (digest, size, at) in disk.db.all()? {
            if keep.contains(&digest) {
                continue;
            }
            let pins = self.pins.lock().unwrap();
            if pins.contains_key(&digest) {
                continue;
            }
            self.discard(&digest, at)?;
            packs.extend(at.map(|a| a.pack));
            drop(pins);
            disk.db.remove(&digest)?;
            self.mem.lock().unwrap().pop(&digest);
            disk.usage = disk.usage.saturating_sub(size);
            bump(&self.counters.evicted_chunks, 1);
            freed += size;
        }
        for pack in packs {
            self.remove_pack_if_unused(&disk, pack)?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::{ChunkCache, ChunkCacheConfig};
    use crate::chunked::{self, FileBlobSource, RetryPolicy, WriterOptions};
    use crate::layer_index::{ChunkLocation, ContentReader};

    /// A zstd:chunked blob of one 1 MiB file in 256 KiB chunks, in `dir`.
    pub(super) fn chunked_blob(dir: &std::path::Path) -> (Arc<FileBlobSource>, crate::LayerIndex) {
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut blob = Vec::new();
        let layer =
            chunked::write_zstd_chunked(&tar, &mut blob, &WriterOptions::default()).unwrap();
        let path = dir.join("blob");
        std::fs::write(&path, &blob).unwrap();
        let src = Arc::new(FileBlobSource::open(&path, &layer.digest).unwrap());
        let annotations = layer.annotations.clone();
        let (index, _) = chunked::open_lazy_layer(
            src.as_ref(),
            &layer.digest,
            &annotations,
            &RetryPolicy::default(),
        )
        .unwrap();
        (src, index)
    }

    #[test]
    fn prune_keeps_referenced_and_pinned_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (src, index) = chunked_blob(dir.path());
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path().join("cache"))).unwrap();
        cache.register_layer(&index.digest, src);
        let f = index.entries.iter().find(|e| e.path == "f").unwrap();
        let mut buf = vec![0u8; f.size as usize];
        assert_eq!(
            cache
                .read_at(&index.digest, &f.chunks, 0, &mut buf)
                .unwrap(),
            buf.len()
        );
        let digests: Vec<String> = f
            .chunks
            .iter()
            .map(|c| match &c.location {
                ChunkLocation::Compressed { digest, .. } => digest.clone(),
                ChunkLocation::Local { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(cache.chunk_count().unwrap(), 4);
        let used = cache.disk_usage();
        assert_eq!(used, 1 << 20);

        let keep: HashSet<String> = digests.iter().cloned().collect();
        assert_eq!(cache.prune_unreferenced(&keep).unwrap(), 0);
        assert_eq!(cache.disk_usage(), used);

        // A chunk a reader holds survives; the others go.
        let pins = cache.pin(&[digests[0].as_str()]);
        assert_eq!(
            cache.prune_unreferenced(&HashSet::new()).unwrap(),
            used - (256 << 10)
        );
        drop(pins);
        assert_eq!(cache.chunk_count().unwrap(), 1);
        assert_eq!(
            cache.prune_unreferenced(&HashSet::new()).unwrap(),
            256 << 10
        );
        assert_eq!((cache.disk_usage(), cache.chunk_count().unwrap()), (0, 0));
    }
}

#[cfg(test)]
mod upgrade_tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::{ChunkCache, ChunkCacheConfig};
    use crate::chunked::FileBlobSource;
    use crate::layer_index::{ChunkLocation, ContentReader};

    /// A cache written before packs kept each chunk in `sha256/<ab>/<hex>` with a row
    /// without a place: such chunks are read without a fetch, and pruned from disk.
    #[test]
    fn chunk_files_of_a_cache_before_packs_are_read_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (src, index) = super::tests::chunked_blob(dir.path());
        let root = dir.path().join("cache");
        let f = index.entries.iter().find(|e| e.path == "f").unwrap();
        let mut want = vec![0u8; f.size as usize];
        {
            let cache = ChunkCache::open(ChunkCacheConfig::new(&root)).unwrap();
            cache.register_layer(&index.digest, src.clone());
            cache
                .read_at(&index.digest, &f.chunks, 0, &mut want)
                .unwrap();
            // Turn it into the old layout: every chunk in a file of its own.
            for c in &f.chunks {
                let ChunkLocation::Compressed { digest, .. } = &c.location else {
                    unreachable!()
                };
                let (pack, offset, len) = cache.stored_place(digest).unwrap().unwrap();
                let bytes = std::fs::read(pack).unwrap();
                let file = cache.files.path(digest);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, &bytes[offset as usize..(offset + len) as usize]).unwrap();
            }
        }
        let db = rusqlite::Connection::open(root.join("cache.db")).unwrap();
        db.execute_batch("UPDATE chunks SET pack = NULL, pack_offset = NULL, pack_len = NULL")
            .unwrap();
        drop(db);
        let src: Arc<FileBlobSource> = src;
        let cache = ChunkCache::open(ChunkCacheConfig::new(&root)).unwrap();
        assert!(
            cache.packs.ids().unwrap().is_empty(),
            "packs no chunk is recorded in are removed at open"
        );
        cache.register_layer(&index.digest, src);
        let mut got = vec![0u8; f.size as usize];
        cache
            .read_at(&index.digest, &f.chunks, 0, &mut got)
            .unwrap();
        assert!(got == want);
        let stats = cache.stats();
        assert_eq!((stats.fetch_requests, stats.disk_hits), (0, 4));
        assert_eq!(
            cache.prune_unreferenced(&HashSet::new()).unwrap(),
            f.size,
            "the old files count and are freed"
        );
        assert!(
            !root.join("sha256").exists(),
            "emptied shard directories go too"
        );
    }
}
