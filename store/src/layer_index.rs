//! The normalized, format-independent description of one layer's files.
//!
//! Both zstd:chunked TOCs and fully pulled standard layers (tar+gzip, tar+zstd) are turned
//! into a `LayerIndex`; the filesystem merges the indexes of an image's layers and asks a
//! [`ContentReader`] for file bytes. Nothing here touches the network.

use std::collections::BTreeMap;

use crate::layer_path::LayerPath;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// A hard link to an earlier entry of this layer or to a file of a lower layer (as the
    /// merged tree stands when this layer is applied); `link_target` names it.
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

impl FileKind {
    /// The kind a TOC names with `typ` (`reg`, `dir`, `symlink`, `hardlink`, `char`,
    /// `block`, `fifo`: the names of eStargz/zstd:chunked TOCs and SOCI zTOCs).
    pub fn from_toc_type(typ: &str) -> Option<FileKind> {
        Some(match typ {
            "reg" => FileKind::Regular,
            "dir" => FileKind::Directory,
            "symlink" => FileKind::Symlink,
            "hardlink" => FileKind::Hardlink,
            "char" => FileKind::CharDevice,
            "block" => FileKind::BlockDevice,
            "fifo" => FileKind::Fifo,
            _ => return None,
        })
    }
}

/// How the blob bytes of a [`ChunkLocation::Compressed`] chunk are decoded. Carried by each
/// chunk, so the chunk cache serves every lazy format (see [`crate::lazy_format`]) alike.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// One zstd frame that decompresses to exactly the chunk (zstd:chunked). The default,
    /// so indexes stored before codecs existed read as they were written.
    #[default]
    Zstd,
    /// A gzip stream (one or more members) whose decompressed bytes start with the chunk
    /// after `inner_offset` bytes; what follows the chunk (tar padding, the next tar
    /// headers) is ignored (eStargz).
    Gzip,
    /// Span `span` of a SOCI-indexed gzip layer: the blob bytes are the span's compressed
    /// range, checked against the zTOC's span digest before they are inflated from the
    /// span's zran checkpoint (the 32 KiB window is the layer's, registered with the cache
    /// once per layer, not carried per chunk); the chunk is `len` bytes at `inner_offset` of
    /// the inflated span. The zTOC gives no digest of decompressed bytes, so such a chunk's
    /// `digest` is a synthetic key ([`crate::soci::lazy::piece_key`]).
    Zran { span: u32 },
}

impl Codec {
    pub fn is_zstd(&self) -> bool {
        *self == Codec::Zstd
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Where the bytes of one piece of a regular file live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkLocation {
    /// Compressed bytes `blob_offset..blob_offset+blob_len` of a lazy layer's blob in the
    /// registry, decoded with `codec`; the chunk is the `len` bytes (of its [`ChunkRef`])
    /// at `inner_offset` of the decoded stream, and hashes to `digest` (`sha256:<hex>`).
    Compressed {
        blob_offset: u64,
        blob_len: u64,
        digest: String,
        #[serde(default, skip_serializing_if = "Codec::is_zstd")]
        codec: Codec,
        /// Decoded bytes before the chunk (eStargz `innerOffset`; 0 for zstd:chunked).
        #[serde(default, skip_serializing_if = "is_zero")]
        inner_offset: u64,
    },
    /// Uncompressed bytes at `offset` of the layer's local, already verified data file.
    Local { offset: u64 },
}

/// One piece of a regular file: bytes `file_offset..file_offset+len` of the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkRef {
    pub file_offset: u64,
    pub len: u64,
    pub location: ChunkLocation,
}

/// One entry of a layer, as the layer's tar (or TOC) describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// Relative, normalized path: no leading `/`, no `.` or `..` components, no empty parts.
    /// Whiteouts keep their `.wh.` names here; the filesystem resolves them when merging.
    /// Bytes, as the tar carries them (not necessarily UTF-8).
    pub path: LayerPath,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky; no file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Symlink target (bytes, verbatim), or for hard links the path (same normalization) of
    /// the linked entry.
    pub link_target: LayerPath,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For regular files: the pieces in file order, covering `0..size` without gaps.
    pub chunks: Vec<ChunkRef>,
}

/// All entries of one layer, in tar order.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LayerIndex {
    /// The layer's (compressed) blob digest, `sha256:<hex>`.
    pub digest: String,
    pub entries: Vec<FileEntry>,
}

/// Reads file bytes for the filesystem. Blocking: FUSE worker threads call it.
///
/// Implementations fetch missing chunks (from the registry or a local file), verify them,
/// and never return a byte that failed verification.
pub trait ContentReader: Send + Sync {
    /// Reads up to `buf.len()` bytes of the file described by `chunks` (of layer
    /// `layer_digest`) starting at `offset`; returns how many were read (0 at end of file).
    fn read_at(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> crate::Result<usize>;

    /// A local file whose bytes `0..size` are exactly this file's verified content, if one
    /// exists without fetching anything (e.g. a file held in one cached chunk). The
    /// filesystem then lets the kernel read it directly (FUSE passthrough). Must not block
    /// on the network; `None` (the default) means reads go through `read_at`.
    fn backing_file(&self, _layer_digest: &str, _chunks: &[ChunkRef]) -> Option<std::fs::File> {
        None
    }
}
