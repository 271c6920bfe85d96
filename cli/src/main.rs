//! The `skiff` binary: the CLI, the daemon, and the hidden entry points the runtime re-execs.

fn main() {
    println!("skiff {}", env!("CARGO_PKG_VERSION"));
}
