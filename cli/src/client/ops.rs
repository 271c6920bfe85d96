//! `rename`, `pause`, `unpause`, `top`, `stats`, `update`: changes to and reports on live
//! containers.

use anyhow::{bail, Context, Result};
use bollard::container::{
    ListContainersOptions, RenameContainerOptions, TopOptions, UpdateContainerOptions,
};
use bollard::Docker;

use crate::args::{ContainersArgs, EventsArgs, RenameArgs, StatsArgs, TopArgs, UpdateArgs};
use crate::client::error_message;

pub async fn rename(docker: &Docker, args: &RenameArgs) -> Result<()> {
    docker
        .rename_container(
            &args.container,
            RenameContainerOptions {
                name: args.new_name.clone(),
            },
        )
        .await?;
    Ok(())
}

pub async fn pause(docker: &Docker, args: &ContainersArgs, paused: bool) -> Result<()> {
    let mut failed = false;
    for c in &args.containers {
        let res = if paused {
            docker.pause_container(c).await
        } else {
            docker.unpause_container(c).await
        };
        match res {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        bail!(
            "failed to {} one or more containers",
            if paused { "pause" } else { "unpause" }
        );
    }
    Ok(())
}

pub async fn top(docker: &Docker, args: &TopArgs) -> Result<()> {
    let ps_args = args.ps_args.join(" ");
    let opts = (!ps_args.is_empty()).then_some(TopOptions {
        ps_args: ps_args.as_str(),
    });
    let t = docker.top_processes(&args.container, opts).await?;
    let titles = t.titles.unwrap_or_default();
    let rows = t.processes.unwrap_or_default();
    let mut widths: Vec<usize> = titles.iter().map(|t| t.len()).collect();
    for r in &rows {
        for (i, f) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(f.len());
            }
        }
    }
    let line = |fields: &[String]| {
        fields
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{f:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&titles));
    for r in &rows {
        println!("{}", line(r));
    }
    Ok(())
}

/// CPU % as the docker CLI computes it: container CPU time over host CPU time between two
/// samples, times the CPUs.
fn cpu_percent(s: &serde_json::Value) -> f64 {
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let cpu = n(&s["cpu_stats"]["cpu_usage"]["total_usage"])
        - n(&s["precpu_stats"]["cpu_usage"]["total_usage"]);
    let sys = n(&s["cpu_stats"]["system_cpu_usage"]) - n(&s["precpu_stats"]["system_cpu_usage"]);
    let cpus = n(&s["cpu_stats"]["online_cpus"]).max(1.0);
    if cpu > 0.0 && sys > 0.0 {
        cpu / sys * cpus * 100.0
    } else {
        0.0
    }
}

/// Bytes read and written, as the docker CLI sums `blkio_stats.io_service_bytes_recursive`
/// (op names in either case).
fn block_io(s: &serde_json::Value) -> (u64, u64) {
    let entries = s["blkio_stats"]["io_service_bytes_recursive"].as_array();
    entries.into_iter().flatten().fold((0, 0), |(r, w), e| {
        let v = e["value"].as_u64().unwrap_or(0);
        match e["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => (r + v, w),
            Some("write") => (r, w + v),
            _ => (r, w),
        }
    })
}

/// `stats`: read as plain JSON (bollard's typed stats refuse the cgroup v1 `memory.stat`
/// keys of newer kernels).
pub async fn stats(docker: &Docker, socket: &std::path::Path, args: &StatsArgs) -> Result<()> {
    let names: Vec<String> = if args.containers.is_empty() {
        docker
            .list_containers(Some(ListContainersOptions::<String> {
                all: args.all,
                ..Default::default()
            }))
            .await?
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n[1..].to_string())))
            .collect()
    } else {
        args.containers.clone()
    };
    loop {
        let mut rows = Vec::new();
        for n in &names {
            let (code, body) = crate::client::profiles::call(
                socket,
                "GET",
                &format!("/containers/{n}/stats?stream=false"),
            )
            .await?;
            let st: serde_json::Value =
                serde_json::from_slice(&body).with_context(|| format!("stats of {n}: not JSON"))?;
            if code != 200 {
                bail!(
                    "Error response from daemon: {}",
                    st["message"].as_str().unwrap_or("stats failed")
                );
            }
            let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let mem = u(&st["memory_stats"]["usage"]);
            let limit = u(&st["memory_stats"]["limit"]);
            let (rx, tx) = st["networks"].as_object().map_or((0, 0), |m| {
                m.values().fold((0, 0), |(r, t), n| {
                    (r + u(&n["rx_bytes"]), t + u(&n["tx_bytes"]))
                })
            });
            let (read, write) = block_io(&st);
            let id = st["id"].as_str().unwrap_or_default();
            use crate::client::format::{binary_size as b, human_size as h};
            rows.push(vec![
                id[..id.len().min(12)].to_string(),
                st["name"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                format!("{:.2}%", cpu_percent(&st)),
                format!("{} / {}", b(mem as i64), b(limit as i64)),
                format!(
                    "{:.2}%",
                    if limit > 0 {
                        mem as f64 / limit as f64 * 100.0
                    } else {
                        0.0
                    }
                ),
                format!("{} / {}", h(rx as i64), h(tx as i64)),
                format!("{} / {}", h(read as i64), h(write as i64)),
                u(&st["pids_stats"]["current"]).to_string(),
            ]);
        }
        crate::client::format::print_table(
            &[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ],
            &rows,
        );
        if args.no_stream {
            return Ok(());
        }
    }
}

pub async fn update(docker: &Docker, args: &UpdateArgs) -> Result<()> {
    let memory = match &args.memory {
        Some(m) => Some(
            crate::client::format::parse_bytes(m)
                .with_context(|| format!("invalid --memory {m:?}"))?,
        ),
        None => None,
    };
    let memory_reservation = match &args.memory_reservation {
        Some(m) => Some(
            crate::client::format::parse_bytes(m)
                .with_context(|| format!("invalid --memory-reservation {m:?}"))?,
        ),
        None => None,
    };
    let restart = match &args.restart {
        Some(r) => {
            let (name, max) = r.split_once(':').unwrap_or((r, "0"));
            let max: i64 = max
                .parse()
                .with_context(|| format!("invalid --restart {r:?}"))?;
            Some(bollard::models::RestartPolicy {
                name: Some(
                    name.parse()
                        .map_err(|_| anyhow::anyhow!("invalid --restart {r:?}"))?,
                ),
                maximum_retry_count: Some(max),
            })
        }
        None => None,
    };
    let opts = UpdateContainerOptions::<String> {
        memory,
        nano_cpus: args.cpus.map(|c| (c * 1e9) as i64),
        cpu_shares: args.cpu_shares.map(|s| s as isize),
        memory_reservation,
        pids_limit: args.pids_limit,
        restart_policy: restart,
        ..Default::default()
    };
    let mut failed = false;
    for c in &args.containers {
        match docker.update_container(c, opts.clone()).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        bail!("failed to update one or more containers");
    }
    Ok(())
}

/// `events`: one line per event, as the docker CLI prints them.
pub async fn events(docker: &Docker, args: &EventsArgs) -> Result<()> {
    use futures::StreamExt;
    // The daemon reads every form Docker takes (seconds, RFC 3339, durations ago).
    let time = |v: &Option<String>| -> Result<Option<String>> { Ok(v.clone()) };
    let mut filters: std::collections::HashMap<String, Vec<String>> = Default::default();
    for f in &args.filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("invalid filter {f:?}: use key=value"))?;
        filters
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    let format = EventFormat::new(args.format.as_deref())?;
    let mut stream = docker.events(Some(bollard::system::EventsOptions::<String> {
        since: time(&args.since)?,
        until: time(&args.until)?,
        filters,
    }));
    while let Some(e) = stream.next().await {
        let e = e?;
        if format.print(&e)? {
            continue;
        }
        let when = e
            .time_nano
            .and_then(|n| {
                chrono::DateTime::from_timestamp(n / 1_000_000_000, (n % 1_000_000_000) as u32)
            })
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default();
        let actor = e.actor.unwrap_or_default();
        let mut attrs: Vec<String> = actor
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attrs.sort();
        println!(
            "{when} {} {} {} ({})",
            e.typ.map(|t| t.to_string()).unwrap_or_default(),
            e.action.unwrap_or_default(),
            actor.id.unwrap_or_default(),
            attrs.join(", ")
        );
    }
    Ok(())
}

/// How `events --format` prints an event, as the docker CLI does.
enum EventFormat {
    /// Docker's one-line text form.
    Text,
    /// The event as the API sent it, one JSON object per line (`json`, `{{json .}}`).
    Json,
    Template(super::template::GoTemplate),
}

impl EventFormat {
    /// A template that does not parse ends the command with exit 64 before it connects.
    fn new(format: Option<&str>) -> Result<EventFormat> {
        let src = match format.map(str::trim) {
            None | Some("") => return Ok(EventFormat::Text),
            Some("json" | "{{json .}}") => return Ok(EventFormat::Json),
            Some(_) => format
                .unwrap_or_default()
                .replace("\\t", "\t")
                .replace("\\n", "\n"),
        };
        match super::template::GoTemplate::parse(&src) {
            Ok(t) => Ok(EventFormat::Template(t)),
            Err(e) => {
                eprintln!("template parsing error: {e}");
                Err(crate::exit::Exit(64).into())
            }
        }
    }

    /// Prints `e` unless this is the text form (`false`: the caller prints it).
    fn print(&self, e: &bollard::models::EventMessage) -> Result<bool> {
        match self {
            EventFormat::Text => Ok(false),
            EventFormat::Json => {
                println!("{}", serde_json::to_string(e)?);
                Ok(true)
            }
            EventFormat::Template(t) => {
                println!("{}", t.render(&event_fields(e))?);
                Ok(true)
            }
        }
    }
}

/// An event under the Go field names the docker CLI's templates use (`events.Message`,
/// whose JSON keys differ: `status`, `id`, `from`, `scope`, `time`, `timeNano`).
fn event_fields(e: &bollard::models::EventMessage) -> serde_json::Value {
    let actor = e.actor.clone().unwrap_or_default();
    let attributes = actor.attributes.clone().unwrap_or_default();
    let typ = e.typ.map(|t| t.to_string()).unwrap_or_default();
    let action = e.action.clone().unwrap_or_default();
    let id = actor.id.clone().unwrap_or_default();
    // The legacy fields are set for container events only (`from` is the image).
    let container = typ == "container";
    serde_json::json!({
        "Status": if container { action.clone() } else { String::new() },
        "ID": if container { id.clone() } else { String::new() },
        "From": if container { attributes.get("image").cloned().unwrap_or_default() } else { String::new() },
        "Type": typ,
        "Action": action,
        "Actor": {"ID": id, "Attributes": attributes},
        "Scope": e.scope.map(|s| s.to_string()).unwrap_or_default(),
        "Time": e.time.unwrap_or_default(),
        "TimeNano": e.time_nano.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_templates_see_the_go_field_names() {
        let e: bollard::models::EventMessage = serde_json::from_value(serde_json::json!({
            "Type": "container", "Action": "start", "scope": "local",
            "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}},
            "time": 1700000000, "timeNano": 1700000000123456789i64
        }))
        .unwrap();
        let t = super::super::template::GoTemplate::parse(
            "{{.Type}} {{.Action}} {{.Status}} {{.ID}} {{.From}} {{.Actor.Attributes.name}} {{.Scope}} {{.Time}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&super::event_fields(&e)).unwrap(),
            "container start start abc busybox web local 1700000000"
        );
        let v = serde_json::json!({"Type": "network", "Action": "create",
            "Actor": {"ID": "n1", "Attributes": {"name": "net"}}});
        let e: bollard::models::EventMessage = serde_json::from_value(v).unwrap();
        let t = super::super::template::GoTemplate::parse("[{{.Status}}|{{.ID}}|{{.Actor.ID}}]")
            .unwrap();
        assert_eq!(t.render(&super::event_fields(&e)).unwrap(), "[||n1]");
    }

    #[test]
    fn block_io_sums_reads_and_writes() {
        let s = serde_json::json!({"blkio_stats": {"io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 4096},
            {"major": 8, "minor": 0, "op": "Write", "value": 100},
            {"major": 8, "minor": 16, "op": "read", "value": 1},
            {"major": 8, "minor": 0, "op": "Total", "value": 4197}
        ]}});
        assert_eq!(super::block_io(&s), (4097, 100));
        assert_eq!(super::block_io(&serde_json::json!({})), (0, 0));
    }
}
