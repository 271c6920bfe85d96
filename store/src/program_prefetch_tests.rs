use super::*;
use crate::layer_path::LayerPath;

fn entry(path: &str, kind: FileKind, target: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        mtime_nsec: 0,
        link_target: LayerPath::from(target),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Default::default(),
        chunks: Vec::new(),
    }
}

fn reg(path: &str) -> FileEntry {
    entry(path, FileKind::Regular, "")
}

fn link(path: &str, target: &str) -> FileEntry {
    entry(path, FileKind::Symlink, target)
}

/// A merged-/usr base layer and a layer above it with python.
fn layers() -> Vec<LayerIndex> {
    vec![
        LayerIndex {
            digest: "sha256:base".into(),
            entries: vec![
                link("lib", "usr/lib"),
                link("lib64", "usr/lib64"),
                link("bin", "usr/bin"),
                reg("usr/lib/x86_64-linux-gnu/libc.so.6"),
                reg("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                link(
                    "usr/lib64/ld-linux-x86-64.so.2",
                    "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                ),
                reg("usr/bin/sh"),
            ],
        },
        LayerIndex {
            digest: "sha256:python".into(),
            entries: vec![
                reg("usr/bin/python3.11"),
                link("usr/bin/python3", "python3.11"),
                entry("usr/bin/python", FileKind::Hardlink, "usr/bin/python3.11"),
                link("usr/local/bin/loop", "loop"),
            ],
        },
    ]
}

#[test]
fn paths_resolve_through_directory_symlinks_relative_links_and_hard_links() {
    let l = layers();
    let f = ImageFiles::new(&l);
    let (layer, e) = f.resolve(b"/lib64/ld-linux-x86-64.so.2").unwrap();
    assert_eq!(layer, "sha256:base");
    assert_eq!(
        e.path.as_bytes(),
        b"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    );
    let (layer, e) = f.find_program("python3", "/usr/local/bin:/bin").unwrap();
    assert_eq!(
        (layer, e.path.as_bytes()),
        ("sha256:python", &b"usr/bin/python3.11"[..])
    );
    let (_, e) = f.resolve(b"usr/bin/python").unwrap();
    assert_eq!(e.path.as_bytes(), b"usr/bin/python3.11");
    // A loop, a directory, a missing file: nothing.
    assert!(f.resolve(b"usr/local/bin/loop").is_none());
    assert!(f.resolve(b"usr/lib").is_none());
    assert!(f.find_program("perl", "/usr/bin:/bin").is_none());
}

#[test]
fn library_candidates_expand_origin_then_the_multiarch_and_usual_directories() {
    let needs = Needs {
        run_paths: vec![b"$ORIGIN/../lib".to_vec()],
        triplet: Some("x86_64-linux-gnu"),
        ..Needs::default()
    };
    let c = library_candidates(b"libm.so.6", b"usr/bin", &needs);
    assert_eq!(c[0], b"usr/bin/../lib/libm.so.6");
    assert_eq!(c[1], b"lib/x86_64-linux-gnu/libm.so.6");
    assert_eq!(c[2], b"usr/lib/x86_64-linux-gnu/libm.so.6");
    assert!(c.contains(&b"usr/lib/libm.so.6".to_vec()));
    assert_eq!(
        library_candidates(b"/opt/x.so", b"", &needs),
        vec![b"/opt/x.so".to_vec()]
    );
}

#[test]
fn an_elf_executable_names_its_interpreter_and_libraries() {
    // The host's own dynamically linked shell, as a real ELF file.
    let bytes = std::fs::read("/bin/sh").expect("/bin/sh");
    let needs = program_needs(std::io::Cursor::new(bytes)).expect("parsed");
    let interp = needs.interpreter.expect("PT_INTERP");
    assert!(
        interp.starts_with(b"/lib"),
        "{:?}",
        String::from_utf8_lossy(&interp)
    );
    assert!(
        needs.libraries.iter().any(|l| l.starts_with(b"libc.so")),
        "{:?}",
        needs.libraries
    );
    assert!(needs.triplet.is_some());
}

#[test]
fn a_script_names_its_interpreter_and_other_files_name_nothing() {
    let needs = program_needs(std::io::Cursor::new(
        b"#!/usr/bin/env python3\nprint()\n".to_vec(),
    ));
    assert_eq!(
        needs.unwrap().interpreter.as_deref(),
        Some(&b"/usr/bin/env"[..])
    );
    assert!(program_needs(std::io::Cursor::new(b"plain text".to_vec())).is_none());
    // A truncated ELF header: refused, not a panic.
    assert!(program_needs(std::io::Cursor::new(b"\x7fELF\x02\x01\x01".to_vec())).is_none());
}

#[test]
fn the_default_program_is_the_entrypoint_else_the_cmd_over_the_config_path() {
    let config: oci_spec::image::ImageConfiguration = serde_json::from_str(
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Env":["PATH=/opt/bin:/bin"],"Cmd":["python3","-c","x"]}}"#,
    )
    .unwrap();
    assert_eq!(
        default_program(&config),
        Some(("python3".into(), "/opt/bin:/bin".into()))
    );
    let config: oci_spec::image::ImageConfiguration = serde_json::from_str(
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/entry.sh"],"Cmd":["run"]}}"#,
    )
    .unwrap();
    let (argv0, path) = default_program(&config).unwrap();
    assert_eq!(argv0, "/entry.sh");
    assert!(path.contains("/usr/bin"));
}
