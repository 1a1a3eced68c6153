//! LoRA adapters: opened once for a model, applied per context (issue #17).

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use super::context::ctx_ref;
use super::handles::{self, Handled};
use super::marshal::{non_null, path_from, put, slice};
use super::model::model_ref;
use super::*;
use crate::lora::{Adapter, AdapterSet};
use crate::model::ModelConfig;

/// A LoRA adapter (opaque handle), opened for one model. Shareable between threads and
/// contexts: any number of contexts of that model may apply it, each with its own scale.
pub struct llq_adapter {
    _opaque: [u8; 0],
}

/// What an `llq_adapter` handle stands for: the adapter and the configuration of the
/// model it was checked against.
pub(crate) struct AdapterObj {
    adapter: Arc<Adapter>,
    config: ModelConfig,
}

impl Handled for AdapterObj {
    type C = llq_adapter;
    const KIND: &'static str = "llq_adapter";
}

/// Open a LoRA adapter for `model`: a file written by `llq convert --lora-only` (a PEFT
/// adapter, A and B in f16 or f32) or a llama.cpp GGUF LoRA adapter
/// (`convert_lora_to_gguf.py`). Its targets are checked against the model's layers and
/// shapes (`LLQ_ERR_MODEL` if they do not fit). The weights are mapped in place for an
/// llq adapter file (read into memory for GGUF); the model's are never copied. On success
/// `*out_adapter` receives a handle to free with `llq_adapter_free`; on failure it is set
/// to NULL.
///
/// # Safety
/// `path` is a NUL-terminated path; `out_adapter` is writable.
#[no_mangle]
pub unsafe extern "C" fn llq_adapter_open(
    model: *const llq_model,
    path: *const c_char,
    out_adapter: *mut *mut llq_adapter,
) -> llq_status {
    guard(|| {
        // SAFETY: out_adapter is writable per the contract.
        unsafe { put(out_adapter, std::ptr::null_mut(), "out_adapter")? };
        let m = model_ref(model)?;
        non_null(path, "path")?;
        // SAFETY: non-null and NUL-terminated per the contract.
        let path = path_from(unsafe { CStr::from_ptr(path) })?;
        let adapter = Adapter::open(&path, &m.model.config)?;
        let h = handles::register(AdapterObj {
            adapter: Arc::new(adapter),
            config: m.model.config.clone(),
        });
        // SAFETY: checked writable above.
        unsafe { out_adapter.write(h) };
        Ok(())
    })
}

/// Free an adapter handle. NULL is a no-op; a second free returns
/// `LLQ_ERR_INVALID_HANDLE`. Contexts that apply the adapter keep using it (they hold it
/// alive) until they are given other adapters or freed.
#[no_mangle]
pub extern "C" fn llq_adapter_free(adapter: *mut llq_adapter) -> llq_status {
    guard(|| handles::free::<AdapterObj>(adapter, "adapter"))
}

/// Apply `n` adapters to `ctx` from now on, adapter `i` with scale `scales[i]` (`scales`
/// may be NULL: every scale 1). Each projection then computes `W·x + Σ_i scales[i] ·
/// scaling_i · B_i·(A_i·x)` beside the model's (possibly quantized) weights, scaling_i
/// being the adapter's alpha/r (alpha/sqrt(r) for rsLoRA). Replaces the
/// context's previous adapters; `n = 0` removes them. The context is reset (as by
/// `llq_context_reset`): what it held was computed with the previous adapters. Adapters
/// must have been opened for a model of the same configuration as the context's
/// (`LLQ_ERR_INVALID_ARG` otherwise), scales must be finite; on error the context is
/// unchanged. Other contexts on the same model are not affected.
///
/// # Safety
/// `adapters` readable for `n` handles; `scales` NULL or readable for `n` floats.
#[no_mangle]
pub unsafe extern "C" fn llq_context_set_adapters(
    ctx: *mut llq_context,
    adapters: *const *const llq_adapter,
    scales: *const f32,
    n: usize,
) -> llq_status {
    guard(|| {
        let c = ctx_ref(ctx)?;
        // SAFETY: readable for n handles per the contract.
        let handles_in = unsafe { slice(adapters, n, "adapters")? };
        let scales = if scales.is_null() {
            vec![1.0; n]
        } else {
            // SAFETY: readable for n floats per the contract.
            unsafe { slice(scales, n, "scales")? }.to_vec()
        };
        let cfg = &c.model.config;
        let mut list = Vec::with_capacity(n);
        for (i, (&h, &scale)) in handles_in.iter().zip(&scales).enumerate() {
            let a = handles::get::<AdapterObj>(h, &format!("adapters[{i}]"))?;
            if a.config != *cfg {
                return Err(err(
                    LLQ_ERR_INVALID_ARG,
                    format!("adapters[{i}] was opened for a model of another configuration"),
                ));
            }
            if !scale.is_finite() {
                return Err(err(
                    LLQ_ERR_INVALID_ARG,
                    format!("scales[{i}] = {scale} is not finite"),
                ));
            }
            list.push((a.adapter.clone(), scale));
        }
        let set = AdapterSet::new(list, cfg)?;
        c.lock()?.set_adapters(set)?;
        Ok(())
    })
}
