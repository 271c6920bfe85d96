//! Docker's event stream (`GET /events`): what happened to containers, images, volumes and
//! networks, kept in a bounded ring (for `since`) and broadcast to streaming clients.
//! Filters: `type`, `event`, `container`, `image`, `volume`, `network`, `label`; anything
//! else is a 400.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::error::DaemonError;
use super::filters::Filters;

/// Events kept for `since`.
const RING: usize = 1024;

/// The filter names `/events` accepts.
pub const NAMES: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "volume",
    "network",
    "label",
];

/// One event, in Docker's shape once serialized ([`Event::json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Order of emission, to skip duplicates between the ring and the live stream.
    pub seq: u64,
    /// `container`, `image`, `volume` or `network`.
    pub kind: &'static str,
    /// `create`, `start`, `die`, `destroy`, `pull`, `tag`, ...
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub time_nano: i128,
}

impl Event {
    pub fn json(&self) -> Value {
        let secs = self.time_nano.div_euclid(1_000_000_000) as i64;
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": secs,
            "timeNano": self.time_nano as i64,
        });
        // The pre-1.22 fields, which the docker CLI and SDKs still print.
        if self.kind == "container" || self.kind == "image" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            if let Some(from) = self.attributes.get("image") {
                v["from"] = json!(from);
            }
        }
        v
    }

    fn matches(&self, f: &Filters) -> bool {
        let attr = |k: &str| self.attributes.get(k).map(String::as_str);
        let any = |name: &str, candidates: &[Option<&str>]| {
            let values = f.get(name);
            values.is_empty()
                || values
                    .iter()
                    .any(|v| candidates.iter().flatten().any(|c| c == v))
        };
        let is = |k: &str| (self.kind == k).then_some(self.id.as_str());
        // dockerd (moby#25798): with `health_status`, `exec_create` or `exec_start` among the
        // values, a value also matches the actions it begins (`health_status: healthy`).
        let events = f.get("event");
        let fuzzy = events
            .iter()
            .any(|v| matches!(v.as_str(), "health_status" | "exec_create" | "exec_start"));
        let event_ok = events.is_empty()
            || events
                .iter()
                .any(|v| self.action == *v || (fuzzy && self.action.starts_with(v.as_str())));
        any("type", &[Some(self.kind)])
            && event_ok
            && any("container", &[is("container"), attr("name").filter(|_| self.kind == "container")])
            && any("image", &[is("image"), attr("image"), attr("name").filter(|_| self.kind == "image")])
            && any("volume", &[is("volume")])
            && any("network", &[is("network"), attr("name").filter(|_| self.kind == "network")])
            && f.matches_labels("label", attr)
            // A container filter shows only container events (as dockerd), etc.
            && (f.get("container").is_empty() || self.kind == "container")
            && (f.get("volume").is_empty() || self.kind == "volume")
            && (f.get("network").is_empty() || self.kind == "network")
    }
}

/// The attributes every event of container `r` carries (dockerd's): its labels, `name` and
/// `image`.
pub fn container_attributes(r: &super::record::ContainerRecord) -> Vec<(String, String)> {
    r.spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            ("name".to_string(), r.name.clone()),
            ("image".to_string(), r.image.clone()),
        ])
        .collect()
}

/// The daemon's event log.
pub struct EventLog {
    ring: Mutex<(u64, VecDeque<Event>)>,
    tx: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Mutex::new((0, VecDeque::with_capacity(RING))),
            tx: broadcast::channel(RING).0,
        }
    }
}

impl EventLog {
    /// Records and broadcasts an event.
    pub fn emit(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: impl IntoIterator<Item = (String, String)>,
    ) {
        let time_nano = chrono::Utc::now()
            .timestamp_nanos_opt()
            .map(i128::from)
            .unwrap_or(0);
        let mut ring = self.ring.lock().expect("events lock");
        ring.0 += 1;
        let e = Event {
            seq: ring.0,
            kind,
            action: action.to_string(),
            id: id.to_string(),
            attributes: attributes.into_iter().collect(),
            time_nano,
        };
        if ring.1.len() == RING {
            ring.1.pop_front();
        }
        ring.1.push_back(e.clone());
        // Sent under the lock, so a subscriber sees the ring and the stream in one order.
        let _ = self.tx.send(e);
    }

    /// A container event with Docker's attributes (name, image, labels, and `extra`).
    pub fn container(
        &self,
        action: &str,
        r: &super::record::ContainerRecord,
        extra: &[(&str, String)],
    ) {
        let attrs = container_attributes(r)
            .into_iter()
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        self.emit("container", action, &r.id, attrs);
    }

    /// A network event for `r`'s network (`connect` at start, `disconnect` after exit), as
    /// dockerd emits them: the network's id, its `name`, `type` (driver) and `container`.
    pub fn network(&self, action: &str, r: &super::record::ContainerRecord) {
        let name = super::container_filter::network_name(&r.spec.host.network_mode);
        let driver = match name {
            "none" => "null",
            "host" => "host",
            _ => "bridge",
        };
        self.emit(
            "network",
            action,
            &super::network::network_id(name),
            [
                ("container".to_string(), r.id.clone()),
                ("name".to_string(), name.to_string()),
                ("type".to_string(), driver.to_string()),
            ],
        );
    }

    /// A `mount` (at start) or `unmount` (after exit) event for each volume `r` mounts, as
    /// dockerd emits them: the volume's name, `container`, `driver`, and for `mount` the
    /// `destination`, `read/write` and `propagation`.
    pub fn volumes(&self, action: &str, r: &super::record::ContainerRecord) {
        for m in r.mounts.iter().filter(|m| m.kind == "volume") {
            let mut attrs = vec![
                ("container".to_string(), r.id.clone()),
                ("driver".to_string(), "local".to_string()),
            ];
            if action == "mount" {
                attrs.extend([
                    ("destination".to_string(), m.destination.clone()),
                    ("read/write".to_string(), (!m.read_only).to_string()),
                    ("propagation".to_string(), String::new()),
                ]);
            }
            self.emit("volume", action, &m.name, attrs);
        }
    }

    /// The recorded events matching `filters` from `since` (Unix ns) on, and a receiver of
    /// those that follow (events after the last one returned).
    pub fn subscribe(
        &self,
        filters: &Filters,
        since: Option<i128>,
    ) -> (Vec<Event>, u64, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().expect("events lock");
        let rx = self.tx.subscribe();
        let past = match since {
            Some(s) => ring
                .1
                .iter()
                .filter(|e| e.time_nano >= s && e.matches(filters))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, ring.0, rx)
    }

    /// Checks the filters of an `/events` request.
    pub fn parse_filters(raw: Option<&str>) -> Result<Filters, DaemonError> {
        let f = Filters::parse(raw, NAMES)?;
        for t in f.get("type") {
            if ![
                "container",
                "image",
                "volume",
                "network",
                "daemon",
                "plugin",
                "node",
                "service",
                "secret",
                "config",
            ]
            .contains(&t.as_str())
            {
                return Err(DaemonError::Invalid(format!("invalid filter 'type={t}'")));
            }
        }
        Ok(f)
    }

    /// Whether `e` passes `filters` (for the live part of a stream).
    pub fn wanted(e: &Event, filters: &Filters) -> bool {
        e.matches(filters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_replays_since_and_filters_select() {
        let log = EventLog::default();
        log.emit(
            "container",
            "create",
            "c1",
            [
                ("name".to_string(), "web".to_string()),
                ("image".to_string(), "busybox".to_string()),
                ("app".to_string(), "x".to_string()),
            ],
        );
        log.emit(
            "image",
            "pull",
            "busybox:latest",
            [("name".to_string(), "busybox:latest".to_string())],
        );
        log.emit("volume", "create", "v1", []);
        let all = |raw: &str| {
            let f = EventLog::parse_filters(Some(raw)).unwrap();
            log.subscribe(&f, Some(0))
                .0
                .into_iter()
                .map(|e| format!("{} {}", e.kind, e.action))
                .collect::<Vec<_>>()
        };
        assert_eq!(all("{}").len(), 3);
        assert_eq!(all(r#"{"type":["image"]}"#), ["image pull"]);
        assert_eq!(all(r#"{"container":["web"]}"#), ["container create"]);
        assert_eq!(all(r#"{"image":["busybox"]}"#), ["container create"]);
        assert_eq!(all(r#"{"label":["app=x"]}"#), ["container create"]);
        assert_eq!(
            all(r#"{"event":["create"],"type":["volume"]}"#),
            ["volume create"]
        );
        assert!(EventLog::parse_filters(Some(r#"{"colour":["x"]}"#)).is_err());
        assert!(EventLog::parse_filters(Some(r#"{"type":["boat"]}"#)).is_err());
        let future = log.subscribe(&Filters::default(), Some(i128::MAX)).0;
        assert!(future.is_empty());
        for _ in 0..RING + 5 {
            log.emit("volume", "create", "v", []);
        }
        assert_eq!(log.subscribe(&Filters::default(), Some(0)).0.len(), RING);
        let e = log
            .subscribe(&Filters::default(), Some(0))
            .0
            .pop()
            .unwrap()
            .json();
        assert_eq!(
            (e["Type"].as_str(), e["Action"].as_str()),
            (Some("volume"), Some("create"))
        );
    }

    #[test]
    fn health_and_exec_event_filters_match_by_prefix() {
        let log = EventLog::default();
        for action in [
            "health_status: healthy",
            "exec_create: echo x",
            "exec_start: echo x",
            "exec_die",
            "create",
        ] {
            log.emit("container", action, "c1", []);
        }
        let actions = |raw: &str| {
            let f = EventLog::parse_filters(Some(raw)).unwrap();
            log.subscribe(&f, Some(0))
                .0
                .into_iter()
                .map(|e| e.action)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(r#"{"event":["health_status"]}"#),
            ["health_status: healthy"]
        );
        assert_eq!(
            actions(r#"{"event":["exec_start","exec_die"]}"#),
            ["exec_start: echo x", "exec_die"]
        );
        // Other names match exactly, as dockerd's: `exec` is no prefix filter.
        assert!(actions(r#"{"event":["exec"]}"#).is_empty());
        assert_eq!(actions(r#"{"event":["create"]}"#), ["create"]);
    }
}
