//! The container log in Docker's json-file format: one JSON object per line,
//! `{"log":"<text>","stream":"stdout|stderr","time":"<RFC3339Nano>"}`. The shim writes it;
//! [`LogReader`] reads and follows it for `logs -f --tail N -t --since`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::paths::ContainerPaths;
use crate::state::{StateFile, Status};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of output (including its `\n`, if it had one) as json-file stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub log: String,
    pub stream: LogStream,
    pub time: DateTime<Utc>,
}

impl LogEntry {
    /// The entry as one json-file line (with `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            log: &'a str,
            stream: LogStream,
            time: String,
        }
        let mut v = serde_json::to_vec(&Wire {
            log: &self.log,
            stream: self.stream,
            time: self.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
        })
        .unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Longest line kept together; longer output is logged in pieces, like Docker (16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// Splits a stream's bytes into json-file entries and appends them to the log.
pub(crate) struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub(crate) fn open(path: &Path) -> Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RuntimeError::io("open log", path, e))?;
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Logs `data` from `stream`; complete lines now, a trailing partial line later.
    pub(crate) fn write(&mut self, stream: LogStream, data: &[u8]) {
        let idx = stream as usize;
        self.partial[idx].extend_from_slice(data);
        let mut out = Vec::new();
        let now = Utc::now();
        loop {
            let buf = &mut self.partial[idx];
            let cut = match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i < MAX_LINE => i + 1,
                _ if buf.len() >= MAX_LINE => MAX_LINE,
                _ => break,
            };
            let line: Vec<u8> = buf.drain(..cut).collect();
            out.extend(entry(stream, &line, now).to_line());
        }
        self.append(&out);
    }

    /// Logs whatever partial lines remain (at end of output).
    pub(crate) fn flush(&mut self) {
        let now = Utc::now();
        let mut out = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let buf = std::mem::take(&mut self.partial[stream as usize]);
            if !buf.is_empty() {
                out.extend(entry(stream, &buf, now).to_line());
            }
        }
        self.append(&out);
    }

    fn append(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(out) {
            tracing::warn!("container log write failed: {e}");
        }
    }
}

fn entry(stream: LogStream, bytes: &[u8], time: DateTime<Utc>) -> LogEntry {
    LogEntry {
        log: String::from_utf8_lossy(bytes).into_owned(),
        stream,
        time,
    }
}

/// Which part of the log to read.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N entries (before following).
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Keep returning new entries until the container has exited.
    pub follow: bool,
}

/// Iterates a container's log entries; with `follow`, blocks for new output and ends once the
/// container has exited and everything it wrote was returned.
pub struct LogReader {
    dir: PathBuf,
    reader: BufReader<File>,
    partial: Vec<u8>,
    pending: VecDeque<LogEntry>,
    opts: LogOptions,
}

impl LogReader {
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogReader> {
        let path = ContainerPaths::new(dir).log();
        let file = File::open(&path).map_err(|e| RuntimeError::io("open log", &path, e))?;
        let mut r = LogReader {
            dir: dir.to_path_buf(),
            reader: BufReader::new(file),
            partial: Vec::new(),
            pending: VecDeque::new(),
            opts,
        };
        let mut initial = VecDeque::new();
        while let Some(e) = r.read_entry()? {
            if r.keep(&e) {
                initial.push_back(e);
                if let Some(t) = r.opts.tail {
                    while initial.len() > t {
                        initial.pop_front();
                    }
                }
            }
        }
        r.pending = initial;
        Ok(r)
    }

    fn keep(&self, e: &LogEntry) -> bool {
        self.opts.since.is_none_or(|s| e.time >= s)
    }

    /// The next complete entry in the file, if one is there now.
    fn read_entry(&mut self) -> Result<Option<LogEntry>> {
        let n = self
            .reader
            .read_until(b'\n', &mut self.partial)
            .map_err(|e| RuntimeError::io("read log", &self.dir, e))?;
        if n == 0 || !self.partial.ends_with(b"\n") {
            // Nothing, or a line the shim is still writing: keep it for the next call.
            return Ok(None);
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_slice::<LogEntry>(&line)
            .map(Some)
            .map_err(|e| RuntimeError::Json {
                path: ContainerPaths::new(&self.dir).log(),
                source: e,
            })
    }

    fn exited(&self) -> bool {
        StateFile::load(&self.dir)
            .map(|s| s.effective().status == Status::Exited)
            .unwrap_or(true)
    }
}

impl Iterator for LogReader {
    type Item = Result<LogEntry>;

    fn next(&mut self) -> Option<Result<LogEntry>> {
        if let Some(e) = self.pending.pop_front() {
            return Some(Ok(e));
        }
        if !self.opts.follow {
            return None;
        }
        loop {
            // Check for exit before reading, so output written just before exit is not lost.
            let exited = self.exited();
            match self.read_entry() {
                Ok(Some(e)) if self.keep(&e) => return Some(Ok(e)),
                Ok(Some(_)) => continue,
                Ok(None) if exited => return None,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<LogEntry> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_lines_keeps_partials_and_caps_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(LogStream::Stdout, b"hello\nwor");
        w.write(LogStream::Stderr, b"oops\n");
        w.write(LogStream::Stdout, b"ld\n\"q\"\xff");
        w.write(LogStream::Stdout, &vec![b'x'; MAX_LINE + 5]);
        w.flush();
        let got: Vec<(String, LogStream)> =
            entries(&p).into_iter().map(|e| (e.log, e.stream)).collect();
        assert_eq!(got[0], ("hello\n".into(), LogStream::Stdout));
        assert_eq!(got[1], ("oops\n".into(), LogStream::Stderr));
        assert_eq!(got[2], ("world\n".into(), LogStream::Stdout));
        assert_eq!(got[3].0.len(), MAX_LINE + 2); // "q" \u{fffd} then x... cut at 16 KiB
        assert!(got[3].0.starts_with("\"q\"\u{fffd}"));
        assert_eq!(got[4].0, "x".repeat(MAX_LINE + 5 - (MAX_LINE - 4)));
        let raw = std::fs::read_to_string(&p).unwrap();
        assert!(raw.starts_with("{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\""));
    }
}
