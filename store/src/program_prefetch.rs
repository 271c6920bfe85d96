//! What starting an image's program reads first, fetched before it asks: the executable its
//! config names (`Entrypoint`, else `Cmd`, resolved over the config's `PATH`), the script
//! interpreter of a `#!` file, the ELF interpreter (`PT_INTERP`) and the shared libraries
//! the executable and its libraries need (`DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`, then the
//! usual directories). No profile is needed: it is read off the image itself, at the end
//! of a lazy pull, so these fetches overlap the rest of the pull and the container's
//! create instead of following the dynamic loader's faults one round trip at a time.
//!
//! Each file is fetched by asking for its first chunk: the cache's read-ahead then brings
//! the rest of the file (bounded, `cache::readahead`), as a fault on it would. The ELF
//! headers are read through the cache without being counted as a workload's reads. A
//! program that is not there, not ELF, or malformed just ends the prefetch (debug log).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::ReadCache;

use crate::cache::ChunkCache;
use crate::layer_index::{ChunkLocation, ChunkRef, FileEntry, FileKind, LayerIndex};

/// Libraries are followed this many levels below the executable.
const MAX_DEPTH: usize = 2;
/// At most this many files are prefetched for one program.
const MAX_FILES: usize = 32;
/// Symlinks followed while resolving one path.
const MAX_HOPS: usize = 40;

/// The image's files by path, the topmost layer's entry winning.
pub(crate) struct ImageFiles<'a> {
    files: HashMap<&'a [u8], (usize, &'a FileEntry)>,
    layers: Vec<&'a str>,
}

impl<'a> ImageFiles<'a> {
    /// `indexes` bottom layer first. Whiteouts are not applied: a path hidden by an upper
    /// layer may still be found (a wasted fetch at worst, never a wrong byte).
    pub(crate) fn new(indexes: &'a [LayerIndex]) -> ImageFiles<'a> {
        let mut files = HashMap::new();
        for (l, index) in indexes.iter().enumerate() {
            for e in &index.entries {
                files.insert(e.path.as_bytes(), (l, e));
            }
        }
        ImageFiles {
            files,
            layers: indexes.iter().map(|i| i.digest.as_str()).collect(),
        }
    }

    /// The regular file at absolute or relative `path`, symlinks (also of parent
    /// directories, as in merged-/usr images) and hard links followed: `(layer digest,
    /// entry)`.
    pub(crate) fn resolve(&self, path: &[u8]) -> Option<(&'a str, &'a FileEntry)> {
        let mut todo: VecDeque<Vec<u8>> = components(path).collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if c == b".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let joined = cur.join(&b'/');
            // Parents need no entry of their own (not every tar lists its directories).
            let Some(&(_, e)) = self.files.get(joined.as_slice()) else {
                continue;
            };
            if e.kind == FileKind::Symlink {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                cur.pop();
                let target = e.link_target.as_bytes();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                for (k, t) in components(target).enumerate() {
                    todo.insert(k, t);
                }
            }
        }
        let joined = cur.join(&b'/');
        let &(layer, mut e) = self.files.get(joined.as_slice())?;
        let mut layer = layer;
        if e.kind == FileKind::Hardlink {
            (layer, e) = *self.files.get(e.link_target.as_bytes())?;
        }
        (e.kind == FileKind::Regular).then_some((self.layers[layer], e))
    }

    /// `name` looked up as a shell would: a path when it has a `/`, else over `path_var`.
    pub(crate) fn find_program(
        &self,
        name: &str,
        path_var: &str,
    ) -> Option<(&'a str, &'a FileEntry)> {
        if name.contains('/') {
            return self.resolve(name.as_bytes());
        }
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .find_map(|d| self.resolve(format!("{d}/{name}").as_bytes()))
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// The program an image starts by default: `Entrypoint[0]`, else `Cmd[0]`, and the
/// `PATH` of its environment (Docker's default when it sets none).
pub fn default_program(config: &oci_spec::image::ImageConfiguration) -> Option<(String, String)> {
    let c = config.config().as_ref()?;
    let argv0 = c
        .entrypoint()
        .as_ref()
        .and_then(|e| e.first())
        .or_else(|| c.cmd().as_ref().and_then(|c| c.first()))?
        .clone();
    let path = c
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|v| v.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    Some((argv0, path))
}

/// A file of the image read through the chunk cache, for the ELF parser.
struct CachedFile<'a> {
    cache: &'a ChunkCache,
    layer: &'a str,
    chunks: &'a [ChunkRef],
    size: u64,
    pos: u64,
}

impl Read for CachedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size {
            return Ok(0);
        }
        let n = self
            .cache
            .read_unrecorded(self.layer, self.chunks, self.pos, buf)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for CachedFile<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// What a program file asks for next: an interpreter path and library names.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub interpreter: Option<Vec<u8>>,
    pub libraries: Vec<Vec<u8>>,
    pub run_paths: Vec<Vec<u8>>,
    /// The multiarch directory name of the ELF machine (`x86_64-linux-gnu`).
    pub triplet: Option<&'static str>,
}

/// Reads a `#!` line or an ELF file's `PT_INTERP` and `DT_NEEDED`/`DT_RUNPATH` from `r`.
pub(crate) fn program_needs<R: Read + Seek>(mut r: R) -> Option<Needs> {
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]).ok()? {
            0 => break,
            k => n += k,
        }
    }
    if let Some(rest) = head[..n].strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next()?;
        let interp = line
            .split(|b| *b == b' ' || *b == b'\t')
            .find(|w| !w.is_empty())?
            .to_vec();
        return Some(Needs {
            interpreter: Some(interp),
            ..Needs::default()
        });
    }
    r.seek(SeekFrom::Start(0)).ok()?;
    let data = ReadCache::new(r);
    match object::FileKind::parse(&data).ok()? {
        object::FileKind::Elf64 => elf_needs::<elf::FileHeader64<object::Endianness>, _>(&data),
        object::FileKind::Elf32 => elf_needs::<elf::FileHeader32<object::Endianness>, _>(&data),
        _ => None,
    }
}

fn elf_needs<'d, H: FileHeader<Endian = object::Endianness>, R: object::ReadRef<'d>>(
    data: R,
) -> Option<Needs> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let phdrs = header.program_headers(endian, data).ok()?;
    let mut needs = Needs {
        triplet: triplet(header.e_machine(endian)),
        ..Needs::default()
    };
    let mut loads = Vec::new();
    let mut dynamic = None;
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_INTERP => {
                needs.interpreter = ph
                    .interpreter(endian, data)
                    .ok()
                    .flatten()
                    .map(<[u8]>::to_vec)
            }
            elf::PT_DYNAMIC => dynamic = ph.dynamic(endian, data).ok().flatten(),
            elf::PT_LOAD => loads.push((
                ph.p_vaddr(endian).into(),
                ph.p_offset(endian).into(),
                ph.p_filesz(endian).into(),
            )),
            _ => {}
        }
    }
    let Some(dynamic) = dynamic else {
        return Some(needs);
    };
    let (mut strtab, mut strsz) = (None, 0u64);
    let (mut needed, mut paths) = (Vec::new(), Vec::new());
    for d in dynamic {
        let val: u64 = d.d_val(endian).into();
        match d.d_tag(endian).into() as u32 {
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = val,
            elf::DT_NEEDED => needed.push(val),
            elf::DT_RUNPATH | elf::DT_RPATH => paths.push(val),
            _ => {}
        }
    }
    // DT_STRTAB is an address: the file offset is found through the PT_LOAD holding it.
    let strtab = strtab.and_then(|addr| {
        loads
            .iter()
            .find(|(va, _, sz): &&(u64, u64, u64)| addr >= *va && addr < va + sz)
            .map(|(va, off, _)| addr - va + off)
    })?;
    let string = |at: u64| -> Option<Vec<u8>> {
        let start = strtab.checked_add(at)?;
        let end = strtab.checked_add(strsz)?;
        data.read_bytes_at_until(start..end, 0)
            .ok()
            .map(<[u8]>::to_vec)
    };
    needs.libraries = needed.into_iter().filter_map(string).collect();
    needs.run_paths = paths
        .into_iter()
        .filter_map(string)
        .flat_map(|p| {
            p.split(|b| *b == b':')
                .filter(|s| !s.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    Some(needs)
}

/// Debian's multiarch directory names by ELF machine.
fn triplet(machine: u16) -> Option<&'static str> {
    Some(match machine {
        elf::EM_X86_64 => "x86_64-linux-gnu",
        elf::EM_AARCH64 => "aarch64-linux-gnu",
        elf::EM_386 => "i386-linux-gnu",
        elf::EM_ARM => "arm-linux-gnueabihf",
        elf::EM_PPC64 => "powerpc64le-linux-gnu",
        elf::EM_S390 => "s390x-linux-gnu",
        elf::EM_RISCV => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// Where the dynamic loader looks for `name` needed by a file in `origin` (directories
/// relative to the image root): the file's run paths (`$ORIGIN` expanded), then the
/// multiarch and usual library directories.
fn library_candidates(name: &[u8], origin: &[u8], needs: &Needs) -> Vec<Vec<u8>> {
    if name.contains(&b'/') {
        return vec![name.to_vec()];
    }
    let mut dirs: Vec<Vec<u8>> = needs
        .run_paths
        .iter()
        .map(|p| {
            let s = String::from_utf8_lossy(p);
            let o = String::from_utf8_lossy(origin);
            s.replace("${ORIGIN}", &o)
                .replace("$ORIGIN", &o)
                .into_bytes()
        })
        .collect();
    if let Some(t) = needs.triplet {
        dirs.push(format!("lib/{t}").into_bytes());
        dirs.push(format!("usr/lib/{t}").into_bytes());
    }
    for d in ["lib64", "usr/lib64", "lib", "usr/lib", "usr/local/lib"] {
        dirs.push(d.as_bytes().to_vec());
    }
    dirs.into_iter()
        .map(|mut d| {
            d.push(b'/');
            d.extend_from_slice(name);
            d
        })
        .collect()
}

impl crate::store::Store {
    /// Fetches, in the background, `argv0` (looked up over `path`) of the image whose
    /// layers are `indexes` and what it loads, as the pull does for the config's default
    /// program: for a container that runs another program, started as its image is
    /// mounted. A no-op when no layer is lazy or the daemon's program prefetch is off.
    pub fn prefetch_program(&self, indexes: &[LayerIndex], argv0: &str, path: &str) {
        if self.inner.opts.prefetch_program && any_lazy(&self.inner.cache, indexes) {
            spawn_prefetch(
                &self.inner.cache,
                indexes.to_vec(),
                argv0.to_string(),
                path.to_string(),
            );
        }
    }
}

fn any_lazy(cache: &ChunkCache, indexes: &[LayerIndex]) -> bool {
    indexes.iter().any(|i| cache.is_registered(&i.digest))
}

/// [`prefetch_program`] on the blocking pool (nothing outside a tokio runtime).
fn spawn_prefetch(cache: &Arc<ChunkCache>, indexes: Vec<LayerIndex>, argv0: String, path: String) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let cache = cache.clone();
        rt.spawn_blocking(move || prefetch_program(&cache, &indexes, &argv0, &path));
    }
}

/// One pull's program prefetch: fires once the config and the index of every layer are
/// known (lazy layers report theirs as soon as their TOC is parsed; the rest at the end,
/// through [`all_layers`](Self::all_layers)), on the blocking pool, and only when a layer is
/// lazy.
pub(crate) struct ProgramGate {
    cache: Arc<ChunkCache>,
    state: std::sync::Mutex<GateState>,
}

struct GateState {
    layers: Vec<Option<LayerIndex>>,
    program: Option<(String, String)>,
    fired: bool,
}

impl ProgramGate {
    pub(crate) fn new(layers: usize, cache: Arc<ChunkCache>) -> ProgramGate {
        ProgramGate {
            cache,
            state: std::sync::Mutex::new(GateState {
                layers: vec![None; layers],
                program: None,
                fired: false,
            }),
        }
    }

    /// The image config arrived: its default program (none: nothing to fetch).
    pub(crate) fn config(&self, config: &oci_spec::image::ImageConfiguration) {
        let mut st = self.state.lock().unwrap();
        match default_program(config) {
            Some(p) => st.program = Some(p),
            None => st.fired = true,
        }
        self.fire_if_ready(&mut st);
    }

    /// Layer `i`'s index is known.
    pub(crate) fn layer(&self, i: usize, index: &LayerIndex) {
        let mut st = self.state.lock().unwrap();
        if st.fired || st.layers.get(i).is_none_or(Option::is_some) {
            return;
        }
        st.layers[i] = Some(index.clone());
        self.fire_if_ready(&mut st);
    }

    /// Every layer's index (bottom first), for layers that did not report theirs early.
    pub(crate) fn all_layers(&self, indexes: &[LayerIndex]) {
        let mut st = self.state.lock().unwrap();
        if st.fired || indexes.len() != st.layers.len() {
            return;
        }
        for (slot, index) in st.layers.iter_mut().zip(indexes) {
            if slot.is_none() {
                *slot = Some(index.clone());
            }
        }
        self.fire_if_ready(&mut st);
    }

    fn fire_if_ready(&self, st: &mut GateState) {
        if st.fired || st.layers.iter().any(Option::is_none) {
            return;
        }
        let Some((argv0, path)) = st.program.clone() else {
            return;
        };
        st.fired = true;
        let indexes: Vec<LayerIndex> = st.layers.iter_mut().filter_map(Option::take).collect();
        if any_lazy(&self.cache, &indexes) {
            spawn_prefetch(&self.cache, indexes, argv0, path);
        }
    }
}

/// Fetches the program `argv0` of the image whose layers are `indexes` and what it loads
/// (see the module docs), blocking until those files' first chunks are in; the rest of
/// each file follows through read-ahead. Returns how many files it asked for.
pub(crate) fn prefetch_program(
    cache: &Arc<ChunkCache>,
    indexes: &[LayerIndex],
    argv0: &str,
    path_var: &str,
) -> usize {
    let t0 = std::time::Instant::now();
    let files = ImageFiles::new(indexes);
    let Some(first) = files.find_program(argv0, path_var) else {
        tracing::debug!(program = argv0, "program prefetch: not found in the image");
        return 0;
    };
    let mut seen: HashSet<*const FileEntry> = HashSet::new();
    let mut level: Vec<(&str, &FileEntry)> = vec![first];
    let mut asked = 0;
    for depth in 0..=MAX_DEPTH {
        let mut next = Vec::new();
        // One thread per file: their fetches go out at once.
        let found: Vec<(Vec<u8>, Option<Needs>)> = std::thread::scope(|s| {
            let handles: Vec<_> = level
                .iter()
                .filter(|(_, e)| seen.insert(*e as *const FileEntry))
                .take(MAX_FILES.saturating_sub(asked))
                .map(|&(layer, e)| {
                    s.spawn(move || {
                        let lazy = matches!(
                            e.chunks.first().map(|c| &c.location),
                            Some(ChunkLocation::Compressed { .. })
                        );
                        if lazy {
                            if let Err(err) = cache.prefetch_file(layer, &e.chunks) {
                                tracing::debug!(path = %e.path, error = %err, "program prefetch failed");
                                return (e.path.as_bytes().to_vec(), None);
                            }
                        }
                        let needs = lazy
                            .then(|| {
                                program_needs(CachedFile {
                                    cache,
                                    layer,
                                    chunks: &e.chunks,
                                    size: e.size,
                                    pos: 0,
                                })
                            })
                            .flatten();
                        (e.path.as_bytes().to_vec(), needs)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        asked += found.len();
        for (path, needs) in found {
            let Some(needs) = needs else { continue };
            let origin = match path.iter().rposition(|b| *b == b'/') {
                Some(i) => path[..i].to_vec(),
                None => Vec::new(),
            };
            if let Some(interp) = &needs.interpreter {
                next.extend(files.resolve(interp));
            }
            if depth < MAX_DEPTH {
                for lib in &needs.libraries {
                    let found = library_candidates(lib, &origin, &needs)
                        .iter()
                        .find_map(|c| files.resolve(c));
                    next.extend(found);
                }
            }
        }
        if next.is_empty() || asked >= MAX_FILES {
            break;
        }
        level = next;
    }
    tracing::info!(
        program = argv0,
        files = asked,
        ms = t0.elapsed().as_millis() as u64,
        "program prefetch: fetched the image's default program and what it loads"
    );
    asked
}

#[cfg(test)]
#[path = "program_prefetch_tests.rs"]
mod tests;
