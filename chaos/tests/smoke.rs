//! Runs `quiver-chaos bench` and `load` at tiny sizes against the debug `quiver` binary
//! (`QUIVER_BIN`, or the workspace's debug build, which `cargo test --workspace` builds first).

use std::path::PathBuf;
use std::process::Command;

fn quiver_bin() -> PathBuf {
    let path = std::env::var_os("QUIVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/quiver/target")
                });
            target.join("debug/quiver")
        });
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p quiver` or set QUIVER_BIN",
        path.display()
    );
    path
}

fn run(args: &[&str], report: &std::path::Path, quiver: &std::path::Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_quiver-chaos"))
        .args(args)
        .arg("--quiver-bin")
        .arg(quiver)
        .arg("--report")
        .arg(report)
        .output()
        .expect("run quiver-chaos");
    assert!(
        output.status.success(),
        "quiver-chaos {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(report).expect("report")).expect("report json")
}

#[test]
fn bench_and_load_run_against_a_spawned_server() {
    let quiver = quiver_bin();
    let dir = tempfile::tempdir().expect("tempdir");

    let bench = run(
        &[
            "bench",
            "--count",
            "2000",
            "--dimension",
            "16",
            "--queries",
            "100",
            "--threads",
            "2",
            "--query-seconds",
            "0.5",
            "--min-recall",
            "0.9",
        ],
        &dir.path().join("bench.json"),
        &quiver,
    );
    assert_eq!(bench["passed"], true);
    assert_eq!(bench["quiver"]["recall_queries"], 100);
    assert!(bench["faiss"]["qps"].as_f64().expect("qps") > 0.0);
    assert!(bench["ratio"]["qps"].as_f64().expect("ratio") > 0.0);

    let load = run(
        &[
            "load",
            "--count",
            "2000",
            "--dimension",
            "16",
            "--queries",
            "100",
            "--clients",
            "20",
            "--requests",
            "400",
            "--duration",
            "30",
            "--strict",
            "--no-progress",
            "--min-recall",
            "0.9",
        ],
        &dir.path().join("load.json"),
        &quiver,
    );
    assert_eq!(load["requests"], 400);
    assert_eq!(load["non_throttling_errors"], 0);
    assert!(load["recall"]["plain"].as_f64().expect("recall") >= 0.9);
    assert!(load["server_peak_rss_kib"].as_u64().expect("rss") > 0);
    for plot in load["plots"].as_array().expect("plots") {
        let svg = std::fs::read_to_string(plot.as_str().expect("path")).expect("svg");
        assert!(svg.starts_with("<svg"));
    }
}
