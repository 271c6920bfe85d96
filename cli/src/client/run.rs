//! `run`, `create`, `start` and `attach`: creating containers and attaching to their streams.

use std::os::fd::AsFd;

use anyhow::{bail, Result};
use bollard::container::{
    AttachContainerOptions, ResizeContainerTtyOptions, StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;

use super::create::{container_config, create_container};
use super::stream::{pump, Pump};
use super::tty::{is_tty, window_size, RawMode};
use crate::args::{AttachArgs, CreateArgs, RunArgs, StartArgs};
use crate::exit::Exit;

pub async fn create(docker: &Docker, args: &CreateArgs) -> Result<()> {
    let config = container_config(&args.opts, false, false).map_err(engine_error)?;
    let id = create_container(docker, &args.opts, config)
        .await
        .map_err(engine_error)?;
    println!("{id}");
    Ok(())
}

pub async fn run(docker: &Docker, args: &RunArgs) -> Result<()> {
    let opts = &args.opts;
    if opts.tty && opts.interactive && !is_tty(std::io::stdin().as_fd()) {
        bail!("the input device is not a TTY");
    }
    // --rm is the daemon's AutoRemove, as with Docker's CLI: the daemon then knows the
    // container's writable layer is discarded and mounts it without syncing the host's
    // filesystem on unmount (docs/daemon.md); attached, we wait for `removed`.
    if args.rm && opts.restart.as_deref().is_some_and(|r| r != "no") {
        return Err(engine_error(anyhow::anyhow!(
            "conflicting options: cannot specify both --restart and --rm"
        )));
    }
    let config = container_config(opts, !args.detach, args.rm).map_err(engine_error)?;
    let id = create_container(docker, opts, config)
        .await
        .map_err(engine_error)?;
    if args.detach {
        docker
            .start_container(&id, None::<StartContainerOptions<String>>)
            .await
            .map_err(start_error)?;
        println!("{id}");
        return Ok(());
    }
    let start = Start::Created { removed: args.rm };
    let code = attach_start_wait(docker, &id, opts.interactive, opts.tty, start).await?;
    Err(Exit(code).into())
}

pub async fn start(docker: &Docker, args: &StartArgs) -> Result<()> {
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let id = &args.containers[0];
        let info = docker.inspect_container(id, None).await?;
        let tty = info.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
        let code = attach_start_wait(docker, id, args.interactive, tty, Start::Any).await?;
        return Err(Exit(code).into());
    }
    let mut failed = false;
    for c in &args.containers {
        match docker
            .start_container(c, None::<StartContainerOptions<String>>)
            .await
        {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", super::error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        bail!("failed to start containers");
    }
    Ok(())
}

pub async fn attach(docker: &Docker, args: &AttachArgs) -> Result<()> {
    let info = docker.inspect_container(&args.container, None).await?;
    let tty = info.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
    let stdin = !args.no_stdin
        && info
            .config
            .as_ref()
            .and_then(|c| c.open_stdin)
            .unwrap_or(false);
    let code = attach_start_wait(docker, &args.container, stdin, tty, Start::No).await?;
    Err(Exit(code).into())
}

/// Attaches, optionally starts, pumps the streams until the container's output ends, then
/// returns its exit code.
async fn attach_start_wait(
    docker: &Docker,
    id: &str,
    stdin: bool,
    tty: bool,
    start: Start,
) -> Result<i32> {
    let attached = docker
        .attach_container(
            id,
            Some(AttachContainerOptions::<String> {
                stdin: Some(stdin),
                stdout: Some(true),
                stderr: Some(true),
                stream: Some(true),
                logs: Some(false),
                detach_keys: None,
            }),
        )
        .await
        .map_err(engine_error)?;
    let raw = (tty && stdin && is_tty(std::io::stdin().as_fd())).then(RawMode::enter);
    // For a container we just created, the exit code is asked for before the start, as
    // Docker's CLI does: it is on its way while the output is pumped, instead of one more
    // round trip after it. (An exited one being started again still reads as exited.)
    let early = match start {
        Start::Created { removed } => {
            let (docker, id) = (docker.clone(), id.to_string());
            let condition = if removed { "removed" } else { "next-exit" };
            Some(tokio::spawn(async move {
                wait_exit_code(&docker, &id, condition).await
            }))
        }
        Start::No | Start::Any => None,
    };
    if start != Start::No {
        if let Err(e) = docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
        {
            if let Some(w) = early {
                w.abort();
            }
            return Err(start_error(e));
        }
    }
    if tty {
        spawn_resizer(docker.clone(), id.to_string());
    }
    pump(Pump {
        output: attached.output,
        input: attached.input,
        stdin,
    })
    .await?;
    drop(raw);
    match early {
        Some(w) => w.await?,
        None => wait_exit_code(docker, id, "not-running").await,
    }
}

/// Whether [`attach_start_wait`] starts the container, and whether it is freshly created
/// (and then whether the daemon removes it when it exits: `--rm`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    No,
    Created { removed: bool },
    Any,
}

/// The container's exit code once it is not running.
pub async fn wait_exit_code(docker: &Docker, id: &str, condition: &str) -> Result<i32> {
    use futures::StreamExt;
    let mut s = docker.wait_container(id, Some(WaitContainerOptions { condition }));
    match s.next().await {
        Some(Ok(r)) => Ok(r.status_code as i32),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(e.into()),
        None => bail!("wait for {id}: no answer from the daemon"),
    }
}

/// Sends the terminal size now and on every SIGWINCH.
fn spawn_resizer(docker: Docker, id: String) {
    tokio::spawn(async move {
        let mut sig =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
                Ok(s) => s,
                Err(_) => return,
            };
        loop {
            if let Some((rows, cols)) = window_size() {
                let _ = docker
                    .resize_container_tty(
                        &id,
                        ResizeContainerTtyOptions {
                            height: rows,
                            width: cols,
                        },
                    )
                    .await;
            }
            if sig.recv().await.is_none() {
                return;
            }
        }
    });
}

/// Docker's exit codes for a failed start: 127 not found, 126 cannot invoke, else 125.
fn start_error(e: bollard::errors::Error) -> anyhow::Error {
    let msg = super::error_message(&e);
    let code = if msg.contains("executable file not found") || msg.contains("no such file") {
        127
    } else if msg.contains("permission denied") || msg.contains("cannot execute") {
        126
    } else {
        125
    };
    eprintln!("skiff: Error response from daemon: {msg}");
    Exit(code).into()
}

/// Errors from the engine itself exit with 125, as `docker run` does.
fn engine_error(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e: anyhow::Error = e.into();
    let msg = match e.downcast_ref::<bollard::errors::Error>() {
        Some(b) => super::error_message(b),
        None => format!("{e:#}"),
    };
    eprintln!("skiff: {msg}");
    Exit(125).into()
}
