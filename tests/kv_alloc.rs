//! Evaluating a generated token (`Session::feed`: forward pass, ring cache, bookkeeping)
//! does not allocate in steady state, also after the ring cache wrapped (`shift`), for
//! every cache type, and neither does sampling (temperature, top-k/top-p and the repetition
//! penalty). Its own test binary because it installs a counting global allocator.

mod common;

#[path = "common/counting.rs"]
mod counting;

use std::sync::atomic::Ordering;

use counting::{Counting, ALLOCS};

use llq::generate::Session;
use llq::kv::{CacheType, ContextPolicy, KvConfig};
use llq::quant::DType;
use llq::sample::SamplerParams;

#[global_allocator]
static A: Counting = Counting;

#[test]
fn token_loop_does_not_allocate_after_the_ring_wraps() {
    // head_dim 32: every cache type, q8_0 included.
    let (_dir, model) = common::convert_fixture("tiny-llama3-rope", DType::F32);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for ct in CacheType::ALL {
        let kv = KvConfig {
            cache_type: ct,
            policy: ContextPolicy::Shift,
            keep: 4,
        };
        let params = SamplerParams {
            temp: 0.7,
            repeat_penalty: 1.1,
            ..Default::default()
        };
        let mut s = Session::with_config(&model, 64, params, kv).unwrap();
        pool.install(|| {
            s.set_prompt(&[1, 2, 3, 4, 5]).unwrap();
            // Past the first wrap: every code path has run and grown its buffers.
            for _ in 0..100 {
                let t = s.sample().unwrap();
                s.feed(&[t]).unwrap();
            }
            let (mut n, mut n_sample) = (0, 0);
            for _ in 0..200 {
                let before = ALLOCS.load(Ordering::Relaxed);
                let t = s.sample().unwrap();
                let mid = ALLOCS.load(Ordering::Relaxed);
                s.feed(&[t]).unwrap();
                n_sample += mid - before;
                n += ALLOCS.load(Ordering::Relaxed) - mid;
            }
            eprintln!("{} cache: sampling made {n_sample} allocations", ct.name());
            eprintln!("{} cache: 200 tokens, {n} allocations", ct.name());
            assert_eq!(
                n_sample,
                0,
                "{} cache: {n_sample} allocations while sampling",
                ct.name()
            );
            assert_eq!(
                n,
                0,
                "{} cache: {n} allocations in the token loop",
                ct.name()
            );
        });
    }
}
