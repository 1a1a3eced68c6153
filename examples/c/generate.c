/*
 * One-shot generation with libllq (greedy).
 *
 *   generate MODEL.llq "PROMPT" [-n N] [-c N_CTX]
 *       prints the generated text (needs a model with a tokenizer);
 *   generate MODEL.llq --ids 1,2,3 [-n N] [-c N_CTX]
 *       evaluates the token ids with llq_eval, samples greedily with llq_sample and
 *       prints the N generated ids space-separated (end-of-generation tokens do not stop
 *       it); works on models without a tokenizer.
 *
 * Build (from the repository root, after `cargo build --release --lib`; see docs/C_API.md):
 *   cc examples/c/generate.c -Iinclude -Ltarget/release -lllq -Wl,-rpath,"$PWD/target/release" -o generate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

static int fail(const char *what, llq_status s) {
    fprintf(stderr, "generate: %s: %s (%s)\n", what, llq_last_error(), llq_status_name(s));
    return 1;
}

static bool print_piece(const char *piece, size_t len, llq_token token, void *user_data) {
    (void)token;
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

/* Why llq_generate ended, as text. */
static const char *stop_name(int reason) {
    switch (reason) {
    case LLQ_STOP_MAX_TOKENS: return "max tokens";
    case LLQ_STOP_EOG: return "end of generation";
    case LLQ_STOP_CALLBACK: return "stopped by the callback";
    case LLQ_STOP_REQUESTED: return "stop requested";
    case LLQ_STOP_CONTEXT_FULL: return "context full";
    default: return "unknown";
    }
}

/* Parse "1,2,3" into a malloc'ed array. */
static llq_token *parse_ids(const char *s, size_t *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += (*p == ',');
    llq_token *ids = malloc(cap * sizeof *ids);
    if (!ids) return NULL;
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) { free(ids); return NULL; }
        ids[(*n)++] = (llq_token)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') { free(ids); return NULL; }
    }
    return ids;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *ids_arg = NULL;
    int n_predict = 32;
    unsigned n_ctx = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) n_predict = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) n_ctx = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ids") && i + 1 < argc) ids_arg = argv[++i];
        else if (!model_path) model_path = argv[i];
        else if (!prompt) prompt = argv[i];
        else { fprintf(stderr, "generate: unexpected argument %s\n", argv[i]); return 2; }
    }
    if (!model_path || (!prompt && !ids_arg)) {
        fprintf(stderr, "usage: generate MODEL PROMPT [-n N] [-c N_CTX]\n"
                        "       generate MODEL --ids 1,2,3 [-n N] [-c N_CTX]\n");
        return 2;
    }

    llq_model *model = NULL;
    llq_status s = llq_model_open(model_path, llq_model_default_params(), &model);
    if (s != LLQ_OK) return fail("open model", s);

    llq_context_params cp = llq_context_default_params();
    cp.temp = 0.0f; /* greedy */
    cp.n_ctx = n_ctx;
    llq_context *ctx = NULL;
    s = llq_context_new(model, cp, &ctx);
    if (s != LLQ_OK) { llq_model_free(model); return fail("new context", s); }

    int rc = 0;
    if (ids_arg) {
        size_t n = 0;
        llq_token *ids = parse_ids(ids_arg, &n);
        if (!ids || n == 0) {
            fprintf(stderr, "generate: bad --ids\n");
            rc = 2;
        } else {
            s = llq_eval(ctx, ids, n);
            for (int i = 0; s == LLQ_OK && i < n_predict; i++) {
                llq_token t;
                s = llq_sample(ctx, &t);
                if (s != LLQ_OK) break;
                printf(i ? " %d" : "%d", (int)t);
                if (i + 1 < n_predict) s = llq_eval(ctx, &t, 1);
            }
            printf("\n");
            if (s != LLQ_OK) rc = fail("generate", s);
        }
        free(ids);
    } else {
        llq_generate_params gp = llq_generate_default_params();
        gp.max_tokens = n_predict;
        llq_generate_result res;
        s = llq_generate(ctx, prompt, gp, print_piece, NULL, &res);
        printf("\n");
        if (s != LLQ_OK) rc = fail("generate", s);
        else fprintf(stderr, "generate: %d tokens, stop: %s\n", (int)res.n_tokens,
                     stop_name(res.stop_reason));
    }

    llq_context_free(ctx);
    llq_model_free(model);
    return rc;
}
