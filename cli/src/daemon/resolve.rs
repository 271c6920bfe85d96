//! Merging a create request with the image's configuration, by Docker's rules.

use bollard::container::Config;
use oci_spec::image::ImageConfiguration;

/// What to run, after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub stop_signal: Option<String>,
}

/// Entrypoint + Cmd: a given entrypoint drops the image's Cmd (as Docker does); a given Cmd
/// replaces the image's; env entries from the request override the image's by key.
pub fn resolve(body: &Config<String>, image: &ImageConfiguration) -> Result<Resolved, String> {
    let ic = image.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &body.entrypoint {
        Some(ep) => ep.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None => ic.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = match (&body.cmd, &body.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => ic.cmd().clone().unwrap_or_default(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err("No command specified".to_string());
    }
    let mut env: Vec<String> = ic.env().clone().unwrap_or_default();
    for e in body.env.clone().unwrap_or_default() {
        let key = e.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    let cwd = body
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| ic.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let user = body
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| ic.user().clone())
        .unwrap_or_default();
    Ok(Resolved {
        argv,
        env,
        cwd,
        user,
        stop_signal: body
            .stop_signal
            .clone()
            .or_else(|| ic.stop_signal().clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(ep: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfiguration {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ImageConfigurationBuilder::default()
            .config(
                ConfigBuilder::default()
                    .entrypoint(s(ep))
                    .cmd(s(cmd))
                    .env(s(env))
                    .working_dir("/srv".to_string())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn cmd_override_keeps_entrypoint() {
        let img = image(&["/entry"], &["default"], &[]);
        let body = Config {
            cmd: Some(vec!["echo".into(), "hi".into()]),
            ..Default::default()
        };
        assert_eq!(resolve(&body, &img).unwrap().argv, ["/entry", "echo", "hi"]);
    }

    #[test]
    fn entrypoint_override_drops_image_cmd() {
        let img = image(&["/entry"], &["default"], &[]);
        let body = Config {
            entrypoint: Some(vec!["sh".into()]),
            ..Default::default()
        };
        assert_eq!(resolve(&body, &img).unwrap().argv, ["sh"]);
    }

    #[test]
    fn env_overrides_by_key_and_workdir_defaults() {
        let img = image(&[], &["sh"], &["A=1", "B=2"]);
        let body = Config {
            env: Some(vec!["B=3".into(), "C=4".into()]),
            ..Default::default()
        };
        let r = resolve(&body, &img).unwrap();
        assert_eq!(r.env, ["A=1", "B=3", "C=4"]);
        assert_eq!(r.cwd, "/srv");
    }

    #[test]
    fn no_command_is_an_error() {
        let img = image(&[], &[], &[]);
        assert!(resolve(&Config::default(), &img).is_err());
    }
}
