//! containerd's snapshotter semantics on a real directory and SQLite database (no mounts:
//! the returned mounts are checked as data). Error codes are the ones containerd maps back
//! to its errdefs.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots::tonic::Code;
use containerd_snapshots::{Kind, Snapshotter};
use futures::StreamExt;
use skiff_snapshotter::{SkiffSnapshotter, SnapshotError};

async fn open(dir: &std::path::Path) -> Arc<SkiffSnapshotter> {
    let store = skiff_store::Store::open(&dir.join("store"), Default::default()).unwrap();
    Arc::new(
        SkiffSnapshotter::open(&dir.join("snap"), store, None)
            .await
            .unwrap(),
    )
}

fn code(e: SnapshotError) -> Code {
    e.code()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn names(s: &SkiffSnapshotter, filters: &[&str]) -> Vec<String> {
    let stream = s
        .list(
            String::new(),
            filters.iter().map(|f| f.to_string()).collect(),
        )
        .await
        .unwrap();
    let mut v: Vec<String> = stream.map(|i| i.unwrap().name).collect().await;
    v.sort();
    v
}

#[tokio::test]
async fn prepare_commit_view_remove_follow_containerds_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;

    let m = s
        .prepare("a".into(), String::new(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].r#type, "bind");
    assert_eq!(m[0].options, vec!["rw", "rbind"]);
    std::fs::write(
        std::path::Path::new(&m[0].source).join("f"),
        vec![7u8; 9000],
    )
    .unwrap();
    let e = s
        .prepare("a".into(), String::new(), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::AlreadyExists);
    let e = s
        .prepare("x".into(), "missing".into(), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::NotFound);
    let e = s
        .prepare("x".into(), "a".into(), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(
        code(e),
        Code::InvalidArgument,
        "the parent must be committed"
    );

    s.commit("base".into(), "a".into(), labels(&[("l", "1")]))
        .await
        .unwrap();
    assert_eq!(code(s.stat("a".into()).await.unwrap_err()), Code::NotFound);
    let info = s.stat("base".into()).await.unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.labels.get("l").map(String::as_str), Some("1"));
    let usage = s.usage("base".into()).await.unwrap();
    assert!(usage.size >= 9000 && usage.inodes == 2, "{usage:?}");
    assert_eq!(
        code(s.mounts("base".into()).await.unwrap_err()),
        Code::FailedPrecondition,
        "a committed snapshot has no mounts"
    );

    let m = s
        .prepare("b".into(), "base".into(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(m[0].r#type, "overlay");
    assert!(
        m[0].options.iter().any(|o| o.starts_with("upperdir=")),
        "{:?}",
        m[0].options
    );
    let lower = m[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert_eq!(
        s.mounts("b".into()).await.unwrap(),
        m,
        "Mounts repeats Prepare's answer"
    );
    let v = s
        .view("v".into(), "base".into(), HashMap::new())
        .await
        .unwrap();
    assert_eq!(v[0].r#type, "bind");
    assert_eq!(v[0].options, vec!["ro", "rbind"]);
    assert_eq!(format!("lowerdir={}", v[0].source), *lower);
    assert_eq!(
        code(
            s.commit("v2".into(), "v".into(), HashMap::new())
                .await
                .unwrap_err()
        ),
        Code::FailedPrecondition,
        "a view cannot be committed"
    );

    assert_eq!(
        code(s.remove("base".into()).await.unwrap_err()),
        Code::FailedPrecondition,
        "a snapshot with children stays"
    );
    assert_eq!(names(&s, &[]).await, vec!["b", "base", "v"]);
    assert_eq!(names(&s, &["parent==base,kind==view"]).await, vec!["v"]);
    assert_eq!(
        names(&s, &["name==b", r#"labels."l"==1"#]).await,
        vec!["b", "base"]
    );
    assert_eq!(
        code(
            s.list(String::new(), vec!["size==1".into()])
                .await
                .err()
                .unwrap()
        ),
        Code::InvalidArgument
    );

    s.remove("b".into()).await.unwrap();
    s.remove("v".into()).await.unwrap();
    s.remove("base".into()).await.unwrap();
    assert_eq!(
        code(s.remove("base".into()).await.unwrap_err()),
        Code::NotFound
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("snap/snapshots"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "directories left: {left:?}");
}

#[tokio::test]
async fn labels_update_by_field_path_and_state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await;
        s.prepare(
            "a".into(),
            String::new(),
            labels(&[("keep", "1"), ("drop", "2")]),
        )
        .await
        .unwrap();
        s.commit(
            "c".into(),
            "a".into(),
            labels(&[("keep", "1"), ("drop", "2")]),
        )
        .await
        .unwrap();
        let mut info = s.stat("c".into()).await.unwrap();
        info.labels = labels(&[("new", "3")]);
        let got = s
            .update(info, Some(vec!["labels.new".into(), "labels.drop".into()]))
            .await
            .unwrap();
        assert_eq!(got.labels, labels(&[("keep", "1"), ("new", "3")]));
        let info = s.stat("c".into()).await.unwrap();
        let e = s
            .update(info, Some(vec!["parent".into()]))
            .await
            .unwrap_err();
        assert_eq!(code(e), Code::InvalidArgument);
        // A directory no snapshot owns (a crash between delete and cleanup) goes at Cleanup.
        std::fs::create_dir_all(dir.path().join("snap/snapshots/999/fs")).unwrap();
        s.clear().await.unwrap();
        assert!(!dir.path().join("snap/snapshots/999").exists());
    }
    let s = open(dir.path()).await;
    let info = s.stat("c".into()).await.unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.labels, labels(&[("keep", "1"), ("new", "3")]));
}

#[tokio::test]
async fn a_remote_layer_that_cannot_be_resolved_is_prepared_for_unpacking() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    // Nothing listens on port 1: the registry is down during Prepare.
    let l = labels(&[
        ("containerd.io/snapshot.ref", "sha256:c0ffee"),
        (
            "containerd.io/snapshot/cri.image-ref",
            "127.0.0.1:1/none/img:1",
        ),
        (
            "containerd.io/snapshot/cri.layer-digest",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]);
    let started = std::time::Instant::now();
    let m = s
        .prepare("extract-1".into(), String::new(), l)
        .await
        .unwrap();
    assert_eq!(
        m[0].r#type, "bind",
        "an ordinary snapshot for containerd to unpack into"
    );
    assert_eq!(s.stat("extract-1".into()).await.unwrap().kind, Kind::Active);
    assert_eq!(
        code(s.stat("sha256:c0ffee".into()).await.unwrap_err()),
        Code::NotFound
    );
    assert!(s.lazy_snapshots().is_empty());
    eprintln!("fallback after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_lazy_parent_that_cannot_be_served_fails_its_children_instead_of_showing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("snap")).unwrap();
    {
        // A lazily served layer whose registry is gone, as a previous daemon left it.
        let meta =
            skiff_snapshotter::meta::MetaStore::open(&dir.path().join("snap/metadata.db")).unwrap();
        let remote = skiff_snapshotter::meta::RemoteLayer {
            image: "127.0.0.1:1/gone/img:1".into(),
            digest: format!("sha256:{}", "1".repeat(64)),
        };
        meta.write(|tx| {
            tx.create(
                "extract",
                skiff_snapshotter::meta::Kind::Active,
                "",
                &HashMap::new(),
            )?;
            tx.commit(
                "extract",
                "sha256:layer",
                &HashMap::new(),
                (0, 0),
                Some(&remote),
            )?;
            Ok(())
        })
        .unwrap();
    }
    std::fs::create_dir_all(dir.path().join("snap/snapshots/1/fs")).unwrap();
    let s = open(dir.path()).await;
    let e = s
        .prepare("c".into(), "sha256:layer".into(), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert_eq!(
        code(s.stat("c".into()).await.unwrap_err()),
        Code::NotFound,
        "nothing half-made"
    );
    let e = s
        .view("v".into(), "sha256:layer".into(), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::Unavailable);
}
