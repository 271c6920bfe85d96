//! Docker's hijacked streams: `attach` and `exec start` answer `101 UPGRADED` and then speak
//! raw bytes on the connection, framed by [`frame`] unless the container has a TTY.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

/// The stream kinds of Docker's multiplexed framing (stdcopy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdout = 1,
    Stderr = 2,
}

/// One stdcopy frame: `[kind, 0, 0, 0, len as u32 BE]` then the payload.
pub fn frame(kind: StreamKind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.push(kind as u8);
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The upgraded connection, usable with tokio's AsyncRead/AsyncWrite.
pub type Conn = TokioIo<hyper::upgrade::Upgraded>;

/// Answers the request with `101 UPGRADED` and hands the raw connection to `serve` once the
/// client has switched protocols. `tty` picks the content type Docker uses.
pub fn upgrade<F, Fut>(mut req: Request, tty: bool, serve: F) -> Response
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!("attach: connection upgrade failed: {e}"),
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::empty())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_kind_and_big_endian_length() {
        let f = frame(StreamKind::Stderr, b"hey");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&f[8..], b"hey");
    }
}
