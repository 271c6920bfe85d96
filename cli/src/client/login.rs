//! `skiff login` / `skiff logout`, as the docker CLI does them: the daemon checks the
//! credentials (`POST /auth`), the client keeps them in its Docker config (a credential
//! helper when `credsStore`/`credHelpers` names one, else `auths`), and pulls and pushes
//! send them to the daemon in `X-Registry-Auth`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use skiff_store::registry::credentials::{self, config_key, DockerConfigFile, Secret};

use crate::args::{LoginArgs, LogoutArgs};

/// The client's Docker config file (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`).
fn config_path() -> Result<PathBuf> {
    credentials::default_docker_config()
        .context("no Docker config location: set DOCKER_CONFIG or HOME")
}

/// `docker.io` or `host[:port]` for a login server argument.
fn registry_of(server: Option<&str>) -> String {
    crate::daemon::images::registry_of_server_address(server.unwrap_or(""))
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(prompt: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    eprintln!();
    res.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `POST /auth` with `body`; the identity token the registry issued ("" when none).
async fn post_auth(socket: &Path, body: &serde_json::Value) -> Result<String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the skiff daemon at {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/auth")
        .header("Host", "skiff")
        .header("Content-Type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let msg = v["message"].as_str().unwrap_or("login failed");
        bail!("Error response from daemon: {msg}");
    }
    Ok(v["IdentityToken"].as_str().unwrap_or("").to_string())
}

pub async fn login(socket: &Path, args: &LoginArgs) -> Result<()> {
    let registry = registry_of(args.server.as_deref());
    let username = match &args.username {
        Some(u) => u.clone(),
        None if std::io::stdin().is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            std::io::stderr().flush().ok();
            let mut u = String::new();
            std::io::stdin().lock().read_line(&mut u)?;
            u.trim().to_string()
        }
        None => bail!("Must provide --username with --password-stdin or without a terminal"),
    };
    if username.is_empty() {
        bail!("Error: Non-null Username Required");
    }
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut p)
            .context("reading the password from stdin")?;
        p.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else if std::io::stdin().is_terminal() {
        read_hidden("Password: ")?
    } else {
        bail!("Cannot perform an interactive login from a non TTY device");
    };
    if password.is_empty() {
        bail!("Error: Password Required");
    }
    let server = config_key(&registry);
    let token = post_auth(
        socket,
        &serde_json::json!({"username": username, "password": password, "serveraddress": server}),
    )
    .await?;
    // As Docker: an identity token replaces the password on disk.
    let secret = if token.is_empty() {
        Secret::Basic { username, password }
    } else {
        Secret::IdentityToken { username, token }
    };
    let path = config_path()?;
    let mut file = DockerConfigFile::load(&path)?;
    match file.helper_for(&registry) {
        Some(helper) => credentials::helper_store(&helper, &server, &secret).await?,
        None => {
            file.set_auths(&registry, &secret);
            file.save(&path)?;
            eprintln!(
                "WARNING! Your password will be stored unencrypted in {}.",
                path.display()
            );
        }
    }
    println!("Login Succeeded");
    Ok(())
}

pub async fn logout(args: &LogoutArgs) -> Result<()> {
    let registry = registry_of(args.server.as_deref());
    let server = config_key(&registry);
    let path = config_path()?;
    let mut file = DockerConfigFile::load(&path)?;
    let mut removed = false;
    if let Some(helper) = file.helper_for(&registry) {
        removed |= credentials::helper_erase(&helper, &server).await?;
    }
    if file.remove_auths(&registry) {
        file.save(&path)?;
        removed = true;
    }
    if removed {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}

/// The client's credentials for `image`'s registry, for `X-Registry-Auth` (as the docker
/// CLI sends them); `None` when it has none.
pub async fn credentials_for(image: &str) -> Result<Option<bollard::auth::DockerCredentials>> {
    let Ok(r) = skiff_store::ImageReference::parse(image) else {
        return Ok(None);
    };
    let Some(path) = credentials::default_docker_config() else {
        return Ok(None);
    };
    let cred = credentials::from_docker_config(&path, &r.registry).await?;
    let server = Some(config_key(&r.registry));
    Ok(match cred.secret {
        Secret::Anonymous => None,
        Secret::Basic { username, password } => Some(bollard::auth::DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: server,
            ..Default::default()
        }),
        Secret::IdentityToken { username, token } => Some(bollard::auth::DockerCredentials {
            username: Some(username),
            identitytoken: Some(token),
            serveraddress: server,
            ..Default::default()
        }),
        Secret::RegistryToken(t) => Some(bollard::auth::DockerCredentials {
            registrytoken: Some(t),
            serveraddress: server,
            ..Default::default()
        }),
    })
}
