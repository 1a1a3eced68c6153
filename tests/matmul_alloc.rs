//! `matmul` must not allocate in steady state (after the first call with a given token
//! count), inside a pool and when called from outside it; rayon's own rare, amortized
//! allocations with several threads are tolerated and printed. Its own test binary because it
//! installs a counting global allocator.

#[path = "common/counting.rs"]
mod counting;

use std::sync::atomic::Ordering;

use counting::{Counting, ALLOCS};

use llq::convert::encode_matrix;
use llq::kernels::kernels;
use llq::kernels::matmul::{matmul, MatmulScratch};
use llq::quant::{WeightKind, WeightView};

#[global_allocator]
static A: Counting = Counting;

#[test]
fn matmul_steady_state_does_not_allocate() {
    let (rows, cols) = (512, 256);
    let src: Vec<f32> = (0..rows * cols).map(|i| (i as f32).sin()).collect();
    let len = WeightKind::Q8_0x16
        .tensor_bytes(&[rows as u64, cols as u64])
        .unwrap();
    let mut store = vec![0u32; len as usize / 4];
    // SAFETY (test): u32 storage viewed as bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(store.as_mut_ptr().cast::<u8>(), store.len() * 4) };
    encode_matrix(WeightKind::Q8_0x16, &src, cols, None, bytes);
    let w = WeightView {
        kind: WeightKind::Q8_0x16,
        rows,
        cols,
        data: bytes,
    };
    let k = kernels();
    let x: Vec<f32> = (0..40 * cols).map(|i| (i as f32 * 0.1).cos()).collect();
    let mut out = vec![0.0; 40 * rows];
    let mut s = MatmulScratch::default();
    let mut run = |s: &mut MatmulScratch| {
        // 40: over 32 tokens the results go through a per-thread buffer, not the stack.
        for n in [8, 1, 3, 40] {
            matmul(k, &w, &x[..n * cols], n, &mut out[..n * rows], s);
        }
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            run(&mut s);
            let before = ALLOCS.load(Ordering::Relaxed);
            for _ in 0..50 {
                run(&mut s);
            }
            let n = ALLOCS.load(Ordering::Relaxed) - before;
            eprintln!("{threads} thread(s), 200 matmuls inside the pool: {n} allocations");
            // matmul itself allocates nothing (one thread: exactly 0); with two, rayon's
            // work-stealing internals allocate rarely (amortized, a few per hundred calls).
            if threads == 1 {
                assert_eq!(n, 0, "one thread, inside the pool: {n} allocations");
            }
            assert!(
                n <= 200 / 16,
                "{threads} thread(s), inside the pool: {n} allocations"
            );
        });
        // From outside the pool (as the forward pass calls it).
        pool.install(|| run(&mut s));
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..50 {
            pool.install(|| run(&mut s));
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!(
            "{threads} thread(s), 200 matmuls injected from outside the pool: {n} allocations"
        );
        assert!(
            n <= 200 / 16,
            "{threads} thread(s), outside the pool: {n} allocations"
        );
    }
}
