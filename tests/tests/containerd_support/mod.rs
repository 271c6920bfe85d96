//! What the containerd snapshotter tests share: the kubelet's image pull over CRI.

use skiff_tests::containerd::Containerd;

/// The kubelet's image pull: CRI `ImageService/PullImage` on containerd's socket.
pub fn cri_pull(c: &Containerd, image: &str) -> String {
    try_cri_pull(c, image).unwrap_or_else(|e| panic!("CRI PullImage {image}: {e}"))
}

/// [`cri_pull`], returning the CRI error's message instead of panicking.
pub fn try_cri_pull(c: &Containerd, image: &str) -> Result<String, String> {
    use k8s_cri::v1::image_service_client::ImageServiceClient;
    use k8s_cri::v1::{ImageSpec, PullImageRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = c.socket.clone();
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::try_from("http://[::]:0")
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
            .expect("connecting to containerd's CRI service");
        let mut client = ImageServiceClient::new(channel);
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
