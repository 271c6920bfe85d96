//! `logs`: the container's captured output, from the daemon's json-file log (never a rerun).

use anyhow::{bail, Result};
use bollard::container::{LogOutput, LogsOptions};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::args::LogsArgs;

pub async fn logs(docker: &Docker, args: &LogsArgs) -> Result<()> {
    let since = match &args.since {
        Some(s) => parse_since(s)?,
        None => 0,
    };
    let until = match &args.until {
        Some(s) => parse_since(s)?,
        None => 0,
    };
    let mut stream = docker.logs(
        &args.container,
        Some(LogsOptions::<String> {
            follow: args.follow,
            stdout: true,
            stderr: true,
            since,
            until,
            timestamps: args.timestamps,
            tail: args.tail.clone(),
        }),
    );
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    while let Some(item) = stream.next().await {
        match item? {
            LogOutput::StdErr { message } => err.write_all(&message).await?,
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.write_all(&message).await?
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    out.flush().await?;
    err.flush().await?;
    Ok(())
}

/// `--since`: an RFC 3339 time, a unix timestamp, or a duration ago ("42m", "10s", "2h").
pub fn parse_since(s: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = match num.parse() {
        Ok(n) => n,
        Err(_) => bail!("invalid --since {s:?}: use a timestamp or a duration like 10m"),
    };
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid --since {s:?}: use a timestamp or a duration like 10m"),
    };
    Ok(super::format::now() - secs)
}
