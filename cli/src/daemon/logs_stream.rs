//! Streaming a container's json-file log as Docker's logs response: multiplexed frames (or
//! raw bytes for TTY containers), optional timestamps, tail, since, until and follow.

use std::path::PathBuf;

use axum::body::Body;
use skiff_runtime::logs::{LogOptions, LogReader, LogStream};

use super::error::DaemonError;
use super::hijack::{frame, StreamKind};

pub struct LogsRequest {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries at or before this time (Docker's `until`); a follow ends there.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn stream(dir: PathBuf, req: LogsRequest, tty: bool) -> Result<Body, DaemonError> {
    let opts = LogOptions {
        tail: req.tail,
        since: req.since,
        // Nothing after a past `until` can come: no need to follow.
        follow: req.follow && req.until.is_none_or(|u| u > chrono::Utc::now()),
    };
    let mut reader = LogReader::open(&dir, opts).map_err(|e| match e {
        skiff_runtime::RuntimeError::LogsNotReadable { .. } => DaemonError::LogsNotReadable,
        e => DaemonError::runtime("reading logs", e),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        for entry in reader.by_ref() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            if req.until.is_some_and(|u| entry.time > u) {
                return;
            }
            let kind = match entry.stream {
                LogStream::Stdout if req.stdout => StreamKind::Stdout,
                LogStream::Stderr if req.stderr => StreamKind::Stderr,
                _ => continue,
            };
            let mut payload = Vec::new();
            if req.timestamps {
                payload.extend_from_slice(
                    entry
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                        .as_bytes(),
                );
                payload.push(b' ');
            }
            payload.extend_from_slice(entry.log.as_bytes());
            let bytes = if tty { payload } else { frame(kind, &payload) };
            if tx.blocking_send(Ok(bytes)).is_err() {
                return; // the client went away
            }
        }
    });
    Ok(Body::from_stream(tokio_stream_from(rx)))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
