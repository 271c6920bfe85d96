//! The zTOC's flatbuffers tables, written by hand from soci-snapshotter's published schema
//! (`ztoc/fbs/ztoc.fbs`, namespace `ztoc`, root `Ztoc`) in the shape `flatc --rust` gives
//! (flatc from Debian is 2.0, whose output does not build with the maintained `flatbuffers`
//! crate). Field slots follow the schema's field order: slot `n` sits at vtable offset
//! `4 + 2n`. Strings that carry tar names (`name`, `linkname`, xattr keys and values) are
//! read as bytes, since Go writes them as the tar holds them, UTF-8 or not.
//!
//! Reading goes through [`root`], which runs the flatbuffers verifier first: every offset,
//! vector and string is checked to lie inside the buffer, so the accessors below cannot
//! read out of bounds on any input.

// The accessors' `unsafe` calls rely on the verifier having run over the buffer (see
// `root`), the contract `flatc`'s generated code has too.

use flatbuffers::{
    FlatBufferBuilder, Follow, ForwardsUOffset, InvalidFlatbuffer, Table, Vector, Verifiable,
    Verifier, VerifierOptions, WIPOffset,
};

type Bytes<'a> = ForwardsUOffset<Vector<'a, u8>>;
type Str<'a> = ForwardsUOffset<&'a str>;

/// `CompressionAlgorithm : byte { Gzip = 1, Uncompressed }`.
pub const ALGORITHM_GZIP: i8 = 1;
pub const ALGORITHM_UNCOMPRESSED: i8 = 2;

macro_rules! table {
    ($name:ident) => {
        #[derive(Copy, Clone)]
        pub struct $name<'a> {
            tab: Table<'a>,
        }

        impl<'a> Follow<'a> for $name<'a> {
            type Inner = $name<'a>;
            #[inline]
            unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
                // SAFETY: the caller gives a verified table location, as Follow requires.
                $name {
                    tab: unsafe { Table::new(buf, loc) },
                }
            }
        }
    };
}

/// Reads an optional field of `tab` at vtable offset `slot`.
fn field<'a, T: Follow<'a> + 'a>(tab: &Table<'a>, slot: u16) -> Option<T::Inner> {
    // SAFETY: `tab` comes from a buffer `root` verified with this field's type.
    unsafe { tab.get::<T>(slot, None) }
}

fn scalar<'a, T: Follow<'a, Inner = T> + Copy + 'a>(tab: &Table<'a>, slot: u16, default: T) -> T {
    // SAFETY: as in `field`.
    unsafe { tab.get::<T>(slot, Some(default)) }.unwrap_or(default)
}

fn bytes<'a>(tab: &Table<'a>, slot: u16) -> &'a [u8] {
    field::<Bytes<'a>>(tab, slot)
        .map(|v| v.bytes())
        .unwrap_or_default()
}

fn string<'a>(tab: &Table<'a>, slot: u16) -> &'a str {
    field::<Str<'a>>(tab, slot).unwrap_or_default()
}

table!(Xattr);
impl<'a> Xattr<'a> {
    const KEY: u16 = 4;
    const VALUE: u16 = 6;
    pub fn key(&self) -> &'a [u8] {
        bytes(&self.tab, Self::KEY)
    }
    pub fn value(&self) -> &'a [u8] {
        bytes(&self.tab, Self::VALUE)
    }
}
impl Verifiable for Xattr<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<Bytes>("key", Self::KEY, false)?
            .visit_field::<Bytes>("value", Self::VALUE, false)?
            .finish();
        Ok(())
    }
}

table!(FileMetadata);
impl<'a> FileMetadata<'a> {
    const NAME: u16 = 4;
    const TYPE: u16 = 6;
    const UNCOMPRESSED_OFFSET: u16 = 8;
    const UNCOMPRESSED_SIZE: u16 = 10;
    const LINKNAME: u16 = 12;
    const MODE: u16 = 14;
    const UID: u16 = 16;
    const GID: u16 = 18;
    const UNAME: u16 = 20;
    const GNAME: u16 = 22;
    const MOD_TIME: u16 = 24;
    const DEVMAJOR: u16 = 26;
    const DEVMINOR: u16 = 28;
    const XATTRS: u16 = 30;

    pub fn name(&self) -> &'a [u8] {
        bytes(&self.tab, Self::NAME)
    }
    pub fn type_(&self) -> &'a str {
        string(&self.tab, Self::TYPE)
    }
    pub fn uncompressed_offset(&self) -> i64 {
        scalar(&self.tab, Self::UNCOMPRESSED_OFFSET, 0)
    }
    pub fn uncompressed_size(&self) -> i64 {
        scalar(&self.tab, Self::UNCOMPRESSED_SIZE, 0)
    }
    pub fn linkname(&self) -> &'a [u8] {
        bytes(&self.tab, Self::LINKNAME)
    }
    pub fn mode(&self) -> i64 {
        scalar(&self.tab, Self::MODE, 0)
    }
    pub fn uid(&self) -> u32 {
        scalar(&self.tab, Self::UID, 0)
    }
    pub fn gid(&self) -> u32 {
        scalar(&self.tab, Self::GID, 0)
    }
    pub fn uname(&self) -> &'a str {
        string(&self.tab, Self::UNAME)
    }
    pub fn gname(&self) -> &'a str {
        string(&self.tab, Self::GNAME)
    }
    pub fn mod_time(&self) -> &'a str {
        string(&self.tab, Self::MOD_TIME)
    }
    pub fn devmajor(&self) -> i64 {
        scalar(&self.tab, Self::DEVMAJOR, 0)
    }
    pub fn devminor(&self) -> i64 {
        scalar(&self.tab, Self::DEVMINOR, 0)
    }
    pub fn xattrs(&self) -> impl Iterator<Item = Xattr<'a>> {
        field::<ForwardsUOffset<Vector<'a, ForwardsUOffset<Xattr<'a>>>>>(&self.tab, Self::XATTRS)
            .into_iter()
            .flat_map(|v| v.iter())
    }
}
impl Verifiable for FileMetadata<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<Bytes>("name", Self::NAME, false)?
            .visit_field::<Str>("type", Self::TYPE, false)?
            .visit_field::<i64>("uncompressed_offset", Self::UNCOMPRESSED_OFFSET, false)?
            .visit_field::<i64>("uncompressed_size", Self::UNCOMPRESSED_SIZE, false)?
            .visit_field::<Bytes>("linkname", Self::LINKNAME, false)?
            .visit_field::<i64>("mode", Self::MODE, false)?
            .visit_field::<u32>("uid", Self::UID, false)?
            .visit_field::<u32>("gid", Self::GID, false)?
            .visit_field::<Str>("uname", Self::UNAME, false)?
            .visit_field::<Str>("gname", Self::GNAME, false)?
            .visit_field::<Str>("mod_time", Self::MOD_TIME, false)?
            .visit_field::<i64>("devmajor", Self::DEVMAJOR, false)?
            .visit_field::<i64>("devminor", Self::DEVMINOR, false)?
            .visit_field::<ForwardsUOffset<Vector<ForwardsUOffset<Xattr>>>>(
                "xattrs",
                Self::XATTRS,
                false,
            )?
            .finish();
        Ok(())
    }
}

table!(CompressionInfo);
impl<'a> CompressionInfo<'a> {
    const COMPRESSION_ALGORITHM: u16 = 4;
    const MAX_SPAN_ID: u16 = 6;
    const SPAN_DIGESTS: u16 = 8;
    const CHECKPOINTS: u16 = 10;

    pub fn compression_algorithm(&self) -> i8 {
        scalar(&self.tab, Self::COMPRESSION_ALGORITHM, ALGORITHM_GZIP)
    }
    pub fn max_span_id(&self) -> i32 {
        scalar(&self.tab, Self::MAX_SPAN_ID, 0)
    }
    pub fn span_digests(&self) -> impl Iterator<Item = &'a str> {
        field::<ForwardsUOffset<Vector<'a, Str<'a>>>>(&self.tab, Self::SPAN_DIGESTS)
            .into_iter()
            .flat_map(|v| v.iter())
    }
    pub fn checkpoints(&self) -> &'a [u8] {
        bytes(&self.tab, Self::CHECKPOINTS)
    }
}
impl Verifiable for CompressionInfo<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<i8>("compression_algorithm", Self::COMPRESSION_ALGORITHM, false)?
            .visit_field::<i32>("max_span_id", Self::MAX_SPAN_ID, false)?
            .visit_field::<ForwardsUOffset<Vector<Str>>>("span_digests", Self::SPAN_DIGESTS, false)?
            .visit_field::<Bytes>("checkpoints", Self::CHECKPOINTS, false)?
            .finish();
        Ok(())
    }
}

table!(Toc);
impl<'a> Toc<'a> {
    const METADATA: u16 = 4;
    pub fn metadata(&self) -> impl Iterator<Item = FileMetadata<'a>> {
        field::<ForwardsUOffset<Vector<'a, ForwardsUOffset<FileMetadata<'a>>>>>(
            &self.tab,
            Self::METADATA,
        )
        .into_iter()
        .flat_map(|v| v.iter())
    }
}
impl Verifiable for Toc<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<Vector<ForwardsUOffset<FileMetadata>>>>(
                "metadata",
                Self::METADATA,
                false,
            )?
            .finish();
        Ok(())
    }
}

table!(Ztoc);
impl<'a> Ztoc<'a> {
    const VERSION: u16 = 4;
    const BUILD_TOOL_IDENTIFIER: u16 = 6;
    const COMPRESSED_ARCHIVE_SIZE: u16 = 8;
    const UNCOMPRESSED_ARCHIVE_SIZE: u16 = 10;
    const TOC: u16 = 12;
    const COMPRESSION_INFO: u16 = 14;

    pub fn version(&self) -> &'a str {
        string(&self.tab, Self::VERSION)
    }
    pub fn build_tool_identifier(&self) -> &'a str {
        string(&self.tab, Self::BUILD_TOOL_IDENTIFIER)
    }
    pub fn compressed_archive_size(&self) -> i64 {
        scalar(&self.tab, Self::COMPRESSED_ARCHIVE_SIZE, 0)
    }
    pub fn uncompressed_archive_size(&self) -> i64 {
        scalar(&self.tab, Self::UNCOMPRESSED_ARCHIVE_SIZE, 0)
    }
    pub fn toc(&self) -> Option<Toc<'a>> {
        field::<ForwardsUOffset<Toc<'a>>>(&self.tab, Self::TOC)
    }
    pub fn compression_info(&self) -> Option<CompressionInfo<'a>> {
        field::<ForwardsUOffset<CompressionInfo<'a>>>(&self.tab, Self::COMPRESSION_INFO)
    }
}
impl Verifiable for Ztoc<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<Str>("version", Self::VERSION, false)?
            .visit_field::<Str>("build_tool_identifier", Self::BUILD_TOOL_IDENTIFIER, false)?
            .visit_field::<i64>(
                "compressed_archive_size",
                Self::COMPRESSED_ARCHIVE_SIZE,
                false,
            )?
            .visit_field::<i64>(
                "uncompressed_archive_size",
                Self::UNCOMPRESSED_ARCHIVE_SIZE,
                false,
            )?
            .visit_field::<ForwardsUOffset<Toc>>("toc", Self::TOC, false)?
            .visit_field::<ForwardsUOffset<CompressionInfo>>(
                "compression_info",
                Self::COMPRESSION_INFO,
                false,
            )?
            .finish();
        Ok(())
    }
}

/// The verified root table of a zTOC buffer. The verifier's limits are raised from their
/// defaults (64 deep, 1 M tables) to what a layer of a million files needs.
pub fn root(buf: &[u8]) -> Result<Ztoc<'_>, InvalidFlatbuffer> {
    let opts = VerifierOptions {
        max_depth: 16,
        max_tables: 8_000_000,
        max_apparent_size: 1 << 31,
        ..Default::default()
    };
    flatbuffers::root_with_opts::<Ztoc>(&opts, buf)
}

/// One file entry to write, in the schema's terms.
pub struct FileMetadataArgs<'b> {
    pub name: &'b [u8],
    pub type_: &'b str,
    pub uncompressed_offset: i64,
    pub uncompressed_size: i64,
    pub linkname: &'b [u8],
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    pub uname: &'b str,
    pub gname: &'b str,
    pub mod_time: &'b str,
    pub devmajor: i64,
    pub devminor: i64,
    pub xattrs: Vec<(&'b [u8], &'b [u8])>,
}

/// The whole document to write.
pub struct ZtocArgs<'b> {
    pub version: &'b str,
    pub build_tool_identifier: &'b str,
    pub compressed_archive_size: i64,
    pub uncompressed_archive_size: i64,
    pub files: Vec<FileMetadataArgs<'b>>,
    pub compression_algorithm: i8,
    pub max_span_id: i32,
    pub span_digests: Vec<&'b str>,
    pub checkpoints: &'b [u8],
}

fn write_file<'f>(b: &mut FlatBufferBuilder<'f>, f: &FileMetadataArgs<'_>) -> WIPOffset<Table<'f>> {
    let name = b.create_byte_string(f.name);
    let typ = b.create_string(f.type_);
    let linkname = b.create_byte_string(f.linkname);
    let uname = b.create_string(f.uname);
    let gname = b.create_string(f.gname);
    let mod_time = b.create_string(f.mod_time);
    let xattrs: Vec<WIPOffset<Table<'f>>> = f
        .xattrs
        .iter()
        .map(|(k, v)| {
            let k = b.create_byte_string(k);
            let v = b.create_byte_string(v);
            let t = b.start_table();
            b.push_slot_always(Xattr::KEY, k);
            b.push_slot_always(Xattr::VALUE, v);
            WIPOffset::new(b.end_table(t).value())
        })
        .collect();
    let xattrs = b.create_vector(&xattrs);
    let t = b.start_table();
    b.push_slot_always(FileMetadata::NAME, name);
    b.push_slot_always(FileMetadata::TYPE, typ);
    b.push_slot(FileMetadata::UNCOMPRESSED_OFFSET, f.uncompressed_offset, 0);
    b.push_slot(FileMetadata::UNCOMPRESSED_SIZE, f.uncompressed_size, 0);
    b.push_slot_always(FileMetadata::LINKNAME, linkname);
    b.push_slot(FileMetadata::MODE, f.mode, 0);
    b.push_slot(FileMetadata::UID, f.uid, 0);
    b.push_slot(FileMetadata::GID, f.gid, 0);
    b.push_slot_always(FileMetadata::UNAME, uname);
    b.push_slot_always(FileMetadata::GNAME, gname);
    b.push_slot_always(FileMetadata::MOD_TIME, mod_time);
    b.push_slot(FileMetadata::DEVMAJOR, f.devmajor, 0);
    b.push_slot(FileMetadata::DEVMINOR, f.devminor, 0);
    b.push_slot_always(FileMetadata::XATTRS, xattrs);
    WIPOffset::new(b.end_table(t).value())
}

/// Serializes `z` (deterministic: the same arguments give the same bytes). Tables,
/// strings and vectors are created, and fields added, in the order soci-snapshotter's
/// `ztocToFlatbuffer` does (file tables last to first), and scalars equal to their default
/// are left out as Go's `Prepend*Slot` does, so the layout follows the Go writer's.
pub fn write(z: &ZtocArgs<'_>) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(z.checkpoints.len() + 1024);
    let version = b.create_string(z.version);
    let tool = b.create_string(z.build_tool_identifier);
    let mut files: Vec<WIPOffset<Table>> = z
        .files
        .iter()
        .rev()
        .map(|f| write_file(&mut b, f))
        .collect();
    files.reverse();
    let files = b.create_vector(&files);
    let t = b.start_table();
    b.push_slot_always(Toc::METADATA, files);
    let toc: WIPOffset<Table> = WIPOffset::new(b.end_table(t).value());
    let checkpoints = b.create_vector(z.checkpoints);
    let digests: Vec<WIPOffset<&str>> = z.span_digests.iter().map(|d| b.create_string(d)).collect();
    let digests = b.create_vector(&digests);
    let t = b.start_table();
    b.push_slot(CompressionInfo::MAX_SPAN_ID, z.max_span_id, 0);
    b.push_slot_always(CompressionInfo::SPAN_DIGESTS, digests);
    b.push_slot_always(CompressionInfo::CHECKPOINTS, checkpoints);
    b.push_slot(
        CompressionInfo::COMPRESSION_ALGORITHM,
        z.compression_algorithm,
        ALGORITHM_GZIP,
    );
    let info: WIPOffset<Table> = WIPOffset::new(b.end_table(t).value());
    let t = b.start_table();
    b.push_slot_always(Ztoc::VERSION, version);
    b.push_slot_always(Ztoc::BUILD_TOOL_IDENTIFIER, tool);
    b.push_slot_always(Ztoc::TOC, toc);
    b.push_slot(Ztoc::COMPRESSED_ARCHIVE_SIZE, z.compressed_archive_size, 0);
    b.push_slot(
        Ztoc::UNCOMPRESSED_ARCHIVE_SIZE,
        z.uncompressed_archive_size,
        0,
    );
    b.push_slot_always(Ztoc::COMPRESSION_INFO, info);
    let root: WIPOffset<Table> = WIPOffset::new(b.end_table(t).value());
    b.finish_minimal(root);
    b.finished_data().to_vec()
}
