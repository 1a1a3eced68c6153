//! Prompt-cache load for a real (tiny) model, with the CRC recomputed by the harness so
//! that the checks after it are reached, and optionally the model identity and
//! dimensions patched in so that the size and token checks are reached too.
//! Input: flags byte, then the cache file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llq::kv::prompt_cache::load;
use llq::kv::{CacheType, KvCache, KvConfig};

const HEAD: usize = 44;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let model = llq_fuzz::tiny_model();
    let id = model.identity();
    let c = &model.config;
    let cfg = KvConfig {
        cache_type: CacheType::ALL[(flags >> 4) as usize % 3],
        ..KvConfig::default()
    };
    let n_ctx = 1 + (flags as usize >> 6) * 40;
    let Ok(mut cache) = KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, n_ctx, cfg) else {
        return;
    };
    let mut bytes = file.to_vec();
    if bytes.len() >= HEAD + 4 {
        if flags & 1 != 0 {
            bytes[8..10].copy_from_slice(&id.format.0.to_le_bytes());
            bytes[10..12].copy_from_slice(&id.format.1.to_le_bytes());
            bytes[12..20].copy_from_slice(&id.file_size.to_le_bytes());
            bytes[20..24].copy_from_slice(&id.header_crc.to_le_bytes());
            bytes[24] = cfg.cache_type.code();
        }
        if flags & 2 != 0 {
            for (i, v) in [id.n_layers, id.kv_dim, id.vocab].into_iter().enumerate() {
                bytes[28 + 4 * i..32 + 4 * i].copy_from_slice(&(v as u32).to_le_bytes());
            }
        }
        if flags & 4 == 0 {
            let body = bytes.len() - 4;
            let sum = crc32fast::hash(&bytes[..body]);
            bytes[body..].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let path = llq_fuzz::scratch().join("input.pcache");
    std::fs::write(&path, &bytes).unwrap();
    if let Ok(l) = load(&path, &id, &cache) {
        assert!(!l.tokens.is_empty() && l.tokens.len() <= cache.n_ctx());
        assert_eq!(l.logits.len(), id.vocab);
        l.restore(&mut cache);
        assert_eq!(cache.pos(), l.tokens.len());
    }
});
