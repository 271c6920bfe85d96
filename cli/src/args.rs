//! The command line, with the flags Docker users already know.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "A container engine that starts images before they are downloaded",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Clients: the daemon socket to connect to (unix:///path or a path; else $SKIFF_HOST).
    /// `skiff daemon`: a socket to listen on, repeatable [default:
    /// unix://<exec-root>/skiff.sock]; $SKIFF_HOST never applies to the daemon.
    #[arg(short = 'H', long = "host", global = true, action = clap::ArgAction::Append)]
    pub host: Vec<String>,

    /// Volatile state root (socket, mounts); used to find the socket when -H is not given
    /// [default: /run/skiff, or the daemon config file's exec-root].
    #[arg(long, env = "SKIFF_EXEC_ROOT", global = true)]
    pub exec_root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// Each subcommand's arguments are built only when it is the one invoked (`defer`): building
// all of them (hundreds of `run`/`create` and daemon flags) was most of a client's start-up
// allocations and page faults, paid by every `skiff` command.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Run the daemon (serves the Docker Engine API on <exec-root>/skiff.sock).
    Daemon(DaemonArgs),
    /// Measure cold and warm starts of an image on private daemons (needs root).
    Bench(BenchArgs),
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(CreateArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(ContainersArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Pause all processes within one or more containers.
    Pause(ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(ContainersArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(StatsArgs),
    /// Update configuration of one or more containers.
    Update(UpdateArgs),
    /// Get real time events from the daemon.
    Events(EventsArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(ContainerArg),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Copy files/folders between a container and the local filesystem.
    Cp(CpArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Build an image from a Dockerfile (docs/build.md).
    Build(BuildArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(BuilderCommand),
    /// Create a new image from a container's changes.
    Commit(CommitArgs),
    /// Save one or more images to a tar archive (docker-archive and OCI layout).
    Save(SaveArgs),
    /// Load images from a tar archive.
    Load(LoadArgs),
    /// Return low-level information on containers or images.
    Inspect(InspectArgs),
    /// List images.
    Images(ImagesArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage skiff.
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Log in to a registry (credentials are checked by the daemon, kept by the client).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Show the skiff version information.
    Version,
    /// Display system-wide information.
    Info,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Daemon settings file (dockerd's keys; see docs/daemon-config.md). Flags override it.
    #[arg(long, default_value = "/etc/skiff/daemon.json")]
    pub config_file: PathBuf,
    /// Persistent state root [default: /var/lib/skiff].
    #[arg(long, env = "SKIFF_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// Byte budget of the chunk cache (e.g. 10g, 512m) [default: 10g].
    #[arg(long)]
    pub cache_size: Option<String>,
    /// Registries (host[:port], or a CIDR such as 10.0.0.0/8 covering their addresses)
    /// reached over HTTPS without verification, then plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A Docker Hub mirror (`http[s]://host[:port]`), tried before Docker Hub for pulls
    /// of docker.io images (repeat for several, tried in order).
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// Where docker.io is reached instead of Docker Hub (tests only).
    #[arg(long, hide = true)]
    pub docker_hub_origin: Option<String>,
    /// Per-registry CAs (`<dir>/<host[:port]>/*.crt`) and client certificates (`*.cert` +
    /// `*.key`), laid out like Docker's certs.d [default: /etc/skiff/certs.d].
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// The bridge containers attach to by default [default: skiff0].
    #[arg(long)]
    pub bridge: Option<String>,
    /// The bridge's subnet; the gateway is its first address [default: 172.18.0.0/16].
    #[arg(long = "bip")]
    pub subnet: Option<String>,
    /// Log at debug level.
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Do not record access profiles of lazily pulled images (which files a container
    /// reads in its first seconds; see docs/profiles.md).
    #[arg(long)]
    pub no_profile_record: bool,
    /// Do not fetch access profiles from registries nor prefetch what they name at mount.
    #[arg(long)]
    pub no_profile_prefetch: bool,
    /// Do not fetch, with a lazy pull, the image's default program and the libraries it
    /// loads before it is started.
    #[arg(long)]
    pub no_program_prefetch: bool,
    /// Do not fetch the rest of lazy layers in the background after a mount.
    #[arg(long)]
    pub no_background_fetch: bool,
    /// Bandwidth of the background fetch, bytes per second (e.g. 20m; 0 = unbounded)
    /// [default: 20m].
    #[arg(long)]
    pub background_fetch_rate: Option<String>,
    /// Pull zstd:chunked, eStargz and SOCI-indexed gzip layers in full instead of lazily
    /// (for comparisons).
    #[arg(long)]
    pub no_lazy_pull: bool,
    /// Serve containerd's Snapshots API (a remote snapshotter) on this socket; "" turns it
    /// off [default: <exec-root>/snapshotter.sock] (docs/kubernetes.md).
    #[arg(long, value_name = "PATH")]
    pub snapshotter_socket: Option<String>,
    /// Keep containers and their image mounts running across daemon restarts (default
    /// true; `--live-restore=false` stops containers at shutdown; docs/live-restore.md).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub live_restore: Option<bool>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Rounds per mode (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Directory for bench.md and bench.svg (default: the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also measure a full (non-lazy) pull of the same image.
    #[arg(long)]
    pub full: bool,
    /// Publish the profile the first cold run recorded to the image's registry
    /// (`skiff image profile push`) and let the `cold+profile` runs fetch it from there
    /// (a fresh data root with no local profile), instead of copying it over.
    #[arg(long)]
    pub push_profile: bool,
    /// Also start N containers of the image at once on one fresh daemon (`pull` + `run`
    /// each, no profile), timed to the last exit.
    #[arg(long, value_name = "N")]
    pub concurrent: Option<u32>,
    /// The image (pulled from its registry on every cold run).
    pub image: String,
    /// Command to run instead of the image's default (after `--`).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ContainerOpts {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory soft limit (e.g. 32m).
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// Tune container pids limit (set -1 for unlimited).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Keep STDIN open even if not attached.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Pull image before running ("always", "missing", "never").
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Connect a container to a network (bridge, none, host, or a user-defined one).
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Add a network-scoped alias for the container (user-defined networks).
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address on the (user-defined) network, e.g. 172.30.100.104.
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a container's port(s) to the host.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Set metadata on a container.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Bind mount a volume: NAME:/path[:ro|rw|nocopy], /host/path:/path[:ro|rw], or /path.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=...,target=...[,readonly].
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: /path[:options].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Mount the volumes of these containers: CONTAINER[:ro|rw].
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Restart policy: no, always, unless-stopped, on-failure[:max-retries].
    #[arg(long)]
    pub restart: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long = "dns-option")]
    pub dns_options: Vec<String>,
    /// Ulimit options: NAME=SOFT[:HARD].
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Size of /dev/shm (e.g. 64m).
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Sysctl options: KEY=VALUE (namespaced ones).
    #[arg(long = "sysctl")]
    pub sysctls: Vec<String>,
    /// Cgroup namespace: private or host.
    #[arg(long)]
    pub cgroupns: Option<String>,
    /// Logging driver: json-file, local or none.
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options: max-size, max-file, compress (KEY=VALUE).
    #[arg(long = "log-opt")]
    pub log_opts: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges.
    #[arg(long = "security-opt")]
    pub security_opts: Vec<String>,
    /// Add Linux capabilities.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Add a host device: HOST[:CONTAINER[:PERMISSIONS]].
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Image to run.
    pub image: String,
    /// Command and arguments (override the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run container in background and print container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainerArg {
    pub container: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a local path.
    pub src: String,
    /// CONTAINER:DEST_PATH or a local path.
    pub dst: String,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeat for several.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from standard input).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build-time variable (`NAME=value`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The build stage to stop at.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull the base images again.
    #[arg(long)]
    pub pull: bool,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Metadata for the image (`key=value`).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Network for RUN steps (bridge, host, none).
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Platform (only the host's is supported).
    #[arg(long)]
    pub platform: Option<String>,
    /// Remove build step containers after a failed step too.
    #[arg(long)]
    pub force_rm: bool,
    /// The build context directory.
    pub context: PathBuf,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g. "Jane <jane@example.com>").
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// EXPOSE, LABEL, VOLUME).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause the container during commit.
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    pub container: String,
    /// `repository[:tag]`.
    pub repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of standard input.
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum BuilderCommand {
    /// Remove the build cache.
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Print sizes in bytes and full commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events created since timestamp (unix seconds, RFC 3339, or relative like 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output (type=container, event=start, container=NAME, image=REF, label=K[=V]).
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format the output: `json` (one JSON object per event) or a Go template over the
    /// event (`{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}`, `{{.Status}}`,
    /// `{{.ID}}`, `{{.From}}`, `{{.Scope}}`, `{{.Time}}`, `{{.TimeNano}}`).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// `ps` options (default `-ef`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory soft limit (e.g. 32m).
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// Tune container pids limit.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Restart policy (no, always, unless-stopped, on-failure[:N]).
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainersArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the latest created container.
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Filter output (label=K[=V], status=exited, name=..., ancestor=..., docs/daemon.md).
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format output: a Go template over the docker CLI's fields ({{.ID}}, {{.Names}},
    /// {{.Image}}, {{.Status}}, {{.State}}, {{.Ports}}, {{.Labels}}, {{index .Label "k"}} ...),
    /// "table TEMPLATE" for aligned columns with a header, or "json" (docs/inspect.md).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<i64>,
    /// Signal to send to the container.
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Return JSON for specified type (container, image).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Format output using a Go template ("json": one JSON line; docs/inspect.md).
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Display total file sizes if the type is container (SizeRw, SizeRootFs).
    #[arg(short = 's', long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `image|volume|network inspect`.
#[derive(Args, Debug)]
pub struct NamesInspectArgs {
    /// Format output using a Go template ("json": one JSON line; docs/inspect.md).
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show all images.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filter output (reference=..., dangling=true, label=K[=V], before=..., since=...).
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Only images whose reference matches (as `--filter reference=`).
    pub reference: Option<String>,
    /// Format output: a Go template over the docker CLI's fields, "table TEMPLATE", or
    /// "json" (docs/inspect.md).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (insecure: it shows in the process list; use --password-stdin).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry (`host[:port]`); Docker Hub when omitted.
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (`host[:port]`); Docker Hub when omitted.
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Suppress verbose output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Recompress every layer: zstd:chunked (lazy on skiff, tar+zstd elsewhere), estargz
    /// (lazy on skiff and stargz-snapshotter; the pushed config gets eStargz's diff_ids),
    /// gzip or zstd. Without it layers are pushed as they are stored.
    #[arg(long)]
    pub compression: Option<String>,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Remove one or more images.
    Rm(RmiArgs),
    /// Display detailed information on one or more images.
    Inspect(NamesInspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Import a root filesystem (directory or tarball) as an image.
    Import(ImportArgs),
    /// Convert an image to zstd:chunked or eStargz (--format) and push it (registry to
    /// registry).
    Convert(ConvertArgs),
    /// Build a SOCI index v1 (zTOCs of the gzip layers) of an image in a registry and push
    /// it there as a referrer of the image; lazy pulls of the image use it (docs/formats.md).
    Index(IndexArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Access profiles of lazily pulled images (see docs/profiles.md).
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ProfileCommand {
    /// List the recorded access profiles.
    #[command(alias = "list")]
    Ls,
    /// Print profiles (by image name or profile key) as JSON.
    Inspect(ProfileNames),
    /// Remove profiles (by image name or profile key).
    #[command(alias = "remove")]
    Rm(ProfileNames),
    /// Publish an image's profile to its registry (an OCI artifact referring to the image).
    Push(ProfilePush),
}

#[derive(Args, Debug)]
pub struct ProfilePush {
    /// The image, by the registry reference it was pulled as.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ProfileNames {
    /// Image names or profile keys (64 hex digits).
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Layer compression: gzip or zstd.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// A root filesystem directory, or a tarball of one ("-" for standard input).
    pub source: PathBuf,
    /// Reference to give the image.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Registries (host[:port], or a CIDR such as 10.0.0.0/8) reached over HTTPS without
    /// verification, then plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Layer format written: zstd:chunked or estargz.
    #[arg(long, default_value = "zstd:chunked")]
    pub format: skiff_store::convert::ConvertFormat,
    /// Per-registry CAs and client certificates, laid out like Docker's certs.d (as the
    /// daemon's `--certs-dir`).
    #[arg(long, default_value = "/etc/skiff/certs.d")]
    pub certs_dir: PathBuf,
    pub source: String,
    pub destination: String,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Registries (host[:port]) reached over HTTPS without verification, then plain HTTP
    /// (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Layers with fewer compressed bytes are not indexed, as SOCI does: bytes, or with a
    /// k, m or g suffix.
    #[arg(long, default_value = "10m")]
    pub min_layer_size: String,
    /// Least uncompressed bytes between two checkpoints (the unit a lazy read fetches):
    /// bytes, or with a k, m or g suffix.
    #[arg(long, default_value = "4m")]
    pub span_size: String,
    /// Per-registry CAs and client certificates, laid out like Docker's certs.d (as the
    /// daemon's `--certs-dir`).
    #[arg(long, default_value = "/etc/skiff/certs.d")]
    pub certs_dir: PathBuf,
    /// The image, in its registry.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(NamesInspectArgs),
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Set metadata for a volume (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Volume driver (only "local").
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set driver specific options (type=, device=, o=; docs/volumes.md).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// A name; a random one when omitted.
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Only display volume names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter output (dangling=true, driver=local, label=K[=V], name=...).
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format output: a Go template over the docker CLI's fields, "table TEMPLATE", or
    /// "json" (docs/inspect.md).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Do not fail on a volume that does not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// Create a network (bridge driver).
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Display detailed information on one or more networks.
    Inspect(NamesInspectArgs),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(NetworkNamesArgs),
    /// Connect a container to a network.
    Connect(NetworkConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(NetworkDisconnectArgs),
    /// Remove all unused user-defined networks.
    Prune(NetworkPruneArgs),
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Driver to manage the network (only "bridge").
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format (default: from the daemon's default-address-pools).
    #[arg(long)]
    pub subnet: Option<String>,
    /// IPv4 gateway for the subnet (default: its first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Enable manual container attachment.
    #[arg(long)]
    pub attachable: bool,
    /// Set metadata on a network (KEY=VALUE).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Set driver specific options (KEY=VALUE).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Only display network IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (e.g. "driver=bridge").
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format output: a Go template over the docker CLI's fields, "table TEMPLATE", or
    /// "json" (docs/inspect.md).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetworkNamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkConnectArgs {
    /// Add a network-scoped alias for the container.
    #[arg(long)]
    pub alias: Vec<String>,
    /// IPv4 address.
    #[arg(long)]
    pub ip: Option<String>,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct NetworkDisconnectArgs {
    /// Force the container to disconnect from a network.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct NetworkPruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<key>=<value>", "until=<timestamp>").
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum SystemCommand {
    /// Remove unused data (stopped containers, unused images, unreferenced cache chunks).
    Prune(PruneArgs),
    /// Show skiff disk usage.
    Df,
    /// Display system-wide information.
    Info,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_docker_flags_and_a_trailing_command() {
        let cli = Cli::try_parse_from([
            "skiff",
            "run",
            "--rm",
            "-it",
            "-e",
            "A=1",
            "-h",
            "box",
            "--memory",
            "64m",
            "img",
            "sh",
            "-c",
            "echo -n hi",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.rm && r.opts.interactive && r.opts.tty);
        assert_eq!(r.opts.hostname.as_deref(), Some("box"));
        assert_eq!(r.opts.image, "img");
        assert_eq!(r.opts.command, ["sh", "-c", "echo -n hi"]);
    }
}
