//! `stop`, `kill`, `rm`, `restart`, `wait`: per-container verbs that print each name as
//! Docker does and fail if any container failed.

use anyhow::{bail, Result};
use bollard::container::{
    KillContainerOptions, RemoveContainerOptions, RestartContainerOptions, StopContainerOptions,
};
use bollard::Docker;

use super::error_message;
use super::run::wait_exit_code;
use crate::args::{ContainersArgs, KillArgs, RmArgs, StopArgs};

/// Runs `op` for each name, printing the name on success and Docker's error otherwise.
async fn for_each<F, Fut>(names: &[String], what: &str, op: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, bollard::errors::Error>>,
{
    let mut failed = false;
    for n in names {
        match op(n.clone()).await {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        bail!("failed to {what} one or more containers");
    }
    Ok(())
}

pub async fn stop(docker: &Docker, args: &StopArgs) -> Result<()> {
    for_each(&args.containers, "stop", |c| async move {
        match &args.signal {
            // Docker >= 23 accepts a signal for stop; bollard lacks it, so kill then wait.
            Some(sig) => {
                docker
                    .kill_container(
                        &c,
                        Some(KillContainerOptions {
                            signal: sig.clone(),
                        }),
                    )
                    .await?;
            }
            None => {
                docker
                    .stop_container(&c, args.time.map(|t| StopContainerOptions { t }))
                    .await?
            }
        }
        Ok(None)
    })
    .await
}

pub async fn restart(docker: &Docker, args: &StopArgs) -> Result<()> {
    for_each(&args.containers, "restart", |c| async move {
        docker
            .restart_container(
                &c,
                args.time.map(|t| RestartContainerOptions { t: t as isize }),
            )
            .await?;
        Ok(None)
    })
    .await
}

pub async fn kill(docker: &Docker, args: &KillArgs) -> Result<()> {
    for_each(&args.containers, "kill", |c| async move {
        docker
            .kill_container(
                &c,
                Some(KillContainerOptions {
                    signal: args.signal.clone(),
                }),
            )
            .await?;
        Ok(None)
    })
    .await
}

pub async fn rm(docker: &Docker, args: &RmArgs) -> Result<()> {
    for_each(&args.containers, "remove", |c| async move {
        docker
            .remove_container(
                &c,
                Some(RemoveContainerOptions {
                    force: args.force,
                    v: args.volumes,
                    link: false,
                }),
            )
            .await?;
        Ok(None)
    })
    .await
}

pub async fn wait(docker: &Docker, args: &ContainersArgs) -> Result<()> {
    let mut failed = false;
    for c in &args.containers {
        match wait_exit_code(docker, c, "not-running").await {
            Ok(code) => println!("{code}"),
            Err(e) => {
                match e.downcast_ref::<bollard::errors::Error>() {
                    Some(b) => eprintln!("Error response from daemon: {}", error_message(b)),
                    None => eprintln!("{e:#}"),
                }
                failed = true;
            }
        }
    }
    if failed {
        bail!("failed to wait for one or more containers");
    }
    Ok(())
}
