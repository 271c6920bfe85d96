//! The framing spoken on a container's `shim.sock`.
//!
//! Every frame is an 8-byte header — kind (1 byte), 3 zero bytes, payload length (u32 big
//! endian) — and the payload, the same header shape as Docker's multiplexed attach stream
//! (stdout = 1, stderr = 2). A connection starts with one request frame (`Start`, `Attach`,
//! `Resize`, `Wait`); the shim answers `Ok`/`Error`, or for `Attach` streams output and
//! finally `Exit`.

use std::io::{Read, Write};

use crate::error::StepFailure;

/// Largest payload accepted; larger frames mean a confused peer.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Which streams an attach client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Client → shim: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Shim → client: the container's stdout (or the pty's output).
    Stdout(Vec<u8>),
    /// Shim → client: the container's stderr.
    Stderr(Vec<u8>),
    /// Client → shim: close the container's stdin (end of input).
    CloseStdin,
    /// Request: run the created container's command.
    Start,
    /// Request: stream output (and accept stdin) until the container exits.
    Attach(AttachStreams),
    /// Request or, on an attach connection, a message: set the pty size.
    Resize { rows: u16, cols: u16 },
    /// Request: answer with `Exit` when the container has exited.
    Wait,
    /// Shim → client: the container exited with this code.
    Exit(i32),
    /// Shim → client: the request succeeded.
    Ok,
    /// Shim → client: the request failed.
    Error(StepFailure),
}

const K_STDIN: u8 = 0;
const K_STDOUT: u8 = 1;
const K_STDERR: u8 = 2;
const K_CLOSE_STDIN: u8 = 3;
const K_START: u8 = 10;
const K_ATTACH: u8 = 11;
const K_RESIZE: u8 = 12;
const K_WAIT: u8 = 13;
const K_EXIT: u8 = 20;
const K_OK: u8 = 21;
const K_ERROR: u8 = 22;

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Stdin(d) => (K_STDIN, d.clone()),
            Frame::Stdout(d) => (K_STDOUT, d.clone()),
            Frame::Stderr(d) => (K_STDERR, d.clone()),
            Frame::CloseStdin => (K_CLOSE_STDIN, vec![]),
            Frame::Start => (K_START, vec![]),
            Frame::Attach(s) => (
                K_ATTACH,
                vec![s.stdin as u8 | (s.stdout as u8) << 1 | (s.stderr as u8) << 2],
            ),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (K_RESIZE, p)
            }
            Frame::Wait => (K_WAIT, vec![]),
            Frame::Exit(code) => (K_EXIT, code.to_be_bytes().to_vec()),
            Frame::Ok => (K_OK, vec![]),
            Frame::Error(f) => (K_ERROR, serde_json::to_vec(f).unwrap_or_default()),
        };
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses one frame from the front of `buf`: `Ok(None)` if more bytes are needed,
    /// otherwise the frame and how many bytes it used.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("frame of {len} bytes exceeds {MAX_PAYLOAD}"));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let p = &buf[8..8 + len];
        let frame = match buf[0] {
            K_STDIN => Frame::Stdin(p.to_vec()),
            K_STDOUT => Frame::Stdout(p.to_vec()),
            K_STDERR => Frame::Stderr(p.to_vec()),
            K_CLOSE_STDIN => Frame::CloseStdin,
            K_START => Frame::Start,
            K_ATTACH => {
                let b = *p.first().ok_or("empty attach frame")?;
                Frame::Attach(AttachStreams {
                    stdin: b & 1 != 0,
                    stdout: b & 2 != 0,
                    stderr: b & 4 != 0,
                })
            }
            K_RESIZE if len == 4 => Frame::Resize {
                rows: u16::from_be_bytes([p[0], p[1]]),
                cols: u16::from_be_bytes([p[2], p[3]]),
            },
            K_WAIT => Frame::Wait,
            K_EXIT if len == 4 => Frame::Exit(i32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            K_OK => Frame::Ok,
            K_ERROR => {
                Frame::Error(serde_json::from_slice(p).map_err(|e| format!("error frame: {e}"))?)
            }
            k => return Err(format!("unknown frame kind {k} (length {len})")),
        };
        Ok(Some((frame, 8 + len)))
    }

    /// Reads one frame from a blocking stream; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> std::io::Result<Option<Frame>> {
        let mut header = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = r.read(&mut header[got..])?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
            got += n;
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut buf = header.to_vec();
        buf.resize(8 + len, 0);
        r.read_exact(&mut buf[8..])?;
        match Frame::parse(&buf) {
            Ok(Some((f, _))) => Ok(Some(f)),
            Ok(None) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }

    /// Writes the frame to a blocking stream.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_even_when_split() {
        let frames = vec![
            Frame::Stdin(b"abc".to_vec()),
            Frame::Stdout(vec![0; 1000]),
            Frame::Stderr(vec![]),
            Frame::CloseStdin,
            Frame::Start,
            Frame::Attach(AttachStreams {
                stdin: true,
                stdout: false,
                stderr: true,
            }),
            Frame::Resize {
                rows: 50,
                cols: 132,
            },
            Frame::Wait,
            Frame::Exit(-1),
            Frame::Ok,
            Frame::Error(StepFailure::errno("exec", "/x", nix::Error::ENOENT)),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some((f, n)) = Frame::parse(&buf).unwrap() {
                got.push(f);
                buf.drain(..n);
            }
        }
        assert_eq!(got, frames);
        let mut cursor = std::io::Cursor::new(Frame::Exit(137).encode());
        assert_eq!(
            Frame::read_from(&mut cursor).unwrap(),
            Some(Frame::Exit(137))
        );
        assert_eq!(Frame::read_from(&mut cursor).unwrap(), None);
    }

    #[test]
    fn rejects_unknown_and_oversized_frames() {
        assert!(Frame::parse(&[99, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Frame::parse(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
