//! A minimal binary that only dispatches the runtime's hidden entry points (`__shim`,
//! `__exec`). Tests and benches use it as the re-exec target instead of the full `skiff`.

fn main() {
    skiff_runtime::entry::run_if_internal();
    eprintln!("skiff-runtime-entry: only the runtime's internal subcommands are supported");
    std::process::exit(2);
}
