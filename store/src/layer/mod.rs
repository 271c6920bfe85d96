//! Standard (fully downloaded) layers: decompression into `<root>/layers/<hex>/data.tar`,
//! the file index built from the tar headers, and reads of file bytes from that tar.

pub mod compression;
pub mod hardlinks;
pub mod local_reader;
pub mod tar_builder;
pub mod tar_index;
pub mod unpack;

pub use compression::Compression;
pub use hardlinks::{check_hardlinks, links_within, HardlinkCheck};
pub use local_reader::LocalContentReader;
pub use unpack::{unpack_layer, UnpackedLayer};
