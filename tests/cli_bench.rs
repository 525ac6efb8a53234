//! `shmkit bench`, run as the real binary: its JSON lines, tables, plot and errors.
//! (`.ci/run` also runs the whole `--quick` suite with the release binary and checks that
//! every group is present; here a few fast groups keep debug-build test runs short.)

use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `shmkit ARGS` with stdout and stderr piped.
fn start(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shmkit")
}

/// Waits for `child` and collects what is left of its output; kills it after `secs`.
fn finish(child: Child, secs: u64) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for shmkit"),
        Err(_) => {
            // SAFETY: signalling our own unreaped child (its pid cannot have been reused).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("shmkit did not finish within {secs} s");
        }
    }
}

/// Runs `shmkit ARGS` and returns what it printed; kills it after `secs`.
fn shmkit(args: &[&str], secs: u64) -> Output {
    finish(start(args), secs)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn json_lines_are_the_documented_objects() {
    let out =
        shmkit(&["bench", "--quick", "--json", "--runs", "1", "--groups", "lock_uncontended,rtt_8B"], 300);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The machine facts go to stderr, so stdout is only JSON.
    assert!(stderr.contains("machine: ") && stderr.contains("CPUs"), "{stderr}");
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let obj = v.as_object().expect("an object");
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        let mut expected = ["group", "impl", "value", "unit", "ratio_to", "ratio"];
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "{line}");
        let value = obj["value"].as_f64().expect("value is a number");
        assert!(value.is_finite() && value > 0.0, "{line}");
        let ratio = obj["ratio"].as_f64().expect("ratio is a number (the reference ran)");
        let to = obj["ratio_to"].as_str().expect("ratio_to is a string");
        seen.push((
            obj["group"].as_str().unwrap().to_owned(),
            obj["impl"].as_str().unwrap().to_owned(),
            value,
            obj["unit"].as_str().unwrap().to_owned(),
            to.to_owned(),
            ratio,
        ));
    }
    let groups: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert!(groups.contains(&"lock_uncontended") && groups.contains(&"rtt_8B"), "{stdout}");
    assert!(groups.iter().all(|g| *g == "lock_uncontended" || *g == "rtt_8B"), "{stdout}");
    // Every peer of these groups ran (none is optional), shmkit's first.
    let impls = |g: &str| seen.iter().filter(|s| s.0 == g).map(|s| s.1.as_str()).collect::<Vec<_>>();
    let mut locks = vec![
        "shmkit",
        "bare_futex_3state",
        "pthread_pshared",
        "pthread_pshared_robust",
        "raw_sync",
        "std_mutex",
    ];
    // Python's row runs where there is a python3 (and is left out, skipped, where not).
    if shmkit::bench::python_version().is_ok() {
        locks.push("python_lock");
    }
    assert_eq!(impls("lock_uncontended"), locks);
    assert_eq!(impls("rtt_8B")[0], "shmkit_queue");
    assert!(impls("rtt_8B").contains(&"pipe"));
    // The ratio is the reference's figure over this one (times), so the reference's own
    // ratio is 1 and the others follow from the values.
    for g in ["lock_uncontended", "rtt_8B"] {
        let rows: Vec<_> = seen.iter().filter(|s| s.0 == g).collect();
        let to = &rows[0].4;
        let reference = rows.iter().find(|s| &s.1 == to).expect("the reference row is printed");
        assert!(rows.iter().all(|s| &s.4 == to && s.3 == rows[0].3), "one reference and unit per group");
        assert_eq!(reference.5, 1.0);
        for s in &rows {
            let expected = reference.2 / s.2;
            assert!((s.5 - expected).abs() <= 1e-9 * expected.max(1.0), "{s:?} vs {reference:?}");
        }
    }
}

#[test]
fn table_and_plot() {
    let dir = std::env::temp_dir().join(format!("shmkit-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("bench.svg");
    let out = shmkit(
        &["bench", "--quick", "--runs", "2", "--groups", "value_incr_2proc", "--plot", svg.to_str().unwrap()],
        300,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("value_incr_2proc: "), "{stdout}");
    assert!(stdout.contains("vs pthread_locked"), "{stdout}");
    for row in ["* shmkit_locked", "* shmkit_atomic", "  pthread_locked"] {
        assert!(stdout.contains(row), "no row {row:?} in\n{stdout}");
    }
    assert!(stdout.contains(" – "), "two runs give a range: {stdout}");
    assert!(stdout.contains("Headline:"), "{stdout}");
    assert!(stderr.contains("other work during the run"), "{stderr}");
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"), "{plot:.200}");
    for label in ["value_incr_2proc", "shmkit_locked", "shmkit_atomic", "pthread_locked", "1.00x"] {
        assert!(plot.contains(label), "{label} not in the plot");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn list_and_bad_arguments() {
    let out = shmkit(&["bench", "--list"], 60);
    assert!(out.status.success());
    let listed: Vec<String> =
        text(&out.stdout).lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect();
    assert_eq!(listed, shmkit::bench::suite::GROUPS);

    let out = shmkit(&["bench", "--groups", "tput_8B,nope"], 60);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no group \"nope\""), "{}", text(&out.stderr));

    for runs in ["0", "1001", "4611686018427387904"] {
        let out = shmkit(&["bench", "--runs", runs], 60);
        assert_eq!(out.status.code(), Some(2), "{runs}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--runs"), "{}", text(&out.stderr));
    }

    // A plot that cannot be written is an error before anything runs.
    let out = shmkit(&["bench", "--groups", "lock_uncontended", "--plot", "/nonexistent/dir/x.svg"], 60);
    assert!(!out.status.success());
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("plot /nonexistent/dir/x.svg"), "{}", text(&out.stderr));
}

#[test]
fn a_closed_stdout_stops_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    // `shmkit bench --json | head -1`: the reader goes away after the first group.
    let mut child = start(&[
        "bench",
        "--quick",
        "--json",
        "--runs",
        "1",
        "--groups",
        "lock_uncontended,rtt_8B,bulk_64KiB",
    ]);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // (The BufReader, and with it the read end, is dropped here.)
    assert!(first.starts_with("{\"group\": \"rtt_8B\""), "{first}");
    let out = finish(child, 300);
    let (status, stderr) = (out.status, text(&out.stderr));
    assert!(status.success(), "{stderr}");
    // It stopped at the next group instead of running the rest and reporting on them.
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("other work during the run"), "{stderr}");
}
