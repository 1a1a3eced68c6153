#!/usr/bin/env python3
"""Use libllq from Python with ctypes: tokenize a prompt and stream a generation.

    python3 examples/python/llq_ctypes.py MODEL.llq "The capital of France is" \
        [--lib target/release/libllq.so] [-n 32]

Only the standard library is needed. The structs below mirror include/llq.h.
"""
import argparse
import ctypes as C
import os
import sys

LLQ_OK = 0
LLQ_ERR_BUFFER_TOO_SMALL = -5


class ModelParams(C.Structure):
    _fields_ = [("n_threads", C.c_int32), ("use_mmap", C.c_bool), ("use_mlock", C.c_bool)]


class ContextParams(C.Structure):
    _fields_ = [
        ("n_ctx", C.c_uint32),
        ("seed", C.c_uint64),
        ("temp", C.c_float),
        ("top_k", C.c_int32),
        ("top_p", C.c_float),
        ("min_p", C.c_float),
        ("repeat_penalty", C.c_float),
        ("repeat_last_n", C.c_int32),
        ("cache_type", C.c_int32),
        ("context_shift", C.c_bool),
        ("n_keep", C.c_uint32),
    ]


class GenerateParams(C.Structure):
    _fields_ = [
        ("max_tokens", C.c_int32),
        ("stop_at_eog", C.c_bool),
        ("add_special", C.c_bool),
        ("parse_special", C.c_bool),
        ("skip_special", C.c_bool),
    ]


class GenerateResult(C.Structure):
    _fields_ = [("n_tokens", C.c_int32), ("stop_reason", C.c_int32)]


TOKEN_CB = C.CFUNCTYPE(C.c_bool, C.c_void_p, C.c_size_t, C.c_int32, C.c_void_p)


class LlqError(Exception):
    pass


class Llq:
    def __init__(self, path):
        lib = C.CDLL(path)
        self.lib = lib
        lib.llq_version.restype = C.c_char_p
        lib.llq_last_error.restype = C.c_char_p
        lib.llq_status_name.restype = C.c_char_p
        lib.llq_status_name.argtypes = [C.c_int32]
        lib.llq_model_default_params.restype = ModelParams
        lib.llq_context_default_params.restype = ContextParams
        lib.llq_generate_default_params.restype = GenerateParams
        lib.llq_model_open.argtypes = [C.c_char_p, ModelParams, C.POINTER(C.c_void_p)]
        lib.llq_model_free.argtypes = [C.c_void_p]
        lib.llq_context_new.argtypes = [C.c_void_p, ContextParams, C.POINTER(C.c_void_p)]
        lib.llq_context_free.argtypes = [C.c_void_p]
        lib.llq_model_n_vocab.argtypes = [C.c_void_p]
        lib.llq_tokenize.argtypes = [
            C.c_void_p, C.c_char_p, C.c_size_t, C.c_bool, C.c_bool,
            C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_size_t),
        ]
        lib.llq_generate.argtypes = [
            C.c_void_p, C.c_char_p, GenerateParams, TOKEN_CB, C.c_void_p,
            C.POINTER(GenerateResult),
        ]
        for f in ("llq_model_open", "llq_model_free", "llq_context_new", "llq_context_free",
                  "llq_tokenize", "llq_generate"):
            getattr(lib, f).restype = C.c_int32

    def check(self, status):
        if status != LLQ_OK:
            name = self.lib.llq_status_name(status).decode()
            raise LlqError(f"{name}: {self.lib.llq_last_error().decode()}")

    def tokenize(self, model, text, add_special=True, parse_special=True):
        data = text.encode("utf-8")
        n = C.c_size_t(0)
        st = self.lib.llq_tokenize(model, data, len(data), add_special, parse_special, None, 0,
                                   C.byref(n))
        if st not in (LLQ_OK, LLQ_ERR_BUFFER_TOO_SMALL):
            self.check(st)
        buf = (C.c_int32 * max(n.value, 1))()
        self.check(self.lib.llq_tokenize(model, data, len(data), add_special, parse_special, buf,
                                         n.value, C.byref(n)))
        return list(buf[: n.value])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompt")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--lib", default=os.environ.get("LLQ_LIB", "target/release/libllq.so"))
    a = ap.parse_args()

    llq = Llq(a.lib)
    print(f"libllq {llq.lib.llq_version().decode()}", file=sys.stderr)
    model = C.c_void_p()
    llq.check(llq.lib.llq_model_open(a.model.encode(), llq.lib.llq_model_default_params(),
                                     C.byref(model)))
    ctx = C.c_void_p()
    cp = llq.lib.llq_context_default_params()
    cp.temp = 0.0  # greedy
    llq.check(llq.lib.llq_context_new(model, cp, C.byref(ctx)))
    try:
        ids = llq.tokenize(model, a.prompt)
        print(f"prompt tokens: {ids}", file=sys.stderr)

        pieces = []

        def on_token(piece, length, token, user_data):
            text = C.string_at(piece, length).decode("utf-8")
            pieces.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
            return True

        cb = TOKEN_CB(on_token)  # keep a reference while the call runs
        gp = llq.lib.llq_generate_default_params()
        gp.max_tokens = a.n
        res = GenerateResult()
        llq.check(llq.lib.llq_generate(ctx, a.prompt.encode(), gp, cb, None, C.byref(res)))
        sys.stdout.write("\n")
        print(f"{res.n_tokens} tokens, stop reason {res.stop_reason}", file=sys.stderr)
    finally:
        llq.lib.llq_context_free(ctx)
        llq.lib.llq_model_free(model)


if __name__ == "__main__":
    main()
