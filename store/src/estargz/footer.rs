//! The eStargz footer: an empty gzip member whose extra field carries the TOC's offset, the
//! last bytes of the blob. 51 bytes (eStargz: subfield `SG`, `%016xSTARGZ`) or 47 bytes
//! (legacy stargz: the extra field is `%016xSTARGZ` itself). Layout as in
//! stargz-snapshotter's `estargz/gzip.go` (`gzipFooterBytes`, `ParseFooter`).

use crate::{Result, StoreError};

/// Size of the eStargz footer.
pub const FOOTER_SIZE: u64 = 51;
/// Size of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: u64 = 47;

/// Which footer a blob ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterKind {
    Estargz,
    LegacyStargz,
}

impl FooterKind {
    pub fn size(self) -> u64 {
        match self {
            FooterKind::Estargz => FOOTER_SIZE,
            FooterKind::LegacyStargz => LEGACY_FOOTER_SIZE,
        }
    }
}

/// The 51-byte footer pointing at a TOC member starting at `toc_offset`.
pub fn footer_bytes(toc_offset: u64) -> Vec<u8> {
    let subfield = format!("{toc_offset:016x}STARGZ");
    let mut extra = vec![b'S', b'G'];
    extra.extend_from_slice(&(subfield.len() as u16).to_le_bytes());
    extra.extend_from_slice(subfield.as_bytes());
    // gzip header: ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=unknown.
    let mut buf = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255];
    buf.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    buf.extend_from_slice(&extra);
    // One final stored block of length 0, then CRC32 = 0 and ISIZE = 0.
    buf.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    buf.extend_from_slice(&[0; 8]);
    debug_assert_eq!(buf.len() as u64, FOOTER_SIZE);
    buf
}

fn bad(layer: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidToc {
        layer: layer.to_string(),
        entry: "footer".to_string(),
        reason: reason.into(),
    }
}

/// The TOC offset of `footer` read as `kind` (exactly `kind.size()` bytes), or why not.
fn parse_as(footer: &[u8], kind: FooterKind) -> std::result::Result<u64, String> {
    if footer.len() as u64 != kind.size() {
        return Err(format!("{} bytes, not {}", footer.len(), kind.size()));
    }
    if footer[..3] != [0x1f, 0x8b, 8] || footer[3] & 4 == 0 {
        return Err("not a gzip header with an extra field".into());
    }
    let xlen = u16::from_le_bytes([footer[10], footer[11]]) as usize;
    let extra = footer
        .get(12..12 + xlen)
        .ok_or("extra field longer than the footer")?;
    let payload = match kind {
        FooterKind::Estargz => {
            if xlen != 26 || extra[..2] != *b"SG" || extra[2..4] != 22u16.to_le_bytes() {
                return Err("no SG subfield of 22 bytes".into());
            }
            &extra[4..]
        }
        FooterKind::LegacyStargz => {
            if xlen != 22 {
                return Err(format!("extra field of {xlen} bytes, not 22"));
            }
            extra
        }
    };
    if &payload[16..] != b"STARGZ" {
        return Err("no STARGZ magic".into());
    }
    let hex = std::str::from_utf8(&payload[..16]).map_err(|_| "offset is not hex")?;
    u64::from_str_radix(hex, 16).map_err(|_| format!("offset {hex:?} is not hex"))
}

/// Reads the footer at the end of `tail` (the blob's last bytes; at least
/// [`LEGACY_FOOTER_SIZE`]) of a blob of `blob_size` bytes: which kind it is and the TOC
/// member's offset, which must lie before the footer.
pub fn parse_footer(layer: &str, tail: &[u8], blob_size: u64) -> Result<(FooterKind, u64)> {
    let mut reasons = Vec::new();
    for kind in [FooterKind::Estargz, FooterKind::LegacyStargz] {
        let n = kind.size() as usize;
        if tail.len() < n {
            reasons.push(format!("{kind:?}: blob too small"));
            continue;
        }
        match parse_as(&tail[tail.len() - n..], kind) {
            Ok(offset) => {
                if offset >= blob_size.saturating_sub(kind.size()) {
                    return Err(bad(
                        layer,
                        format!(
                            "TOC offset {offset} is not before the footer (blob of {blob_size} bytes)"
                        ),
                    ));
                }
                return Ok((kind, offset));
            }
            Err(r) => reasons.push(format!("{kind:?}: {r}")),
        }
    }
    Err(bad(
        layer,
        format!("not an eStargz footer ({})", reasons.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn footer_round_trips_and_is_an_empty_gzip_member() {
        let f = footer_bytes(0x1234_5678);
        assert_eq!(f.len(), 51);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(
            parse_footer("l", &f, 0x2000_0000).unwrap(),
            (FooterKind::Estargz, 0x1234_5678)
        );
    }

    #[test]
    fn legacy_footer_is_read() {
        let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, 22, 0];
        f.extend_from_slice(format!("{:016x}STARGZ", 77).as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.len(), 47);
        assert_eq!(
            parse_footer("l", &f, 1000).unwrap(),
            (FooterKind::LegacyStargz, 77)
        );
    }

    #[test]
    fn lying_footers_refused() {
        // Offset at or past the footer.
        let f = footer_bytes(1000);
        assert!(parse_footer("l", &f, 1000)
            .unwrap_err()
            .to_string()
            .contains("not before the footer"));
        // Not hex.
        let mut g = footer_bytes(5);
        g[16] = b'z';
        assert!(parse_footer("l", &g, 1000).is_err());
        // Not a footer at all.
        assert!(parse_footer("l", &[0u8; 64], 1000)
            .unwrap_err()
            .to_string()
            .contains("not an eStargz footer"));
        assert!(parse_footer("l", &[0u8; 3], 1000).is_err());
    }
}
