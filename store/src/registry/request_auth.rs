//! Credentials of one client request (a pull or push the Engine API was asked for, with
//! its `X-Registry-Auth`), as Docker treats them: that request authenticates with what the
//! client sent (or, when it sent nothing, the daemon's own Docker config), never with what
//! an earlier request left behind. Access resolved with them is kept for the rest of the
//! request only; the daemon-wide cache still serves lazy reads of images already pulled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use super::auth_cache::Access;
use super::credentials::Secret;

/// What the current request authenticates with, and the access resolved with it.
pub struct RequestAuth {
    pub secret: Secret,
    /// `(host, repository)` → access resolved during this request.
    access: Mutex<HashMap<(String, String), Access>>,
}

tokio::task_local! {
    static REQUEST_AUTH: RequestAuth;
}

/// Runs `fut` (a client's pull or push) with `secret` as its credentials. Registry
/// requests made by tasks `fut` spawns are outside it and use the daemon-wide keychain.
pub async fn with_request_secret<F: Future>(secret: Secret, fut: F) -> F::Output {
    REQUEST_AUTH
        .scope(
            RequestAuth {
                secret,
                access: Mutex::new(HashMap::new()),
            },
            fut,
        )
        .await
}

/// The current request's secret, when running inside [`with_request_secret`].
pub fn request_secret() -> Option<Secret> {
    REQUEST_AUTH.try_with(|r| r.secret.clone()).ok()
}

/// `Some(access resolved in this request)` inside a request (`Some(None)`: nothing yet);
/// `None` outside one.
pub fn request_access(host: &str, repository: &str) -> Option<Option<Access>> {
    REQUEST_AUTH
        .try_with(|r| {
            r.access
                .lock()
                .expect("request access")
                .get(&(host.to_string(), repository.to_string()))
                .cloned()
        })
        .ok()
}

/// Keeps `access` for the rest of the current request (no-op outside one).
pub fn keep_request_access(host: &str, repository: &str, access: &Access) {
    let _ = REQUEST_AUTH.try_with(|r| {
        r.access
            .lock()
            .expect("request access")
            .insert((host.to_string(), repository.to_string()), access.clone());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_requests_secret_and_access_stay_inside_it() {
        assert!(request_secret().is_none());
        assert!(request_access("h", "r").is_none());
        let secret = Secret::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        with_request_secret(secret.clone(), async {
            assert!(request_secret() == Some(secret.clone()));
            assert!(request_access("h", "r") == Some(None));
            keep_request_access("h", "r", &Access::Open);
            assert!(request_access("h", "r") == Some(Some(Access::Open)));
        })
        .await;
        assert!(request_secret().is_none());
    }
}
