//! The CLI side: each command talks to the daemon with the Docker Engine API.

pub mod archive;
pub mod build;
pub mod connect;
pub mod create;
pub mod create_host;
pub mod exec;
pub mod files;
pub mod format;
pub mod images;
pub mod inspect;
pub mod lifecycle;
pub mod list_format;
pub mod login;
pub mod logs;
pub mod networks;
pub mod ops;
pub mod profiles;
pub mod ps;
pub mod run;
pub mod stream;
pub mod system;
pub mod template;
pub mod tty;
pub mod volumes;

/// The daemon's own message for an API error, as Docker prints it.
pub fn error_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
