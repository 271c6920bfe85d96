//! The kubelet's path through containerd's CRI plugin onto skiff's snapshotter: PullImage of
//! a zstd:chunked image (served lazily), RunPodSandbox (its sandbox image, gzip, unpacked),
//! CreateContainer and StartContainer in a host-network pod, the container's log and exit
//! code, then StopPodSandbox, RemovePodSandbox and RemoveImage leaving nothing mounted.

mod containerd_support;

use std::time::{Duration, Instant};

use containerd_support::{cri_channel, runtime};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use skiff_store::{Compression, ImageChanges};
use skiff_tests::containerd::{containerd_unavailable, mounts_under, Containerd};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

/// Bytes the registry sent for blob GETs in its access log after byte `from` of the log.
fn blob_bytes_served(reg: &Registry, from: usize) -> u64 {
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    log[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .filter_map(|l| {
            let rest = &l[l.find("HTTP/1.1\" ")? + 10..];
            let mut it = rest.split_whitespace();
            let _status = it.next()?;
            it.next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn kubelet_path_runs_a_lazily_served_image_in_a_host_network_pod() {
    let name = "kubelet_path_runs_a_lazily_served_image_in_a_host_network_pod";
    require!(
        name,
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable(),
        containerd_unavailable()
    );
    let reg = Registry::start().unwrap();
    // The sandbox ("pause") image: busybox sleeping, gzip (unpacked by containerd).
    let pause_root = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(pause_root.path()).unwrap();
    let pause_changes = ImageChanges {
        cmd: Some(vec!["/bin/sleep".into(), "3600".into()]),
        ..fixtures::busybox_changes()
    };
    runtime()
        .block_on(fixtures::push_rootfs(
            pause_root.path(),
            &reg.host(),
            "pause:none",
            &pause_changes,
            Compression::Gzip,
        ))
        .unwrap();
    // The workload: zstd:chunked with a large file the container does not read.
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = fixtures::random_bytes(16 << 20, 11);
    std::fs::write(rootfs.path().join("data/big"), &big).unwrap();
    std::fs::write(rootfs.path().join("data/hello.txt"), b"hello from a pod\n").unwrap();
    let gzip = format!("{}/cri/app:gzip", reg.host());
    let image = format!("{}/cri/app:chunked", reg.host());
    {
        let publisher = Daemon::start().unwrap();
        publisher.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        publisher.ok(&["push", &gzip]);
        publisher.ok(&["image", "convert", &gzip, &image]);
    }

    let d = Daemon::start().unwrap();
    let mut c = Containerd::start(&d.exec_root.join("snapshotter.sock"), &reg.host()).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let from = std::fs::metadata(reg.log_path()).unwrap().len() as usize;
    let (exit_code, log, pulled) = runtime().block_on(async {
        let channel = cri_channel(&c.socket).await;
        let mut images = ImageServiceClient::new(channel.clone());
        let mut rs = RuntimeServiceClient::new(channel);
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("PullImage");
        let pulled = blob_bytes_served(&reg, from);
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "lazy-pod".into(),
                uid: "uid-lazy-pod".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            // Host-network pods share the node's UTS namespace: no hostname of their own.
            hostname: String::new(),
            log_directory: logs.path().to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = rs
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let ctr = rs
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    command: vec!["/bin/sh".into()],
                    args: vec![
                        "-c".into(),
                        "cat /data/hello.txt; ls -ln /data/big; exit 3".into(),
                    ],
                    log_path: "app.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        rs.start_container(StartContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .expect("StartContainer");
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit_code = loop {
            let st = rs
                .container_status(ContainerStatusRequest {
                    container_id: ctr.clone(),
                    verbose: false,
                })
                .await
                .expect("ContainerStatus")
                .into_inner()
                .status
                .unwrap();
            if st.state == ContainerState::ContainerExited as i32 {
                break st.exit_code;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not exit: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let log = std::fs::read_to_string(logs.path().join("app.log")).unwrap_or_default();
        rs.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("StopPodSandbox");
        rs.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("RemovePodSandbox");
        for img in [image.clone(), format!("{}/pause:none", reg.host())] {
            images
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: img,
                        ..Default::default()
                    }),
                })
                .await
                .expect("RemoveImage");
        }
        (exit_code, log, pulled)
    });
    let fetched = blob_bytes_served(&reg, from);
    eprintln!("CRI: PullImage fetched {pulled} blob bytes; pull + sandbox + run {fetched}");
    assert_eq!(exit_code, 3, "the container's exit code; log:\n{log}");
    assert!(
        log.contains("stdout F hello from a pod"),
        "CRI log format:\n{log}"
    );
    assert!(log.contains(&big.len().to_string()), "{log}");
    assert!(
        pulled < 1 << 20,
        "PullImage fetched {pulled} bytes: more than config and TOC"
    );
    assert!(
        fetched < (big.len() as u64) / 2,
        "fetched {fetched} bytes for a {} byte file not read",
        big.len()
    );
    // RemoveImage removes every name of the image; GC then removes the snapshots.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mounts_under(&d.data_root.join("snapshotter")).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        mounts_under(&d.data_root.join("snapshotter")).is_empty(),
        "lazy layers still mounted; snapshots:\n{}",
        c.ctr_ok(&["-n", "k8s.io", "snapshots", "--snapshotter", "skiff", "ls"])
    );
    c.stop();
}
