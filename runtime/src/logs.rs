//! The container log in Docker's json-file format: one JSON object per line,
//! `{"log":"<text>","stream":"stdout|stderr","time":"<RFC3339Nano>"}`. The shim writes it;
//! [`LogReader`] reads and follows it for `logs -f --tail N -t --since`.
//!
//! Rotation as Docker's json-file driver (`max-size`, `max-file`, `compress`): when a write
//! would take `container.log` past `max-size` it becomes `container.log.1`, the older ones
//! shift to `.2`, `.3`... (all gzipped, `.1.gz`, `.2.gz`..., with `compress`), and at most
//! `max-file` files are kept in all. With
//! `max-file` 1 the log is started afresh. The `local` driver is the same with its own
//! defaults (20 MiB × 5, compressed); `none` writes nothing.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{ContainerConfig, LogConfig, LogDriver};
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
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_file: u32,
    compress: bool,
    partial: [Vec<u8>; 2],
}

/// The path of rotated file `n` (1 = newest), `.gz` when compressed.
fn rotated(path: &Path, n: u32, gz: bool) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}{}", if gz { ".gz" } else { "" }));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| RuntimeError::io("open log", path, e))
}

/// gzips `from` into `to` (tmp + fsync + rename) and removes `from`.
fn gzip_file(from: &Path, to: &Path) -> Result<()> {
    let mut input = File::open(from).map_err(|e| RuntimeError::io("open log", from, e))?;
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let out = File::create(&tmp).map_err(|e| RuntimeError::io("create", &tmp, e))?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut gz).map_err(|e| RuntimeError::io("compress log", from, e))?;
    let out = gz
        .finish()
        .map_err(|e| RuntimeError::io("compress log", &tmp, e))?;
    out.sync_all()
        .map_err(|e| RuntimeError::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| RuntimeError::io("rename", to, e))?;
    std::fs::remove_file(from).map_err(|e| RuntimeError::io("remove", from, e))
}

impl LogWriter {
    /// Appends to the log at `path`, rotating it as `cfg` says. `None` for the `none`
    /// driver (nothing is written).
    pub(crate) fn open(path: &Path, cfg: &LogConfig) -> Result<Option<LogWriter>> {
        if cfg.driver == LogDriver::None {
            return Ok(None);
        }
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Some(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size: cfg.max_size(),
            max_file: cfg.max_file(),
            compress: cfg.compress(),
            partial: [Vec::new(), Vec::new()],
        }))
    }

    /// Shifts the rotated files up by one and starts a fresh log, as Docker's
    /// `loggerutils.LogFile`: the oldest kept file goes, `.N` → `.N+1`, the live file
    /// becomes `.1`, which is then gzipped to `.1.gz` with `compress`.
    fn rotate(&mut self) -> Result<()> {
        let n = self.max_file;
        if n >= 2 {
            let gz = self.compress;
            let _ = std::fs::remove_file(rotated(&self.path, n - 1, gz));
            for i in (2..n).rev() {
                let _ = std::fs::rename(rotated(&self.path, i - 1, gz), rotated(&self.path, i, gz));
            }
            let first = rotated(&self.path, 1, false);
            std::fs::rename(&self.path, &first)
                .map_err(|e| RuntimeError::io("rotate log", &self.path, e))?;
            if gz {
                gzip_file(&first, &rotated(&self.path, 1, true))?;
            }
        } else {
            std::fs::remove_file(&self.path)
                .map_err(|e| RuntimeError::io("rotate log", &self.path, e))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
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
            self.push(&mut out, &entry(stream, &line, now).to_line());
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
                self.push(&mut out, &entry(stream, &buf, now).to_line());
            }
        }
        self.append(&out);
    }

    /// Adds one entry to the batch `out`, first writing the batch and rotating when the
    /// entry would take the file past `max-size`: as Docker, a file exceeds it by at most
    /// one entry (one that is larger than `max-size` on its own).
    fn push(&mut self, out: &mut Vec<u8>, line: &[u8]) {
        if let Some(max) = self.max_size {
            let pending = self.size + out.len() as u64;
            if pending > 0 && pending + line.len() as u64 > max {
                self.append(out);
                out.clear();
                if let Err(e) = self.rotate() {
                    tracing::warn!("container log rotation failed: {e}");
                }
            }
        }
        out.extend_from_slice(line);
    }

    fn append(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        match self.file.write_all(out) {
            Ok(()) => self.size += out.len() as u64,
            Err(e) => tracing::warn!("container log write failed: {e}"),
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
    path: PathBuf,
    /// Inode of the file `reader` reads, to notice rotation while following.
    ino: u64,
    /// Inodes of files already read to their end.
    seen: Vec<u64>,
    reader: BufReader<File>,
    partial: Vec<u8>,
    pending: VecDeque<LogEntry>,
    opts: LogOptions,
}

impl LogReader {
    /// Opens the log of the container in `dir`, rotated files (oldest first) included.
    /// [`RuntimeError::LogsNotReadable`] when its log driver is `none`.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogReader> {
        let paths = ContainerPaths::new(dir);
        let cfg: Option<ContainerConfig> = crate::persist::read_json(&paths.config()).ok();
        if cfg.as_ref().map(|c| c.log.driver) == Some(LogDriver::None) {
            return Err(RuntimeError::LogsNotReadable {
                dir: dir.to_path_buf(),
            });
        }
        let path = paths.log();
        let max_file = cfg.map(|c| c.log.max_file()).unwrap_or(1);
        let mut older = Vec::new();
        for n in (1..max_file).rev() {
            for gz in [true, false] {
                let p = rotated(&path, n, gz);
                let Ok(f) = File::open(&p) else { continue };
                let mut text = Vec::new();
                let read = if gz {
                    flate2::read::GzDecoder::new(f).read_to_end(&mut text)
                } else {
                    BufReader::new(f).read_to_end(&mut text)
                };
                read.map_err(|e| RuntimeError::io("read log", &p, e))?;
                for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let e: LogEntry =
                        serde_json::from_slice(line).map_err(|e| RuntimeError::Json {
                            path: p.clone(),
                            source: e,
                        })?;
                    older.push(e);
                }
                // While `.N` is being compressed both may exist: the finished `.gz` wins.
                break;
            }
        }
        let file = File::open(&path).map_err(|e| RuntimeError::io("open log", &path, e))?;
        let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
        let mut r = LogReader {
            dir: dir.to_path_buf(),
            path,
            ino,
            seen: Vec::new(),
            reader: BufReader::new(file),
            partial: Vec::new(),
            pending: VecDeque::new(),
            opts,
        };
        let mut initial = VecDeque::new();
        let mut older = older.into_iter();
        loop {
            let e = match older.next() {
                Some(e) => e,
                None => match r.read_entry()? {
                    Some(e) => e,
                    None => break,
                },
            };
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
        if n == 0 && self.partial.is_empty() && self.opts.follow {
            // At the end of a file that was rotated away: go on with the next one, which is
            // `.1` if the log rotated again meanwhile (a file we have not read yet).
            if let Ok(m) = std::fs::metadata(&self.path) {
                if m.ino() != self.ino {
                    let newest = rotated(&self.path, 1, false);
                    let next = match std::fs::metadata(&newest) {
                        Ok(r) if r.ino() != self.ino && !self.seen.contains(&r.ino()) => {
                            (newest, r.ino())
                        }
                        _ => (self.path.clone(), m.ino()),
                    };
                    if let Ok(f) = File::open(&next.0) {
                        self.seen.push(self.ino);
                        self.ino = next.1;
                        self.reader = BufReader::new(f);
                        return self.read_entry();
                    }
                }
            }
        }
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
        let mut w = LogWriter::open(&p, &LogConfig::default()).unwrap().unwrap();
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

    #[test]
    fn rotates_like_docker_and_reads_back_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ContainerPaths::new(dir.path());
        let mut cfg =
            ContainerConfig::new("r", dir.path().into(), vec!["/l".into()], vec!["x".into()]);
        cfg.log = LogConfig {
            driver: LogDriver::JsonFile,
            max_size: Some(300),
            max_file: Some(4),
            compress: Some(true),
        };
        crate::persist::write_atomic_with(
            &paths.config(),
            &serde_json::to_vec(&cfg).unwrap(),
            crate::persist::Durability::Volatile,
        )
        .unwrap();
        let mut w = LogWriter::open(&paths.log(), &cfg.log).unwrap().unwrap();
        // Half the lines in one burst (one read from the pipe): still rotated per entry.
        let burst: String = (0..20).map(|i| format!("line {i:02}\n")).collect();
        w.write(LogStream::Stdout, burst.as_bytes());
        for i in 20..40 {
            w.write(LogStream::Stdout, format!("line {i:02}\n").as_bytes());
        }
        let log = paths.log();
        for n in 1..=3 {
            assert!(rotated(&log, n, true).exists(), "{n}.gz");
            assert!(!rotated(&log, n, false).exists(), "{n}");
        }
        assert!(!rotated(&log, 4, true).exists());
        assert!(std::fs::metadata(&log).unwrap().len() <= 300);
        for n in 1..=3 {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(File::open(rotated(&log, n, true)).unwrap())
                .read_to_end(&mut text)
                .unwrap();
            assert!(text.len() <= 300 && text.len() > 150, "{n}: {}", text.len());
        }
        // Each file holds whole entries (~85 bytes each): 3 per file, 4 files, the newest 12.
        let got: Vec<String> = LogReader::open(dir.path(), LogOptions::default())
            .unwrap()
            .map(|e| e.unwrap().log)
            .collect();
        let want: Vec<String> = (40 - got.len()..40)
            .map(|i| format!("line {i:02}\n"))
            .collect();
        assert_eq!(got, want);
        assert!(got.len() >= 9, "{got:?}");

        cfg.log = LogConfig::from_docker("none", &Default::default()).unwrap();
        crate::persist::write_atomic_with(
            &paths.config(),
            &serde_json::to_vec(&cfg).unwrap(),
            crate::persist::Durability::Volatile,
        )
        .unwrap();
        assert!(LogWriter::open(&paths.log(), &cfg.log).unwrap().is_none());
        let e = LogReader::open(dir.path(), LogOptions::default())
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "configured logging driver does not support reading"
        );
    }
}
