//! `skiffd`: the engine (daemon, bench, image conversion) and the internal entry points the
//! runtime re-execs; it also runs every client command.

fn main() {
    skiff::entry::engine_main()
}
