//! Random access into an unmodified gzip stream (zlib's `examples/zran.c` technique, the
//! one SOCI's zTOC checkpoints record): while inflating once, remember at deflate block
//! boundaries, every `span_size` uncompressed bytes, where the block starts in the
//! compressed stream (byte offset and the bits of the byte before it that belong to it) and
//! the 32 KiB of output before it. Any span can then be inflated alone from its compressed
//! bytes: `inflatePrime` feeds the leftover bits, `inflateSetDictionary` the window. flate2
//! does not expose either, so this talks to zlib through `libz-sys`.
//!
//! Building block of the SOCI design in docs/formats.md; not wired into pulls yet.
//! Single-member gzip only (what docker and most builders write); a stream that continues
//! after its first member is refused.

use std::os::raw::{c_int, c_uint, c_void};

use libz_sys as z;

/// The deflate window: what a checkpoint must carry to resume inflating.
pub const WINDOW: usize = 32 << 10;

/// Where inflating can resume.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset in the compressed stream of the first full byte of the block.
    pub compressed_offset: u64,
    /// Offset in the uncompressed stream where the block's output starts.
    pub uncompressed_offset: u64,
    /// Bits (0..=7) of the byte before `compressed_offset` that belong to the block.
    pub bits: u8,
    /// The [`WINDOW`] bytes of output before `uncompressed_offset` (zero-padded at the
    /// start of the stream).
    pub window: Vec<u8>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("compressed_offset", &self.compressed_offset)
            .field("uncompressed_offset", &self.uncompressed_offset)
            .field("bits", &self.bits)
            .finish()
    }
}

/// The checkpoints of one gzip stream.
#[derive(Debug, Clone)]
pub struct SpanIndex {
    /// Least uncompressed bytes between checkpoints.
    pub span_size: u64,
    pub checkpoints: Vec<Checkpoint>,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
}

unsafe extern "C" fn zalloc(_: *mut c_void, items: c_uint, size: c_uint) -> *mut c_void {
    // SAFETY: plain C allocation, freed by `zfree`.
    unsafe { libc::calloc(items as usize, size as usize) }
}

unsafe extern "C" fn zfree(_: *mut c_void, p: *mut c_void) {
    // SAFETY: `p` came from `zalloc`.
    unsafe { libc::free(p) }
}

/// An inflate stream, ended when dropped. Boxed: zlib keeps a pointer to it.
struct Inflate(Box<z::z_stream>);

impl Inflate {
    /// `window_bits` as zlib's `inflateInit2` takes them (47: gzip or zlib header; -15: raw).
    fn new(window_bits: c_int) -> Result<Inflate, String> {
        let mut s = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: `s` is a valid, boxed (never moved) z_stream with allocators set.
        let ret = unsafe {
            z::inflateInit2_(
                s.as_mut(),
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if ret != z::Z_OK {
            return Err(format!("inflateInit2: {ret}"));
        }
        Ok(Inflate(s))
    }

    fn error(&self, what: &str, ret: c_int) -> String {
        let msg = if self.0.msg.is_null() {
            String::new()
        } else {
            // SAFETY: zlib's messages are static NUL-terminated strings.
            unsafe { std::ffi::CStr::from_ptr(self.0.msg) }
                .to_string_lossy()
                .into_owned()
        };
        format!("{what}: zlib error {ret} {msg}")
    }
}

impl Drop for Inflate {
    fn drop(&mut self) {
        // SAFETY: initialized by inflateInit2_ in `new`.
        unsafe { z::inflateEnd(self.0.as_mut()) };
    }
}

/// Inflates the gzip stream `gz` once and records a checkpoint at its first deflate block
/// and then at the first block boundary at least `span_size` bytes of output after the
/// previous checkpoint.
pub fn build_index(gz: &[u8], span_size: u64) -> Result<SpanIndex, String> {
    let mut strm = Inflate::new(47)?;
    let mut window = vec![0u8; WINDOW];
    let mut checkpoints = Vec::new();
    let (mut totin, mut totout, mut last) = (0u64, 0u64, 0u64);
    let mut input = gz;
    loop {
        // Feed at most 64 KiB at a time (avail_in is 32-bit).
        if strm.0.avail_in == 0 {
            if input.is_empty() {
                return Err("gzip stream ends early".into());
            }
            let n = input.len().min(64 << 10);
            strm.0.next_in = input.as_ptr() as *mut u8;
            strm.0.avail_in = n as c_uint;
            input = &input[n..];
        }
        if strm.0.avail_out == 0 {
            strm.0.avail_out = WINDOW as c_uint;
            strm.0.next_out = window.as_mut_ptr();
        }
        totin += u64::from(strm.0.avail_in);
        totout += u64::from(strm.0.avail_out);
        // SAFETY: next_in/next_out point into `gz` and `window`, which outlive the call.
        let ret = unsafe { z::inflate(strm.0.as_mut(), z::Z_BLOCK) };
        totin -= u64::from(strm.0.avail_in);
        totout -= u64::from(strm.0.avail_out);
        match ret {
            z::Z_OK => {}
            z::Z_STREAM_END => break,
            z::Z_BUF_ERROR if strm.0.avail_in == 0 => continue,
            r => return Err(strm.error("inflate", r)),
        }
        // data_type bit 7: inflate stopped at a block boundary; bit 6: after the last block.
        // A boundary before a block is a place to resume.
        let dt = strm.0.data_type;
        if dt & 128 != 0 && dt & 64 == 0 && (totout == 0 || totout - last >= span_size) {
            let left = strm.0.avail_out as usize;
            let mut w = Vec::with_capacity(WINDOW);
            // The circular window's oldest bytes first.
            w.extend_from_slice(&window[WINDOW - left..]);
            w.extend_from_slice(&window[..WINDOW - left]);
            checkpoints.push(Checkpoint {
                compressed_offset: totin,
                uncompressed_offset: totout,
                bits: (dt & 7) as u8,
                window: w,
            });
            last = totout;
        }
    }
    let consumed = totin as usize;
    if gz[consumed..].iter().any(|&b| b != 0) {
        return Err(format!(
            "gzip stream continues after its first member (at byte {consumed})"
        ));
    }
    Ok(SpanIndex {
        span_size,
        checkpoints,
        compressed_size: gz.len() as u64,
        uncompressed_size: totout,
    })
}

impl SpanIndex {
    /// The compressed byte range span `i` is inflated from: from the byte holding its
    /// leftover bits to the next checkpoint's first full byte (or the stream's end).
    pub fn span_range(&self, i: usize) -> std::ops::Range<u64> {
        let c = &self.checkpoints[i];
        let start = c.compressed_offset - u64::from(c.bits > 0);
        let end = self
            .checkpoints
            .get(i + 1)
            .map(|n| n.compressed_offset)
            .unwrap_or(self.compressed_size);
        start..end
    }

    /// The span holding uncompressed offset `off`.
    pub fn span_of(&self, off: u64) -> usize {
        self.checkpoints
            .partition_point(|c| c.uncompressed_offset <= off)
            .saturating_sub(1)
    }

    /// Uncompressed bytes of span `i`.
    pub fn span_len(&self, i: usize) -> u64 {
        let end = self
            .checkpoints
            .get(i + 1)
            .map(|n| n.uncompressed_offset)
            .unwrap_or(self.uncompressed_size);
        end - self.checkpoints[i].uncompressed_offset
    }

    /// Inflates span `i` from `compressed`, exactly the bytes of [`Self::span_range`].
    pub fn inflate_span(&self, i: usize, compressed: &[u8]) -> Result<Vec<u8>, String> {
        let c = &self.checkpoints[i];
        let len = self.span_len(i) as usize;
        let mut strm = Inflate::new(-15)?;
        let mut input = compressed;
        if c.bits > 0 {
            let (&first, rest) = input.split_first().ok_or("empty span")?;
            let value = c_int::from(first >> (8 - c.bits));
            // SAFETY: initialized stream.
            let ret = unsafe { z::inflatePrime(strm.0.as_mut(), c_int::from(c.bits), value) };
            if ret != z::Z_OK {
                return Err(strm.error("inflatePrime", ret));
            }
            input = rest;
        }
        if c.window.len() != WINDOW {
            return Err(format!("checkpoint window of {} bytes", c.window.len()));
        }
        // SAFETY: the window is WINDOW bytes, read during the call only.
        let ret = unsafe {
            z::inflateSetDictionary(strm.0.as_mut(), c.window.as_ptr(), WINDOW as c_uint)
        };
        if ret != z::Z_OK {
            return Err(strm.error("inflateSetDictionary", ret));
        }
        let mut out = vec![0u8; len];
        strm.0.next_in = input.as_ptr() as *mut u8;
        strm.0.avail_in = c_uint::try_from(input.len()).map_err(|_| "span too large")?;
        strm.0.next_out = out.as_mut_ptr();
        strm.0.avail_out = c_uint::try_from(len).map_err(|_| "span too large")?;
        while strm.0.avail_out > 0 {
            // SAFETY: next_in/next_out point into `input` and `out`, alive across the call.
            let ret = unsafe { z::inflate(strm.0.as_mut(), z::Z_NO_FLUSH) };
            match ret {
                z::Z_OK => {}
                z::Z_STREAM_END => break,
                z::Z_BUF_ERROR => break,
                r => return Err(strm.error("inflate", r)),
            }
        }
        if strm.0.avail_out != 0 {
            return Err(format!(
                "span {i} inflated to {} of {len} bytes",
                len - strm.0.avail_out as usize
            ));
        }
        // The next checkpoint's window is this span's last output: a window (or offset)
        // that lies shows here, where it would otherwise inflate to other bytes silently.
        if let Some(next) = self.checkpoints.get(i + 1) {
            let k = len.min(WINDOW);
            if next.window.len() != WINDOW || out[len - k..] != next.window[WINDOW - k..] {
                return Err(format!(
                    "span {i} does not end in checkpoint {}'s window",
                    i + 1
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivially: text-like with a drifting pattern.
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word = (x >> 16) % 500;
            v.extend_from_slice(format!("word{word} ").as_bytes());
            if x.is_multiple_of(7) {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_span_inflates_alone_to_its_bytes() {
        let data = sample(3 << 20);
        let gz = gzip(&data);
        let index = build_index(&gz, 256 << 10).unwrap();
        assert_eq!(index.uncompressed_size, data.len() as u64);
        assert!(index.checkpoints.len() >= 8, "{:?}", index.checkpoints);
        assert_eq!(index.checkpoints[0].uncompressed_offset, 0);
        let mut rebuilt = Vec::new();
        for i in 0..index.checkpoints.len() {
            let r = index.span_range(i);
            let span = index
                .inflate_span(i, &gz[r.start as usize..r.end as usize])
                .unwrap();
            let lo = index.checkpoints[i].uncompressed_offset as usize;
            assert!(span == data[lo..lo + span.len()], "span {i}");
            rebuilt.extend_from_slice(&span);
        }
        assert!(rebuilt == data);
        // Some checkpoint falls inside a byte (bits > 0): inflatePrime is exercised.
        assert!(index.checkpoints.iter().any(|c| c.bits > 0));
    }

    #[test]
    fn bad_input_is_an_error_not_wrong_bytes() {
        let data = sample(1 << 20);
        let gz = gzip(&data);
        let index = build_index(&gz, 128 << 10).unwrap();
        let i = 2;
        let r = index.span_range(i);
        let mut bad = gz[r.start as usize..r.end as usize].to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        // A flipped byte either fails to inflate or yields other bytes, which the span
        // digest (SOCI's span_digests, over the compressed range) catches first.
        match index.inflate_span(i, &bad) {
            Err(_) => {}
            Ok(out) => assert!(
                out != data[index.checkpoints[i].uncompressed_offset as usize..][..out.len()]
            ),
        }
        assert!(index.inflate_span(i, &bad[..10]).is_err());
        // A window that is not the output before its checkpoint shows when the span before
        // it is inflated (it would inflate its own span to other bytes silently).
        let mut lying = index.clone();
        lying.checkpoints[i + 1].window[WINDOW - 1] ^= 1;
        let good = &gz[r.start as usize..r.end as usize];
        let err = lying.inflate_span(i, good).unwrap_err();
        assert!(
            err.contains("does not end in checkpoint 3's window"),
            "{err}"
        );
        assert!(build_index(&gz[..gz.len() / 2], 1 << 20).is_err());
        assert!(build_index(b"not gzip at all", 1 << 20).is_err());
        let mut two = gz.clone();
        two.extend_from_slice(&gzip(b"second member"));
        assert!(build_index(&two, 1 << 20)
            .unwrap_err()
            .contains("first member"));
    }
}
