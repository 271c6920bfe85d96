//! Which containers `GET /containers/json` lists: Docker's `all`, `limit` and `filters`
//! (`ancestor`, `before`, `expose`, `exited`, `health`, `id`, `is-task`, `label`, `name`,
//! `network`, `publish`, `since`, `status`, `volume`) with dockerd's semantics
//! (daemon/list.go): values of one filter are alternatives, filters combine with AND, every
//! `label` must match; `id`/`name`/`status` match exactly or as a regular expression.

use std::collections::HashSet;

use skiff_runtime::state::{ContainerState, Status};

use super::error::DaemonError;
use super::filters::Filters;
use super::record::ContainerRecord;

/// The filter names `/containers/json` accepts.
pub const NAMES: &[&str] = &[
    "ancestor", "before", "expose", "exited", "health", "id", "is-task", "label", "name",
    "network", "publish", "since", "status", "volume",
];

const STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// One container as the list sees it.
pub struct Row {
    pub record: ContainerRecord,
    pub state: ContainerState,
    /// Waiting out a restart back-off.
    pub restarting: bool,
    /// Frozen by `pause`.
    pub paused: bool,
    /// `starting`, `healthy`, `unhealthy` for a running container with a healthcheck.
    pub health: Option<&'static str>,
}

impl Row {
    /// Docker's `State` word.
    pub fn state_word(&self) -> &'static str {
        // A failed start reads `created`, as everywhere clients look (status.rs).
        if super::status::Lifecycle::new(&self.record, &self.state).start_failed() {
            return "created";
        }
        match self.state.status {
            Status::Running if self.paused => "paused",
            Status::Running => "running",
            Status::Created => "created",
            Status::Exited if self.restarting => "restarting",
            Status::Exited => "exited",
        }
    }

    /// The networks the container is attached to, as (name, id): its mode's (a built-in
    /// network's id is derived from its name), and each user-defined network it is on.
    fn networks(&self) -> Vec<(String, String)> {
        let mode = network_name(&self.record.spec.host.network_mode);
        let mut out = vec![(mode.to_string(), super::network::network_id(mode))];
        for e in self.record.network.iter().flat_map(|n| n.endpoints.iter()) {
            out.push((e.network_name.clone(), e.network_id.clone()));
        }
        out
    }
}

/// Docker's name of the network a mode attaches to (`default` is the `bridge` network).
pub fn network_name(mode: &str) -> &str {
    match mode {
        "" | "default" => "bridge",
        other => other,
    }
}

/// A parsed list request.
pub struct ContainerQuery {
    filters: Filters,
    all: bool,
    limit: Option<usize>,
    exited: Vec<i64>,
    publish: HashSet<String>,
    expose: HashSet<String>,
    /// Image ids the `ancestor` filter resolved to (`None`: no such filter).
    ancestors: Option<HashSet<String>>,
    before: Option<String>,
    since: Option<String>,
}

impl ContainerQuery {
    /// Validates `filters` as dockerd does. `find` resolves a container name or id
    /// (`before`, `since`: an unknown one is its error), `image_ids` an image reference to
    /// the ids of that image and its descendants (an unknown `ancestor` matches nothing, as
    /// in dockerd).
    pub fn new(
        filters: Filters,
        all: bool,
        limit: Option<i64>,
        find: impl Fn(&str) -> Result<ContainerRecord, DaemonError>,
        image_ids: impl Fn(&str) -> Vec<String>,
    ) -> Result<ContainerQuery, DaemonError> {
        let invalid =
            |name: &str, v: &str| DaemonError::Invalid(format!("invalid filter '{name}={v}'"));
        let mut all = all;
        for v in filters.get("status") {
            if !STATES.contains(&v.as_str()) {
                return Err(DaemonError::Invalid(format!(
                    "invalid filter 'status={v}': one of {}",
                    STATES.join(", ")
                )));
            }
            all = true;
        }
        let mut exited = Vec::new();
        for v in filters.get("exited") {
            exited.push(v.parse::<i64>().map_err(|_| invalid("exited", v))?);
        }
        for v in filters.get("health") {
            if !["starting", "healthy", "unhealthy", "none"].contains(&v.as_str()) {
                return Err(DaemonError::Invalid(format!(
                    "Unrecognised filter value for health: {v}"
                )));
            }
        }
        filters.bool("is-task")?;
        let publish = ports("publish", filters.get("publish"))?;
        let expose = ports("expose", filters.get("expose"))?;
        let ancestors = filters.contains("ancestor").then(|| {
            filters
                .get("ancestor")
                .iter()
                .flat_map(|a| image_ids(a))
                .collect()
        });
        let one = |name: &str| -> Result<Option<String>, DaemonError> {
            match filters.get(name).last() {
                Some(v) => Ok(Some(find(v)?.id)),
                None => Ok(None),
            }
        };
        let before = one("before")?;
        let since = one("since")?;
        Ok(ContainerQuery {
            all,
            limit: limit.filter(|l| *l > 0).map(|l| l as usize),
            exited,
            publish,
            expose,
            ancestors,
            before,
            since,
            filters,
        })
    }

    /// The rows to list, from `rows` newest first.
    pub fn select(mut self, rows: Vec<Row>) -> Vec<Row> {
        let mut out = Vec::new();
        for row in rows {
            let id = row.record.id.as_str();
            // Only containers created before `before`, after `since` (list order, as dockerd).
            if let Some(b) = &self.before {
                if b == id {
                    self.before = None;
                }
                continue;
            }
            if self.since.as_deref() == Some(id) {
                break;
            }
            if self.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if self.includes(&row) {
                out.push(row);
            }
        }
        out
    }

    fn includes(&self, row: &Row) -> bool {
        let r = &row.record;
        let f = &self.filters;
        let running = row.state.status == Status::Running;
        if !running && !self.all && self.limit.is_none() {
            return false;
        }
        // dockerd tries the name with and without its leading `/` (`^db$` and `^/db$`).
        let named = f.matches("name", &format!("/{}", r.name)) || f.matches("name", &r.name);
        if !named || !f.matches("id", &r.id) {
            return false;
        }
        if !f.matches_labels("label", |k| r.spec.labels.get(k).map(String::as_str)) {
            return false;
        }
        if !self.exited.is_empty() {
            let code = row.state.exit_code.unwrap_or(0) as i64;
            if running || row.state.started_at.is_none() || !self.exited.contains(&code) {
                return false;
            }
        }
        if !f.matches("status", row.state_word()) {
            return false;
        }
        // No swarm: no container is a task.
        if f.bool("is-task").ok().flatten() == Some(true) {
            return false;
        }
        if !self.publish.is_empty() && !published(r).any(|p| self.publish.contains(&p)) {
            return false;
        }
        if !self.expose.is_empty() && !exposed(r).any(|p| self.expose.contains(&p)) {
            return false;
        }
        if let Some(ids) = &self.ancestors {
            if !ids.contains(&r.image_id) {
                return false;
            }
        }
        // `none`: no healthcheck, or not running (as dockerd).
        let health = f.get("health");
        let own = row.health.unwrap_or("none");
        if !health.is_empty() && !health.iter().any(|h| h == own) {
            return false;
        }
        // A network's name, its id, or a prefix of its id (as dockerd).
        let networks = f.get("network");
        if !networks.is_empty()
            && !row.networks().iter().any(|(name, id)| {
                networks
                    .iter()
                    .any(|v| v == name || (!v.is_empty() && id.starts_with(v.as_str())))
            })
        {
            return false;
        }
        let volumes = f.get("volume");
        if !volumes.is_empty()
            && !r.mounts.iter().any(|m| {
                let name = if m.name.is_empty() {
                    &m.source
                } else {
                    &m.name
                };
                volumes.iter().any(|v| *v == m.destination || v == name)
            })
        {
            return false;
        }
        true
    }
}

/// `80/tcp` keys of the container's port bindings (dockerd: `HostConfig.PortBindings`).
fn published(r: &ContainerRecord) -> impl Iterator<Item = String> + '_ {
    let bound = r
        .spec
        .host
        .port_bindings
        .iter()
        .map(|b| with_proto(&b.port));
    let all = r
        .network
        .iter()
        .flat_map(|n| n.ports.iter())
        .map(|p| format!("{}/{}", p.private_port, p.protocol));
    bound.chain(all)
}

/// `80/tcp` keys of the container's exposed ports (its own, and those it publishes).
fn exposed(r: &ContainerRecord) -> impl Iterator<Item = String> + '_ {
    r.spec
        .exposed_ports
        .iter()
        .map(|p| with_proto(p))
        .chain(published(r))
}

fn with_proto(port: &str) -> String {
    if port.contains('/') {
        port.to_string()
    } else {
        format!("{port}/tcp")
    }
}

/// `publish`/`expose` values: `PORT[-END][/PROTO]` (tcp by default) → `port/proto` keys.
fn ports(name: &str, values: &[String]) -> Result<HashSet<String>, DaemonError> {
    let mut out = HashSet::new();
    for v in values {
        if v.contains(':') {
            return Err(DaemonError::Invalid(format!(
                "filter for '{name}' should not contain ':': {v}"
            )));
        }
        let (range, proto) = v.split_once('/').unwrap_or((v, "tcp"));
        let bad = || DaemonError::Invalid(format!("invalid filter '{name}={v}': not a port range"));
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = range.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if end < start || !["tcp", "udp", "sctp"].contains(&proto) {
            return Err(bad());
        }
        for p in start..=end {
            out.insert(format!("{p}/{proto}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::record::{MountPoint, PortBindingSpec};

    fn row(id: &str, name: &str, status: Status, code: i32) -> Row {
        let mut record = crate::daemon::record::ContainerRecord {
            schema: 2,
            id: id.to_string(),
            name: name.to_string(),
            created: 0,
            image: "img".into(),
            image_id: format!("sha256:{name}"),
            spec: Default::default(),
            path: "true".into(),
            args: vec![],
            network: None,
            mounts: vec![],
            restart_count: 0,
            stopped_by_user: false,
            start_error: None,
        };
        record.spec.host.network_mode = "default".into();
        let state = ContainerState {
            status,
            pid: None,
            exit_code: (status == Status::Exited).then_some(code),
            oom_killed: false,
            created_at: chrono::Utc::now(),
            started_at: (status != Status::Created).then(chrono::Utc::now),
            finished_at: None,
            error: None,
        };
        Row {
            record,
            state,
            restarting: false,
            paused: false,
            health: None,
        }
    }

    fn rows() -> Vec<Row> {
        let mut web = row("cccc", "web", Status::Running, 0);
        web.record.spec.labels.insert("app".into(), "shop".into());
        web.health = Some("healthy");
        web.record.spec.host.port_bindings.push(PortBindingSpec {
            port: "80/tcp".into(),
            host_ip: String::new(),
            host_port: "8080".into(),
        });
        let mut db = row("bbbb", "db", Status::Exited, 3);
        db.record.spec.labels.insert("app".into(), "other".into());
        db.record.mounts.push(MountPoint {
            kind: "volume".into(),
            name: "dbdata".into(),
            source: "/v/dbdata/_data".into(),
            destination: "/data".into(),
            ..Default::default()
        });
        db.record.spec.exposed_ports.push("5432/tcp".into());
        let mut cache = row("aaaa", "cache", Status::Created, 0);
        cache.record.spec.host.network_mode = "none".into();
        vec![web, db, cache]
    }

    fn names(raw: &str, all: bool) -> Result<Vec<String>, DaemonError> {
        let f = Filters::parse(Some(raw), NAMES)?;
        let all_rows = rows();
        let find = |n: &str| {
            all_rows
                .iter()
                .find(|r| r.record.name == n || r.record.id == n)
                .map(|r| r.record.clone())
                .ok_or_else(|| DaemonError::NoSuchContainer(n.to_string()))
        };
        let q = ContainerQuery::new(f, all, None, find, |i| match i {
            "dbimage" => vec!["sha256:db".to_string()],
            "base" => vec!["sha256:base".to_string(), "sha256:web".to_string()],
            _ => Vec::new(),
        })?;
        Ok(q.select(rows())
            .into_iter()
            .map(|r| r.record.name)
            .collect())
    }

    #[test]
    fn each_filter_selects_as_dockerd() {
        let n = |raw: &str| names(raw, true).unwrap();
        assert_eq!(n("{}"), ["web", "db", "cache"]);
        assert_eq!(names("{}", false).unwrap(), ["web"]);
        assert_eq!(n(r#"{"label":["app"]}"#), ["web", "db"]);
        assert_eq!(n(r#"{"label":["app=shop"]}"#), ["web"]);
        assert!(n(r#"{"label":["app=nomatch"]}"#).is_empty());
        assert_eq!(n(r#"{"label":["app","app=other"]}"#), ["db"]);
        assert_eq!(names(r#"{"status":["exited"]}"#, false).unwrap(), ["db"]);
        assert_eq!(n(r#"{"status":["created","running"]}"#), ["web", "cache"]);
        assert_eq!(n(r#"{"exited":["3"]}"#), ["db"]);
        assert!(n(r#"{"exited":["0"]}"#).is_empty());
        assert_eq!(n(r#"{"name":["^/db$"]}"#), ["db"]);
        assert_eq!(n(r#"{"name":["^db$"]}"#), ["db"]);
        assert_eq!(n(r#"{"name":["e"]}"#), ["web", "cache"]);
        assert_eq!(n(r#"{"id":["bbbb"]}"#), ["db"]);
        assert_eq!(n(r#"{"before":["web"]}"#), ["db", "cache"]);
        assert_eq!(n(r#"{"since":["cache"]}"#), ["web", "db"]);
        assert_eq!(n(r#"{"since":["cache"],"before":["web"]}"#), ["db"]);
        assert_eq!(n(r#"{"ancestor":["dbimage"]}"#), ["db"]);
        assert!(n(r#"{"ancestor":["nosuch"]}"#).is_empty());
        assert_eq!(n(r#"{"ancestor":["base"]}"#), ["web"]);
        assert_eq!(n(r#"{"network":["bridge"]}"#), ["web", "db"]);
        let bridge = crate::daemon::network::network_id("bridge");
        let by_id = |id: &str| n(&format!(r#"{{"network":["{id}"]}}"#));
        assert_eq!(by_id(&bridge), ["web", "db"]);
        assert_eq!(by_id(&bridge[..12]), ["web", "db"]);
        assert!(by_id("0123456789ab").is_empty() || bridge.starts_with("0123456789ab"));
        assert_eq!(n(r#"{"network":["none"]}"#), ["cache"]);
        assert_eq!(n(r#"{"volume":["dbdata"]}"#), ["db"]);
        assert_eq!(n(r#"{"volume":["/data"]}"#), ["db"]);
        assert_eq!(n(r#"{"publish":["80"]}"#), ["web"]);
        assert_eq!(n(r#"{"publish":["70-90/tcp"]}"#), ["web"]);
        assert!(n(r#"{"publish":["80/udp"]}"#).is_empty());
        assert_eq!(n(r#"{"expose":["5432"]}"#), ["db"]);
        assert_eq!(n(r#"{"expose":["80"]}"#), ["web"]);
        assert_eq!(n(r#"{"health":["none"]}"#), ["db", "cache"]);
        assert_eq!(n(r#"{"health":["healthy"]}"#), ["web"]);
        assert!(n(r#"{"health":["unhealthy"]}"#).is_empty());
        assert!(n(r#"{"is-task":["true"]}"#).is_empty());
        assert_eq!(n(r#"{"is-task":["false"]}"#).len(), 3);
    }

    #[test]
    fn bad_filters_are_refused() {
        let e = |raw: &str| names(raw, true).unwrap_err().to_string();
        assert_eq!(e(r#"{"colour":["red"]}"#), "invalid filter 'colour'");
        assert!(e(r#"{"status":["sleeping"]}"#).starts_with("invalid filter 'status=sleeping'"));
        assert_eq!(e(r#"{"exited":["x"]}"#), "invalid filter 'exited=x'");
        assert!(e(r#"{"publish":["1:2"]}"#).contains("should not contain ':'"));
        assert!(e(r#"{"health":["sick"]}"#).contains("health: sick"));
        assert!(matches!(
            names(r#"{"before":["ghost"]}"#, true),
            Err(DaemonError::NoSuchContainer(_))
        ));
    }
}
