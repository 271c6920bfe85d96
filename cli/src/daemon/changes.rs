//! Dockerfile-style `--change` instructions for `image import` (CMD, ENTRYPOINT, ENV,
//! WORKDIR, USER, EXPOSE, LABEL, VOLUME), as `docker import -c` takes them.

use skiff_store::ImageChanges;

/// `["a","b"]` (exec form) or `a b` (shell form, run by `/bin/sh -c`).
fn command(arg: &str) -> Result<Vec<String>, String> {
    let t = arg.trim();
    if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| format!("invalid JSON array {t:?}: {e}"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
    }
}

/// `K=V K2="v 2"` or the legacy `K V`.
fn pairs(arg: &str) -> Result<Vec<(String, String)>, String> {
    let t = arg.trim();
    if !t.contains('=') {
        let (k, v) = t
            .split_once(char::is_whitespace)
            .ok_or(format!("expected KEY=VALUE, got {t:?}"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = t.chars().peekable();
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let mut val = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                val.push(c);
            }
        } else {
            while let Some(c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        if key.is_empty() {
            return Err(format!("expected KEY=VALUE, got {t:?}"));
        }
        out.push((key, val));
    }
    Ok(out)
}

pub fn parse(lines: &[String]) -> Result<ImageChanges, String> {
    let mut c = ImageChanges::default();
    // Each value is a Dockerfile fragment: bollard joins several with newlines.
    for line in lines.iter().flat_map(|l| l.lines()) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (instr, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => c.cmd = Some(command(arg)?),
            "ENTRYPOINT" => c.entrypoint = Some(command(arg)?),
            "ENV" => {
                for (k, v) in pairs(arg)? {
                    c.env.retain(|e| e.split('=').next() != Some(k.as_str()));
                    c.env.push(format!("{k}={v}"));
                }
            }
            "WORKDIR" => c.working_dir = Some(arg.trim().to_string()),
            "USER" => c.user = Some(arg.trim().to_string()),
            "EXPOSE" => {
                for p in arg.split_whitespace() {
                    c.exposed_ports.push(if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
                }
            }
            "LABEL" => {
                for (k, v) in pairs(arg)? {
                    c.labels.insert(k, v);
                }
            }
            "VOLUME" => {
                let t = arg.trim();
                let paths = if t.starts_with('[') {
                    serde_json::from_str::<Vec<String>>(t)
                        .map_err(|e| format!("invalid JSON array {t:?}: {e}"))?
                } else {
                    t.split_whitespace().map(str::to_string).collect()
                };
                c.volumes.extend(paths);
            }
            other => return Err(format!("unsupported --change instruction {other:?} (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME)")),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_like_docker_import() {
        let c = parse(&[
            r#"CMD ["echo", "hi"]"#.into(),
            "ENTRYPOINT /bin/app --x".into(),
            r#"ENV A=1 B="two words""#.into(),
            "ENV C 3".into(),
            "WORKDIR /srv".into(),
            "USER nobody".into(),
            "EXPOSE 80 53/udp".into(),
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), ["echo", "hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/bin/app --x"]);
        assert_eq!(c.env, ["A=1", "B=two words", "C=3"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
        // bollard (the skiff CLI) sends several changes as one newline-joined value.
        let c = parse(&["EXPOSE 8080\nENV A=1".into()]).unwrap();
        assert_eq!(
            (c.exposed_ports, c.env),
            (vec!["8080/tcp".to_string()], vec!["A=1".to_string()])
        );
        assert!(parse(&["RUN rm -rf /".into()]).is_err());
        assert!(parse(&["CMD [broken".into()]).is_err());
    }
}
