//! tar-split records (vbatts/tar-split's JSON-lines "storage" format), which let
//! containers/storage rebuild the exact tar from files on disk: raw header/padding bytes as
//! `segment` entries (type 2) and each member as a `file` entry (type 1) carrying the
//! CRC-64/ISO of its content.

use base64::Engine;
use serde::Serialize;

const CRC64_ISO_POLY: u64 = 0xD800_0000_0000_0000;

fn crc64_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    for (i, slot) in t.iter_mut().enumerate() {
        let mut crc = i as u64;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CRC64_ISO_POLY
            } else {
                crc >> 1
            };
        }
        *slot = crc;
    }
    t
}

/// CRC-64/ISO as Go's `hash/crc64` computes it, big-endian bytes as its `Sum` returns them.
pub fn crc64_iso(data: &[u8]) -> [u8; 8] {
    let table = crc64_table();
    let mut crc = !0u64;
    for b in data {
        crc = table[((crc as u8) ^ b) as usize] ^ (crc >> 8);
    }
    (!crc).to_be_bytes()
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "type")]
    typ: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_raw: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    payload: Option<String>,
    position: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Builds the JSON-lines tar-split stream, entry by entry.
#[derive(Default)]
pub struct TarSplitWriter {
    out: Vec<u8>,
    position: u64,
}

/// tar-split caps segments it reads from the archive tail at 1 MiB; so do we.
const MAX_SEGMENT: usize = 1 << 20;

impl TarSplitWriter {
    fn push(&mut self, e: Entry) {
        serde_json::to_writer(&mut self.out, &e).expect("serializing to a Vec cannot fail");
        self.out.push(b'\n');
        self.position += 1;
    }

    /// Raw archive bytes (headers, padding, the end-of-archive blocks).
    pub fn segment(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(MAX_SEGMENT) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(piece);
            self.push(Entry {
                typ: 2,
                name: None,
                name_raw: None,
                size: 0,
                payload: Some(b64),
                position: self.position,
            });
        }
    }

    /// One archive member; `content` is its data (empty for non-regular entries).
    pub fn file(&mut self, name: &[u8], size: u64, content: &[u8]) {
        let payload = (size > 0)
            .then(|| base64::engine::general_purpose::STANDARD.encode(crc64_iso(content)));
        let (name, name_raw) = match std::str::from_utf8(name) {
            Ok(s) => (Some(s), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(name)),
            ),
        };
        self.push(Entry {
            typ: 1,
            name,
            name_raw,
            size,
            payload,
            position: self.position,
        });
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_iso_check_value() {
        // The catalogued check value of CRC-64/GO-ISO for "123456789".
        assert_eq!(
            u64::from_be_bytes(crc64_iso(b"123456789")),
            0xb90956c775a41001
        );
    }

    #[test]
    fn json_lines_shape() {
        let mut w = TarSplitWriter::default();
        w.segment(b"hdr");
        w.file(b"a", 3, b"abc");
        w.file(b"d/", 0, b"");
        let s = String::from_utf8(w.finish()).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], r#"{"type":2,"payload":"aGRy","position":0}"#);
        assert!(lines[1].starts_with(r#"{"type":1,"name":"a","size":3,"payload":""#));
        assert_eq!(
            lines[2],
            r#"{"type":1,"name":"d/","payload":null,"position":2}"#
        );
    }
}
