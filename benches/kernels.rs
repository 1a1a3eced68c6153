//! Kernel benchmarks (single thread unless named otherwise):
//! * `matvec/<level>/<type>/<rows>x<cols>`: one token through `matmul`, throughput in
//!   bytes of weights streamed (compare with `membw/read_1GiB`);
//! * `gemm128/<level>/<type>/<rows>x<cols>`: 128 tokens, throughput in elements = ops
//!   (2 per multiply-add), i.e. read "Gelem/s" as GOPS;
//! * `matvec|gemm128/<level>/<type>/<rows>x<cols>/el`: Q4_0 against the coded types at
//!   SmolLM2's shapes, throughput in weights × tokens per second, so the types' times
//!   per weight compare directly whatever their bits per weight;
//! * `threads/<n>/...`: the best level's matvec with a pool of n threads;
//! * `attn/<level>/<kernel>`: the attention and KV-cache kernels of one head (64 values,
//!   512 cache slots) and the float dots, throughput in multiply-adds;
//! * `membw/read_1GiB`: sum of a 1 GiB buffer, the machine's single-thread read bandwidth.
//! * `encode/<level>/<type>`: the converter's block search (`quant::quantize_row_weighted`)
//!   on a 4096-wide row of roughly Gaussian weights, uniform importance; throughput in
//!   weights. The level is the process's (`LLQ_KERNEL` to force one); the output is the
//!   same at every level.
//!
//! Short measurement times keep a full run to a few minutes: `cargo bench --bench kernels`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llq::convert::encode_matrix;
use llq::kernels::matmul::{matmul, MatmulScratch};
use llq::kernels::{available, Kernels};
use llq::quant::interleave::GROUP;
use llq::quant::kx16::{BlockQ4_Kx16, BlockQ5_0x16, BlockQ6_Kx16, CodedX16};
use llq::quant::{blocks_mut, quantize_row_weighted, DType, WeightKind, WeightView};

/// SmolLM2's q/o and a transposed shape, for the coded types against Q4_0.
const CODED_SHAPES: &[(usize, usize)] = &[(576, 1536), (1536, 576)];
const CODED_TYPES: &[DType] = &[DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::Q5_0];

// SmolLM2 q/o, TinyLlama up/gate and down, LLaMA-7B up/gate, TinyLlama output.
const SHAPES: &[(usize, usize)] = &[
    (576, 1536),
    (2048, 5632),
    (5632, 2048),
    (4096, 11008),
    (32000, 2048),
];

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Quantized weights in 64-byte aligned storage, as in a mapped file.
struct Weights {
    store: Vec<[u64; 8]>,
    len: usize,
    dtype: DType,
    rows: usize,
    cols: usize,
}

impl Weights {
    fn new(dtype: DType, rows: usize, cols: usize) -> Weights {
        let mut rng = Rng(0x1234_5678);
        let kind = WeightKind::for_dtype(dtype);
        let len = kind.tensor_bytes(&[rows as u64, cols as u64]).unwrap() as usize;
        let mut store = vec![[0u64; 8]; len.div_ceil(64)];
        // SAFETY (bench setup): the u64 storage viewed as bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(store.as_mut_ptr().cast::<u8>(), len) };
        // One random row repeated: the kernels' speed does not depend on the values.
        let half = |v: f32| half::f16::from_f32(v).to_bits();
        match dtype {
            // llq cannot quantize to these yet: random codes, small finite scales.
            DType::Q4_K => coded_random::<BlockQ4_Kx16>(&mut rng, cols, bytes, |b| {
                (b.d, b.dmin) = (half(0.01), half(0.002))
            }),
            DType::Q6_K => {
                coded_random::<BlockQ6_Kx16>(&mut rng, cols, bytes, |b| b.d = half(0.01))
            }
            DType::Q5_0 => {
                coded_random::<BlockQ5_0x16>(&mut rng, cols, bytes, |b| b.d = half(0.01))
            }
            _ => {
                let row: Vec<f32> = (0..cols).map(|_| rng.f()).collect();
                let src: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
                encode_matrix(kind, &src, cols, None, bytes);
            }
        }
        Weights {
            store,
            len,
            dtype,
            rows,
            cols,
        }
    }
    fn view(&self) -> WeightView<'_> {
        // SAFETY (bench setup): the u64 storage viewed as bytes.
        let data =
            unsafe { std::slice::from_raw_parts(self.store.as_ptr().cast::<u8>(), self.len) };
        WeightView {
            kind: WeightKind::for_dtype(self.dtype),
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// A `rows16` matrix of a coded type from native blocks of random bytes whose scale
/// fields `fix` sets.
fn coded_random<B: CodedX16>(
    rng: &mut Rng,
    cols: usize,
    bytes: &mut [u8],
    fix: impl Fn(&mut B::Plain),
) {
    let nb = cols / B::COLS;
    let mut native = vec![B::Plain::default(); GROUP * nb];
    for group in blocks_mut::<B>(bytes).chunks_mut(nb) {
        for n in native.iter_mut() {
            // SAFETY (bench setup): native blocks are integer-only `repr(C)` structs, so
            // any bytes are a valid value.
            let raw = unsafe {
                std::slice::from_raw_parts_mut((n as *mut B::Plain).cast::<u8>(), size_of_val(n))
            };
            raw.iter_mut()
                .for_each(|b| *b = (rng.f() * 128.0) as i8 as u8);
            fix(n);
        }
        B::interleave(&native, group);
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// `matmul` called outside any pool uses the global pool: make it one thread so the
/// single-thread benchmarks run inline on the bench thread.
fn single_thread_global_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    assert_eq!(rayon::current_num_threads(), 1);
}

fn run(k: &Kernels, w: &WeightView, x: &[f32], n: usize, out: &mut [f32], s: &mut MatmulScratch) {
    matmul(k, w, x, n, out, s);
}

fn matvec(c: &mut Criterion) {
    single_thread_global_pool();
    let mut g = c.benchmark_group("matvec");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(rows, cols) in SHAPES {
        for dtype in [DType::Q8_0, DType::Q4_0] {
            let w = Weights::new(dtype, rows, cols);
            let wv = w.view();
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.01).sin()).collect();
            let mut out = vec![0.0; rows];
            g.throughput(Throughput::Bytes(w.len as u64));
            for k in available() {
                let id = BenchmarkId::new(
                    format!("{}/{}", k.name, dtype.name()),
                    format!("{rows}x{cols}"),
                );
                let mut s = MatmulScratch::default();
                g.bench_function(id, |b| b.iter(|| run(k, &wv, &x, 1, &mut out, &mut s)));
            }
        }
    }
    coded(&mut g, 1);
    g.finish();
}

/// `n` tokens through Q4_0 and the coded types at [`CODED_SHAPES`], in weights per second.
fn coded(g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>, n: usize) {
    for &(rows, cols) in CODED_SHAPES {
        for &dtype in CODED_TYPES {
            if dtype.row_bytes(cols).is_none() {
                continue; // K-quants need whole 256-column superblocks
            }
            let w = Weights::new(dtype, rows, cols);
            let wv = w.view();
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.01).sin()).collect();
            let mut out = vec![0.0; n * rows];
            g.throughput(Throughput::Elements((rows * cols * n) as u64));
            for k in available() {
                if k.name == "scalar" && n > 1 {
                    continue;
                }
                let id = BenchmarkId::new(
                    format!("{}/{}", k.name, dtype.name()),
                    format!("{rows}x{cols}/el"),
                );
                let mut s = MatmulScratch::default();
                g.bench_function(id, |b| b.iter(|| run(k, &wv, &x, n, &mut out, &mut s)));
            }
        }
    }
}

fn gemm(c: &mut Criterion) {
    single_thread_global_pool();
    let mut g = c.benchmark_group("gemm128");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let n = 128;
    for &(rows, cols) in &[(2048, 5632), (4096, 11008)] {
        for dtype in [DType::Q8_0, DType::Q4_0] {
            let w = Weights::new(dtype, rows, cols);
            let wv = w.view();
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.01).sin()).collect();
            let mut out = vec![0.0; n * rows];
            g.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
            for k in available() {
                if k.name == "scalar" && rows > 2048 {
                    continue;
                }
                let id = BenchmarkId::new(
                    format!("{}/{}", k.name, dtype.name()),
                    format!("{rows}x{cols}"),
                );
                let mut s = MatmulScratch::default();
                g.bench_function(id, |b| b.iter(|| run(k, &wv, &x, n, &mut out, &mut s)));
            }
        }
    }
    coded(&mut g, n);
    g.finish();
}

fn threads(c: &mut Criterion) {
    let k = *available().last().unwrap();
    let mut g = c.benchmark_group("threads");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(rows, cols) in &[(2048, 5632), (4096, 11008)] {
        let w = Weights::new(DType::Q8_0, rows, cols);
        let wv = w.view();
        for threads in [1, 2] {
            let p = pool(threads);
            for n in [1usize, 16] {
                let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.01).sin()).collect();
                let mut out = vec![0.0; n * rows];
                let mut s = MatmulScratch::default();
                g.throughput(Throughput::Bytes(w.len as u64));
                let id = BenchmarkId::new(
                    format!("{threads}/{}/q8_0/n{n}", k.name),
                    format!("{rows}x{cols}"),
                );
                // Called from outside the pool, as the forward pass does.
                g.bench_function(id, |b| {
                    b.iter(|| p.install(|| run(k, &wv, &x, n, &mut out, &mut s)))
                });
            }
        }
    }
    g.finish();
}

fn attn(c: &mut Criterion) {
    use half::f16;
    use llq::kernels::AttnGroup;
    use llq::quant::{quantize_row_q8_0, BlockQ8_0, QK};
    let (hd, slots, stride) = (64usize, 512usize, 192usize);
    let mut rng = Rng(0x9e37_79b9);
    let q: Vec<f32> = (0..hd).map(|_| rng.f()).collect();
    let k32: Vec<f32> = (0..slots * stride).map(|_| rng.f()).collect();
    let k16: Vec<f16> = k32.iter().map(|&v| f16::from_f32(v)).collect();
    let p: Vec<f32> = (0..slots).map(|_| rng.f().abs() / slots as f32).collect();
    // Odd lengths so the tails run too.
    let n = 2048 + 37;
    let a32: Vec<f32> = (0..n).map(|_| rng.f()).collect();
    let b32: Vec<f32> = (0..n).map(|_| rng.f()).collect();
    let a16: Vec<f16> = a32.iter().map(|&v| f16::from_f32(v)).collect();
    let mut qa = vec![BlockQ8_0 { d: 0, qs: [0; QK] }; 2048 / QK];
    let mut qb = qa.clone();
    quantize_row_q8_0(&a32[..2048], &mut qa);
    quantize_row_q8_0(&b32[..2048], &mut qb);
    let mut g = c.benchmark_group("attn");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700));
    for k in available() {
        let name = |what: &str| format!("{}/{what}", k.name);
        let mut s = vec![0.0f32; slots];
        let mut o = vec![0.0f32; hd];
        g.throughput(Throughput::Elements((slots * hd) as u64));
        g.bench_function(name("scores_f32"), |b| {
            b.iter(|| (k.attn_scores_f32)(&q, &k32, stride, &mut s))
        });
        g.bench_function(name("scores_f16"), |b| {
            b.iter(|| (k.attn_scores_f16)(&q, &k16, stride, &mut s))
        });
        g.bench_function(name("values_f32"), |b| {
            b.iter(|| (k.attn_values_f32)(&mut o, &p, &k32, stride))
        });
        g.bench_function(name("values_f16"), |b| {
            b.iter(|| (k.attn_values_f16)(&mut o, &p, &k16, stride))
        });
        // SmolLM2's three query heads per kv head, each cache row read once for the
        // three (elements counted per query, so the rates compare with the lines above).
        let nq = 3;
        let shape = AttnGroup {
            hd,
            n: slots,
            stride,
            row_stride: slots,
        };
        let qg: Vec<f32> = (0..nq * hd).map(|_| rng.f()).collect();
        let pg: Vec<f32> = (0..nq).flat_map(|_| p.iter().copied()).collect();
        let mut sg = vec![0.0f32; nq * slots];
        let mut og = vec![0.0f32; nq * hd];
        g.throughput(Throughput::Elements((nq * slots * hd) as u64));
        g.bench_function(name("scores_group3_f32"), |b| {
            b.iter(|| (k.attn_scores_group_f32)(&shape, &qg, &k32, &mut sg))
        });
        g.bench_function(name("scores_group3_f16"), |b| {
            b.iter(|| (k.attn_scores_group_f16)(&shape, &qg, &k16, &mut sg))
        });
        g.bench_function(name("values_group3_f32"), |b| {
            b.iter(|| (k.attn_values_group_f32)(&shape, &mut og, &pg, &k32))
        });
        g.bench_function(name("values_group3_f16"), |b| {
            b.iter(|| (k.attn_values_group_f16)(&shape, &mut og, &pg, &k16))
        });
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name("dot_f32"), |b| {
            b.iter(|| (k.dot_f32)(std::hint::black_box(&a32), &b32))
        });
        g.bench_function(name("dot_f16"), |b| {
            b.iter(|| (k.dot_f16)(std::hint::black_box(&a16), &b32))
        });
        let mut acc = a32.clone();
        g.bench_function(name("axpy_f32"), |b| {
            b.iter(|| (k.axpy_f32)(&mut acc, 1e-3, &b32))
        });
        g.bench_function(name("axpy_f16"), |b| {
            b.iter(|| (k.axpy_f16)(&mut acc, 1e-3, &a16))
        });
        g.throughput(Throughput::Elements(2048));
        g.bench_function(name("dot_q8_0"), |b| {
            b.iter(|| (k.dot_q8_0)(std::hint::black_box(&qa), &qb))
        });
    }
    g.finish();
}

fn membw(c: &mut Criterion) {
    let n = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut g = c.benchmark_group("membw");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((n * 8) as u64));
    g.bench_function("read_1GiB", |b| {
        b.iter(|| {
            // Eight independent lanes so the adds vectorize and do not limit the loads.
            let mut acc = [0u64; 8];
            for c in buf.chunks_exact(8) {
                for i in 0..8 {
                    acc[i] = acc[i].wrapping_add(c[i]);
                }
            }
            std::hint::black_box(acc)
        })
    });
    g.finish();
}

/// Encoder speed on one near-Gaussian row, per searched type (symmetric grid,
/// scale-and-offset, K-quants).
fn encode(c: &mut Criterion) {
    const COLS: usize = 4096;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A sum of four uniforms: near-Gaussian, like trained weight rows.
    let row: Vec<f32> = (0..COLS)
        .map(|_| (rng.f() + rng.f() + rng.f() + rng.f()) * 0.02)
        .collect();
    let mut g = c.benchmark_group("encode");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(COLS as u64));
    let level = llq::kernels::kernels().name;
    // Every searched type: the quantized ones.
    for dtype in DType::ALL.into_iter().filter(|d| d.is_quantized()) {
        let mut out = vec![0u8; dtype.row_bytes(COLS).unwrap()];
        g.bench_function(BenchmarkId::new(level, format!("{dtype:?}")), |b| {
            b.iter(|| quantize_row_weighted(dtype, &row, None, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, membw, matvec, gemm, threads, attn, encode);
criterion_main!(benches);
