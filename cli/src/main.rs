//! `skiff`: the client. The engine's commands (`daemon`, `bench`, `image convert`,
//! `image index`) run in `skiffd`, which this binary execs.

fn main() {
    skiff::entry::client_main()
}
