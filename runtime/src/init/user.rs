//! Resolving `--user` (`name`, `uid`, `name:group`, `uid:gid`) against the image's own
//! /etc/passwd and /etc/group, as Docker does: names must exist, numeric ids need not.

/// The identity the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (including the primary one), for setgroups.
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each well-formed /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` with the image's passwd and group file contents (empty if missing).
/// The error is a human-readable reason.
pub(crate) fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    format!("unable to find user {user_part}: no matching entries in passwd file")
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part
            .parse()
            .map_err(|_| format!("invalid user {user_part}"))?,
    };
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    let primary = entry.as_ref().map(|e| e.gid).unwrap_or(0);
    match group_part.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|(name, _, _)| *name == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
            Ok(ResolvedUser {
                uid,
                gid,
                groups: vec![gid],
                home,
            })
        }
        None => {
            let mut groups = vec![primary];
            if let Some(e) = &entry {
                for (_, gid, members) in group_entries(group) {
                    if members.contains(&e.name) && !groups.contains(&gid) {
                        groups.push(gid);
                    }
                }
            }
            Ok(ResolvedUser {
                uid,
                gid: primary,
                groups,
                home,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:alice,bob\nnogroup:x:65534:\nalice:x:1000:\naudio:x:29:alice\n";

    #[test]
    fn default_is_root_with_its_home() {
        let u = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![0], "/root")
        );
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = resolve("alice", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(u.groups, vec![1000, 10, 29]);
    }

    #[test]
    fn explicit_group_replaces_supplementary_groups() {
        let u = resolve("alice:nogroup", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 65534, vec![65534]));
        let u = resolve("1000:7", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 7, vec![7]));
    }

    #[test]
    fn unknown_numeric_ids_are_fine_unknown_names_are_not() {
        let u = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert!(resolve("mallory", PASSWD, GROUP)
            .unwrap_err()
            .contains("mallory"));
        assert!(resolve("alice:nosuch", PASSWD, GROUP)
            .unwrap_err()
            .contains("nosuch"));
        assert!(resolve("root", "", "").is_err());
    }
}
