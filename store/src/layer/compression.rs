//! Layer media types and their compression.

use std::io::Read;

/// OCI and Docker layer media types skiff understands.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// The annotations that mark a zstd:chunked layer (new and old key prefix).
pub const ZSTD_CHUNKED_CHECKSUM_KEYS: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-checksum",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, `None` for unknown media types.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            OCI_LAYER_GZIP
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP
            | OCI_LAYER_NONDIST_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// The format name recorded in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar+gzip",
            Compression::Zstd => "tar+zstd",
        }
    }

    /// A decompressing reader over `r`.
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        r: R,
    ) -> std::io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            // MultiGzDecoder: a gzip layer may consist of several members (pigz, stargz).
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// Whether a layer's annotations mark it as zstd:chunked.
pub fn is_zstd_chunked(annotations: Option<&std::collections::HashMap<String, String>>) -> bool {
    annotations.is_some_and(|a| {
        ZSTD_CHUNKED_CHECKSUM_KEYS
            .iter()
            .any(|k| a.contains_key(*k))
    })
}
