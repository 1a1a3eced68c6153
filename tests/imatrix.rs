//! `llq::imatrix`: the legacy imatrix.dat reader/writer (round trip, hostile files) and
//! the statistics collected through the forward pass's observer on the tiny fixture.

mod common;

use llq::convert::{convert_with, Checkpoint, HfCheckpoint, Silent};
use llq::imatrix::{compute, Imatrix, ImatrixEntry, ImatrixParams};
use llq::quant::DType;

fn sample() -> Imatrix {
    Imatrix {
        entries: vec![
            ImatrixEntry {
                name: "blk.0.attn_k.weight".into(),
                ncall: 3,
                values: vec![0.5, 1.5, 3.0],
            },
            ImatrixEntry {
                name: "blk.0.ffn_down.weight".into(),
                ncall: 3,
                values: vec![6.0, 0.0],
            },
        ],
        last_chunk: 3,
        dataset: "calib.txt".into(),
    }
}

#[test]
fn round_trip_and_layout() {
    let m = sample();
    let bytes = m.to_bytes().unwrap();
    // i32 count; per entry len, name, ncall, nval, values; last_chunk, dataset.
    let expect = 4 + (4 + 19 + 4 + 4 + 12) + (4 + 21 + 4 + 4 + 8) + 4 + 4 + 9;
    assert_eq!(bytes.len(), expect);
    assert_eq!(&bytes[..4], &2i32.to_le_bytes());
    assert_eq!(Imatrix::parse(&bytes).unwrap(), m);
    assert_eq!(
        m.get("blk.0.attn_k.weight").unwrap().importance(),
        [0.5 / 3.0, 0.5, 1.0]
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("imatrix.dat");
    m.write(&p).unwrap();
    assert_eq!(Imatrix::read(&p).unwrap(), m);
    // A file without the trailer (older llama.cpp) is accepted.
    let short = &bytes[..bytes.len() - (4 + 4 + 9)];
    let r = Imatrix::parse(short).unwrap();
    assert_eq!(
        (r.entries, r.last_chunk, r.dataset),
        (m.entries, 0, String::new())
    );
}

#[test]
fn hostile_files_are_refused() {
    let good = sample().to_bytes().unwrap();
    // Every truncation that cuts into an entry is an error, never a panic. (Cutting
    // exactly at the trailer leaves a valid trailer-less file.)
    let trailer_at = good.len() - 17;
    for n in 0..good.len() {
        if n != trailer_at {
            assert!(Imatrix::parse(&good[..n]).is_err(), "prefix {n} accepted");
        }
    }
    let with = |at: usize, v: i32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        Imatrix::parse(&b).unwrap_err()
    };
    for v in [0, -1, i32::MIN, i32::MAX] {
        with(0, v); // entry count
        with(4, v); // name length
    }
    let nval_at = 4 + 4 + 19 + 4;
    for v in [0, -5, i32::MAX, 0x4000_0000] {
        let e = with(nval_at, v);
        assert!(!e.is_empty());
    }
    let ds_len_at = good.len() - 9 - 4;
    for v in [-1, i32::MAX, 10] {
        with(ds_len_at, v);
    }
    let mut extra = good.clone();
    extra.push(0);
    assert!(Imatrix::parse(&extra)
        .unwrap_err()
        .contains("unexpected bytes"));
    // Values are mean squares: a NaN, an infinity or a negative one is a corrupt file.
    for bad in [f32::NAN, f32::INFINITY, -1.0, -0.0001] {
        let mut m = sample();
        m.entries[1].values[1] = bad;
        let e = Imatrix::parse(&m.to_bytes().unwrap()).unwrap_err();
        assert!(
            e.contains("blk.0.ffn_down.weight") && e.contains("column 1"),
            "{e}"
        );
    }
    let mut dup = sample();
    dup.entries[1].name = dup.entries[0].name.clone();
    assert!(Imatrix::parse(&dup.to_bytes().unwrap())
        .unwrap_err()
        .contains("twice"));
    assert!(Imatrix::default().to_bytes().is_err());
}

#[test]
fn fixture_statistics_match_an_independent_computation() {
    let (_dir, model) = common::convert_fixture("tiny-llama-gqa", DType::F32);
    let cfg = model.config.clone();
    let (n_ctx, chunks) = (16usize, 3usize);
    let tokens: Vec<u32> = (0..(n_ctx * chunks + 5) as u32)
        .map(|i| (i * 7919 + 13) % cfg.vocab_size as u32)
        .collect();
    let params = ImatrixParams {
        n_ctx,
        max_chunks: None,
        dataset: "tokens".into(),
    };
    let mut calls = 0;
    let m = compute(&model, &tokens, &params, |_, total| {
        calls += 1;
        assert_eq!(total, chunks);
    })
    .unwrap();
    assert_eq!(calls, chunks);
    assert_eq!(m.last_chunk, chunks as i32);
    assert_eq!(m.entries.len(), 7 * cfg.n_layers);
    assert!(m.entries.windows(2).all(|w| w[0].name < w[1].name));
    for e in &m.entries {
        assert_eq!(e.ncall, chunks as i32, "{}", e.name);
        assert!(
            e.values.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{}",
            e.name
        );
    }
    let get = |l: usize, p: &str| m.get(&format!("blk.{l}.{p}.weight")).unwrap();
    for l in 0..cfg.n_layers {
        assert_eq!(get(l, "attn_q").values.len(), cfg.dim);
        assert_eq!(get(l, "attn_q").values, get(l, "attn_k").values);
        assert_eq!(get(l, "attn_k").values, get(l, "attn_v").values);
        assert_eq!(get(l, "ffn_gate").values, get(l, "ffn_up").values);
        assert_eq!(get(l, "attn_output").values.len(), cfg.q_dim());
        assert_eq!(get(l, "ffn_down").values.len(), cfg.ffn_dim);
        assert!(get(l, "ffn_down").values.iter().any(|v| *v > 0.0));
    }
    // Layer 0's Q/K/V input is rmsnorm(embedding) · gain: recompute it from the
    // checkpoint's own f32 tensors, over the 3 × 16 tokens of the whole chunks.
    let ck = HfCheckpoint::open(&common::fixtures().join("tiny-llama-gqa")).unwrap();
    let embd = ck.load("token_embd.weight").unwrap();
    let g = ck.load("blk.0.attn_norm.weight").unwrap();
    let d = cfg.dim;
    let mut want = vec![0.0f64; d];
    for &t in &tokens[..n_ctx * chunks] {
        let x = &embd[t as usize * d..(t as usize + 1) * d];
        let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + cfg.rms_eps as f64).sqrt();
        for j in 0..d {
            want[j] += (x[j] as f64 * inv * g[j] as f64).powi(2);
        }
    }
    let got = get(0, "attn_q").importance();
    for j in 0..d {
        let w = want[j] / (n_ctx * chunks) as f64;
        assert!(
            (got[j] as f64 - w).abs() <= 1e-4 * w + 1e-7,
            "column {j}: {} vs {w}",
            got[j]
        );
    }
    // --chunks limits the work.
    let one = compute(
        &model,
        &tokens,
        &ImatrixParams {
            max_chunks: Some(1),
            ..params.clone()
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!((one.last_chunk, one.entries[0].ncall), (1, 1));
    assert!(compute(&model, &tokens[..10], &params, |_, _| {}).is_err());
}

/// An importance matrix made for another model is refused before anything is written:
/// an entry of another width (as llama-quantize refuses it), or no entry naming any of
/// the model's matrices. Entries for matrices the model lacks are otherwise ignored.
#[test]
fn imatrix_for_another_model_is_refused() {
    let ck = HfCheckpoint::open(&common::fixtures().join("tiny-llama-gqa")).unwrap();
    let dim = ck.config().dim;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.llq");
    let entry = |name: &str, width: usize| ImatrixEntry {
        name: name.into(),
        ncall: 1,
        values: vec![1.0; width],
    };
    let with = |entries: Vec<ImatrixEntry>| {
        let m = Imatrix {
            entries,
            ..Imatrix::default()
        };
        convert_with(&ck, DType::Q4_0, &out, &Silent, Some(&m))
    };
    let e = with(vec![entry("blk.0.attn_q.weight", dim + 1)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'blk.0.attn_q.weight' has 65 columns, the tensor 64"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written");
    let e = with(vec![entry("blk.99.ffn_up.weight", dim)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none of the importance matrix's 1 entries"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written");
    // One matching entry among others for layers the model does not have: accepted.
    with(vec![
        entry("blk.0.attn_q.weight", dim),
        entry("blk.99.ffn_up.weight", 7),
    ])
    .unwrap();
    assert!(out.exists());
}
