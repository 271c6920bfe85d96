//! The `skiff` binary: the CLI, the daemon, and the hidden entry points the runtime re-execs.

mod args;
mod bench;
mod client;
mod daemon;
mod exit;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command, ImageCommand, NetworkCommand, SystemCommand, VolumeCommand};
use exit::Exit;

fn main() {
    // The runtime re-execs this binary as the container shim and exec helper; those never
    // return from here.
    skiff_runtime::entry::run_if_internal();
    // A FUSE descriptor keeper (live restore) likewise never returns.
    skiff_fs::keeper::run_if_keeper();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        quiet_broken_stdout();
    }
    // A client command is a few requests in sequence: one thread does them (a
    // multi-threaded runtime's workers cost more to start than the requests take). The
    // daemon and `bench` (which runs daemons and loads) get the multi-threaded one.
    let mut builder = if matches!(cli.command, Command::Daemon(_) | Command::Bench(_)) {
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
    let code = match rt.block_on(dispatch(cli)) {
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

async fn dispatch(cli: Cli) -> Result<()> {
    if let Command::Daemon(args) = cli.command {
        return daemon::run(args, cli.exec_root, cli.host.clone()).await;
    }
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
    if let Command::Bench(args) = &cli.command {
        return bench::bench(args).await;
    }
    if let Command::Logout(args) = &cli.command {
        return client::login::logout(args).await;
    }
    if let Command::Image(ImageCommand::Convert(args)) = &cli.command {
        return daemon::convert::convert_command(args).await;
    }
    if let Command::Image(ImageCommand::Index(args)) = &cli.command {
        return daemon::soci_index::index_command(args).await;
    }
    let docker = client::connect::connect(&socket).await.map_err(|e| {
        eprintln!("{e:#}");
        Exit(125)
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
        Command::Builder(args::BuilderCommand::Prune(a)) => build::prune(&socket, a).await,
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
            unreachable!("handled above")
        }
    }
}
