//! The daemon's domain errors, and the one place they become HTTP answers in Docker's shape
//! (a status code and `{"message": "..."}`; the messages are Docker's where clients parse
//! them, e.g. `No such container: x`, `Conflict. The container name ...`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What a daemon service can fail with. Services return these; [`status`] alone decides
/// the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// A path inside a container that does not exist (`cp`).
    #[error("{0}")]
    NoSuchPath(String),
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("page not found: {0}")]
    NoSuchEndpoint(String),
    #[error("multiple IDs found with provided prefix: {0}")]
    AmbiguousId(String),
    /// A request whose value is malformed or not allowed (bad name, bad signal, ...).
    #[error("{0}")]
    Invalid(String),
    /// A create field skiff does not implement, set to something other than the clients'
    /// defaults: refused rather than ignored (docs/create-fields.md).
    #[error("{field} is not supported by skiff (got {value})")]
    Unsupported { field: String, value: String },
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("remove {name}: volume is in use - [{containers}]")]
    VolumeInUse { name: String, containers: String },
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    /// A request at odds with the object's state (409), in dockerd's words.
    #[error("{0}")]
    Conflict(String),
    #[error("Container {id} is not running")]
    NotRunning { id: String },
    #[error("Container {id} is already paused")]
    AlreadyPaused { id: String },
    #[error("Container {id} is not paused")]
    NotPaused { id: String },
    #[error("Container {id} is paused, unpause the container before exec")]
    ExecPaused { id: String },
    #[error("Cannot kill container: {name}: Container {id} is not running")]
    KillNotRunning { name: String, id: String },
    #[error("You cannot remove a running container {id}. Stop the container before attempting removal or force remove")]
    RemoveRunning { id: String },
    #[error("removal of container {id} is already in progress")]
    RemovalInProgress { id: String },
    #[error("Exec {0} has already run")]
    ExecAlreadyRan(String),
    #[error("conflict: unable to remove repository reference \"{reference}\" (must force) - container {container} is using its referenced image {image}")]
    ImageInUse {
        reference: String,
        container: String,
        image: String,
    },
    /// `logs` of a container whose log driver keeps nothing (`none`).
    #[error("configured logging driver does not support reading")]
    LogsNotReadable,
    #[error("driver failed programming external connectivity: {0}")]
    PortInUse(Box<skiff_runtime::RuntimeError>),
    /// The container's process could not be started (its command is missing or not
    /// executable...): the user's mistake, as Docker reports it.
    #[error("{0}")]
    StartFailed(String),
    #[error("attaching to {name}: {source}")]
    Attach {
        name: String,
        source: Box<skiff_runtime::RuntimeError>,
    },
    #[error("{0}")]
    Store(Box<skiff_store::StoreError>),
    /// A pull of a tag, digest or repository the registry does not have (dockerd's words).
    #[error("manifest for {0} not found: manifest unknown: manifest unknown")]
    ManifestUnknown(String),
    /// A pull that failed otherwise before its progress stream began.
    #[error("{0}")]
    PullFailed(Box<skiff_store::StoreError>),
    #[error("{what}: {source}")]
    Runtime {
        what: String,
        source: Box<skiff_runtime::RuntimeError>,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("container records: {0}")]
    Records(String),
    #[error("{0}")]
    Internal(String),
    /// `network create` of a name that exists (Docker: 409).
    #[error("network with name {0} already exists")]
    NetworkNameInUse(String),
    /// What Docker refuses with 403: removing a built-in network, connecting twice, a
    /// subnet that overlaps, removing a network in use.
    #[error("{0}")]
    NetworkForbidden(String),
    /// A network change the runtime refused or failed (status by its kind).
    #[error("{0}")]
    Network(Box<skiff_runtime::RuntimeError>),
}

impl From<skiff_store::StoreError> for DaemonError {
    fn from(e: skiff_store::StoreError) -> DaemonError {
        DaemonError::Store(Box::new(e))
    }
}

impl DaemonError {
    pub fn runtime(what: impl Into<String>, source: skiff_runtime::RuntimeError) -> DaemonError {
        DaemonError::Runtime {
            what: what.into(),
            source: Box::new(source),
        }
    }
    pub fn invalid(message: impl Into<String>) -> DaemonError {
        DaemonError::Invalid(message.into())
    }
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> DaemonError {
        DaemonError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
    /// A blocking task that panicked or was cancelled.
    pub fn join(e: tokio::task::JoinError) -> DaemonError {
        DaemonError::Internal(format!("daemon task: {e}"))
    }
}

/// The one mapping from domain errors to HTTP statuses.
pub fn status(e: &DaemonError) -> StatusCode {
    use skiff_store::StoreError as S;
    use DaemonError as E;
    match e {
        E::NoSuchContainer(_)
        | E::NoSuchImage(_)
        | E::NoSuchExec(_)
        | E::NoSuchNetwork(_)
        | E::NoSuchVolume(_)
        | E::NoSuchPath(_)
        | E::NoSuchEndpoint(_)
        | E::ManifestUnknown(_) => StatusCode::NOT_FOUND,
        E::AmbiguousId(_) | E::Invalid(_) | E::Unsupported { .. } | E::StartFailed(_) => {
            StatusCode::BAD_REQUEST
        }
        E::NameInUse { .. }
        | E::Conflict(_)
        | E::NotRunning { .. }
        | E::AlreadyPaused { .. }
        | E::NotPaused { .. }
        | E::ExecPaused { .. }
        | E::KillNotRunning { .. }
        | E::RemoveRunning { .. }
        | E::RemovalInProgress { .. }
        | E::ExecAlreadyRan(_)
        | E::ImageInUse { .. }
        | E::VolumeInUse { .. }
        | E::PortInUse(_)
        | E::Attach { .. } => StatusCode::CONFLICT,
        E::Store(s) => match s.as_ref() {
            S::InvalidReference { .. } | S::AmbiguousImage { .. } => StatusCode::BAD_REQUEST,
            S::NotFound { .. } | S::ImageNotFound { .. } => StatusCode::NOT_FOUND,
            S::Conflict { .. } => StatusCode::CONFLICT,
            S::InvalidCredentials { .. } => StatusCode::BAD_REQUEST,
            S::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        // dockerd answers a failed pull 500 whatever the registry said, refusals included:
        // a 401 would make the docker CLI ask for a login.
        E::PullFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::LogsNotReadable => StatusCode::NOT_IMPLEMENTED,
        E::NetworkNameInUse(_) => StatusCode::CONFLICT,
        E::NetworkForbidden(_) => StatusCode::FORBIDDEN,
        E::Network(r) => {
            use skiff_runtime::RuntimeError as R;
            match r.as_ref() {
                R::SubnetOverlap { .. } | R::NetworkInUse { .. } | R::AlreadyConnected { .. } => {
                    StatusCode::FORBIDDEN
                }
                R::UnknownNetwork { .. } => StatusCode::NOT_FOUND,
                R::NotConnected { .. } | R::NoNetnsToConnect { .. } => StatusCode::CONFLICT,
                R::AddressUnavailable { .. }
                | R::InvalidSubnet { .. }
                | R::InvalidNetworkConfig { .. }
                | R::SubnetExhausted { .. } => StatusCode::BAD_REQUEST,
                R::PortInUse { .. } | R::PortAllocated { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        E::Runtime { .. } | E::Io { .. } | E::Records(_) | E::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        let status = status(&self);
        let message = self.to_string();
        // Server faults are logged here, where they are handled; client errors are the
        // client's to show.
        if status.is_server_error() {
            tracing::error!(status = %status, "{message}");
        }
        (status, Json(serde_json::json!({ "message": message }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, DaemonError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_docker() {
        assert_eq!(
            status(&DaemonError::NoSuchContainer("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&DaemonError::RemoveRunning { id: "x".into() }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            DaemonError::NoSuchContainer("web".into()).to_string(),
            "No such container: web"
        );
        let missing = DaemonError::ManifestUnknown("127.0.0.1:5000/a:x".into());
        assert_eq!(status(&missing), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.to_string(),
            "manifest for 127.0.0.1:5000/a:x not found: manifest unknown: manifest unknown"
        );
        // A pull the registry refused is dockerd's 500: a 401 has the docker CLI prompt.
        let refused = skiff_store::StoreError::Unauthorized {
            registry: "r".into(),
            reference: "r/a:x".into(),
            reason: "401".into(),
        };
        assert_eq!(
            status(&DaemonError::PullFailed(Box::new(refused))),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
