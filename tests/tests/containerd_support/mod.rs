//! What the containerd snapshotter tests share: a CRI client on containerd's socket (the
//! kubelet's side of the API), from the `k8s-cri` crate.

#![allow(dead_code)]

use std::path::Path;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, PullImageRequest};
use skiff_tests::containerd::Containerd;
use tonic::transport::Channel;

/// A gRPC channel to containerd's socket (call inside a tokio runtime).
pub async fn cri_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to containerd's CRI service")
}

/// A small runtime for the synchronous tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The kubelet's image pull: CRI `ImageService/PullImage`; returns the image id.
pub fn cri_pull(c: &Containerd, image: &str) -> String {
    try_cri_pull(c, image).unwrap_or_else(|e| panic!("CRI PullImage {image}: {e}"))
}

/// [`cri_pull`], returning the CRI error's message instead of panicking.
pub fn try_cri_pull(c: &Containerd, image: &str) -> Result<String, String> {
    runtime().block_on(async {
        let mut client = ImageServiceClient::new(cri_channel(&c.socket).await);
        let resp = client
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map_err(|e| e.message().to_string())?;
        Ok(resp.into_inner().image_ref)
    })
}
