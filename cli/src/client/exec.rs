//! `exec`: another process in a running container, with `-i`, `-t`, `-e`, `-w`, `-u`.

use std::os::fd::AsFd;

use anyhow::{bail, Result};
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;

use super::stream::{pump, Pump};
use super::tty::{is_tty, window_size, RawMode};
use crate::args::ExecArgs;
use crate::exit::Exit;

pub async fn exec(docker: &Docker, args: &ExecArgs) -> Result<()> {
    if args.tty && args.interactive && !is_tty(std::io::stdin().as_fd()) {
        bail!("the input device is not a TTY");
    }
    let created = docker
        .create_exec(
            &args.container,
            CreateExecOptions::<String> {
                attach_stdin: Some(args.interactive && !args.detach),
                attach_stdout: Some(!args.detach),
                attach_stderr: Some(!args.detach),
                tty: Some(args.tty),
                env: (!args.env.is_empty()).then(|| args.env.clone()),
                cmd: Some(args.command.clone()),
                user: args.user.clone(),
                working_dir: args.workdir.clone(),
                ..Default::default()
            },
        )
        .await?;
    let raw =
        (args.tty && args.interactive && is_tty(std::io::stdin().as_fd())).then(RawMode::enter);
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: args.detach,
                tty: args.tty,
                output_capacity: None,
            }),
        )
        .await?;
    match started {
        StartExecResults::Detached => return Ok(()),
        StartExecResults::Attached { output, input } => {
            if args.tty {
                if let Some((rows, cols)) = window_size() {
                    let _ = docker
                        .resize_exec(
                            &created.id,
                            ResizeExecOptions {
                                height: rows,
                                width: cols,
                            },
                        )
                        .await;
                }
            }
            pump(Pump {
                output,
                input,
                stdin: args.interactive,
            })
            .await?;
        }
    }
    drop(raw);
    let info = docker.inspect_exec(&created.id).await?;
    Err(Exit(info.exit_code.unwrap_or(0) as i32).into())
}
