//! Turns `oci-client` errors into [`StoreError`]s that name the reference and host.

use std::error::Error as _;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use crate::reference::ImageReference;
use crate::StoreError;

/// Classifies `e`: not found, unreachable, digest mismatch, or another registry error.
pub fn map_oci_error(
    e: OciDistributionError,
    r: &ImageReference,
    host_port: &str,
    operation: &str,
) -> StoreError {
    match &e {
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            return StoreError::NotFound {
                reference: r.to_string(),
                what: format!("{operation}: {envelope}"),
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            return StoreError::NotFound {
                reference: r.to_string(),
                what: operation.to_string(),
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            return StoreError::DigestMismatch {
                what: format!("{r} ({operation})"),
                expected: expected.clone(),
                actual: actual.clone(),
            }
        }
        OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
            return StoreError::Unreachable {
                host: host_port.to_string(),
                reference: r.to_string(),
                reason: chain(&e),
            }
        }
        OciDistributionError::IoError(io) => {
            // Stream errors arrive wrapped in io::Error; digest failures among them.
            if let Some(DigestError::VerificationError { expected, actual }) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<DigestError>())
            {
                return StoreError::DigestMismatch {
                    what: format!("{r} ({operation})"),
                    expected: expected.clone(),
                    actual: actual.clone(),
                };
            }
        }
        _ => {}
    }
    StoreError::Registry {
        reference: r.to_string(),
        operation: format!("{operation} at {host_port}"),
        source: Box::new(e),
    }
}

/// The error with its causes, since reqwest's top-level message is vague.
fn chain(e: &OciDistributionError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
