//! `llq bench --output json` on a tiny fixture model: the structure of the JSON (no timing
//! asserts), and the markdown table's shape.

mod common;

use std::process::Command;

use llq::convert::{convert, HfCheckpoint, Silent};
use llq::quant::DType;

fn tiny_model(dir: &std::path::Path, dtype: DType) -> std::path::PathBuf {
    let out = dir.join(format!("tiny.{}.llq", dtype.name()));
    let ck = HfCheckpoint::open(&common::fixtures().join("tiny-llama-gqa")).unwrap();
    convert(&ck, dtype, &out, &Silent).unwrap();
    out
}

fn bench(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn bench_json_has_one_row_per_thread_count_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), DType::Q8_0);
    let out = bench(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "8,16",
        "-n",
        "4",
        "-t",
        "1,2",
        "-r",
        "2",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    let rows = v.as_array().expect("an array of results");
    let got: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["n_threads"].as_u64().unwrap(),
                r["test"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = [1, 2]
        .iter()
        .flat_map(|&t| ["pp8", "pp16", "tg4"].map(|s| (t, s.to_string())))
        .collect();
    assert_eq!(got, want);
    let size = std::fs::metadata(&m).unwrap().len();
    for r in rows {
        assert_eq!(r["model"], "tiny.q8_0.llq");
        assert_eq!(r["model_type"], "q8_0");
        assert_eq!(r["model_size"].as_u64(), Some(size));
        assert!(r["model_n_params"].as_u64().unwrap() > 0);
        assert!(r["weight_bytes"].as_u64().unwrap() > 0);
        let dec = r["decode_bytes_per_token"].as_u64().unwrap();
        assert!(dec > 0 && dec <= size);
        assert!(r["kv_bytes_per_position"].as_u64().unwrap() > 0);
        assert!(r["kernels"].is_string());
        assert_eq!(r["repetitions"], 2);
        let (p, g) = (
            r["n_prompt"].as_u64().unwrap(),
            r["n_gen"].as_u64().unwrap(),
        );
        let test = r["test"].as_str().unwrap();
        assert_eq!(
            test,
            if p > 0 {
                format!("pp{p}")
            } else {
                format!("tg{g}")
            }
        );
        assert!((p == 0) != (g == 0));
        let ts = r["samples_ts"].as_array().unwrap();
        let ns = r["samples_ns"].as_array().unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ns.len(), 2);
        for (t, n) in ts.iter().zip(ns) {
            let (t, n) = (t.as_f64().unwrap(), n.as_u64().unwrap());
            assert!(t.is_finite() && t > 0.0 && n > 0);
            // tokens/s and nanoseconds describe the same run.
            let want = (p + g) as f64 / (n as f64 * 1e-9);
            assert!((t - want).abs() <= 1e-6 * want, "{t} vs {want}");
        }
        let avg = r["avg_ts"].as_f64().unwrap();
        let sd = r["stddev_ts"].as_f64().unwrap();
        assert!(avg.is_finite() && avg > 0.0 && sd.is_finite() && sd >= 0.0);
    }
}

#[test]
fn bench_markdown_is_a_table_with_one_line_per_result() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), DType::F32);
    let out = bench(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "2",
        "-t",
        "1",
        "-r",
        "1",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("| model | size | params | type"));
    assert!(lines[2].contains("| f32 |") && lines[2].contains("| pp4 |"));
    assert!(lines[3].contains("| tg2 |") && lines[3].contains(" ± "));
}

#[test]
fn bench_rejects_an_unknown_output_format() {
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args(["bench", "-m", "x.llq", "--output", "csv"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
}

/// `-d` (llama-bench's depth): every test runs again after D tokens are in the cache,
/// named like llama-bench's rows, with the depth and the cache type in the JSON; the depth
/// counts towards the context the bench needs.
#[test]
fn bench_depth_rows_and_cache_type() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), DType::Q8_0);
    let m = m.to_str().unwrap();
    let out = bench(&[
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "4",
        "-d",
        "0,40",
        "-t",
        "1",
        "-r",
        "1",
        "--cache-type",
        "f16",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    let got: Vec<(String, u64, String)> = v
        .as_array()
        .expect("an array of results")
        .iter()
        .map(|r| {
            (
                r["test"].as_str().unwrap().to_string(),
                r["n_depth"].as_u64().unwrap(),
                r["cache_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> =
        [("pp8", 0), ("tg4", 0), ("pp8 @ d40", 40), ("tg4 @ d40", 40)]
            .iter()
            .map(|&(t, d)| (t.to_string(), d, "f16".to_string()))
            .collect();
    assert_eq!(got, want);

    // A depth past the largest context is refused before anything is allocated.
    let o = Command::new(env!("CARGO_BIN_EXE_llq"))
        .args([
            "bench", "-m", m, "-p", "8", "-n", "0", "-d", "1048576", "-r", "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("depth included"), "{err}");
}
