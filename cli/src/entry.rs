//! The two mains: `skiff` (the client) and `skiffd` (the engine: daemon, bench, image
//! conversion, and the hidden entry points the runtime re-execs).
//!
//! They are two binaries because a client is exec'd once per command: the client binary
//! holds only the client's code, so `exec` maps, relocates and faults in a few MB instead of
//! the engine's whole image (about 3 ms of CPU per command; docs/benchmarks.md).

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use crate::args::{Cli, Command, ImageCommand, NetworkCommand, SystemCommand, VolumeCommand};
use crate::exit::Exit;
use crate::{bench, client, daemon};

/// The engine binary's file name, installed next to `skiff`.
pub const ENGINE_BINARY: &str = "skiffd";
/// The client binary's file name.
pub const CLIENT_BINARY: &str = "skiff";

/// `skiff`: runs a client command; hands the engine's commands (`daemon`, `bench`,
/// `image convert`, `image index`) to `skiffd` next to it by `exec` (same PID, argv and
/// environment), so `skiff daemon` stays the one command users know.
pub fn client_main() -> ! {
    no_error_backtraces();
    let cli = Cli::parse();
    if runs_in_engine(&cli.command) {
        exec_engine();
    }
    quiet_broken_stdout();
    run_to_exit(false, dispatch_client(cli))
}

/// `skiffd`: every command, plus the internal entry points (shim, exec helper, launcher,
/// FUSE keeper) that the engine starts as `/proc/self/exe`.
pub fn engine_main() -> ! {
    // The runtime re-execs this binary as the container shim and exec helper; those never
    // return from here.
    skiff_runtime::entry::run_if_internal();
    // A FUSE descriptor keeper (live restore) likewise never returns.
    skiff_fs::keeper::run_if_keeper();
    no_error_backtraces();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        quiet_broken_stdout();
    }
    // The daemon and `bench` (which runs daemons and loads) get the multi-threaded runtime.
    let multi = matches!(cli.command, Command::Daemon(_) | Command::Bench(_));
    run_to_exit(multi, dispatch_engine(cli))
}

/// Errors are printed as their message chain (`{:#}`), never with a backtrace, and exit
/// codes travel as errors (`Exit`): with `RUST_BACKTRACE=1` in the environment, anyhow
/// would unwind the stack for each (about 10% of a `run`'s client CPU). Panics still honour
/// `RUST_BACKTRACE`; an explicit `RUST_LIB_BACKTRACE` is kept.
fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Before any thread exists (the async runtime is built later).
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// The commands only `skiffd` carries.
fn runs_in_engine(command: &Command) -> bool {
    matches!(
        command,
        Command::Daemon(_)
            | Command::Bench(_)
            | Command::Image(ImageCommand::Convert(_))
            | Command::Image(ImageCommand::Index(_))
    )
}

/// The client binary to run client commands with: `skiff` next to this binary, or this
/// binary itself (a `skiffd` can run every command).
pub fn client_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let client = exe.with_file_name(CLIENT_BINARY);
    Ok(if client.is_file() { client } else { exe })
}

fn exec_engine() -> ! {
    use std::os::unix::process::CommandExt;
    let engine = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(ENGINE_BINARY),
        Err(e) => {
            eprintln!("skiff: finding this binary to start {ENGINE_BINARY}: {e}");
            std::process::exit(125);
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new(&engine).args(args).exec();
    eprintln!(
        "skiff: this command runs the engine binary {}: {err} (install {ENGINE_BINARY} next to {CLIENT_BINARY})",
        engine.display()
    );
    std::process::exit(125);
}

/// Runs `work` to its end and exits with its status, the runtime still alive: dropping it
/// would wait for blocking tasks, and a stdin reader may stay parked forever.
fn run_to_exit(multi_thread: bool, work: impl Future<Output = Result<()>>) -> ! {
    // A client command is a few requests in sequence: one thread does them (a
    // multi-threaded runtime's workers cost more to start than the requests take).
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: starting the async runtime: {e}");
            std::process::exit(125);
        }
    };
    let result = rt.block_on(work);
    finish(result)
}

fn finish(result: Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => *code,
            None => {
                match e.downcast_ref::<bollard::errors::Error>() {
                    Some(b) => {
                        eprintln!("Error response from daemon: {}", client::error_message(b))
                    }
                    None => eprintln!("skiff: {e:#}"),
                }
                1
            }
        },
    };
    // Blocking stdin readers may still be parked; don't wait for them.
    std::process::exit(code);
}

/// `skiff history IMG | head`: once the reader is gone, stop quietly with the status a
/// shell reports for SIGPIPE (141), as docker does, instead of a panic from `println!`.
/// (SIGPIPE itself stays ignored: the client's sockets must see `EPIPE`, not die.)
fn quiet_broken_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

async fn dispatch_engine(cli: Cli) -> Result<()> {
    if let Command::Daemon(args) = cli.command {
        return daemon::run(args, cli.exec_root, cli.host.clone()).await;
    }
    match &cli.command {
        Command::Bench(args) => bench::bench(args).await,
        Command::Image(ImageCommand::Convert(args)) => daemon::convert::convert_command(args).await,
        Command::Image(ImageCommand::Index(args)) => daemon::soci_index::index_command(args).await,
        _ => dispatch_client(cli).await,
    }
}

/// Every command but the engine's (`runs_in_engine`).
async fn dispatch_client(cli: Cli) -> Result<()> {
    let exec_root = cli
        .exec_root
        .clone()
        .unwrap_or_else(|| daemon::config::DEFAULT_EXEC_ROOT.into());
    let host = match cli.host.as_slice() {
        [] => std::env::var("SKIFF_HOST").ok().filter(|h| !h.is_empty()),
        [one] => Some(one.clone()),
        _ => {
            eprintln!("skiff: specify only one -H");
            return Err(Exit(125).into());
        }
    };
    let socket = client::connect::socket_path(host.as_deref(), &exec_root)?;
    if let Command::Version = cli.command {
        // As docker: the client's part, then the error (exit 1) when no daemon answers.
        return client::system::version(client::connect::connect(&socket).await).await;
    }
    if let Command::Logout(args) = &cli.command {
        return client::login::logout(args).await;
    }
    // As the docker CLI: `run` fails with 125 when it cannot reach the daemon, every
    // other command with 1.
    let unreachable = if matches!(cli.command, Command::Run(_)) {
        125
    } else {
        1
    };
    let docker = client::connect::connect(&socket).await.map_err(|e| {
        eprintln!("{e:#}");
        Exit(unreachable)
    })?;
    let d = &docker;
    use client::*;
    match &cli.command {
        Command::Run(a) => run::run(d, a).await,
        Command::Create(a) => run::create(d, a).await,
        Command::Start(a) => run::start(d, a).await,
        Command::Restart(a) => lifecycle::restart(d, a).await,
        Command::Wait(a) => lifecycle::wait(d, a).await,
        Command::Attach(a) => run::attach(d, a).await,
        Command::Ps(a) => ps::ps(d, a).await,
        Command::Logs(a) => logs::logs(d, a).await,
        Command::Stop(a) => lifecycle::stop(d, a).await,
        Command::Kill(a) => lifecycle::kill(d, a).await,
        Command::Rm(a) => lifecycle::rm(d, a).await,
        Command::Exec(a) => exec::exec(d, a).await,
        Command::Inspect(a) => inspect::inspect(d, a).await,
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::images(d, a).await,
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => images::pull(d, a).await,
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => images::push(&socket, a).await,
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(d, a).await,
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(d, a).await,
        Command::Image(ImageCommand::Inspect(a)) => images::inspect(d, a).await,
        Command::Image(ImageCommand::Import(a)) => images::import(d, a).await,
        Command::Image(ImageCommand::Prune(a)) => system::image_prune(d, a).await,
        Command::Image(ImageCommand::Profile(c)) => profiles::run(&socket, c).await,
        Command::Login(a) => login::login(&socket, a).await,
        Command::System(SystemCommand::Prune(a)) => system::prune(d, a).await,
        Command::System(SystemCommand::Df) => system::df(d).await,
        Command::Volume(VolumeCommand::Create(a)) => volumes::create(d, a).await,
        Command::Volume(VolumeCommand::Ls(a)) => volumes::ls(d, a).await,
        Command::Volume(VolumeCommand::Inspect(a)) => volumes::inspect(d, a).await,
        Command::Volume(VolumeCommand::Rm(a)) => volumes::rm(d, a).await,
        Command::Volume(VolumeCommand::Prune(a)) => volumes::prune(d, a).await,
        Command::Network(NetworkCommand::Create(a)) => networks::create(d, a).await,
        Command::Network(NetworkCommand::Ls(a)) => networks::ls(d, a).await,
        Command::Network(NetworkCommand::Inspect(a)) => networks::inspect(d, a).await,
        Command::Network(NetworkCommand::Rm(a)) => networks::rm(d, a).await,
        Command::Network(NetworkCommand::Connect(a)) => networks::connect(d, a).await,
        Command::Network(NetworkCommand::Disconnect(a)) => networks::disconnect(d, a).await,
        Command::Network(NetworkCommand::Prune(a)) => networks::prune(d, a).await,
        Command::System(SystemCommand::Info) | Command::Info => system::info(d).await,
        Command::Rename(a) => ops::rename(d, a).await,
        Command::Pause(a) => ops::pause(d, a, true).await,
        Command::Unpause(a) => ops::pause(d, a, false).await,
        Command::Top(a) => ops::top(d, a).await,
        Command::Stats(a) => ops::stats(d, &socket, a).await,
        Command::Update(a) => ops::update(d, a).await,
        Command::Events(a) => ops::events(d, a).await,
        Command::Diff(a) => files::diff(d, &a.container).await,
        Command::Export(a) => files::export(d, a).await,
        Command::Build(a) => build::build(d, a).await,
        Command::Commit(a) => archive::commit(&socket, a).await,
        Command::Save(a) => archive::save(d, a).await,
        Command::Load(a) => archive::load(d, a).await,
        Command::Builder(crate::args::BuilderCommand::Prune(a)) => build::prune(&socket, a).await,
        Command::Cp(a) => files::cp(d, a).await,
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            images::history(d, a).await
        }
        Command::Daemon(_)
        | Command::Bench(_)
        | Command::Version
        | Command::Logout(_)
        | Command::Image(ImageCommand::Convert(_))
        | Command::Image(ImageCommand::Index(_)) => {
            unreachable!("handled by dispatch_engine or exec_engine")
        }
    }
}
