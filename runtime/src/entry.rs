//! The hidden entry points of our own binary that the runtime re-execs: a fresh process is
//! the only safe place for namespace and mount work, never a fork of the daemon.

use std::path::Path;

/// argv[1] of the per-container shim.
pub const SHIM_ARG: &str = "__shim";
/// argv[1] of an exec into a running container.
pub const EXEC_ARG: &str = "__exec";

/// Call first thing in `main`: if argv[1] is one of the runtime's internal subcommands, runs
/// it and never returns; otherwise returns and the program goes on normally.
pub fn run_if_internal() {
    // Lossy: a user's argument need not be UTF-8 (the CLI parser reports it); the internal
    // subcommands' own arguments always are.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.get(1).map(String::as_str) {
        Some(SHIM_ARG) | Some(EXEC_ARG) => close_inherited_fds(3),
        Some(crate::launcher::LAUNCHER_ARG) => {
            close_inherited_fds(crate::launcher::LAUNCHER_FD + 1)
        }
        // Keeps fd 3, its socket.
        Some(crate::network::proxy::PROXY_ARG) => close_inherited_fds(4),
        // Keeps fds 3 and 4, the DNS sockets it holds.
        Some(crate::network::dns_holder::DNS_HOLDER_ARG) => close_inherited_fds(5),
        _ => {}
    }
    match args.get(1).map(String::as_str) {
        Some(crate::launcher::LAUNCHER_ARG) if args.len() == 2 => crate::launcher::serve(),
        Some(SHIM_ARG) if args.len() == 3 => {
            crate::shim::main(Path::new(&args[2]), crate::shim::Origin::Exec)
        }
        Some(EXEC_ARG) if args.len() == 6 => {
            let code = crate::nsexec::main(&args[2], &args[3], &args[4], &args[5]);
            std::process::exit(code)
        }
        Some(crate::network::proxy::PROXY_ARG) if args.len() == 6 => {
            crate::network::proxy::serve_process(&args[2..])
        }
        Some(crate::network::dns_holder::DNS_HOLDER_ARG) if args.len() == 3 => {
            crate::network::dns_holder::serve_holder()
        }
        Some(SHIM_ARG)
        | Some(EXEC_ARG)
        | Some(crate::launcher::LAUNCHER_ARG)
        | Some(crate::network::proxy::PROXY_ARG)
        | Some(crate::network::dns_holder::DNS_HOLDER_ARG) => {
            eprintln!(
                "skiff: internal subcommand {} called with wrong arguments",
                args[1]
            );
            std::process::exit(125)
        }
        _ => {}
    }
}

/// Closes every descriptor from `first` on (all but stdio, and the launcher's socket):
/// whatever the daemon leaked without close-on-exec (sockets, /dev/fuse, database files)
/// must never reach a container.
fn close_inherited_fds(first: i32) {
    // SAFETY: close_range on descriptors this fresh process does not use.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if r != 0 {
        let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
            .ok()
            .flatten()
            .unwrap_or(1024);
        for fd in first..max as i32 {
            let _ = nix::unistd::close(fd);
        }
    }
}
