//! Pumping an attached container's (or exec's) streams to and from this terminal.

use anyhow::Result;
use bollard::container::LogOutput;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What to do with local stdin.
pub struct Pump {
    pub output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Forward local stdin to the container.
    pub stdin: bool,
}

/// Copies output to stdout/stderr until the stream ends; forwards stdin when asked (closing
/// the container's stdin at local EOF). Returns when the output ends.
pub async fn pump(p: Pump) -> Result<()> {
    let Pump {
        mut output,
        mut input,
        stdin,
    } = p;
    let stdin_task = stdin.then(|| {
        tokio::spawn(async move {
            let mut local = tokio::io::stdin();
            let _ = tokio::io::copy(&mut local, &mut input).await;
            let _ = input.shutdown().await;
        })
    });
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    while let Some(item) = output.next().await {
        match item? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.write_all(&message).await?;
                out.flush().await?;
            }
            LogOutput::StdErr { message } => {
                err.write_all(&message).await?;
                err.flush().await?;
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(())
}
