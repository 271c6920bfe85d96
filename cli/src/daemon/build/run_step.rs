//! A `RUN` step: a container of the previous step's image, created and started through
//! the containers service (the same runtime, mounts, network and cgroups as `docker
//! run`), its output streamed into the build's progress, and its overlay upper directory
//! committed as the step's layer.

use bollard::container::Config;
use serde_json::Value;

use super::dockerfile::Step;
use super::stage::{Build, StageState};
use super::{short, BuildError};
use crate::daemon::containers_run::StartedBy;
use crate::daemon::record::ContainerRecord;

/// Paths the runtime mounts over, left out of a RUN's layer as Docker leaves its init layer out.
pub(super) use crate::daemon::container_fs::RUNTIME_MOUNT_POINTS as MOUNT_POINTS;

/// Runs `argv` in a container of the stage's image; returns the image committed from it.
pub(super) async fn run(
    b: &mut Build<'_>,
    st: &StageState,
    step: &Step,
    argv: &[String],
    extra_env: &[String],
    created_by: String,
) -> Result<String, BuildError> {
    let Some(image) = st.image.clone() else {
        return Err(BuildError::Instruction {
            line: step.line,
            message: format!(
                "{}: there is nothing to run in an empty image (FROM scratch): copy a program in first",
                step.text
            ),
        });
    };
    let containers = b.svc.containers.clone();
    let mut env: Vec<String> = st
        .env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend(extra_env.iter().cloned());
    // The base image's mount with the layers of the earlier steps stacked over it (no
    // mount per step); the previous step's image mount when a layer's directory is not
    // kept, or when the stage declared VOLUMEs (a RUN must then get those volumes, which
    // come from the image a container is made from).
    let (from, above) = match (&st.stacked, &st.base) {
        (Some(dirs), Some(base))
            if st.config.get("Volumes").cloned().unwrap_or(Value::Null) == st.base_volumes =>
        {
            (base.clone(), dirs.iter().rev().cloned().collect())
        }
        _ => (image.clone(), Vec::new()),
    };
    let body = Config::<String> {
        image: Some(from),
        cmd: Some(argv.to_vec()),
        // An empty entrypoint: the step's command runs as it is, not after the image's.
        entrypoint: Some(vec![String::new()]),
        env: Some(env),
        user: Some(st.user()),
        working_dir: Some(st.workdir()),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some(b.opts.network_mode.clone()).filter(|m| !m.is_empty()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = containers.create_stacked(None, body, above).await?;
    let r = containers.find(&id)?;
    b.progress
        .say(format!(" ---> Running in {}\n", short(&id)))
        .await;
    let outcome = run_container(b, &r).await;
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            remove(b, &r, false).await;
            return Err(e);
        }
    };
    if code != 0 {
        if b.opts.force_remove {
            remove(b, &r, true).await;
        }
        return Err(BuildError::RunFailed {
            command: argv.join(" "),
            code,
        });
    }
    let upper = containers.dir(&id).join("upper");
    let img = containers
        .store
        .commit(skiff_store::CommitRequest {
            parent: Some(image),
            layer: Some(skiff_store::LayerDir::Overlay {
                dir: upper,
                skip: MOUNT_POINTS.iter().map(|s| s.to_string()).collect(),
            }),
            config: Value::Object(st.config.clone()),
            created_by,
            comment: None,
            author: None,
            tags: vec![],
        })
        .await;
    let img = img?;
    if let Some(top) = img.layers.last() {
        // The upper directory is the new layer's directory, for later steps to stack.
        let upper = containers.dir(&id).join("upper");
        let kept = b.svc.layer_dir(&top.digest).with_extension("tmp");
        let moved = std::fs::create_dir_all(kept.parent().expect("under the data root"))
            .and_then(|()| std::fs::rename(&upper, &kept));
        match moved {
            Ok(()) => b.svc.adopt_layer_dir(kept, &top.digest),
            Err(e) => {
                tracing::warn!(dir = %upper.display(), "keeping a RUN's layer directory: {e}")
            }
        }
    }
    if b.opts.remove || b.opts.force_remove {
        remove(b, &r, true).await;
    }
    Ok(img.id)
}

async fn remove(b: &Build<'_>, r: &ContainerRecord, say: bool) {
    if let Err(e) = b.svc.containers.remove(r, true, true).await {
        tracing::warn!(id = %&r.id[..12], "removing a build container: {e}");
        return;
    }
    if say {
        b.progress
            .say(format!(
                "Removing intermediate container {}\n",
                short(&r.id)
            ))
            .await;
    }
}

/// Starts the container, streams its output, and waits for its exit code; if the client
/// goes away meanwhile, kills it (the caller removes it).
async fn run_container(b: &Build<'_>, r: &ContainerRecord) -> Result<i32, BuildError> {
    let containers = &b.svc.containers;
    containers.start(r, StartedBy::User).await?;
    let dir = containers.dir(&r.id);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let follower = tokio::task::spawn_blocking(move || {
        let opts = skiff_runtime::logs::LogOptions {
            follow: true,
            ..Default::default()
        };
        let reader = match skiff_runtime::logs::LogReader::open(&dir, opts) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("following a build container's output: {e}");
                return;
            }
        };
        for entry in reader {
            match entry {
                Ok(e) => {
                    if tx.blocking_send(e.log).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("following a build container's output: {e}");
                    return;
                }
            }
        }
    });
    let forward = async {
        while let Some(line) = rx.recv().await {
            b.progress.say(line).await;
        }
    };
    let waited = async {
        let (code, ()) = tokio::join!(containers.monitor.wait_exit(&r.id), forward);
        code
    };
    tokio::pin!(waited);
    // A client that went away is only noticed when something is written to it: a quiet
    // command gets an empty `stream` line every second (the CLIs print nothing for it).
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            code = &mut waited => {
                let _ = follower.await;
                return Ok(code);
            }
            _ = b.progress.closed() => {
                tracing::info!(id = %&r.id[..12], "build client gone: killing its RUN container");
                if let Err(e) = containers.kill(r, "KILL").await {
                    tracing::warn!(id = %&r.id[..12], "killing a build container: {e}");
                }
                follower.abort();
                return Err(BuildError::Cancelled);
            }
            _ = tick.tick() => {
                b.progress.send(serde_json::json!({"stream": ""})).await;
            }
        }
    }
}
