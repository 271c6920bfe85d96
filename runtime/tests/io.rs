//! Container I/O on a real kernel: json-file logs, attach with stdin, pty and resize, exec.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{unavailable, Fixture, EXE};
use skiff_runtime::{
    AttachStreams, ExecConfig, Frame, LogOptions, LogReader, LogStream, Signal, WinSize,
};

const ALL: AttachStreams = AttachStreams {
    stdin: true,
    stdout: true,
    stderr: true,
};

/// Reads frames until `Exit`; returns (stdout, stderr, exit code).
fn collect(s: &mut UnixStream) -> (String, String, i32) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match Frame::read_from(s).unwrap() {
            Some(Frame::Stdout(d)) => out.extend(d),
            Some(Frame::Stderr(d)) => err.extend(d),
            Some(Frame::Exit(code)) => {
                return (
                    String::from_utf8_lossy(&out).into(),
                    String::from_utf8_lossy(&err).into(),
                    code,
                )
            }
            Some(f) => panic!("unexpected {f:?}"),
            None => panic!("attach stream ended without Exit"),
        }
    }
}

#[test]
fn logs_are_docker_json_file_lines() {
    skiff_tests::require!("logs_are_docker_json_file_lines", unavailable());
    let f = Fixture::new(
        "logs",
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; printf 'tab\\t\"q\"\\n'; printf partial",
        ],
    );
    f.run();
    let raw = std::fs::read_to_string(f.dir.join("container.log")).unwrap();
    let lines: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{raw}");
    for l in &lines {
        let obj = l.as_object().unwrap();
        assert_eq!(obj.len(), 3, "exactly log, stream, time: {l}");
        let t = obj["time"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
        assert!(
            t.ends_with('Z') && t.len() >= "2006-01-02T15:04:05.000000000Z".len(),
            "{t}"
        );
    }
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["log"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, vec!["out1\n", "tab\t\"q\"\n", "partial"]);
    let stderr: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["stream"] == "stderr").collect();
    assert_eq!(stderr[0]["log"], "err1\n");

    // --tail and --since through LogReader.
    // (stdout and stderr are separate pipes, so only the order within a stream is fixed;
    // the unterminated "partial" is flushed last.)
    let tail: Vec<String> = LogReader::open(
        &f.dir,
        LogOptions {
            tail: Some(1),
            ..Default::default()
        },
    )
    .unwrap()
    .map(|e| e.unwrap().log)
    .collect();
    assert_eq!(tail, vec!["partial"]);
    let future = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(
        LogReader::open(
            &f.dir,
            LogOptions {
                since: Some(future),
                ..Default::default()
            }
        )
        .unwrap()
        .count(),
        0
    );
}

#[test]
fn follow_returns_new_lines_and_ends_at_exit() {
    skiff_tests::require!("follow_returns_new_lines_and_ends_at_exit", unavailable());
    let f = Fixture::new(
        "follow",
        &[
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        ],
    );
    f.create().unwrap();
    let reader = LogReader::open(
        &f.dir,
        LogOptions {
            follow: true,
            ..Default::default()
        },
    )
    .unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let t = Instant::now();
    let got: Vec<String> = reader.map(|e| e.unwrap().log).collect();
    assert_eq!(got, vec!["line1\n", "line2\n", "line3\n"]);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "follow ended before the container did"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn interactive_stdin_is_piped_and_closed() {
    skiff_tests::require!("interactive_stdin_is_piped_and_closed", unavailable());
    let mut f = Fixture::new("stdin", &["sh", "-c", "tr a-z A-Z; echo done >&2"]);
    f.cfg.open_stdin = true;
    f.create().unwrap();
    let mut s = skiff_runtime::attach(&f.dir, ALL).unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    s.write_all(&Frame::Stdin(b"hello\n".to_vec()).encode())
        .unwrap();
    s.write_all(&Frame::Stdin(b"world\n".to_vec()).encode())
        .unwrap();
    s.write_all(&Frame::CloseStdin.encode()).unwrap();
    let (out, err, code) = collect(&mut s);
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("HELLO\nWORLD\n", "done\n", 0)
    );
    assert_eq!(
        f.stdout(),
        "HELLO\nWORLD\n",
        "attached output is logged too"
    );
}

#[test]
fn without_open_stdin_the_process_reads_eof() {
    skiff_tests::require!("without_open_stdin_the_process_reads_eof", unavailable());
    let f = Fixture::new("nostdin", &["sh", "-c", "cat; echo eof"]);
    let st = f.run();
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(f.stdout(), "eof\n");
}

#[test]
fn tty_is_a_terminal_and_resize_is_visible() {
    skiff_tests::require!("tty_is_a_terminal_and_resize_is_visible", unavailable());
    let mut f = Fixture::new(
        "tty",
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo istty; tty; stty size; read x; stty size; echo got=$x",
        ],
    );
    f.cfg.tty = true;
    f.cfg.open_stdin = true;
    f.cfg.console_size = Some(WinSize { rows: 24, cols: 80 });
    f.create().unwrap();
    let mut s = skiff_runtime::attach(&f.dir, ALL).unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.stdout().contains("24 80") {
        assert!(
            Instant::now() < deadline,
            "no initial size: {:?}",
            f.stdout()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    skiff_runtime::resize(&f.dir, 50, 132).unwrap();
    s.write_all(&Frame::Stdin(b"abc\r".to_vec()).encode())
        .unwrap();
    let (out, _, code) = collect(&mut s);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("istty\r\n"), "{out:?}");
    assert!(
        out.contains("/dev/pts/0\r\n"),
        "pty from the container's own devpts: {out:?}"
    );
    assert!(
        out.contains("24 80\r\n") && out.contains("50 132\r\n"),
        "{out:?}"
    );
    assert!(out.contains("got=abc"), "{out:?}");
    assert!(
        f.stdout().contains("50 132"),
        "tty output is logged as stdout"
    );
}

#[test]
fn exec_joins_the_container() {
    skiff_tests::require!("exec_joins_the_container", unavailable());
    let mut f = Fixture::new(
        "exec",
        &["sh", "-c", "echo inside > /tmp/marker; exec sleep 1000"],
    );
    f.cfg.hostname = Some("exechost".into());
    f.cfg.env = vec!["FROM_CONTAINER=1".into()];
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.dir.join("upper/tmp/marker").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = ExecConfig {
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat /tmp/marker; hostname; ps -o pid,comm | grep -w sleep; echo env=$FROM_CONTAINER$EXTRA; id -u; exit 3".into(),
        ],
        env: vec!["EXTRA=2".into()],
        user: "user".into(),
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &cfg).unwrap();
    let mut out = String::new();
    p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let code = p.wait().unwrap();
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("inside\nexechost\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep"]),
        "{out}"
    );
    assert!(out.contains("env=12\n1000\n"), "{out}");

    let missing = ExecConfig {
        args: vec!["nosuch".into()],
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &missing).unwrap();
    let mut err = String::new();
    p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(p.wait().unwrap(), 127, "{err}");
    assert!(err.contains("nosuch"), "{err}");

    let tty = ExecConfig {
        // The terminal is one of the container's own /dev/pts (not the host's).
        args: vec![
            "sh".into(),
            "-c".into(),
            "test -t 0 && stty size && test -e \"$(tty)\" && tty".into(),
        ],
        tty: true,
        console_size: Some(WinSize { rows: 33, cols: 77 }),
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &tty).unwrap();
    let code = p.wait().unwrap();
    let master = p.pty.take().unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: reading into a local buffer from our pty master.
    let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    let out = String::from_utf8_lossy(&buf[..n.max(0) as usize]).to_string();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("33 77"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");

    // A container that swaps its /dev/ptmx for a link to a file (or a device node) gets a
    // clear refusal; the daemon opens nothing of the host's through it.
    let swap = ExecConfig {
        args: vec![
            "sh".into(),
            "-c".into(),
            "rm /dev/ptmx && ln -s /etc/hostname /dev/ptmx".into(),
        ],
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &swap).unwrap();
    assert_eq!(p.wait().unwrap(), 0);
    let err = skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &tty)
        .err()
        .expect("exec -t through a swapped /dev/ptmx must fail");
    assert!(err.to_string().contains("not the pty multiplexer"), "{err}");

    skiff_runtime::kill(&f.dir, Signal::SIGKILL).unwrap();
    f.wait(Duration::from_secs(10));
    assert!(
        skiff_runtime::exec(std::path::Path::new(EXE), &f.dir, &cfg).is_err(),
        "no exec into exited container"
    );
}

#[test]
fn attach_sees_live_output_of_a_running_container() {
    skiff_tests::require!(
        "attach_sees_live_output_of_a_running_container",
        unavailable()
    );
    let f = Fixture::new(
        "attach",
        &["sh", "-c", "echo early; sleep 0.5; echo late; exit 4"],
    );
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let mut s = skiff_runtime::attach(
        &f.dir,
        AttachStreams {
            stdin: false,
            stdout: true,
            stderr: false,
        },
    )
    .unwrap();
    let (out, _, code) = collect(&mut s);
    assert!(out.ends_with("late\n"), "{out}");
    assert_eq!(code, 4);
    let logged: Vec<_> = LogReader::open(&f.dir, LogOptions::default())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.stream == LogStream::Stdout)
        .map(|e| e.log)
        .collect();
    assert_eq!(logged, vec!["early\n", "late\n"]);
}
