//! The C API's contract, exercised from Rust through the `extern "C"` functions: error
//! codes for misuse, buffer sizing, tokenizer round trips, re-entrancy.

mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use common::*;
use llq::ffi::*;
use llq::quant::DType;

fn tiny_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| convert_fixture_to_scratch("tiny-llama-gqa", DType::Q8_0))
}

fn smollm2_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| convert_smollm2_to_scratch(DType::Q8_0))
}

fn open(path: &Path) -> *mut llq_model {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = null_mut();
    // SAFETY: valid C string and out-pointer.
    let st = unsafe { llq_model_open(c.as_ptr(), llq_model_default_params(), &mut m) };
    assert_eq!(st, LLQ_OK, "{}", last_error());
    m
}

fn greedy_ctx(m: *mut llq_model, n_ctx: u32) -> *mut llq_context {
    let mut p = llq_context_default_params();
    p.temp = 0.0;
    p.n_ctx = n_ctx;
    let mut c = null_mut();
    // SAFETY: live model, valid out-pointer.
    assert_eq!(unsafe { llq_context_new(m, p, &mut c) }, LLQ_OK);
    c
}

fn last_error() -> String {
    // SAFETY: llq_last_error never returns NULL and the string is NUL-terminated.
    unsafe { CStr::from_ptr(llq_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn null_and_stale_handles_are_errors() {
    // SAFETY (whole test): every pointer passed is NULL, a live handle, a freed handle
    // (which the registry rejects without dereferencing) or a valid out-pointer.
    unsafe {
        let mut n = 0usize;
        let mut t: llq_token = 0;
        let mut out = [0 as c_char; 8];
        assert_eq!(llq_eval(null_mut(), [1].as_ptr(), 1), LLQ_ERR_NULL);
        assert_eq!(llq_sample(null_mut(), &mut t), LLQ_ERR_NULL);
        assert_eq!(llq_context_reset(null_mut()), LLQ_ERR_NULL);
        assert!(last_error().contains("NULL"), "{}", last_error());
        assert_eq!(
            llq_tokenize(null(), c"x".as_ptr(), 1, true, true, null_mut(), 0, &mut n),
            LLQ_ERR_NULL
        );
        assert_eq!(
            llq_detokenize(null(), [1].as_ptr(), 1, true, out.as_mut_ptr(), 8, &mut n),
            LLQ_ERR_NULL
        );
        assert_eq!(llq_model_n_ctx_train(null()), -1);
        assert_eq!(llq_model_bos(null()), LLQ_TOKEN_NULL);
        assert!(llq_model_chat_template(null()).is_null());
        assert!(!llq_model_is_eog(null(), 0));

        let m = open(tiny_path());
        let c = greedy_ctx(m, 32);
        assert!(llq_model_n_ctx_train(m) > 0);
        assert_eq!(llq_context_n_ctx(c), 32);
        // Wrong kinds.
        assert_eq!(llq_model_n_vocab(c.cast()), -1);
        assert_eq!(llq_eval(m.cast(), [1].as_ptr(), 1), LLQ_ERR_INVALID_HANDLE);
        assert!(last_error().contains("llq_model"), "{}", last_error());
        // Free, then every use is rejected and a second free is detected.
        assert_eq!(llq_context_free(c), LLQ_OK);
        assert_eq!(llq_eval(c, [1].as_ptr(), 1), LLQ_ERR_INVALID_HANDLE);
        assert_eq!(llq_context_free(c), LLQ_ERR_INVALID_HANDLE);
        assert!(last_error().contains("double free"), "{}", last_error());
        assert_eq!(llq_model_free(m), LLQ_OK);
        assert_eq!(llq_model_free(m), LLQ_ERR_INVALID_HANDLE);
        assert_eq!(llq_model_n_vocab(m), -1);
        let mut c2 = null_mut();
        assert_eq!(
            llq_context_new(m, llq_context_default_params(), &mut c2),
            LLQ_ERR_INVALID_HANDLE
        );
        assert!(c2.is_null());
    }
}

#[test]
fn bad_params_and_paths() {
    // SAFETY: valid C strings and out-pointers throughout.
    unsafe {
        let mut m = null_mut();
        let bad = c"/definitely/not/here.llq";
        assert_eq!(
            llq_model_open(bad.as_ptr(), llq_model_default_params(), &mut m),
            LLQ_ERR_IO
        );
        assert!(last_error().contains("/definitely/not/here.llq"));
        let mut p = llq_model_default_params();
        p.n_threads = -3;
        let path = CString::new(tiny_path().to_str().unwrap()).unwrap();
        assert_eq!(
            llq_model_open(path.as_ptr(), p, &mut m),
            LLQ_ERR_INVALID_ARG
        );
        // A file that is not a model.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.llq");
        std::fs::write(&junk, b"not a model at all").unwrap();
        let junk = CString::new(junk.to_str().unwrap()).unwrap();
        assert_eq!(
            llq_model_open(junk.as_ptr(), llq_model_default_params(), &mut m),
            LLQ_ERR_MODEL
        );
        assert!(m.is_null());

        let m = open(tiny_path());
        for f in [
            |p: &mut llq_context_params| p.temp = f32::NAN,
            |p: &mut llq_context_params| p.top_p = 0.0,
            |p: &mut llq_context_params| p.min_p = 2.0,
            |p: &mut llq_context_params| p.repeat_penalty = 0.0,
            |p: &mut llq_context_params| p.repeat_last_n = -1,
            |p: &mut llq_context_params| p.n_ctx = u32::MAX,
        ] {
            let mut p = llq_context_default_params();
            f(&mut p);
            let mut c = null_mut();
            assert_eq!(llq_context_new(m, p, &mut c), LLQ_ERR_INVALID_ARG, "{p:?}");
        }
        llq_model_free(m);
    }
}

#[test]
fn low_level_equals_rust_session_and_reset_restarts() {
    let path = tiny_path();
    let model = llq::model::Model::open(path).unwrap();
    let prompt = [1u32, 7, 3, 11];
    let want = greedy(&model, &prompt, 10);
    // SAFETY: live handles and valid buffers throughout.
    unsafe {
        let m = open(path);
        let c = greedy_ctx(m, 64);
        for _ in 0..2 {
            let ids: Vec<llq_token> = prompt.iter().map(|&t| t as llq_token).collect();
            assert_eq!(llq_eval(c, ids.as_ptr(), ids.len()), LLQ_OK);
            let mut got = Vec::new();
            for _ in 0..10 {
                let (mut p, mut n) = (null(), 0usize);
                assert_eq!(llq_get_logits(c, &mut p, &mut n), LLQ_OK);
                assert_eq!(n, model.config.vocab_size);
                let logits = std::slice::from_raw_parts(p, n);
                let mut t = 0;
                assert_eq!(llq_sample(c, &mut t), LLQ_OK);
                assert_eq!(t as u32, llq::sample::argmax(logits));
                got.push(t as u32);
                assert_eq!(llq_eval(c, &t, 1), LLQ_OK);
            }
            assert_eq!(got, want);
            assert_eq!(llq_context_n_tokens(c), 14);
            assert_eq!(llq_context_reset(c), LLQ_OK);
            assert_eq!(llq_context_n_tokens(c), 0);
        }
        llq_context_free(c);
        llq_model_free(m);
    }
}

struct Reenter {
    ctx: *mut llq_context,
    status: llq_status,
    calls: usize,
}

/// # Safety
/// `ud` must point to a live `Reenter` (llq passes back the user_data given below).
unsafe extern "C" fn reenter(_: *const c_char, _: usize, t: llq_token, ud: *mut c_void) -> bool {
    // SAFETY: user_data is the &mut Reenter passed to llq_generate below.
    let r = unsafe { &mut *ud.cast::<Reenter>() };
    r.calls += 1;
    // SAFETY: the context is live; the call must be refused, not deadlock.
    r.status = unsafe { llq_eval(r.ctx, &t, 1) };
    // request_stop is allowed from the callback.
    assert_eq!(llq_context_request_stop(r.ctx), LLQ_OK);
    true
}

#[test]
fn reentrant_call_from_callback_is_busy_and_stop_is_allowed() {
    // SAFETY: live handles; the callback gets a valid user_data.
    unsafe {
        let m = open(tiny_path());
        let c = greedy_ctx(m, 64);
        assert_eq!(llq_eval(c, [1, 2, 3].as_ptr(), 3), LLQ_OK);
        let mut r = Reenter {
            ctx: c,
            status: LLQ_OK,
            calls: 0,
        };
        let mut res = llq_generate_result::default();
        let mut gp = llq_generate_default_params();
        gp.stop_at_eog = false;
        let st = llq_generate(
            c,
            null(),
            gp,
            Some(reenter),
            (&mut r as *mut Reenter).cast(),
            &mut res,
        );
        assert_eq!(st, LLQ_OK, "{}", last_error());
        assert_eq!(r.status, LLQ_ERR_BUSY);
        assert_eq!(r.calls, 1);
        assert_eq!((res.n_tokens, res.stop_reason), (1, LLQ_STOP_REQUESTED));
        // A stale stop request does not affect the next generation.
        assert_eq!(llq_context_request_stop(c), LLQ_OK);
        gp.max_tokens = 3;
        assert_eq!(
            llq_generate(c, null(), gp, None, null_mut(), &mut res),
            LLQ_OK
        );
        assert_eq!((res.n_tokens, res.stop_reason), (3, LLQ_STOP_MAX_TOKENS));
        llq_context_free(c);
        llq_model_free(m);
    }
}

#[test]
fn smollm2_tokenize_detokenize_and_buffers() {
    let path = smollm2_path();
    let model = llq::model::Model::open(path).unwrap();
    let tok = model.tokenizer().unwrap();
    // SAFETY: live handles and buffers of the stated sizes throughout.
    unsafe {
        let m = open(path);
        assert!(llq_model_has_tokenizer(m));
        assert!(!llq_model_chat_template(m).is_null());
        let text = "Hello, wörld! <|im_start|>";
        let mut n = 0usize;
        assert_eq!(
            llq_tokenize(
                m,
                text.as_ptr().cast(),
                text.len(),
                true,
                true,
                null_mut(),
                0,
                &mut n
            ),
            LLQ_ERR_BUFFER_TOO_SMALL
        );
        let mut want = Vec::new();
        if tok.add_bos() {
            want.extend(tok.bos_id());
        }
        want.extend(tok.encode(text, true));
        assert_eq!(n, want.len());
        let mut ids = vec![-7 as llq_token; n + 2];
        assert_eq!(
            llq_tokenize(
                m,
                text.as_ptr().cast(),
                text.len(),
                true,
                true,
                ids.as_mut_ptr(),
                n - 1,
                &mut n
            ),
            LLQ_ERR_BUFFER_TOO_SMALL
        );
        assert!(
            ids.iter().all(|&t| t == -7),
            "nothing written when too small"
        );
        assert_eq!(
            llq_tokenize(
                m,
                text.as_ptr().cast(),
                text.len(),
                true,
                true,
                ids.as_mut_ptr(),
                ids.len(),
                &mut n
            ),
            LLQ_OK
        );
        let got: Vec<u32> = ids[..n].iter().map(|&t| t as u32).collect();
        assert_eq!(got, want);
        // Bad UTF-8.
        let bad = b"ok \xff\xfe";
        assert_eq!(
            llq_tokenize(
                m,
                bad.as_ptr().cast(),
                bad.len(),
                true,
                true,
                ids.as_mut_ptr(),
                ids.len(),
                &mut n
            ),
            LLQ_ERR_UTF8
        );
        assert!(last_error().contains("byte offset 3"), "{}", last_error());

        // Detokenize: exact size, one byte short, invalid id.
        let expect = tok.decode(&want, false);
        let mut len = 0usize;
        assert_eq!(
            llq_detokenize(m, ids.as_ptr(), n, false, null_mut(), 0, &mut len),
            LLQ_ERR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, expect.len());
        let mut buf = vec![0x55 as c_char; len + 1];
        assert_eq!(
            llq_detokenize(m, ids.as_ptr(), n, false, buf.as_mut_ptr(), len, &mut len),
            LLQ_ERR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            llq_detokenize(
                m,
                ids.as_ptr(),
                n,
                false,
                buf.as_mut_ptr(),
                len + 1,
                &mut len
            ),
            LLQ_OK
        );
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), expect);
        let bad_ids = [ids[0], llq_model_n_vocab(m)];
        assert_eq!(
            llq_detokenize(
                m,
                bad_ids.as_ptr(),
                2,
                false,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len
            ),
            LLQ_ERR_INVALID_TOKEN
        );
        // One token's piece keeps its leading space.
        let world = tok.encode(" world", false);
        assert_eq!(world.len(), 1);
        let mut piece = [0 as c_char; 16];
        assert_eq!(
            llq_token_to_piece(
                m,
                world[0] as llq_token,
                true,
                piece.as_mut_ptr(),
                16,
                &mut len
            ),
            LLQ_OK
        );
        assert_eq!(CStr::from_ptr(piece.as_ptr()).to_str().unwrap(), " world");
        assert_eq!(
            llq_token_to_piece(m, -1, true, piece.as_mut_ptr(), 16, &mut len),
            LLQ_ERR_INVALID_TOKEN
        );

        // Chat template of the model.
        let msgs = [llq_chat_message {
            role: c"user".as_ptr(),
            content: c"Hi".as_ptr(),
        }];
        assert_eq!(
            llq_chat_apply_template(m, null(), msgs.as_ptr(), 1, true, null_mut(), 0, &mut len),
            LLQ_ERR_BUFFER_TOO_SMALL
        );
        let mut out = vec![0 as c_char; len + 1];
        assert_eq!(
            llq_chat_apply_template(
                m,
                null(),
                msgs.as_ptr(),
                1,
                true,
                out.as_mut_ptr(),
                out.len(),
                &mut len
            ),
            LLQ_OK
        );
        let rendered = CStr::from_ptr(out.as_ptr()).to_str().unwrap();
        assert!(
            rendered.contains("<|im_start|>user\nHi<|im_end|>"),
            "{rendered}"
        );
        assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");
        llq_model_free(m);
    }
}
