//! The mounts containerd gets for a snapshot, as containerd's overlay snapshotter gives
//! them: a bind mount when there is no parent (or a view of a single parent), else an
//! overlay whose lower directories are the parents' directories, nearest parent first.
//! Lazily served layers are FUSE mounts at their directory, so they stack the same way.

use std::path::Path;

use containerd_snapshots::api::types::Mount;

use crate::meta::Kind;

/// Directory layout of one snapshot: `<root>/snapshots/<id>/{fs,work}`.
pub fn fs_dir(root: &Path, id: i64) -> std::path::PathBuf {
    root.join("snapshots").join(id.to_string()).join("fs")
}

pub fn work_dir(root: &Path, id: i64) -> std::path::PathBuf {
    root.join("snapshots").join(id.to_string()).join("work")
}

/// The mounts of snapshot `id` of `kind` whose ancestors are `parents` (nearest first).
pub fn mounts_for(root: &Path, id: i64, kind: Kind, parents: &[i64]) -> Vec<Mount> {
    let path = |id: i64| fs_dir(root, id).to_string_lossy().into_owned();
    let bind = |source: String, ro: bool| Mount {
        r#type: "bind".into(),
        source,
        target: String::new(),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    };
    if parents.is_empty() {
        return vec![bind(path(id), kind == Kind::View)];
    }
    let mut options = Vec::new();
    if kind == Kind::Active {
        options.push(format!("workdir={}", work_dir(root, id).to_string_lossy()));
        options.push(format!("upperdir={}", path(id)));
    } else if parents.len() == 1 {
        return vec![bind(path(parents[0]), true)];
    }
    let lower: Vec<String> = parents.iter().map(|&p| path(p)).collect();
    options.push(format!("lowerdir={}", lower.join(":")));
    // No inode index: lower layers may be FUSE mounts, whose file handles overlay's index
    // cannot rely on.
    options.push("index=off".into());
    vec![Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parent_is_a_bind_mount_read_only_for_views() {
        let root = Path::new("/r");
        let m = mounts_for(root, 3, Kind::Active, &[]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(m[0].source, "/r/snapshots/3/fs");
        assert_eq!(m[0].options, vec!["rw", "rbind"]);
        let v = mounts_for(root, 3, Kind::View, &[]);
        assert_eq!(v[0].options, vec!["ro", "rbind"]);
    }

    #[test]
    fn active_over_parents_is_an_overlay_nearest_parent_first() {
        let m = mounts_for(Path::new("/r"), 9, Kind::Active, &[5, 2]);
        assert_eq!(m[0].r#type, "overlay");
        assert_eq!(
            m[0].options,
            vec![
                "workdir=/r/snapshots/9/work",
                "upperdir=/r/snapshots/9/fs",
                "lowerdir=/r/snapshots/5/fs:/r/snapshots/2/fs",
                "index=off"
            ]
        );
    }

    #[test]
    fn view_of_one_parent_binds_it_read_only_and_of_more_is_a_read_only_overlay() {
        let m = mounts_for(Path::new("/r"), 9, Kind::View, &[5]);
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(m[0].source, "/r/snapshots/5/fs");
        assert_eq!(m[0].options, vec!["ro", "rbind"]);
        let m = mounts_for(Path::new("/r"), 9, Kind::View, &[5, 2]);
        assert_eq!(
            m[0].options,
            vec!["lowerdir=/r/snapshots/5/fs:/r/snapshots/2/fs", "index=off"]
        );
    }
}
