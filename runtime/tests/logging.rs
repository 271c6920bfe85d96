//! Log drivers on a running container: json-file rotation with compression, `none`.

mod common;

use common::{unavailable, Fixture};
use skiff_runtime::config::LogConfig;
use skiff_runtime::{LogOptions, LogReader, RuntimeError};

#[test]
fn json_file_rotates_and_compresses_and_none_keeps_nothing() {
    skiff_tests::require!(
        "json_file_rotates_and_compresses_and_none_keeps_nothing",
        unavailable()
    );
    let mut f = Fixture::new(
        "logrot",
        // One burst (sed writes its buffer at once): rotation still happens per entry.
        &["sh", "-c", "seq 0 59 | sed 's/^/line /'"],
    );
    let opts = [("max-size", "1k"), ("max-file", "3"), ("compress", "true")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.cfg.log = LogConfig::from_docker("json-file", &opts).unwrap();
    let st = f.run();
    assert_eq!(st.exit_code, Some(0));
    let log = f.dir.join("container.log");
    let name = |s: &str| f.dir.join(format!("container.log{s}"));
    assert!(
        name(".1.gz").exists() && name(".2.gz").exists(),
        "rotated files"
    );
    assert!(!name(".3.gz").exists() && !name(".1").exists() && !name(".2").exists());
    assert!(std::fs::metadata(&log).unwrap().len() <= 1024);
    for n in [".1.gz", ".2.gz"] {
        let gz = std::fs::read(name(n)).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
        assert!(text.len() <= 1024, "{n} holds {} bytes", text.len());
    }
    let got: Vec<String> = LogReader::open(&f.dir, LogOptions::default())
        .unwrap()
        .map(|e| e.unwrap().log)
        .collect();
    assert!(got.len() > 20, "{}", got.len());
    let want: Vec<String> = (60 - got.len()..60)
        .map(|i| format!("line {i}\n"))
        .collect();
    assert_eq!(
        got, want,
        "the newest lines, in order, across rotated files"
    );

    let mut g = Fixture::new("lognone", &["echo", "hello"]);
    g.cfg.log = LogConfig::from_docker("none", &Default::default()).unwrap();
    let st = g.run();
    assert_eq!(st.exit_code, Some(0));
    assert!(!g.dir.join("container.log").exists());
    assert!(matches!(
        LogReader::open(&g.dir, LogOptions::default()),
        Err(RuntimeError::LogsNotReadable { .. })
    ));
}

#[test]
fn following_a_log_goes_on_through_rotations() {
    skiff_tests::require!("following_a_log_goes_on_through_rotations", unavailable());
    let mut f = Fixture::new(
        "logfollow",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 80 ]; do echo line $i; i=$((i+1)); sleep 0.02; done",
        ],
    );
    let opts = [("max-size", "2k"), ("max-file", "4")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.cfg.log = LogConfig::from_docker("json-file", &opts).unwrap();
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let follow = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let got: Vec<String> = LogReader::open(&f.dir, follow)
        .unwrap()
        .map(|e| e.unwrap().log)
        .collect();
    let want: Vec<String> = (0..80).map(|i| format!("line {i}\n")).collect();
    assert_eq!(got, want);
    assert!(f.dir.join("container.log.2").exists(), "it did rotate");
}
